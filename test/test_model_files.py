"""ONNX files as PyTorch's exporters write them for users, run by the engine: the TorchScript
exporter (dynamo=False) at opset 9 with the batch fixed at 64, as a PyTorch 1.9 export given a
validation batch; the dynamo exporter (dynamo=True); weights in an external data file. Each
gives the angle of the network run directly (onnxruntime on the unmodified graph, and torch)
and the mask of the same network exported plainly. A graph that fixes its batch where it
cannot be freed is refused at load with what to re-export."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data
from torch import nn

from own_networks import ONNX_CARD
from vbp_rule import reference_mask
from vbp_ros.models.checkpoint import CheckpointError, ModelSpec
from vbp_ros.models.loading import load_model
from vbp_ros.models.networks import mobilenet_v2, resnet18
from vbp_ros.models.onnx_batch import BATCH
from vbp_ros.engine.build import build_engine
from vbp_ros.engine.engine import VBPEngine, output_problem
from vbp_ros.engine.onnx_backend import export_onnx
from vbp_ros.explain.onnx_vbp import plan_visualbackprop
from vbp_ros.models.preprocess import Preprocessor
from vbp_ros.render.figure2 import fitted_label
from vbp_ros.tools import card as card_tool
from vbp_ros.tools import export as export_tool

DATA = Path(__file__).parent / 'data'
FRAMES = [np.random.default_rng(seed).integers(0, 255, (480, 640, 3), dtype=np.uint8)
          for seed in range(3)]
INPUT = (3, 66, 200)


class ViewPilotNet(nn.Module):
    """PilotNet as PyTorch 1.9-era training scripts wrote it: ``x.view(x.size(0), -1)`` before
    the dense layers, which the exporter folds into a Reshape to (batch, -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 5, 2), nn.ELU(), nn.Conv2d(24, 36, 5, 2), nn.ELU(),
            nn.Conv2d(36, 48, 5, 2), nn.ELU(), nn.Conv2d(48, 64, 3), nn.ELU(),
            nn.Conv2d(64, 64, 3), nn.ELU())
        self.head = nn.Sequential(nn.Linear(64 * 18, 100), nn.ELU(), nn.Linear(100, 10),
                                  nn.ELU(), nn.Linear(10, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x / 127.5 - 1.0)
        return self.head(x.view(x.size(0), -1))


@pytest.fixture(scope='module')
def network() -> nn.Module:
    torch.manual_seed(9)
    return ViewPilotNet().eval()


def export(network: nn.Module, path: Path, batch: int, **options: object) -> Path:
    """``torch.onnx.export`` as a user calls it, with its card beside the file."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(network, (torch.zeros(batch, *INPUT),), str(path), **options)
    path.with_suffix('.yaml').write_text(ONNX_CARD)
    return path


def run_unmodified(path: Path, x: np.ndarray) -> np.ndarray:
    """The graph as written, in onnxruntime: each input in a batch of the graph's fixed size
    (the rest zeros), or all at once where the batch is free; the first output's rows."""
    session = ort.InferenceSession(str(path))
    graph_input = session.get_inputs()[0]
    batch = graph_input.shape[0]
    if not isinstance(batch, int):
        return session.run(None, {graph_input.name: x})[0]
    return np.stack([session.run(None, {graph_input.name: np.concatenate(
        [image[None], np.zeros((batch - 1, *image.shape), np.float32)])})[0][0] for image in x])


def check_against_the_network(path: Path, network: nn.Module) -> None:
    """The engine on the file against the network run directly (the unmodified graph in
    onnxruntime at its own batch size, and torch) and the plain export's mask; three frames as
    one batch, as three cameras give them."""
    engine = build_engine(path, device='cpu', max_batch=len(FRAMES))
    results = engine.process_batch(FRAMES)
    _, spec = load_model(path)
    x = np.stack([Preprocessor(spec)(frame) for frame in FRAMES])
    direct = run_unmodified(path, x)
    with torch.inference_mode():
        in_torch = network(torch.from_numpy(x)).numpy()
    plain = VBPEngine(export_onnx(network, INPUT), replace(spec, input_name=''),
                      backend='onnxruntime', device='cpu', max_batch=len(FRAMES))
    for result, row, torch_row, reference in zip(results, direct, in_torch,
                                                 plain.process_batch(FRAMES)):
        assert result.angle == pytest.approx(math.radians(row[0]), rel=1e-5)
        assert result.angle == pytest.approx(math.radians(torch_row[0]), rel=1e-5)
        np.testing.assert_allclose(result.outputs, row, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.mask, reference.mask, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize('opset', [8, 9])  # 8: IR version 3, initializers are graph inputs
def test_torchscript_exporter_at_an_old_opset_with_the_batch_fixed_at_64(
        network: nn.Module, tmp_path: Path, opset: int) -> None:
    path = export(network, tmp_path / 'fixed64.onnx', 64, dynamo=False, opset_version=opset)
    written = onnx.load(str(path))
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 64
    assert [n.op_type for n in written.graph.node].count('Reshape') == 1  # (64, -1): folded
    check_against_the_network(path, network)
    graph, _ = load_model(path)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH
    output_batch = graph.graph.output[0].type.tensor_type.shape.dim[0]
    assert not output_batch.HasField('dim_value')  # opset 8's export leaves it its own symbol
    assert export_tool.main([str(path), str(tmp_path / 'deploy.onnx')]) == 0  # crashed before
    check_against_the_network(tmp_path / 'deploy.onnx', network)


def with_input_type(graph: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
    """The graph taking its image as ``elem_type`` and casting it to float first, as graphs
    that take 8-bit pixels do."""
    typed = onnx.ModelProto.FromString(graph.SerializeToString())
    image = typed.graph.input[0]
    for node in typed.graph.node:
        node.input[:] = [f'{name}_float' if name == image.name else name for name in node.input]
    typed.graph.node.insert(0, helper.make_node('Cast', [image.name], [f'{image.name}_float'],
                                                to=TensorProto.FLOAT))
    image.type.tensor_type.elem_type = elem_type
    return typed


def test_a_graph_of_8_bit_pixels_is_fed_them(network: nn.Module, tmp_path: Path) -> None:
    """A uint8 image input gets the frame's pixels (a float32 one could not be fed at all), a
    float16 one its values as float16, with the angle and mask of the same graph taking
    floats; a card that scales 8-bit pixels, or an input type no frame becomes, is refused at
    load with the reason."""
    plain = export(network, tmp_path / 'plain.onnx', 1, dynamo=False,
                   dynamic_axes={'x': {0: 'batch'}}, input_names=['x'])
    batch = len(FRAMES)
    expected = build_engine(plain, device='cpu', max_batch=batch).process_batch(FRAMES)
    for elem_type in (TensorProto.UINT8, TensorProto.FLOAT16):  # 0..255: exact in both
        pixels = tmp_path / f'{TensorProto.DataType.Name(elem_type).lower()}.onnx'
        onnx.save(with_input_type(onnx.load(str(plain)), elem_type), str(pixels))
        pixels.with_suffix('.yaml').write_text(ONNX_CARD)
        engine = build_engine(pixels, device='cpu', max_batch=batch)
        for result, reference in zip(engine.process_batch(FRAMES), expected):
            assert result.angle == pytest.approx(reference.angle, rel=1e-6)
            np.testing.assert_allclose(result.mask, reference.mask, atol=1e-6)
    pixels = tmp_path / 'uint8.onnx'
    template = tmp_path / 'template.yaml'
    assert card_tool.main([str(pixels), '--out', str(template)]) == 0
    assert '  scale: 1.0\n' in template.read_text()  # 1/255 for a float input
    pixels.with_suffix('.yaml').write_text(ONNX_CARD.replace('scale: 1.0', 'scale: 0.5'))
    with pytest.raises(CheckpointError, match="input 'x' takes uint8 pixels as they are, so "
                       'input.scale must be 1.0'):
        load_model(pixels)
    whole = tmp_path / 'whole.onnx'
    onnx.save(with_input_type(onnx.load(str(plain)), TensorProto.INT64), str(whole))
    whole.with_suffix('.yaml').write_text(ONNX_CARD)
    with pytest.raises(CheckpointError, match="the image input 'x' is int64; vbp_ros feeds "
                       'images as float, float16, double, uint8'):
        load_model(whole)


@pytest.mark.slow
def test_dynamo_exporter(network: nn.Module, tmp_path: Path) -> None:
    pytest.importorskip('onnxscript', reason='the dynamo exporter needs onnxscript')
    path = export(network, tmp_path / 'dynamo.onnx', 1, dynamo=True)
    check_against_the_network(path, network)


def test_weights_in_an_external_data_file(network: nn.Module, tmp_path: Path) -> None:
    path = export(network, tmp_path / 'external.onnx', 1, dynamo=False)
    model = onnx.load(str(path))
    convert_model_to_external_data(model, location='external.onnx.data', size_threshold=0)
    onnx.save(model, str(path))
    assert path.stat().st_size < 10_000 and (tmp_path / 'external.onnx.data').is_file()
    check_against_the_network(path, network)
    (tmp_path / 'external.onnx.data').rename(tmp_path / 'elsewhere.data')
    with pytest.raises(CheckpointError, match='external.onnx: not a valid ONNX model .*'
                                              'external.onnx.data'):
        load_model(path)


def batch_baked_graph(batch: int | str, head: list[onnx.NodeProto], weights: dict
                      ) -> onnx.ModelProto:
    """Conv -> Relu -> ``head`` giving 'steering', (batch, 2): a 3x16x16 input of a fixed
    batch size (or a free one, named by a string)."""
    rng = np.random.default_rng(0)
    weights = {'w': rng.normal(size=(4, 3, 3, 3)), **weights}
    nodes = [helper.make_node('Conv', ['image', 'w'], ['conv'], strides=[2, 2]),
             helper.make_node('Relu', ['conv'], ['relu']), *head]
    graph = helper.make_graph(
        nodes, 'baked', [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                                       [batch, 3, 16, 16])],
        [helper.make_tensor_value_info('steering', TensorProto.FLOAT, [batch, 2])],
        [numpy_helper.from_array(v.astype(np.int64 if v.dtype.kind == 'i' else np.float32), k)
         for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)], ir_version=10)


def test_a_batch_fixed_inside_the_graph_is_refused_with_what_to_re_export(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / 'baked.onnx'
    onnx.save(batch_baked_graph(4, [  # a bias of the batch's size in the head
        helper.make_node('Flatten', ['relu'], ['flat']),
        helper.make_node('Add', ['flat', 'bias'], ['biased'], name='bias'),
        helper.make_node('Gemm', ['biased', 'fc'], ['steering'], transB=1)],
        {'bias': rng.normal(size=(4, 196)), 'fc': rng.normal(size=(2, 196))}), str(path))
    path.with_suffix('.yaml').write_text('input: {color: rgb, height: 16, width: 16}\n')
    with pytest.raises(CheckpointError, match=r"baked.onnx: the batch size 4 is fixed inside the "
                       r"graph \(node 'bias' \(Add\)\).*re-export the network with a free batch "
                       r"dimension: torch.onnx.export\(..., dynamic_axes=\{'image': "
                       r"\{0: 'batch'\}\}\)"):
        load_model(path)


def test_a_batch_of_1_fixed_inside_the_graph_runs_one_frame_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / 'baked1.onnx'
    onnx.save(batch_baked_graph(1, [  # x.flatten() @ W: every image of a batch in one row
        helper.make_node('Flatten', ['relu'], ['flat'], axis=0),
        helper.make_node('MatMul', ['flat', 'fc'], ['steering'])],
        {'fc': np.random.default_rng(1).normal(size=(196, 2))}), str(path))
    path.with_suffix('.yaml').write_text('input: {color: rgb, height: 16, width: 16}\n')
    frame = FRAMES[0][:16, :16]
    x = Preprocessor(load_model(path)[1])(frame)[None]
    direct = ort.InferenceSession(str(path)).run(None, {'image': x})[0][0]
    assert build_engine(path, device='cpu').process(frame).angle == pytest.approx(
        direct[0], rel=1e-5)
    with pytest.raises(ValueError, match=r"baked1.onnx .*max_batch 2 exceeds the batch size 1 "
                       'that the graph fixes; re-export the network with a free batch'):
        build_engine(path, device='cpu', max_batch=2)


BAD_GRAPHS = {  # each with the line vbp-export prints for it
    'baked': (4, [helper.make_node('Flatten', ['relu'], ['flat']),
                  helper.make_node('Add', ['flat', 'bias'], ['biased'], name='bias'),
                  helper.make_node('Gemm', ['biased', 'fc'], ['steering'], transB=1)],
              {'bias': np.ones((4, 196)), 'fc': np.ones((2, 196))},
              'the batch size 4 is fixed inside the graph'),
    'unloadable': (1, [helper.make_node('Flatten', ['relu'], ['flat']),  # weights do not fit
                       helper.make_node('Gemm', ['flat', 'fc'], ['steering'], transB=1)],
                   {'fc': np.ones((2, 100))},
                   'onnxruntime 1.31.1 cannot load the graph: Node () Op (Gemm) '
                   '[ShapeInferenceError] Dimension mismatch'),
    'unrunnable': ('n', [helper.make_node('Reshape', ['relu', 'rows'], ['steering'])],
                   {'rows': np.array([3, -1])},
                   'onnxruntime failed to run the graph on 1 input of 3x16x16: Non-zero status '
                   'code returned while running Reshape node'),
}


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['export', 'inspect'])
@pytest.mark.parametrize('name', BAD_GRAPHS)
def test_vbp_export_and_inspect_say_in_one_line_what_is_wrong_with_a_graph(
        tmp_path: Path, name: str, tool: str) -> None:
    batch, head, weights, reason = BAD_GRAPHS[name]
    path = tmp_path / f'{name}.onnx'
    onnx.save(batch_baked_graph(batch, head, weights), str(path))
    path.with_suffix('.yaml').write_text('input: {color: rgb, height: 16, width: 16}\n')
    arguments = [str(tmp_path / 'out.onnx')] if tool == 'export' else ['--repeats', '1']
    done = subprocess.run([sys.executable, '-m', f'vbp_ros.tools.{tool}', str(path),  # vbp-...
                           *arguments], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == '', done
    assert done.stderr.startswith(f'vbp-{tool}: {path}: {reason}'), done.stderr
    assert len(done.stderr.splitlines()) == 1 and 'Traceback' not in done.stderr
    assert not (tmp_path / 'out.onnx').exists()


class KerasUdacityTwin(nn.Module):
    """test/data/tf2onnx_udacity.onnx in PyTorch, weights read from the file, on the image that
    Keras' Rescaling and Cropping2D made (NCHW): the reference of its mask."""

    def __init__(self, graph: onnx.ModelProto) -> None:
        super().__init__()
        weights = [numpy_helper.to_array(tensor) for tensor in graph.graph.initializer]
        kernels = {w.shape: torch.from_numpy(w.copy()) for w in weights if w.ndim == 4}
        dense = next(w for w in weights if w.ndim == 2)  # (1056, 1), rows channels-last
        self.conv1 = nn.Conv2d(3, 6, 5, stride=2, bias=False)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, bias=False)
        self.dense = nn.Linear(1056, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(kernels[(6, 3, 5, 5)])
            self.conv2.weight.copy_(kernels[(8, 6, 3, 3)])
            rows = dense[:, 0].reshape(6, 22, 8).transpose(2, 0, 1).ravel()  # to channels-first
            self.dense.weight.copy_(torch.from_numpy(rows.copy())[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(nn.functional.elu(self.conv1(x))))
        return self.dense(torch.flatten(x, 1))


def test_a_keras_model_converted_by_tf2onnx_runs_with_its_card(tmp_path: Path) -> None:
    """A real tf2onnx 1.17 file (Keras 3 Rescaling, Cropping2D((12, 6), (0, 0)), Conv2D ELU and
    ReLU, Flatten, Dense; test/data/make_tf2onnx_udacity.py, converted with the command of
    docs/own-network.md). Its Cropping2D is a Slice that lists every axis, the batch's whole
    (refused before as slicing the batch axis). With the card vbp-card writes, the engine
    gives Keras' own angles and the mask of the PyTorch twin fed the cropped image, zero on
    the rows Cropping2D cut."""
    model = tmp_path / 'udacity.onnx'
    model.write_bytes((DATA / 'tf2onnx_udacity.onnx').read_bytes())
    assert card_tool.main([str(model), '--set', 'input.color=rgb', '--set', 'input.scale=1.0',
                           '--set', 'input.interpolation=linear']) == 0
    assert 'layout: nhwc' in model.with_suffix('.yaml').read_text()
    keras = np.load(DATA / 'tf2onnx_udacity_keras.npz')
    engine = build_engine(model, device='cpu')
    results = [engine.process(pixels) for pixels in keras['pixels']]
    engine.close()
    for result, angle in zip(results, keras['angles'][:, 0]):
        assert result.angle == pytest.approx(float(angle), rel=1e-5)
    twin = KerasUdacityTwin(onnx.load(str(model))).eval()
    cropped = torch.from_numpy(keras['pixels'][:, 12:-6].transpose(0, 3, 1, 2) / 127.5 - 1.0)
    twin_angles, twin_masks = reference_mask(twin, cropped.float())
    np.testing.assert_allclose(twin_angles[:, 0].numpy(), keras['angles'][:, 0], rtol=1e-5)
    for result, twin_mask in zip(results, twin_masks):
        assert result.mask.shape == (48, 96)
        np.testing.assert_allclose(result.mask[12:-6], twin_mask[0].numpy(), atol=1e-4)
        assert not result.mask[:12].any() and not result.mask[-6:].any()


def test_vbp_card_warns_where_vbp_node_would_refuse_the_graph(tmp_path: Path, capsys) -> None:
    """The card is written (it is right), with a warning that the mask cannot be read and why:
    the user learns it when writing the card, not when the node starts."""
    graph = onnx.load(str(DATA / 'tf2onnx_udacity.onnx'))
    starts = next(t for t in graph.graph.initializer if t.name == 'const_starts__6')
    starts.CopyFrom(numpy_helper.from_array(np.asarray([1, 12, 0, 0], np.int64), starts.name))
    model = tmp_path / 'batch_cut.onnx'
    onnx.save(graph, str(model))
    assert card_tool.main([str(model), '--set', 'input.scale=1.0']) == 0
    assert model.with_suffix('.yaml').exists()
    assert capsys.readouterr().err == (
        f'vbp-card: warning: vbp_node will refuse this model: {model}: ONNX node '
        "'functional_1/cropping2d_1/strided_slice' (Slice): it slices the batch axis\n")
    assert card_tool.main([str(DATA / 'tf2onnx_udacity.onnx'), '--out',
                           str(tmp_path / 'fine.yaml')]) == 0
    assert capsys.readouterr().err == ''


def test_figure2_labels_keep_the_end_of_long_layer_names() -> None:
    """Layer names of a graph converted from a Keras SavedModel all begin alike; Figure 2's
    labels (vbp-inspect, vbp-figure2) were cut at the tile's edge and read the same for every
    layer. They now fit the tile and keep the end of the name."""
    names = [f'StatefulPartitionedCall/functional_1/conv2d_{index}/Elu:0' for index in (1, 2, 3)]
    labels = [fitted_label(f'layer {depth} (', name, '): averaged map', 200)
              for depth, name in enumerate(names, start=1)]
    for index, label in enumerate(labels, start=1):
        assert label.startswith(f'layer {index} (...') and label.endswith(
            f'{index}/Elu:0): averaged map')
        assert cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] <= 200 - 8
    assert fitted_label('layer 1 (', 'conv1', '): averaged map', 200) == \
        'layer 1 (conv1): averaged map'


class BatchNormNet(nn.Module):
    """Convolutions with BatchNorm and ReLU: what deployment tools fuse, fold and quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 5, 2), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, 2), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16 * 15 * 48, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class _Frames:
    """onnxruntime's calibration reader: the network inputs ``images``, one at a time."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self.batches = iter([{name: image[None]} for image in images])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def calibration_inputs(spec: ModelSpec, count: int) -> np.ndarray:
    """The network inputs of ``count`` random camera frames (seeds 10 on), to calibrate a
    quantizer with."""
    return np.stack([Preprocessor(spec)(np.random.default_rng(seed).integers(
        0, 255, (480, 640, 3), dtype=np.uint8)) for seed in range(10, 10 + count)])


class QuantizableNet(nn.Module):
    """Conv, BatchNorm and ReLU (the BatchNorm folded at export), then ReLU before BatchNorm
    (NetSVF's order), max pooling and a SiLU: what onnxruntime's static quantization makes QDQ
    of and its optimizer fuses."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 5, 2), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, 2), nn.ReLU(), nn.BatchNorm2d(16),
                                      nn.MaxPool2d(2), nn.Conv2d(16, 16, 3), nn.SiLU())
        nn.init.uniform_(self.features[5].bias, 0.0, 0.1)  # as trained: not the identity
        self.head = nn.Linear(16 * 5 * 22, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x / 255.0), 1))


@pytest.mark.parametrize('options, opset, relu', [
    ({}, 20, 'clip at 0 of QuantizeLinear'),
    ({'ActivationSymmetric': True}, 20, 'Relu'),
    ({'QDQKeepRemovableActivations': True}, 17, 'Relu')],
    ids=['asymmetric', 'symmetric', 'ReLUs kept, opset 17'])
def test_a_qdq_quantized_graph_gives_the_mask_of_its_float_network(
        tmp_path: Path, options: dict, opset: int, relu: str) -> None:
    """onnxruntime's static quantization in the QDQ format, calibrated on camera frames:
    asymmetric activations fold the ReLUs into the quantization (a zero point at the 8-bit
    type's minimum clips at 0, and is read as the ReLU it replaced, but not after the
    BatchNorm, whose output is never negative, nor where the quantizer kept the ReLU after it),
    symmetric ones keep them; the SiLU's gate is quantized too. The plan is the float graph's,
    layer for layer; the angle is the quantized graph's own in onnxruntime, and the mask the
    float network's within what 8-bit activations round. At opset 17 the weights'
    DequantizeLinear is computed by onnxruntime, not folded (onnx's reference implementation
    has it from opset 19 only: reading crashed)."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    torch.manual_seed(5)
    network = QuantizableNet().eval()
    plain = export(network, tmp_path / 'plain.onnx', 1, dynamo=False, input_names=['x'],
                   dynamic_axes={'x': {0: 'batch'}}, opset_version=opset)
    _, spec = load_model(plain)
    calibration = calibration_inputs(spec, 8)
    quantized = tmp_path / 'qdq.onnx'
    quantize_static(str(plain), str(quantized), _Frames('x', calibration),
                    quant_format=QuantFormat.QDQ, extra_options=options)
    quantized.with_suffix('.yaml').write_text(ONNX_CARD)
    float_plan, plan = (plan_visualbackprop(onnx.load(str(path))) for path in (plain, quantized))
    assert plan.canonical() == float_plan.canonical()
    assert [tensor.kept.op for tensor in plan.kept_tensors] == [relu, relu, 'SiLU']
    engine = build_engine(quantized, device='cpu', max_batch=len(FRAMES))
    results = engine.process_batch(FRAMES)
    reference = build_engine(plain, device='cpu', max_batch=len(FRAMES)).process_batch(FRAMES)
    direct = run_unmodified(quantized, np.stack([Preprocessor(spec)(f) for f in FRAMES]))
    for result, row, float_result in zip(results, direct, reference):
        assert result.angle == pytest.approx(math.radians(row[0]), rel=1e-5, abs=1e-7)
        assert np.corrcoef(result.mask.ravel(), float_result.mask.ravel())[0, 1] > 0.99
        assert np.abs(result.mask - float_result.mask).max() < 0.1


@pytest.mark.slow
def test_a_qdq_graph_with_a_pair_for_each_consumer_gives_the_shared_pairs_mask(
        tmp_path: Path) -> None:
    """onnxruntime's DedicatedQDQPair (for its QNN backend) quantizes a tensor once per
    consumer. Read as it stands, ResNet-18's block outputs became two activations each, on
    different paths, none where a mask may be rescaled: the mask overflowed float32 and every
    frame was dropped. Repeated pairs are read as one: the plan is the float graph's and the
    mask the shared pairs' graph's."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    torch.manual_seed(0)
    plain = export(resnet18().eval(), tmp_path / 'plain.onnx', 1, dynamo=False,
                   input_names=['x'], dynamic_axes={'x': {0: 'batch'}})
    _, spec = load_model(plain)
    calibration = calibration_inputs(spec, 4)
    graphs = {}
    for name, options in (('shared', {}), ('dedicated', {'DedicatedQDQPair': True})):
        graphs[name] = tmp_path / f'{name}.onnx'
        quantize_static(str(plain), str(graphs[name]), _Frames('x', calibration),
                        quant_format=QuantFormat.QDQ, extra_options=options)
        graphs[name].with_suffix('.yaml').write_text(ONNX_CARD)
    dedicated = onnx.load(str(graphs['dedicated']))
    pairs = {name: [node.op_type for node in onnx.load(str(path)).graph.node]
             .count('DequantizeLinear') for name, path in graphs.items()}
    assert pairs['dedicated'] > pairs['shared']
    assert plan_visualbackprop(dedicated).canonical() == \
        plan_visualbackprop(onnx.load(str(plain))).canonical()
    results, expected = (build_engine(graphs[name], device='cpu', max_batch=len(FRAMES))
                         .process_batch(FRAMES) for name in ('dedicated', 'shared'))
    for result, reference in zip(results, expected):
        assert output_problem(result, spec) is None
        assert result.angle == pytest.approx(reference.angle, rel=1e-5)
        np.testing.assert_allclose(result.mask, reference.mask, atol=1e-5)


def weights_in_float(quantized: onnx.ModelProto) -> onnx.ModelProto:
    """The float network whose weights are ``quantized``'s, dequantized: each DequantizeLinear
    of an initializer becomes the float initializer it computes, and each QuantizeLinear and
    DequantizeLinear pair on an activation an Identity (both graphs keep their ReLUs)."""
    graph = quantized.graph
    stored = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    weights, nodes = [], []
    for node in graph.node:
        if node.op_type == 'DequantizeLinear' and node.input[0] in stored:
            values, scale, zero = (stored[name].astype(np.float64) for name in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == 'axis'), 1)
            if scale.ndim == 1 and values.ndim > 1:  # per channel along axis
                shape = [1] * values.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            weights.append(numpy_helper.from_array(
                ((values - zero) * scale).astype(np.float32), node.output[0]))
        elif node.op_type == 'DequantizeLinear':
            nodes.append(helper.make_node('Identity', [producers[node.input[0]].input[0]],
                                          node.output))
        elif node.op_type != 'QuantizeLinear' or node.input[0] in stored:
            nodes.append(node)
    read = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in read]
    model = helper.make_model(
        helper.make_graph(nodes, graph.name, graph.input, graph.output, kept + weights),
        opset_imports=quantized.opset_import, ir_version=quantized.ir_version)
    onnx.checker.check_model(model)
    return model


@pytest.mark.slow
def test_a_graph_with_4_bit_weights_gives_the_mask_of_those_weights(tmp_path: Path) -> None:
    """Weights quantized to 4 bits (opset 21's INT4) change the network enough to move its
    attention: the QDQ graph's mask is the mask of the float network that has the same 4-bit
    weights (correlation 0.9975 at least here), not the float graph's (0.87 to 0.96 here). The
    reader reads the quantized network; 8-bit weights keep the float graph's mask (the test
    above)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    torch.manual_seed(5)
    plain = export(mobilenet_v2().eval(), tmp_path / 'plain.onnx', 1, dynamo=False,
                   input_names=['x'], dynamic_axes={'x': {0: 'batch'}}, opset_version=21)
    _, spec = load_model(plain)
    calibration = calibration_inputs(spec, 4)
    quantized = tmp_path / 'int4.onnx'
    quantize_static(str(plain), str(quantized), _Frames('x', calibration),
                    quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt4,
                    per_channel=True, extra_options={'QDQKeepRemovableActivations': True})
    quantized.with_suffix('.yaml').write_text(ONNX_CARD)
    model = onnx.load(str(quantized))
    assert TensorProto.INT4 in {tensor.data_type for tensor in model.graph.initializer}
    same_weights = tmp_path / 'same_weights.onnx'
    onnx.save(weights_in_float(model), str(same_weights))
    same_weights.with_suffix('.yaml').write_text(ONNX_CARD)
    masks = {path: [result.mask.ravel() for result in build_engine(
        path, device='cpu', max_batch=len(FRAMES)).process_batch(FRAMES)]
        for path in (quantized, same_weights, plain)}
    for mask, expected, unquantized in zip(*masks.values()):
        assert np.corrcoef(mask, expected)[0, 1] > 0.99
        assert np.corrcoef(mask, unquantized)[0, 1] < 0.97


def save_optimized(path: Path, optimized: Path, level: ort.GraphOptimizationLevel) -> Path:
    """The graph as onnxruntime's optimizer saves it at ``level``, with its card."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    optimized.with_suffix('.yaml').write_text(ONNX_CARD)
    return optimized


def test_a_graph_that_onnxruntime_optimized_and_saved_gives_the_float_graphs_mask(
        tmp_path: Path) -> None:
    """onnxruntime's extended optimization fuses each Conv and its ReLU (and the BatchNorm
    after them) into a FusedConv of its own domain, and the SiLU into a QuickGelu: read as the
    Conv and ReLU, and the gated activation, they stand for, the plan is the float graph's and
    so are the angle and the mask."""
    torch.manual_seed(5)
    plain = export(QuantizableNet().eval(), tmp_path / 'plain.onnx', 1, dynamo=False,
                   input_names=['x'], dynamic_axes={'x': {0: 'batch'}})
    optimized = save_optimized(plain, tmp_path / 'optimized.onnx',
                               ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    fused = [(n.op_type, n.domain) for n in onnx.load(str(optimized)).graph.node
             if n.domain == 'com.microsoft']
    assert sorted(fused) == [*[('FusedConv', 'com.microsoft')] * 2,
                             ('QuickGelu', 'com.microsoft')]
    assert plan_visualbackprop(onnx.load(str(optimized))).canonical() == \
        plan_visualbackprop(onnx.load(str(plain))).canonical()
    results = build_engine(optimized, device='cpu', max_batch=3).process_batch(FRAMES)
    reference = build_engine(plain, device='cpu', max_batch=3).process_batch(FRAMES)
    for result, expected in zip(results, reference):
        assert result.angle == pytest.approx(expected.angle, rel=1e-5)
        np.testing.assert_allclose(result.mask, expected.mask, atol=1e-5)


def test_graphs_that_deployment_tools_made_are_refused_with_what_to_give_instead(
        tmp_path: Path) -> None:
    """onnxruntime's quantizers in the QOperator format, with its own QDQ operators, and
    dynamic, the graph its optimizer saved at the level of this machine's CPU (NCHWc nodes),
    and a graph exported in training mode: each is refused naming the node and what to give
    instead (a standard QDQ or the float graph; the graph from before the optimizer; an
    eval-mode export). The training-mode one used to
    run, each frame's angle and mask depending on the frames batched with it."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static
    torch.manual_seed(5)
    network = BatchNormNet().eval()
    plain = export(network, tmp_path / 'plain.onnx', 1, dynamo=False, input_names=['x'])
    build_engine(plain, device='cpu').close()  # the float graph runs
    made = {'qoperator': tmp_path / 'qoperator.onnx', 'contrib': tmp_path / 'contrib.onnx',
            'dynamic': tmp_path / 'dynamic.onnx', 'optimized': tmp_path / 'optimized.onnx',
            'training': tmp_path / 'training.onnx'}
    images = np.random.default_rng(0).random((4, *INPUT), np.float32)
    quantize_static(str(plain), str(made['qoperator']), _Frames('x', images),
                    quant_format=QuantFormat.QOperator)
    quantize_static(str(plain), str(made['contrib']), _Frames('x', images),
                    quant_format=QuantFormat.QDQ, extra_options={'UseQDQContribOps': True})
    quantize_dynamic(str(plain), str(made['dynamic']))
    save_optimized(plain, made['optimized'], ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    export(network.train(), made['training'], 2, dynamo=False, input_names=['x'],
           dynamic_axes={'x': {0: 'batch'}}, training=torch.onnx.TrainingMode.TRAINING,
           do_constant_folding=False)
    reasons = {
        'qoperator': r"\(QLinearConv\) in the feature part: a graph quantized in the QOperator "
                     r'format or dynamically, or a QDQ graph that onnxruntime optimized and saved'
                     r'.* the QDQ format .* or the float graph',
        'contrib': r"\(QuantizeLinear\) of domain 'com.microsoft' in the feature part: "
                   "onnxruntime's own quantization operators .* quantize without them",
        'dynamic': r"\(DynamicQuantizeLinear\) in the feature part: a graph quantized in the "
                   'QOperator format or dynamically',
        'optimized': r"of domain 'com.microsoft.nchwc' in the feature part: a graph that "
                     'onnxruntime optimized and saved; give the graph from before its '
                     'optimization',
        'training': r"\(BatchNormalization\) is in training mode: .* export the network after "
                    r'model.eval\(\)'}
    for kind, path in made.items():
        path.with_suffix('.yaml').write_text(ONNX_CARD)
        with pytest.raises(ValueError, match=f'{path.name}.*{reasons[kind]}'):
            build_engine(path, device='cpu')
