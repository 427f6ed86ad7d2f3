"""Layer-wise relevance propagation, epsilon rule (Bach et al. 2015; Samek et al. 2017, Eq. 6).

For every linear layer ``z = layer(a)`` (``nn.Conv2d``, ``nn.Linear`` and, as captum does,
``nn.BatchNorm2d`` in eval mode as a per-channel affine map) the relevance ``R`` of ``z`` is
passed to ``a`` as

    s = R / (z + epsilon * sign(z)),  sign(0) = +1
    R_a = a * (J^T s),                J = dz/da (the layer's weights)

Biases take part in ``z``, so the relevance they absorb is lost, and so is what epsilon absorbs.
ReLU, Flatten, Dropout and Identity layers pass relevance through unchanged (Flatten reshapes).
The relevance starts at the network output: the output itself for a one-output network, the
target output (one-hot) otherwise.

One forward pass keeps each linear layer's input and output; one backward pass applies the
transposed layers explicitly (the input gradient of each convolution, ``s @ W`` for linear
layers), without autograd, so it runs under ``torch.inference_mode``. With a large epsilon the
relevance shrinks at every layer and would underflow float32 (to slow subnormals, then zero) in
deep networks; it is therefore carried divided by a per-image power of two, rescaled after each
layer, which is exact (the rule is linear in R), and the scale is applied once at the end.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import Tensor, nn

from .base import Explainer
from .graph import display_names, leaf_modules, op_label
from .rules import UnsupportedModelError
from .targets import Target, explained_index

__all__ = ['LRPEpsilon', 'normalize_relevance']

_LINEAR = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
_PASSTHROUGH = (nn.ReLU, nn.Flatten, nn.Dropout, nn.Dropout2d, nn.Identity)
_TRAIN_DEPENDENT = (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)


class LRPEpsilon(Explainer):
    """LRP-epsilon relevance of the input pixels, from the same forward pass that gives the output.

    >>> lrp = LRPEpsilon(model, epsilon=100.0)
    >>> output, relevance = lrp(x)   # relevance: (B, 1, H, W) float32, summed over channels

    ``model`` must be a plain chain: its forward applies its leaf modules (``nn.Conv2d``,
    ``nn.Linear``, ``nn.BatchNorm2d``, ``nn.ReLU``, ``nn.Flatten``, ``nn.Dropout``,
    ``nn.Identity``) once each, in registration order, each to the previous one's output.
    Anything else (other layer types, residual adds, functional calls in ``forward()``) raises
    :class:`~vbp_ros.explain.rules.UnsupportedModelError` naming the layer or graph node:
    LRP-epsilon here is for chains; :class:`~vbp_ros.explain.vbp.VisualBackProp` reads any graph.
    Where torch.fx cannot read ``forward()``, the first call checks the chain's output against
    ``model(x)`` instead. Batch normalization and dropout must be in eval mode (batch
    normalization with running statistics).

    Args:
        model: the network.
        epsilon: the stabilizer added to every denominator (100, as in the VisualBackProp paper).
        normalize: the default of :meth:`__call__`'s ``normalize``.
    """

    def __init__(self, model: nn.Module, epsilon: float = 100.0, *,
                 normalize: bool = False) -> None:
        self.model = model
        self.epsilon = float(epsilon)
        self.normalize = normalize
        self.layers: list[tuple[str, nn.Module]] = list(leaf_modules(model))
        if not self.layers:
            raise UnsupportedModelError('the model has no layers')
        self._padding: dict[str, tuple[int, int]] = {}
        for name, layer in self.layers:
            if not isinstance(layer, _LINEAR + _PASSTHROUGH):
                raise UnsupportedModelError(
                    f"layer '{name}' ({type(layer).__name__}) is not supported by LRPEpsilon; "
                    'supported: ' + ', '.join(t.__name__ for t in _LINEAR + _PASSTHROUGH))
            if isinstance(layer, nn.Conv2d):
                self._padding[name] = _conv_padding(name, layer)
        self._checked = _check_chain_graph(model, [name for name, _ in self.layers])

    def __call__(self, x: Tensor, target: Target = None, *,
                 normalize: bool | None = None) -> tuple[Tensor, Tensor]:
        """Return the model output and the (B, 1, H, W) float32 input relevance.

        Args:
            x: input batch (B, C, H, W).
            target: for a multi-output network, the output index whose relevance is explained,
                one for all images or one per image; default: each image's largest output.
                Ignored for a one-output network, where the relevance starts at the output.
            normalize: return each image's relevance divided by its largest absolute value
                (see :func:`normalize_relevance`), taken before the scale is applied, so it
                stays exact where the unnormalized relevance underflows float32. None: the
                constructor's choice.
        """
        normalize = self.normalize if normalize is None else normalize
        with torch.no_grad():
            output, kept = self._forward(x)
            if not self._checked:
                reference = self.model(x.clone())
                if reference.shape != output.shape or not torch.allclose(
                        reference, output, rtol=1e-5, atol=1e-6):
                    raise UnsupportedModelError(
                        "the model's forward is not the chain of its leaf modules in "
                        'registration order; LRPEpsilon cannot follow it (VisualBackProp can)')
                self._checked = True
            relevance, exponent = _rescale(_start(output, target))
            for (name, layer), (a, z) in zip(reversed(self.layers), reversed(kept)):
                if isinstance(layer, nn.Flatten):
                    relevance = relevance.reshape(a.shape)
                elif a is not None:
                    relevance, shift = _rescale(self._backward(name, layer, a, z, relevance))
                    exponent += shift
            relevance = relevance.sum(dim=1, keepdim=True)
            if normalize:
                return output, normalize_relevance(relevance).float()
            scale = exponent.reshape(-1, *(1,) * (relevance.dim() - 1))
            return output, torch.ldexp(relevance.double(), scale).float()

    def _forward(self, x: Tensor) -> tuple[Tensor, list[tuple[Tensor | None, Tensor | None]]]:
        """Run the chain; keep (input, output) of linear layers and the input of Flatten."""
        kept: list[tuple[Tensor | None, Tensor | None]] = []
        a = x
        for name, layer in self.layers:
            if isinstance(layer, nn.ReLU):
                out = torch.relu(a)  # never in place: the layer before keeps its output
            elif isinstance(layer, _TRAIN_DEPENDENT) and (
                    layer.training or getattr(layer, 'running_var', 0) is None):
                raise ValueError(f"layer '{name}' ({type(layer).__name__}) must be in eval mode"
                                 ' (call model.eval()); batch norm needs running statistics')
            else:
                out = layer(a)
            linear = isinstance(layer, _LINEAR)
            kept.append((a if linear or isinstance(layer, nn.Flatten) else None,
                         out if linear else None))
            a = out
        return a, kept

    def _backward(self, name: str, layer: nn.Module, a: Tensor, z: Tensor, relevance: Tensor
                  ) -> Tensor:
        """The epsilon rule through one linear layer: relevance of its output -> of its input."""
        # z + epsilon * sign(z), sign(+0) = +1 (at z = -0.0 the relevance is 0 in these chains)
        denominator = z.abs().add_(self.epsilon).copysign_(z)
        s = torch.div(relevance, denominator, out=denominator)
        if isinstance(layer, nn.Linear):
            c = s @ layer.weight
        elif isinstance(layer, nn.Conv2d):
            c = torch.ops.aten.convolution_backward(  # what torch.nn.grad.conv2d_input calls
                s, a, layer.weight, None, layer.stride, self._padding[name], layer.dilation,
                False, (0, 0),
                layer.groups, (True, False, False))[0]
        else:  # BatchNorm2d in eval mode: z = a * scale + shift per channel
            scale = torch.rsqrt(layer.running_var + layer.eps)
            if layer.weight is not None:
                scale = scale * layer.weight
            c = s.mul_(scale.reshape(1, -1, 1, 1))
        return c.mul_(a)


def _conv_padding(name: str, conv: nn.Conv2d) -> tuple[int, int]:
    """A convolution's symmetric padding (LRP's transposed layer needs one number per axis)."""
    if conv.padding_mode != 'zeros':
        raise UnsupportedModelError(f"layer '{name}': padding_mode={conv.padding_mode!r} is not "
                                    "supported by LRPEpsilon; use 'zeros'")
    if conv.padding == 'valid':
        return (0, 0)
    if conv.padding != 'same':
        return tuple(conv.padding)
    totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
    if any(total % 2 for total in totals):
        raise UnsupportedModelError(
            f"layer '{name}': padding='same' with an even receptive field pads unevenly, which "
            'LRPEpsilon does not support; use explicit padding')
    return tuple(total // 2 for total in totals)


def _check_chain_graph(model: nn.Module, layer_names: list[str]) -> bool:
    """Whether torch.fx read ``model`` as the chain of ``layer_names``; raises naming the node
    that breaks the chain. False when fx cannot read the model (the first call then compares
    the chain's output with the model's)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable: checked numerically on the first call
        return False
    module = fx.GraphModule(model, graph)
    names = display_names(graph)
    expected = iter(layer_names)
    previous = None
    for node in graph.nodes:
        if node.op == 'placeholder':
            previous = node
            continue
        if node.op == 'output':
            if node.args[0] is previous and next(expected, None) is None:
                return True
            breaks = 'the output is not the last layer of the chain'
        elif node.op == 'call_module' and node.args == (previous,) and (
                node.target == next(expected, None)):
            previous = node
            continue
        else:
            breaks = (f"node '{names[node]}' ({op_label(node, module)}) is not the next leaf "
                      'module applied to the previous output')
        raise UnsupportedModelError(
            f'{breaks}: LRPEpsilon follows networks whose forward applies their leaf modules '
            'once each, in registration order; use VisualBackProp for residual, branching or '
            'functional networks')
    return True


