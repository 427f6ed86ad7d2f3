"""VisualBackProp inside ONNX graphs: the in-graph mask equals the any-network rule.

The rule's reference is test/vbp_rule.py (torch.fx, float64, written from
docs/design.md, "VisualBackProp on any network");
on plain ReLU chains, today's VisualBackProp (exact there) is compared too. Graphs come from
torch.onnx.export, run by ONNX Runtime in one session with the network's outputs, and, for
channels-last Keras networks, from test/keras_graphs.py (tf2onnx's graphs, built with onnx.helper),
each against the same network exported plainly from PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from keras_graphs import INPUT, keras_pilotnet, twin
from vbp_ros.models import networks
from vbp_ros.models.cards import write_card
from vbp_ros.models.checkpoint import ModelSpec
from vbp_ros.models.networks import authors_net, net_svf
from vbp_ros.explain import onnx_write
from vbp_ros.explain.geometry import AxisGeometry
from vbp_ros.explain.rules import UnsupportedModelError
from vbp_ros.explain.onnx_vbp import (MASK_OUTPUT, RULES, add_visualbackprop, graph_input_layout,
                                      has_visualbackprop, plan_visualbackprop)
from vbp_ros.explain.vbp import VisualBackProp
from vbp_ros.engine.onnx_backend import OnnxRuntimeNetwork, export_onnx
from vbp_rule import reference_mask

TOLERANCE = 1e-4


class PilotNetLike(nn.Module):
    """NVIDIA's PilotNet layout (5x5 stride 2, then 3x3), small, with a normalization step."""

    def __init__(self, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5, 2), activation(), nn.Conv2d(6, 8, 5, 2), activation(),
            nn.Conv2d(8, 10, 3), activation(), nn.Conv2d(10, 12, 3), activation())
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(10), nn.ReLU(), nn.Linear(10, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x / 127.5 - 1.0))


class CommaLike(nn.Module):
    """comma.ai's steering model: ELU, the last convolution without activation, ELU in the
    head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 8, 4, padding=2)
        self.conv2 = nn.Conv2d(8, 12, 5, 2, padding=2)
        self.conv3 = nn.Conv2d(12, 16, 5, 2, padding=2)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.ELU(), nn.LazyLinear(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.conv1(x))
        x = F.elu(self.conv2(x))
        return self.head(self.conv3(x))


class PoolingNet(nn.Module):
    """Max pooling with padding and ceil_mode, average pooling, dilation, padding='same' with
    an even kernel, zero padding, LeakyReLU and SiLU."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
            nn.Conv2d(6, 8, 3, dilation=2), nn.LeakyReLU(0.1), nn.AvgPool2d(3, 2, 1),
            nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(8, 8, 4, padding='same'), nn.SiLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """ResNet's basic block, functional ReLU and residual add."""

    def __init__(self, channels_in: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetLike(nn.Module):
    """A ResNet-18-style stem (7x7 stride 2, max pool), two stages, global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, depthwise 3x3, linear 1x1 projection."""

    def __init__(self, channels_in: int, channels: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = channels_in * expand
        self.residual = stride == 1 and channels_in == channels
        self.block = nn.Sequential(
            nn.Conv2d(channels_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetLike(nn.Module):
    """A MobileNetV2-style network: ReLU6, depthwise convolutions, linear bottlenecks."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2), InvertedResidual(12, 12, 1),
            nn.Conv2d(12, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU6())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(24, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ActivationsNet(nn.Module):
    """Every other activation of the rule, a concat of two branches and a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.GELU())
        self.left = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Hardswish())
        self.right = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2), nn.Mish())
        self.mix = nn.Sequential(nn.Conv2d(16, 8, 3, 2), nn.PReLU(8), nn.Conv2d(8, 8, 3),
                                 nn.SELU(), nn.Conv2d(8, 8, 1), nn.CELU(), nn.Conv2d(8, 8, 3),
                                 nn.ELU())
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1) + torch.cat([x, x], dim=1)
        return self.head(self.mix(x))


NETWORKS = {
    'pilotnet_relu': (lambda: PilotNetLike(nn.ReLU), (3, 66, 200)),
    'pilotnet_elu': (lambda: PilotNetLike(nn.ELU), (3, 66, 200)),
    'comma': (CommaLike, (3, 80, 160)),
    'pooling': (PoolingNet, (1, 45, 61)),
    'resnet': (ResNetLike, (3, 67, 131)),
    'mobilenet': (MobileNetLike, (3, 67, 97)),
    'activations': (ActivationsNet, (3, 41, 57)),
}


def build(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """A network with random weights and batch-norm statistics, in eval mode."""
    factory, shape = NETWORKS[name]
    torch.manual_seed(sum(map(ord, name)))
    model = factory()
    model(torch.rand(1, *shape))  # materialise lazy layers
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval(), shape


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: x})


