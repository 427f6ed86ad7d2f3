"""vbp_node (or vbp_lifecycle_node) in its own process over real DDS, and a harness node with
camera publishers, subscribers to every output and parameter clients; camera frames.

The processes share the session's ROS domain, discovery limited to this host, and the package's
Fast DDS profile (config/fastdds.xml, set by conftest.py), as a deployment would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from vbp_ros.ros.diagnostics import status_owner  # noqa: E402

from service_calls import call_until_answered  # noqa: E402

SCRIPTS = Path(sys.executable).parent
RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)


def start_node(*arguments: str, executable: str = 'vbp_node', log: Path | None = None,
               site: Path | None = None) -> subprocess.Popen:
    """``executable`` with ROS ``arguments``; its output to ``log`` (else a text pipe); a
    user's package folder ``site`` goes on its Python path before the test run's own, which may
    hold the checkout under test."""
    path = os.pathsep.join(filter(None, [site and str(site), os.environ.get('PYTHONPATH')]))
    environment = {**os.environ, 'PYTHONPATH': path}
    output = {'stdout': log.open('w')} if log else {'stdout': subprocess.PIPE, 'text': True}
    return subprocess.Popen([str(SCRIPTS / executable), '--ros-args', *arguments],
                            stderr=subprocess.STDOUT, env=environment, **output)


def spin_until(node, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin ``node`` until ``condition()`` or ``timeout`` seconds; whether it came true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        rclpy.spin_once(node, timeout_sec=0.02)
    return condition()


class Harness:
    """A test node with camera publishers and subscribers to every vbp_node output."""

    def __init__(self, namespace: str = '') -> None:
        self.node = rclpy.create_node('vbp_test_harness', namespace=namespace or None)
        self.status_name = f'{status_owner(namespace, "vbp")}: pipeline'
        self.best_effort = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.reliable = self.node.create_publisher(Image, 'image', RELIABLE)
        self.compressed = self.node.create_publisher(CompressedImage, 'image/compressed',
                                                     qos_profile_sensor_data)
        self.masks: dict[int, Image] = {}
        self.overlays: dict[int, Image] = {}
        self._overlay_subscription = None
        self.angles: list[float] = []
        self.latencies: list[float] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(Image, 'vbp/mask', self._keep(self.masks), 10)
        self.node.create_subscription(Float32, 'steering_angle',
                                      lambda m: self.angles.append(m.data), 10)
        self.node.create_subscription(Float32, 'debug/pipeline_latency_ms',
                                      lambda m: self.latencies.append(m.data), 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                      self.diagnostics.append, 10)
        self.set_client = self.node.create_client(SetParameters, f'{namespace}/vbp/set_parameters')
        self.get_client = self.node.create_client(GetParameters, f'{namespace}/vbp/get_parameters')
        self.next_stamp = 1000

    @staticmethod
    def _keep(store: dict) -> Callable[[Image], None]:
        return lambda message: store.__setitem__(message.header.stamp.sec, message)

    def subscribe_overlay(self) -> None:
        """Subscribe vbp/overlay (once), and wait until the node's publisher is matched and
        has had time to see the subscriber too: the node draws overlays only for one."""
        if self._overlay_subscription is None:
            self._overlay_subscription = self.node.create_subscription(
                Image, 'vbp/overlay', self._keep(self.overlays), 10)
        matched = self._overlay_subscription.get_publisher_count
        assert self.spin_until(lambda: matched() > 0, 10.0), 'vbp/overlay never matched'
        self.spin_until(lambda: False, 0.2)

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Spin the harness node until ``condition()`` or ``timeout``; whether it came true."""
        return spin_until(self.node, condition, timeout)

    def settle(self, quiet: float = 1.0, timeout: float = 15.0) -> bool:
        """Spin until no mask or latency has come for ``quiet`` seconds (the answers to frames
        sent earlier, some sent twice by :meth:`send`, have arrived); whether that happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = len(self.masks), len(self.latencies)
            self.spin_until(lambda: (len(self.masks), len(self.latencies)) != counts, quiet)
            if (len(self.masks), len(self.latencies)) == counts:
                return True
        return False

    def stamp(self, message: Image | CompressedImage) -> int:
        """Stamp ``message`` with a time of its own (whole seconds, one apart, the latest a
        few seconds ago: a stamp is the capture time); the stamp's seconds."""
        self.next_stamp = max(self.next_stamp + 1, int(time.time()) - 20)
        message.header.stamp.sec = self.next_stamp
        message.header.frame_id = 'camera_optical'
        return self.next_stamp

    def send(self, message: Image | CompressedImage, publisher=None, timeout: float = 10.0
             ) -> Image | None:
        """Publish (again, until answered) and return the mask for this frame's stamp."""
        stamp = self.stamp(message)
        publisher = publisher or (self.compressed if isinstance(message, CompressedImage)
                                  else self.best_effort)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publisher.publish(message)
            if self.spin_until(lambda: stamp in self.masks, 0.5):
                return self.masks[stamp]
        return None

    def invalid_count(self) -> int:
        values = self.latest_diagnostics()
        return int(values['dropped (invalid)']) if values else 0

    def latest_diagnostics(self) -> dict[str, str]:
        status = self.latest_status()
        return {kv.key: kv.value for kv in status.values} if status else {}

    def latest_status(self) -> DiagnosticStatus | None:
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == self.status_name:
                    return status
        return None

    def counter(self, name: str) -> int:
        return int(self.latest_diagnostics().get(name, 0))

    def wait_counter(self, name: str, above: int, message: Image | CompressedImage,
                     timeout: float = 10.0) -> bool:
        """Publish ``message`` until the node's diagnostics count ``name`` above ``above``."""
        publisher = self.compressed if isinstance(message, CompressedImage) else \
            self.best_effort
        return self.spin_until(lambda: publisher.publish(message) or
                               self.counter(name) > above, timeout)

    def set_parameter(self, name: str, value: object) -> tuple[bool, str]:
        message = Parameter(name, value=value).to_parameter_msg()
        request = SetParameters.Request(parameters=[message])
        result = call_until_answered(self.node, self.set_client, request).results[0]
        return result.successful, result.reason

    def get_parameter(self, name: str) -> object:
        request = GetParameters.Request(names=[name])
        value = call_until_answered(self.node, self.get_client, request).values[0]
        return Parameter.from_parameter_msg(ParameterMsg(name=name, value=value)).value


def raw(frame: np.ndarray, encoding: str = 'mono8') -> Image:
    """``frame`` as a sensor_msgs Image of ``encoding``."""
    height, width = frame.shape[:2]
    return Image(height=height, width=width, encoding=encoding, step=frame.strides[0],
                 data=np.ascontiguousarray(frame).tobytes())


def camera_frame(seed: int) -> np.ndarray:
    """A dark 640x480 mono8 frame with a bright lane marking where ``seed`` puts it."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 90, (480, 640), dtype=np.uint8)
    frame[260:440, 150 + 20 * seed:170 + 20 * seed] = 255
    return frame
