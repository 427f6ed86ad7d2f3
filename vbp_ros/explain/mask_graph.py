"""The mask graph: what VisualBackProp reads from a network, the same for PyTorch and ONNX.

The rule is that of docs/design.md, "VisualBackProp on any network". Both readers, the torch.fx
one (:mod:`vbp_ros.explain.graph`, its table :data:`vbp_ros.explain.rules.RULES` of layer types)
and the ONNX one (:mod:`vbp_ros.explain.onnx_read`, its table
:data:`vbp_ros.explain.onnx_vbp.RULES` of operator types), only *recognise* what each layer is;
they say it in the one vocabulary of rule kinds defined here and hand each tensor to a
:class:`MaskGraphBuilder`. What follows from the kinds lives here once:

* the kinds (:class:`Rule` and its subclasses, in the manner of captum's LRP rule classes):
  :class:`Activation` (a kept tensor, averaged as A(t) = mean over channels of max(t, 0)),
  :class:`Spatial` (an edge along which a mask is scaled up by the layer's all-ones one-channel
  transposed convolution, with its :class:`~vbp_ros.explain.geometry.Geometry`),
  :class:`Identity` (an edge that passes masks unchanged; :class:`Layout`, one that also
  changes the axis order), :class:`Head` (the feature part ends), :class:`Ignored` (reads only
  a shape), :class:`Gate` (a nonlinearity that only takes part inside a gated activation
  ``x * gate(x)``) and :class:`Refuse`;
* which tensors are kept (activation outputs, and a last convolution or pooling that feeds the
  head with no activation after it), which have a mask, and the *narrow points* where a mask may
  be divided by its per-image maximum against float32 underflow (:func:`narrow_points`);
* the plan text ``vbp-inspect`` prints (:meth:`MaskGraph.describe`) and the plan without names
  that two readings of one network must share (:meth:`MaskGraph.canonical`);
* :data:`TINY`, the smallest divisor either executor uses.

The executors consume a :class:`MaskGraph`: :mod:`vbp_ros.explain.vbp` (torch, strided in-place
additions) and :mod:`vbp_ros.explain.onnx_write` (ONNX nodes appended to the graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from .geometry import Geometry, hw

__all__ = ['TINY', 'UnsupportedModelError', 'Rule', 'Activation', 'Spatial', 'Identity',
           'Layout', 'Head', 'Ignored', 'Gate', 'Refuse', 'KeptTensor', 'Edge', 'MaskTensor',
           'HeadNode', 'MaskGraph', 'MaskGraphBuilder', 'narrow_points']

#: float32's smallest normal number: masks are never divided by less.
TINY = 2.0 ** -126


class UnsupportedModelError(ValueError):
    """The network has a part VisualBackProp cannot follow exactly; the message names it."""


# -- the rule kinds ------------------------------------------------------------------------------

class Rule:
    """Base of the rule kinds; a rule's :meth:`decide` gives the rule of one call."""

    kind = ''

    def decide(self, call: Any) -> Rule:
        """The rule of one call (the rule itself, unless it depends on the call)."""
        return self


@dataclass(frozen=True)
class Activation(Rule):
    """Its output is a kept tensor; ``nonnegative`` when the output is never below zero."""

    nonnegative: bool = False
    kind = 'activation'


@dataclass(frozen=True)
class Spatial(Rule):
    """A scale-up edge; ``geometry(call)`` gives the windows of one call (None where the reader
    reads them from the node itself)."""

    geometry: Callable[[Any], Geometry] | None = None
    kind = 'spatial'


@dataclass(frozen=True)
class Identity(Rule):
    """Masks pass unchanged (the operands must have the output's map size)."""

    kind = 'identity'


@dataclass(frozen=True)
class Layout(Identity):
    """An identity edge that changes the order of the axes (NCHW and NHWC)."""

    kind = 'layout'


@dataclass(frozen=True)
class Head(Rule):
    """The feature part ends here; what follows does not take part in the mask."""

    kind = 'head'


@dataclass(frozen=True)
class Ignored(Rule):
    """Reads only a tensor's shape; takes no part."""

    kind = 'ignored'


@dataclass(frozen=True)
class Gate(Rule):
    """A nonlinearity that takes part only as the gate of a gated activation x * gate(x)."""

    kind = 'gate'


