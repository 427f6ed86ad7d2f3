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

Two readers recognise each layer's rule kind and give the tensors to the
:class:`~vbp_ros.explain.mask_graph.MaskGraphBuilder`, whose :class:`MaskGraph` (the tensors with
a mask, the edges between them, the narrow points) is the one the ONNX reader makes too; from it
:mod:`vbp_ros.explain.vbp` builds its per-shape plans:

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

from .geometry import Geometry
from .mask_graph import Activation, MaskGraph, MaskGraphBuilder, Spatial
from .rules import Call, Refuse, Rule, UnsupportedModelError, rule_for

__all__ = ['Record', 'GraphReader', 'ChainReader', 'leaf_modules', 'positive_channel_sum',
           'HOW_TO_PROCEED']

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

    def chw(self, key: Any) -> tuple[int, int, int]:
        """(channels, height, width) of a recorded tensor (of the first part of a tuple)."""
        shape = self.shapes[key]
        shape = shape if isinstance(shape, torch.Size) else shape[0]
        return tuple(shape[1:])


def _where(stack_trace: str | None) -> str:
    """' at file.py:12' from an fx node's stack trace (the innermost user frame)."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', stack_trace or '')
    frames = [f for f in frames if not f[0].startswith(_TORCH_DIR)]
    return f' at {Path(frames[-1][0]).name}:{frames[-1][1]}' if frames else ''


class GraphReader:
    """The any-network rule read from ``model``'s torch.fx graph.

    ``module`` is the traced GraphModule (it shares ``model``'s submodules and parameters);
    :meth:`record` runs it once, recording shapes; :meth:`read` builds the :class:`MaskGraph`
    of that input shape from the record (``kept_nodes`` are then the kept tensors' nodes);
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
        """The tensors with masks, their edges and the head, from one pass's record;
        ``kept_nodes`` are then the kept tensors' nodes."""
        nodes = list(self.module.graph.nodes)
        source = next((n for n in nodes if n.op == 'placeholder'), None)
        if source is None or len(record.shapes.get(source, ())) != 4:
            raise UnsupportedModelError('the network input must be one (B, C, H, W) tensor')
        builder = MaskGraphBuilder(source, 'input', record.chw(source))
        for node in nodes:
            if node is source or node.op in ('placeholder', 'get_attr'):
                continue
            inputs = [n for n in node.all_input_nodes if n in builder]
            if not inputs or node not in record.shapes and node.op != 'output':
                continue  # not fed by the feature part, or metadata (x.size(), x.dim())
            label = op_label(node, self.module)
            if node.op == 'output':
                builder.add_head(self.names[node], label, inputs)
                continue
            decision = self._decide(node, record)
            if decision.kind == 'head':
                builder.add_head(self.names[node], label, inputs)
                continue
            self._check_operands(node, decision, inputs, record)
            geometry = (decision.geometry(self._call(node, record))
                        if decision.kind == 'spatial' else None)
            builder.add(node, self.names[node], label, record.chw(node), decision,
                        [(operand, self.names[node], geometry) for operand in inputs])
        graph = builder.build(
            'no activation, convolution or pooling between the input and the head '
            f"({', '.join(name for name, _, _ in builder.heads)}): there is nothing to explain")
        self.kept_nodes = [node.key for node in graph.kept_tensors]
        return graph

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
    in_torch = owner == 'torch' or owner.startswith('torch.')
    return f'torch.{name}' if in_torch else f'{owner}.{name}'.strip('.')


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
        """The chain's :class:`MaskGraph` from one pass."""
        kept_events = [i for i, (_, _, kept) in enumerate(events) if kept]
        never = set(self.layers.values()) - {events[i][0].split('#')[0] for i in kept_events}
        if never:
            raise UnsupportedModelError(f'named layers {sorted(never)} were not called in the '
                                        'forward pass')
        builder = MaskGraphBuilder('input', 'input', record.chw('input'))
        previous_event = -1
        for event in kept_events:
            name, module, _ = events[event]
            between = [i for i in range(previous_event + 1, event)
                       if not events[i][2] and _is_spatial(events[i][1])]
            if _is_spatial(module):
                between.append(event)
            self._link(builder, previous_event, between, event, record, events)
            previous_event = event
        builder.add_head('after the last named layer', '', [previous_event])
        return builder.build('no named layer is called')

    def _link(self, builder: MaskGraphBuilder, previous: int, spatial: list[int], event: int,
              record: Record, events: list[tuple]) -> None:
        """Tensors from the kept tensor of event ``previous`` (-1: the input) through the
        ``spatial`` events up to the kept tensor of ``event``: the input of each spatial event
        after the first, then the kept tensor."""
        current = size_key = 'input' if previous == -1 else previous
        pending: tuple[str, Geometry | None] = (events[event][0], None)  # the edge into the next
        for step in spatial:
            self._check_size(events, record, size_key, step, (step, 'in'))
            if pending[1] is not None:
                builder.add((step, 'in'), f'input of {events[step][0]}', 'tensor',
                            record.chw((step, 'in')), Spatial(), [(current, *pending)])
                current = (step, 'in')
            pending = (events[step][0], _module_geometry(events[step][1]))
            size_key = step
        if not spatial or spatial[-1] != event:
            self._check_size(events, record, size_key, event, event)
        name, module, _ = events[event]
        builder.add(event, name, type(module).__name__, record.chw(event),
                    Activation(getattr(rule_for(module), 'nonnegative', False)),
                    [(current, *pending)], layer=name)

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


def _module_geometry(module: nn.Module) -> Geometry:
    return rule_for(module).geometry(Call(module, (), {}))
