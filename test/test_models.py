"""Models of every kind through the one loader: cards, the user's own architectures, ONNX files,
the onnxruntime backend of the engine, vbp-export and vbp-card."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from keras_graphs import INPUT, keras_pilotnet, twin
from own_networks import CARD, install
from vbp_ros import ModelSpec, authors_net, save_checkpoint
from vbp_ros.models import networks
from vbp_ros.models.cards import apply_overrides, card_text, parse_card, spec_from_card
from vbp_ros.models.checkpoint import FORMAT, CheckpointError
from vbp_ros.models.loading import load_model, open_model
from vbp_ros.explain.onnx_vbp import MASK_OUTPUT
from vbp_ros.engine.build import build_engine
from vbp_ros.engine.engine import VBPEngine, output_problem
from vbp_ros.engine.onnx_backend import export_onnx
from vbp_ros.models.preprocess import Preprocessor
from vbp_ros.tools import card as card_tool
from vbp_ros.tools import export as export_tool
from vbp_rule import reference_mask

FRAME = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)


@pytest.fixture()
def road_nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's package on the Python path, weights of PilotNet-ELU and its card."""
    folder = install(tmp_path / 'site')
    monkeypatch.syspath_prepend(str(folder))
    import road_nets

    torch.manual_seed(7)
    model = road_nets.build(activation='elu', outputs=2).eval()
    weights = tmp_path / 'pilotnet.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    (tmp_path / 'pilotnet.yaml').write_text(CARD)
    yield weights
    sys.modules.pop('road_nets', None)


def test_own_network_by_import_path_gives_the_rules_mask(road_nets: Path) -> None:
    model, spec = load_model(road_nets)
    assert type(model).__name__ == 'PilotNet' and not model.training
    assert (spec.color, spec.input_channels, spec.output_unit, spec.output_names) == (
        'yuv', 3, 'deg', ('steering', 'throttle'))
    engine = build_engine(road_nets, device='cpu')
    assert engine.backend == 'onnxruntime'  # ELU: the onnxruntime backend on the CPU
    result = engine.process(FRAME)
    x = torch.from_numpy(Preprocessor(spec)(FRAME))[None]
    output, mask = reference_mask(model, x)
    np.testing.assert_allclose(result.mask, mask[0, 0].numpy(), atol=1e-4)
    np.testing.assert_allclose(result.outputs, output[0].numpy(), rtol=1e-4, atol=1e-5)
    assert result.angle == pytest.approx(math.radians(float(output[0, 0])), rel=1e-4)


def test_one_result_carries_the_network_its_card_and_where_they_come_from(
        road_nets: Path, tmp_path: Path) -> None:
    card = road_nets.with_suffix('.yaml')
    loaded = open_model(road_nets, overrides={'output.index': 1})
    assert (loaded.source, loaded.card, loaded.format, loaded.bundled) == (
        road_nets, card, 'safetensors', False)
    assert loaded.spec.output_index == 1 and not loaded.network.training
    assert loaded.name == f'{road_nets} (card {card})'
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.spec = None
    weights = tmp_path / 'pilotnet.pt'
    torch.save({'state_dict': loaded.network.state_dict()}, weights)
    from_pt = open_model(weights, card)
    assert (from_pt.format, from_pt.card, from_pt.spec.output_index) == ('torch.save', card, 0)
    network, spec = load_model(weights, card)
    assert spec == from_pt.spec and type(network) is type(from_pt.network)
    default = open_model(None)
    assert (default.bundled, default.card, default.format) == (True, None, 'safetensors')
    assert default.name == 'bundled default (default.safetensors)'


def test_registered_architecture_by_name(road_nets: Path, tmp_path: Path) -> None:
    card = tmp_path / 'registered.yaml'
    card.write_text(CARD.replace('road_nets:build', 'road_pilotnet'))
    model, _ = load_model(road_nets, card)
    assert type(model).__name__ == 'PilotNet'


