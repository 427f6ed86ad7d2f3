"""/diagnostics messages of the package's nodes."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node


def diagnostic_array(node: Node, topic: str, level: bytes, message: str, hardware_id: str,
                     values: dict[str, object]) -> DiagnosticArray:
    """One status named ``'<node name>: <topic>'``, stamped now, its values as strings."""
    status = DiagnosticStatus(level=level, name=f'{node.get_name()}: {topic}', message=message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=key, value=str(value))
                                      for key, value in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array