@dataclass(frozen=True)
class Refuse(Rule):
    """The call cannot be followed, for ``reason``."""

    reason: str
    kind = 'refuse'


# -- the graph -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeptTensor:
    """A tensor whose averaged map takes part: an activation output (or the last convolution
    or pooling before the head). ``layer`` is the convolution or pooling it belongs to when one
    feeds it directly (through identity steps only), else its own name; ``op`` its operation."""

    name: str
    layer: str
    op: str
    channels: int
    nonnegative: bool


@dataclass(frozen=True)
class Edge:
    """Masks flow from ``consumer`` (an index into :attr:`MaskGraph.nodes`) to the tensor it
    reads, through the layer ``layer``; ``geometry`` None for an identity edge."""

    consumer: int
    layer: str
    geometry: Geometry | None = None


@dataclass
class MaskTensor:
    """A tensor that has a mask. ``key`` is the reader's handle (an fx node, an ONNX tensor
    name); ``shape`` its (channels, height, width); ``layout`` its axis order ('nchw' or
    'nhwc'). ``narrow``: every path from the deepest kept tensors to the input passes it;
    ``rescaled``: its mask is divided by its per-image maximum there (a narrow point, kept or
    merging several masks, whose mask meets another product on the way to the input)."""

    key: Hashable
    name: str
    op: str
    shape: tuple[int, int, int]
    kept: KeptTensor | None = None
    edges: list[Edge] = field(default_factory=list)
    layout: str = 'nchw'
    narrow: bool = False
    rescaled: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.shape[1], self.shape[2]


@dataclass(frozen=True)
class HeadNode:
    """A layer where the feature part ends, and the tensors with a mask it reads."""

    name: str
    op: str
    inputs: tuple[str, ...]


@dataclass
class MaskGraph:
    """The tensors with a mask, the input first, then in execution order; and the head."""

    nodes: list[MaskTensor]
    head: list[HeadNode]

    def __post_init__(self) -> None:
        for node, narrow, rescaled in zip(self.nodes, *narrow_points(self.nodes)):
            node.narrow, node.rescaled = narrow, rescaled

    @property
    def kept(self) -> list[int]:
        """Indices of the kept tensors, shallow to deep."""
        return [i for i, node in enumerate(self.nodes) if node.kept is not None]

    @property
    def kept_tensors(self) -> list[MaskTensor]:
        """The kept tensors, shallow to deep."""
        return [node for node in self.nodes if node.kept is not None]

    def scale_ups(self) -> list[tuple[MaskTensor, Edge]]:
        """The edges that change a mask, deep to shallow, each with the tensor it leads to."""
        return [(node, edge) for node in reversed(self.nodes) for edge in node.edges
                if edge.geometry is not None
                and edge.geometry.changes(self.nodes[edge.consumer].size, node.size)]

    def describe(self) -> str:
        """The plan in words (what ``vbp-inspect`` prints): input, kept tensors, scale-ups,
        merges, head."""
        first = self.nodes[0]
        notes = [note for note in (first.name, first.layout) if note not in ('input', 'nchw')]
        lines = [f'input {hw(first.shape)}' + (f' ({", ".join(notes)})' if notes else ''),
                 'kept tensors (shallow to deep):']
        for rank, node in enumerate(self.kept_tensors, start=1):
            kept = node.kept
            note = '' if kept.layer == kept.name else f', layer {kept.layer}'
            lines.append(f'  {rank:>2}. {kept.name} ({kept.op}{note}) {hw(node.shape)}'
                         + ('' if node.layout == 'nchw' else f' ({node.layout})')
                         + ('' if kept.nonnegative else ', positive part')
                         + (', rescaled' if node.rescaled else ''))
        lines.append('scale-up steps (deep to shallow):')
        for node, edge in self.scale_ups():
            source = self.nodes[edge.consumer].size
            lines.append(f'  {edge.layer}: {hw(source)} -> {hw(node.size)} into {node.name}, '
                         f'{edge.geometry.describe(source, node.size)}')
        merges = [node for node in self.nodes if len(node.edges) > 1]
        lines.append('branches merge (masks summed):' if merges
                     else 'branches merge: none (a chain)')
        for node in merges:
            lines.append(f'  {node.name} <- ' + ' + '.join(
                self.nodes[e.consumer].name + (' (scaled up)' if e.geometry else '')
                for e in node.edges))
        lines.append('head (not part of the mask):')
        for head in self.head:
            op = f' ({head.op})' if head.op else ''
            lines.append(f'  {head.name}{op} reads {", ".join(head.inputs)}')
        return '\n'.join(lines)

    def canonical(self) -> tuple:
        """The plan without names, for comparing two readings of one network: the input's
        shape, the kept tensors' shapes (whether nonnegative, rescaled), and each scale-up's
        source and target size and geometry, deep to shallow."""
        return (self.nodes[0].shape,
                tuple((node.shape, node.kept.nonnegative, node.rescaled)
                      for node in self.kept_tensors),
                tuple((self.nodes[edge.consumer].size, node.size, edge.geometry)
                      for node, edge in self.scale_ups()))