def test_yuv_bgr_and_per_channel_normalization() -> None:
    spec = ModelSpec('', 3, 480, 640, color='bgr', pixel_scale=1 / 255, mean=(0.5, 0.4, 0.3),
                     std=(0.2, 0.25, 0.5))
    x = Preprocessor(spec)(FRAME)
    expected = (FRAME[..., ::-1].transpose(2, 0, 1) / 255 - np.array(spec.mean)[:, None, None]) \
        / np.array(spec.std)[:, None, None]
    np.testing.assert_allclose(x, expected, atol=1e-5)
    yuv = Preprocessor(ModelSpec('', 3, 480, 640, color='yuv', pixel_scale=1.0))(FRAME)
    np.testing.assert_array_equal(yuv, cv2.cvtColor(FRAME, cv2.COLOR_RGB2YUV).transpose(2, 0, 1))


@pytest.mark.parametrize('unit, scale, ratio, expected', [
    ('rad', 1.0, 0.0, 0.5), ('deg', 1.0, 0.0, math.radians(0.5)),
    ('deg', 20.0, 0.0, math.radians(10.0)), ('steering_wheel_deg', 1.0, 0.0, math.radians(0.5)),
    ('steering_wheel_rad', 1.0, 14.8, 0.5 / 14.8), ('class_logits', 1.0, 0.0, 0.5)])
def test_steering_output_in_radians(unit: str, scale: float, ratio: float,
                                    expected: float) -> None:
    spec = ModelSpec('', 1, 8, 8, output_index=1, output_unit=unit, output_scale=scale,
                     steering_ratio=ratio)
    assert spec.steering_angle([9.0, 0.5]) == pytest.approx(expected)


@pytest.mark.parametrize('text, message', [
    ('input: {colour: rgb}', "unknown key 'input.colour'"),
    ('input: gray', r"'input' is a section of keys \(name, layout, color, .*\), not 'gray': give "
                    'its keys under it'),  # was "unknown key 'input'", a key every card has
    ('input: {height: "66"}', 'input.height must be an integer'),
    ('input: {crop: [1, 2, 3]}', r'input.crop must be \[top, left, height, width\]'),
    ('output: {unit: mph}', 'output.unit must be one of'),
    ('input: {color: rgb, mean: [0.1, 0.2]}', 'input.mean has 2 values for 3 input channels'),
    ('input: {color: gray, channels: 3}', "input.channels 3 does not fit input.color 'gray'"),
    ('[1, 2]', 'a model card is a mapping'),
    ('input: {width: 10}', 'input.height missing'),
    ('output: {scale: .nan}', 'output.scale must be finite, not nan'),
    ('input: {scale: 4e-3}', "input.scale must be a number, not '4e-3' \\(YAML reads 4e-3 as "
                             'text: write 0.004\\)'),
    ('input: {std: [1, .inf, 1], color: rgb}', 'input.std must be finite'),
    ('input: {scale: inf}', "input.scale must be a number, not 'inf'$"),  # no 'write inf'
])
def test_bad_cards_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        size = {'input_height': 8, 'input_width': 8}
        spec_from_card(parse_card(text), None if 'missing' in message else size)


def test_card_round_trip_and_overrides() -> None:
    spec = ModelSpec('authors', 1, 125, 640, crop=(200, 0, 250, 640), output_names=('angle',))
    assert spec_from_card(parse_card(card_text(spec))) == spec
    changed = apply_overrides(spec, '{output.index: 0, input: {color: rgb}, output.unit: deg}')
    assert (changed.color, changed.input_channels, changed.output_unit) == ('rgb', 3, 'deg')
    assert apply_overrides(spec, '') == spec
    with pytest.raises(CheckpointError, match='output.scale must be finite'):
        apply_overrides(spec, '{output.scale: .nan}')  # as `ros2 param set` would send it


