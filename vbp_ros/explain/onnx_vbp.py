"""VisualBackProp inside an ONNX graph: the rule of docs/design.md, "VisualBackProp on any
network", read from the graph and appended to it as ordinary ONNX nodes, so that one
``session.run`` returns the network's outputs and the mask (ONNX Runtime, TensorRT or any other
ONNX engine on the car).

Reading. The graph is followed from its image input. A node that consumes a *feature tensor*
(the input, or a tensor computed from it before the head) is looked up in :data:`RULES`, one
entry per operator type:

- ``activation`` (Relu, LeakyRelu, PRelu, Elu, Selu, Celu, Gelu, HardSwish, Mish, Clip as
  ReLU6, ThresholdedRelu): its output is *kept*. Gated activations, ``x * gate(x)`` with a gate
  of Sigmoid (SiLU), HardSigmoid (hard swish), Tanh(Softplus) (Mish) or the erf form of GELU,
  are found as their ``Mul``; the gate's own nodes take no part.
- ``spatial`` (Conv, MaxPool, AveragePool, Pad, Slice): the mask is scaled up along the edge
  by the one-channel all-ones transposed convolution with the node's kernel, strides, dilations
  and pads (explicit or ``auto_pad``), its output padding (or extra end crop, for
  ``ceil_mode``) making the size equal the node's input size exactly. The kernel is separable:
  two one-dimensional ``ConvTranspose`` nodes, columns then rows, and none along an axis the
  node leaves alone (1x1 convolutions). A Pad's edge is a ``Slice`` of the mask; a Slice of
  height or width (a crop with constant bounds and step 1: Keras' Cropping2D, ``x[:, :, a:b]``)
  is the mirror, the mask zero-padded back to the Slice's input size; a Slice of channels
  passes the mask unchanged.
- ``identity`` (BatchNormalization and other normalizations, Dropout, Identity, Cast, pointwise
  Add/Sub/Mul/Div, residual adds, channel Concat): the mask passes unchanged to every operand
  that is a feature tensor.
- ``layout`` (Transpose): see Layouts below.
- ``head`` (Flatten, Gemm, MatMul, Reshape, GlobalAveragePool, reductions...): the head; masks
  do not flow into it. ``ignored`` nodes (Shape, Size) only read a tensor's shape.

Layouts. A feature tensor is NCHW or channels-last NHWC (the letters of
:data:`~vbp_ros.models.checkpoint.INPUT_LAYOUTS`), and the rule tracks which of its axes are
channels, height and width. The image input's layout is the model card's ``input.layout``, or
what the graph shows (:func:`graph_input_layout`: a Transpose to NCHW right after the input,
possibly behind pointwise normalisation, as tf2onnx writes Keras models); a Transpose between
NHWC and NCHW is an identity edge that changes it (tf2onnx's Transposes around each Conv). A
Transpose whose result only feeds the head belongs to the head (Keras' Flatten: ``Transpose ->
Reshape -> MatMul``); other permutations are refused. Conv and pooling read NCHW; activations,
pointwise nodes, Pad and Slice work in either layout. Masks are (N, 1, H, W) in every layout.

Anything else in the feature part is refused with :class:`UnsupportedModelError` naming the
node. The output of the last Conv or pooling before the head is kept too when no activation
follows it (comma.ai's model).

Masks, deepest first: ``M(t) = A(t) * sum over consumers c of scale_up(M(c))`` with
``A(t)`` the channel mean of ``Relu(t)`` for kept tensors (the Relu is left out after ReLU and
ReLU6, whose outputs are not negative) and 1 otherwise; a kept tensor without a masked consumer
starts with ``M(t) = A(t)``. The channel mean is a 1x1 ``Conv`` of weight 1/C, or a ``MatMul``
where onnxruntime holds the tensor in its plain layout (``_PLAIN_LAYOUT``, ``_BLOCK_CHANNELS``).
The mask is ``M(input)``, min-max normalized per image, float32, (N, 1, H, W), as the extra
graph output :data:`MASK_OUTPUT`; on request (``layer_outputs``: the paper's Figure 2 in
vbp-inspect) each kept tensor's ``A(t)`` and ``M(t)`` too (:func:`figure2_outputs`).
Against float32 underflow, masks are divided by their per-image maximum at kept *narrow
points*: tensors every path of the mask flow passes through, so that every term of every later
sum is scaled alike and the normalized mask does not change; only where another product still
follows on the way to the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from .layouts import INPUT_LAYOUTS, NCHW, NHWC
from .rules import UnsupportedModelError

__all__ = ['MASK_OUTPUT', 'RULES', 'VBPGraphPlan', 'add_visualbackprop', 'figure2_outputs',
           'graph_input_layout', 'has_visualbackprop', 'image_input', 'plan_visualbackprop']

MASK_OUTPUT = 'vbp_mask'
MASK_METADATA = 'vbp_ros.mask'  # metadata_props key: the mask output's name
_PREFIX = 'vbp/'
_AVERAGED, _INTERMEDIATE = 'vbp_averaged/', 'vbp_intermediate/'  # + kept tensor: layer outputs
_TINY = float(np.finfo(np.float32).tiny)

ACTIVATION, SPATIAL, IDENTITY, LAYOUT, HEAD, IGNORED, GATE = (
    'activation', 'spatial', 'identity', 'layout', 'head', 'ignored', 'gate')
# What each operator type is to VisualBackProp: adding a layer type is one entry here.
RULES: dict[str, str] = {
    **dict.fromkeys(('Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu', 'Gelu', 'HardSwish',
                     'Mish', 'Clip', 'ThresholdedRelu'), ACTIVATION),
    **dict.fromkeys(('Conv', 'MaxPool', 'AveragePool', 'Pad', 'Slice'), SPATIAL),
    **dict.fromkeys(('BatchNormalization', 'InstanceNormalization', 'GroupNormalization', 'LRN',
                     'Dropout', 'Identity', 'Cast', 'Add', 'Sub', 'Mul', 'Div', 'Sum', 'Neg',
                     'Concat'), IDENTITY),
    'Transpose': LAYOUT,
    **dict.fromkeys(('Flatten', 'Gemm', 'MatMul', 'Reshape', 'GlobalAveragePool',
                     'GlobalMaxPool', 'ReduceMean', 'ReduceMax', 'ReduceSum', 'Squeeze'), HEAD),
    **dict.fromkeys(('Shape', 'Size'), IGNORED),
    # Nonlinear gates: only inside a gated activation x * gate(x) (SiLU, Mish, hard swish, GELU).
    **dict.fromkeys(('Sigmoid', 'HardSigmoid', 'Tanh', 'Softplus', 'Erf'), GATE),
}
_NONNEGATIVE = {'Relu'}  # activations whose output needs no Relu before the channel mean
# Where onnxruntime's CPU provider holds a kept tensor in its plain layout, the channel mean is
# a MatMul, which reads it as it lies; a 1x1 Conv would copy it into the blocked (NCHWc) layout
# first, or, under one block of channels, take a slow plain-input path. That is: after the
# activations it cannot fuse into its blocked convolutions, and for fewer channels than its
# block (16 with AVX-512; 8 with AVX2, where 8 to 15 channels then cost one copy out of the
# blocked layout). Other tensors are blocked, and a 1x1 Conv reads them in place (a MatMul
# would copy them out).
_PLAIN_LAYOUT = {'Elu', 'Selu', 'Celu', 'PRelu', 'Mish', 'ThresholdedRelu'}
_BLOCK_CHANNELS = 16
_POINTWISE_CONSTANT = {'Add', 'Sub', 'Mul', 'Div'}  # with a constant operand: affine, pointwise
_BORDERS = {'Pad', 'Slice'}  # spatial edges that only add or remove rows and columns
_NCHW_READERS = {'Conv', 'MaxPool', 'AveragePool'}  # read their input as (N, C, H, W)
_TO_NCHW = (0, 3, 1, 2)  # the Transpose that takes an NHWC tensor to NCHW


def _axes(layout: str) -> tuple[int, int, int]:
    """The positions of the channel, height and width axes in a tensor of ``layout``."""
    return tuple(layout.index(axis) for axis in 'chw')


@dataclass(frozen=True)
class ScaleUp:
    """One spatial edge: how a mask at the node's output size goes back to its input size."""

    node: str
    op_type: str
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    # Rows and columns cropped at the start (the node's leading pads) and at the end; negative:
    # added as zeros (where a Slice cropped them).
    begin: tuple[int, int]
    end_crop: tuple[int, int]
    output_padding: tuple[int, int]  # rows and columns added at the end
    source_hw: tuple[int, int]
    target_hw: tuple[int, int]

    def describe(self) -> str:
        """One line for vbp-inspect."""
        if self.op_type == 'Pad':
            return (f'{self.node} (Pad): slice {self.source_hw} -> {self.target_hw} from '
                    f'{self.begin}')
        if self.op_type == 'Slice':
            return (f'{self.node} (Slice): zero-pad {self.source_hw} -> {self.target_hw}, '
                    f'{tuple(-b for b in self.begin)} before')
        return (f'{self.node} ({self.op_type}): {self.source_hw} -> {self.target_hw}, kernel '
                f'{self.kernel}, strides {self.strides}, dilations {self.dilations}, crop start '
                f'{self.begin}, crop end {self.end_crop}, output padding {self.output_padding}')


