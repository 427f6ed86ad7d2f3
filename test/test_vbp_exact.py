"""VisualBackProp masks checked against independent computations that could catch a wrong mask.

The reference here is deliberately naive (naive_vbp.py): it runs the layers one by one, averages
channels with numpy and scales up with explicit loops over map positions and kernel taps, in
float64.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from naive_vbp import loop_vbp, min_max
from vbp_ros import (VisualBackProp, authors_net, load_checkpoint, net_hvf, net_svf,
                     traffic_sign_net)


def random_network(rng: random.Random, height: int, width: int) -> tuple[nn.Sequential, int]:
    """A random plain CNN that still has a map of at least 1x1 after every layer."""
    layers: list[nn.Module] = []
    channels = rng.randint(1, 3)
    in_channels = channels
    for _ in range(rng.randint(2, 5)):
        kernel = (rng.randint(1, 5), rng.randint(1, 5))
        stride = (rng.randint(1, 3), rng.randint(1, 3))
        dilation = (rng.randint(1, 2), rng.randint(1, 2))
        padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
        out_h = (height + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        out_w = (width + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        if out_h < 2 or out_w < 2:
            break
        width_out = rng.randint(2, 6)
        if rng.random() < 0.5:
            layers.append(nn.BatchNorm2d(channels))
        conv = nn.Conv2d(channels, width_out, kernel, stride, padding, dilation)
        nn.init.uniform_(conv.bias, 0.0, 0.2)  # keep a fair share of units active
        layers += [conv, nn.ReLU(inplace=rng.random() < 0.5)]
        channels, height, width = width_out, out_h, out_w
    layers += [nn.Flatten(), nn.LazyLinear(1)]
    return nn.Sequential(*layers), in_channels


@pytest.mark.parametrize('seed', range(16))
def test_matches_loop_reference_on_random_networks(seed: int) -> None:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    height, width = rng.randint(12, 40), rng.randint(12, 40)
    model, in_channels = random_network(rng, height, width)
    batch = rng.randint(1, 3)
    x = torch.rand(batch, in_channels, height, width)
    model(x)  # materialise the lazy head
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    model.eval()
    expected = loop_vbp(model[:-2], x)
    with VisualBackProp(model) as vbp:
        vbp(torch.rand_like(x))  # the first call traces; later ones fill prebuilt buffers
        output, mask = vbp(x)
    assert mask.shape == (batch, 1, height, width)
    assert mask.dtype == torch.float32
    assert expected.max() == 1.0, 'the case should have a non-constant mask'
    np.testing.assert_allclose(mask[:, 0].numpy(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(output, model(x))


def pilotnet() -> nn.Sequential:
    """NVIDIA's PilotNet convolution stack (5x5 stride 2 three times, then 3x3 twice)."""
    spec = [(3, 24, 5, 2), (24, 36, 5, 2), (36, 48, 5, 2), (48, 64, 3, 1), (64, 64, 3, 1)]
    layers: list[nn.Module] = []
    for in_channels, out_channels, kernel, stride in spec:
        layers += [nn.Conv2d(in_channels, out_channels, kernel, stride), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(100), nn.ReLU(), nn.Linear(100, 1))


@pytest.mark.parametrize('height', [66, 70])
def test_pilotnet_masks_have_the_input_size(height: int) -> None:
    torch.manual_seed(height)
    model = pilotnet()
    x = torch.rand(2, 3, height, 200)
    model(x)
    model.eval()
    with VisualBackProp(model) as vbp:
        _, mask = vbp(x)
    assert mask.shape == (2, 1, height, 200)
    np.testing.assert_allclose(mask[:, 0].numpy(), loop_vbp(model[:10], x), atol=1e-5, rtol=0)


def path_sum_masks(layers: list[nn.Conv2d], x: torch.Tensor) -> np.ndarray:
    """Theorem 1 by brute force: for each input pixel, gamma(X) times the sum over all paths
    through single neurons (channel, row, column) of every layer, of the product of the
    activations along the path. Stride 1, no padding, no dilation."""
    activations = []
    current = x
    with torch.no_grad():
        for conv in layers:
            current = torch.relu(conv(current))
            activations.append(current[0].double().numpy())
    gamma = x[0].double().numpy().mean(axis=0)

    def successors(level: int, row: int, col: int) -> list[tuple[int, int, int]]:
        kh, kw = layers[level].kernel_size
        channels, rows, cols = activations[level].shape
        return [(c, r, q) for c in range(channels) for r in range(rows) for q in range(cols)
                if r <= row < r + kh and q <= col < q + kw]

    def path_sum(level: int, row: int, col: int) -> float:
        total = 0.0
        for channel, r, q in successors(level, row, col):
            value = activations[level][channel, r, q]
            if level + 1 < len(layers):
                value *= path_sum(level + 1, r, q)
            total += value
        return total

    height, width = gamma.shape
    sums = np.array([[path_sum(0, r, q) for q in range(width)] for r in range(height)])
    return min_max(gamma * sums)


