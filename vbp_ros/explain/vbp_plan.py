"""VisualBackProp's torch executor: the buffers and steps that sum the masks back to the input,
made once per input shape and device (:class:`Plan`; docs/design.md, "VisualBackProp on any
network").

The all-ones one-channel transposed convolution of a spatial edge is separable (columns, then
rows). Along one axis it is evaluated by phase of the stride: the target positions ``first``,
``first + stride``, ... each receive the same kernel taps, so a phase is a copy or a sum of
shifted windows of the source, written once (one-channel ``conv_transpose2d`` is far slower on
CPUs). Masks live in zero-padded buffers, so windows reach past a mask's edges with no bounds
checks. Products with the averaged maps and divisions by the peak are done in place where the
plan made the mask and no other edge reads it (a scale-up's buffer is shared along identity
edges, so a chain's mask needs one buffer per resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor

from .geometry import AxisGeometry, Geometry
from .graph import Record
from .mask_graph import TINY, Edge, MaskGraph

__all__ = ['Plan']

# The keepers write channel sums, not means: a mask is carried multiplied by the product of the
# channel counts since its last division (its entry's scale). Past this bound the product is
# divided out (one pass over a small map), so that masks and the ratios of a merge stay within
# float32 where no narrow point divides them (Inception's and DenseNet's blocks).
MAX_CARRIED_SCALE = 2.0 ** 16


class _Padded:
    """A zero buffer holding (B, 1, h, w) masks with ``margins`` (rows, columns) on both sides:
    windows of ``mask`` that reach past its edges read zeros (the margins are never written)."""

    def __init__(self, batch: int, size: Sequence[int], margins: tuple[int, int],
                 device: torch.device) -> None:
        (rows, cols), (height, width) = margins, size
        self.full = torch.zeros((batch, 1, height + 2 * rows, width + 2 * cols), device=device)
        self.margins = margins
        self.mask = self.full[:, :, rows:rows + height, cols:cols + width]

    def window(self, axis: int, start: int, length: int) -> Tensor:
        """The mask's positions ``start`` to ``start + length`` along ``axis`` (2: rows, 3:
        columns), whole along the other axis."""
        other = 5 - axis
        whole = self.full.narrow(other, self.margins[other - 2], self.mask.shape[other])
        return whole.narrow(axis, self.margins[axis - 2] + start, length)


@dataclass(frozen=True)
class _Phase:
    """Target positions ``first``, ``first + stride``, ... (``count`` of them) and, per kernel
    tap that writes them, the source position the tap brings to ``first``."""

    first: int
    count: int
    starts: tuple[int, ...]


def _phases(geometry: AxisGeometry, length: int, target: int) -> list[_Phase]:
    """The all-ones transposed convolution along one axis, by phase of the stride: source
    position j adds to target positions ``j * stride + tap * dilation - pad_before``, so a phase
    is a sum of shifted copies of the source. Taps that bring only positions outside the source
    (zeros) are left out."""
    stride, dilation, before = geometry.stride, geometry.dilation, geometry.pad_before
    phases = []
    for first in range(min(stride, target)):
        count = len(range(first, target, stride))
        offsets = (first + before - tap * dilation for tap in range(geometry.kernel))
        starts = tuple(offset // stride for offset in offsets if offset % stride == 0)
        phases.append(_Phase(first, count, tuple(
            start for start in starts if start < length and start + count > 0)))
    return phases


def _margin(phases: Sequence[_Phase], length: int) -> int:
    """Zeros each side of a source of ``length`` that the phases' windows reach."""
    reach = [max(-start, start + phase.count - length) for phase in phases
             for start in phase.starts]
    return max([0, *reach])


class _AxisPass:
    """The all-ones one-channel transposed convolution along one axis (2: rows, 3: columns),
    from a padded source into a target: each phase written once (a copy, or a sum of windows)."""

    def __init__(self, source: _Padded, axis: int, geometry: AxisGeometry,
                 phases: Sequence[_Phase]) -> None:
        self.axis, self.stride = axis, geometry.stride
        self.phases = [(phase, [source.window(axis, start, phase.count)
                                for start in phase.starts]) for phase in phases]
        self.writes: list[tuple[Tensor, list[Tensor]]] = []

    def bind(self, target: Tensor) -> _AxisPass:
        """Write into ``target`` (B, 1, h, w) from now on."""
        step = (slice(None),) * self.axis + (slice(None, None, self.stride),)
        self.writes = [(target.narrow(self.axis, phase.first,
                                      (phase.count - 1) * self.stride + 1)[step], windows)
                       for phase, windows in self.phases]
        return self

    def run(self) -> None:
        for target, windows in self.writes:
            if not windows:
                target.zero_()
            elif len(windows) == 1:
                target.copy_(windows[0])
            else:
                torch.add(windows[0], windows[1], out=target)
                for window in windows[2:]:
                    target.add_(window)


