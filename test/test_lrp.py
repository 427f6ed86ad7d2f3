"""LRP-epsilon checked against captum's LRP with EpsilonRule on every linear layer.

Captum's rule (captum/attr/_utils/lrp_rules.py, PropagationRule): at each layer output
``s = grad / (z + eps * sign(z))`` with sign(0) = +1, at each layer input ``R = a * grad``,
autograd in between (so biases take part in z, and BatchNorm2d in eval mode is the per-channel
affine map gamma / sqrt(var + eps_bn)); ReLU and Dropout pass the gradient through unchanged.
Captum starts from grad 1 at the target output and multiplies the result by that output, which
equals starting from R = output because every step is linear in R. Captum has no rule for
nn.Flatten, so its copy of the model flattens functionally (:class:`FunctionalFlatten`), and it
deletes the rules after every ``attribute`` call (a second call would silently use its default
epsilon 1e-9), so they are set anew for each call.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vbp_ros.explain.lrp import LRPEpsilon, normalize_relevance
from vbp_ros.models.networks import authors_net
from vbp_ros.explain.reference import ReferenceLRP


def captum_relevance(model: nn.Module, x: Tensor, epsilon: float,
                     target: int | list[int] | None = None) -> Tensor:
    """Captum's LRP-epsilon of a copy of ``model``, summed over channels."""
    return ReferenceLRP(model, epsilon)(x, target=target)


def randomize(model: nn.Module, seed: int, biases: bool = True) -> nn.Module:
    """Weights that keep activations large (so epsilon=100 matters), random BN statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                                    * (2.0 / fan_in) ** 0.5)
                module.bias.copy_((torch.rand(module.bias.shape, generator=generator) - 0.5)
                                  * biases)
            elif isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_((torch.rand(shape, generator=generator) - 0.5) * biases)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_((torch.rand(shape, generator=generator) - 0.5) * 0.4 * biases)
    return model.eval()


def small_net(outputs: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding='same'), nn.ReLU(inplace=True), nn.BatchNorm2d(6),
        nn.Conv2d(6, 8, (3, 5), stride=2, padding=(1, 2), dilation=(1, 2)), nn.ReLU(),
        nn.Dropout(0.5), nn.Conv2d(8, 4, 3, stride=2, groups=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, outputs))


def assert_close(actual: Tensor, expected: Tensor, rtol: float = 1e-4) -> None:
    scale = expected.abs().max().item()
    assert scale > 0
    assert (actual - expected).abs().max().item() <= rtol * scale


@pytest.mark.parametrize('epsilon', [100.0, 0.01])
def test_authors_net_matches_captum(epsilon: float) -> None:
    model = randomize(authors_net(125, 160), seed=1)
    x = torch.rand(2, 1, 125, 160, generator=torch.Generator().manual_seed(2)) * 255
    output, relevance = LRPEpsilon(model, epsilon=epsilon)(x)
    assert relevance.shape == (2, 1, 125, 160) and relevance.dtype == torch.float32
    assert_close(relevance, captum_relevance(model, x, epsilon))
    assert torch.equal(output, model(x))


@pytest.mark.parametrize('epsilon', [100.0, 0.01])
def test_small_net_matches_captum(epsilon: float) -> None:
    model = randomize(small_net(), seed=3)
    x = torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(4)) * 100
    _, relevance = LRPEpsilon(model, epsilon=epsilon)(x)
    assert_close(relevance, captum_relevance(model, x, epsilon))


def test_multi_output_target_matches_captum() -> None:
    model = randomize(small_net(outputs=3), seed=5)
    x = torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(6)) * 100
    lrp = LRPEpsilon(model, epsilon=1.0)
    assert_close(lrp(x, target=1)[1], captum_relevance(model, x, 1.0, target=1))
    assert_close(lrp(x, target=[0, 2])[1], captum_relevance(model, x, 1.0, target=[0, 2]))
    best = model(x).argmax(dim=1)
    _, default = lrp(x)
    for image in range(2):
        expected = captum_relevance(model, x[image:image + 1], 1.0, target=int(best[image]))
        assert_close(default[image:image + 1], expected)


@pytest.mark.parametrize('make, shape', [(small_net, (3, 11, 13)),
                                         (lambda: authors_net(125, 160), (1, 125, 160))])
def test_conservation_without_biases(make, shape: tuple[int, int, int]) -> None:
    model = randomize(make(), seed=7, biases=False).double()
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    output, relevance = LRPEpsilon(model, epsilon=1e-9)(x)
    totals = relevance.double().sum(dim=(1, 2, 3))
    assert output.abs().min() > 1e-3
    torch.testing.assert_close(totals, output.reshape(-1), rtol=1e-5, atol=1e-9)


def test_output_equals_model_under_inference_mode() -> None:
    model = randomize(authors_net(125, 160), seed=9)
    x = torch.rand(2, 1, 125, 160) * 255
    lrp = LRPEpsilon(model)
    with torch.inference_mode():
        expected = model(x)
        for _ in range(2):
            output, relevance = lrp(x)
            assert torch.equal(output, expected)
            assert torch.isfinite(relevance).all()


def test_unsupported_layer_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"'2' \(MaxPool2d\)"):
        LRPEpsilon(model)


def test_forward_that_is_not_the_chain_is_refused() -> None:
    class Scaled(nn.Sequential):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x * 2)

    model = Scaled(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 1))
    for parameter in model.parameters():
        nn.init.constant_(parameter, 0.1)
    with pytest.raises(ValueError, match='registration order'):
        LRPEpsilon(model)(torch.rand(1, 1, 5, 5) + 1)


def test_training_batch_norm_is_refused() -> None:
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(4, 1)).train()
    with pytest.raises(ValueError, match='eval mode'):
        LRPEpsilon(model)(torch.rand(2, 1, 2, 2))


def test_normalized_relevance_survives_float32_underflow() -> None:
    """Default-initialised weights and epsilon=100: the true relevance is ~1e-80."""
    torch.manual_seed(10)
    model = authors_net(125, 160).eval()
    x = torch.rand(2, 1, 125, 160)
    expected = captum_relevance(model.double(), x.double(), 100.0)
    model.float()
    lrp = LRPEpsilon(model)
    _, relevance = lrp(x)
    _, normalized = lrp(x, normalize=True)
    assert expected.abs().max() < 1e-60 and not relevance.any()
    assert_close(normalized.double(), normalize_relevance(expected))


def test_normalize_relevance() -> None:
    relevance = torch.tensor([[[[2.0, -4.0]]], [[[0.0, 0.0]]]])
    expected = torch.tensor([[[[0.5, -1.0]]], [[[0.0, 0.0]]]])
    assert torch.equal(normalize_relevance(relevance), expected)