@pytest.mark.parametrize('kernels', [(3, 2, 3), (2, 2, 2, 2), ((1, 3), (3, 2), (2, 1))])
def test_theorem_1_path_sums(kernels: tuple) -> None:
    torch.manual_seed(len(kernels))
    channels = [2] + [2] * len(kernels)
    convs = [nn.Conv2d(channels[i], channels[i + 1], k, bias=False)
             for i, k in enumerate(kernels)]
    model = nn.Sequential(*itertools.chain.from_iterable((conv, nn.ReLU()) for conv in convs))
    x = torch.rand(1, 2, 7, 8)
    with VisualBackProp(model, input_factor=True) as vbp:
        _, mask = vbp(x)
    expected = path_sum_masks(convs, x)
    assert expected.max() == 1.0
    np.testing.assert_allclose(mask[0, 0].numpy(), expected, atol=1e-5, rtol=0)


def test_reinitialising_the_head_leaves_the_mask_unchanged() -> None:
    torch.manual_seed(3)
    model = authors_net().eval()
    x = torch.rand(2, 1, 125, 640)
    with VisualBackProp(model) as vbp:
        before_output, before_mask = vbp(x)
        for layer in model.head:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        after_output, after_mask = vbp(x)
    assert not torch.allclose(before_output, after_output)
    torch.testing.assert_close(after_mask, before_mask, rtol=0, atol=0)


def test_strictly_positive_maps_are_not_min_max_normalized_per_layer() -> None:
    """With every activation above zero, a per-layer min-max (a bug of public ports) would drop
    each map's offset and change the mask."""
    torch.manual_seed(5)
    layers: list[nn.Module] = []
    for in_channels, out_channels, stride in [(1, 4, 1), (4, 4, 2), (4, 6, 1), (6, 6, 2)]:
        conv = nn.Conv2d(in_channels, out_channels, 3, stride)
        nn.init.uniform_(conv.weight, 0.0, 0.3)
        nn.init.uniform_(conv.bias, 0.5, 1.0)
        layers += [conv, nn.ReLU()]
    model = nn.Sequential(*layers)
    x = torch.rand(2, 1, 33, 47)
    with VisualBackProp(model) as vbp:
        _, mask = vbp(x)
    expected = loop_vbp(model, x)
    np.testing.assert_allclose(mask[:, 0].numpy(), expected, atol=1e-5, rtol=0)


PAPER_MASKS = Path(__file__).parent / 'data' / 'paper_masks.npz'
PAPER_CASES = {  # factory, input shape, seed: as when paper_masks.npz was written
    'netsvf': (lambda: net_svf(125, 160), (1, 1, 125, 160), 1),
    'nethvf': (lambda: net_hvf(3, 125, 160), (1, 3, 125, 160), 2),
    'traffic_sign': (traffic_sign_net, (1, 3, 125, 125), 3),
    'authors_random': (lambda: authors_net(125, 160), (2, 1, 125, 160), 4),
}


@pytest.mark.parametrize('name', sorted(PAPER_CASES))
def test_paper_networks_keep_their_masks(name: str) -> None:
    """paper_masks.npz holds the masks of the chain-only implementation (commit 21341f9) for
    seeded weights and inputs; the graph reading must give them again."""
    factory, shape, seed = PAPER_CASES[name]
    torch.manual_seed(seed)
    model = factory().eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed + 100))
    with VisualBackProp(model) as vbp, torch.inference_mode():
        vbp(x)
        mask = vbp(x)[1]
    np.testing.assert_allclose(mask.numpy(), np.load(PAPER_MASKS)[name], atol=1e-6, rtol=0)


def test_authors_model_keeps_its_mask(authors_checkpoint: Path, reference_dir: Path) -> None:
    model, _ = load_checkpoint(authors_checkpoint)
    image = cv2.imread(str(reference_dir / 'images' / 'img7.jpg'), cv2.IMREAD_GRAYSCALE)
    x = torch.from_numpy(image).float().div(255.0)[None, None]
    with VisualBackProp(model) as vbp, torch.inference_mode():
        mask = vbp(x)[1]
    np.testing.assert_allclose(mask.numpy(), np.load(PAPER_MASKS)['authors_img7'], atol=1e-6,
                               rtol=0)
