"""What users of the VisualBackProp API rely on beyond the exact values: one forward pass,
dtypes, devices, batches, numerics, reuse of buffers, and clear errors for unsupported models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from naive_vbp import loop_vbp
from vbp_ros import UnsupportedModelError, VisualBackProp, authors_net


def small_net(inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.BatchNorm2d(1), nn.Conv2d(1, 8, 3), nn.ReLU(inplace=inplace),
        nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, 2), nn.ReLU(inplace=inplace),
        nn.BatchNorm2d(8), nn.Conv2d(8, 12, 3), nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 16), nn.ReLU(),
        nn.Linear(16, 1)).eval()


def test_one_forward_pass_per_call() -> None:
    model = small_net()
    calls = []
    model[1].register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(2, 1, 24, 32)
    with VisualBackProp(model) as vbp:
        vbp(x)
        vbp(x)
        vbp.explain(x)
    assert len(calls) == 3


def test_inplace_relus_give_the_same_mask() -> None:
    x = torch.rand(3, 1, 24, 32)
    with VisualBackProp(small_net(inplace=False)) as plain:
        expected = plain(x)[1]
    with VisualBackProp(small_net(inplace=True)) as inplace:
        output, mask = inplace(x)
    torch.testing.assert_close(mask, expected)
    torch.testing.assert_close(output, small_net()(x))


def test_batch_images_are_independent() -> None:
    x = torch.rand(4, 1, 24, 32)
    with VisualBackProp(small_net()) as vbp:
        batch_mask = vbp(x)[1]
        single = torch.cat([vbp(x[i:i + 1])[1] for i in range(4)])
    torch.testing.assert_close(batch_mask, single, atol=1e-6, rtol=0)
    assert batch_mask.amin(dim=(1, 2, 3)).eq(0).all()
    assert batch_mask.amax(dim=(1, 2, 3)).eq(1).all()


def test_constant_mask_is_zero_not_nan() -> None:
    model = small_net()
    with torch.no_grad():
        model[4].weight.zero_()
        model[4].bias.fill_(-1.0)  # the second layer's ReLU output is all zeros
    with VisualBackProp(model) as vbp:
        _, mask = vbp(torch.rand(2, 1, 24, 32))
    assert torch.isfinite(mask).all()
    assert mask.eq(0).all()


def test_deep_network_does_not_underflow() -> None:
    """40 layers whose averaged maps are about 1e-3: their plain product (1e-120) underflows
    float32; the mask must still equal the float64 reference."""
    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for _ in range(40):
        conv = nn.Conv2d(2, 2, 3, padding=1)
        nn.init.uniform_(conv.weight, 0.0, 0.05)
        nn.init.uniform_(conv.bias, 0.0, 2e-3)
        layers += [conv, nn.ReLU()]
    model = nn.Sequential(*layers)
    x = torch.rand(1, 2, 12, 14)
    with VisualBackProp(model) as vbp:
        vbp(torch.rand_like(x))
        explanation = vbp.explain(x)
    assert max(float(m.max()) for m in explanation.averaged_maps[5:]) < 1e-2
    expected = loop_vbp(model, x)
    assert expected.max() == 1.0
    np.testing.assert_allclose(explanation.mask[:, 0].numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_models_give_float32_masks(dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    model = authors_net().eval()
    x = torch.rand(1, 1, 125, 640)
    with VisualBackProp(model) as vbp:
        reference = vbp(x)[1]
    with VisualBackProp(model.to(dtype)) as vbp:
        vbp(torch.rand_like(x).to(dtype))  # trace; the next call fills prebuilt buffers
        output, mask = vbp(x.to(dtype))
    assert output.dtype == dtype
    assert mask.dtype == torch.float32
    assert torch.isfinite(mask).all()
    correlation = np.corrcoef(mask.flatten().numpy(), reference.flatten().numpy())[0, 1]
    assert correlation > 0.95


def test_masks_follow_gradients_off_the_graph_during_training() -> None:
    """VBP during training: the output keeps its graph, the mask does not."""
    model = small_net().train()
    x = torch.rand(4, 1, 24, 32)
    with VisualBackProp(model) as vbp:
        output, mask = vbp(x)
    assert output.requires_grad and not mask.requires_grad
    output.sum().backward()
    assert model[1].weight.grad is not None


def test_buffers_are_built_once_per_input_shape() -> None:
    x = torch.rand(2, 1, 24, 32)
    with VisualBackProp(small_net()) as vbp:
        vbp(x)
        (plan,) = vbp._plans.values()

        def addresses() -> list[int]:
            return ([m.data_ptr() for m in plan.maps]
                    + [scale_up.cols.full.data_ptr() for _, _, scale_up in plan.scale_ups])

        before = addresses()
        for _ in range(3):
            vbp(torch.rand(2, 1, 24, 32))
        assert list(vbp._plans.values()) == [plan] and addresses() == before
        _, other = vbp(torch.rand(2, 1, 25, 33))
        assert other.shape == (2, 1, 25, 33)
        assert len(vbp._plans) == 2


def test_returned_masks_are_not_overwritten_by_later_calls() -> None:
    with VisualBackProp(small_net()) as vbp:
        first = vbp(torch.rand(1, 1, 24, 32))[1]
        kept = first.clone()
        vbp(torch.rand(1, 1, 24, 32))
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


def test_works_inside_and_outside_inference_mode() -> None:
    x = torch.rand(1, 1, 24, 32)
    with VisualBackProp(small_net()) as vbp:
        with torch.inference_mode():
            inside = vbp(x)[1]
        outside = vbp(x)[1]
    torch.testing.assert_close(inside, outside)


def test_explain_exposes_every_layer() -> None:
    x = torch.rand(2, 1, 24, 32)
    with VisualBackProp(small_net()) as vbp:
        explanation = vbp.explain(x)
        assert vbp.layer_names == ('1', '4', '7')
    assert [tuple(m.shape) for m in explanation.averaged_maps] == [
        (2, 1, 22, 30), (2, 1, 10, 14), (2, 1, 8, 12)]
    assert [m.shape for m in explanation.intermediate_masks] == [
        m.shape for m in explanation.averaged_maps]
    torch.testing.assert_close(explanation.averaged_maps[0],
                               F.relu(small_net()[:2](x)).mean(1, keepdim=True))


def test_remove_detaches_hooks() -> None:
    """The graph reading leaves the model untouched; named layers are hooked until remove()."""
    model = small_net()
    vbp = VisualBackProp(model)
    vbp(torch.rand(1, 1, 24, 32))
    assert not any(m._forward_hooks for m in model.modules())
    vbp.remove()
    with pytest.raises(RuntimeError, match='removed'):
        vbp(torch.rand(1, 1, 24, 32))
    named = VisualBackProp(model, layers=['2', '5', '8'])
    named(torch.rand(1, 1, 24, 32))
    assert any(m._forward_hooks for m in model.modules())
    named.remove()
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_mask_matches_cpu_and_stays_on_device() -> None:
    x = torch.rand(2, 1, 24, 32)
    with VisualBackProp(small_net()) as vbp:
        expected = vbp(x)[1]
    with VisualBackProp(small_net().cuda()) as vbp:
        _, mask = vbp(x.cuda())
    assert mask.device.type == 'cuda'
    torch.testing.assert_close(mask.cpu(), expected, atol=1e-5, rtol=0)


class FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(F.relu(self.conv1(x)))).mean((1, 2, 3))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_relu = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()
        self.conv, self.relu = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem_relu(self.stem(x))
        return self.relu(self.conv(y) + y).mean((1, 2, 3))


def reused_relu() -> nn.Module:
    relu = nn.ReLU()
    return nn.Sequential(nn.Conv2d(1, 4, 3), relu, nn.Conv2d(4, 4, 3), relu, nn.Flatten())


@pytest.mark.parametrize('model', [
    nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten()),
    nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten()),
    FunctionalRelu(), reused_relu(), Residual(),
    nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3),
                  nn.ReLU(), nn.Flatten()),
], ids=['conv-conv-relu', 'last-conv-without-relu', 'functional-relu', 'reused-relu',
        'residual', 'pooling'])
def test_layouts_a_chain_reader_refused_follow_the_general_rule(model: nn.Module) -> None:
    """Layouts the first, chain-only implementation refused (each named in its error)."""
    from vbp_reference import reference_mask

    torch.manual_seed(0)
    x = torch.rand(2, 1, 12, 10)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.bias.uniform_(0.0, 0.2)
    expected = reference_mask(model, x)
    with VisualBackProp(model) as vbp:
        _, mask = vbp(x)
    assert expected.max() == 1.0
    np.testing.assert_allclose(mask[:, 0].numpy(), expected, atol=1e-5, rtol=0)


def test_a_network_without_feature_maps_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match='nothing to explain'):
        VisualBackProp(nn.Sequential(nn.Linear(10, 10), nn.ReLU()))(torch.rand(1, 1, 12, 10))
