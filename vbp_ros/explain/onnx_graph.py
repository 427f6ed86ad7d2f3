"""An ONNX graph as VisualBackProp's ONNX reader and writer see it: producers, consumers,
constants (folded where small, so that shape inference sees them), static shapes, attributes,
and the image input."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from .mask_graph import UnsupportedModelError

__all__ = ['image_input']

ORT_DOMAIN = 'com.microsoft'  # onnxruntime's own operators
QDQ_OPS = frozenset({'QuantizeLinear', 'DequantizeLinear'})


def standard_opset(model: onnx.ModelProto) -> int | None:
    """The version of the standard ONNX operator set the graph imports (None if none)."""
    return next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)


def axes_of(layout: str) -> tuple[int, int, int]:
    """The positions of the channel, height and width axes in a tensor of ``layout``."""
    return tuple(layout.index(axis) for axis in 'chw')


class OnnxGraph:
    """Producers, consumers, constants and static shapes of one (shape-inferred) graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.nodes = list(graph.node)
        self.names = {id(node): node.name or f'{node.op_type}_{index}'
                      for index, node in enumerate(self.nodes)}
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.input):
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.shapes: dict[str, tuple] = {}
        self.types: dict[str, int] = {}
        for info in (*graph.input, *graph.value_info, *graph.output):
            tensor = info.type.tensor_type
            self.types[info.name] = tensor.elem_type
            if tensor.HasField('shape'):
                self.shapes[info.name] = tuple(
                    d.dim_value if d.HasField('dim_value') else None for d in tensor.shape.dim)
        self.opset = standard_opset(model)
        self._constants: dict[str, np.ndarray | None] = {}

    def name(self, node: onnx.NodeProto) -> str:
        return self.names[id(node)]

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a tensor computed from constants only (None when it depends on an
        input), evaluated once with the ONNX reference implementation."""
        if not name:
            return None
        if name in self._constants:
            return self._constants[name]
        value = None
        if name in self.initializers:
            value = numpy_helper.to_array(self.initializers[name])
        elif name in self.producer:
            node = self.producer[name]
            if node.op_type == 'Constant':
                value = _constant_node_value(node)
            elif node.domain in ('', 'ai.onnx'):
                inputs = [self.constant(i) if i else None for i in node.input]
                if node.op_type == 'DequantizeLinear' and inputs[0] is not None:
                    value = _dequantized(node, inputs)  # the reference has it from opset 19
                elif all(v is not None for v, i in zip(inputs, node.input) if i):
                    try:
                        value = _evaluate(node, inputs, self.opset)[
                            list(node.output).index(name)]
                    except Exception:  # noqa: BLE001 - not folded: onnxruntime computes it
                        value = None
        self._constants[name] = value
        return value

    def spatial_size(self, name: str, where: str, layout: str) -> tuple[int, int]:
        """(height, width) of a 4-D tensor of ``layout``, from shape inference."""
        shape = self.shapes.get(name)
        _, height, width = axes_of(layout)
        if shape is None or len(shape) != 4 or shape[height] is None or shape[width] is None:
            raise UnsupportedModelError(
                f"{where}: the size of tensor '{name}' is not known from the graph "
                f'(shape {shape}); give the model a fixed input height and width')
        return int(shape[height]), int(shape[width])


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attribute in node.attribute:
        if attribute.name == 'value':
            return numpy_helper.to_array(attribute.t)
        if attribute.name in ('value_float', 'value_int'):
            return np.asarray(helper.get_attribute_value(attribute))
        if attribute.name in ('value_floats', 'value_ints'):
            return np.asarray(list(helper.get_attribute_value(attribute)))
    return None


def _dequantized(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> np.ndarray | None:
    """A DequantizeLinear of constants, (x - zero point) * scale, per tensor or per axis
    (None for blocked quantization or a scale that is not constant)."""
    x, scale, zero_point = (inputs + [None, None])[:3]
    if scale is None or attribute(node, 'block_size', 0):
        return None
    if zero_point is None:
        zero_point = np.zeros_like(scale, dtype=x.dtype)
    if scale.ndim == 1 and scale.size > 1:  # per axis
        shape = [1] * x.ndim
        shape[attribute(node, 'axis', 1) % x.ndim] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((x.astype(np.float32) - zero_point.astype(np.float32)) * scale).astype(scale.dtype)


def _evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int | None
              ) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [f'in{index}' if value is not None else '' for index, value in enumerate(inputs)]
    initializers = [numpy_helper.from_array(np.asarray(value), name)
                    for name, value in zip(names, inputs) if value is not None]
    copy = helper.make_node(node.op_type, names, [f'out{i}' for i in range(len(node.output))])
    copy.attribute.extend(node.attribute)
    outputs = [helper.make_empty_tensor_value_info(f'out{i}') for i in range(len(node.output))]
    graph = helper.make_graph([copy], 'constant', [], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset or 17)])
    return list(ReferenceEvaluator(model).run(None, {}))


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of a node's attribute (strings decoded), or ``default``."""
    for entry in node.attribute:
        if entry.name == name:
            value = helper.get_attribute_value(entry)
            return value.decode() if isinstance(value, bytes) else value
    return default