def run_with_mask(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return run(add_visualbackprop(model), x)


def scale_ups_by(form: str, monkeypatch) -> None:
    """Scale-ups as the writer mixes them ('mixed'), or all by 'conv_transpose' or 'matmul'."""
    if form == 'conv_transpose':
        monkeypatch.setattr(onnx_write, 'MATMUL_SCALE_UP_PIXELS', 0)
    elif form == 'matmul':
        monkeypatch.setattr(onnx_write, 'MATMUL_SCALE_UP_PIXELS', 10**9)
        monkeypatch.setattr(onnx_write, 'MATMUL_SCALE_UP_ENTRIES', 10**9)
        monkeypatch.setattr(onnx_write, 'WIDE_KERNEL', 1)


@pytest.mark.parametrize('scale_ups', ['mixed', 'conv_transpose', 'matmul'])
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('name', list(NETWORKS))
def test_in_graph_mask_equals_the_rule(name: str, batch: int, scale_ups: str,
                                       monkeypatch) -> None:
    scale_ups_by(scale_ups, monkeypatch)
    model, shape = build(name)
    x = torch.rand(batch, *shape) * (255.0 if name.startswith('pilotnet') else 1.0)
    output, mask = run_with_mask(export_onnx(model, shape), x.numpy())
    expected_output, expected_mask = reference_mask(model, x)
    assert mask.dtype == np.float32 and mask.shape == (batch, 1, *shape[1:])
    np.testing.assert_allclose(output, expected_output.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mask, expected_mask.numpy(), atol=TOLERANCE)
    assert mask.max() == pytest.approx(1.0) and mask.min() == pytest.approx(0.0)


def test_an_identity_on_a_gates_path_is_read_through() -> None:
    """x * Identity(Sigmoid(x)), as a graph with each Q/DQ pair made an Identity has it, is
    the SiLU it computes."""
    model, shape = build('pooling')
    graph = export_onnx(model, shape)
    nodes = list(graph.graph.node)
    for index, node in reversed(list(enumerate(nodes))):
        if node.op_type == 'Sigmoid':
            gate = node.output[0]
            for consumer in nodes:
                consumer.input[:] = [f'{gate}_kept' if i == gate else i for i in consumer.input]
            nodes.insert(index + 1, helper.make_node('Identity', [gate], [f'{gate}_kept']))
    graph.graph.ClearField('node')
    graph.graph.node.extend(nodes)
    assert [node.op_type for node in graph.graph.node].count('Identity') == 1
    x = torch.rand(2, *shape)
    _, mask = run_with_mask(graph, x.numpy())
    np.testing.assert_allclose(mask, reference_mask(model, x)[1].numpy(), atol=TOLERANCE)


def test_older_opsets_give_the_same_mask() -> None:
    """Opset 17 writes GELU in its erf form, x * (1 + erf(x / sqrt 2)) * 0.5."""
    model, shape = build('activations')
    graph = export_onnx(model, shape, opset=17)
    assert 'Erf' in {node.op_type for node in graph.graph.node}
    x = torch.rand(2, *shape)
    _, mask = run_with_mask(graph, x.numpy())
    np.testing.assert_allclose(mask, reference_mask(model, x)[1].numpy(), atol=TOLERANCE)
    assert plan_visualbackprop(graph).kept_tensors[0].kept.op == 'Gelu'


@pytest.mark.parametrize('opset', [7, 9])
@pytest.mark.parametrize('name', ['pilotnet_relu', 'pooling', 'resnet'])
def test_graphs_of_early_opsets_get_the_same_mask(name: str, opset: int) -> None:
    """ONNX model-zoo era graphs: IR version 3 at opset 7 (every initializer also a graph
    input, also the constants folded for shape inference: PilotNet's scaling), Max without
    broadcasting before opset 8, Slice's bounds as attributes before opset 10 (the pooling
    network's ZeroPad2d crops its mask)."""
    model, shape = build(name)
    graph = export_onnx(model, shape, opset=opset)
    assert (graph.ir_version < 4) == (opset < 8)
    x = torch.rand(2, *shape)
    _, mask = run_with_mask(graph, x.numpy())
    np.testing.assert_allclose(mask, reference_mask(model, x)[1].numpy(), atol=TOLERANCE)


@pytest.mark.parametrize('factory', [net_svf, authors_net])
def test_paper_networks_keep_their_masks(factory) -> None:
    torch.manual_seed(1)
    model = factory(input_height=125, input_width=211).eval()
    x = torch.rand(2, 1, 125, 211)
    _, mask = run_with_mask(export_onnx(model, (1, 125, 211)), x.numpy())
    with VisualBackProp(model) as vbp, torch.inference_mode():
        _, expected = vbp(x)
    np.testing.assert_allclose(mask, expected.numpy(), atol=1e-5)


def test_plan_of_a_residual_network_names_kept_tensors_scale_ups_and_merges() -> None:
    model, shape = build('resnet')
    plan = plan_visualbackprop(export_onnx(model, shape))
    assert [t.kept.op for t in plan.kept_tensors] == ['Relu'] * 9  # stem + 2 per block
    text = plan.describe()
    assert 'MaxPool' in text and 'branches merge (masks summed):' in text
    assert 'output padding' in text
    assert plan.head and plan.head[0].op == 'GlobalAveragePool'
    # The block outputs are narrow points (every path of the mask passes them); inside a block
    # the main path and the shortcut run side by side.
    narrow = {t.name for t in plan.nodes if t.narrow}
    kept = [t.name for t in plan.kept_tensors]
    block_outputs = [name for name in kept if name.endswith('/Relu_1_output_0')]
    assert len(block_outputs) == 4 and set(block_outputs) <= narrow
    inside = [name for name in kept if name.endswith('block/Relu_output_0')
              or '/layer' in name and name.endswith('/Relu_output_0')]
    assert inside and not set(inside) & narrow


def test_last_convolution_without_activation_is_kept() -> None:
    model, shape = build('comma')
    plan = plan_visualbackprop(export_onnx(model, shape))
    assert [t.kept.op for t in plan.kept_tensors] == ['Elu', 'Elu', 'Conv']


def test_the_head_takes_no_part() -> None:
    model, shape = build('pilotnet_elu')
    x = torch.rand(1, *shape) * 255
    _, before = run_with_mask(export_onnx(model, shape), x.numpy())
    for module in model.head.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight)
    _, after = run_with_mask(export_onnx(model, shape), x.numpy())
    np.testing.assert_allclose(before, after, atol=1e-6)


