"""Reading a network as the graph of tensors that VisualBackProp's rule needs.

The rule: docs/design.md, "VisualBackProp on any network".

Why torch.fx: module hooks see only module calls, so ``F.relu``, ``x + identity`` and
``torch.cat`` are invisible to them, and they cannot tell a residual branch from a chain.
``torch.fx.symbolic_trace`` reads ``forward()`` as Python runs it, functional calls and
arithmetic included, without running the network; the traced ``GraphModule`` shares the model's
own submodules and parameters, so running it is an ordinary forward pass of the same weights, and
a keeper call inserted after each kept tensor fills the averaged maps during that one pass.
``torch.export`` would trace deeper (into the ATen operators of every layer, with its own
parameter copies), and an ONNX export would need a second runtime: both lose the module structure
the messages and ``vbp-inspect`` refer to. What fx cannot read (data-dependent control flow) is
refused with the line of code; such networks can name their layers instead
(:class:`ChainReader`).

Two readers produce the same :class:`MaskGraph` (the tensors with a mask and the edges between
them), from which :mod:`vbp_ros.explain.vbp` builds its per-shape plans:

* :class:`GraphReader`: the whole rule from the fx graph.
* :class:`ChainReader`: ``layers=[...]`` named by the user, read as a chain with module hooks:
  each kept layer's mask is scaled up to the next-shallower one through the convolution and
  pooling modules called between them.
"""

from __future__ import annotations

import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.fx as fx
from torch import Tensor, nn

from .rules import Call, Geometry, Refuse, Rule, UnsupportedModelError, rule_for

__all__ = ['MaskGraph', 'FlowNode', 'Edge', 'KeptTensor', 'Record', 'GraphReader',
           'ChainReader', 'leaf_modules', 'positive_channel_sum', 'HOW_TO_PROCEED']

HOW_TO_PROCEED = ('add a rule for it to vbp_ros.explain.rules.RULES, or name the layers whose '
                  'outputs to keep: VisualBackProp(model, layers=[...]) (read as a chain)')
_TORCH_DIR = str(Path(torch.__file__).parent)


def positive_channel_sum(t: Tensor, nonnegative: bool = False) -> Tensor:
    """Sum over channels of max(t, 0), float32, (B, 1, H, W): the averaged map times C."""
    t = t.detach()
    if not nonnegative:
        t = t.clamp_min(0)
    return t.sum(dim=1, keepdim=True, dtype=torch.float32)


