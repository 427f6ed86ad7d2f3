"""A model build that never ends (a user's network whose constructor hangs) does not hold vbp_node
up: over DDS, while the build runs, frames are answered, /diagnostics keeps coming, the other
parameter services and a quick parameter change are answered at once; the change itself is
refused after ``build_timeout_s``; and SIGINT ends the node within seconds while a build hangs,
also in the managed node during ``configure``."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from safetensors.torch import save_file

from dds_segments import stop
from own_networks import CARD
from node_harness import Harness, camera_frame, raw, start_node

pytestmark = pytest.mark.ros
NAMESPACE = '/slow_build'
BUILD_TIMEOUT_S = 8.0  # long enough for the checks made while the build runs, on a busy machine
HANGING_NETWORK = '''
import time


def build(**arguments):
    time.sleep(3600)  # a constructor that waits for something that never comes
'''


@pytest.fixture(scope='module')
def hanging(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Weights whose card names a network that never finishes building, and its package."""
    folder = tmp_path_factory.mktemp('hanging')
    (folder / 'hanging_nets.py').write_text(HANGING_NETWORK)
    weights = folder / 'hanging.safetensors'
    save_file({'w': torch.zeros(1)}, str(weights))
    weights.with_suffix('.yaml').write_text(
        CARD.replace('road_nets:build', 'hanging_nets:build'))
    return {'site': folder, 'weights': weights}


@pytest.fixture(scope='module')
def node(ros, hanging, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp('logs') / 'vbp_node.log'
    process = start_node('-p', f'build_timeout_s:={BUILD_TIMEOUT_S}', '-p', 'deadline_ms:=1000.0',
                         '-r', f'__ns:={NAMESPACE}', log=log, site=hanging['site'])
    harness = Harness(NAMESPACE)
    assert harness.send(raw(camera_frame(0)), timeout=90.0) is not None, log.read_text()
    yield harness, process, log
    harness.node.destroy_node()
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def ask(harness: Harness, client, request, timeout: float):
    """The answer to ``request`` if it comes within ``timeout`` seconds, else None."""
    future = client.call_async(request)
    harness.spin_until(future.done, timeout)
    return future.result() if future.done() else None


def set_request(name: str, value: object) -> SetParameters.Request:
    return SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])


def test_a_hanging_build_holds_up_nothing_and_is_refused_in_time(node, hanging) -> None:
    harness, process, log = node
    assert harness.get_parameter('deadline_ms') == 1000.0  # both services matched
    assert harness.set_parameter('deadline_ms', 1000.0) == (True, '')
    started = time.monotonic()
    model_change = harness.set_client.call_async(set_request('model', str(hanging['weights'])))
    harness.spin_until(lambda: False, 0.5)  # the build has begun

    # Meanwhile every other service, a quick change, the frames and /diagnostics are served.
    values = ask(harness, harness.get_client, GetParameters.Request(names=['deadline_ms']), 2.0)
    assert values is not None and values.values[0].double_value == 1000.0
    quick = ask(harness, harness.set_client, set_request('deadline_ms', 900.0), 2.0)
    assert quick is not None and quick.results[0].successful
    diagnostics = len(harness.diagnostics)
    assert harness.send(raw(camera_frame(1)), timeout=2.0) is not None
    assert harness.spin_until(lambda: len(harness.diagnostics) > diagnostics, 2.0)
    assert not model_change.done()

    # The change is refused within the bound (plus a loaded machine's margin) with the reason.
    assert harness.spin_until(model_change.done, BUILD_TIMEOUT_S + 10.0), log.read_text()
    elapsed = time.monotonic() - started
    result = model_change.result().results[0]
    assert not result.successful
    assert f'not done within {BUILD_TIMEOUT_S:g} s' in result.reason
    assert BUILD_TIMEOUT_S - 0.5 <= elapsed <= BUILD_TIMEOUT_S + 10.0
    assert harness.send(raw(camera_frame(2)), timeout=5.0) is not None  # the old model runs


def test_sigint_ends_the_node_while_a_build_hangs(node, hanging) -> None:
    harness, process, log = node
    harness.set_client.call_async(set_request('model', str(hanging['weights'])))
    harness.spin_until(lambda: False, 1.0)
    stopped = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0, log.read_text()
    assert time.monotonic() - stopped < 10.0
    assert 'Traceback' not in log.read_text()


def test_sigint_ends_the_managed_node_in_a_hanging_configure(
        ros, hanging, tmp_path: Path) -> None:
    log = tmp_path / 'vbp_lifecycle_node.log'
    process = start_node('-p', f'model:={hanging["weights"]}', '-p', 'build_timeout_s:=600.0',
                         '-r', '__ns:=/slow_configure', executable='vbp_lifecycle_node', log=log,
                         site=hanging['site'])
    harness = Harness('/slow_configure')
    try:
        client = harness.node.create_client(ChangeState, '/slow_configure/vbp/change_state')
        assert client.wait_for_service(timeout_sec=60), log.read_text()
        client.call_async(ChangeState.Request(
            transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
        harness.spin_until(lambda: False, 1.5)  # configure is building
        assert process.poll() is None
        stopped = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - stopped < 10.0
    finally:
        harness.node.destroy_node()
        stop(process)
