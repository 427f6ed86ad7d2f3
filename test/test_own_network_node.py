"""A user's own PilotNet in vbp_node over DDS: as safetensors weights with an import path in its
card, as an ONNX file from torch.onnx.export (also at opset 9 with the batch fixed at 64), as a
``torch.save`` state dict, and as vbp-export's output; angle, outputs and mask equal to the
any-network rule computed in PyTorch (float64) on the same frame; Keras PilotNets as tf2onnx writes
them (channels-last, one with Cropping2D), their angle and outputs onnxruntime's on the unmodified
graph and their mask their PyTorch twin's; bad models and cards refused at start-up and at run time
while the old model keeps running."""

from __future__ import annotations

import math
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from std_msgs.msg import Float32MultiArray

from keras_graphs import INPUT, keras_pilotnet, twin
from own_networks import CARD, ONNX_CARD, install
from node_harness import Harness, raw, start_node
from vbp_ros.models.loading import load_model
from vbp_ros.models.networks import PilotNet
from vbp_ros.explain.onnx_vbp import add_visualbackprop
from vbp_ros.engine.onnx_backend import export_onnx
from vbp_ros.models.preprocess import Preprocessor
from vbp_ros.tools import card as card_tool
from vbp_ros.tools import export as export_tool
from vbp_rule import reference_mask

pytestmark = pytest.mark.ros
NAMESPACE = '/own_network'  # apart from the other tests' nodes
FRAME = np.random.default_rng(11).integers(0, 255, (480, 640, 3), dtype=np.uint8)
FRAME[260:440, 280:330] = 255  # a lane marking in the crop


