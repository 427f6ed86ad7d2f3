"""/diagnostics messages of the package's nodes."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node


def status_owner(namespace: str, node_name: str) -> str:
    """How a status names the node it comes from: ``vbp`` or, in a namespace, ``car1/vbp``
    (/diagnostics is one topic for every namespace, so the name tells the drives apart)."""
    return f'{namespace.strip("/")}/{node_name}'.lstrip('/')


def diagnostic_array(node: Node, topic: str, level: bytes, message: str, hardware_id: str,
                     values: dict[str, object]) -> DiagnosticArray:
    """One status named ``'<status_owner>: <topic>'``, stamped now, its values as strings."""
    owner = status_owner(node.get_namespace(), node.get_name())
    status = DiagnosticStatus(level=level, name=f'{owner}: {topic}', message=message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=key, value=str(value))
                                      for key, value in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array