def test_card_that_contradicts_the_network_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / 'authors.safetensors'
    save_checkpoint(path, authors_net().eval(), ModelSpec('authors', 1, 125, 640))
    for overrides, message in (('{input.color: rgb}', r"input.channels is 3 \(input.color rgb\) "
                                "but the network's first convolution 'features.1' takes 1 "
                                r'\(input.color gray\)'),
                               ('{input.height: 20}', r'does not take the card\'s input of '
                                '1x20x640'),
                               ('{output.index: 1}', 'output.index 1 is out of range: the '
                                'network gives 1 output per image')):
        with pytest.raises(CheckpointError, match=message):
            load_model(path, overrides=overrides)
    graph = tmp_path / 'authors.onnx'
    onnx.save(export_onnx(authors_net().eval(), (1, 125, 640)), str(graph))
    (tmp_path / 'authors.yaml').write_text('input: {height: 120, width: 640}\n')
    with pytest.raises(CheckpointError, match="input.height is 120 but the graph's input "
                                              "'image' has 125"):
        load_model(graph)


def test_a_networks_error_of_many_lines_is_refused_in_its_first_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / 'chatty_net.py').write_text(
        'import torch\nfrom torch import nn\n\n\nclass Chatty(nn.Module):\n'
        '    def __init__(self):\n        super().__init__()\n'
        '        self.w = nn.Parameter(torch.zeros(1))\n\n'
        '    def forward(self, x):\n'
        "        raise RuntimeError('shapes do not fit\\n' + 'detail\\n' * 100000)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / 'chatty.safetensors'
    save_file({'w': torch.zeros(1)}, str(weights))
    (tmp_path / 'chatty.yaml').write_text('architecture: chatty_net:Chatty\n'
                                          'input: {height: 8, width: 8}\n')
    try:
        with pytest.raises(CheckpointError) as refused:
            load_model(weights)
    finally:
        sys.modules.pop('chatty_net', None)
    assert str(refused.value).endswith("1x8x8 (input.channels, input.height, input.width): "
                                       'RuntimeError: shapes do not fit')


def test_vbp_ros_checkpoints_of_before_cards_keep_working(tmp_path: Path) -> None:
    model = authors_net().eval()
    old_spec = {'architecture': 'authors', 'input_channels': 1, 'input_height': 125,
                'input_width': 640, 'arguments': {}, 'color': 'gray', 'crop': [200, 0, 250, 640],
                'pixel_scale': 1 / 255, 'output_unit': 'rad', 'description': 'old'}
    path = tmp_path / 'old.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={'format': FORMAT, 'spec': json.dumps(old_spec)})
    _, spec = load_model(path)
    assert spec.crop == (200, 0, 250, 640) and spec.output_index == 0 and spec.mean == (0.0,)
    assert spec.interpolation == 'area'  # as every checkpoint before the key was resized
    assert card_tool.main([str(path), '--set', 'output.unit=deg']) == 0  # a card for it
    assert card_tool.main([str(path)]) == 1  # kept unless --force
    _, spec = load_model(path)
    assert spec.output_unit == 'deg' and spec.description == 'old'


def test_refusals_without_running_anything(tmp_path: Path) -> None:
    """(Pickles that would run code: test_state_dicts.py.)"""
    plain = tmp_path / 'plain.safetensors'
    save_file({'w': torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match='no model card'):
        load_model(plain)
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'\x00garbage' * 100)
    (tmp_path / 'garbage.yaml').write_text('input: {height: 8, width: 8}\n')
    with pytest.raises(CheckpointError, match='not .*ONNX model'):
        load_model(garbage)
    fifo = tmp_path / 'fifo.onnx'
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match='not a regular file'):
        load_model(fifo)
    assert time.monotonic() - start < 5.0
    for name, way in (('net.h5', 'a Keras model goes through ONNX, converted where it loads: '
                                 'python -m tf2onnx.convert --keras .*net.h5 --output'),
                      ('saved_model.pb', 'tf2onnx.convert --saved-model '),
                      ('net.engine', 'a TensorRT engine is built for one GPU'),
                      ('net.bin2', r'\(.pt, .pth, .ckpt, .bin, .tar, .pkl, .ts, .jit\)$')):
        unknown = tmp_path / name
        unknown.write_bytes(b'x')
        with pytest.raises(CheckpointError, match=f"unknown model type '{unknown.suffix}'.*{way}"):
            load_model(unknown)


