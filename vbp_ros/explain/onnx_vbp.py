"""VisualBackProp inside an ONNX graph: the rule of docs/design.md, "VisualBackProp on any
network", read from the graph and appended to it as ordinary ONNX nodes, so that one
``session.run`` returns the network's outputs and the mask (ONNX Runtime, TensorRT or any other
ONNX engine on the car). This module holds the entry points; the parts are
:mod:`~vbp_ros.explain.onnx_graph` (graph access, constants, shape inference, the image input),
:mod:`~vbp_ros.explain.onnx_read` (the operator table :data:`RULES` and the reader) and
:mod:`~vbp_ros.explain.onnx_write` (the mask nodes). The reader makes the same
:class:`~vbp_ros.explain.mask_graph.MaskGraph` as the torch.fx reader of PyTorch networks:
one rule vocabulary, one choice of kept tensors and rescaling points, one plan text.

Reading. The graph is followed from its image input. A node that consumes a *feature tensor*
(the input, or a tensor computed from it before the head) is looked up in :data:`RULES`, one
entry per operator type, a rule kind of :mod:`~vbp_ros.explain.mask_graph`:

- ``activation`` (Relu, LeakyRelu, PRelu, Elu, Selu, Celu, Gelu, HardSwish, Mish, Clip as
  ReLU6, ThresholdedRelu): its output is *kept*. Gated activations, ``x * gate(x)`` with a gate
  of Sigmoid (SiLU), HardSigmoid (hard swish), Tanh(Softplus) (Mish) or the erf form of GELU,
  are found as their ``Mul``; the gate's own nodes take no part.
- ``spatial`` (Conv, MaxPool, AveragePool, Pad, Slice): the mask is scaled up along the edge
  by the one-channel all-ones transposed convolution with the node's kernel, strides, dilations
  and pads (explicit or ``auto_pad``), its output padding (or extra end crop, for
  ``ceil_mode``) making the size equal the node's input size exactly. The kernel is separable:
  two one-dimensional passes, columns then rows, and none along an axis the node leaves alone
  (1x1 convolutions): each a ``ConvTranspose``, or, along 5 taps or more on small masks, a
  ``MatMul`` with the axis's scale-up matrix (:meth:`AxisGeometry.scale_up_matrix`), which
  onnxruntime runs faster there. A Pad's edge is a ``Slice`` of the mask; a Slice of height or
  width (a crop with constant bounds and step 1: Keras' Cropping2D, ``x[:, :, a:b]``)
  is the mirror, the mask zero-padded back to the Slice's input size; a Slice of channels
  passes the mask unchanged.
- ``identity`` (BatchNormalization and other normalizations, Dropout, Identity, Cast, pointwise
  Add/Sub/Mul/Div, residual adds, channel Concat, QuantizeLinear and DequantizeLinear): the
  mask passes unchanged to every operand that is a feature tensor. In a QDQ graph a
  DequantizeLinear whose zero point is its integer type's minimum clips at 0: it is the ReLU
  that asymmetric quantization folded into its scales, an ``activation``, unless what was
  quantized can never be negative (the reader follows which feature tensors cannot).
- ``layout`` (Transpose): see Layouts below.
- onnxruntime's FusedConv (a graph its optimizer saved) is read as the Conv, residual Add and
  activation it fused, and FusedGemm as its Gemm
  (:func:`~vbp_ros.explain.onnx_graph.with_input_size`).
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
node. The output of the last Conv, pooling, Pad or Slice before the head is kept too when no
activation follows it (comma.ai's model); tensors from which no head is reached take no part.

Masks, deepest first: ``M(t) = A(t) * sum over consumers c of scale_up(M(c))`` with
``A(t)`` the channel mean of ``Relu(t)`` for kept tensors (the Relu is left out after ReLU and
ReLU6, whose outputs are not negative) and 1 otherwise; a kept tensor without a masked consumer
starts with ``M(t) = A(t)``. The channel mean is a 1x1 ``Conv`` of weight 1/C, or a ``MatMul``
where onnxruntime holds the tensor in its plain layout (see :mod:`~vbp_ros.explain.onnx_write`).
The mask is ``M(input)``, min-max normalized per image, float32, (N, 1, H, W), as the extra
graph output :data:`MASK_OUTPUT`; on request (``layer_outputs``: the paper's Figure 2 in
vbp-inspect) each kept tensor's ``A(t)`` and ``M(t)`` too (:func:`figure2_outputs`).
Against float32 underflow and overflow, masks are divided by their per-image maximum at
*narrow points* (:func:`~vbp_ros.explain.mask_graph.narrow_points`) that are kept or merge
several masks: tensors every path from the deepest kept tensors to the input passes, so that
every term of every later sum is scaled alike and the normalized mask does not change; only
where another product still follows on the way to the input.
"""

