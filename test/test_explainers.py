"""One shape for every explanation method, and Grad-CAM checked against captum's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vbp_ros.explain.explainers import EXPLAINERS, Explainer, explainer
from vbp_ros.explain.gradcam import GradCAM
from vbp_ros.models.networks import authors_net, build_network
from vbp_ros.explain.reference import ReferenceGradCam
from vbp_ros.explain.vbp import VisualBackProp


@pytest.mark.parametrize('name', sorted(EXPLAINERS))
def test_every_method_returns_the_output_and_a_map(name: str) -> None:
    torch.manual_seed(0)
    model = authors_net(125, 160).eval()
    x = torch.rand(2, 1, 125, 160)
    with explainer(name, model) as method, torch.inference_mode():
        assert isinstance(method, Explainer)
        output, attribution = method(x)
        expected = model(x)
    torch.testing.assert_close(output, expected)
    assert attribution.shape == (2, 1, 125, 160) and attribution.dtype == torch.float32
    assert torch.isfinite(attribution).all() and attribution.abs().amax() > 0


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="unknown method 'shap'; known: vbp, lrp, gradcam"):
        explainer('shap', nn.Identity())


def small_chain() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 8, 3, 2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 11 * 15, 3)).eval()


def test_leaving_the_with_block_detaches_every_hook() -> None:
    model = small_chain()
    x = torch.rand(1, 3, 25, 33)
    with GradCAM(model, layer='4') as cam, VisualBackProp(model, layers=['1', '4']) as vbp:
        cam(x)
        vbp(x)
        assert any(module._forward_hooks for module in model.modules())
    assert not any(module._forward_hooks for module in model.modules())
    with pytest.raises(RuntimeError, match='VisualBackProp was removed'):
        vbp(x)


@pytest.mark.parametrize('make, shape, target', [
    (lambda: authors_net(125, 160), (1, 125, 160), 0),
    (small_chain, (3, 25, 33), 2),
    (small_chain, (3, 25, 33), None),
])
def test_gradcam_matches_captum_on_a_chain(make, shape: tuple, target: int | None) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(2, *shape)
    output, cam = GradCAM(model)(x, target=target)
    targets = model(x).argmax(1).tolist() if target is None else [target] * 2
    expected = torch.cat([ReferenceGradCam(model)(x[i:i + 1], target=t)
                          for i, t in enumerate(targets)])
    assert (cam.flatten(1).amax(1) > 0).all()
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6 * float(cam.amax()))
    torch.testing.assert_close(output, model(x))


@pytest.mark.parametrize('name', ['pilotnet_elu', 'commaai', 'resnet18', 'mobilenet_v2'])
def test_gradcam_targets_the_deepest_kept_tensor_of_the_zoo(name: str) -> None:
    torch.manual_seed(2)
    model = build_network(name).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # frozen weights still give gradients to the target
    x = torch.rand(2, 3, *model.input_size)
    cam = GradCAM(model)
    with torch.inference_mode():
        output, heat = cam(x)
    assert cam.target_name == {'pilotnet_elu': 'elu_4', 'commaai': 'features.7',
                               'resnet18': 'layer4.1.relu#2',
                               'mobilenet_v2': 'features.18.2'}[name]
    assert heat.shape == (2, 1, *model.input_size) and (heat >= 0).all()
    torch.testing.assert_close(output, model(x))


def test_gradcam_on_a_named_layer_matches_the_graph_target() -> None:
    torch.manual_seed(3)
    model = build_network('resnet18', input_height=47, input_width=93).eval()
    x = torch.rand(1, 3, 47, 93)
    with GradCAM(model, layer='layer4.1.relu') as named:
        _, by_name = named(x)  # the module's second call overwrites the first: the block output
    _, by_graph = GradCAM(model)(x)
    torch.testing.assert_close(by_name, by_graph)
