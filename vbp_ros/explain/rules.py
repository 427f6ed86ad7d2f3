"""What VisualBackProp does at each PyTorch layer type: one table, one entry per type.

The rule is that of docs/design.md, "VisualBackProp on any network". The rule kinds are those of
:mod:`vbp_ros.explain.mask_graph`, shared with the ONNX operator table
(:data:`vbp_ros.explain.onnx_vbp.RULES`); this table only recognises the torch layer types.

A layer type is an ``nn.Module`` class, a function (``torch.relu``, ``F.elu``, ``operator.add``,
...) or a Tensor method name (``'relu'``, ``'add_'``, ...). Its entry in :data:`RULES` says
what the layer is to the mask:

* :class:`Activation`: its output is a kept tensor, averaged as A(t) = mean over channels of
  max(t, 0) (``nonnegative`` activations skip the max).
* :class:`Spatial`: an edge along which masks are scaled up by the layer's all-ones one-channel
  transposed convolution (convolutions, pooling, padding, cropping), with its :class:`Geometry`.
* :class:`Identity`: an edge that keeps masks as they are (normalization, dropout, pointwise
  arithmetic, residual-add operands, concat parts, channel slices).
* :class:`Head`: where the feature part ends (flatten, fully connected, global pooling).

Some types depend on their arguments (``torch.cat`` along channels is an identity edge, along a
spatial axis it is refused; ``x.mean((2, 3))`` is a head, ``x.mean(1)`` an identity edge): their
entry is a :class:`Depends` whose function looks at the call. Adding a layer type is one entry::

    RULES[MyActivation] = Activation()
    RULES[my_custom_op] = Identity()

Sigmoid and hard sigmoid are identity edges, not activations: in the networks of this project they
are gates (squeeze-excitation), and a gate's output is not evidence of where the input matters.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import AxisGeometry, Geometry, as_pair
from .mask_graph import Activation, Head, Identity, Refuse, Rule, Spatial, UnsupportedModelError

__all__ = ['UnsupportedModelError', 'Geometry', 'AxisGeometry', 'Call', 'Rule', 'Activation',
           'Spatial', 'Identity', 'Head', 'Depends', 'Refuse', 'RULES', 'rule_for']


@dataclass(frozen=True)
class Call:
    """One call of a layer, as a rule sees it.

    ``module`` is the called module (None for functions and methods); ``arguments`` the call's
    arguments by name (a rule's :meth:`Depends.bind` fills defaults); tensors stand as their
    ``torch.Size``; ``input_size`` is the (height, width) of the map the call reads.
    """

    module: nn.Module | None
    args: tuple
    kwargs: dict
    input_size: tuple[int, int] = (0, 0)
    output_ndim: int = 4


@dataclass(frozen=True)
class Depends(Rule):
    """A rule that depends on the call's arguments: ``choose(arguments, call)`` picks one.

    ``parameters`` are the call's parameter names with their defaults (``REQUIRED`` for
    none), so that positional and keyword calls look alike to ``choose``.
    """

    parameters: tuple[tuple[str, Any], ...]
    choose: Callable[[dict, Call], Rule]

    def decide(self, call: Call) -> Rule:
        """The rule ``choose`` picks for the call's arguments."""
        return self.choose(self.bind(call), call)

    def bind(self, call: Call) -> dict:
        """The call's arguments by parameter name, defaults filled in."""
        names = [name for name, _ in self.parameters]
        bound = dict(zip(names, call.args))
        bound.update(call.kwargs)
        for name, default in self.parameters:
            bound.setdefault(name, default)
        return bound


REQUIRED = object()


# -- geometries ------------------------------------------------------------------------------

