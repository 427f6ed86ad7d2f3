"""VisualBackProp on any readable network (docs/design.md, "VisualBackProp on any network"),
checked against the independent float64 reference in vbp_reference.py: random networks of every
supported layer kind, written the ways users write them, and the network zoo; plus what users rely
on (one forward pass, the output, functional and module layers alike, the head left out) and clear
refusals."""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vbp_reference import reference_mask
from vbp_ros import UnsupportedModelError, VisualBackProp
from vbp_ros.explain.lrp import LRPEpsilon
from vbp_ros.models.networks import PilotNet, build_network

ACTIVATIONS: list[Callable[[], object]] = [
    nn.ReLU, lambda: nn.ReLU(inplace=True), lambda: F.relu, lambda: torch.relu,
    lambda: 'relu_', nn.ELU, lambda: F.elu, lambda: nn.LeakyReLU(0.2), nn.ReLU6,
    lambda: F.relu6, nn.SiLU, lambda: F.silu, nn.GELU, nn.Hardswish, nn.Mish, nn.PReLU, nn.SELU,
    nn.CELU, nn.Tanh, lambda: 'clamp']


class RandomNet(nn.Module):
    """A random network: a list of steps over registered layers, run by ``forward`` (traceable:
    the list is fixed), then a head. Every step keeps at least a 3x3 map."""

    def __init__(self, rng: random.Random, in_channels: int, size: tuple[int, int],
                 seed: int) -> None:
        super().__init__()
        self.activations = seed  # the seed picks the first activation: all kinds get drawn
        self.layers = nn.ModuleDict()
        self.weights = nn.ParameterDict()
        self.steps: list[tuple[str, dict]] = []
        self.shared = nn.ReLU()
        x = torch.rand(1, in_channels, *size)
        kinds = ['conv', 'conv', 'conv', 'activation', 'pool', 'residual', 'concat', 'pad',
                 'crop', 'shared', 'bn', 'channels']
        while len(self.steps) < rng.randint(3, 9):
            kind = rng.choice(kinds)
            if self.steps and self.steps[-1][0].startswith('conv') and rng.random() < 0.75:
                kind = 'activation'  # most convolutions have an activation after them
            step = getattr(self, f'_new_{kind}')(rng, x.shape[1], len(self.steps))
            y = self._run(step, x)
            if min(y.shape[2:]) < 3:
                break
            self.steps.append(step)
            x = y
        self.head_kind = rng.choice(['flatten', 'pool', 'mean'])
        features = x.numel() if self.head_kind == 'flatten' else x.shape[1]
        self.fc = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = self._run(step, x)
        if self.head_kind == 'flatten':
            x = torch.flatten(x, 1)
        elif self.head_kind == 'pool':
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        else:
            x = x.mean((2, 3))
        return self.fc(x)

    def _run(self, step: tuple[str, dict], x: torch.Tensor) -> torch.Tensor:
        kind, p = step
        return getattr(self, f'_{kind}')(x, p)

    # -- steps: _new_<kind> makes one, _<kind> runs it -----------------------------------------

    def _new_conv(self, rng: random.Random, channels: int, index: int) -> tuple[str, dict]:
        out = rng.randint(2, 6)
        kernel = (rng.randint(1, 5), rng.randint(1, 5))
        stride = (rng.randint(1, 3), rng.randint(1, 2))
        dilation = (rng.randint(1, 2), rng.randint(1, 2))
        padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
        groups = 1
        if rng.random() < 0.3:
            stride, padding = (1, 1), 'same'
        if rng.random() < 0.3:
            groups, out = channels, channels * rng.randint(1, 2)  # depthwise
        name = f'conv{index}'
        if rng.random() < 0.5:
            conv = nn.Conv2d(channels, out, kernel, stride, padding, dilation, groups)
            nn.init.uniform_(conv.bias, 0.0, 0.2)  # keep a fair share of units active
            self.layers[name] = conv
            return 'conv_module', {'name': name}
        self.weights[name] = nn.Parameter(torch.randn(out, channels // groups, *kernel) * 0.4)
        self.weights[name + '_b'] = nn.Parameter(torch.rand(out) * 0.2)
        return 'conv_function', {'name': name, 'stride': stride, 'padding': padding,
                                 'dilation': dilation, 'groups': groups}

    def _conv_module(self, x, p):
        return self.layers[p['name']](x)

    def _conv_function(self, x, p):
        return F.conv2d(x, self.weights[p['name']], self.weights[p['name'] + '_b'], p['stride'],
                        p['padding'], p['dilation'], p['groups'])

    def _new_activation(self, rng, channels, index):
        made = ACTIVATIONS[self.activations % len(ACTIVATIONS)]()
        self.activations += 1
        if isinstance(made, nn.Module):
            self.layers[f'act{index}'] = made
            return 'module', {'name': f'act{index}'}
        return 'function', {'function': made}

    def _module(self, x, p):
        return self.layers[p['name']](x)

    def _function(self, x, p):
        function = p['function']
        if function == 'relu_':
            return x.relu_()
        if function == 'clamp':
            return x.clamp(min=0.0)
        return function(x)

    def _new_shared(self, rng, channels, index):
        return 'shared', {}

    def _shared(self, x, p):
        return self.shared(x)

    def _new_bn(self, rng, channels, index):
        norm = nn.BatchNorm2d(channels)
        norm.running_mean.uniform_(-0.2, 0.2)
        norm.running_var.uniform_(0.5, 1.5)
        self.layers[f'bn{index}'] = rng.choice([norm, nn.Dropout(0.3), nn.Identity()])
        return 'module', {'name': f'bn{index}'}

    def _new_pool(self, rng, channels, index):
        kernel = rng.randint(2, 3)
        p = {'kernel': kernel, 'stride': rng.randint(1, 2), 'padding': rng.randint(0, 1),
             'ceil_mode': rng.random() < 0.5, 'max': rng.random() < 0.5}
        if rng.random() < 0.5:
            pool = (nn.MaxPool2d(kernel, p['stride'], p['padding'], ceil_mode=p['ceil_mode'])
                    if p['max'] else nn.AvgPool2d(kernel, p['stride'], p['padding'],
                                                  ceil_mode=p['ceil_mode']))
            self.layers[f'pool{index}'] = pool
            return 'module', {'name': f'pool{index}'}
        return 'pool', p

    def _pool(self, x, p):
        pool = F.max_pool2d if p['max'] else F.avg_pool2d
        return pool(x, p['kernel'], p['stride'], p['padding'], ceil_mode=p['ceil_mode'])

    def _new_residual(self, rng, channels, index):
        """x + bn(conv(act(conv(x)))), or a strided block with a 1x1 convolution shortcut."""
        stride = rng.choice([1, 2])
        norm = nn.BatchNorm2d(channels)
        nn.init.uniform_(norm.bias, 0.0, 0.3)  # keep the block's output alive
        self.layers[f'res{index}'] = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1), norm)
        if stride == 2:
            self.layers[f'short{index}'] = nn.Conv2d(channels, channels, 1, 2)
        return 'residual', {'index': index, 'stride': stride}

    def _residual(self, x, p):
        shortcut = x if p['stride'] == 1 else self.layers[f'short{p["index"]}'](x)
        out = self.layers[f'res{p["index"]}'](x)
        out += shortcut
        return F.relu(out)

    def _new_concat(self, rng, channels, index):
        self.layers[f'left{index}'] = nn.Conv2d(channels, 2, 1)
        self.layers[f'right{index}'] = nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1),
                                                     nn.ELU())
        return 'concat', {'index': index}

    def _concat(self, x, p):
        index = p['index']
        return torch.cat([self.layers[f'left{index}'](x), self.layers[f'right{index}'](x)], 1)

    def _new_pad(self, rng, channels, index):
        return 'pad', {'pad': tuple(rng.randint(0, 2) for _ in range(4))}

    def _pad(self, x, p):
        return F.pad(x, p['pad'])

    def _new_crop(self, rng, channels, index):
        return 'crop', {'top': rng.randint(0, 2), 'bottom': -rng.randint(1, 2),
                        'left': rng.randint(0, 2)}

    def _crop(self, x, p):
        return x[:, :, p['top']:p['bottom'], p['left']:]

    def _new_channels(self, rng, channels, index):
        return 'channels', {'keep': max(1, channels - 1)}

    def _channels(self, x, p):
        return x[:, :p['keep']]