@dataclass(frozen=True)
class Edge:
    """A consumer of a feature tensor that carries a mask back to it."""

    node: str
    target: str  # the consumer's output tensor, whose mask comes back
    scale_up: ScaleUp | None  # None: an identity edge


@dataclass
class VBPGraphPlan:
    """What the rule reads from one graph: kept tensors, edges, and where the masks go.

    Attributes:
        input: the image input's name; ``input_shape`` its (C, H, W), whatever its layout.
        kept: kept tensors in graph order, each with the node kind that made it.
        order: the feature tensors that get a mask, from the deepest to the input.
        edges: per feature tensor, its consumers that carry a mask back.
        narrow: tensors every path of the mask flow passes through.
        rescaled: the kept narrow tensors whose mask meets another product on its way to the
            input: there the mask is divided by its per-image maximum.
        head: the nodes where the feature part ends.
        channels: channel count per kept tensor.
        sizes: (height, width) per feature tensor.
        layouts: the axis order of each feature tensor, 'nchw' or 'nhwc'.
    """

    input: str
    input_shape: tuple[int, int, int]
    kept: dict[str, str] = field(default_factory=dict)
    nonnegative: set[str] = field(default_factory=set)
    order: list[str] = field(default_factory=list)
    edges: dict[str, list[Edge]] = field(default_factory=dict)
    narrow: set[str] = field(default_factory=set)
    rescaled: set[str] = field(default_factory=set)
    head: list[str] = field(default_factory=list)
    channels: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """The plan as lines of text: kept tensors, scale-ups, merges, head."""
        lines = [f'input {self.input}: {self.input_shape[0]}x{self.input_shape[1]}x'
                 f'{self.input_shape[2]} ({self.layouts[self.input]})']
        for name, kind in self.kept.items():
            h, w = self.sizes[name]
            layout = f' ({NHWC})' if self.layouts[name] == NHWC else ''
            lines.append(f'kept {name} ({kind}): {self.channels[name]}x{h}x{w}{layout}')
        for name in self.order:
            edges = [e for e in self.edges.get(name, ()) if e.target in self.sizes]
            for edge in edges:
                if edge.scale_up is not None:
                    lines.append(f'scale-up {edge.scale_up.describe()}')
            if len(edges) > 1:
                lines.append(f'merge at {name}: sum over {", ".join(e.node for e in edges)}')
        lines.append(f'head: {", ".join(self.head) or "(none)"}')
        return lines