class _ScaleUp:
    """A mask scaled up along one spatial edge to the size of the tensor the edge reads: columns
    first (into ``cols``, padded for the rows pass), then rows into the target."""

    def __init__(self, source: _Padded, geometry: Geometry, target_hw: Sequence[int],
                 batch: int, device: torch.device) -> None:
        (height, width), (target_h, target_w) = source.mask.shape[2:], target_hw
        col_phases = _phases(geometry.cols, width, target_w)
        row_phases = _phases(geometry.rows, height, target_h)
        self.cols = _Padded(batch, (height, target_w), (_margin(row_phases, height), 0), device)
        self.col_pass = _AxisPass(source, 3, geometry.cols, col_phases).bind(self.cols.mask)
        self.row_pass = _AxisPass(self.cols, 2, geometry.rows, row_phases)
        self.target_hw = tuple(target_hw)
        self.target: _Padded | None = None  # the plan's buffer it runs into, if any

    def bind(self, target: Tensor) -> _ScaleUp:
        """Write the scaled-up mask into ``target`` from now on."""
        self.row_pass.bind(target)
        return self

    def run(self) -> None:
        self.col_pass.run()
        self.row_pass.run()


@dataclass(frozen=True)
class _Entry:
    """A tensor's mask while a plan is built: a buffer, or a scale-up not yet given one; the
    constant it is divided by; whether the tensor may change it in place."""

    mask: _Padded | _ScaleUp
    scale: float
    owned: bool


def _divide_by_peak(mask: Tensor) -> None:
    """Divide each image by its maximum: a positive per-image constant."""
    mask.div_(mask.amax(dim=(2, 3), keepdim=True).clamp_min_(TINY))


def _add_scaled(out: Tensor, parts: Sequence[tuple[Tensor, float]]) -> None:
    """``out = sum of part * weight`` (the channel-count constants of the branches)."""
    (first, _), (second, weight) = parts[:2]
    torch.add(first, second, alpha=weight, out=out)
    for part, weight in parts[2:]:
        out.add_(part, alpha=weight)


def _column_margin(graph: MaskGraph) -> int:
    """Zero columns each side of a mask that every scale-up of ``graph`` may read."""
    sizes = [node.size for node in graph.nodes]
    margins = [_margin(_phases(edge.geometry.cols, sizes[edge.consumer][1], sizes[index][1]),
                       sizes[edge.consumer][1])
               for index, node in enumerate(graph.nodes) for edge in node.edges
               if edge.geometry is not None
               and edge.geometry.changes(sizes[edge.consumer], sizes[index])]
    return max([0, *margins])