SEEDS = range(48)


def random_case(seed: int) -> tuple[nn.Module, torch.Tensor]:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    channels, size = rng.randint(1, 3), (rng.randrange(17, 45, 2), rng.randrange(17, 45, 2))
    model = RandomNet(rng, channels, size, seed).eval()
    return model, torch.rand(rng.choice([1, 3]), channels, *size)


@pytest.mark.parametrize('seed', SEEDS)
def test_random_networks_match_the_reference(seed: int) -> None:
    model, x = random_case(seed)
    expected = reference_mask(model, x)
    with VisualBackProp(model) as vbp:
        vbp(torch.rand_like(x))  # the first call reads the graph; later ones use the plan
        output, mask = vbp(x)
    assert expected.max() == 1.0, 'the case should have a non-constant mask'
    assert mask.shape == (x.shape[0], 1, *x.shape[2:]) and mask.dtype == torch.float32
    np.testing.assert_allclose(mask[:, 0].numpy(), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(output, model(x), rtol=0, atol=0)


def test_the_random_networks_cover_every_layer_kind() -> None:
    kinds = set()
    for seed in SEEDS:
        model, _ = random_case(seed)
        kinds |= {kind for kind, _ in model.steps}
        kinds |= {type(m).__name__ for m in model.layers.values()}
        kinds |= {getattr(p['function'], '__name__', p['function'])
                  for kind, p in model.steps if kind == 'function'}
    assert {'conv_module', 'conv_function', 'pool', 'residual', 'concat', 'pad', 'crop',
            'shared', 'channels', 'MaxPool2d', 'AvgPool2d', 'BatchNorm2d', 'Dropout', 'ReLU',
            'relu', 'relu_', 'clamp', 'ELU', 'elu', 'ReLU6', 'relu6', 'LeakyReLU', 'PReLU',
            'SELU', 'CELU', 'GELU', 'SiLU', 'silu', 'Hardswish', 'Mish', 'Tanh'} <= kinds


ZOO_CASES = [('pilotnet', {}, 1), ('pilotnet_elu', {}, 3), ('commaai', {}, 1),
             ('commaai', {'input_height': 97, 'input_width': 131}, 3), ('resnet18', {}, 1),
             ('resnet18', {'input_height': 47, 'input_width': 93}, 3),
             ('mobilenet_v2', {'input_height': 39, 'input_width': 71}, 3)]


def zoo_model(name: str, arguments: dict) -> nn.Module:
    torch.manual_seed(7)
    model = build_network(name, **arguments).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics as after training, not 0 and 1
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize('name, arguments, batch', ZOO_CASES)
def test_zoo_matches_the_reference(name: str, arguments: dict, batch: int) -> None:
    model = zoo_model(name, arguments)
    x = torch.rand(batch, model.in_channels, *model.input_size)
    expected = reference_mask(model, x)
    with VisualBackProp(model) as vbp:
        vbp(torch.rand_like(x))
        output, mask = vbp(x)
    assert expected.max() == 1.0
    np.testing.assert_allclose(mask[:, 0].numpy(), expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(output, model(x), rtol=0, atol=0)


def test_zoo_kept_tensors() -> None:
    """A module called twice counts once per call (ResNet's shared ReLU); comma.ai's last
    convolution has no activation and is kept; the head's activations take no part."""
    expected = {'pilotnet_elu': ['conv1', 'conv2', 'conv3', 'conv4', 'conv5'],
                'commaai': ['features.1', 'features.4', 'features.7']}
    for name, layers in expected.items():
        model = zoo_model(name, {})
        with VisualBackProp(model) as vbp:
            vbp(torch.rand(1, 3, *model.input_size))
            assert list(vbp.layer_names) == layers
    model = zoo_model('resnet18', {})
    with VisualBackProp(model) as vbp:
        vbp(torch.rand(1, 3, *model.input_size))
        assert len(vbp.layer_names) == 17
        assert vbp.layer_names[:3] == ('conv1', 'layer1.0.conv1', 'layer1.0.relu#2')
        merges = [node.name for node in vbp.graph.nodes if len(node.edges) > 1]
        assert len(merges) == 8  # each block's input feeds its main path and its shortcut


class SequentialPilotNet(nn.Sequential):
    """PilotNet's layers as nn.ReLU modules, for the same weights as PilotNet's functional
    ReLUs."""

    def __init__(self, net: PilotNet) -> None:
        layers = []
        for index in range(1, 6):
            layers += [getattr(net, f'conv{index}'), nn.ReLU()]
        super().__init__(*layers, nn.Flatten(), net.fc1, nn.ReLU(), net.fc2, nn.ReLU(), net.fc3,
                         nn.ReLU(), net.fc4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 2.0 - 1.0)


def test_functional_and_module_relus_give_the_same_mask() -> None:
    torch.manual_seed(3)
    functional = PilotNet().eval()
    modules = SequentialPilotNet(functional).eval()
    x = torch.rand(2, 3, 66, 200)
    with VisualBackProp(functional) as a, VisualBackProp(modules) as b:
        output_a, mask_a = a(x)
        output_b, mask_b = b(x)
    torch.testing.assert_close(output_a, output_b)
    torch.testing.assert_close(mask_a, mask_b, rtol=0, atol=1e-6)


def stochastic_depth(input: torch.Tensor, p: float, mode: str, training: bool = True
                     ) -> torch.Tensor:
    """torchvision.ops.stochastic_depth as EfficientNet calls it (torchvision is not installed
    here): wrapped for torch.fx, the input itself in inference."""
    return F.dropout(input, p, training) if training else input


torch.fx.wrap('stochastic_depth')
stochastic_depth.__module__ = 'torchvision.ops.stochastic_depth'


class StochasticResidual(nn.Module):
    """EfficientNet's residual block: the branch through stochastic depth, then the add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + stochastic_depth(self.branch(x), 0.2, 'row', self.training))


def test_torchvisions_stochastic_depth_is_an_identity_edge() -> None:
    """The rule table holds it by name, as it holds dropout by object: EfficientNet was
    refused by the torch reader."""
    torch.manual_seed(3)
    model = StochasticResidual()
    model(torch.rand(1, 3, 33, 45))
    x = torch.rand(2, 3, 33, 45)
    with VisualBackProp(model.eval()) as vbp:
        _, mask = vbp(x)
    np.testing.assert_allclose(mask[:, 0].numpy(), reference_mask(model, x), atol=1e-5)


@pytest.mark.parametrize('name', ['resnet18', 'mobilenet_v2', 'commaai'])
def test_reinitialising_the_head_leaves_the_mask_unchanged(name: str) -> None:
    model = zoo_model(name, {})
    x = torch.rand(2, 3, *model.input_size)
    head = model.fc if name == 'resnet18' else (
        model.classifier[1] if name == 'mobilenet_v2' else model.head[3])
    with VisualBackProp(model) as vbp:
        before_output, before_mask = vbp(x)
        head.reset_parameters()
        after_output, after_mask = vbp(x)
    assert not torch.allclose(before_output, after_output)
    torch.testing.assert_close(after_mask, before_mask, rtol=0, atol=0)


def test_one_forward_pass_per_call_on_a_residual_network() -> None:
    model = zoo_model('resnet18', {'input_height': 47, 'input_width': 93})
    calls = []
    model.conv1.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.rand(2, 3, 47, 93)
    with VisualBackProp(model) as vbp:
        vbp(x)                             # reads the graph
        vbp(x)
        vbp.explain(x)
        vbp(torch.rand(1, 3, 51, 93))      # a new input shape
    assert len(calls) == 4


def test_plans_are_built_once_per_input_shape_and_reused() -> None:
    model = zoo_model('resnet18', {'input_height': 47, 'input_width': 93})
    with VisualBackProp(model) as vbp, torch.inference_mode():
        vbp(torch.rand(1, 3, 47, 93))
        (plan,) = vbp._plans.values()
        buffers = [m.data_ptr() for m in plan.maps] + [
            s.cols.full.data_ptr() for _, _, s in plan.scale_ups]
        steps = list(plan.steps)
        for _ in range(3):
            vbp(torch.rand(1, 3, 47, 93))
        assert list(vbp._plans.values()) == [plan] and plan.steps == steps
        assert [m.data_ptr() for m in plan.maps] + [
            s.cols.full.data_ptr() for _, _, s in plan.scale_ups] == buffers


def test_training_mode_keeps_the_output_graph_on_a_residual_network() -> None:
    model = zoo_model('resnet18', {'input_height': 47, 'input_width': 93}).train()
    with VisualBackProp(model) as vbp:
        output, mask = vbp(torch.rand(4, 3, 47, 93))
        assert output.requires_grad and not mask.requires_grad
        output.sum().backward()
        assert model.layer1[0].conv1.weight.grad is not None
        model.eval()
        _, eval_mask = vbp(torch.rand(4, 3, 47, 93))  # read again for eval mode
    assert eval_mask.shape == mask.shape


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_zoo_gives_float32_masks(dtype: torch.dtype) -> None:
    model = zoo_model('pilotnet_elu', {})
    x = torch.rand(1, 3, 66, 200)
    with VisualBackProp(model) as vbp:
        reference = vbp(x)[1]
    with VisualBackProp(model.to(dtype)) as vbp:
        vbp(torch.rand_like(x).to(dtype))
        output, mask = vbp(x.to(dtype))
    assert output.dtype == dtype and mask.dtype == torch.float32
    correlation = np.corrcoef(mask.flatten().numpy(), reference.flatten().numpy())[0, 1]
    assert correlation > 0.95


def test_batch_images_are_independent_on_a_residual_network() -> None:
    model = zoo_model('resnet18', {'input_height': 47, 'input_width': 93})
    x = torch.rand(3, 3, 47, 93)
    with VisualBackProp(model) as vbp:
        batch = vbp(x)[1]
        single = torch.cat([vbp(x[i:i + 1])[1] for i in range(3)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('name', ['pilotnet_elu', 'resnet18', 'mobilenet_v2'])
def test_cuda_zoo_masks_match_cpu(name: str) -> None:
    model = zoo_model(name, {})
    x = torch.rand(2, 3, *model.input_size)
    with VisualBackProp(model) as vbp:
        expected = vbp(x)[1]
    with VisualBackProp(model.cuda()) as vbp, torch.inference_mode():
        vbp(x.cuda())
        _, mask = vbp(x.cuda())
    assert mask.device.type == 'cuda'
    torch.testing.assert_close(mask.cpu(), expected, atol=1e-4, rtol=0)


# -- refusals and the named-layers override --------------------------------------------------

class ControlFlow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        if y.mean() > 0.5:  # data-dependent: fx cannot follow it
            y = y * 2
        return self.fc(y.mean((2, 3)))


class Upsampled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(F.relu(self.conv(x)), scale_factor=2.0)
        return y.flatten(1).sum(1, keepdim=True)


class SpatialConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        return torch.cat([y, y], dim=3).mean((1, 2, 3))


class Broadcast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.row = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, (12, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x)) * F.relu(self.row(x))  # (10, 8) times (1, 8)
        return y.mean((1, 2, 3))


@pytest.mark.parametrize('model, pattern', [
    (ControlFlow(), r'torch.fx cannot read the network at test_vbp_graph.py:\d+ in forward\(\) '
                    r'`if y.mean\(\) > 0.5:.*layers=\['),
    (Upsampled(), r"node 'interpolate' \(F.interpolate\) at test_vbp_graph.py:\d+ reads a "
                  r'feature map and has no VisualBackProp rule; add a rule'),
    (SpatialConcat(), r"node 'cat' \(torch.cat\).* concatenation along dimension 3 cannot"),
    (Broadcast(), r"node 'mul' \(operator.mul\).* combines maps of sizes"),
    (nn.Sequential(nn.Flatten(), nn.Linear(120, 1)), 'nothing to explain'),
])
def test_unreadable_networks_are_refused_naming_the_node(model: nn.Module,
                                                         pattern: str) -> None:
    with pytest.raises(UnsupportedModelError, match=pattern):
        VisualBackProp(model)(torch.rand(1, 1, 12, 10))


def test_named_layers_explain_a_network_fx_cannot_read() -> None:
    torch.manual_seed(4)
    model = ControlFlow().eval()
    x = torch.rand(2, 1, 12, 10)
    reference = nn.Sequential(model.conv, nn.ReLU()).eval()
    with VisualBackProp(reference) as plain:
        expected = plain(x)[1]
    with VisualBackProp(model, layers=['conv']) as vbp:
        vbp(torch.rand_like(x))
        output, mask = vbp(x)
        assert vbp.layer_names == ('conv',)
        assert model.conv._forward_hooks
    assert not model.conv._forward_hooks  # removed with the context
    torch.testing.assert_close(output, model(x))
    torch.testing.assert_close(mask, expected, rtol=0, atol=1e-6)


def test_named_layers_of_a_chain_match_the_graph_reading() -> None:
    model = zoo_model('commaai', {'input_height': 97, 'input_width': 131})
    x = torch.rand(2, 3, 97, 131)
    with VisualBackProp(model) as graph, VisualBackProp(
            model, layers=['features.2', 'features.5', 'features.7']) as chain:
        torch.testing.assert_close(chain(x)[1], graph(x)[1], rtol=0, atol=1e-6)
        assert chain.layer_names == ('features.2', 'features.5', 'features.7')


@pytest.mark.parametrize('layers, pattern', [
    (['layer9'], "no layer named 'layer9'"),
    (['layer1.0.relu', 'layer2.0.relu'], 'do not form a chain: .* reads maps of size'),
])
def test_named_layers_are_checked(layers: list[str], pattern: str) -> None:
    model = zoo_model('resnet18', {'input_height': 47, 'input_width': 93})
    with pytest.raises(UnsupportedModelError, match=pattern):
        VisualBackProp(model, layers=layers)(torch.rand(1, 3, 47, 93))


@pytest.mark.parametrize('name, pattern', [
    ('resnet18', r"layer 'maxpool' \(MaxPool2d\) is not supported by LRPEpsilon"),
    ('pilotnet', r"node 'mul' \(operator.mul\) is not the next leaf module.*VisualBackProp"),
])
def test_lrp_refuses_what_is_not_a_chain(name: str, pattern: str) -> None:
    with pytest.raises(UnsupportedModelError, match=pattern):
        LRPEpsilon(build_network(name))


def test_describe_shows_the_plan() -> None:
    model = zoo_model('resnet18', {'input_height': 47, 'input_width': 93})
    with VisualBackProp(model) as vbp:
        vbp(torch.rand(1, 3, 47, 93))
        text = vbp.describe()
    assert 'input 3x47x93' in text
    assert '1. relu (ReLU, layer conv1) 64x24x47' in text
    assert 'maxpool: 12x24 -> 24x47 into relu, kernel 3x3, stride 2x2, padding 1x1' in text
    assert 'output padding 0x0' in text
    assert ('layer2.1.relu#2 <- layer3.0.conv1 (scaled up) + layer3.0.downsample.0 (scaled up)'
            in text)
    assert 'layer3.0.relu#2 <- layer3.1.conv1 (scaled up) + layer3.1.add_5' in text
    assert 'avgpool (AdaptiveAvgPool2d) reads layer4.1.relu#2' in text