def test_deep_networks_do_not_underflow() -> None:
    """30 layers whose averaged maps are about 1e-3: the product (1e-90) is far below float32;
    rescaling at narrow points keeps the mask equal to the float64 rule."""
    torch.manual_seed(0)
    layers = []
    for _ in range(30):
        conv = nn.Conv2d(4, 4, 3, padding=1)
        nn.init.uniform_(conv.weight, 0.0, 0.02)
        nn.init.constant_(conv.bias, 1e-3)
        layers += [conv, nn.ReLU()]
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), *layers, nn.Flatten(),
                          nn.Linear(4 * 14 * 14, 1)).eval()
    x = torch.rand(2, 1, 16, 16)
    _, mask = run_with_mask(export_onnx(model, (1, 16, 16)), x.numpy())
    assert np.isfinite(mask).all()
    np.testing.assert_allclose(mask, reference_mask(model, x)[1].numpy(), atol=TOLERANCE)


class Branches(nn.Module):
    """Inception's block: branches ending in ReLUs, concatenated, so that the block's output,
    the one tensor every path passes, is no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.short = nn.Sequential(nn.Conv2d(channels, channels // 2, 1), nn.ReLU())
        self.long = nn.Sequential(nn.Conv2d(channels, channels // 2, 1), nn.ReLU(),
                                  nn.Conv2d(channels // 2, channels // 2, 3, padding=1),
                                  nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.short(x), self.long(x)], dim=1)


class DenseBlock(nn.Module):
    """DenseNet's block: each layer reads the concatenation of all the maps before it, so no
    tensor inside is on every path."""

    def __init__(self, channels: int, layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels + i * growth, growth, 3, padding=1), nn.ReLU())
            for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, dim=1)))
        return torch.cat(maps, dim=1)


def blocks_network(kind: str) -> nn.Module:
    """Six Inception blocks with growing activations (their masks overflowed float32 between
    narrow points that were not kept), or a 30-layer dense block of 32 channels a layer (the
    torch executor's ratio of channel counts between its paths overflowed float32)."""
    torch.manual_seed(0)
    body = [Branches(8) for _ in range(6)] if kind == 'inception' else [DenseBlock(8, 30, 32)]
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), *body, nn.Flatten(), nn.LazyLinear(1))
    model(torch.rand(1, 1, 12, 12))
    if kind == 'inception':
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.uniform_(module.weight, 0.0, 0.5)
                nn.init.constant_(module.bias, 0.1)
    return model.eval()


