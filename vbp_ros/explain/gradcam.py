"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"), the gradient-based baseline VisualBackProp is compared with.

The target tensor is the deepest kept tensor of VisualBackProp's reading of the network (the
last activation before the head, or comma.ai's last convolution), so both methods look at the
same network the same way; ``layer=`` names a module instead. For the score s (the output for a
one-output network, the target output otherwise) and the target tensor's channels A_k:
``cam = ReLU(sum_k mean_xy(ds/dA_k) A_k)``, upsampled bilinearly to the input size.

One forward and one backward pass per call, run with autograd even under
``torch.inference_mode`` (a copy of an inference-mode input is made); the first call also reads
the graph with one forward pass of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Explainer
from .graph import GraphReader
from .rules import UnsupportedModelError
from .targets import Target, explained_index

__all__ = ['GradCAM']


class GradCAM(Explainer):
    """Grad-CAM maps from one forward and one backward pass.

    >>> cam = GradCAM(model)
    >>> output, heat = cam(x)   # heat: (B, 1, H, W) float32, >= 0, at the input size

    Args:
        model: the network.
        layer: the module (``model.named_modules()`` name) whose output is the target tensor;
            default: the deepest kept tensor of the network's graph.
    """

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        self.model = model
        self.layer = layer
        self._reader: GraphReader | None = None
        self._handle = None
        self._grabbed: Tensor | None = None
        if layer is not None:
            modules = dict(model.named_modules())
            if layer not in modules:
                raise UnsupportedModelError(f'no layer named {layer!r} in the model')
            self._handle = modules[layer].register_forward_hook(
                lambda module, args, output: self._grab(output, 0))

    @property
    def target_name(self) -> str | None:
        """The target tensor's name (after the first call when read from the graph)."""
        return self.layer if self.layer is not None else getattr(self, '_target_name', None)

    def __call__(self, x: Tensor, target: Target = None
                 ) -> tuple[Tensor, Tensor]:
        """The model output (detached) and the (B, 1, H, W) float32 Grad-CAM map.

        Args:
            x: input batch (B, C, H, W).
            target: for a multi-output network the output index explained, one for all images
                or one per image; default: each image's largest output.
        """
        run = self._run_function(x)
        with torch.inference_mode(False), torch.enable_grad():
            if x.is_inference():
                x = x.clone()
            output = run(x)
            feature, self._grabbed = self._grabbed, None
            score = _scores(output, target)
            (gradient,) = torch.autograd.grad(score.sum(), feature)
        weights = gradient.float().mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * feature.detach().float()).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode='bilinear', align_corners=False)
        return output.detach(), cam

    def remove(self) -> None:
        """Detach the hook of a named layer."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _run_function(self, x: Tensor):
        if self.layer is not None:
            return self.model
        if self._reader is None:
            reader = GraphReader(self.model)
            with torch.no_grad():
                _, record = reader.record(x, candidates=False)
            graph = reader.read(record)
            deepest = max(i for i in graph.kept if not graph.nodes[i].edges)
            node = graph.nodes[deepest].key
            self._target_name = graph.nodes[deepest].name
            reader.insert_calls([node], self._grab)
            self._reader = reader
        return self._reader.module

    def _grab(self, tensor: Tensor, index: int) -> None:
        if not tensor.requires_grad:  # frozen weights: make the target a leaf of the graph
            tensor.requires_grad_(True)
        self._grabbed = tensor


def _scores(output: Tensor, target: Target) -> Tensor:
    """The explained output per image (see :func:`explained_index`)."""
    flat, index = explained_index(output, target)
    return flat[:, 0] if index is None else flat.gather(1, index[:, None])[:, 0]