# -- reading the graph ----------------------------------------------------------------------------


class _Graph:
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
        self.opset = next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
                          None)
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
                if all(v is not None for v, i in zip(inputs, node.input) if i):
                    value = _evaluate(node, inputs, self.opset)[list(node.output).index(name)]
        self._constants[name] = value
        return value

    def spatial_size(self, name: str, where: str, layout: str) -> tuple[int, int]:
        """(height, width) of a 4-D tensor of ``layout``, from shape inference."""
        shape = self.shapes.get(name)
        _, height, width = _axes(layout)
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


def _not_in_table(node: onnx.NodeProto, where: str) -> str:
    """Why a node the rule table does not know is refused: a standard operator that is not
    there yet, or one of another domain."""
    if node.domain in ('', 'ai.onnx'):
        return (f'{where} in the feature part is not yet in the VisualBackProp rule table '
                '(vbp_ros.explain.onnx_vbp.RULES)')
    return (f"{where} of domain '{node.domain}' in the feature part is not a standard ONNX "
            'operator; export the network with standard operators, or cut the graph before it')


def _attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
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


def graph_input_layout(model: onnx.ModelProto, name: str) -> tuple[str, str] | None:
    """How the graph reads its image input ``name`` where it shows it, and the node that shows
    it: ('nhwc', ...) where a Transpose takes it to NCHW, ('nchw', ...) where a Conv or pooling
    reads it, either behind pointwise nodes, activations, Pad or Slice (tf2onnx's
    normalisation and Cropping2D); None where it shows neither."""
    graph = _Graph(model)
    pending = [name]
    for tensor in pending:
        for node in graph.consumers.get(tensor, ()):
            first = node.input[0] == tensor
            if node.domain not in ('', 'ai.onnx'):
                continue
            if node.op_type == 'Transpose':
                if first and tuple(_attribute(node, 'perm', ())) == _TO_NCHW:
                    return NHWC, f"Transpose '{graph.name(node)}' takes it to NCHW"
            elif node.op_type in _NCHW_READERS:
                if first:
                    return NCHW, f"{node.op_type} '{graph.name(node)}' reads it as NCHW"
            elif RULES.get(node.op_type) in (ACTIVATION, IDENTITY, SPATIAL):
                pending += [output for output in node.output if output not in pending]
    return None


def _input_layout(model: onnx.ModelProto, name: str, layout: str | None) -> str:
    """``layout`` if given, else what the graph shows, else NCHW."""
    found = None if layout else graph_input_layout(model, name)
    return layout or (found[0] if found else NCHW)