@pytest.mark.parametrize('kind', [pytest.param('inception', marks=pytest.mark.slow), 'dense'])
def test_blocks_without_kept_narrow_points_keep_a_finite_mask(kind: str) -> None:
    """Masks are also rescaled at narrow points that merge several masks, and the torch
    executor divides out its channel counts before they leave float32: both backends give the
    float64 rule's mask."""
    model = blocks_network(kind)
    x = torch.rand(2, 1, 12, 12)
    expected = reference_mask(model, x)[1].numpy()
    _, in_graph = run_with_mask(export_onnx(model, (1, 12, 12)), x.numpy())
    with VisualBackProp(model) as vbp, torch.inference_mode():
        _, in_torch = vbp(x)
    np.testing.assert_allclose(in_graph, expected, atol=TOLERANCE)
    np.testing.assert_allclose(in_torch.numpy(), expected, atol=TOLERANCE)


def test_masks_are_rescaled_at_narrow_points_where_a_product_follows() -> None:
    """On a chain every kept tensor is a narrow point; the shallowest one's mask meets no
    further product, so dividing it by its maximum would guard nothing."""
    model, shape = build('pilotnet_relu')
    plan = plan_visualbackprop(export_onnx(model, shape))
    kept = plan.kept_tensors
    assert all(t.narrow for t in kept)
    assert [t.rescaled for t in kept] == [False] + [True] * (len(kept) - 1)
    graph = add_visualbackprop(export_onnx(model, shape))
    assert sum(node.name.startswith('vbp/rescaled') for node in graph.graph.node) == len(kept) - 1


def scale_up_nodes(model: nn.Module, shape: tuple[int, int, int]
                   ) -> tuple[list, list[onnx.NodeProto]]:
    """The geometries of a network's spatial edges, and its graph's scale-up nodes."""
    graph = export_onnx(model.eval(), shape)
    edges = [e.geometry for t in plan_visualbackprop(graph).nodes for e in t.edges
             if e.geometry]
    nodes = [node for node in add_visualbackprop(graph).graph.node
             if node.name.startswith('vbp/scale_up')]
    return edges, nodes


def test_scale_ups_are_one_pass_per_axis_that_changes() -> None:
    """The all-ones kernel is separable: a k x k edge is two one-dimensional passes, and the
    1x1 convolutions of MobileNet's blocks, which change nothing, take none. Passes of 3
    taps are ConvTransposes; of 5 or more, MatMuls on masks up to MATMUL_SCALE_UP_PIXELS
    (PilotNet's 5x5 edges, the largest from 31x98)."""
    edges, nodes = scale_up_nodes(*build('mobilenet'))
    assert sum(g.kernel == (1, 1) and g.stride == (1, 1) for g in edges) >= 4
    changing = [g for g in edges if g.kernel != (1, 1) or g.stride != (1, 1)]
    assert [node.op_type for node in nodes] == ['ConvTranspose'] * 2 * len(changing)
    assert all(1 in onnx.helper.get_attribute_value(a) for node in nodes
               for a in node.attribute if a.name == 'kernel_shape')
    edges, nodes = scale_up_nodes(networks.build_network('pilotnet_elu'), (3, 66, 200))
    wide = sum(g.kernel == (5, 5) for g in edges)
    assert wide == 3 and len(edges) == 5
    assert sorted(node.op_type for node in nodes) == \
        ['ConvTranspose'] * 2 * (len(edges) - wide) + ['MatMul'] * 2 * wide


def test_an_elongated_mask_is_not_given_a_huge_scale_up_matrix() -> None:
    """One row of 4096 pixels along a 5-tap kernel: within the pixel limit, but its matrix
    would hold 17 million entries (67 MB in the graph); it stays a ConvTranspose."""
    model = nn.Sequential(nn.Conv2d(1, 4, (1, 5)), nn.ReLU(), nn.Conv2d(4, 4, (1, 5)), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4096, 1))
    shape = (1, 1, 4104)
    _, nodes = scale_up_nodes(model, shape)
    assert [node.op_type for node in nodes] == ['ConvTranspose', 'ConvTranspose']
    assert add_visualbackprop(export_onnx(model.eval(), shape)).ByteSize() < 1 << 20


@pytest.mark.parametrize('kernel, stride, dilation, pad, target_extra', [
    (3, 1, 1, 1, 0), (5, 2, 1, 0, 1), (3, 2, 2, 2, -1), (2, 2, 1, -1, 0), (1, 3, 1, 0, -2)])
def test_the_scale_up_matrix_is_the_all_ones_transposed_convolution(
        kernel: int, stride: int, dilation: int, pad: int, target_extra: int) -> None:
    """Padding, dilation, a crop (negative padding) and positions no window reads."""
    geometry, length = AxisGeometry(kernel, stride, dilation, pad), 7
    target = geometry.reach(length) - 2 * pad + target_extra
    m = torch.rand(1, 1, length, dtype=torch.float64)
    full = F.conv_transpose1d(m, torch.ones(1, 1, kernel, dtype=torch.float64), stride=stride,
                              dilation=dilation)[0, 0]  # positions -pad ... from the first
    expected = torch.zeros(target, dtype=torch.float64)
    start = max(pad, 0)
    kept = full[start:start + target - max(-pad, 0)]
    expected[max(-pad, 0):max(-pad, 0) + len(kept)] = kept
    matrix = geometry.scale_up_matrix(length, target)
    assert matrix.shape == (target, length)
    np.testing.assert_allclose(matrix @ m[0, 0].numpy(), expected.numpy(), atol=1e-6)