def test_onnx_needs_a_card(tmp_path: Path) -> None:
    graph = tmp_path / 'net.onnx'
    onnx.save(export_onnx(authors_net().eval(), (1, 125, 640)), str(graph))
    with pytest.raises(CheckpointError, match='an ONNX model needs a model card'):
        load_model(graph)
    assert card_tool.main([str(graph), '--set', 'input.crop=[200, 0, 250, 640]']) == 0
    _, spec = load_model(graph)  # the template: size and colour from the graph
    assert (spec.input_channels, spec.input_height, spec.input_width, spec.color) == (
        1, 125, 640, 'gray')


def keras_graph(folder: Path, **options: object) -> tuple[Path, networks.PilotNet]:
    """A tf2onnx-style Keras PilotNet (channels-last) saved as keras.onnx, and its weights."""
    torch.manual_seed(8)
    model = networks.PilotNet('elu').eval()
    path = folder / 'keras.onnx'
    onnx.save(keras_pilotnet(model, **options), str(path))
    return path, model


def test_vbp_card_template_of_a_channels_last_graph(tmp_path: Path) -> None:
    graph, _ = keras_graph(tmp_path)
    assert card_tool.main([str(graph), '--set', 'input.color=yuv']) == 0
    assert '  layout: nhwc\n' in graph.with_suffix('.yaml').read_text()
    _, spec = load_model(graph)
    assert (spec.input_layout, spec.input_channels, spec.input_height, spec.input_width,
            spec.color) == ('nhwc', 3, 66, 200, 'yuv')


def test_input_layout_that_contradicts_the_network_is_refused(tmp_path: Path) -> None:
    graph, _ = keras_graph(tmp_path)
    (tmp_path / 'keras.yaml').write_text('input: {layout: nchw, color: rgb}\n')
    with pytest.raises(CheckpointError, match=f"^{graph}: input.layout is nchw but the graph's "
                       f"input '{INPUT}' is nhwc: Transpose '.*' takes it to NCHW$"):
        load_model(graph)
    with pytest.raises(CheckpointError, match='input.layout must be one of nchw, nhwc'):
        load_model(graph, overrides={'input.layout': 'chw'})
    weights = tmp_path / 'authors.safetensors'
    save_checkpoint(weights, authors_net().eval(), ModelSpec('authors', 1, 125, 640))
    with pytest.raises(CheckpointError, match='input.layout is nhwc, but PyTorch networks take '
                                              'nchw images'):
        load_model(weights, overrides='{input.layout: nhwc}')


def test_a_graph_with_inputs_besides_the_image_is_refused_naming_them(tmp_path: Path) -> None:
    """End-to-end driving networks often take the speed too: vbp_ros feeds only frames, and
    says so at load (onnxruntime's 'missing input' was blamed on the card's input size)."""
    graph = helper.make_graph(
        [helper.make_node('GlobalAveragePool', [INPUT], ['pooled']),
         helper.make_node('Flatten', ['pooled'], ['features']),
         helper.make_node('Concat', ['features', 'speed'], ['both'], axis=1),
         helper.make_node('MatMul', ['both', 'weight'], ['steering'])], 'with_speed',
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ['batch', 3, 66, 200]),
         helper.make_tensor_value_info('speed', TensorProto.FLOAT, ['batch', 1])],
        [helper.make_tensor_value_info('steering', TensorProto.FLOAT, ['batch', 1])],
        [numpy_helper.from_array(np.ones((4, 1), np.float32), 'weight')])
    path = tmp_path / 'with_speed.onnx'
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    path.with_suffix('.yaml').write_text('input: {color: rgb}\n')
    with pytest.raises(CheckpointError, match=f"the graph takes inputs besides the image "
                       f"'{INPUT}' \\('speed'\\), and vbp_ros feeds a network camera frames only"):
        load_model(path)


