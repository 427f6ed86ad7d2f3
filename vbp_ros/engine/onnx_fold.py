"""Batch normalizations folded into the convolution that reads them, before onnxruntime runs a
graph.

onnxruntime fuses a BatchNormalization into the Conv that writes its input, not into the Conv
that reads its output; it runs such a normalization as a pass of its own over the tensor (in its
blocked layout, a depthwise convolution). The paper's networks (Table 1) and the authors'
released model normalize right before every convolution. Folded, the convolution reads the
unnormalized tensor with its weights scaled per input channel and the shift moved into its bias:
measured on this 2-core machine (one thread, paired, interleaved), the bundled model's
``VBPEngine.process`` of a 640x480 frame 4.67, 4.48 and 4.46 -> 3.89, 3.66 and 3.71 ms,
NetSVF's forward pass 17.23 and 16.97 -> 15.73 and 15.50 ms (docs/benchmarks.md).

The fold is exact up to rounding only where the convolution does not pad: a padded border is
zero after the normalization, which no bias can reproduce. So only unpadded, ungrouped Convs
whose input is a normalization with stored parameters (initializers or Constant nodes), read by
nothing else, take it; the tensors VisualBackProp keeps are activations, which the fold leaves
alone.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import numpy_helper

from ..explain.onnx_graph import OnnxGraph, add_initializer, attribute

__all__ = ['fold_normalizations']

_DEFAULT_EPSILON = 1e-5  # BatchNormalization's, when the attribute is absent


def fold_normalizations(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every BatchNormalization that only an unpadded Conv reads folded into
    that Conv (a copy; ``model`` itself when there is none)."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = OnnxGraph(folded)
    pairs = _foldable(graph)
    if not pairs:
        return model
    names = {*graph.initializers, *graph.producer, *(v.name for v in folded.graph.input)}
    replaced: set[str] = set()
    for normalization, convolution in pairs:
        replaced.update(_fold(folded, graph, normalization, convolution, names))
    _drop_unread(folded, replaced)
    return folded


def _drop_unread(model: onnx.ModelProto, names: set[str]) -> None:
    """Remove what stored ``names`` (initializers, Constant and Identity nodes, and what
    those read in turn) where nothing reads it any more."""
    keep = {output.name for output in model.graph.output}
    while names:
        read = keep | {name for node in model.graph.node for name in node.input}
        unread = names - read
        names = set()
        for node in [n for n in model.graph.node if n.op_type in ('Constant', 'Identity')
                     and n.output[0] in unread]:
            model.graph.node.remove(node)
            names.update(node.input)
        for tensor in [t for t in model.graph.initializer if t.name in unread]:
            model.graph.initializer.remove(tensor)


def _foldable(graph: OnnxGraph) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """The (BatchNormalization, Conv) pairs the fold applies to (none in a graph with
    subgraphs, whose readers this does not see)."""
    if any(entry.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in graph.nodes for entry in node.attribute):
        return []
    outputs = {output.name for output in graph.model.graph.output}
    pairs = []
    for node in graph.nodes:
        if node.op_type != 'BatchNormalization' or node.domain not in ('', 'ai.onnx') or \
                attribute(node, 'training_mode', 0) or any(node.output[1:]):
            continue
        readers = graph.consumers.get(node.output[0], [])
        if len(readers) != 1 or node.output[0] in outputs:
            continue
        conv = readers[0]
        constants = [*node.input[1:5], *conv.input[1:]]
        if conv.op_type == 'Conv' and conv.domain in ('', 'ai.onnx') and \
                node.output[0] not in conv.input[1:] and _unpadded(conv) and \
                attribute(conv, 'group', 1) == 1 and \
                all(_stored(graph, name) for name in constants):
            pairs.append((node, conv))
    return pairs


def _stored(graph: OnnxGraph, name: str) -> bool:
    """Whether ``name`` is a value stored in the graph: an initializer or a Constant node's,
    through Identity nodes (torch's exporter shares equal tensors so), not one computed (a
    quantized weight's DequantizeLinear stays as it is)."""
    if any(value.name == name for value in graph.model.graph.input):  # fed at run time
        return False
    producer = graph.producer.get(name)
    if producer is not None and producer.op_type == 'Identity':
        return _stored(graph, producer.input[0])
    return name in graph.initializers or (producer is not None and
                                          producer.op_type == 'Constant' and
                                          graph.constant(name) is not None)


def _unpadded(conv: onnx.NodeProto) -> bool:
    return attribute(conv, 'auto_pad', 'NOTSET') in ('NOTSET', 'VALID') and \
        not any(attribute(conv, 'pads', []))


def _fold(model: onnx.ModelProto, graph: OnnxGraph, normalization: onnx.NodeProto,
          conv: onnx.NodeProto, names: set[str]) -> list[str]:
    """Rewrite ``conv`` to read the normalization's input, with new weights and bias (named
    apart from ``names``, which gets them); remove the normalization. The initializers that
    they no longer read."""
    def value(name: str) -> np.ndarray:
        return graph.constant(name).astype(np.float64)

    scale, shift, mean, variance = (value(name) for name in normalization.input[1:5])
    gain = scale / np.sqrt(variance + attribute(normalization, 'epsilon', _DEFAULT_EPSILON))
    offset = shift - mean * gain
    stored_weight = graph.constant(conv.input[1])
    weight = stored_weight.astype(np.float64)
    per_channel = (1, -1) + (1,) * (weight.ndim - 2)
    bias = value(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else \
        np.zeros(weight.shape[0])
    bias = bias + (weight * offset.reshape(per_channel)).sum(axis=tuple(range(1, weight.ndim)))
    new_inputs = [normalization.input[0]]
    for suffix, array in (('weight', weight * gain.reshape(per_channel)), ('bias', bias)):
        base = f'{conv.output[0]}_folded_{suffix}'
        name = next(candidate for number in itertools.count()
                    if (candidate := f'{base}_{number}' if number else base) not in names)
        names.add(name)
        add_initializer(model, numpy_helper.from_array(array.astype(stored_weight.dtype), name))
        new_inputs.append(name)
    replaced = [*normalization.input[1:5], *conv.input[1:]]
    del conv.input[:]
    conv.input.extend(new_inputs)
    model.graph.node.remove(normalization)
    for info in [i for i in model.graph.value_info if i.name == normalization.output[0]]:
        model.graph.value_info.remove(info)
    return replaced
