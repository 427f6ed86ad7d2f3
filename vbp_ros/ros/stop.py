"""SIGINT and SIGTERM as a request to stop, for every executable of the package: they are
counted, never raised (see :mod:`vbp_ros.ros.runner`). Light on purpose: the console-script
entry points (:mod:`vbp_ros.entry_points`) install it before they import anything slow.
"""

from __future__ import annotations

import signal
import threading
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Set by the first stop signal: long waits in any thread (a model build) give up.
STOPPING = threading.Event()


class StopRequest:
    """SIGINT and SIGTERM as a request to stop: they are counted, never raised.

    Install it before anything slow starts (model loading, DDS discovery): a signal that comes
    then is honoured as soon as the caller checks :attr:`requested`.
    """

    def __init__(self) -> None:
        self.signals = 0

    def install(self) -> StopRequest:
        """Take over SIGINT and SIGTERM for this process (main thread only); when an earlier
        request of this process was stopped already (a Ctrl-C during the imports), this one
        is too."""
        if STOPPING.is_set():
            self.signals += 1
            return self
        for number in STOP_SIGNALS:
            signal.signal(number, self._on_signal)
        return self

    def _on_signal(self, number: int, frame: object) -> None:
        self.signals += 1
        STOPPING.set()
        # Later signals are ignored from now on, also by the kernel: at exit the interpreter
        # resets its own handlers to the default, which a second Ctrl-C arriving then (while
        # threads and extension modules shut down) would turn into death by SIGINT.
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signals > 0


class StopGrace:
    """How long a node goes on after a stop signal (finishing its last work): ``seconds``
    from the first :meth:`running`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._start: float | None = None

    def running(self) -> bool:
        """Whether the grace still runs; the first call starts it."""
        now = time.monotonic()
        if self._start is None:
            self._start = now
        return now - self._start < self.seconds
