"""The node vbp-drive watches its pipeline with: camera frames, angles, latencies, diagnostics."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from ..drive.summary import Observations
from ..interface import (CAMERA_NODE, DIAGNOSTICS_TOPIC, PIPELINE_LATENCY_TOPIC, RECORDER_NODE,
                         STEERING_TOPIC, VBP_NODE)
from .diagnostics import status_owner
from .messages import header_ns

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FINAL_MESSAGES = ('stopped', 'closed')  # how a node's last /diagnostics message begins


class DriveMonitor(Node):
    """Watches the pipeline from outside; what it saw is in :attr:`seen`."""

    def __init__(self, namespace: str, image_topic: str) -> None:
        super().__init__('vbp_drive', namespace=namespace)
        self.image_topic = self.resolve_topic_name(image_topic)
        self.seen = Observations()
        self.status: dict[str, dict[str, str]] = {}
        self.messages: dict[str, str] = {}
        self.create_subscription(Image, image_topic, self._on_frame, qos_profile_sensor_data)
        self.create_subscription(Float32, STEERING_TOPIC, self._on_angle, RELIABLE)
        self.create_subscription(Float32, PIPELINE_LATENCY_TOPIC,
                                 lambda m: self.seen.latencies_ms.append(m.data), RELIABLE)
        self.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics,
                                 RELIABLE)

    def _on_frame(self, message: Image) -> None:
        self.seen.camera_stamps.append(header_ns(message.header))

    def _on_angle(self, _: Float32) -> None:
        self.seen.angles += 1

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            self.status[status.name] = {value.key: value.value for value in status.values}
            self.messages[status.name] = status.message
        self.seen.vbp_status = self.node_status(VBP_NODE)

    def node_status(self, node: str) -> dict[str, str]:
        """The latest diagnostic values of ``node`` (e.g. 'vbp') in the monitor's namespace,
        empty before any."""
        owner = status_owner(self.get_namespace(), node)
        return next((values for name, values in self.status.items()
                     if name.split(': ')[0] == owner), {})

    def stopped(self, node: str) -> bool:
        """Whether ``node`` has published its final /diagnostics (it is stopping)."""
        owner = status_owner(self.get_namespace(), node)
        return any(message.startswith(FINAL_MESSAGES) for name, message in self.messages.items()
                   if name.split(': ')[0] == owner)

    def final_counts(self) -> dict[str, dict[str, str]]:
        """The last /diagnostics values of camera, node and recorder (after they stopped:
        their final counts), with 'final' saying whether the last one was the final one."""
        return {node: {**self.node_status(node), 'final': str(self.stopped(node)).lower()}
                for node in (CAMERA_NODE, VBP_NODE, RECORDER_NODE)}

    def subscribed_by(self, topic: str, node: str) -> bool:
        """Whether ``node`` subscribes ``topic`` (resolved in the monitor's namespace)."""
        subscriptions = self.get_subscriptions_info_by_topic(self.resolve_topic_name(topic))
        return any(info.node_name == node for info in subscriptions)
