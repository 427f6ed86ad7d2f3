"""VisualBackProp (Bojarski et al.): which input pixels a CNN's prediction rests on.

One ordinary forward pass keeps the channel average of every convolutional layer's post-ReLU
feature map (forward hooks on the ReLU modules; they keep channel sums, the averages times a
positive per-layer constant that the final normalization removes, written straight into
buffers made once per input shape). Starting from the deepest average, each level is
scaled up to the next-shallower map's size by a transposed convolution whose one-channel kernel is
all ones (kernel size, stride, padding and dilation of the convolution that produced the deeper
map, plus the output padding that makes the sizes match exactly) and multiplied pointwise by that
shallower average. The last scale-up reaches the input size and the result is min-max normalized
once per image.

The all-ones transposed convolution is separable and equals a sum of strided shifts, which this
module evaluates as in-place additions into views of buffers made once per input shape: one-channel
``conv_transpose2d`` is far slower on CPUs. Intermediate products are divided by their per-image
maximum, a positive per-image constant that leaves the final normalized mask unchanged and keeps
deep networks from underflowing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .layout import (ConvGeometry, ConvStage, UnsupportedModelError, find_conv_stages,
                     leaf_modules)

__all__ = ['VisualBackProp', 'VBPExplanation', 'UnsupportedModelError']


_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class VBPExplanation:
    """Everything of one VisualBackProp pass, for inspection (paper Figure 2).

    Lists run from the shallowest convolutional layer to the deepest; tensors are float32 copies
    on the input's device, each of shape (B, 1, h, w) at that layer's resolution.
    """

    output: Tensor
    mask: Tensor
    layer_names: tuple[str, ...]
    averaged_maps: tuple[Tensor, ...]
    intermediate_masks: tuple[Tensor, ...]


class _OnesTransposedConv1d:
    """All-ones one-channel transposed convolution along one spatial axis, into a fixed buffer."""

    def __init__(self, source: Tensor, axis: int, kernel: int, stride: int, padding: int,
                 dilation: int, target: int) -> None:
        length = source.shape[axis]
        span = (length - 1) * stride + 1
        output_padding = target - (span + dilation * (kernel - 1) - 2 * padding)
        if not 0 <= output_padding < max(stride, dilation):
            raise UnsupportedModelError(
                f'cannot scale a map of size {length} up to {target} along axis {axis} with '
                f'kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation}')
        shape = list(source.shape)
        shape[axis] = target + 2 * padding
        self.source = source
        self.full = source.new_zeros(shape)
        self.taps = [self.full.narrow(axis, tap * dilation, span)[_strided(axis, stride)]
                     for tap in range(kernel)]
        self.result = self.full.narrow(axis, padding, target)

    def run(self) -> Tensor:
        self.full.zero_()
        for tap in self.taps:
            tap.add_(self.source)
        return self.result


def _strided(axis: int, stride: int) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(None, None, stride),)


class _Level:
    """Scale-up of one level's mask to the next-shallower size, then the pointwise product."""

    def __init__(self, source: Tensor, geometry: ConvGeometry, target_hw: tuple[int, int],
                 shallower_map: Tensor | None, rescale: bool) -> None:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            geometry.kernel, geometry.stride, geometry.padding, geometry.dilation)
        # Columns first: their strided writes are the slow part, so do them on fewer rows.
        self.cols = _OnesTransposedConv1d(source, 3, kw, sw, pw, dw, target_hw[1])
        self.rows = _OnesTransposedConv1d(self.cols.result, 2, kh, sh, ph, dh, target_hw[0])
        self.shallower_map = shallower_map
        self.product = None if shallower_map is None else torch.zeros_like(shallower_map)
        self.rescale = rescale

    def run(self) -> Tensor:
        self.cols.run()
        scaled = self.rows.run()
        if self.product is None:
            return scaled
        torch.mul(scaled, self.shallower_map, out=self.product)
        if self.rescale:
            _divide_by_peak(self.product)
        return self.product


def _divide_by_peak(mask: Tensor) -> None:
    """Divide each image by its maximum: a positive per-image constant, so the final min-max
    is unchanged, while products of many small maps stay clear of float32 underflow."""
    mask.div_(mask.amax(dim=(2, 3), keepdim=True).clamp_min_(_TINY))


class _Plan:
    """Buffers and views for one input shape and device: built once, reused every call.

    ``maps`` are the averaged-map buffers, shallow to deep, which the forward hooks fill.
    """

    def __init__(self, stages: Sequence[ConvStage], maps: Sequence[Tensor],
                 input_hw: tuple[int, int]) -> None:
        self.maps = [m.clone() for m in maps]
        self.levels: list[_Level] = []
        source = self.maps[-1]
        for index in range(len(stages) - 1, -1, -1):
            if index > 0:
                target_hw, shallower = tuple(self.maps[index - 1].shape[2:]), self.maps[index - 1]
            else:
                target_hw, shallower = input_hw, None
            # The layer-0 product is only summed once more before the final min-max.
            level = _Level(source, stages[index].geometry, target_hw, shallower,
                           rescale=index > 1)
            self.levels.append(level)
            source = level.product
        self.final = torch.zeros((maps[0].shape[0], 1, *input_hw), device=maps[0].device)

    def run(self, gamma: Tensor | None) -> Tensor:
        """The mask from the filled map buffers; a fresh normalized tensor."""
        _divide_by_peak(self.maps[-1])
        for level in self.levels:
            current = level.run()
        if gamma is not None:
            current = torch.mul(current, gamma, out=self.final)
        return _normalize(current)

    def intermediate_masks(self) -> list[Tensor]:
        """Products at each layer's resolution, shallow to deep (copies)."""
        products = [level.product.clone() for level in reversed(self.levels[:-1])]
        return products + [self.maps[-1].clone()]