from __future__ import annotations

from typing import Iterable

import onnx

from .layouts import NCHW, NHWC
from .mask_graph import Activation, Identity, MaskGraph, Spatial, UnsupportedModelError
from .onnx_graph import OnnxGraph, attribute, image_input, with_input_size
from .onnx_read import NCHW_READERS, RULES, read_mask_graph
from .onnx_write import AVERAGED, INTERMEDIATE, MASK_OUTPUT, MaskWriter

__all__ = ['MASK_OUTPUT', 'RULES', 'add_visualbackprop', 'figure2_outputs', 'graph_input_layout',
           'has_visualbackprop', 'image_input', 'plan_visualbackprop']

MASK_METADATA = 'vbp_ros.mask'  # metadata_props key: the mask output's name
_TO_NCHW = (0, 3, 1, 2)  # the Transpose that takes an NHWC tensor to NCHW


def graph_input_layout(model: onnx.ModelProto, name: str) -> tuple[str, str] | None:
    """How the graph reads its image input ``name`` where it shows it, and the node that shows
    it: ('nhwc', ...) where a Transpose takes it to NCHW, ('nchw', ...) where a Conv or pooling
    reads it, either behind pointwise nodes, activations, Pad or Slice (tf2onnx's
    normalisation and Cropping2D); None where it shows neither."""
    graph = OnnxGraph(model)
    pending = [name]
    for tensor in pending:
        for node in graph.consumers.get(tensor, ()):
            first = node.input[0] == tensor
            if node.domain not in ('', 'ai.onnx'):
                continue
            if node.op_type == 'Transpose':
                if first and tuple(attribute(node, 'perm', ())) == _TO_NCHW:
                    return NHWC, f"Transpose '{graph.name(node)}' takes it to NCHW"
            elif node.op_type in NCHW_READERS:
                if first:
                    return NCHW, f"{node.op_type} '{graph.name(node)}' reads it as NCHW"
            elif isinstance(RULES.get(node.op_type), (Activation, Identity, Spatial)):
                pending += [output for output in node.output if output not in pending]
    return None


def _input_layout(model: onnx.ModelProto, name: str, layout: str | None) -> str:
    """``layout`` if given, else what the graph shows, else NCHW."""
    found = None if layout else graph_input_layout(model, name)
    return layout or (found[0] if found else NCHW)


def plan_visualbackprop(model: onnx.ModelProto, input_name: str = '',
                        input_hw: tuple[int, int] | None = None,
                        input_layout: str | None = None) -> MaskGraph:
    """Read the VisualBackProp plan of ``model`` (see the module docstring; ``.describe()``
    gives it in words, as for PyTorch networks); the image input's
    height and width must be fixed in the graph or given as ``input_hw``; its layout ('nchw' or
    'nhwc') is ``input_layout``, or by default what the graph shows
    (:func:`graph_input_layout`)."""
    name = image_input(model, input_name)
    layout = _input_layout(model, name, input_layout)
    return read_mask_graph(OnnxGraph(with_input_size(model, name, input_hw, layout)), name,
                           layout)


def has_visualbackprop(model: onnx.ModelProto) -> bool:
    """Whether the graph already has the VisualBackProp mask output (e.g. from vbp-export)."""
    return any(output.name == MASK_OUTPUT for output in model.graph.output)


def figure2_outputs(output_names: Iterable[str]) -> list[tuple[str, str, str]]:
    """Among a graph's outputs, those of ``add_visualbackprop(..., layer_outputs=True)``: per
    kept tensor, shallowest first, (tensor, averaged map output, intermediate mask output), the
    outputs (N, 1, h, w) float32 each."""
    return [(name[len(AVERAGED):], name, INTERMEDIATE + name[len(AVERAGED):])
            for name in output_names if name.startswith(AVERAGED)]


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
    inferred = with_input_size(model, name, input_hw, layout)
    graph = OnnxGraph(inferred)
    plan = read_mask_graph(graph, name, layout)
    result = onnx.ModelProto.FromString(model.SerializeToString())
    if input_hw is not None:  # the fixed size, as the plan was read with it
        next(i for i in result.graph.input if i.name == name).CopyFrom(
            next(i for i in inferred.graph.input if i.name == name))
    writer = MaskWriter(result, plan, graph.types, graph.opset or 17)
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