@pytest.fixture(scope='module')
def user(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The user's files: package, weights and card, an ONNX export of theirs, vbp-export's."""
    folder = tmp_path_factory.mktemp('user')
    site = install(folder / 'site')
    sys.path.insert(0, str(site))
    import road_nets

    torch.manual_seed(5)
    model = road_nets.build(activation='elu', outputs=2).eval()
    files = {'site': site, 'weights': folder / 'pilotnet.safetensors',
             'onnx': folder / 'pilotnet_user.onnx', 'exported': folder / 'vbp' / 'pilotnet.onnx',
             'broken': folder / 'broken.safetensors'}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files['weights']))
    files['weights'].with_suffix('.yaml').write_text(CARD)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files['broken']))
    files['broken'].with_suffix('.yaml').write_text(CARD.replace(':build', ':Broken'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, torch.zeros(1, 3, 66, 200), str(files['onnx']), dynamo=False,
                          input_names=['yuv'], output_names=['controls'])
    files['onnx'].with_suffix('.yaml').write_text(ONNX_CARD)
    assert export_tool.main([str(files['weights']), str(files['exported'])]) == 0
    files['reference'] = expected(model, files['weights'])
    files['fixed_batch'], files['state_dict'] = folder / 'batch64.onnx', folder / 'pilotnet.pt'
    with warnings.catch_warnings():  # as PyTorch 1.9 wrote it, given a validation batch
        warnings.simplefilter('ignore')
        torch.onnx.export(model, torch.zeros(64, 3, 66, 200), str(files['fixed_batch']),
                          dynamo=False, opset_version=9)
    files['fixed_batch'].with_suffix('.yaml').write_text(ONNX_CARD)
    torch.save({'epoch': 9, 'state_dict': {f'module.{key}': value for key, value
                                           in model.state_dict().items()}}, files['state_dict'])
    files['state_dict'].with_suffix('.yaml').write_text(CARD)
    files['direct'] = run_directly(model, files['fixed_batch'], files['weights'])
    yield files
    sys.path.remove(str(site))
    sys.modules.pop('road_nets', None)


def expected(model: torch.nn.Module, weights: Path) -> dict[str, object]:
    """The any-network rule in float64 on the frame, as the card prepares it."""
    _, spec = load_model(weights)
    x = torch.from_numpy(Preprocessor(spec)(FRAME, 'rgb'))[None]
    output, mask = reference_mask(model, x)
    return {'outputs': output[0].numpy(), 'mask': mask[0, 0].numpy(),
            'angle': math.radians(float(output[0, 0])), 'angle_tolerance': 1e-5}


KERAS = {'keras': {}, 'cropping2d': {'normalisation': 'div', 'cropping': ((10, 4), (3, 0))}}
KERAS_CROPS = {'keras': '[200, 0, 280, 640]', 'cropping2d': '[180, 0, 300, 640]'}


@pytest.fixture(scope='module')
def keras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Keras PilotNets as tf2onnx writes them, with the cards vbp-card writes for them, and
    what the node must give on FRAME: angle and outputs of onnxruntime on the unmodified graph,
    the mask of the PyTorch twin exported plainly."""
    folder = tmp_path_factory.mktemp('keras')
    torch.manual_seed(6)
    model = PilotNet('elu').eval()
    files = {}
    for name, options in KERAS.items():
        path = folder / f'{name}.onnx'
        graph = keras_pilotnet(model, **options)
        onnx.save(graph, str(path))
        assert card_tool.main([str(path), '--set', 'input.color=yuv', '--set', 'input.scale=1.0',
                               '--set', f'input.crop={KERAS_CROPS[name]}', '--set',
                               'output.unit=deg']) == 0
        x = Preprocessor(load_model(path)[1])(FRAME, 'rgb')[None]
        (outputs,) = run(graph, {INPUT: np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
        twin_graph = export_onnx(twin(model, options.get('cropping')), x.shape[1:])
        _, mask = run(add_visualbackprop(twin_graph), {'image': x / np.float32(255)})
        angle = math.radians(float(outputs[0, 0]))
        files[name] = path, {'outputs': outputs[0], 'mask': mask[0, 0], 'angle': angle,
                             'angle_tolerance': 1e-5 * abs(angle)}
    return files


def run(graph: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs, as onnxruntime gives them."""
    session = ort.InferenceSession(graph.SerializeToString(), providers=['CPUExecutionProvider'])
    return session.run(None, inputs)


def run_directly(model: torch.nn.Module, fixed_batch: Path, weights: Path) -> dict[str, float]:
    """The angle of the network run directly on the frame: in torch (float32), and the
    fixed-batch graph as written in onnxruntime (the frame first in a batch of 64)."""
    _, spec = load_model(weights)
    x = Preprocessor(spec)(FRAME, 'rgb')[None]
    with torch.inference_mode():
        in_torch = float(model(torch.from_numpy(x))[0, 0])
    session = ort.InferenceSession(str(fixed_batch))
    batch = np.concatenate([x, np.zeros((63, *x.shape[1:]), np.float32)])
    in_onnxruntime = float(session.run(None, {session.get_inputs()[0].name: batch})[0][0, 0])
    return {'state_dict': math.radians(in_torch), 'fixed_batch': math.radians(in_onnxruntime)}


@pytest.fixture(scope='module')
def node(ros, user: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp('logs') / 'vbp_node.log'
    process = start_node('-p', f'model:={user["weights"]}', '-p', 'mask_encoding:=32FC1',
                         '-p', 'deadline_ms:=1000.0', '-r', f'__ns:={NAMESPACE}',
                         log=log, site=user['site'])
    yield process
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0, log.read_text()


@pytest.fixture(scope='module')
def harness(node) -> Harness:
    harness = Harness(NAMESPACE)
    harness.outputs = []
    harness.node.create_subscription(Float32MultiArray, 'outputs',
                                     lambda m: harness.outputs.append(list(m.data)), 10)
    assert harness.send(raw(FRAME, 'rgb8'), timeout=90.0) is not None, 'vbp_node did not answer'
    yield harness
    harness.node.destroy_node()


def check_frame(harness: Harness, reference: dict[str, object]) -> None:
    """One frame through the node: mask, angle and outputs as the rule computes them."""
    angles, outputs = len(harness.angles), len(harness.outputs)
    mask = harness.send(raw(FRAME, 'rgb8'))
    height, width = reference['mask'].shape
    assert mask is not None and (mask.encoding, mask.width, mask.height) == ('32FC1', width,
                                                                             height)
    received = np.frombuffer(mask.data, np.float32).reshape(height, width)
    np.testing.assert_allclose(received, reference['mask'], atol=1e-4)
    assert harness.spin_until(lambda: any(
        abs(angle - reference['angle']) <= reference['angle_tolerance']
        for angle in harness.angles[angles:]), 5.0)
    assert harness.spin_until(lambda: any(
        np.allclose(values, reference['outputs'], rtol=1e-4, atol=1e-5)
        for values in harness.outputs[outputs:]), 5.0)


def running_model(harness: Harness) -> str:
    count = len(harness.diagnostics)
    assert harness.spin_until(lambda: len(harness.diagnostics) > count + 1, 5.0)
    return harness.latest_diagnostics()['model']


def test_own_pytorch_network_by_import_path(harness: Harness, user: dict[str, Path]) -> None:
    check_frame(harness, user['reference'])
    assert running_model(harness) == f'{user["weights"]} (card ' \
        f'{user["weights"].with_suffix(".yaml")})'


@pytest.mark.parametrize('which', ['onnx', 'exported'])
def test_onnx_files_run_with_the_same_mask(harness: Harness, user: dict[str, Path],
                                           which: str) -> None:
    assert harness.set_parameter('model', str(user[which])) == (True, '')
    check_frame(harness, user['reference'])
    assert running_model(harness).startswith(str(user[which]))


@pytest.mark.parametrize('name', list(KERAS))
def test_channels_last_keras_graphs_run_as_onnxruntime_runs_them(
        harness: Harness, user: dict[str, Path], keras: dict[str, tuple[Path, dict]],
        name: str) -> None:
    path, reference = keras[name]
    try:
        assert harness.set_parameter('model', str(path)) == (True, '')
        check_frame(harness, reference)
        assert running_model(harness) == f'{path} (card {path.with_suffix(".yaml")})'
    finally:
        assert harness.set_parameter('model', str(user['weights'])) == (True, '')


@pytest.mark.parametrize('which', ['fixed_batch', 'state_dict'])
def test_a_fixed_batch_export_and_a_pt_state_dict_give_the_networks_angle(
        harness: Harness, user: dict[str, Path], which: str) -> None:
    assert harness.set_parameter('model', str(user[which])) == (True, '')
    count = len(harness.angles)
    check_frame(harness, user['reference'])
    assert any(angle == pytest.approx(user['direct'][which], rel=1e-5)
               for angle in harness.angles[count:]), (harness.angles[count:], user['direct'])
    assert running_model(harness).startswith(str(user[which]))


@pytest.mark.parametrize('name, value, reason', [
    ('model_card', 'channels', 'input.channels is 1 (input.color gray) but the'),
    ('card_overrides', '{output.index: 5}', 'output.index 5 is out of range'),
    ('card_overrides', '{input.colour: rgb}', "unknown key 'input.colour'"),
    ('model', 'garbage.onnx', 'garbage.onnx: not a'),
    ('model', 'weights.pt', 'weights.pt: not a state dict that torch.save wrote'),
    ('model', 'whole.pt', 'whole.pt: weights do not fit architecture '),
    ('backend', 'tensorflow', 'backend must be one of'),
])
def test_bad_changes_are_refused_while_the_old_model_runs(
        harness: Harness, user: dict[str, Path], tmp_path: Path, name: str, value: str,
        reason: str) -> None:
    if value == 'channels':
        value = str(tmp_path / 'channels.yaml')
        Path(value).write_text(CARD.replace('color: yuv', 'color: gray'))
    elif value in ('garbage.onnx', 'weights.pt'):
        value = str(tmp_path / value)
        Path(value).write_bytes(b'\x00not a model' * 50)
        Path(value).with_suffix('.yaml').write_text(CARD)
    elif value == 'whole.pt':  # torch.save(model) of another network
        value = str(tmp_path / value)
        torch.save(torch.nn.Linear(2, 2), value)
        Path(value).with_suffix('.yaml').write_text(CARD)
    before_value, before_model = harness.get_parameter(name), running_model(harness)
    successful, message = harness.set_parameter(name, value)
    assert not successful and reason in message
    assert harness.get_parameter(name) == before_value
    assert running_model(harness) == before_model
    check_frame(harness, user['reference'])


def test_non_finite_outputs_are_counted_not_published(harness: Harness,
                                                      user: dict[str, Path]) -> None:
    assert harness.set_parameter('model', str(user['broken'])) == (True, '')
    try:
        before = int(harness.latest_diagnostics()['dropped (unpublishable output)'])
        message = raw(FRAME, 'rgb8')
        stamp = harness.stamp(message)
        assert harness.spin_until(lambda: harness.best_effort.publish(message) or int(
            harness.latest_diagnostics()['dropped (unpublishable output)']) > before, 10.0)
        assert stamp not in harness.masks
        assert not any(math.isnan(angle) for angle in harness.angles)
    finally:
        assert harness.set_parameter('model', str(user['weights'])) == (True, '')
    check_frame(harness, user['reference'])


def test_bad_model_at_start_up_is_one_clear_line_and_exit_1(
        ros, user: dict[str, Path], tmp_path: Path) -> None:
    card = tmp_path / 'net.yaml'
    card.write_text(CARD.replace('height: 66', 'height: 20'))
    log = tmp_path / 'vbp_node.log'
    process = start_node('-p', f'model:={user["weights"]}', '-p', f'model_card:={card}',
                         '-r', '__ns:=/bad_start', log=log, site=user['site'])
    assert process.wait(timeout=90) == 1
    output = log.read_text()
    assert "does not take the card's input of 3x20x200" in output
    assert 'Traceback' not in output and len(output.strip().splitlines()) == 1, output