def leaf_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Modules without children, with their qualified names."""
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            yield name or type(module).__name__, module


@dataclass(frozen=True)
class KeptTensor:
    """A tensor whose averaged map takes part: an activation output (or the last convolution
    or pooling before the head). ``layer`` is the convolution or pooling it belongs to when one
    feeds it directly, else its own name."""

    name: str
    layer: str
    op: str
    channels: int
    nonnegative: bool


@dataclass(frozen=True)
class Edge:
    """Masks flow from ``consumer`` (a flow-node index) to the tensor it reads.

    ``geometry`` gives the windows of the spatial layer for one :class:`Record`; None for an
    identity edge. ``layer`` names the layer of the edge.
    """

    consumer: int
    layer: str
    geometry: Callable[[Record], Geometry] | None = None


@dataclass
class FlowNode:
    """A tensor that has a mask. ``key`` finds its shape in a :class:`Record`."""

    key: Any
    name: str
    op: str
    kept: KeptTensor | None = None
    edges: list[Edge] = field(default_factory=list)


@dataclass
class MaskGraph:
    """The tensors with a mask, input first, then in execution order; and the head.

    ``head`` lists, for each layer where the feature part ends, its name and the tensors it
    reads; ``cut`` marks tensors every path from the deepest kept tensors to the input passes
    (where masks may be rescaled against underflow without changing their sums).
    """

    nodes: list[FlowNode]
    head: list[tuple[str, list[str]]]
    cut: list[bool] = field(default_factory=list)
    kept_below: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cut, self.kept_below = _cut_nodes(self.nodes), _kept_below(self.nodes)

    @property
    def kept(self) -> list[int]:
        """Flow indices of the kept tensors, shallow to deep."""
        return [i for i, node in enumerate(self.nodes) if node.kept is not None]


def _cut_nodes(nodes: Sequence[FlowNode]) -> list[bool]:
    """Whether every path from a deepest kept tensor to the input passes the node (path counts;
    Python integers, so exact for any depth)."""
    from_sources = [0] * len(nodes)
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        from_sources[index] = (sum(from_sources[e.consumer] for e in node.edges)
                               or int(node.kept is not None))
    to_input = [0] * len(nodes)
    to_input[0] = 1
    for index, node in enumerate(nodes):
        for edge in node.edges:
            to_input[edge.consumer] += to_input[index]
    total = from_sources[0]
    return [from_sources[i] * to_input[i] == total for i in range(len(nodes))]


def _kept_below(nodes: Sequence[FlowNode]) -> list[bool]:
    """Whether a kept tensor lies between the node and the input (its mask meets a product)."""
    below = [False] * len(nodes)
    for index, node in enumerate(nodes):
        for edge in node.edges:
            below[edge.consumer] |= below[index] or node.kept is not None
    return below


@dataclass
class Record:
    """What one forward pass showed: tensor shapes (a tuple of shapes for tuple outputs), dtypes
    and the other values (ints, sizes) by key, and float32 positive channel sums of kept
    candidates."""

    shapes: dict = field(default_factory=dict)
    dtypes: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    sums: dict = field(default_factory=dict)

    def size(self, key: Any) -> tuple[int, int]:
        """(height, width) of a recorded tensor (of the first part of a tuple)."""
        shape = self.shapes[key]
        shape = shape if isinstance(shape, torch.Size) else shape[0]
        return tuple(shape[2:])


def _where(stack_trace: str | None) -> str:
    """' at file.py:12' from an fx node's stack trace (the innermost user frame)."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', stack_trace or '')
    frames = [f for f in frames if not f[0].startswith(_TORCH_DIR)]
    return f' at {Path(frames[-1][0]).name}:{frames[-1][1]}' if frames else ''