def test_input_layout_from_the_card_where_the_graph_does_not_show_it(tmp_path: Path) -> None:
    """A linear model on channels-last pixels has no Transpose that shows its layout: the
    card's input.layout says how to read the graph's input size."""
    graph = helper.make_graph(
        [helper.make_node('Reshape', [INPUT, 'flat'], ['pixels']),
         helper.make_node('MatMul', ['pixels', 'weight'], ['steering'])], 'linear',
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ['batch', 66, 200, 3])],
        [helper.make_tensor_value_info('steering', TensorProto.FLOAT, ['batch', 1])],
        [numpy_helper.from_array(np.asarray([-1, 66 * 200 * 3], np.int64), 'flat'),
         numpy_helper.from_array(np.ones((66 * 200 * 3, 1), np.float32), 'weight')])
    path = tmp_path / 'linear.onnx'
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    path.with_suffix('.yaml').write_text('input: {layout: nhwc, color: rgb}\n')
    _, spec = load_model(path)
    assert (spec.input_layout, spec.input_channels, spec.input_height, spec.input_width) == (
        'nhwc', 3, 66, 200)
    path.with_suffix('.yaml').write_text('input: {color: rgb}\n')
    with pytest.raises(CheckpointError, match=r"input.channels is 3 \(input.color rgb\) but the "
                       "graph's input 'input_1' has 66$"):
        load_model(path)


@pytest.mark.parametrize('model, settings, message', [
    ('plain.safetensors', ['input.height=125', 'input.width=640'], 'architecture missing'),
    ('keras.onnx', ['input.channels=1'], "input.channels 1 does not fit input.color 'rgb'"),
])
def test_vbp_card_errors_name_the_users_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             model: str, settings: list[str],
                                             message: str) -> None:
    keras_graph(tmp_path)
    save_file(authors_net().state_dict(), str(tmp_path / 'plain.safetensors'))
    path = tmp_path / model
    arguments = [item for setting in settings for item in ('--set', setting)]
    assert card_tool.main([str(path), *arguments]) == 1
    assert capsys.readouterr().err.startswith(f'vbp-card: {path}: {message}')
    assert not path.with_suffix('.yaml').exists()


def test_engine_runs_a_channels_last_graph_as_onnxruntime_does(tmp_path: Path) -> None:
    """The engine feeds a Keras graph (Cropping2D, channels-last) its input in NHWC: the angle
    is onnxruntime's on the unmodified graph, the mask that of its PyTorch twin."""
    cropping = ((10, 4), (3, 0))
    graph, model = keras_graph(tmp_path, cropping=cropping)
    (tmp_path / 'keras.yaml').write_text('input: {color: yuv, scale: 1.0, crop: [180, 0, 300, '
                                         '640]}\n')
    engine = build_engine(graph, device='cpu')
    result = engine.process(FRAME)
    x = np.ascontiguousarray(engine.preprocess(FRAME)[None].transpose(0, 2, 3, 1))
    session = ort.InferenceSession(graph.read_bytes(), providers=['CPUExecutionProvider'])
    (expected,) = session.run(None, {INPUT: x})
    assert result.angle == pytest.approx(float(expected[0, 0]), rel=1e-5)
    twin_spec = dataclasses.replace(engine.spec, input_name='', input_layout='nchw',
                                    pixel_scale=1 / 255)
    twin_engine = VBPEngine(twin(model, cropping), twin_spec, backend='onnxruntime',
                            device='cpu')
    np.testing.assert_allclose(result.mask, twin_engine.process(FRAME).mask, atol=1e-4)