def _conv_geometry(kernel: Sequence[int], stride: Any, padding: Any, dilation: Any) -> Geometry:
    if isinstance(padding, str):
        # 'same' pads d (k - 1) in total, the odd one on the bottom/right (as torch does)
        dilation = as_pair(dilation)
        padding = (0, 0) if padding == 'valid' else tuple(
            d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return Geometry.of(tuple(kernel), stride, padding, dilation)


def _conv_module(call: Call) -> Geometry:
    conv = call.module
    return _conv_geometry(conv.kernel_size, conv.stride, conv.padding, conv.dilation)


def _pool_module(call: Call) -> Geometry:
    pool = call.module
    stride = pool.stride if pool.stride not in (None, ()) else pool.kernel_size
    return Geometry.of(pool.kernel_size, stride, pool.padding, getattr(pool, 'dilation', 1))


def _pad_module(call: Call) -> Geometry:
    return _pad_geometry(call.module.padding)


def _pad_geometry(pad: Sequence[int]) -> Geometry:
    """F.pad's (left, right, top, bottom): output i reads input i - before (kernel 1)."""
    pad = as_pair(pad) * 2 if isinstance(pad, int) else tuple(pad) + (0,) * (4 - len(pad))
    return Geometry(AxisGeometry(pad_before=pad[2]), AxisGeometry(pad_before=pad[0]))


# -- rules that depend on the arguments --------------------------------------------------------

_CONV_PARAMETERS = (('input', REQUIRED), ('weight', REQUIRED), ('bias', None), ('stride', 1),
                    ('padding', 0), ('dilation', 1), ('groups', 1))
_MAX_POOL_PARAMETERS = (('input', REQUIRED), ('kernel_size', REQUIRED), ('stride', None),
                        ('padding', 0), ('dilation', 1), ('ceil_mode', False),
                        ('return_indices', False))
_AVG_POOL_PARAMETERS = (('input', REQUIRED), ('kernel_size', REQUIRED), ('stride', None),
                        ('padding', 0), ('ceil_mode', False), ('count_include_pad', True),
                        ('divisor_override', None))


def _conv_function(arguments: dict, call: Call) -> Rule:
    kernel = tuple(arguments['weight'])[2:]
    return Spatial(lambda _: _conv_geometry(kernel, arguments['stride'], arguments['padding'],
                                            arguments['dilation']))


def _pool_function(arguments: dict, call: Call) -> Rule:
    if arguments.get('return_indices'):
        return Refuse('pooling that returns indices')
    stride = arguments['stride'] or arguments['kernel_size']
    return Spatial(lambda _: Geometry.of(arguments['kernel_size'], stride, arguments['padding'],
                                         arguments.get('dilation', 1)))


def _pad_function(arguments: dict, call: Call) -> Rule:
    if arguments['mode'] != 'constant' or len(arguments['pad']) > 4:
        return Refuse(f"padding mode {arguments['mode']!r} over {len(arguments['pad'])} values; "
                      'only constant padding of the two spatial axes is supported')
    return Spatial(lambda _: _pad_geometry(arguments['pad']))


def _concat(arguments: dict, call: Call) -> Rule:
    dim = arguments['dim']
    return Identity() if dim in (1, -3) else Refuse(f'concatenation along dimension {dim}')


def _channel_split(arguments: dict, call: Call) -> Rule:
    dim = arguments['dim']
    return Identity() if dim in (1, -3) else Refuse(f'split along dimension {dim}')


def _reduction(arguments: dict, call: Call) -> Rule:
    dims = arguments['dim']
    dims = (dims,) if isinstance(dims, int) else tuple(dims or (0, 1, 2, 3))
    spatial = any(d % 4 in (2, 3) for d in dims)
    if spatial or call.output_ndim != 4:
        return Head()
    return Identity()


def _clamp(arguments: dict, call: Call) -> Rule:
    low = arguments['min']
    if isinstance(low, (int, float)) and low >= 0:
        return Activation(nonnegative=True)
    return Identity()


def _getitem(arguments: dict, call: Call) -> Rule:
    """Tuple parts, batch/channel slices (identity edges) and spatial crops (spatial edges)."""
    index = arguments['index']
    if call.output_ndim != 4:
        return Head()
    if not isinstance(call.args[0], torch.Size):  # a part of a tuple (chunk, split)
        return Identity()
    index = index if isinstance(index, tuple) else (index,)
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (5 - len(index)) + index[at + 1:]
    index = index + (slice(None),) * (4 - len(index))
    if len(index) != 4 or not all(isinstance(i, slice) for i in index):
        return Refuse(f'indexing {arguments["index"]!r} that is not slicing')
    rows, cols = index[2:]
    if rows == slice(None) and cols == slice(None):
        return Identity()
    if any((s.step or 1) < 1 for s in (rows, cols)):
        return Refuse('negative slicing steps')

    def crop(current: Call) -> Geometry:
        height, width = current.input_size
        (top, _, row_step), (left, _, col_step) = (rows.indices(height), cols.indices(width))
        return Geometry(AxisGeometry(stride=row_step, pad_before=-top),
                        AxisGeometry(stride=col_step, pad_before=-left))
    return Spatial(crop)


_SIGNED = Activation()
_NONNEGATIVE = Activation(nonnegative=True)
_IDENTITY = Identity()
_HEAD = Head()
_CONV = Spatial(_conv_module)
_POOL = Spatial(_pool_module)
_REDUCTION = Depends((('input', REQUIRED), ('dim', None), ('keepdim', False)), _reduction)
_CONCAT = Depends((('tensors', REQUIRED), ('dim', 0)), _concat)
_SPLIT = Depends((('input', REQUIRED), ('chunks', REQUIRED), ('dim', 0)), _channel_split)
_CLAMP = Depends((('input', REQUIRED), ('min', None), ('max', None)), _clamp)

#: The table: layer type -> rule. Module classes are looked up along their class hierarchy.
RULES: dict[Any, Rule] = {
    # activations: kept tensors
    **dict.fromkeys([nn.ReLU, nn.ReLU6, nn.Softplus, F.relu, F.relu_, torch.relu, torch.relu_,
                     F.relu6, F.softplus, 'relu', 'relu_'], _NONNEGATIVE),
    **dict.fromkeys([nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                     nn.Hardswish, nn.Mish, nn.Hardtanh, nn.Tanh, F.leaky_relu, F.leaky_relu_,
                     F.prelu, torch.prelu, F.elu, F.elu_, F.selu, torch.selu, F.celu,
                     torch.celu, F.gelu, F.silu, F.hardswish, F.mish, F.hardtanh, F.tanh,
                     torch.tanh, 'tanh'], _SIGNED),
    **dict.fromkeys([torch.clamp, torch.clip, 'clamp', 'clamp_', 'clip'], _CLAMP),
    **dict.fromkeys([torch.clamp_min, 'clamp_min'], Depends(
        (('input', REQUIRED), ('min', REQUIRED)), _clamp)),
    # spatial edges
    nn.Conv2d: _CONV,
    F.conv2d: Depends(_CONV_PARAMETERS, _conv_function),
    **dict.fromkeys([nn.MaxPool2d, nn.AvgPool2d], _POOL),
    **dict.fromkeys([F.max_pool2d, torch.max_pool2d],
                    Depends(_MAX_POOL_PARAMETERS, _pool_function)),
    F.avg_pool2d: Depends(_AVG_POOL_PARAMETERS, _pool_function),
    **dict.fromkeys([nn.ZeroPad2d, nn.ConstantPad2d], Spatial(_pad_module)),
    F.pad: Depends((('input', REQUIRED), ('pad', REQUIRED), ('mode', 'constant'),
                    ('value', None)), _pad_function),
    operator.getitem: Depends((('input', REQUIRED), ('index', REQUIRED)), _getitem),
    # identity edges
    **dict.fromkeys([nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm2d,
                     nn.LocalResponseNorm, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
                     nn.FeatureAlphaDropout, nn.Identity, nn.Sigmoid, nn.Hardsigmoid,
                     F.batch_norm, F.group_norm, F.instance_norm, F.local_response_norm,
                     F.dropout, F.dropout2d, F.alpha_dropout, F.sigmoid, torch.sigmoid,
                     F.hardsigmoid, operator.add, operator.sub, operator.mul, operator.truediv,
                     operator.neg, operator.pos, operator.iadd, operator.isub, operator.imul,
                     operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.neg,
                     'add', 'sub', 'mul', 'div', 'add_', 'sub_', 'mul_', 'div_', 'neg',
                     'contiguous', 'clone', 'float', 'half', 'bfloat16', 'double', 'to',
                     'type_as', 'sigmoid', 'sigmoid_'], _IDENTITY),
    **dict.fromkeys([torch.cat, torch.concat], _CONCAT),
    **dict.fromkeys([torch.chunk, torch.split, 'chunk', 'split'], _SPLIT),
    # where the head begins
    **dict.fromkeys([nn.Flatten, nn.Linear, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                     torch.flatten, F.linear, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                     torch.reshape, 'flatten', 'view', 'reshape'], _HEAD),
    **dict.fromkeys([torch.mean, torch.sum, torch.amax, 'mean', 'sum', 'amax'], _REDUCTION),
    # functions of libraries vbp_ros does not import, by module and name (qualified_name)
    'torchvision.ops.stochastic_depth.stochastic_depth': _IDENTITY,  # EfficientNet's; dropout
}


def qualified_name(function: Any) -> str:
    """'module.name' of a function, the key of those the table holds without importing them."""
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"


def rule_for(target: Any) -> Rule | None:
    """The table entry of a module (by class hierarchy), a function or a method name."""
    if isinstance(target, nn.Module):
        for cls in type(target).__mro__:
            if cls in RULES:
                return RULES[cls]
        return None
    try:
        rule = RULES.get(target)
    except TypeError:  # unhashable target
        return None
    if rule is None and callable(target):
        rule = RULES.get(qualified_name(target))
    return rule