def narrow_points(nodes: Sequence[MaskTensor]) -> tuple[list[bool], list[bool]]:
    """Per tensor: whether every path from a deepest kept tensor to the input passes it (path
    counts; Python integers, so exact for any depth), and whether its mask is rescaled there:
    kept narrow points where a kept tensor lies between them and the input (after the last
    product the final min-max removes any per-image factor), and narrow points that merge
    several masks (an Inception block's output, which is no activation) where two do (one
    product more cannot leave float32: ResNet's pooled stem is left alone)."""
    from_sources = [0] * len(nodes)
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        from_sources[index] = (sum(from_sources[e.consumer] for e in node.edges)
                               or int(node.kept is not None))
    to_input = [0] * len(nodes)
    to_input[0] = 1
    kept_below = [False] * len(nodes)  # a kept tensor on a path to the input
    two_kept_below = [False] * len(nodes)  # two on one path
    for index, node in enumerate(nodes):
        kept = node.kept is not None
        for edge in node.edges:
            to_input[edge.consumer] += to_input[index]
            kept_below[edge.consumer] |= kept_below[index] or kept
            two_kept_below[edge.consumer] |= two_kept_below[index] or (kept and kept_below[index])
    narrow = [from_sources[i] * to_input[i] == from_sources[0] for i in range(len(nodes))]
    rescaled = [narrow[i] and (kept_below[i] if node.kept is not None else
                               len(node.edges) > 1 and two_kept_below[i])
                for i, node in enumerate(nodes)]
    return narrow, rescaled


# -- building ------------------------------------------------------------------------------------

@dataclass
class _Pending:
    """A feature tensor as a reader announced it, before the graph is pruned."""

    key: Hashable
    name: str
    op: str
    shape: tuple[int, int, int]
    rule: Rule | None
    sources: list[tuple[Hashable, str, Geometry | None]]
    layout: str
    layer: str | None