def image_input(model: onnx.ModelProto, name: str = '') -> str:
    """The graph input that takes the image: ``name``, or the only 4-D input that is not an
    initializer."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if name:
        if name not in {i.name for i in inputs}:
            raise UnsupportedModelError(
                f"input.name: the graph has no input '{name}' (inputs: "
                f'{", ".join(i.name for i in inputs)})')
        return name
    images = [i.name for i in inputs if len(i.type.tensor_type.shape.dim) == 4]
    if len(images) != 1:
        raise UnsupportedModelError(
            f'the graph has {len(images)} four-dimensional inputs ({", ".join(images)}); name '
            "the image input in the model card's input.name")
    return images[0]


def with_input_size(model: onnx.ModelProto, input_name: str, input_hw: tuple[int, int] | None,
                    layout: str) -> onnx.ModelProto:
    """A shape-inferred copy, the image input's height and width fixed where they are free."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if input_hw is not None:
        dims = next(i for i in model.graph.input if i.name == input_name).type.tensor_type \
            .shape.dim
        for axis, size in zip(axes_of(layout)[1:], input_hw):
            if not dims[axis].HasField('dim_value'):
                dims[axis].dim_value = int(size)
    _fold_small_constants(model)
    _expand_fused(model)
    _merge_repeated_qdq(model)
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError as error:
        raise UnsupportedModelError(f'ONNX shape inference failed: {error}') from None


def _fold_small_constants(model: onnx.ModelProto, limit: int = 4096) -> None:
    """Replace nodes that compute small tensors from constants only (pads, shapes, bounds) by
    initializers, so that shape inference sees their values."""
    graph = OnnxGraph(model)
    folded = []
    for node in graph.nodes:
        if node.op_type == 'Constant' or (node.input and all(
                graph.constant(i) is not None for i in node.input if i)):
            values = [graph.constant(o) for o in node.output]
            if all(v is not None and np.asarray(v).size <= limit for v in values):
                folded.append(node)
                for name, value in zip(node.output, values):
                    add_initializer(model, numpy_helper.from_array(np.asarray(value), name))
    for node in folded:
        model.graph.node.remove(node)


def _merge_repeated_qdq(model: onnx.ModelProto) -> None:
    """Keep one of the QuantizeLinear or DequantizeLinear nodes that repeat another's inputs and
    attributes (onnxruntime's ``DedicatedQDQPair`` gives each consumer of a tensor its own pair),
    so that the reader sees one activation where the quantizer wrote several, as in the float
    graph: read as several, each lay on only some paths to the input, where no mask may be
    rescaled, and the mask of a ResNet-18 overflowed float32. The graph that runs keeps its
    nodes; the mask reads the first of each set, which holds the same values."""
    outputs = {output.name for output in model.graph.output}
    first: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    kept = []
    for node in model.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        if node.op_type in QDQ_OPS and node.domain in ('', 'ai.onnx'):
            key = (node.op_type, tuple(node.input),
                   tuple(a.SerializeToString() for a in node.attribute))
            if key in first and node.output[0] not in outputs:
                renamed[node.output[0]] = first[key]
                continue
            first.setdefault(key, node.output[0])
        kept.append(node)
    if renamed:
        model.graph.ClearField('node')
        model.graph.node.extend(kept)


