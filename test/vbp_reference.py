"""An independent, deliberately plain implementation of VisualBackProp's rule on any network
(docs/design.md, "VisualBackProp on any network"), for the tests.

Written from the text of that section, not from ``vbp_ros.core``: it reads the network from the
ATen operators one float64 forward pass runs (torch's dispatch mode: every convolution, padding,
slice, in-place add is an operator there), not from torch.fx and not from any rule table of the
package; it computes in float64 numpy, scales masks up by looping over kernel taps with explicit
index arithmetic, and never rescales.

The text, step by step:
* the feature part: tensors computed from the input without passing the head (flatten/view,
  global pooling, fully connected layers) -- here: operators listed below, anything else that
  reads a feature map is an error of the test;
* kept tensors: activation outputs in the feature part, and the output of a last convolution or
  pooling that feeds the head without an activation after it;
* A(t) = mean over channels of max(t, 0);
* M(t) = A(t) (1 if t is not kept) x the sum over t's consumers c that have a mask of M(c),
  scaled up along spatial edges (each output position adds its value to every input position
  its window read) and unchanged along identity edges; a kept tensor without such consumers has
  M = A; other tensors without them have no mask;
* the mask is M(input), min-max normalized per image.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ACTIVATIONS = {'relu', 'relu_', 'hardtanh', 'hardtanh_', 'elu', 'elu_', 'leaky_relu',
               'leaky_relu_', 'gelu', 'gelu_', 'silu', 'silu_', 'hardswish', 'hardswish_',
               'mish', 'mish_', '_prelu_kernel', 'prelu', 'tanh', 'tanh_', 'softplus', 'celu',
               'selu'}
SPATIAL = {'convolution', 'max_pool2d_with_indices', 'max_pool2d', 'avg_pool2d',
           'constant_pad_nd', 'slice'}
IDENTITY = {'native_batch_norm', '_native_batch_norm_legit_no_training', 'batch_norm', 'add',
            'add_', 'sub', 'sub_', 'mul', 'mul_', 'div', 'div_', 'cat', 'split', 'chunk',
            'split_with_sizes', 'clone', 'alias', '_to_copy', 'sigmoid', 'detach',
            'native_dropout', 'dropout'}
HEAD = {'view', '_unsafe_view', 'reshape', 'flatten', 'mean', 'adaptive_avg_pool2d',
        '_adaptive_avg_pool2d', 'adaptive_max_pool2d', 'addmm', 'mm', 'linear', 't'}


@dataclass
class Op:
    """One tensor produced by one operator call."""

    name: str
    args: tuple
    inputs: list[int]   # tensors read (their Op indices), the data input first
    shape: tuple
    value: np.ndarray | None = None   # snapshot of 4-D outputs, float64
    users: list[int] = field(default_factory=list)


class _Recorder(TorchDispatchMode):
    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.ops = [Op('input', (), [], tuple(x.shape), x.numpy().copy())]
        self.current = {id(x): 0}   # tensor object -> index of the Op of its latest value
        self.alive = [x]            # keep every tensor, so ids are never reused

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        flat = [a for a in args if isinstance(a, torch.Tensor)] + [
            t for a in args if isinstance(a, (list, tuple)) for t in a
            if isinstance(t, torch.Tensor)]
        inputs = [self.current[id(t)] for t in flat if id(t) in self.current]
        outputs = out if isinstance(out, (list, tuple)) else [out]
        if name in ('max_pool2d_with_indices', 'native_batch_norm',
                    '_native_batch_norm_legit_no_training', 'native_dropout'):
            outputs = outputs[:1]
        for tensor in outputs:
            if isinstance(tensor, torch.Tensor):
                value = tensor.detach().numpy().copy() if tensor.dim() == 4 else None
                self.ops.append(Op(name, args, inputs, tuple(tensor.shape), value))
                self.current[id(tensor)] = len(self.ops) - 1
                self.alive.append(tensor)
        return out


def record(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[Op], int]:
    """The operators of one float64 forward pass, and the index of the output's Op."""
    x = x.double().clone()
    with torch.no_grad(), _Recorder(x) as recorder:
        output = model(x)
    for index, op in enumerate(recorder.ops):
        for source in op.inputs:
            recorder.ops[source].users.append(index)
    return recorder.ops, recorder.current[id(output)]


def _kind(op: Op) -> str:
    if op.name == 'input':
        return 'input'
    if op.name in ACTIVATIONS:
        return 'activation'
    if op.name in ('clamp', 'clamp_min'):  # clamp(min=0) is a ReLU
        return 'activation' if op.args[1] is not None and op.args[1] >= 0 else 'identity'
    if op.name == 'slice':
        return 'spatial' if op.args[1] in (2, 3, -1, -2) else 'identity'
    if op.name in ('mean', 'sum') and any(d % 4 in (2, 3) for d in op.args[1]):
        return 'head'
    for kind, names in (('spatial', SPATIAL), ('identity', IDENTITY), ('head', HEAD)):
        if op.name in names:
            return kind
    raise NotImplementedError(f'the reference has no rule for aten.{op.name}')