class GraphReader:
    """The any-network rule read from ``model``'s torch.fx graph.

    ``module`` is the traced GraphModule (it shares ``model``'s submodules and parameters);
    :meth:`record` runs it once, recording shapes; :meth:`read` builds the :class:`MaskGraph`
    from the record of the first pass (``kept_nodes`` are then the kept tensors' nodes);
    :meth:`insert_calls` puts a call after chosen nodes (VisualBackProp's keepers).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        tracer = fx.Tracer()
        tracer.record_stack_traces = True
        try:
            graph = tracer.trace(model)
        except Exception as error:  # noqa: BLE001 - any failure to trace is a refusal
            raise UnsupportedModelError(
                f'torch.fx cannot read the network{_user_frame(error)}: {error}. Data-dependent '
                'control flow and Python calls on tensors cannot be followed; name the layers '
                'whose outputs to keep: VisualBackProp(model, layers=[...]) (read as a chain)'
            ) from None
        self.module = fx.GraphModule(tracer.root, graph)
        self.names = display_names(graph)
        self.kept_nodes: list[fx.Node] = []

    # -- running ---------------------------------------------------------------------------

    def record(self, x: Tensor, candidates: bool) -> tuple[Tensor, Record]:
        """Run the graph once on ``x``; record shapes, values and (``candidates``) the positive
        channel sums of every 4-D tensor."""
        recorder = _Recorder(self.module, candidates)
        output = recorder.run(x)
        return output, recorder.record

    def insert_calls(self, nodes: Sequence[fx.Node], function: Callable[[Tensor, int], None]
                     ) -> None:
        """After each of ``nodes``, a call ``function(tensor, position in nodes)``;
        recompiles the module."""
        graph = self.module.graph
        for index, node in enumerate(nodes):
            with graph.inserting_after(node):
                graph.call_function(function, (node, index))
        self.module.recompile()

    # -- reading -----------------------------------------------------------------------------

    def read(self, record: Record) -> MaskGraph:
        """The tensors with masks, their edges and the head, from the first pass's record."""
        nodes = list(self.module.graph.nodes)
        source = next((n for n in nodes if n.op == 'placeholder'), None)
        if source is None or len(record.shapes.get(source, ())) != 4:
            raise UnsupportedModelError('the network input must be one (B, C, H, W) tensor')
        decisions: dict[fx.Node, Rule] = {source: None}
        head: list[tuple[fx.Node, list[fx.Node]]] = []
        for node in nodes:
            if node is source or node.op in ('placeholder', 'get_attr'):
                continue
            inputs = [n for n in node.all_input_nodes if n in decisions]
            if not inputs or node not in record.shapes and node.op != 'output':
                continue  # not fed by the feature part, or metadata (x.size(), x.dim())
            if node.op == 'output':
                head.append((node, inputs))
                continue
            decision = self._decide(node, record)
            if decision.kind == 'head':
                head.append((node, inputs))
                continue
            self._check_operands(node, decision, inputs, record)
            decisions[node] = decision
        return self._mask_graph(source, decisions, head, record)

    def _decide(self, node: fx.Node, record: Record) -> Rule:
        target = (self.module.get_submodule(node.target) if node.op == 'call_module'
                  else node.target)
        rule = rule_for(target)
        if rule is None:
            raise self._refusal(node, 'reads a feature map and has no VisualBackProp rule')
        decision = rule.decide(self._call(node, record))
        if isinstance(decision, Refuse):
            raise self._refusal(node, f'{decision.reason} cannot be followed')
        return decision

    def _call(self, node: fx.Node, record: Record) -> Call:
        """The call as a rule sees it: tensors as shapes, other nodes as their values."""
        def value(arg: fx.Node) -> Any:
            return record.shapes[arg] if arg in record.shapes else record.values.get(arg)

        args = fx.node.map_arg(node.args, value)
        kwargs = fx.node.map_arg(node.kwargs, value)
        module = self.module.get_submodule(node.target) if node.op == 'call_module' else None
        inputs = [n for n in node.all_input_nodes if n in record.shapes]
        size = record.size(inputs[0]) if inputs else (0, 0)
        shape = record.shapes.get(node)
        ndim = len(shape) if isinstance(shape, torch.Size) else (
            len(shape[0]) if shape else 0)
        return Call(module, tuple(args), dict(kwargs), size, ndim)

    def _check_operands(self, node: fx.Node, decision: Rule, inputs: list[fx.Node],
                        record: Record) -> None:
        shape = record.shapes[node]
        parts = [shape] if isinstance(shape, torch.Size) else list(shape)
        if any(len(part) != 4 for part in parts):
            raise self._refusal(node, f'turns a feature map into shape {tuple(parts[0])}')
        if decision.kind in ('spatial', 'activation'):
            data = node.all_input_nodes[0]
            if inputs != [data]:
                raise self._refusal(node, 'reads more than one feature map')
            return
        for operand in inputs:
            if record.size(operand) != tuple(parts[0][2:]):
                raise self._refusal(
                    node, f'combines maps of sizes {record.size(operand)} '
                    f"('{self.names[operand]}') and {tuple(parts[0][2:])}; only maps of one "
                    'size can be combined')

    def _refusal(self, node: fx.Node, reason: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"node '{self.names[node]}' ({op_label(node, self.module)}){_where(node.stack_trace)}"
            f' {reason}; {HOW_TO_PROCEED}')

    def _mask_graph(self, source: fx.Node, decisions: dict[fx.Node, Rule],
                    head: list[tuple[fx.Node, list[fx.Node]]], record: Record) -> MaskGraph:
        order = {node: i for i, node in enumerate(self.module.graph.nodes)}
        reaching = self._reaching_head(decisions, head)
        kept = {n for n in reaching if getattr(decisions[n], 'kind', '') == 'activation'}
        kept |= self._last_spatial_before_head(decisions, head, kept)
        users = {n: [u for u in n.users if u in reaching] for n in reaching}
        has_mask: dict[fx.Node, bool] = {}
        for node in sorted(reaching, key=order.get, reverse=True):
            has_mask[node] = node in kept or any(has_mask[u] for u in users[node])
        flow_nodes = sorted((n for n in reaching if has_mask[n]), key=order.get)
        if not flow_nodes or flow_nodes[0] is not source:
            raise UnsupportedModelError(
                'no activation, convolution or pooling between the input and the head '
                f"({', '.join(self.names[h] for h, _ in head)}): there is nothing to explain")
        index = {node: i for i, node in enumerate(flow_nodes)}
        result = []
        for node in flow_nodes:
            flow = FlowNode(node, self.names[node], 'input' if node is source else
                            op_label(node, self.module),
                            self._kept_tensor(node, decisions, record) if node in kept else None)
            for user in users[node]:
                if has_mask[user]:
                    flow.edges.append(self._edge(user, index[user], decisions[user]))
            result.append(flow)
        self.kept_nodes = [n for n in flow_nodes if n in kept]
        head_report = [(self.names[h] + f' ({op_label(h, self.module)})',
                        [self.names[i] for i in inputs if i in reaching])
                       for h, inputs in head]
        return MaskGraph(result, head_report)

    def _reaching_head(self, decisions: dict, head: list) -> set[fx.Node]:
        """Feature tensors from which a head is reached (dead branches take no part)."""
        reaching: set[fx.Node] = set()
        stack = [n for _, inputs in head for n in inputs]
        while stack:
            node = stack.pop()
            if node not in reaching:
                reaching.add(node)
                stack += [n for n in node.all_input_nodes if n in decisions]
        return reaching

    def _last_spatial_before_head(self, decisions: dict, head: list, kept: set) -> set:
        """Convolutions or pooling layers that feed the head with no activation after them."""
        found, stack, seen = set(), [n for _, inputs in head for n in inputs], set()
        while stack:
            node = stack.pop()
            if node in seen or node in kept or decisions[node] is None:
                continue
            seen.add(node)
            if decisions[node].kind == 'spatial':
                found.add(node)
            else:
                stack += [n for n in node.all_input_nodes if n in decisions]
        return found

    def _kept_tensor(self, node: fx.Node, decisions: dict, record: Record) -> KeptTensor:
        decision = decisions[node]
        return KeptTensor(self.names[node], self.names[self._layer_of(node, decisions)],
                          op_label(node, self.module), int(record.shapes[node][1]),
                          getattr(decision, 'nonnegative', False))

    @staticmethod
    def _layer_of(node: fx.Node, decisions: dict) -> fx.Node:
        """The convolution or pooling that feeds an activation through identity steps only
        (normalization, dropout), else the node itself."""
        layer = node
        while layer is node and decisions[node].kind == 'activation' or (
                decisions[layer].kind == 'identity'):
            feeding = [n for n in layer.all_input_nodes if n in decisions]
            if len(feeding) != 1 or decisions[feeding[0]] is None:
                return node
            layer = feeding[0]
        return layer if decisions[layer].kind == 'spatial' else node

    def _edge(self, user: fx.Node, consumer: int, decision: Rule) -> Edge:
        if decision.kind != 'spatial':
            return Edge(consumer, self.names[user])

        def geometry(record: Record) -> Geometry:
            call = self._call(user, record)
            return self._decide(user, record).geometry(call)
        return Edge(consumer, self.names[user], geometry)