def channel_mean_ops(model: nn.Module, shape: tuple[int, int, int]) -> list[str]:
    graph = add_visualbackprop(export_onnx(model.eval(), shape))
    return [node.op_type for node in graph.graph.node if 'channel_mean' in node.name]


@pytest.mark.parametrize('name, mean_op', [('pilotnet', 'Conv'), ('pilotnet_elu', 'MatMul')])
def test_channel_means_read_the_layout_onnxruntime_keeps(name: str, mean_op: str) -> None:
    """ReLU outputs (24 to 64 channels here) stay in onnxruntime's blocked layout, where a 1x1
    Conv reads them; ELU outputs do not, and a MatMul reads them without a copy into it."""
    assert channel_mean_ops(networks.build_network(name), (3, 66, 200)) == [mean_op] * 5


def test_channel_means_under_one_block_of_channels_are_matmuls() -> None:
    """Below 16 channels onnxruntime keeps tensors in the plain layout (all of them here)."""
    model, shape = build('pilotnet_relu')
    assert channel_mean_ops(model, shape) == ['MatMul'] * 4


def test_constant_mask_is_zeros_not_nan() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 1))
    nn.init.zeros_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    _, mask = run_with_mask(export_onnx(model.eval(), (1, 8, 8)), np.ones((1, 1, 8, 8),
                                                                          np.float32))
    np.testing.assert_array_equal(mask, 0.0)


def test_mask_output_is_added_once_and_checked() -> None:
    model, shape = build('mobilenet')
    graph = add_visualbackprop(export_onnx(model, shape))
    onnx.checker.check_model(graph, full_check=True)
    assert has_visualbackprop(graph) and graph.graph.output[-1].name == MASK_OUTPUT
    with pytest.raises(UnsupportedModelError, match='already has'):
        add_visualbackprop(graph)


def test_free_input_size_is_fixed_from_the_card() -> None:
    model, shape = build('pilotnet_relu')
    graph = export_onnx(model, shape)
    for dim in graph.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = 'free'
    with pytest.raises(UnsupportedModelError, match='fixed channels x height x width'):
        add_visualbackprop(graph)
    x = torch.rand(1, *shape) * 255
    with_mask = add_visualbackprop(graph, input_hw=shape[1:])
    session = ort.InferenceSession(with_mask.SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    _, mask = session.run(None, {'image': x.numpy()})
    np.testing.assert_allclose(mask, reference_mask(model, x)[1].numpy(), atol=TOLERANCE)


class Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(2 * 12 * 12, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(torch.relu(self.conv(x)), scale_factor=2.0)
        return self.head(x.flatten(1))


class Tanh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize('factory, message', [
    (Upsampling, r"ONNX node '.*Resize.*' \(Resize\) in the feature part is not yet in the "
                 r'VisualBackProp rule table \(vbp_ros.explain.onnx_vbp.RULES\)$'),
    (Tanh, r'Tanh of a feature map used other than as the gate'),
])
def test_unreadable_graphs_are_refused_naming_the_node(factory, message: str) -> None:
    graph = export_onnx(factory().eval(), (1, 8, 8))
    with pytest.raises(UnsupportedModelError, match=message):
        add_visualbackprop(graph)


BOUNDS = {'starts': [0], 'ends': [8], 'two': [2], 'one': [1], 'batch': [0]}  # for Slices


def feature_graph(nodes: list[onnx.NodeProto], domain: str = '') -> onnx.ModelProto:
    """'x' (1, 2, 8, 8) -> Relu -> 'relu' -> ``nodes`` -> 'features' -> Flatten -> 'y', with
    :data:`BOUNDS` as int64 initializers."""
    nodes = [helper.make_node('Relu', ['x'], ['relu'], name='relu'), *nodes,
             helper.make_node('Flatten', ['features'], ['y'], name='flatten')]
    graph = helper.make_graph(
        nodes, 'features', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(value, np.int64), name)
         for name, value in BOUNDS.items()])
    domains = [helper.make_opsetid(domain, 1)] if domain else []
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17), *domains],
                             ir_version=8)


def test_a_transpose_that_only_feeds_the_head_belongs_to_it() -> None:
    swap = helper.make_node('Transpose', ['relu'], ['features'], name='swap', perm=[0, 1, 3, 2])
    assert [head.name for head in plan_visualbackprop(feature_graph([swap])).head] == ['swap']