class MaskGraphBuilder:
    """Collects a reader's feature tensors in execution order and makes the :class:`MaskGraph`.

    A reader announces the input (:meth:`__init__`), then each feature tensor with the kind of
    the layer that made it (:class:`Activation`, :class:`Spatial` or :class:`Identity`) and the
    tensors it reads, each with the layer's geometry along that edge (:meth:`add`), and each
    head layer with the feature tensors it reads (:meth:`add_head`). :meth:`build` keeps
    what reaches the head: activation outputs, and a convolution or pooling that feeds the head
    with no activation after it; gives a mask to kept tensors and to those a mask flows back
    to; and drops the rest.
    """

    def __init__(self, key: Hashable, name: str, shape: tuple[int, int, int],
                 layout: str = 'nchw') -> None:
        self.tensors: dict[Hashable, _Pending] = {
            key: _Pending(key, name, 'input', tuple(shape), None, [], layout, None)}
        self.heads: list[tuple[str, str, list[Hashable]]] = []

    def __contains__(self, key: Hashable) -> bool:
        return key in self.tensors

    def add(self, key: Hashable, name: str, op: str, shape: tuple[int, int, int], rule: Rule,
            sources: Sequence[tuple[Hashable, str, Geometry | None]], layout: str = 'nchw',
            layer: str | None = None) -> None:
        """A feature tensor made by a layer of kind ``rule`` from ``sources``: (source key,
        layer name, geometry along the edge or None); ``layer``, if kept, names its layer
        (by default the convolution or pooling that feeds it)."""
        self.tensors[key] = _Pending(key, name, op, tuple(shape), rule, list(sources), layout,
                                     layer)

    def add_head(self, name: str, op: str, inputs: Sequence[Hashable]) -> None:
        """A layer where the feature part ends, reading the feature tensors ``inputs``."""
        self.heads.append((name, op, list(inputs)))

    def build(self, nothing_to_explain: str) -> MaskGraph:
        """The graph; ``nothing_to_explain`` is the message when no mask reaches the input."""
        reaching = self._reaching_head()
        kept = {k for k in reaching if self._kind(k) == 'activation'} | self._last_spatial()
        order = [k for k in self.tensors if k in reaching]
        users: dict[Hashable, dict[Hashable, None]] = {k: {} for k in order}
        for key in order:
            for source, _, _ in self.tensors[key].sources:
                users[source][key] = None
        has_mask: dict[Hashable, bool] = {}
        for key in reversed(order):
            has_mask[key] = key in kept or any(has_mask[u] for u in users[key])
        masked = [k for k in order if has_mask[k]]
        first = next(iter(self.tensors))
        if not masked or masked[0] != first:
            raise UnsupportedModelError(nothing_to_explain)
        index = {key: i for i, key in enumerate(masked)}
        nodes = []
        for key in masked:
            tensor = self.tensors[key]
            node = MaskTensor(key, tensor.name, tensor.op, tensor.shape,
                              self._kept(tensor) if key in kept else None,
                              layout=tensor.layout)
            node.edges = [edge for user in users[key] if has_mask[user]
                          for edge in self._edges_into(key, self.tensors[user], index[user])]
            nodes.append(node)
        head = [HeadNode(name, op, tuple(self.tensors[k].name for k in inputs if k in reaching))
                for name, op, inputs in self.heads]
        return MaskGraph(nodes, head)

    def _kind(self, key: Hashable) -> str:
        rule = self.tensors[key].rule
        return rule.kind if rule is not None else 'input'

    def _reaching_head(self) -> set[Hashable]:
        """Feature tensors from which a head is reached (dead branches take no part)."""
        reaching: set[Hashable] = set()
        stack = [k for _, _, inputs in self.heads for k in inputs]
        while stack:
            key = stack.pop()
            if key not in reaching:
                reaching.add(key)
                stack += [source for source, _, _ in self.tensors[key].sources]
        return reaching

    def _last_spatial(self) -> set[Hashable]:
        """Convolutions, pooling, pads or crops that feed the head with no activation after
        them, through identity edges only."""
        found: set[Hashable] = set()
        stack, seen = [k for _, _, inputs in self.heads for k in inputs], set()
        while stack:
            key = stack.pop()
            kind = self._kind(key)
            if key in seen or kind in ('activation', 'input'):
                continue
            seen.add(key)
            if kind == 'spatial':
                found.add(key)
            else:
                stack += [source for source, _, _ in self.tensors[key].sources]
        return found

    def _kept(self, tensor: _Pending) -> KeptTensor:
        rule = tensor.rule
        return KeptTensor(tensor.name, tensor.layer or self._layer_of(tensor), tensor.op,
                          tensor.shape[0], getattr(rule, 'nonnegative', False))

    def _layer_of(self, tensor: _Pending) -> str:
        """The convolution or pooling that feeds an activation through identity steps only
        (normalization, dropout), else the tensor's own name."""
        layer = tensor
        while layer is tensor and self._kind(layer.key) == 'activation' or (
                self._kind(layer.key) in ('identity', 'layout')):
            if len(layer.sources) != 1 or self._kind(layer.sources[0][0]) == 'input':
                return tensor.name
            layer = self.tensors[layer.sources[0][0]]
        return layer.sources[0][1] if self._kind(layer.key) == 'spatial' else tensor.name

    @staticmethod
    def _edges_into(source: Hashable, user: _Pending, consumer: int) -> list[Edge]:
        return [Edge(consumer, layer, geometry) for key, layer, geometry in user.sources
                if key == source]
