"""Reference implementations from captum, the attribution library (a pinned test and benchmark
extra, imported only when a reference is built): LRP-epsilon and Grad-CAM on the same weights as
the project's own :class:`~vbp_ros.explain.lrp.LRPEpsilon` and
:class:`~vbp_ros.explain.gradcam.GradCAM`, for the tests and ``vbp-bench``.

Captum's LRP has no rule for nn.Flatten (its IdentityRule fails with "hook changed the size"),
so its copy of the model runs the leaf modules in order with flattening done functionally; and
``LRP.attribute`` deletes every ``module.rule`` when it finishes (a second call would silently
use captum's default epsilon 1e-9), so the rules are set anew before every call.
"""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from .graph import leaf_modules
from .lrp import LRPEpsilon


class FunctionalFlatten(nn.Module):
    """The leaf modules of ``model`` run in order, with each nn.Flatten done by torch.flatten."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        leaves = [module for _, module in leaf_modules(model)]
        self.flatten_dims = [(m.start_dim, m.end_dim) if isinstance(m, nn.Flatten) else None
                             for m in leaves]
        self.layers = nn.ModuleList([m for m in leaves if not isinstance(m, nn.Flatten)])

    def forward(self, x: Tensor) -> Tensor:
        layers = iter(self.layers)
        for dims in self.flatten_dims:
            x = torch.flatten(x, *dims) if dims else next(layers)(x)
        return x


class ReferenceLRP:
    """captum's LRP with ``EpsilonRule(epsilon)`` on every Conv2d, Linear and BatchNorm2d of a
    copy of ``model`` (with non-inplace ReLUs); relevance summed over input channels."""

    def __init__(self, model: nn.Module, epsilon: float = 100.0) -> None:
        from captum.attr import LRP

        LRPEpsilon(model, epsilon)  # the same chains only: refuses others naming the node
        self.chain = FunctionalFlatten(copy.deepcopy(model))
        for module in self.chain.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
        self.epsilon = epsilon
        self.lrp = LRP(self.chain)

    def __call__(self, x: Tensor, target: int | Sequence[int] | None = None) -> Tensor:
        from captum.attr._utils.lrp_rules import EpsilonRule

        for module in self.chain.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                module.rule = EpsilonRule(epsilon=self.epsilon)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)  # "input did not require gradients"
            relevance = self.lrp.attribute(x.clone(), target=target)
        return relevance.detach().sum(dim=1, keepdim=True)


class ReferenceGradCam:
    """captum's LayerGradCam (ReLU of the weighted sum) on the ReLU module after the last
    convolution, upsampled bilinearly to the input size (chains of modules only)."""

    def __init__(self, model: nn.Module) -> None:
        from captum.attr import LayerGradCam

        self.model = copy.deepcopy(model)
        relus = [m for _, m in leaf_modules(self.model) if isinstance(m, nn.ReLU)]
        convs = [m for _, m in leaf_modules(self.model) if isinstance(m, nn.Conv2d)]
        if not relus or not convs:
            raise ValueError('Grad-CAM needs a convolution followed by a ReLU')
        for relu in relus:
            relu.inplace = False
        last_conv_relu = next(r for r in relus if _after(self.model, r, convs[-1]))
        self.cam = LayerGradCam(self.model, last_conv_relu)

    def __call__(self, x: Tensor, target: int = 0) -> Tensor:
        from captum.attr import LayerAttribution

        attribution = self.cam.attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(attribution.detach(), tuple(x.shape[2:]),
                                            interpolate_mode='bilinear')


def _after(model: nn.Module, module: nn.Module, anchor: nn.Module) -> bool:
    order = [m for _, m in leaf_modules(model)]
    return order.index(module) > order.index(anchor)
