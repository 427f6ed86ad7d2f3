"""ONNX graphs exported with a fixed batch size, rewritten at load to take any batch.

Exporters write the batch size of their example input into the graph unless told otherwise:
``torch.onnx.export`` without ``dynamic_axes`` fixes 1, and a PyTorch 1.9 export that was given
a validation batch fixes 64. vbp_ros runs one frame per camera at a time, so such a graph is
rewritten: the batch dimension of its inputs and outputs becomes the symbol :data:`BATCH`, and
a Reshape whose constant shape repeats the batch size (``x.view(x.size(0), -1)`` after constant
folding) gets its output's shape with -1 for the batch instead. ONNX shape inference then checks
that every output follows the input's batch. A graph that still fixes it elsewhere (a Tile, an
Expand, a constant of that batch) is refused with what to re-export; a batch of 1 that cannot
be freed runs as it is, one frame at a time.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..explain.onnx_graph import OnnxGraph, add_initializer
from .checkpoint import CheckpointError

__all__ = ['BATCH', 'fixed_batch', 'free_batch', 'free_batch_advice']

BATCH = 'batch'
_SHAPE_READERS = {'Shape', 'Size'}  # batch in, a fixed-size description out: no loss


def fixed_batch(model: onnx.ModelProto, input_name: str) -> int | None:
    """The batch size the graph's input ``input_name`` fixes, or None where it is free."""
    dims = next(i for i in model.graph.input if i.name == input_name).type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField('dim_value') else None


def free_batch(model: onnx.ModelProto, input_name: str, source: str) -> onnx.ModelProto:
    """``model`` with its fixed batch size made :data:`BATCH` (``model`` itself where the batch
    is free already); CheckpointError naming ``source`` and what to re-export where the graph
    fixes a batch above 1 in a way this cannot undo."""
    batch = fixed_batch(model, input_name)
    if batch is None:
        return model
    freed = onnx.ModelProto.FromString(model.SerializeToString())
    _copy_batch_in_reshapes(freed, _infer(model), batch)
    initializers = {t.name for t in freed.graph.initializer}
    for info in (*freed.graph.input, *freed.graph.output):
        dims = info.type.tensor_type.shape.dim
        if info.name not in initializers and dims and dims[0].dim_value == batch:
            dims[0].dim_param = BATCH
    del freed.graph.value_info[:]  # exporters' shape hints, with the old batch in them
    where = _where_batch_is_fixed(_infer(freed))
    if where is None:
        return freed
    if batch == 1:
        return model
    raise CheckpointError(f'{source}: the batch size {batch} is fixed inside the graph '
                          f'({where}), not only at its input and outputs; '
                          f'{free_batch_advice(input_name)}')


def free_batch_advice(input_name: str) -> str:
    """What to do with a graph that fixes its batch size: how to export it without."""
    return ('re-export the network with a free batch dimension: torch.onnx.export(..., '
            f"dynamic_axes={{'{input_name}': {{0: 'batch'}}}}), or tf2onnx with a None batch "
            'in the input signature')


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """A shape-inferred copy; the model itself, where inference fails, has no hints to go by."""
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError):
        return model


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Every tensor's dimensions that the graph states: a number, a symbol or None."""
    graph = model.graph
    return {info.name: [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
                        for d in info.type.tensor_type.shape.dim]
            for info in (*graph.input, *graph.value_info, *graph.output)
            if info.type.tensor_type.HasField('shape')}


def _copy_batch_in_reshapes(model: onnx.ModelProto, inferred: onnx.ModelProto,
                            batch: int) -> None:
    """Point each Reshape whose constant shape starts with the batch size, applied to a tensor
    that starts with it too, at the shape of its output with the batch left to -1 (so also
    where ``allowzero`` forbids copying it, as the dynamo exporter writes Reshapes)."""
    shapes, graph = _shapes(inferred), OnnxGraph(model)
    taken = {*graph.initializers, *graph.producer}
    for node in model.graph.node:
        target = graph.constant(node.input[1]) if node.op_type == 'Reshape' else None
        if target is None:
            continue
        data = shapes.get(node.input[0])
        result = shapes.get(node.output[0]) or _reshaped(data, target)
        if (target.ndim != 1 or not len(target) or target[0] != batch or not data
                or data[0] != batch or not result
                or not all(isinstance(size, int) for size in result[1:])):
            continue
        name = f'{node.input[1]}_free_batch'
        while name in taken:
            name += '_'
        taken.add(name)
        add_initializer(model, numpy_helper.from_array(np.array([-1, *result[1:]], np.int64),
                                                       name))
        _drop_if_unused(model, node.input[1], node)
        node.input[1] = name


def _reshaped(data: list[int | str | None] | None, target: np.ndarray) -> list[int] | None:
    """What a Reshape to ``target`` makes of a tensor of the fixed shape ``data`` (0 copies
    a dimension, -1 takes the rest), where shape inference left it open (a target computed
    from constants, as opset 8 exports write it)."""
    if not data or not all(isinstance(size, int) for size in data):
        return None
    dims = [data[axis] if size == 0 else int(size) for axis, size in enumerate(target)]
    if dims.count(-1) == 1:
        rest = int(np.prod([size for size in dims if size != -1]))
        dims[dims.index(-1)] = int(np.prod(data)) // rest if rest else 0
    return dims


def _drop_if_unused(model: onnx.ModelProto, name: str, leaving: onnx.NodeProto) -> None:
    """Remove the constant ``name`` (node or initializer) when ``leaving`` is its only use."""
    graph = model.graph
    if any(name in n.input for n in graph.node if n is not leaving) or \
            any(o.name == name for o in graph.output):
        return
    for node in graph.node:
        if node.op_type == 'Constant' and node.output[0] == name:
            graph.node.remove(node)
            return
    for tensor in graph.initializer:
        if tensor.name == name:
            graph.initializer.remove(tensor)
            break
    for info in graph.input:  # before IR version 4 an initializer is also an input
        if info.name == name:
            graph.input.remove(info)
            return


def _where_batch_is_fixed(inferred: onnx.ModelProto) -> str | None:
    """Where the batch stops following the input: the first node that takes a tensor of
    :data:`BATCH` and gives one of a fixed first dimension, or an output that has one."""
    shapes = _shapes(inferred)

    def first(name: str) -> int | str | None:
        return shapes[name][0] if shapes.get(name) else None

    for index, node in enumerate(inferred.graph.node):
        if node.op_type in _SHAPE_READERS:
            continue
        if any(first(i) == BATCH for i in node.input) and any(
                isinstance(first(o), int) for o in node.output):
            return f"node '{node.name or f'{node.op_type}_{index}'}' ({node.op_type})"
    fixed = [o.name for o in inferred.graph.output if isinstance(first(o.name), int)]
    return f"output '{fixed[0]}'" if fixed else None