class _Recorder(fx.Interpreter):
    """Runs a GraphModule node by node, recording what :class:`Record` holds."""

    def __init__(self, module: fx.GraphModule, candidates: bool) -> None:
        super().__init__(module)
        self.record = Record()
        self.candidates = candidates

    def run_node(self, node: fx.Node) -> Any:
        result = super().run_node(node)
        if isinstance(result, Tensor):
            self.record.shapes[node] = result.shape
            self.record.dtypes[node] = result.dtype
            if self.candidates and result.dim() == 4 and result.is_floating_point():
                self.record.sums[node] = positive_channel_sum(result)
        elif (isinstance(result, (tuple, list)) and result
              and all(isinstance(r, Tensor) for r in result)):
            self.record.shapes[node] = tuple(r.shape for r in result)
        else:
            self.record.values[node] = result
        return result


def _user_frame(error: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(_TORCH_DIR) and f.filename != __file__]
    if not frames:
        return ''
    frame = frames[-1]
    return f' at {Path(frame.filename).name}:{frame.lineno} in {frame.name}() `{frame.line}`'


def display_names(graph: fx.Graph) -> dict[fx.Node, str]:
    """Module calls by qualified name ('layer1.0.relu', a second call 'layer1.0.relu#2'),
    other nodes by their fx name within their module ('layer1.0.add'), the input 'input'."""
    calls: Counter = Counter()
    names = {}
    for node in graph.nodes:
        if node.op == 'placeholder':
            names[node] = 'input'
        elif node.op == 'call_module':
            calls[node.target] += 1
            count = calls[node.target]
            names[node] = node.target + (f'#{count}' if count > 1 else '')
        else:
            stack = node.meta.get('nn_module_stack') or {}
            scope = next(reversed(stack.values()))[0] if stack else ''
            names[node] = f'{scope}.{node.name}' if scope else node.name
    return names