def _windows(op: Op, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(kernel, stride, dilation, first input position) along rows and columns."""
    args = op.args
    if op.name == 'convolution':
        kernel, stride, padding, dilation = args[1].shape[2:], args[3], args[4], args[5]
    elif op.name in ('max_pool2d_with_indices', 'max_pool2d', 'avg_pool2d'):
        kernel = _two(args[1])
        stride = _two(args[2]) if len(args) > 2 and args[2] else kernel
        padding = _two(args[3]) if len(args) > 3 else (0, 0)
        dilation = _two(args[4]) if op.name != 'avg_pool2d' and len(args) > 4 else (1, 1)
    elif op.name == 'constant_pad_nd':
        pad = list(args[1]) + [0] * (4 - len(args[1]))
        return [(1, 1, 1, -pad[2]), (1, 1, 1, -pad[0])]
    else:  # slice along one spatial axis
        axis = args[1] % 4 - 2
        start, _, step = slice(*(list(args[2:5]) + [None] * 3)[:3]).indices(size[axis])
        windows = [(1, 1, 1, 0), (1, 1, 1, 0)]
        windows[axis] = (1, step, 1, start)
        return windows
    return [(kernel[a], _two(stride)[a], _two(dilation)[a], -_two(padding)[a]) for a in (0, 1)]


def _two(value) -> tuple[int, int]:
    value = [value] if isinstance(value, int) else list(value)
    return (value[0], value[-1])


def scale_up(mask: np.ndarray, windows: list[tuple[int, int, int, int]],
             size: tuple[int, int]) -> np.ndarray:
    """Each (B, h, w) position adds its value to every input position its window read."""
    (kh, sh, dh, first_row), (kw, sw, dw, first_col) = windows
    out = np.zeros((mask.shape[0], *size))
    for a in range(kh):
        rows = np.arange(mask.shape[1]) * sh + a * dh + first_row
        row_ok = (rows >= 0) & (rows < size[0])
        for b in range(kw):
            cols = np.arange(mask.shape[2]) * sw + b * dw + first_col
            col_ok = (cols >= 0) & (cols < size[1])
            out[:, rows[row_ok][:, None], cols[col_ok][None, :]] += (
                mask[:, row_ok][:, :, col_ok])
    return out


def reference_mask(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The rule's mask (B, H, W) of a float64 copy of ``model`` on ``x``."""
    ops, output = record(copy.deepcopy(model).double(), x)
    feature = [False] * len(ops)
    kinds = ['input'] + [''] * (len(ops) - 1)
    feature[0] = True
    head_inputs: set[int] = set()
    for index, op in enumerate(ops[1:], start=1):
        read = [i for i in op.inputs if feature[i]]
        if not read:
            continue
        kinds[index] = _kind(op)
        if kinds[index] == 'head' or len(op.shape) != 4:
            head_inputs |= set(read)
            continue
        feature[index] = True
    if feature[output]:
        head_inputs.add(output)
    reaching = set()
    stack = list(head_inputs)
    while stack:
        index = stack.pop()
        if index not in reaching:
            reaching.add(index)
            stack += [i for i in ops[index].inputs if feature[i]]
    kept = {i for i in reaching if kinds[i] == 'activation'}
    stack, seen = list(head_inputs), set()
    while stack:  # a convolution or pooling that feeds the head with no activation after it
        index = stack.pop()
        if index in seen or index in kept:
            continue
        seen.add(index)
        if kinds[index] == 'spatial':
            kept.add(index)
        elif kinds[index] == 'identity':
            stack += [i for i in ops[index].inputs if feature[i]]
    masks: dict[int, np.ndarray] = {}
    for index in sorted(reaching, reverse=True):
        op = ops[index]
        size = op.shape[2:]
        terms = []
        for user in op.users:
            if user not in masks or user not in reaching:
                continue
            if kinds[user] == 'spatial':
                assert ops[user].inputs[0] == index, 'a spatial layer reads a second map'
                terms.append(scale_up(masks[user], _windows(ops[user], size), size))
            else:
                terms.append(masks[user])
        averaged = np.maximum(op.value, 0).mean(axis=1) if index in kept else None
        if terms:
            total = np.sum(terms, axis=0)
            masks[index] = total * averaged if averaged is not None else total
        elif averaged is not None:
            masks[index] = averaged
    final = masks[0]
    low = final.min(axis=(1, 2), keepdims=True)
    span = final.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (final - low) / np.where(span > 0, span, 1), 0.0)
