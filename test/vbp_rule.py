"""An independent, deliberately slow reading of docs/design.md, "VisualBackProp on any network",
for the tests only.

Written from the text, not from the production code: the network is read with torch.fx, every
tensor is computed in float64, and each scale-up is a plain ``conv_transpose2d`` with an all-ones
kernel whose full result is cut to the input size (leading pads cropped, the rest cut or
zero-filled at the end). No rescaling, no buffers, no shortcuts.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU,
                      nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)
ACTIVATION_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu,
                        F.hardswish, F.mish, torch.relu}
SPATIAL_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ZeroPad2d)
IDENTITY_MODULES = (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity)
IDENTITY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add,
                      torch.cat}
HEAD_MODULES = (nn.Flatten, nn.Linear, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
HEAD_FUNCTIONS = {torch.flatten, F.adaptive_avg_pool2d}


def _pair(value: object) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _scale_up(mask: torch.Tensor, module: nn.Module, input_hw: tuple[int, int]) -> torch.Tensor:
    """The mask at the module's output size, brought back to its input size."""
    if isinstance(module, nn.ZeroPad2d):
        left, right, top, bottom = module.padding
        return mask[:, :, top:top + input_hw[0], left:left + input_hw[1]]
    kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
    dilation = _pair(getattr(module, 'dilation', 1))
    padding = module.padding
    if padding == 'same':
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        padding = tuple(t // 2 for t in totals)
    elif padding == 'valid':
        padding = (0, 0)
    padding = _pair(padding)
    ones = torch.ones(1, 1, *kernel, dtype=mask.dtype)
    full = F.conv_transpose2d(mask, ones, stride=stride, dilation=dilation)
    out = torch.zeros(mask.shape[0], 1, *input_hw, dtype=mask.dtype)
    rows = min(input_hw[0], full.shape[2] - padding[0])
    cols = min(input_hw[1], full.shape[3] - padding[1])
    out[:, :, :rows, :cols] = full[:, :, padding[0]:padding[0] + rows,
                                   padding[1]:padding[1] + cols]
    return out


def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == 'call_module':
        module = modules[node.target]
        for kind, types in (('activation', ACTIVATION_MODULES), ('spatial', SPATIAL_MODULES),
                            ('identity', IDENTITY_MODULES), ('head', HEAD_MODULES)):
            if isinstance(module, types):
                return kind
    if node.op == 'call_function':
        if node.target in ACTIVATION_FUNCTIONS:
            return 'activation'
        if node.target in IDENTITY_FUNCTIONS:
            return 'identity'
        if node.target in HEAD_FUNCTIONS:
            return 'head'
    if node.op == 'call_method' and node.target in ('flatten', 'view', 'reshape', 'mean'):
        return 'head'
    if node.op == 'call_method' and node.target in ('relu',):
        return 'activation'
    raise AssertionError(f'the reference rule does not know {node.op} {node.target}')


def reference_mask(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, mask) of the rule in float64 on a float64 copy of ``model``; mask (B, 1, H, W)."""
    import copy

    model = copy.deepcopy(model).double().eval()
    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    values: dict[fx.Node, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node: fx.Node) -> object:
            result = super().run_node(node)
            values[node] = result.clone() if isinstance(result, torch.Tensor) else result
            return result

    with torch.no_grad():
        output = Recorder(traced).run(x.double())
    nodes = list(traced.graph.nodes)
    features = {nodes[0]}
    kinds: dict[fx.Node, str] = {}
    consumers: dict[fx.Node, list[fx.Node]] = {}
    for node in nodes[1:]:
        inputs = [a for a in node.all_input_nodes if a in features]
        if not inputs or node.op == 'output':
            continue
        kind = _kind(node, modules)
        if kind == 'head' or values[node].dim() != 4:
            continue
        kinds[node] = kind
        features.add(node)
        for source in inputs:
            consumers.setdefault(source, []).append(node)

    def followed(node: fx.Node) -> bool:  # an activation or a conv/pool somewhere after it
        return any(kinds[c] in ('activation', 'spatial') or followed(c)
                   for c in consumers.get(node, ()))

    kept = {n for n, k in kinds.items() if k == 'activation'}
    kept |= {n for n, k in kinds.items() if k == 'spatial' and not followed(n)
             and not isinstance(modules.get(n.target), nn.ZeroPad2d)}
    masks: dict[fx.Node, torch.Tensor] = {}
    for node in reversed(nodes):
        if node not in features:
            continue
        terms = []
        for consumer in consumers.get(node, ()):
            if consumer in masks:
                mask = masks[consumer]
                if kinds[consumer] == 'spatial':
                    mask = _scale_up(mask, modules[consumer.target], values[node].shape[2:])
                terms.append(mask)
        averaged = values[node].clamp_min(0).mean(dim=1, keepdim=True) if node in kept else None
        if terms:
            total = sum(terms)
            masks[node] = total if averaged is None else averaged * total
        elif averaged is not None:
            masks[node] = averaged
    mask = masks[nodes[0]]
    low = mask.amin(dim=(2, 3), keepdim=True)
    span = mask.amax(dim=(2, 3), keepdim=True) - low
    mask = torch.where(span > 0, (mask - low) / torch.where(span > 0, span, 1), 0)
    return output, mask
