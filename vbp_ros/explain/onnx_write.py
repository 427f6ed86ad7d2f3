"""Writing VisualBackProp's mask into an ONNX graph: the nodes that compute it from a
:class:`~vbp_ros.explain.mask_graph.MaskGraph`, appended to the graph as ordinary ONNX nodes
(the rule and its node layout: :mod:`vbp_ros.explain.onnx_vbp`)."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .layouts import NHWC
from .geometry import AxisGeometry, Geometry
from .onnx_graph import add_initializer
from .mask_graph import TINY, MaskGraph, MaskTensor
from .onnx_read import MASK_PREFIX

__all__ = ['MASK_OUTPUT', 'AVERAGED', 'INTERMEDIATE', 'MaskWriter']

MASK_OUTPUT = 'vbp_mask'
AVERAGED, INTERMEDIATE = 'vbp_averaged/', 'vbp_intermediate/'  # + kept tensor: layer outputs
# Where onnxruntime's CPU provider holds a kept tensor in its plain layout, the channel mean is
# a MatMul, which reads it as it lies; a 1x1 Conv would copy it into the blocked (NCHWc) layout
# first, or, under one block of channels, take a slow plain-input path. That is: after the
# activations it cannot fuse into its blocked convolutions, and for fewer channels than its
# block (16 with AVX-512; 8 with AVX2, where 8 to 15 channels then cost one copy out of the
# blocked layout). Other tensors are blocked, and a 1x1 Conv reads them in place (a MatMul
# would copy them out).
_PLAIN_LAYOUT = {'Elu', 'Selu', 'Celu', 'PRelu', 'Mish', 'ThresholdedRelu'}
_BLOCK_CHANNELS = 16
# Along an axis of at least WIDE_KERNEL taps, a mask of up to MATMUL_SCALE_UP_PIXELS pixels is
# scaled up by a MatMul with the axis's scale-up matrix: it multiplies by zeros, but onnxruntime's
# one-channel ConvTranspose costs in proportion to its taps, more there. Narrower kernels gain
# at most half a microsecond an edge, and lose on the bundled model (docs/benchmarks.md, "The
# mask's cost in each backend"). The matrix is held to MATMUL_SCALE_UP_ENTRIES entries (256 KB),
# which an elongated mask (one row of 4096 pixels) would exceed a thousandfold.
MATMUL_SCALE_UP_PIXELS = 4096
MATMUL_SCALE_UP_ENTRIES = 1 << 16
WIDE_KERNEL = 5


class MaskWriter:
    """Appends the mask nodes of a mask graph to a graph."""

    def __init__(self, model: onnx.ModelProto, plan: MaskGraph, types: dict[str, int],
                 opset: int) -> None:
        self.model = model
        self.graph = model.graph
        self.plan = plan
        self.types = types
        self.opset = opset
        self.count = 0
        self.constants: dict[tuple, str] = {}
        self.layers: dict[str, tuple[str, str]] = {}  # kept tensor: its A(t) and M(t)

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f'{MASK_PREFIX}{stem}_{self.count}'

    def node(self, op_type: str, inputs: Iterable[str], stem: str, **attributes: object) -> str:
        output = self.fresh(stem)
        self.graph.node.append(helper.make_node(op_type, list(inputs), [output],
                                                name=output, **attributes))
        return output

    def constant(self, key: tuple, make: Callable[[], np.ndarray]) -> str:
        if key not in self.constants:
            name = self.fresh('const')
            add_initializer(self.model, numpy_helper.from_array(make(), name))
            self.constants[key] = name
        return self.constants[key]

    def reduce(self, op_type: str, tensor: str, axes: tuple[int, ...]) -> str:
        if self.opset >= 18 or (op_type == 'ReduceSum' and self.opset >= 13):
            axes_name = self.constant(('axes', axes), lambda: np.asarray(axes, np.int64))
            return self.node(op_type, [tensor, axes_name], op_type.lower(), keepdims=1)
        return self.node(op_type, [tensor], op_type.lower(), axes=list(axes), keepdims=1)

    def averaged_map(self, kept: MaskTensor) -> str:
        """A(t): the channel mean of max(t, 0), float32."""
        tensor = kept.name
        if self.types.get(tensor, TensorProto.FLOAT) != TensorProto.FLOAT:
            tensor = self.node('Cast', [tensor], 'cast', to=TensorProto.FLOAT)
        if not kept.kept.nonnegative:
            tensor = self.node('Relu', [tensor], 'positive')
        channels = kept.kept.channels
        if kept.layout == NHWC:
            return self._channel_mean_channels_last(tensor, channels, kept.size)
        if kept.kept.op in _PLAIN_LAYOUT or channels < _BLOCK_CHANNELS:
            return self._channel_mean_by_matmul(tensor, channels, kept.size)
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

    def scale_up(self, mask: str, geometry: Geometry, source: tuple[int, int],
                 target: tuple[int, int]) -> str:
        """The mask of size ``source`` brought back along a spatial edge to size ``target``."""
        if geometry.kernel == (1, 1) and geometry.stride == (1, 1):
            return self._borders(mask, geometry, source, target)
        # The all-ones kernel is separable: one pass per axis does k instead of k * k additions
        # per pixel (onnxruntime's one-channel ConvTranspose costs in proportion), columns
        # first, as in vbp.py. Axes the edge leaves alone take no node.
        pixels = source[0] * source[1]
        for axis in (1, 0):
            along = geometry.axes[axis]
            if along.is_identity and source[axis] == target[axis]:
                continue
            if (along.kernel >= WIDE_KERNEL and pixels <= MATMUL_SCALE_UP_PIXELS
                    and source[axis] * target[axis] <= MATMUL_SCALE_UP_ENTRIES):
                mask = self._scale_up_axis_by_matmul(mask, along, axis, source[axis],
                                                     target[axis])
            else:
                mask = self._scale_up_axis(mask, along, axis, source[axis], target[axis])
        return mask

    def _scale_up_axis_by_matmul(self, mask: str, geometry: AxisGeometry, axis: int,
                                 source: int, target: int) -> str:
        """Rows: (target, source) @ mask; columns: mask @ (source, target)."""
        def matrix() -> np.ndarray:
            rows = geometry.scale_up_matrix(source, target)
            return rows if axis == 0 else rows.T.copy()

        weight = self.constant(('scale_up', axis, geometry, source, target), matrix)
        return self.node('MatMul', [weight, mask] if axis == 0 else [mask, weight], 'scale_up')

    def _borders(self, mask: str, geometry: Geometry, source: tuple[int, int],
                 target: tuple[int, int]) -> str:
        """An edge that only adds rows and columns (Pad: the mask is cropped) or removes them
        (a crop: the mask is zero-padded back)."""
        before = [axis.pad_before for axis in geometry.axes]
        after = [axis.end_crop(length, size)
                 for axis, length, size in zip(geometry.axes, source, target)]
        pads = [0, 0, *(max(-b, 0) for b in before), 0, 0, *(max(-a, 0) for a in after)]
        if any(pads):
            if self.opset < 11:
                mask = self.node('Pad', [mask], 'uncrop', pads=pads)
            else:
                amounts = self.constant(('pads', *pads), lambda: np.asarray(pads, np.int64))
                mask = self.node('Pad', [mask, amounts], 'uncrop')
        if max(before + after) <= 0:
            return mask
        (top, left), (height, width) = (max(b, 0) for b in before), target
        if self.opset < 10:  # Slice's bounds are inputs from opset 10 on
            return self.node('Slice', [mask], 'unpad', starts=[top, left],
                             ends=[top + height, left + width], axes=[2, 3])
        starts = self.constant(('i64', top, left), lambda: np.asarray([top, left], np.int64))
        ends = self.constant(('i64', top + height, left + width),
                             lambda: np.asarray([top + height, left + width], np.int64))
        axes = self.constant(('i64', 2, 3), lambda: np.asarray([2, 3], np.int64))
        return self.node('Slice', [mask, starts, ends, axes], 'unpad')

    def _scale_up_axis(self, mask: str, geometry: AxisGeometry, axis: int, source: int,
                       target: int) -> str:
        def along(value: int, other: int) -> list[int]:
            return [value, other] if axis == 0 else [other, value]

        kernel = along(geometry.kernel, 1)
        extra = geometry.end_crop(source, target)
        ones = self.constant(('ones', *kernel), lambda: np.ones((1, 1, *kernel), np.float32))
        return self.node('ConvTranspose', [mask, ones], 'scale_up', kernel_shape=kernel,
                         strides=along(geometry.stride, 1),
                         dilations=along(geometry.dilation, 1),
                         pads=along(geometry.pad_before, 0) + along(max(extra, 0), 0),
                         output_padding=along(max(-extra, 0), 0))

    def rescale(self, mask: str) -> str:
        """Divide each image's mask by its maximum (never by less than float32's tiny)."""
        peak = self.reduce('ReduceMax', mask, (2, 3))
        return self.node('Div', [mask, self.at_least_tiny(peak, 'peak')], 'rescaled')

    def at_least_tiny(self, tensor: str, stem: str) -> str:
        """max(tensor, float32's tiny): a divisor that is never 0."""
        if self.opset < 8:  # Max broadcasts from opset 8 on
            return self.node('Clip', [tensor], stem, min=TINY)
        tiny = self.constant(('tiny',), lambda: np.asarray(TINY, np.float32))
        return self.node('Max', [tensor, tiny], stem)

    def normalize(self, mask: str) -> str:
        """Per-image min-max to [0, 1]; a constant mask gives zeros."""
        low = self.reduce('ReduceMin', mask, (2, 3))
        span = self.node('Sub', [self.reduce('ReduceMax', mask, (2, 3)), low], 'span')
        shifted = self.node('Sub', [mask, low], 'shifted')
        self.graph.node.append(helper.make_node(
            'Div', [shifted, self.at_least_tiny(span, 'span')], [MASK_OUTPUT],
            name=MASK_PREFIX + 'normalize'))
        return MASK_OUTPUT

    def write(self) -> None:
        """The mask nodes, deepest tensor first, and the mask output."""
        plan = self.plan
        masks: list[str | None] = [None] * len(plan.nodes)
        for index in range(len(plan.nodes) - 1, -1, -1):
            tensor = plan.nodes[index]
            terms = [masks[e.consumer] if e.geometry is None else
                     self.scale_up(masks[e.consumer], e.geometry,
                                   plan.nodes[e.consumer].size, tensor.size)
                     for e in tensor.edges]
            mask = terms[0] if len(terms) == 1 else (
                self.node('Sum', terms, 'merge') if terms else None)
            if tensor.kept is not None:
                averaged = self.averaged_map(tensor)
                mask = averaged if mask is None else self.node('Mul', [averaged, mask], 'mask')
            if tensor.rescaled:
                mask = self.rescale(mask)
            masks[index] = mask
            if tensor.kept is not None:
                self.layers[tensor.name] = (averaged, mask)
        self.normalize(masks[0])
        _, height, width = plan.nodes[0].shape
        batch = next(i for i in self.graph.input if i.name == plan.nodes[0].name) \
            .type.tensor_type.shape.dim[0]
        batch_dim = batch.dim_param or (batch.dim_value if batch.HasField('dim_value') else None)
        self.graph.output.append(helper.make_tensor_value_info(
            MASK_OUTPUT, TensorProto.FLOAT, [batch_dim, 1, height, width]))

    def expose_layers(self) -> None:
        """Every kept tensor's averaged map and intermediate mask as graph outputs, shallowest
        first, as :func:`figure2_outputs` reads them (after :meth:`write`)."""
        batch = next(o for o in self.graph.output if o.name == MASK_OUTPUT).type.tensor_type \
            .shape.dim[0]
        for tensor in self.plan.kept_tensors:
            for name, value in zip((AVERAGED + tensor.name, INTERMEDIATE + tensor.name),
                                   self.layers[tensor.name]):
                self.graph.node.append(helper.make_node('Identity', [value], [name],
                                                        name=MASK_PREFIX + name))
                self.graph.output.append(helper.make_tensor_value_info(
                    name, TensorProto.FLOAT,
                    [batch.dim_param or batch.dim_value or None, 1, *tensor.size]))