def _expand_fused(model: onnx.ModelProto) -> None:
    """Replace onnxruntime's FusedConv (in a graph its optimizer saved) by the Conv, residual
    Add and activation it fused, its FusedGemm by the Gemm and its QuickGelu by the gated
    activation, so that the reader sees the activation it keeps and shape inference knows every
    size. The activation's output keeps the fused node's name, the one tensor of them that the
    graph computes."""
    expanded = []
    for node in model.graph.node:
        if node.domain == ORT_DOMAIN and node.op_type == 'QuickGelu':
            expanded += _quick_gelu(model, node)
            continue
        if node.domain != ORT_DOMAIN or node.op_type not in ('FusedConv', 'FusedGemm'):
            expanded.append(node)
            continue
        stages = [helper.make_node(node.op_type[len('Fused'):], node.input[:3], [''],
                                   name=node.name)]
        stages[0].attribute.extend(a for a in node.attribute if not a.name.startswith('activ'))
        if node.op_type == 'FusedConv':
            if len(node.input) > 3 and node.input[3]:  # the residual Z, added before
                stages.append(helper.make_node('Add', ['', node.input[3]], [''],
                                               name=f'{node.name}/Add'))
            activation = _activation(model, node)
            if activation is None:
                expanded.append(node)  # one the rule table does not know: refused, named
                continue
            stages.append(activation)
        for stage, following in zip(stages, stages[1:]):
            stage.output[0] = following.input[0] = f'{node.output[0]}/{stage.op_type}'
        stages[-1].output[0] = node.output[0]
        expanded += stages
    model.graph.ClearField('node')
    model.graph.node.extend(expanded)


def _quick_gelu(model: onnx.ModelProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """onnxruntime's QuickGelu, x * sigmoid(alpha * x) (its fusion of SiLU, alpha 1), as the
    gated activation it is."""
    x, output = node.input[0], node.output[0]
    alpha = f'{output}/alpha'
    add_initializer(model, numpy_helper.from_array(
        np.asarray(attribute(node, 'alpha', 1.702), np.float32), alpha))
    return [helper.make_node('Mul', [x, alpha], [f'{output}/scaled'], name=f'{node.name}/scale'),
            helper.make_node('Sigmoid', [f'{output}/scaled'], [f'{output}/gate'],
                             name=f'{node.name}/Sigmoid'),
            helper.make_node('Mul', [x, f'{output}/gate'], [output], name=node.name)]


def _activation(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The standard node of a FusedConv's activation (its input left empty), or None."""
    kind = attribute(node, 'activation', '')
    params = list(attribute(node, 'activation_params', None) or [])
    name = f'{node.name}/{kind}'
    if kind in ('Relu', 'Sigmoid', 'Tanh'):
        return helper.make_node(kind, [''], [''], name=name)
    if kind == 'LeakyRelu' and len(params) == 1:
        return helper.make_node(kind, [''], [''], name=name, alpha=params[0])
    if kind == 'HardSigmoid' and len(params) == 2:
        return helper.make_node(kind, [''], [''], name=name, alpha=params[0], beta=params[1])
    if kind == 'Clip' and len(params) == 2:
        if (standard_opset(model) or 1) < 11:
            return helper.make_node(kind, [''], [''], name=name, min=params[0], max=params[1])
        bounds = [f'{node.output[0]}/{bound}' for bound in ('min', 'max')]
        for bound, value in zip(bounds, params):
            add_initializer(model, numpy_helper.from_array(np.asarray(value, np.float32), bound))
        return helper.make_node(kind, ['', *bounds], [''], name=name)
    return None


def add_initializer(model: onnx.ModelProto, tensor: onnx.TensorProto) -> None:
    """Append an initializer; before IR version 4 it is also a graph input, as onnx.checker
    and shape inference require there."""
    model.graph.initializer.append(tensor)
    if model.ir_version < 4:
        model.graph.input.append(
            helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
