"""VisualBackProp (Bojarski et al.): which input pixels a CNN's prediction rests on, on any
network whose graph can be read (docs/design.md, "VisualBackProp on a chain" and
"VisualBackProp on any network").

The network is read once as a graph (:mod:`vbp_ros.explain.graph`, torch.fx): the kept tensors
(activation outputs, and a last convolution or pooling that feeds the head without one), the
spatial edges between them (convolutions, pooling, padding, crops) and the identity edges
(normalization, dropout, pointwise arithmetic, residual adds, concatenation). One ordinary
forward pass of the traced graph computes the output and, through a keeper call after each kept
tensor, writes the channel sum of its positive part into a buffer (the averaged map A times the
channel count). Then, from the deepest tensors to the input, each tensor's mask is A times the
sum over its consumers of their masks, scaled up along spatial edges by the all-ones one-channel
transposed convolution of the layer's own geometry to the tensor's exact size. The input's mask
is min-max normalized once per image.

On a chain this is the paper's algorithm step for step. The all-ones transposed convolution is
separable and a sum of strided shifts, evaluated by the steps of a plan made once per input shape
and device (:mod:`vbp_ros.explain.vbp_plan`). Channel counts are carried as exact per-mask
constants, so branches are summed with the true averages. Against float32 underflow a mask is
divided by its per-image maximum at tensors that every path from the deepest tensors to the input
passes (a per-image constant factor of the final mask, which the min-max removes); elsewhere a
division would change the branches' weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .base import Explainer
from .graph import ChainReader, GraphReader, Record, positive_channel_sum
from .mask_graph import MaskGraph, UnsupportedModelError
from .vbp_plan import Plan

__all__ = ['VisualBackProp', 'VBPExplanation', 'UnsupportedModelError']


LayerPictures = tuple[str, np.ndarray, np.ndarray]  # name, averaged map, intermediate mask


@dataclass(frozen=True)
class VBPExplanation:
    """Everything of one VisualBackProp pass, for inspection (paper Figure 2).

    Lists run over the kept tensors from the shallowest to the deepest; tensors are float32
    copies on the input's device, each of shape (B, 1, h, w) at that tensor's resolution.
    ``intermediate_masks`` are the masks M of the kept tensors, each divided by a positive
    per-image constant.
    """

    output: Tensor
    mask: Tensor
    layer_names: tuple[str, ...]
    averaged_maps: tuple[Tensor, ...]
    intermediate_masks: tuple[Tensor, ...]

    def pictures(self, index: int = 0) -> tuple[np.ndarray, list[LayerPictures]]:
        """Image ``index`` as 2-D float32 numpy arrays, for rendering: the mask, and per kept
        tensor its name, averaged map and intermediate mask."""
        def picture(tensor: Tensor) -> np.ndarray:
            return tensor[index, 0].float().cpu().numpy()

        return picture(self.mask), [
            (name, picture(averaged), picture(intermediate)) for name, averaged, intermediate
            in zip(self.layer_names, self.averaged_maps, self.intermediate_masks)]


class _Keeper:
    """What the keeper calls in the forward pass write to: plan buffers, or fresh sums."""

    def __init__(self, nonnegative: Sequence[bool]) -> None:
        self.nonnegative = list(nonnegative)
        self.targets: list[tuple[Tensor, Tensor | None]] | None = None
        self.fresh: dict[int, Tensor] = {}

    def keep(self, tensor: Tensor, index: int) -> None:
        """Channel sum of the positive part of kept tensor ``index``."""
        targets = self.targets
        if targets is None:
            self.fresh[index] = positive_channel_sum(tensor, self.nonnegative[index])
            return
        buffer, scratch = targets[index]
        source = tensor.detach() if tensor.requires_grad else tensor
        if scratch is not None:
            source = torch.clamp_min(source, 0, out=scratch)
        torch.sum(source, dim=1, keepdim=True, dtype=torch.float32, out=buffer)


class _Reading:
    """A network read one way (graph or named chain), with its plans by input shape."""

    graph: MaskGraph | None = None
    keeper: _Keeper

    def __init__(self) -> None:
        self.plans: dict[tuple, Plan] = {}

    def forward(self, x: Tensor) -> tuple[Tensor, Plan]:
        """One forward pass; the plan of ``x``'s shape with its map buffers filled."""
        plan = self.plans.get(_plan_key(x))
        if plan is not None:
            self.keeper.targets = plan.keep_targets
            try:
                output = self.run(x)
            finally:
                self.keeper.targets = None
            return output, plan
        output, graph, record, maps = self.first_pass(x)
        with torch.inference_mode(False):
            plan = Plan(graph, record, x.shape[0], x.device)
            for buffer, values in zip(plan.maps, maps):
                buffer.copy_(values)
        record.sums.clear()  # the plan keeps the shapes; these sums are in its maps now
        self.plans[_plan_key(x)] = plan
        return output, plan

    def run(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def first_pass(self, x: Tensor) -> tuple[Tensor, MaskGraph, Record, list[Tensor]]:
        """The first pass of an input shape: the output, the graph read at that shape, the
        record and the kept tensors' channel sums."""
        raise NotImplementedError

    def close(self) -> None:
        self.plans.clear()


class _GraphReading(_Reading):
    """The torch.fx graph of the model, with keeper calls after the kept tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.reader = GraphReader(model)

    def run(self, x: Tensor) -> Tensor:
        return self.reader.module.forward(x)  # the traced GraphModule has no hooks of its own

    def first_pass(self, x: Tensor) -> tuple[Tensor, MaskGraph, Record, list[Tensor]]:
        if self.graph is None:
            output, record = self.reader.record(x, candidates=True)
            self.graph = self.reader.read(record)
            kept = self.reader.kept_nodes
            self.keeper = _Keeper([node.kept.nonnegative for node in self.graph.kept_tensors])
            self.reader.insert_calls(kept, self.keeper.keep)
            return output, self.graph, record, [record.sums[node] for node in kept]
        output, record = self.reader.record(x, candidates=False)
        graph = self.reader.read(record)
        if [n.key for n in graph.kept_tensors] != [n.key for n in self.graph.kept_tensors]:
            raise UnsupportedModelError(
                f'the network keeps other tensors at input shape {tuple(x.shape)} than at the '
                'first call; use one VisualBackProp per input shape')
        return output, graph, record, self._take_fresh()

    def _take_fresh(self) -> list[Tensor]:
        fresh, self.keeper.fresh = self.keeper.fresh, {}
        return [fresh[i] for i in range(len(self.graph.kept))]


class _ChainReading(_Reading):
    """Named layers read as a chain, with forward hooks on them."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.reader = ChainReader(model, layers)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.calls = 0
        self.labels: list[str] = []

    def run(self, x: Tensor) -> Tensor:
        self.calls = 0
        output = self.model(x)
        if self.calls != len(self.graph.kept):
            raise UnsupportedModelError(
                f'the named layers were called {self.calls} times in this forward pass, '
                f'{len(self.graph.kept)} times in the first: the chain is not fixed')
        return output

    def first_pass(self, x: Tensor) -> tuple[Tensor, MaskGraph, Record, list[Tensor]]:
        output, record, events = self.reader.record(lambda: self.model(x), x.shape)
        labels = [label for label, _, _ in events]
        if self.graph is not None and labels != self.labels:
            raise UnsupportedModelError(
                'the layers called differ from the first forward pass: the chain is not fixed')
        graph = self.reader.read(record, events)
        if self.graph is None:
            self.graph, self.labels = graph, labels
            self.keeper = _Keeper([node.kept.nonnegative for node in graph.kept_tensors])
            self.handles = [module.register_forward_hook(self._keep)
                            for module in self.reader.layers]
        return output, graph, record, [record.sums[node.key] for node in graph.kept_tensors]

    def _keep(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if self.keeper.targets is not None:
            if self.calls < len(self.keeper.targets):
                self.keeper.keep(output, self.calls)
            self.calls += 1

    def close(self) -> None:
        super().close()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class VisualBackProp(Explainer):
    """VisualBackProp masks from the same forward pass that gives the network's output.

    >>> vbp = VisualBackProp(model)
    >>> output, mask = vbp(x)      # mask: (B, 1, H, W) float32 in [0, 1] on x's device
    >>> vbp.remove()               # or use ``with VisualBackProp(model) as vbp:``

    The network is read as a torch.fx graph on the first call (an ordinary forward pass) and the
    rule of docs/design.md, "VisualBackProp on any network" applied: activation outputs (ReLU, ELU,
    ReLU6, SiLU, ..., modules or functional) are kept, convolutions, pooling, padding and crops
    scale masks up, residual adds and concatenations sum them. Layers after the feature part
    (flatten, fully connected, global pooling: the head) do not take part. A network the graph
    reader cannot follow raises :class:`UnsupportedModelError` naming the node and how to proceed.

    The traced graph shares the model's modules and parameters: later weight changes apply, but
    hooks on the model itself (not on its submodules) are not called, and a model changed in
    structure needs a new VisualBackProp. Switching between ``train()`` and ``eval()`` reads the
    graph again (forward code may depend on ``self.training``).

    Args:
        model: the network; called as ``model(x)`` with one (B, C, H, W) tensor.
        input_factor: multiply the mask by the input intensity (channel mean of ``x``), the
            gamma(X) factor of the paper's Theorem 1. Off by default, as in the authors' code.
        layers: names of the modules whose outputs to keep (``model.named_modules()`` names),
            for networks the graph reader cannot follow. They are read as a chain with forward
            hooks: each kept output's mask is scaled up to the previous one through the
            convolution and pooling modules called in between (in call order), which must
            account for every change of the map size.
    """

    def __init__(self, model: nn.Module, *, input_factor: bool = False,
                 layers: Sequence[str] | None = None) -> None:
        self.model = model
        self.input_factor = input_factor
        self._layers = tuple(layers) if layers is not None else None
        self._readings: dict[bool, _Reading] = {}
        self._removed = False
        self._last: Plan | None = None

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the kept layers, shallow to deep (after a call): for an activation the
        convolution or pooling that feeds it, where one does directly; else its own name."""
        graph = self.graph
        return tuple(graph.nodes[i].kept.layer for i in graph.kept) if graph else ()

    @property
    def graph(self) -> MaskGraph | None:
        """The tensors with masks and their edges, as read on the first call (None before)."""
        reading = self._readings.get(self._mode())
        return reading.graph if reading is not None else None

    @property
    def _plans(self) -> dict[tuple, Plan]:
        """Every plan, by (input shape, device) (for tests and diagnostics)."""
        return {key: plan for reading in self._readings.values()
                for key, plan in reading.plans.items()}

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Run the model once; return its output and the (B, 1, H, W) float32 mask."""
        output, plan = self._forward(x)
        return output, self._mask(plan, x)

    def explain(self, x: Tensor) -> VBPExplanation:
        """Like calling the object, and also return the averaged maps and intermediate masks."""
        output, plan = self._forward(x)
        nodes = plan.graph.nodes
        maps = tuple(m / nodes[i].kept.channels for m, i in zip(plan.maps, plan.graph.kept))
        mask = self._mask(plan, x)
        return VBPExplanation(output, mask, self.layer_names, maps,
                              tuple(plan.intermediate_masks()))

    def describe(self) -> str:
        """The plan of the last call: kept tensors, scale-up steps, merges and the head."""
        if self._last is None:
            raise RuntimeError('call VisualBackProp on an input first')
        return self._last.graph.describe()

    def remove(self) -> None:
        """Detach every hook from the model and drop the plans; the object can no longer be
        called."""
        for reading in self._readings.values():
            reading.close()
        self._readings.clear()
        self._removed = True

    def _mode(self) -> bool:
        return self._layers is None and self.model.training

    def _forward(self, x: Tensor) -> tuple[Tensor, Plan]:
        if self._removed:
            raise RuntimeError('VisualBackProp was removed; create a new VisualBackProp')
        reading = self._readings.get(self._mode())
        if reading is None:
            reading = (_ChainReading(self.model, self._layers) if self._layers is not None
                       else _GraphReading(self.model))
            self._readings[self._mode()] = reading
        output, self._last = reading.forward(x)
        return output, self._last

    def _mask(self, plan: Plan, x: Tensor) -> Tensor:
        # no autograd here: plan buffers never require gradients, keepers detach
        gamma = positive_channel_sum(x, nonnegative=True) if self.input_factor else None
        return plan.run(gamma)


def _plan_key(x: Tensor) -> tuple:
    return tuple(x.shape), x.device
