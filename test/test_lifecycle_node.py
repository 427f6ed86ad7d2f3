"""vbp_lifecycle_node: every transition over DDS with the lifecycle services, and what each
state does (outputs, publishers, /diagnostics, the model)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from vbp_ros import ModelSpec, authors_net, save_checkpoint

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from node_harness import spin_until, start_node  # noqa: E402
from service_calls import call_until_answered  # noqa: E402

NAMESPACE = '/managed'


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('lifecycle') / 'model.safetensors'
    save_checkpoint(path, authors_net().eval(), ModelSpec('authors', 1, 125, 640))
    return path


class Probe:
    """Lifecycle and parameter clients, a camera and the outputs of the managed node."""

    def __init__(self) -> None:
        self.node = rclpy.create_node('lifecycle_probe', namespace=NAMESPACE)
        self.change = self.node.create_client(ChangeState, 'vbp/change_state')
        self.get = self.node.create_client(GetState, 'vbp/get_state')
        self.set_parameters = self.node.create_client(SetParameters, 'vbp/set_parameters')
        self.camera = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.masks: list[int] = []
        self.node.create_subscription(Image, 'vbp/mask',
                                      lambda m: self.masks.append(m.header.stamp.sec), 10)
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, '/diagnostics',
                                      self.diagnostics.append, 10)
        self.stamp = 0

    def transition(self, transition: int) -> bool:
        """A transition is not idempotent: when its answer is lost (see service_calls), the
        node's state tells whether it happened before it is asked again."""
        before = self.state()
        request = ChangeState.Request(transition=Transition(id=transition))
        assert self.change.wait_for_service(timeout_sec=60.0)
        future = self.change.call_async(request)
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline:
            if self.spin_until(future.done, 10.0):
                return future.result().success
            state = self.state()
            if state >= State.TRANSITION_STATE_CONFIGURING:  # still on its way
                continue
            self.change.remove_pending_request(future)
            if state != before:
                return True
            future = self.change.call_async(request)
        raise AssertionError(f'transition {transition} not answered in 120 s')

    def state(self) -> int:
        return call_until_answered(self.node, self.get, GetState.Request()).current_state.id

    def set(self, name: str, value: object) -> bool:
        message = Parameter(name, value=value).to_parameter_msg()
        return call_until_answered(self.node, self.set_parameters, SetParameters.Request(
            parameters=[message])).results[0].successful

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        return spin_until(self.node, condition, timeout)

    def frames_answered(self, count: int, timeout: float) -> int:
        """Send ``count`` camera frames; how many masks came back for them."""
        first = self.stamp + 1
        for _ in range(count):
            self.stamp += 1
            pixels = np.random.default_rng(self.stamp).integers(0, 255, (125, 640), np.uint8)
            message = Image(height=125, width=640, encoding='mono8', step=640,
                            data=pixels.tobytes())
            message.header.stamp.sec = self.stamp
            self.camera.publish(message)
            self.spin_until(lambda: self.stamp in self.masks, timeout / count)
        return sum(stamp >= first for stamp in self.masks)

    def mask_publishers(self) -> int:
        return self.node.count_publishers(f'{NAMESPACE}/vbp/mask')

    def status_becomes(self, state: str, timeout: float = 10.0) -> bool:
        """Whether /diagnostics reports ``state`` within ``timeout`` (an array sent before the
        transition's answer can still be on its way)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status_state() == state:
                return True
        return False

    def status_state(self) -> str:
        count = len(self.diagnostics)
        self.spin_until(lambda: len(self.diagnostics) > count, 5.0)
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == 'managed/vbp: pipeline':
                    return {kv.key: kv.value for kv in status.values}['state']
        return ''


def test_every_transition_over_dds(ros, checkpoint, tmp_path: Path) -> None:
    process = start_node('-r', f'__ns:={NAMESPACE}', '-p', f'model:={checkpoint}',
                         executable='vbp_lifecycle_node')
    probe = Probe()
    try:
        assert probe.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert probe.status_becomes('unconfigured') and probe.mask_publishers() == 0

        assert probe.transition(Transition.TRANSITION_CONFIGURE)  # loads the model
        assert probe.state() == State.PRIMARY_STATE_INACTIVE
        assert probe.status_becomes('inactive')
        assert probe.spin_until(lambda: probe.mask_publishers() == 1, 5.0)
        assert probe.frames_answered(5, 5.0) == 0  # configured, not processing

        assert probe.transition(Transition.TRANSITION_ACTIVATE)
        assert probe.state() == State.PRIMARY_STATE_ACTIVE
        assert probe.frames_answered(10, 30.0) >= 5
        assert probe.status_becomes('active')

        assert probe.transition(Transition.TRANSITION_DEACTIVATE)  # engine released
        assert probe.state() == State.PRIMARY_STATE_INACTIVE
        time.sleep(0.5)
        assert probe.frames_answered(5, 5.0) == 0
        assert probe.transition(Transition.TRANSITION_ACTIVATE)  # rebuilt on activation
        assert probe.frames_answered(10, 30.0) >= 5
        assert probe.transition(Transition.TRANSITION_DEACTIVATE)

        assert probe.transition(Transition.TRANSITION_CLEANUP)  # model and publishers gone
        assert probe.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert probe.spin_until(lambda: probe.mask_publishers() == 0, 5.0)

        # A model that does not load: configure fails and the node stays unconfigured.
        assert probe.set('model', str(tmp_path / 'missing.safetensors'))
        assert not probe.transition(Transition.TRANSITION_CONFIGURE)
        assert probe.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert probe.set('model', str(checkpoint))
        assert probe.transition(Transition.TRANSITION_CONFIGURE)
        assert probe.state() == State.PRIMARY_STATE_INACTIVE

        # Shut down while active: processing stops, the node stays reachable, finalized.
        assert probe.transition(Transition.TRANSITION_ACTIVATE)
        assert probe.frames_answered(10, 30.0) >= 5
        assert probe.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert probe.state() == State.PRIMARY_STATE_FINALIZED
        assert probe.status_becomes('finalized')
        time.sleep(0.5)
        assert probe.frames_answered(5, 5.0) == 0
    finally:
        probe.node.destroy_node()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    for transition in ('configure: now inactive', 'activate: now active',
                       'deactivate: now inactive', 'cleanup: now unconfigured',
                       'configure failed', 'shutdown: now finalized'):
        assert transition in output, output
