"""vbp_node's /diagnostics timer keeps publishing after a status that fails."""

from __future__ import annotations

import threading

from vbp_ros.ros.diagnostics import Periodic


def test_a_failing_call_is_reported_and_the_next_call_comes() -> None:
    calls, errors = [], []
    third = threading.Event()

    def publish() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError('description after close')
        if len(calls) == 3:
            third.set()

    periodic = Periodic(publish, 0.01, errors.append)
    try:
        assert third.wait(5.0)
    finally:
        periodic.stop()
    assert [str(error) for error in errors] == ['description after close']