def _start(output: Tensor, target: Target) -> Tensor:
    """Initial relevance: the output (one output per image) or the one-hot explained output
    (see :func:`explained_index`)."""
    flat, index = explained_index(output, target)
    if index is None:
        return output.clone()
    relevance = torch.zeros_like(flat)
    rows = torch.arange(flat.shape[0], device=output.device)
    relevance[rows, index] = flat[rows, index]
    return relevance.reshape(output.shape)


def _rescale(relevance: Tensor) -> tuple[Tensor, Tensor]:
    """``relevance / 2**e`` with each image's largest absolute value in [0.5, 1), and ``e``."""
    peak = relevance.abs().amax(dim=tuple(range(1, relevance.dim())))
    limit = int(torch.finfo(relevance.dtype).max).bit_length() - 2  # keeps 2**-e finite
    exponent = torch.frexp(peak).exponent.clamp_(-limit, limit)  # 0 for an all-zero image
    scale = exponent.neg().reshape(-1, *(1,) * (relevance.dim() - 1))
    return relevance.mul_(torch.ldexp(torch.ones_like(peak).reshape(scale.shape), scale)), exponent


def normalize_relevance(relevance: Tensor) -> Tensor:
    """Per-image division by the largest absolute relevance, into [-1, 1] (zeros stay zeros)."""
    peak = relevance.abs().amax(dim=tuple(range(1, relevance.dim())), keepdim=True)
    return relevance / torch.where(peak > 0, peak, torch.ones_like(peak))