@pytest.mark.parametrize('node, message', [
    (helper.make_node('Transpose', ['relu'], ['swapped'], name='swap', perm=[0, 1, 3, 2]),
     r"'swap' \(Transpose\): it permutes an NCHW feature map into NCWH; only Transposes "
     'between NCHW and NHWC, or into the head, are in the VisualBackProp rule table'),
    (helper.make_node('Slice', ['relu', 'starts', 'ends', 'two', 'two'], ['swapped'],
                      name='rows'),
     r"'rows' \(Slice\): a Slice of height or width with step 2; only crops \(step 1\)"),
    (helper.make_node('Slice', ['relu', 'starts', 'one', 'batch'], ['swapped'], name='first'),
     r"'first' \(Slice\): it slices the batch axis"),
    (helper.make_node('Swish', ['relu'], ['swapped'], name='swish', domain='my.ops'),
     r"'swish' \(Swish\) of domain 'my.ops' in the feature part is not a standard ONNX "
     'operator; export the network with standard operators'),
])
def test_nodes_the_rule_cannot_read_are_refused_with_the_reason(
        node: onnx.NodeProto, message: str) -> None:
    graph = feature_graph([node, helper.make_node('Relu', ['swapped'], ['features'])],
                          node.domain)
    with pytest.raises(UnsupportedModelError, match=message):
        add_visualbackprop(graph)


def test_a_convolution_cannot_read_a_channels_last_tensor() -> None:
    graph = export_onnx(nn.Sequential(nn.Conv2d(8, 2, 3), nn.ReLU(), nn.Flatten()).eval(),
                        (8, 8, 8))
    with pytest.raises(UnsupportedModelError, match=r"\(Conv\) reads its input 'image' as NCHW, "
                       'but that tensor is channels-last'):
        add_visualbackprop(graph, input_layout='nhwc')


def test_every_rule_kind_is_one_table_entry() -> None:
    assert {RULES[op].kind for op in ('Relu', 'Conv', 'Add', 'Transpose', 'Flatten', 'Shape',
                                      'Sigmoid')} == {
        'activation', 'spatial', 'identity', 'layout', 'head', 'ignored', 'gate'}
    assert RULES['Slice'].kind == 'spatial'


KERAS_STYLES = {
    'mul-sub': {},
    'div-sub-cropping2d': {'normalisation': 'div', 'cropping': ((10, 4), (3, 0))},
    'per-layer-transposes': {'per_layer_transposes': True},
}


@pytest.mark.parametrize('style', list(KERAS_STYLES))
def test_keras_graphs_give_the_mask_of_the_plain_network(style: str) -> None:
    """A channels-last Keras PilotNet as tf2onnx writes it: with the mask, its outputs are
    those of the unmodified graph, and its mask, (N, 1, H, W), that of the same network
    exported plainly (NCHW, no Transposes, no Slice) from PyTorch and fed the cropped image,
    zero-padded back where Cropping2D cut."""
    torch.manual_seed(3)
    model, options = networks.PilotNet('elu').eval(), KERAS_STYLES[style]
    graph = keras_pilotnet(model, **options)
    height, width = (d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim[1:3])
    pixels = np.random.default_rng(3).random((2, height, width, 3), np.float32) * 255
    (expected_output,) = run(graph, pixels)
    output, mask = run_with_mask(graph, pixels)
    np.testing.assert_allclose(output, expected_output, rtol=1e-5)
    assert mask.shape == (2, 1, height, width)
    (top, bottom), (left, right) = options.get('cropping', ((0, 0), (0, 0)))
    rows, columns = slice(top, height - bottom), slice(left, width - right)
    plain = export_onnx(model, (3, *model.input_size))
    plain_output, plain_mask = run_with_mask(plain, np.ascontiguousarray(
        pixels[:, rows, columns].transpose(0, 3, 1, 2) / np.float32(255)))
    np.testing.assert_allclose(output, plain_output, rtol=1e-4)
    np.testing.assert_allclose(mask[:, :, rows, columns], plain_mask, atol=TOLERANCE)
    mask[:, :, rows, columns] = 0
    assert not mask.any()


def test_the_graph_shows_a_channels_last_input() -> None:
    model = networks.PilotNet('relu').eval()
    keras, torch_graph = keras_pilotnet(model), export_onnx(model, (3, 66, 200))
    assert graph_input_layout(keras, INPUT) == (
        'nhwc', "Transpose 'sequential/conv2d/Conv2D__6' takes it to NCHW")
    assert graph_input_layout(torch_graph, 'image')[0] == 'nchw'
    plan = plan_visualbackprop(keras)
    assert plan.nodes[0].shape == (3, 66, 200) and plan.nodes[0].layout == 'nhwc'
    assert [head.name for head in plan.head] == ['sequential/flatten/Reshape__20']  # Flatten's
    per_layer = plan_visualbackprop(keras_pilotnet(model, per_layer_transposes=True))
    assert [t.layout for t in per_layer.kept_tensors] == ['nhwc'] * 5


