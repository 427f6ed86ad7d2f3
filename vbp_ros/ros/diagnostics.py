"""/diagnostics messages of the package's nodes, and a thread that publishes them periodically
(vbp_node's own status: :mod:`vbp_ros.ros.pipeline_status`)."""

from __future__ import annotations

import threading
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node


def status_owner(namespace: str, node_name: str) -> str:
    """How a status names the node it comes from: ``vbp`` or, in a namespace, ``car1/vbp``
    (/diagnostics is one topic for every namespace, so the name tells the drives apart)."""
    return f'{namespace.strip("/")}/{node_name}'.lstrip('/')


def diagnostic_status(node: Node, topic: str, level: bytes, message: str, hardware_id: str,
                      values: dict[str, object]) -> DiagnosticStatus:
    """A status named ``'<status_owner>: <topic>'``, its values as strings."""
    owner = status_owner(node.get_namespace(), node.get_name())
    return DiagnosticStatus(level=level, name=f'{owner}: {topic}', message=message,
                            hardware_id=hardware_id,
                            values=[KeyValue(key=key, value=str(value))
                                    for key, value in values.items()])


def diagnostic_array(node: Node, topic: str, level: bytes, message: str, hardware_id: str,
                     values: dict[str, object]) -> DiagnosticArray:
    """One status (see :func:`diagnostic_status`), stamped now."""
    array = DiagnosticArray(status=[diagnostic_status(node, topic, level, message, hardware_id,
                                                      values)])
    array.header.stamp = node.get_clock().now().to_msg()
    return array


def attention_status(node: Node, health: tuple[bool, str, dict[str, str]],
                     hardware_id: str) -> DiagnosticStatus:
    """vbp_node's ``attention`` status from the pipeline's attention health (alarm raised,
    message, values): WARN while an alarm is raised, with the reason."""
    raised, message, values = health
    return diagnostic_status(node, 'attention',
                             DiagnosticStatus.WARN if raised else DiagnosticStatus.OK,
                             message, hardware_id, values)


class Periodic:
    """Calls ``function`` every ``period_s`` seconds on a thread of its own, from its creation
    until :meth:`stop` (outside the executor, which may wait for a model build). A call that
    raises is reported to ``on_error`` and the next one comes as usual: /diagnostics must not
    go silent for good over one bad status."""

    def __init__(self, function: Callable[[], None], period_s: float,
                 on_error: Callable[[Exception], None]) -> None:
        self._function, self._period_s, self._on_error = function, period_s, on_error
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name='vbp_diagnostics', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._period_s):
            try:
                self._function()
            except Exception as error:  # noqa: B902 (any failure of one status)
                self._on_error(error)

    def stop(self) -> None:
        """Stop after the call in hand, if any."""
        self._stopped.set()
        self._thread.join()