def _with_input_size(model: onnx.ModelProto, input_name: str, input_hw: tuple[int, int] | None,
                     layout: str) -> onnx.ModelProto:
    """A shape-inferred copy, the image input's height and width fixed where they are free."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if input_hw is not None:
        dims = next(i for i in model.graph.input if i.name == input_name).type.tensor_type \
            .shape.dim
        for axis, size in zip(_axes(layout)[1:], input_hw):
            if not dims[axis].HasField('dim_value'):
                dims[axis].dim_value = int(size)
    _fold_small_constants(model)
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError as error:
        raise UnsupportedModelError(f'ONNX shape inference failed: {error}') from None


def _fold_small_constants(model: onnx.ModelProto, limit: int = 4096) -> None:
    """Replace nodes that compute small tensors from constants only (pads, shapes, bounds) by
    initializers, so that shape inference sees their values."""
    graph = _Graph(model)
    folded = []
    for node in graph.nodes:
        if node.op_type == 'Constant' or (node.input and all(
                graph.constant(i) is not None for i in node.input if i)):
            values = [graph.constant(o) for o in node.output]
            if all(v is not None and np.asarray(v).size <= limit for v in values):
                folded.append(node)
                model.graph.initializer.extend(
                    numpy_helper.from_array(np.asarray(v), o) for o, v in zip(node.output, values))
    for node in folded:
        model.graph.node.remove(node)


def plan_visualbackprop(model: onnx.ModelProto, input_name: str = '',
                        input_hw: tuple[int, int] | None = None,
                        input_layout: str | None = None) -> VBPGraphPlan:
    """Read the VisualBackProp plan of ``model`` (see the module docstring); the image input's
    height and width must be fixed in the graph or given as ``input_hw``; its layout ('nchw' or
    'nhwc') is ``input_layout``, or by default what the graph shows
    (:func:`graph_input_layout`)."""
    name = image_input(model, input_name)
    layout = _input_layout(model, name, input_layout)
    return _Reader(_Graph(_with_input_size(model, name, input_hw, layout)), name, layout).plan


class _Reader:
    """One pass over the graph in its (topological) node order, then the mask order."""

    def __init__(self, graph: _Graph, input_name: str, layout: str) -> None:
        self.graph = graph
        shape = graph.shapes.get(input_name)
        if shape is None or len(shape) != 4 or None in shape[1:]:
            raise UnsupportedModelError(
                f"image input '{input_name}' needs a fixed channels x height x width shape, "
                f'not {shape}')
        self.plan = VBPGraphPlan(input_name, tuple(int(shape[axis]) for axis in _axes(layout)),
                                 layouts={input_name: layout})
        self.feature: dict[str, int] = {input_name: 0}  # tensor -> position in graph order
        self.gate_root: dict[str, str] = {}  # gate tensors -> the feature tensor they gate
        self.producing_node: dict[str, tuple[onnx.NodeProto, str]] = {}
        self.scaled_activation: dict[str, str] = {}  # GELU's x * (1 + erf(...)), before * 0.5
        for node in graph.nodes:
            if not node.name.startswith(_PREFIX):  # the mask of vbp-export's graphs
                self._read(node)
        if not self.plan.head:
            raise UnsupportedModelError(
                'no head found: the feature part must end in Flatten, Gemm, MatMul, Reshape, '
                'global pooling or a reduction before the outputs')
        self._keep_last_spatial()
        self._order_masks()

    # Each node that consumes a feature tensor, by its rule.
    def _read(self, node: onnx.NodeProto) -> None:
        graph, plan = self.graph, self.plan
        features = [i for i in dict.fromkeys(node.input) if i in self.feature]
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
        if rule in (HEAD, IGNORED):
            if rule == HEAD:
                plan.head.append(graph.name(node))
            return
        if rule == GATE:
            self.gate_root[node.output[0]] = self._root(features[0])
            return
        if rule == LAYOUT:
            self._transpose(node, where, features[0])
            return
        output = node.output[0]
        if rule == SPATIAL:
            if node.input[0] not in self.feature or len(features) > 1:
                raise UnsupportedModelError(f'{where}: its weights or pads come from the image')
            edge = Edge(graph.name(node), output, self._scale_up(node, where))
            self._add(output, [(node.input[0], edge)], SPATIAL, node)
            return
        if len(features) == 1 and features[0] in self.scaled_activation and \
                node.op_type in ('Mul', 'Div'):
            self._add(output, [(features[0], Edge(graph.name(node), output, None))],
                      ACTIVATION, node, self.scaled_activation[features[0]])
            return
        if rule == ACTIVATION:
            self._check_activation(node, where)
            self._add(output, [(node.input[0], Edge(graph.name(node), output, None))],
                      ACTIVATION, node)
            if node.op_type in _NONNEGATIVE or self._clip_is_nonnegative(node):
                plan.nonnegative.add(output)
            return
        channels = _axes(self._layout(features, where))[0]
        if node.op_type == 'Concat' and _attribute(node, 'axis') % 4 != channels:
            raise UnsupportedModelError(f'{where}: concatenation along axis '
                                        f'{_attribute(node, "axis")}; only channels (axis '
                                        f'{channels})')
        self._add(output, [(i, Edge(graph.name(node), output, None)) for i in features],
                  IDENTITY, node)

    def _read_gated(self, node: onnx.NodeProto, where: str, features: list[str],
                    gated: list[str]) -> None:
        """A node on a gate's path: more of the gate, or the Mul that makes x * gate(x)."""
        root = self.gate_root[gated[0]]
        constants = [i for i in node.input if i not in self.feature and i not in self.gate_root]
        if node.op_type == 'Mul' and len(features) == 1 and self._root(features[0]) == root:
            output, kind = node.output[0], self._gate_kind(node)
            edge = [(features[0], Edge(self.graph.name(node), output, None))]
            if self._scale_after(output):
                self._add(output, edge, IDENTITY, node)
                self.scaled_activation[output] = kind
            else:
                self._add(output, edge, ACTIVATION, node, kind)
            return
        if not features and (RULES.get(node.op_type) == GATE or (
                node.op_type in _POINTWISE_CONSTANT and len(gated) == 1 and all(
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
            if rule != IDENTITY or node.op_type not in _POINTWISE_CONSTANT:
                break
            variable = [i for i in node.input if self.graph.constant(i) is None]
            if len(variable) != 1:
                break
            tensor = variable[0]
        return tensor

    def _add(self, output: str, edges: list[tuple[str, Edge]], rule: str,
             node: onnx.NodeProto, kind: str = '', layout: str = '') -> None:
        """Record a new feature tensor (in the layout of its sources unless ``layout`` says
        otherwise), the edges that bring its mask back, and whether it is kept."""
        plan, graph = self.plan, self.graph
        where = f"ONNX node '{graph.name(node)}' ({node.op_type})"
        layout = layout or self._layout([source for source, _ in edges], where)
        size = graph.spatial_size(output, where, layout)
        for source, edge in edges:
            source_size = plan.sizes.get(source, plan.input_shape[1:])
            if edge.scale_up is None and tuple(source_size) != size:
                raise UnsupportedModelError(
                    f"{where}: its operand '{source}' ({source_size}) and its output ({size}) "
                    'differ in size; only Conv, pooling, Pad and Slice may change the size')
        self.feature[output] = len(self.feature)
        self.producing_node[output] = (node, rule)
        plan.sizes[output] = size
        plan.layouts[output] = layout
        for source, edge in edges:
            plan.edges.setdefault(source, []).append(edge)
        if rule == ACTIVATION:
            plan.kept[output] = kind or node.op_type
            plan.channels[output] = self._channels(output, where)

    def _layout(self, tensors: list[str], where: str) -> str:
        """The layout the feature tensors ``tensors`` share."""
        layouts = sorted({self.plan.layouts[tensor] for tensor in tensors})
        if len(layouts) > 1:
            raise UnsupportedModelError(f'{where}: its operands are in different layouts '
                                        f'({" and ".join(layouts)})')
        return layouts[0]

    def _transpose(self, node: onnx.NodeProto, where: str, source: str) -> None:
        """A Transpose between NCHW and NHWC: an identity edge that changes the layout; one
        whose result only feeds the head belongs to the head."""
        graph, output = self.graph, node.output[0]
        if all(RULES.get(consumer.op_type) in (HEAD, IGNORED)
               for consumer in graph.consumers.get(output, ())):
            self.plan.head.append(graph.name(node))
            return
        layout = self.plan.layouts[source]
        perm = _attribute(node, 'perm') or range(3, -1, -1)
        permuted = ''.join(layout[axis] for axis in perm)
        if permuted not in INPUT_LAYOUTS:
            raise UnsupportedModelError(
                f'{where}: it permutes an {layout.upper()} feature map into '
                f'{permuted.upper()}; only Transposes between NCHW and NHWC, or into the head, '
                'are in the VisualBackProp rule table')
        self._add(output, [(source, Edge(graph.name(node), output, None))], IDENTITY, node,
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

    def _channels(self, tensor: str, where: str) -> int:
        shape = self.graph.shapes.get(tensor)
        axis = _axes(self.plan.layouts[tensor])[0]
        if shape is None or shape[axis] is None:
            raise UnsupportedModelError(f"{where}: the channel count of '{tensor}' is not known")
        return int(shape[axis])

    def _check_activation(self, node: onnx.NodeProto, where: str) -> None:
        if node.op_type == 'PRelu' and node.input[1] in self.feature:
            raise UnsupportedModelError(f'{where}: its slope comes from the image')
        if node.op_type == 'Clip' and any(i in self.feature for i in node.input[1:]):
            raise UnsupportedModelError(f'{where}: its bounds come from the image')

    def _clip_is_nonnegative(self, node: onnx.NodeProto) -> bool:
        if node.op_type != 'Clip':
            return False
        low = (self.graph.constant(node.input[1]) if len(node.input) > 1 and node.input[1]
               else _attribute(node, 'min'))
        return low is not None and float(np.asarray(low)) >= 0.0

    def _scale_up(self, node: onnx.NodeProto, where: str) -> ScaleUp:
        graph = self.graph
        layout = self.plan.layouts[node.input[0]]
        if node.op_type in _NCHW_READERS and layout != NCHW:
            raise UnsupportedModelError(
                f"{where} reads its input '{node.input[0]}' as NCHW, but that tensor is "
                'channels-last (NHWC); a Transpose to NCHW must come first')
        source_hw = graph.spatial_size(node.output[0], where, layout)
        target_hw = graph.spatial_size(node.input[0], where, layout)
        if node.op_type == 'Pad':
            return self._pad_edge(node, where, layout, source_hw, target_hw)
        if node.op_type == 'Slice':
            return self._slice_edge(node, where, layout, source_hw, target_hw)
        if node.op_type == 'Conv':
            weight = graph.shapes.get(node.input[1]) or np.shape(graph.constant(node.input[1]))
            kernel = tuple(_attribute(node, 'kernel_shape') or weight[2:])
        else:
            kernel = tuple(_attribute(node, 'kernel_shape'))
        if len(kernel) != 2 or None in kernel:
            raise UnsupportedModelError(f'{where}: only two-dimensional kernels are supported')
        strides = tuple(_attribute(node, 'strides') or (1, 1))
        dilations = tuple(_attribute(node, 'dilations') or (1, 1))
        pads = _attribute(node, 'pads') or (0, 0, 0, 0)
        begin = tuple(pads[:2])
        auto_pad = _attribute(node, 'auto_pad', 'NOTSET')
        if auto_pad in ('SAME_UPPER', 'SAME_LOWER'):
            totals = [max(0, (o - 1) * s + d * (k - 1) + 1 - i) for o, s, d, k, i in
                      zip(source_hw, strides, dilations, kernel, target_hw)]
            begin = tuple(t // 2 if auto_pad == 'SAME_UPPER' else t - t // 2 for t in totals)
        elif auto_pad == 'VALID':
            begin = (0, 0)
        end_crop, output_padding = [], []
        for axis in range(2):
            full = (source_hw[axis] - 1) * strides[axis] + dilations[axis] * (kernel[axis] - 1) + 1
            extra = full - begin[axis] - target_hw[axis]
            end_crop.append(max(extra, 0))
            output_padding.append(max(-extra, 0))
            if output_padding[-1] >= max(strides[axis], dilations[axis]):
                raise UnsupportedModelError(
                    f'{where}: its output size {source_hw} does not follow from its input size '
                    f'{target_hw} and geometry')
        return ScaleUp(graph.name(node), node.op_type, kernel, strides, dilations, begin,
                       tuple(end_crop), tuple(output_padding), source_hw, target_hw)

    def _pad_edge(self, node: onnx.NodeProto, where: str, layout: str,
                  source_hw: tuple[int, int], target_hw: tuple[int, int]) -> ScaleUp:
        mode = _attribute(node, 'mode', 'constant')
        pads = (self.graph.constant(node.input[1]) if len(node.input) > 1
                else _attribute(node, 'pads'))
        axes = self.graph.constant(node.input[3]) if len(node.input) > 3 and node.input[3] \
            else None
        if pads is None or mode != 'constant' or axes is not None:
            raise UnsupportedModelError(
                f'{where}: only constant padding with constant pads is supported')
        pads = [int(p) for p in np.asarray(pads).ravel()]
        rank = len(pads) // 2
        _, height, width = _axes(layout)
        if min(pads) < 0 or any(pads[axis] or pads[rank + axis] for axis in range(rank)
                                if axis not in (height, width)):
            raise UnsupportedModelError(f'{where}: only non-negative padding of the height and '
                                        'width is supported')
        begin = (pads[height], pads[width])
        end = (pads[rank + height], pads[rank + width])
        return ScaleUp(self.graph.name(node), 'Pad', (1, 1), (1, 1), (1, 1), begin, end, (0, 0),
                       source_hw, target_hw)

    def _slice_edge(self, node: onnx.NodeProto, where: str, layout: str,
                    source_hw: tuple[int, int], target_hw: tuple[int, int]) -> ScaleUp:
        """A crop of height or width (and any slice of channels): the rows and columns it
        cuts are added back to the mask as zeros."""
        starts, ends, axes, steps = self._slice_bounds(node, where)
        channels, height, width = _axes(layout)
        added = {height: (0, 0), width: (0, 0)}
        size = {height: target_hw[0], width: target_hw[1]}
        for axis, start, end, step in zip(axes, starts, ends, steps):
            if axis == channels:
                continue
            if axis not in added:
                raise UnsupportedModelError(f'{where}: it slices the batch axis')
            if step != 1:
                raise UnsupportedModelError(
                    f'{where}: a Slice of height or width with step {step}; only crops (step 1) '
                    'are in the VisualBackProp rule table')
            kept = range(size[axis])[start:end]
            added[axis] = (kept.start, size[axis] - kept.stop)
        (top, bottom), (left, right) = added[height], added[width]
        return ScaleUp(self.graph.name(node), 'Slice', (1, 1), (1, 1), (1, 1), (-top, -left),
                       (-bottom, -right), (0, 0), source_hw, target_hw)

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
            values = [_attribute(node, name) for name in ('starts', 'ends', 'axes')] + [None]
        starts, ends, axes, steps = (None if v is None else [int(i) for i in np.ravel(v)]
                                     for v in values)
        axes = [axis % 4 for axis in axes] if axes is not None else list(range(len(starts)))
        return starts, ends, axes, steps or [1] * len(axes)

    def _keep_last_spatial(self) -> None:
        """Keep a Conv or pooling output after which no activation and no other Conv or
        pooling follows before the head (comma.ai's last convolution)."""
        plan = self.plan
        later: dict[str, bool] = {}
        for tensor in sorted(self.feature, key=self.feature.get, reverse=True):
            later[tensor] = any(
                e.target in plan.kept or e.scale_up is not None or later.get(e.target, False)
                for e in plan.edges.get(tensor, ()))
        for tensor, (node, rule) in self.producing_node.items():
            if rule == SPATIAL and node.op_type != 'Pad' and not later[tensor]:
                plan.kept[tensor] = node.op_type
                plan.channels[tensor] = self._channels(tensor, self.graph.name(node))
        plan.kept = dict(sorted(plan.kept.items(), key=lambda item: self.feature[item[0]]))

    def _order_masks(self) -> None:
        """Which tensors get a mask (deepest first), and the narrow points among them."""
        plan = self.plan
        masked: set[str] = set()
        for tensor in sorted(self.feature, key=self.feature.get, reverse=True):
            consumers = [e for e in plan.edges.get(tensor, ()) if e.target in masked]
            plan.edges[tensor] = consumers
            if consumers or tensor in plan.kept:
                masked.add(tensor)
                plan.order.append(tensor)
        if plan.input not in masked:
            raise UnsupportedModelError(
                'no activation or convolution between the image input and the head: nothing '
                'for VisualBackProp to keep')
        position = {tensor: self.feature[tensor] for tensor in plan.order}
        last_use = {t: max((position[e.target] for e in plan.edges[t]), default=position[t])
                    for t in plan.order}
        reach = -1
        for tensor in sorted(plan.order, key=position.get):
            if reach <= position[tensor]:
                plan.narrow.add(tensor)
            reach = max(reach, last_use[tensor])
        # After the last product a division by the maximum guards nothing: the min-max
        # normalization removes any per-image factor.
        meets_product = dict.fromkeys(plan.order, False)
        for tensor in reversed(plan.order):  # the input first
            for edge in plan.edges[tensor]:
                meets_product[edge.target] |= meets_product[tensor] or tensor in plan.kept
        plan.rescaled = {t for t in plan.narrow & set(plan.kept) if meets_product[t]}


# -- writing the mask into the graph --------------------------------------------------------------


class _Writer:
    """Appends the mask nodes of a plan to a graph."""

    def __init__(self, model: onnx.ModelProto, plan: VBPGraphPlan, types: dict[str, int],
                 opset: int) -> None:
        self.graph = model.graph
        self.plan = plan
        self.types = types
        self.opset = opset
        self.count = 0
        self.constants: dict[tuple, str] = {}
        self.layers: dict[str, tuple[str, str]] = {}  # kept tensor: its A(t) and M(t)

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f'{_PREFIX}{stem}_{self.count}'

    def node(self, op_type: str, inputs: Iterable[str], stem: str, **attributes: object) -> str:
        output = self.fresh(stem)
        self.graph.node.append(helper.make_node(op_type, list(inputs), [output],
                                                name=output, **attributes))
        return output

    def constant(self, key: tuple, make: Callable[[], np.ndarray]) -> str:
        if key not in self.constants:
            name = self.fresh('const')
            self.graph.initializer.append(numpy_helper.from_array(make(), name))
            self.constants[key] = name
        return self.constants[key]

    def reduce(self, op_type: str, tensor: str, axes: tuple[int, ...]) -> str:
        if self.opset >= 18 or (op_type == 'ReduceSum' and self.opset >= 13):
            axes_name = self.constant(('axes', axes), lambda: np.asarray(axes, np.int64))
            return self.node(op_type, [tensor, axes_name], op_type.lower(), keepdims=1)
        return self.node(op_type, [tensor], op_type.lower(), axes=list(axes), keepdims=1)

    def averaged_map(self, tensor: str) -> str:
        """A(t): the channel mean of max(t, 0), float32."""
        original = tensor
        if self.types.get(tensor, TensorProto.FLOAT) != TensorProto.FLOAT:
            tensor = self.node('Cast', [tensor], 'cast', to=TensorProto.FLOAT)
        if tensor not in self.plan.nonnegative:
            tensor = self.node('Relu', [tensor], 'positive')
        channels = self.plan.channels[original]
        if self.plan.layouts[original] == NHWC:
            return self._channel_mean_channels_last(tensor, channels, self.plan.sizes[original])
        if self.plan.kept[original] in _PLAIN_LAYOUT or channels < _BLOCK_CHANNELS:
            return self._channel_mean_by_matmul(tensor, channels, self.plan.sizes[original])
        weight = self.constant(('mean', channels),
                               lambda: np.full((1, channels, 1, 1), 1.0 / channels, np.float32))
        return self.node('Conv', [tensor, weight], 'channel_mean', kernel_shape=[1, 1])

    def _channel_mean_by_matmul(self, tensor: str, channels: int, size: tuple[int, int]) -> str:
        """The channel mean as (N, C, H*W), multiplied by a row of 1/C, back to (N, 1, H, W)."""
        rows = self.constant(('rows', channels), lambda: np.asarray([0, channels, -1], np.int64))
        weight = self.constant(('mean_row', channels),
                               lambda: np.full((1, channels), 1.0 / channels, np.float32))
        mean = self.node('MatMul', [weight, self.node('Reshape', [tensor, rows], 'rows')],
                         'channel_mean')
        shape = self.constant(('map', *size), lambda: np.asarray([0, 1, *size], np.int64))
        return self.node('Reshape', [mean, shape], 'map')

    def _channel_mean_channels_last(self, tensor: str, channels: int, size: tuple[int, int]
                                    ) -> str:
        """(N, H, W, C) times a column of 1/C, then (N, H, W, 1) read as (N, 1, H, W)."""
        weight = self.constant(('mean_column', channels),
                               lambda: np.full((channels, 1), 1.0 / channels, np.float32))
        mean = self.node('MatMul', [tensor, weight], 'channel_mean')
        shape = self.constant(('map', *size), lambda: np.asarray([0, 1, *size], np.int64))
        return self.node('Reshape', [mean, shape], 'map')

    def scale_up(self, mask: str, step: ScaleUp) -> str:
        if step.op_type == 'Pad':
            (top, left), (height, width) = step.begin, step.target_hw
            starts = self.constant(('i64', top, left), lambda: np.asarray([top, left], np.int64))
            ends = self.constant(('i64', top + height, left + width),
                                 lambda: np.asarray([top + height, left + width], np.int64))
            axes = self.constant(('i64', 2, 3), lambda: np.asarray([2, 3], np.int64))
            return self.node('Slice', [mask, starts, ends, axes], 'unpad')
        if step.op_type == 'Slice':
            return self._uncrop(mask, step)
        # The all-ones kernel is separable: one pass per axis does k instead of k * k additions
        # per pixel (onnxruntime's one-channel ConvTranspose costs in proportion), columns
        # first, as in vbp.py. Axes the edge leaves alone (1x1 convolutions) take no node.
        for axis in (1, 0):
            geometry = (step.kernel[axis], step.strides[axis], step.begin[axis],
                        step.end_crop[axis], step.output_padding[axis])
            if geometry != (1, 1, 0, 0, 0):
                mask = self._scale_up_axis(mask, step, axis)
        return mask

    def _uncrop(self, mask: str, step: ScaleUp) -> str:
        """A Slice's edge: the rows and columns it cut, added back to the mask as zeros."""
        (top, left), (bottom, right) = step.begin, step.end_crop
        pads = [0, 0, -top, -left, 0, 0, -bottom, -right]
        if not any(pads):  # a Slice of channels only
            return mask
        if self.opset < 11:
            return self.node('Pad', [mask], 'uncrop', pads=pads)
        amounts = self.constant(('pads', *pads), lambda: np.asarray(pads, np.int64))
        return self.node('Pad', [mask, amounts], 'uncrop')

    def _scale_up_axis(self, mask: str, step: ScaleUp, axis: int) -> str:
        def along(value: int, other: int) -> list[int]:
            return [value, other] if axis == 0 else [other, value]

        kernel = along(step.kernel[axis], 1)
        ones = self.constant(('ones', *kernel), lambda: np.ones((1, 1, *kernel), np.float32))
        return self.node('ConvTranspose', [mask, ones], 'scale_up', kernel_shape=kernel,
                         strides=along(step.strides[axis], 1),
                         dilations=along(step.dilations[axis], 1),
                         pads=along(step.begin[axis], 0) + along(step.end_crop[axis], 0),
                         output_padding=along(step.output_padding[axis], 0))

    def rescale(self, mask: str) -> str:
        """Divide each image's mask by its maximum (never by less than float32's tiny)."""
        peak = self.reduce('ReduceMax', mask, (2, 3))
        tiny = self.constant(('tiny',), lambda: np.asarray(_TINY, np.float32))
        return self.node('Div', [mask, self.node('Max', [peak, tiny], 'peak')], 'rescaled')

    def normalize(self, mask: str) -> str:
        """Per-image min-max to [0, 1]; a constant mask gives zeros."""
        low = self.reduce('ReduceMin', mask, (2, 3))
        span = self.node('Sub', [self.reduce('ReduceMax', mask, (2, 3)), low], 'span')
        tiny = self.constant(('tiny',), lambda: np.asarray(_TINY, np.float32))
        shifted = self.node('Sub', [mask, low], 'shifted')
        self.graph.node.append(helper.make_node(
            'Div', [shifted, self.node('Max', [span, tiny], 'span')], [MASK_OUTPUT],
            name=_PREFIX + 'normalize'))
        return MASK_OUTPUT

    def write(self) -> None:
        plan = self.plan
        masks: dict[str, str] = {}
        for tensor in plan.order:
            terms = [masks[e.target] if e.scale_up is None else
                     self.scale_up(masks[e.target], e.scale_up) for e in plan.edges[tensor]]
            total = terms[0] if len(terms) == 1 else (
                self.node('Sum', terms, 'merge') if terms else None)
            mask = total
            if tensor in plan.kept:
                averaged = self.averaged_map(tensor)
                mask = averaged if total is None else self.node('Mul', [averaged, total], 'mask')
            if tensor in plan.rescaled:
                mask = self.rescale(mask)
            masks[tensor] = mask
            if tensor in plan.kept:
                self.layers[tensor] = (averaged, mask)
        self.normalize(masks[plan.input])
        channels, height, width = plan.input_shape
        batch = next(i for i in self.graph.input if i.name == plan.input) \
            .type.tensor_type.shape.dim[0]
        batch_dim = batch.dim_param or (batch.dim_value if batch.HasField('dim_value') else None)
        self.graph.output.append(helper.make_tensor_value_info(
            MASK_OUTPUT, TensorProto.FLOAT, [batch_dim, 1, height, width]))

    def expose_layers(self) -> None:
        """Every kept tensor's averaged map and intermediate mask as graph outputs, shallowest
        first, as :func:`figure2_outputs` reads them (after :meth:`write`)."""
        batch = next(o for o in self.graph.output if o.name == MASK_OUTPUT).type.tensor_type \
            .shape.dim[0]
        for tensor in self.plan.kept:
            for name, value in zip((_AVERAGED + tensor, _INTERMEDIATE + tensor),
                                   self.layers[tensor]):
                self.graph.node.append(helper.make_node('Identity', [value], [name],
                                                        name=_PREFIX + name))
                self.graph.output.append(helper.make_tensor_value_info(
                    name, TensorProto.FLOAT,
                    [batch.dim_param or batch.dim_value or None, 1, *self.plan.sizes[tensor]]))


def has_visualbackprop(model: onnx.ModelProto) -> bool:
    """Whether the graph already has the VisualBackProp mask output (e.g. from vbp-export)."""
    return any(output.name == MASK_OUTPUT for output in model.graph.output)


def figure2_outputs(output_names: Iterable[str]) -> list[tuple[str, str, str]]:
    """Among a graph's outputs, those of ``add_visualbackprop(..., layer_outputs=True)``: per
    kept tensor, shallowest first, (tensor, averaged map output, intermediate mask output), the
    outputs (N, 1, h, w) float32 each."""
    return [(name[len(_AVERAGED):], name, _INTERMEDIATE + name[len(_AVERAGED):])
            for name in output_names if name.startswith(_AVERAGED)]


def add_visualbackprop(model: onnx.ModelProto, input_name: str = '',
                       input_hw: tuple[int, int] | None = None,
                       input_layout: str | None = None,
                       layer_outputs: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with the VisualBackProp mask as the extra output :data:`MASK_OUTPUT`
    ((N, 1, H, W) float32 in [0, 1] at the input size, in every layout), checked by
    ``onnx.checker``. The image input's height and width are fixed to ``input_hw`` where the
    graph leaves them free; ``input_layout`` as in :func:`plan_visualbackprop`. With
    ``layer_outputs``, every kept tensor's averaged map and intermediate mask are outputs too,
    after the mask (the paper's Figure 2; :func:`figure2_outputs` names them)."""
    if has_visualbackprop(model):
        raise UnsupportedModelError(f"the graph already has an output '{MASK_OUTPUT}'")
    name = image_input(model, input_name)
    layout = _input_layout(model, name, input_layout)
    inferred = _with_input_size(model, name, input_hw, layout)
    graph = _Graph(inferred)
    plan = _Reader(graph, name, layout).plan
    result = onnx.ModelProto.FromString(model.SerializeToString())
    if input_hw is not None:  # the fixed size, as the plan was read with it
        next(i for i in result.graph.input if i.name == name).CopyFrom(
            next(i for i in inferred.graph.input if i.name == name))
    writer = _Writer(result, plan, graph.types, graph.opset or 17)
    writer.write()
    if layer_outputs:
        writer.expose_layers()
    entry = result.metadata_props.add()
    entry.key, entry.value = MASK_METADATA, MASK_OUTPUT
    try:
        onnx.checker.check_model(result)
    except onnx.checker.ValidationError as error:
        raise UnsupportedModelError(f'the graph with the mask does not check: {error}') from None
    return result