def test_a_pytorch_crop_is_zero_padded_back() -> None:
    """``x[:, :, 10:-4, 3:]`` exports as a Slice: the mask is PyTorch VisualBackProp's, zero
    on the rows and columns cut off."""
    torch.manual_seed(4)
    model = twin(networks.PilotNet('relu').eval(), ((10, 4), (3, 0)))
    x = torch.rand(2, 3, 80, 203)
    graph = export_onnx(model, (3, 80, 203))
    _, mask = run_with_mask(graph, x.numpy())
    with VisualBackProp(model) as vbp, torch.inference_mode():
        _, expected = vbp(x)
    np.testing.assert_allclose(mask, expected.numpy(), atol=TOLERANCE)
    assert not mask[:, :, :10].any() and not mask[:, :, -4:].any()
    assert not mask[:, :, :, :3].any() and mask[:, :, 10:-4, 3:].max() == pytest.approx(1.0)
    plan = plan_visualbackprop(graph).describe()  # one Slice per axis
    assert ': 66x200 -> 66x203 into ' in plan and 'zero-pad 0x3 before, 0x0 after' in plan
    assert ': 66x203 -> 80x203 into ' in plan and 'zero-pad 10x0 before, 4x0 after' in plan


@pytest.mark.slow
@pytest.mark.parametrize('name', networks.ZOO)
def test_zoo_in_graph_mask_equals_pytorch_visualbackprop(name: str) -> None:
    """Issue 10's zoo: the mask ONNX Runtime computes inside the exported graph equals the
    mask of PyTorch VisualBackProp (both read the rule, one from the ONNX graph, one from
    torch.fx)."""
    torch.manual_seed(sum(map(ord, name)))
    model = networks.build_network(name).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    shape = (model.in_channels, *model.input_size)
    x = torch.rand(2, *shape)
    output, mask = run_with_mask(export_onnx(model, shape), x.numpy())
    with VisualBackProp(model) as vbp, torch.inference_mode():
        expected_output, expected_mask = vbp(x)
    np.testing.assert_allclose(mask, expected_mask.numpy(), atol=TOLERANCE)
    np.testing.assert_allclose(output, expected_output.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', ['pilotnet_elu', 'resnet'])
def test_layer_outputs_are_figure2_of_pytorch_visualbackprop(name: str) -> None:
    """vbp-inspect's Figure 2 of an ONNX file: every kept tensor's averaged map and
    intermediate mask come out of the graph, equal to PyTorch's (the intermediate masks up to
    the per-image factor both divide them by), and the outputs and mask stay as they were."""
    model, shape = build(name)
    spec = ModelSpec('', *shape, color='rgb')
    graph = export_onnx(model, shape)
    x = torch.rand(2, *shape) * (255.0 if name.startswith('pilotnet') else 1.0)
    outputs, mask, layers = OnnxRuntimeNetwork(graph, spec, 'cpu', layer_outputs=True).explain(
        x.numpy())
    plain_outputs, plain_mask = OnnxRuntimeNetwork(graph, spec, 'cpu')(x.numpy())
    np.testing.assert_array_equal(outputs, plain_outputs)
    np.testing.assert_array_equal(mask, plain_mask)
    with VisualBackProp(model) as vbp, torch.inference_mode():
        expected = vbp.explain(x)
    assert [tensor for tensor, _, _ in layers] == [
        t.name for t in plan_visualbackprop(graph).kept_tensors]
    assert len(layers) == len(expected.averaged_maps)

    def per_image_unit(values: np.ndarray) -> np.ndarray:
        return values / values.reshape(len(values), -1).max(axis=1)[:, None, None]

    for (_, averaged, intermediate), expected_averaged, expected_intermediate in zip(
            layers, expected.averaged_maps, expected.intermediate_masks):
        np.testing.assert_allclose(averaged, expected_averaged[:, 0].numpy(), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(per_image_unit(intermediate),
                                   per_image_unit(expected_intermediate[:, 0].numpy()),
                                   atol=TOLERANCE)


def guide_block(guide: str, after: str) -> str:
    """The first Python block of the guide ``docs/<guide>`` after the line that starts with
    ``after``."""
    text = (Path(__file__).parents[1] / 'docs' / guide).read_text()
    rest = text[text.index('\n' + after):]
    start = rest.index('```python\n') + len('```python\n')
    return rest[start:rest.index('```', start)]


def test_the_readme_python_snippet_for_onnx_files_runs(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    """docs/own-network.md, an ONNX file from Python: the guide's lines as they are, on
    a small PilotNet with ELU, its card and a 640x480 camera frame."""
    model, shape = build('pilotnet_elu')
    onnx.save(export_onnx(model, shape), str(tmp_path / 'pilotnet.onnx'))
    write_card(tmp_path / 'pilotnet.yaml', ModelSpec('', *shape, color='rgb',
                                                     crop=(230, 0, 250, 640)))
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    cv2.imwrite(str(tmp_path / 'frame.png'), frame)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(guide_block('own-network.md', '**An ONNX file from Python**'), names)
    plan, angle_and_mask = capsys.readouterr().out.split('\nhead (not part of the mask):\n')
    assert plan.startswith('input 3x66x200 (image)\nkept tensors (shallow to deep):\n')
    assert plan.count(', positive part') == 4  # four ELUs
    assert angle_and_mask.endswith(' (66, 200)\n')
    written = onnx.load('pilotnet_vbp.onnx')
    onnx.checker.check_model(written)
    assert has_visualbackprop(written)
    result = names['result']
    assert result.mask.shape == shape[1:] and result.mask.min() == 0 and result.mask.max() == 1
    network_input = cv2.resize(frame[230:480, :, ::-1], shape[:0:-1],
                               interpolation=cv2.INTER_AREA).transpose(2, 0, 1) / 255
    with torch.inference_mode():
        expected = model(torch.from_numpy(network_input.astype(np.float32))[None])
    assert result.angle == pytest.approx(float(expected), rel=1e-4, abs=1e-6)


def quantized_conv(zero_point: tuple[int, int] | None, after: str = '',
                   output_dtype: int = 0) -> onnx.ModelProto:
    """'x' (1, 2, 8, 8) -> Conv -> QuantizeLinear -> DequantizeLinear [-> ``after``] -> Flatten,
    opset 21; ``zero_point`` (its TensorProto type, value) or None for none."""
    initializers = [numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), 'w'),
                    numpy_helper.from_array(np.asarray(0.1, np.float32), 'scale')]
    qdq = ['scale']
    if zero_point is not None:
        elem_type, value = zero_point
        initializers.append(numpy_helper.from_array(
            np.asarray(value, helper.tensor_dtype_to_np_dtype(elem_type)), 'zero_point'))
        qdq.append('zero_point')
    nodes = [helper.make_node('Conv', ['x', 'w'], ['z'], name='conv'),
             helper.make_node('QuantizeLinear', ['z', *qdq], ['q'], name='quantize',
                              **({'output_dtype': output_dtype} if output_dtype else {})),
             helper.make_node('DequantizeLinear', ['q', *qdq], ['dq'], name='dequantize')]
    nodes += [helper.make_node(after, ['dq'], ['features'], name=after.lower())] if after \
        else [helper.make_node('Identity', ['dq'], ['features'], name='same')]
    nodes.append(helper.make_node('Flatten', ['features'], ['y'], name='flatten'))
    graph = helper.make_graph(
        nodes, 'quantized', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 21)], ir_version=10)