def op_label(node: fx.Node, module: fx.GraphModule) -> str:
    if node.op == 'call_module':
        return type(module.get_submodule(node.target)).__name__
    if node.op == 'call_method':
        return f'.{node.target}()'
    if node.op == 'output':
        return 'output'
    target = node.target
    owner = getattr(target, '__module__', None) or ''
    name = getattr(target, '__name__', str(target))
    if owner.startswith('torch.nn.functional') or owner == 'torch._C._nn':
        return f'F.{name}'
    if owner in ('_operator', 'operator'):
        return f'operator.{name}'
    return f'torch.{name}' if owner.startswith('torch') else f'{owner}.{name}'.strip('.')


# -- named layers, read as a chain ---------------------------------------------------------------

class ChainReader:
    """``layers`` (qualified module names) kept, read as a chain with forward hooks.

    The kept tensors are the outputs of the named modules, one per call, in call order. Between
    two consecutive ones (and between the input and the first) the mask is scaled up through the
    convolution and pooling modules called between them, in reverse call order; anything else
    between them must keep the map size, which is checked against the recorded sizes.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise UnsupportedModelError(
                f'no layer named {", ".join(map(repr, missing))} in the model; named layers '
                f'are: {", ".join(name for name in modules if name)}')
        self.layers = {modules[name]: name for name in layers}

    def record(self, run: Callable[[], Tensor], x_shape: torch.Size
               ) -> tuple[Tensor, Record, list[tuple]]:
        """Run the network once (``run()``) with its convolution, pooling and named modules
        recorded; returns the output, the record (keys: event numbers, (number, 'in') for an
        event's input, 'input') and the events (label, module, is kept), in call order."""
        events: list[tuple[str, nn.Module, bool]] = []
        record = Record(shapes={'input': x_shape})
        calls: Counter = Counter()

        def hook(name: str) -> Callable:
            def recorded(module: nn.Module, args: tuple, output: Any) -> None:
                kept = module in self.layers
                if not (kept or _is_spatial(module)):
                    return
                if not isinstance(output, Tensor) or output.dim() != 4:
                    raise UnsupportedModelError(
                        f"layer '{name}' ({type(module).__name__}) does not give a (B, C, H, W)"
                        ' feature map')
                calls[name] += 1
                key = len(events)
                record.shapes[key] = output.shape
                record.dtypes[key] = output.dtype
                record.shapes[(key, 'in')] = args[0].shape if args else output.shape
                if kept:
                    record.sums[key] = positive_channel_sum(output)
                label = name + (f'#{calls[name]}' if calls[name] > 1 else '')
                events.append((label, module, kept))
            return recorded

        named = {module: name for name, module in self.model.named_modules()}
        handles = [module.register_forward_hook(hook(named[module]))
                   for module in {m for _, m in leaf_modules(self.model)} | set(self.layers)]
        try:
            output = run()
        finally:
            for handle in handles:
                handle.remove()
        return output, record, events

    def read(self, record: Record, events: list[tuple]) -> MaskGraph:
        """The chain's :class:`MaskGraph` from the first pass."""
        kept_events = [i for i, (_, _, kept) in enumerate(events) if kept]
        never = set(self.layers.values()) - {events[i][0].split('#')[0] for i in kept_events}
        if never:
            raise UnsupportedModelError(f'named layers {sorted(never)} were not called in the '
                                        'forward pass')
        nodes = [FlowNode('input', 'input', 'input')]
        previous, previous_event = 0, -1
        for event in kept_events:
            name, module, _ = events[event]
            between = [i for i in range(previous_event + 1, event)
                       if not events[i][2] and _is_spatial(events[i][1])]
            if _is_spatial(module):
                between.append(event)
            previous = self._link(nodes, previous, previous_event, between, event, record,
                                  events)
            nodes[previous].kept = KeptTensor(
                name, name, type(module).__name__, int(record.shapes[event][1]),
                getattr(rule_for(module), 'nonnegative', False))
            previous_event = event
        return MaskGraph(nodes, [('after the last named layer', [events[previous_event][0]])])

    def _link(self, nodes: list[FlowNode], previous: int, previous_key: Any, spatial: list[int],
              event: int, record: Record, events: list[tuple]) -> int:
        """Flow nodes from tensor ``previous`` through the ``spatial`` events up to the kept
        tensor of ``event``; returns the kept tensor's flow index."""
        current, current_key = previous, 'input' if previous_key == -1 else previous_key
        pending: Edge | None = None  # the edge into the next tensor, once it exists
        for step in spatial:
            self._check_size(events, record, current_key, step, (step, 'in'))
            if pending is not None:
                nodes.append(FlowNode((step, 'in'), f'input of {events[step][0]}', 'tensor'))
                nodes[current].edges.append(Edge(len(nodes) - 1, pending.layer, pending.geometry))
                current = len(nodes) - 1
            pending = Edge(-1, events[step][0], _module_geometry(events[step][1]))
            current_key = step
        if not spatial or spatial[-1] != event:
            self._check_size(events, record, current_key, event, event)
        nodes.append(FlowNode(event, events[event][0], type(events[event][1]).__name__))
        nodes[current].edges.append(Edge(len(nodes) - 1, events[event][0]) if pending is None
                                    else Edge(len(nodes) - 1, pending.layer, pending.geometry))
        return len(nodes) - 1

    @staticmethod
    def _check_size(events: list, record: Record, key: Any, event: int, reads: Any) -> None:
        got, expected = record.size(key), record.size(reads)
        if got != expected:
            source = 'the input' if key == 'input' else f"'{events[key][0]}'"
            raise UnsupportedModelError(
                f"the named layers do not form a chain: {source} gives maps of size {got}, but "
                f"'{events[event][0]}' reads maps of size {expected}; a step hooks cannot see (a "
                'functional call, a branch) changes the size between them: name other layers')


def _is_spatial(module: nn.Module) -> bool:
    rule = rule_for(module)
    return rule is not None and rule.kind == 'spatial'


def _module_geometry(module: nn.Module) -> Callable[[Record], Geometry]:
    rule = rule_for(module)
    call = Call(module, (), {})
    return lambda record: rule.geometry(call)