class Plan:
    """Buffers and steps for one input shape and device: built once, reused every call.

    ``maps`` are the kept tensors' channel-sum buffers (shallow to deep) that the keepers fill;
    ``keep_targets`` pairs each with a scratch view for the positive part of signed activations.
    Masks live in zero-padded buffers (:class:`_Padded`), so that scale-ups read past their
    edges without bounds checks; products and divisions are done in place where the plan made
    the mask.
    """

    def __init__(self, graph: MaskGraph, record: Record, batch: int, device: torch.device
                 ) -> None:
        self.graph, self.batch, self.device = graph, batch, device
        self.sizes = [node.size for node in graph.nodes]
        self.margins = (0, _column_margin(graph))
        self.maps = [torch.zeros((batch, 1, *self.sizes[i]), device=device) for i in graph.kept]
        self.keep_targets = list(zip(self.maps, self._scratch(record, batch, device)))
        self.steps: list[Callable[[], object]] = []
        self.scale_ups: list[tuple[int, int, _ScaleUp]] = []
        self.masks: list[Tensor | None] = [None] * len(graph.nodes)
        self._build()
        self.final = torch.zeros_like(self.masks[0])

    def _scratch(self, record: Record, batch: int, device: torch.device
                 ) -> list[Tensor | None]:
        """One shared buffer per dtype, viewed as each signed kept tensor (they run in turn)."""
        signed = [((batch, *n.shape), record.dtypes[n.key]) if not n.kept.nonnegative
                  else None for n in self.graph.kept_tensors]
        flats = {}
        for shape, dtype in filter(None, signed):
            flats[dtype] = max(flats.get(dtype, 0), math.prod(shape))
        flats = {dtype: torch.empty(numel, dtype=dtype, device=device)
                 for dtype, numel in flats.items()}
        return [None if entry is None else flats[entry[1]][:math.prod(entry[0])].view(entry[0])
                for entry in signed]

    def _build(self) -> None:
        graph = self.graph
        kept_maps = dict(zip(graph.kept, self.maps))
        readers = [0] * len(graph.nodes)
        for node in graph.nodes:
            for edge in node.edges:
                readers[edge.consumer] += 1
        entries: list[_Entry | None] = [None] * len(graph.nodes)
        for index in range(len(graph.nodes) - 1, -1, -1):
            node = graph.nodes[index]
            parts = [self._along(edge, entries[edge.consumer], index, readers[edge.consumer])
                     for edge in node.edges]
            if not parts:  # a deepest tensor: its map, padded
                entry = _Entry(self._padded(self.sizes[index]), float(node.kept.channels), True)
                self.steps.append(partial(entry.mask.mask.copy_, kept_maps[index]))
            elif len(parts) == 1:
                entry = parts[0]
            else:
                merged = self._padded(self.sizes[index])
                self.steps.append(partial(_add_scaled, merged.mask, [
                    (self._made(part).mask, parts[0].scale / part.scale) for part in parts]))
                entry = self._bounded(_Entry(merged, parts[0].scale, True))
            if node.kept is not None and parts:
                mask = self._made(entry)
                if entry.owned:
                    self.steps.append(partial(mask.mask.mul_, kept_maps[index]))
                else:
                    product = self._padded(self.sizes[index])
                    self.steps.append(partial(torch.mul, mask.mask, kept_maps[index],
                                              out=product.mask))
                    mask = product
                entry = self._bounded(_Entry(mask, entry.scale * node.kept.channels, True))
            if node.rescaled:  # masks are nonnegative: the margins' zeros change no peak
                self.steps.append(partial(_divide_by_peak, self._made(entry).full))
                entry = _Entry(entry.mask, 1.0, True)
            entries[index] = entry
            if node.kept is not None:
                self.masks[index] = self._made(entry).mask
        self.masks[0] = self._made(entries[0]).mask

    def _bounded(self, entry: _Entry) -> _Entry:
        """``entry`` (a mask this tensor owns), its scale divided out past
        :data:`MAX_CARRIED_SCALE`."""
        if entry.scale <= MAX_CARRIED_SCALE:
            return entry
        self.steps.append(partial(entry.mask.mask.mul_, 1.0 / entry.scale))
        return _Entry(entry.mask, 1.0, True)

    def _along(self, edge: Edge, consumer: _Entry, index: int, readers: int) -> _Entry:
        """The consumer's mask brought along an edge to tensor ``index``: a scale-up where the
        edge changes the size; else the consumer's mask, this tensor's to change in place where
        the consumer's was, the consumer is not kept and no other edge reads it."""
        geometry, target = edge.geometry, self.sizes[index]
        source = consumer.mask
        if geometry is None or not geometry.changes(self.sizes[edge.consumer], target):
            owned = (consumer.owned and readers == 1
                     and self.graph.nodes[edge.consumer].kept is None)
            return _Entry(source, consumer.scale, owned)
        scale_up = _ScaleUp(self._made(consumer), geometry, target, self.batch, self.device)
        self.scale_ups.append((edge.consumer, index, scale_up))
        return _Entry(scale_up, consumer.scale, True)

    def _made(self, entry: _Entry) -> _Padded:
        """The entry's mask buffer: a scale-up runs into a new one from the first use on."""
        scale_up = entry.mask
        if not isinstance(scale_up, _ScaleUp):
            return scale_up
        if scale_up.target is None:
            scale_up.target = self._padded(scale_up.target_hw)
            self.steps.append(scale_up.bind(scale_up.target.mask).run)
        return scale_up.target

    def _padded(self, size: Sequence[int]) -> _Padded:
        return _Padded(self.batch, size, self.margins, self.device)

    def run(self, gamma: Tensor | None) -> Tensor:
        """The mask from the filled map buffers; a fresh normalized tensor."""
        for step in self.steps:
            step()
        current = self.masks[0]
        if gamma is not None:
            current = torch.mul(current, gamma, out=self.final)
        return _normalize(current)

    def intermediate_masks(self) -> list[Tensor]:
        """The kept tensors' masks, shallow to deep (copies)."""
        return [self.masks[i].clone() for i in self.graph.kept]


def _normalize(mask: Tensor) -> Tensor:
    """Per-image min-max to [0, 1]; a constant mask becomes all zeros."""
    low = mask.amin(dim=(2, 3), keepdim=True)  # (torch.aminmax over a flattened dim is slower)
    span = mask.amax(dim=(2, 3), keepdim=True) - low
    scale = torch.where(span > 0, span.reciprocal(), 0.0)
    return (mask - low).mul_(scale)