@pytest.mark.parametrize('zero_point, after, output_dtype, kept', [
    ((TensorProto.UINT8, 0), '', 0, 'clip at 0 of QuantizeLinear'),
    ((TensorProto.INT8, -128), '', 0, 'clip at 0 of QuantizeLinear'),
    ((TensorProto.UINT16, 0), '', 0, 'clip at 0 of QuantizeLinear'),
    ((TensorProto.INT8, 0), '', 0, 'Conv'),
    ((TensorProto.UINT8, 3), '', 0, 'Conv'),
    (None, '', 0, 'clip at 0 of QuantizeLinear'),  # no zero point: 0 of uint8
    (None, '', TensorProto.INT8, 'Conv'),  # 0 of int8: signed
    ((TensorProto.UINT8, 0), 'Relu', 0, 'Relu')],  # the quantizer kept the ReLU
    ids=['uint8 0', 'int8 -128', 'uint16 0', 'int8 0', 'uint8 3', 'no zero point',
         'no zero point, int8', 'ReLU kept'])
def test_a_quantization_that_clips_at_0_is_the_relu_it_folded(
        zero_point: tuple[int, int] | None, after: str, output_dtype: int, kept: str) -> None:
    """A DequantizeLinear whose zero point is its integer type's minimum clips the Conv's
    output at 0: the ReLU that asymmetric quantization folded into the scales, kept once (not
    where the ReLU itself follows); any other zero point passes the signed values on, and the
    last Conv is kept."""
    plan = plan_visualbackprop(quantized_conv(zero_point, after, output_dtype))
    assert [tensor.kept.op for tensor in plan.kept_tensors] == [kept]