def _normalize(mask: Tensor) -> Tensor:
    """Per-image min-max to [0, 1]; a constant mask becomes all zeros."""
    low = mask.amin(dim=(2, 3), keepdim=True)  # (torch.aminmax over a flattened dim is slower)
    span = mask.amax(dim=(2, 3), keepdim=True) - low
    scale = torch.where(span > 0, span.reciprocal(), torch.zeros_like(span))
    return (mask - low).mul_(scale)


class VisualBackProp:
    """VisualBackProp masks from the same forward pass that gives the network's output.

    >>> vbp = VisualBackProp(model)
    >>> output, mask = vbp(x)      # mask: (B, 1, H, W) float32 in [0, 1] on x's device
    >>> vbp.remove()               # or use ``with VisualBackProp(model) as vbp:``

    The convolutional part of ``model`` must be a chain of ``nn.Conv2d`` layers, each followed by
    its own ``nn.ReLU`` module (batch normalization, dropout and identity layers may sit in
    between). Layers after the last such ReLU (flatten, fully connected head) do not take part.
    The layout is read from the first call, which is an ordinary forward pass; a model that does
    not fit raises :class:`UnsupportedModelError` naming the layer.

    Args:
        model: the network; called as ``model(x)``.
        input_factor: multiply the mask by the input intensity (channel mean of ``x``), the
            gamma(X) factor of the paper's Theorem 1. Off by default, as in the authors' code.
    """

    def __init__(self, model: nn.Module, *, input_factor: bool = False) -> None:
        self.model = model
        self.input_factor = input_factor
        self._stages: list[ConvStage] | None = None
        self._maps: list[Tensor | None] = []  # averaged maps before a plan exists for the shape
        self._targets: list[Tensor] | None = None  # plan buffers the hooks fill this call
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._plans: dict[tuple, _Plan] = {}

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the convolutional layers that take part, shallow to deep (after a call)."""
        return tuple(stage.conv_name for stage in self._stages or ())

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run the model once; return its output and the (B, 1, H, W) float32 mask."""
        output = self._forward(x)
        return output, self._mask(x)

    def explain(self, x: Tensor) -> VBPExplanation:
        """Like calling the object, and also return the averaged maps and intermediate masks."""
        output = self._forward(x)
        maps = tuple(m / stage.channels for m, stage in zip(self._filled_maps(), self._stages))
        mask = self._mask(x)
        intermediates = tuple(self._plans[_plan_key(x)].intermediate_masks())
        return VBPExplanation(output, mask, self.layer_names, maps, intermediates)

    def remove(self) -> None:
        """Detach every hook from the model; the object can no longer be called."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._plans.clear()

    def __enter__(self) -> VisualBackProp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def _forward(self, x: Tensor) -> Tensor:
        if self._stages is None:
            return self._trace(x)
        if not self._handles:
            raise RuntimeError('VisualBackProp hooks were removed; create a new VisualBackProp')
        plan = self._plans.get(_plan_key(x))
        self._targets = plan.maps if plan is not None else None
        return self.model(x)

    def _trace(self, x: Tensor) -> Tensor:
        """First call: record the execution order of leaf modules and find the conv stages."""
        events: list[tuple[str, nn.Module, object, object]] = []
        relu_maps: dict[int, Tensor] = {}

        def record(name: str) -> Callable:
            def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
                if isinstance(module, nn.ReLU) and isinstance(output, Tensor):
                    relu_maps[len(events)] = _channel_sum(output)
                events.append((name, module, args[0] if args else None, output))
            return hook

        handles = [module.register_forward_hook(record(name))
                   for name, module in leaf_modules(self.model)]
        try:
            output = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        stages = find_conv_stages(events)
        self._stages = stages
        self._maps = [relu_maps[stage.relu_event] for stage in stages]
        self._handles = [stage.relu.register_forward_hook(self._keeper(i))
                         for i, stage in enumerate(stages)]
        return output

    def _keeper(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if self._targets is None:
                self._maps[index] = _channel_sum(output)
            else:
                torch.sum(output.detach(), dim=1, keepdim=True, dtype=torch.float32,
                          out=self._targets[index])
        return hook

    def _filled_maps(self) -> list[Tensor]:
        """The averaged maps of the last forward pass (plan buffers once a plan exists)."""
        return self._targets if self._targets is not None else self._maps

    def _mask(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            key = _plan_key(x)
            plan = self._plans.get(key)
            if plan is None or self._targets is None:
                if plan is None:
                    with torch.inference_mode(False):
                        plan = _Plan(self._stages, self._maps, tuple(x.shape[2:]))
                    self._plans[key] = plan
                for buffer, values in zip(plan.maps, self._maps):
                    buffer.copy_(values)
            self._targets = None
            gamma = _channel_sum(x) if self.input_factor else None
            return plan.run(gamma)


def _plan_key(x: Tensor) -> tuple:
    return tuple(x.shape), x.device


def _channel_sum(t: Tensor) -> Tensor:
    return t.detach().sum(dim=1, keepdim=True, dtype=torch.float32)