@pytest.mark.slow
def test_engine_backends_agree_and_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ModelSpec('authors', 1, 125, 640, crop=(200, 0, 250, 640))
    model = authors_net().eval()
    frames = [np.random.default_rng(i).integers(0, 255, (480, 640), dtype=np.uint8)
              for i in range(3)]
    torch_engine = VBPEngine(model, spec, device='cpu', max_batch=3)
    onnx_engine = VBPEngine(model, spec, device='cpu', max_batch=3, backend='onnxruntime')
    assert VBPEngine(model, spec, device='cpu', backend='auto').backend == 'onnxruntime'
    assert onnx_engine.description == 'cpu (CPUExecutionProvider), fp32, onnxruntime'
    for a, b in zip(torch_engine.process_batch(frames), onnx_engine.process_batch(frames)):
        np.testing.assert_allclose(a.mask, b.mask, atol=1e-5)
        assert a.angle == pytest.approx(b.angle, abs=1e-5)
    graph = export_onnx(model, (1, 125, 640))
    with pytest.raises(ValueError, match='backend torch runs PyTorch networks'):
        VBPEngine(graph, spec, backend='torch')
    with pytest.raises(ValueError, match='onnxruntime runs fp32'):
        VBPEngine(model, spec, backend='onnxruntime', precision='fp16')
    with pytest.raises(ValueError, match='needs the CUDAExecutionProvider'):
        VBPEngine(graph, spec, backend='onnxruntime', device='cuda')


def test_non_finite_outputs_are_flagged(road_nets: Path, tmp_path: Path) -> None:
    card = tmp_path / 'broken.yaml'
    card.write_text(CARD.replace('road_nets:build', 'road_nets:Broken'))
    engine = build_engine(road_nets, card, device='cpu')
    result = engine.process(FRAME)
    assert math.isnan(result.angle)
    assert 'non-finite network output' in output_problem(result, engine.spec)


def test_vbp_export_runs_with_its_card(road_nets: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / 'export' / 'pilotnet.onnx'
    assert export_tool.main([str(road_nets), str(out)]) == 0
    printed = capsys.readouterr().out
    assert '1. /features/features.1/Elu_output_0 (Elu, layer ' in printed
    assert ') 24x31x98, positive part' in printed
    assert 'wrote' in printed and out.with_suffix('.yaml').is_file()
    graph, spec = load_model(out)
    assert graph.graph.output[-1].name == MASK_OUTPUT and spec.architecture == ''
    exported = build_engine(out, device='cpu').process(FRAME)
    original = build_engine(road_nets, device='cpu').process(FRAME)
    np.testing.assert_allclose(exported.mask, original.mask, atol=1e-6)
    assert exported.angle == pytest.approx(original.angle, rel=1e-6)
    assert export_tool.main([str(tmp_path / 'absent.onnx'), str(out)]) == 1


def test_vbp_export_writes_an_old_opset_and_refuses_one_torch_cannot(road_nets: Path,
                                                                     tmp_path: Path,
                                                                     capsys) -> None:
    out = tmp_path / 'opset7.onnx'
    assert export_tool.main([str(road_nets), str(out), '--opset', '7']) == 0
    graph, _ = load_model(out)
    assert graph.opset_import[0].version == 7 and graph.ir_version == 3
    exported = build_engine(out, device='cpu').process(FRAME)
    original = build_engine(road_nets, device='cpu').process(FRAME)
    np.testing.assert_allclose(exported.mask, original.mask, atol=1e-6)
    with pytest.raises(SystemExit):
        export_tool.main([str(road_nets), str(tmp_path / 'old.onnx'), '--opset', '5'])
    assert 'argument --opset: 5 is not an integer from 7 to 23' in capsys.readouterr().err


def test_vbp_export_never_writes_over_its_inputs_or_another_file(road_nets: Path,
                                                                 tmp_path: Path) -> None:
    model, card = road_nets, road_nets.with_suffix('.yaml')
    before = {path: path.read_bytes() for path in (model, card)}
    for out in (model, card, tmp_path / 'pilotnet.onnx',  # its card would be pilotnet.yaml
                tmp_path / 'deploy.yaml'):
        assert export_tool.main([str(model), str(out)]) == 1, out
    assert {path: path.read_bytes() for path in before} == before
    assert not (tmp_path / 'deploy.yaml').exists()
    out = tmp_path / 'deploy.onnx'
    assert export_tool.main([str(model), str(out)]) == 0
    assert export_tool.main([str(model), str(out)]) == 1  # exists
    assert export_tool.main([str(model), str(out), '--force']) == 0
