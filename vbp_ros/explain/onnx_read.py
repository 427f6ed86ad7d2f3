"""Reading an ONNX graph into VisualBackProp's :class:`~vbp_ros.explain.mask_graph.MaskGraph`:
the operator table :data:`RULES` and the reader (docs/design.md, "VisualBackProp on any
network"; what each operator type is to the rule: :mod:`vbp_ros.explain.onnx_vbp`).

The reader recognises each node that consumes a feature tensor (gated activations ``x *
gate(x)``, the layout of channels-last tensors, the geometry of Conv, pooling, Pad and Slice)
and gives the tensor to the shared :class:`~vbp_ros.explain.mask_graph.MaskGraphBuilder`, which
decides what is kept, what has a mask and where masks are rescaled, as for PyTorch networks.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .layouts import INPUT_LAYOUTS, NCHW
from .geometry import AxisGeometry, Geometry
from .mask_graph import (Activation, Gate, Head, Identity, Ignored, Layout, MaskGraph,
                         MaskGraphBuilder, Rule, Spatial, UnsupportedModelError)
from .onnx_graph import ORT_DOMAIN, QDQ_OPS, OnnxGraph, attribute, axes_of

__all__ = ['RULES', 'read_mask_graph']

MASK_PREFIX = 'vbp/'  # the names of the mask nodes add_visualbackprop appends

_SIGNED, _IDENTITY = Activation(), Identity()
# What each operator type is to VisualBackProp: adding a layer type is one entry here.
RULES: dict[str, Rule] = {
    'Relu': Activation(nonnegative=True),
    # Clip is nonnegative where its lower bound is (ReLU6): the reader looks at the bound.
    **dict.fromkeys(('LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'HardSwish', 'Mish',
                     'Clip', 'ThresholdedRelu'), _SIGNED),
    **dict.fromkeys(('Conv', 'MaxPool', 'AveragePool', 'Pad', 'Slice'), Spatial()),
    **dict.fromkeys(('BatchNormalization', 'InstanceNormalization', 'GroupNormalization', 'LRN',
                     'Dropout', 'Identity', 'Cast', 'Add', 'Sub', 'Mul', 'Div', 'Sum', 'Neg',
                     'Concat'), _IDENTITY),
    # QDQ graphs: the values as the quantized network rounds them. A DequantizeLinear whose zero
    # point is its integer type's minimum clips at 0 (the ReLU that onnxruntime's asymmetric
    # quantization folds into the scales): the reader makes it an activation where what was
    # quantized could be negative.
    **dict.fromkeys(('QuantizeLinear', 'DequantizeLinear'), _IDENTITY),
    'Transpose': Layout(),
    **dict.fromkeys(('Flatten', 'Gemm', 'MatMul', 'Reshape', 'GlobalAveragePool',
                     'GlobalMaxPool', 'ReduceMean', 'ReduceMax', 'ReduceSum', 'Squeeze'), Head()),
    **dict.fromkeys(('Shape', 'Size'), Ignored()),
    # Nonlinear gates: only inside a gated activation x * gate(x) (SiLU, Mish, hard swish, GELU).
    **dict.fromkeys(('Sigmoid', 'HardSigmoid', 'Tanh', 'Softplus', 'Erf'), Gate()),
}
_POINTWISE_CONSTANT = {'Add', 'Sub', 'Mul', 'Div'}  # with a constant operand: affine, pointwise
# What a gate's path may pass through besides pointwise operations with constants: the values
# unchanged (as the quantized network rounds them).
_VALUE_KEEPING = QDQ_OPS | {'Identity'}
NCHW_READERS = {'Conv', 'MaxPool', 'AveragePool'}  # read their input as (N, C, H, W)
# What onnxruntime's quantizers write besides QDQ graphs (QOperator format, dynamic).
_QUANTIZED = {'DynamicQuantizeLinear', 'QLinearConv', 'QLinearMatMul', 'ConvInteger',
              'MatMulInteger', 'QLinearAdd', 'QLinearMul'}
# Operators whose output is nonnegative where their feature operands are (a ReLU after them
# changes nothing); Pad, BatchNormalization and those with constants are looked at in turn.
_SIGN_KEEPING = {'MaxPool', 'AveragePool', 'Slice', 'Transpose', 'Identity', 'Dropout', 'Cast',
                 'QuantizeLinear', 'DequantizeLinear', 'Concat', 'Sum'}
_ARITHMETIC = {'Add', 'Mul', 'Div'}
_CLIP_AT_ZERO = 'clip at 0 of QuantizeLinear'  # how the plan names a folded ReLU
_WHOLE_AXIS = 2**31 - 1  # a Slice end at or past it keeps the whole axis (INT32_MAX, INT64_MAX)


def read_mask_graph(graph: OnnxGraph, input_name: str, layout: str) -> MaskGraph:
    """The mask graph of a shape-inferred graph whose image input ``input_name`` is in
    ``layout``."""
    return _Reader(graph, input_name, layout).mask_graph


def _not_in_table(node: onnx.NodeProto, where: str) -> str:
    """Why a node the rule table does not know is refused: a quantized graph, one that
    onnxruntime optimized, a standard operator that is not there yet, or one of another
    domain."""
    if node.op_type in _QUANTIZED:
        return (f'{where} in the feature part: a graph quantized in the QOperator format or '
                'dynamically, or a QDQ graph that onnxruntime optimized and saved, whose '
                'activations are not tensors of their own; give the graph quantized in the QDQ '
                'format (onnxruntime: quantize_static(..., quant_format=QuantFormat.QDQ)) as the '
                'quantizer wrote it, or the float graph')
    if node.domain == ORT_DOMAIN and node.op_type in QDQ_OPS:
        return (f"{where} of domain '{node.domain}' in the feature part: onnxruntime's own "
                'quantization operators (quantize_static with UseQDQContribOps, or 4-bit weights '
                'below opset 21); quantize without them: at opset 21 onnxruntime writes the '
                'standard QuantizeLinear for 16 and 4 bits')
    if node.domain.startswith('com.microsoft'):
        return (f"{where} of domain '{node.domain}' in the feature part: a graph that "
                'onnxruntime optimized and saved; give the graph from before its optimization '
                '(onnxruntime optimizes it again when it loads it), or one saved at the extended '
                'level (ORT_ENABLE_EXTENDED)')
    if node.domain in ('', 'ai.onnx'):
        return (f'{where} in the feature part is not yet in the VisualBackProp rule table '
                '(vbp_ros.explain.onnx_vbp.RULES)')
    return (f"{where} of domain '{node.domain}' in the feature part is not a standard ONNX "
            'operator; export the network with standard operators, or cut the graph before it')


class _Reader:
    """One pass over the graph in its (topological) node order."""

    def __init__(self, graph: OnnxGraph, input_name: str, layout: str) -> None:
        self.graph = graph
        shape = graph.shapes.get(input_name)
        if shape is None or len(shape) != 4 or None in shape[1:]:
            raise UnsupportedModelError(
                f"image input '{input_name}' needs a fixed channels x height x width shape, "
                f'not {shape}')
        chw = tuple(int(shape[axis]) for axis in axes_of(layout))
        self.builder = MaskGraphBuilder(input_name, input_name, chw, layout)
        self.layouts: dict[str, str] = {input_name: layout}  # the feature tensors' layouts
        self.sizes: dict[str, tuple[int, int]] = {input_name: chw[1:]}
        self.gate_root: dict[str, str] = {}  # gate tensors -> the feature tensor they gate
        self.producing_node: dict[str, tuple[onnx.NodeProto, str]] = {}
        self.scaled_activation: dict[str, str] = {}  # GELU's x * (1 + erf(...)), before * 0.5
        self.nonnegative: set[str] = set()  # feature tensors never below zero
        self.convolved: set[str] = set()  # feature tensors a Conv leads to
        for node in graph.nodes:
            if not node.name.startswith(MASK_PREFIX):  # the mask of vbp-export's graphs
                self._read(node)
        if not self.builder.heads:
            raise UnsupportedModelError(
                'no head found: the feature part must end in Flatten, Gemm, MatMul, Reshape, '
                'global pooling or a reduction before the outputs')
        self.mask_graph = self.builder.build(
            'no activation or convolution between the image input and the head: nothing for '
            'VisualBackProp to keep')
        for tensor in self.mask_graph.kept_tensors:
            if not tensor.kept.channels:
                raise UnsupportedModelError(
                    f"ONNX tensor '{tensor.name}': its channel count is not known")

    # Each node that consumes a feature tensor, by its rule.
    def _read(self, node: onnx.NodeProto) -> None:
        graph = self.graph
        features = [i for i in dict.fromkeys(node.input) if i in self.layouts]
        gated = [i for i in node.input if i in self.gate_root]
        if not features and not gated:
            return
        where = f"ONNX node '{graph.name(node)}' ({node.op_type})"
        rule = RULES.get(node.op_type) if node.domain in ('', 'ai.onnx') else None
        if rule is None:
            raise UnsupportedModelError(_not_in_table(node, where))
        if gated:
            self._read_gated(node, where, features, gated)
            return
        if rule.kind in ('head', 'ignored'):
            if rule.kind == 'head':
                self.builder.add_head(graph.name(node), node.op_type, features)
            return
        if rule.kind == 'gate':
            self.gate_root[node.output[0]] = self._root(features[0])
            return
        if rule.kind == 'layout':
            self._transpose(node, where, features[0])
            return
        output = node.output[0]
        if rule.kind == 'spatial':
            if node.input[0] not in self.layouts or len(features) > 1:
                raise UnsupportedModelError(f'{where}: its weights or pads come from the image')
            self._add(output, [(node.input[0], self._scale_up(node, where))], rule, node)
            return
        if len(features) == 1 and features[0] in self.scaled_activation and \
                node.op_type in ('Mul', 'Div'):
            self._add(output, [(features[0], None)], _SIGNED, node,
                      self.scaled_activation[features[0]])
            return
        if node.op_type == 'DequantizeLinear' and self._clips_at_zero(node):
            self._add(output, [(node.input[0], None)], Activation(nonnegative=True), node,
                      _CLIP_AT_ZERO)
            return
        if rule.kind == 'activation':
            self._check_activation(node, where)
            nonnegative = rule.nonnegative or self._clip_is_nonnegative(node)
            self._add(output, [(node.input[0], None)], Activation(nonnegative), node)
            return
        channels = axes_of(self._layout(features, where))[0]
        if node.op_type == 'Concat' and attribute(node, 'axis') % 4 != channels:
            raise UnsupportedModelError(f'{where}: concatenation along axis '
                                        f'{attribute(node, "axis")}; only channels (axis '
                                        f'{channels})')
        self._add(output, [(i, None) for i in features], rule, node)

    def _read_gated(self, node: onnx.NodeProto, where: str, features: list[str],
                    gated: list[str]) -> None:
        """A node on a gate's path: more of the gate, or the Mul that makes x * gate(x)."""
        root = self.gate_root[gated[0]]
        constants = [i for i in node.input if i not in self.layouts and i not in self.gate_root]
        if node.op_type == 'Mul' and len(features) == 1 and self._root(features[0]) == root:
            output, kind = node.output[0], self._gate_kind(node)
            if self._scale_after(output):
                self._add(output, [(features[0], None)], _IDENTITY, node)
                self.scaled_activation[output] = kind
            else:
                self._add(output, [(features[0], None)], _SIGNED, node, kind)
            return
        if not features and (isinstance(RULES.get(node.op_type), Gate) or (
                node.op_type in _POINTWISE_CONSTANT | _VALUE_KEEPING and len(gated) == 1 and all(
                    self.graph.constant(i) is not None for i in constants))):
            self.gate_root[node.output[0]] = root
            return
        raise UnsupportedModelError(
            f'{where}: a {", ".join(sorted({self.graph.producer[g].op_type for g in gated}))} '
            'of a feature map used other than as the gate of x * gate(x) (SiLU, Mish, hard '
            'swish, GELU); such activations are not in the VisualBackProp rule table')

    def _root(self, tensor: str) -> str:
        """The tensor before pointwise operations with constants (x of x / sqrt(2))."""
        while tensor in self.producing_node:
            node, rule = self.producing_node[tensor]
            if rule != 'identity' or node.op_type not in _POINTWISE_CONSTANT | _VALUE_KEEPING:
                break
            variable = [i for i in node.input if self.graph.constant(i) is None]
            if len(variable) != 1:
                break
            tensor = variable[0]
        return tensor

    def _add(self, output: str, sources: list[tuple[str, Geometry | None]], rule: Rule,
             node: onnx.NodeProto, op: str = '', layout: str = '') -> None:
        """Record a new feature tensor made by ``node`` of kind ``rule`` (``op`` names a gated
        activation), in the layout of its sources unless ``layout`` says otherwise, with each
        source's geometry (None: an identity edge)."""
        graph = self.graph
        where = f"ONNX node '{graph.name(node)}' ({node.op_type})"
        layout = layout or self._layout([source for source, _ in sources], where)
        size = graph.spatial_size(output, where, layout)
        for source, geometry in sources:
            if geometry is None and self.sizes[source] != size:
                raise UnsupportedModelError(
                    f"{where}: its operand '{source}' ({self.sizes[source]}) and its output "
                    f'({size}) differ in size; only Conv, pooling, Pad and Slice may change the '
                    'size')
        self.producing_node[output] = (node, rule.kind)
        self.sizes[output], self.layouts[output] = size, layout
        feature_sources = [source for source, _ in sources]
        if node.op_type == 'Conv' or any(source in self.convolved for source in feature_sources):
            self.convolved.add(output)
        if self._nonnegative_output(node, rule, feature_sources):
            self.nonnegative.add(output)
        shape = graph.shapes[output]
        channels = shape[axes_of(layout)[0]] or 0
        self.builder.add(output, output, op or node.op_type, (channels, *size), rule,
                         [(source, graph.name(node), geometry) for source, geometry in sources],
                         layout)

    def _layout(self, tensors: list[str], where: str) -> str:
        """The layout the feature tensors ``tensors`` share."""
        layouts = sorted({self.layouts[tensor] for tensor in tensors})
        if len(layouts) > 1:
            raise UnsupportedModelError(f'{where}: its operands are in different layouts '
                                        f'({" and ".join(layouts)})')
        return layouts[0]

    def _transpose(self, node: onnx.NodeProto, where: str, source: str) -> None:
        """A Transpose between NCHW and NHWC: an identity edge that changes the layout; one
        whose result only feeds the head belongs to the head."""
        graph, output = self.graph, node.output[0]
        if all(isinstance(RULES.get(consumer.op_type), (Head, Ignored))
               for consumer in graph.consumers.get(output, ())):
            self.builder.add_head(graph.name(node), node.op_type, [source])
            return
        layout = self.layouts[source]
        perm = attribute(node, 'perm') or range(3, -1, -1)
        permuted = ''.join(layout[axis] for axis in perm)
        if permuted not in INPUT_LAYOUTS:
            raise UnsupportedModelError(
                f'{where}: it permutes an {layout.upper()} feature map into '
                f'{permuted.upper()}; only Transposes between NCHW and NHWC, or into the head, '
                'are in the VisualBackProp rule table')
        self._add(output, [(source, None)], RULES['Transpose'], node,
                  layout=permuted)

    def _scale_after(self, output: str) -> bool:
        """Whether a gated activation ends in a multiplication by a constant (the erf form of
        GELU: x * (1 + erf(x / sqrt(2))) * 0.5), which is then part of the activation."""
        consumers = self.graph.consumers.get(output, [])
        if len(consumers) != 1 or consumers[0].op_type not in ('Mul', 'Div'):
            return False
        other = [i for i in consumers[0].input if i != output]
        value = self.graph.constant(other[0]) if len(other) == 1 else None
        return value is not None and value.size == 1

    def _gated_by(self, op_type: str, node: onnx.NodeProto) -> set[str]:
        """{node's output} if one of the gate nodes behind node is ``op_type``."""
        pending = [i for i in node.input if i in self.gate_root]
        seen = set()
        while pending:
            tensor = pending.pop()
            producer = self.graph.producer.get(tensor)
            if producer is None or tensor in seen:
                continue
            seen.add(tensor)
            if producer.op_type == op_type:
                return {node.output[0]}
            pending += [i for i in producer.input if i in self.gate_root]
        return set()

    def _gate_kind(self, node: onnx.NodeProto) -> str:
        kinds = {'Sigmoid': 'SiLU', 'HardSigmoid': 'HardSwish', 'Softplus': 'Mish',
                 'Erf': 'Gelu'}
        for gate, kind in kinds.items():
            if self._gated_by(gate, node):
                return kind
        return 'gated activation'

    def _check_activation(self, node: onnx.NodeProto, where: str) -> None:
        if node.op_type == 'PRelu' and node.input[1] in self.layouts:
            raise UnsupportedModelError(f'{where}: its slope comes from the image')
        if node.op_type == 'Clip' and any(i in self.layouts for i in node.input[1:]):
            raise UnsupportedModelError(f'{where}: its bounds come from the image')

    def _clips_at_zero(self, node: onnx.NodeProto) -> bool:
        """Whether a DequantizeLinear of a QuantizeLinear is a ReLU that the quantization
        folded: its zero point is its integer type's minimum (absent: 0 of the input's type),
        what was quantized could be negative, a Conv lies behind it, and no ReLU follows (one
        that the quantizer kept: QDQKeepRemovableActivations)."""
        quantize = self.graph.producer.get(node.input[0])
        if quantize is None or quantize.op_type != 'QuantizeLinear':
            return False
        quantized = quantize.input[0]
        if quantized not in self.convolved or quantized in self.nonnegative or any(
                consumer.op_type == 'Relu' or self._clip_is_nonnegative(consumer)
                for consumer in self.graph.consumers.get(node.output[0], ())):
            return False
        if len(node.input) > 2 and node.input[2]:
            zero_point = self.graph.constant(node.input[2])
        else:
            element = self.graph.types.get(node.input[0])
            zero_point = np.zeros(1, helper.tensor_dtype_to_np_dtype(element)) if element \
                else None
        if zero_point is None or zero_point.dtype.kind not in 'iu':
            return False
        return bool(np.all(zero_point == np.iinfo(zero_point.dtype).min))

    def _nonnegative_output(self, node: onnx.NodeProto, rule: Rule, sources: list[str]) -> bool:
        """Whether ``node``'s output, made from the feature tensors ``sources``, is never below
        zero: an activation's that is, or a sign-keeping operation of nonnegative tensors
        (with nonnegative constants; BatchNormalization with nonnegative scales and shifts)."""
        if rule.kind == 'activation':
            return getattr(rule, 'nonnegative', False)
        if not all(source in self.nonnegative for source in sources):
            return False
        op = node.op_type
        if op == 'Pad':
            value = (self.graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2]
                     else attribute(node, 'value', 0.0))
            return value is not None and float(np.asarray(value)) >= 0.0
        constants = [self.graph.constant(i) for i in node.input[1:] if i and i not in sources]
        if op == 'BatchNormalization':
            if len(constants) < 4 or any(c is None for c in constants[:4]):
                return False
            scale, shift, mean, variance = (np.asarray(c, np.float64) for c in constants[:4])
            factor = scale / np.sqrt(variance + attribute(node, 'epsilon', 1e-5))
            return bool(np.all(factor >= 0) and np.all(shift - mean * factor >= 0))
        if op in _ARITHMETIC:  # with constants: nonnegative ones (a positive divisor)
            if op == 'Div':
                return node.input[0] in sources and all(
                    c is not None and np.all(np.asarray(c) > 0) for c in constants)
            return all(c is not None and np.all(np.asarray(c) >= 0) for c in constants)
        return op in _SIGN_KEEPING

    def _clip_is_nonnegative(self, node: onnx.NodeProto) -> bool:
        if node.op_type != 'Clip':
            return False
        low = (self.graph.constant(node.input[1]) if len(node.input) > 1 and node.input[1]
               else attribute(node, 'min'))
        return low is not None and float(np.asarray(low)) >= 0.0

    def _scale_up(self, node: onnx.NodeProto, where: str) -> Geometry:
        """The windows of a Conv, pooling, Pad or Slice node."""
        graph = self.graph
        layout = self.layouts[node.input[0]]
        if node.op_type in NCHW_READERS and layout != NCHW:
            raise UnsupportedModelError(
                f"{where} reads its input '{node.input[0]}' as NCHW, but that tensor is "
                'channels-last (NHWC); a Transpose to NCHW must come first')
        source_hw = graph.spatial_size(node.output[0], where, layout)
        target_hw = graph.spatial_size(node.input[0], where, layout)
        if node.op_type == 'Pad':
            return self._pad_edge(node, where, layout)
        if node.op_type == 'Slice':
            return self._slice_edge(node, where, layout, target_hw)
        if node.op_type == 'Conv':
            weight = graph.shapes.get(node.input[1]) or np.shape(graph.constant(node.input[1]))
            kernel = tuple(attribute(node, 'kernel_shape') or weight[2:])
        else:
            kernel = tuple(attribute(node, 'kernel_shape'))
        if len(kernel) != 2 or None in kernel:
            raise UnsupportedModelError(f'{where}: only two-dimensional kernels are supported')
        strides = tuple(attribute(node, 'strides') or (1, 1))
        dilations = tuple(attribute(node, 'dilations') or (1, 1))
        pads = attribute(node, 'pads') or (0, 0, 0, 0)
        begin = tuple(pads[:2])
        auto_pad = attribute(node, 'auto_pad', 'NOTSET')
        if auto_pad in ('SAME_UPPER', 'SAME_LOWER'):
            totals = [max(0, (o - 1) * s + d * (k - 1) + 1 - i) for o, s, d, k, i in
                      zip(source_hw, strides, dilations, kernel, target_hw)]
            begin = tuple(t // 2 if auto_pad == 'SAME_UPPER' else t - t // 2 for t in totals)
        elif auto_pad == 'VALID':
            begin = (0, 0)
        geometry = Geometry(*(AxisGeometry(kernel[axis], strides[axis], dilations[axis],
                                           begin[axis]) for axis in range(2)))
        for axis, length, target in zip(geometry.axes, source_hw, target_hw):
            if -axis.end_crop(length, target) >= max(axis.stride, axis.dilation):
                raise UnsupportedModelError(
                    f'{where}: its output size {source_hw} does not follow from its input size '
                    f'{target_hw} and geometry')
        return geometry

    def _pad_edge(self, node: onnx.NodeProto, where: str, layout: str) -> Geometry:
        mode = attribute(node, 'mode', 'constant')
        pads = (self.graph.constant(node.input[1]) if len(node.input) > 1
                else attribute(node, 'pads'))
        axes = self.graph.constant(node.input[3]) if len(node.input) > 3 and node.input[3] \
            else None
        if pads is None or mode != 'constant' or axes is not None:
            raise UnsupportedModelError(
                f'{where}: only constant padding with constant pads is supported')
        pads = [int(p) for p in np.asarray(pads).ravel()]
        rank = len(pads) // 2
        _, height, width = axes_of(layout)
        if min(pads) < 0 or any(pads[axis] or pads[rank + axis] for axis in range(rank)
                                if axis not in (height, width)):
            raise UnsupportedModelError(f'{where}: only non-negative padding of the height and '
                                        'width is supported')
        return Geometry(AxisGeometry(pad_before=pads[height]),
                        AxisGeometry(pad_before=pads[width]))

    def _slice_edge(self, node: onnx.NodeProto, where: str, layout: str,
                    target_hw: tuple[int, int]) -> Geometry:
        """A crop of height or width (and any slice of channels): the rows and columns it
        cuts are added back to the mask as zeros."""
        starts, ends, axes, steps = self._slice_bounds(node, where)
        channels, height, width = axes_of(layout)
        cut = {height: 0, width: 0}  # rows and columns cut at the start
        size = {height: target_hw[0], width: target_hw[1]}
        for axis, start, end, step in zip(axes, starts, ends, steps):
            if axis == channels:
                continue
            if axis not in cut:
                if start == 0 and end >= _WHOLE_AXIS and step == 1:  # tf2onnx lists every axis
                    continue
                raise UnsupportedModelError(f'{where}: it slices the batch axis')
            if step != 1:
                raise UnsupportedModelError(
                    f'{where}: a Slice of height or width with step {step}; only crops (step 1) '
                    'are in the VisualBackProp rule table')
            cut[axis] = range(size[axis])[start:end].start
        return Geometry(AxisGeometry(pad_before=-cut[height]),
                        AxisGeometry(pad_before=-cut[width]))

    def _slice_bounds(self, node: onnx.NodeProto, where: str
                      ) -> tuple[list[int], list[int], list[int], list[int]]:
        """A Slice's starts, ends, axes (0 to 3) and steps, from its inputs (opset 10 on) or
        attributes."""
        inputs = list(node.input[1:5])
        if inputs:
            values = [self.graph.constant(name) if name else None for name in inputs]
            if any(value is None for value, name in zip(values, inputs) if name):
                raise UnsupportedModelError(
                    f'{where}: only constant starts, ends, axes and steps are supported')
            values += [None] * (4 - len(values))
        else:
            values = [attribute(node, name) for name in ('starts', 'ends', 'axes')] + [None]
        starts, ends, axes, steps = (None if v is None else [int(i) for i in np.ravel(v)]
                                     for v in values)
        axes = [axis % 4 for axis in axes] if axes is not None else list(range(len(starts)))
        return starts, ends, axes, steps or [1] * len(axes)
