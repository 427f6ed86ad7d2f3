"""Which layers of a network VisualBackProp uses, read from one recorded forward pass.

Supported layout (the paper's networks and any plain CNN): a chain of ``nn.Conv2d`` layers, each
followed by its own ``nn.ReLU`` module; batch normalization, dropout and identity layers may sit
anywhere in the chain. The chain ends at the first other layer after a ReLU (flatten, linear,
global pooling: the head). Pooling between convolutions, residual or branching data flow, a
convolution without a ReLU module, and a ReLU module used twice are refused with an error that
names the layer, because each would make the scale-up sizes or the kept maps wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Sequence

from torch import Tensor, nn

PASSTHROUGH = (nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d)


class UnsupportedModelError(ValueError):
    """The network's layout is one VisualBackProp cannot handle exactly."""


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, stride, padding and dilation of one convolution, as (rows, columns) pairs."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def of(cls, name: str, conv: nn.Conv2d) -> ConvGeometry:
        padding = conv.padding
        if isinstance(padding, str):
            padding = _symmetric_padding(name, conv, padding)
        return cls(tuple(conv.kernel_size), tuple(conv.stride), tuple(padding),
                   tuple(conv.dilation))


def _symmetric_padding(name: str, conv: nn.Conv2d, mode: str) -> tuple[int, int]:
    if mode == 'valid':
        return (0, 0)
    totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
    if any(total % 2 for total in totals):
        raise UnsupportedModelError(
            f"layer '{name}': padding='same' with an even receptive field pads unevenly; "
            'use explicit padding')
    return tuple(total // 2 for total in totals)


@dataclass(frozen=True)
class ConvStage:
    """One convolutional layer and the ReLU module whose output VisualBackProp keeps."""

    conv_name: str
    relu_name: str
    relu: nn.ReLU
    relu_event: int
    geometry: ConvGeometry
    channels: int


def leaf_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Modules without children, with their qualified names."""
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            yield name or type(module).__name__, module


def find_conv_stages(events: Sequence[tuple[str, nn.Module, object, object]]
                     ) -> list[ConvStage]:
    """Convolution stages from leaf-module calls ``(name, module, input, output)`` in order."""
    stages: list[ConvStage] = []
    pending: tuple[str, nn.Conv2d] | None = None  # a convolution still waiting for its ReLU
    head: str | None = None  # why the convolutional part ended, once it has
    previous: tuple[str, object] | None = None
    for index, (name, module, inputs, output) in enumerate(events):
        in_conv_part = head is None and (pending is not None or bool(stages))
        if isinstance(module, nn.Conv2d) and pending is not None:
            raise _no_relu(pending[0], name)
        if in_conv_part and not _same_tensor(inputs, previous[1]):
            breaks = (f"'{name}' ({type(module).__name__}) does not take the output of "
                      f"'{previous[0]}' as its input")
            if pending is not None or isinstance(module, nn.ReLU):
                raise UnsupportedModelError(
                    f'{breaks}: residual, branching or functional steps between convolutional '
                    'layers are not supported')
            head = breaks
        if isinstance(module, nn.Conv2d):
            if head is not None:
                raise UnsupportedModelError(
                    f"convolutional layer '{name}' comes after the end of the convolutional "
                    f'chain ({head}); pooling and other layers between convolutions are not '
                    'supported')
            pending = (name, module)
        elif isinstance(module, nn.ReLU):
            if pending is not None:
                conv_name, conv = pending
                stages.append(ConvStage(conv_name, name, module, index,
                                        ConvGeometry.of(conv_name, conv), conv.out_channels))
                pending = None
            elif in_conv_part:
                raise UnsupportedModelError(
                    f"ReLU '{name}' follows ReLU '{stages[-1].relu_name}' with no convolution "
                    'between them')
        elif in_conv_part and not isinstance(module, PASSTHROUGH) and head is None:
            if pending is not None:
                raise _no_relu(pending[0], name)
            head = f"'{name}' ({type(module).__name__})"
        previous = (name, output)
    if pending is not None:
        raise _no_relu(pending[0], None)
    if not stages:
        raise UnsupportedModelError('the model has no nn.Conv2d layer followed by an nn.ReLU')
    _check_single_use(events, stages)
    return stages


def _check_single_use(events: Sequence[tuple[str, nn.Module, object, object]],
                      stages: Sequence[ConvStage]) -> None:
    """A kept ReLU (or its convolution) called twice would overwrite the kept map."""
    calls = Counter(id(module) for _, module, _, _ in events)
    kept = {id(stage.relu) for stage in stages}
    for name, module, _, _ in events:
        count = calls[id(module)]
        if count > 1 and (id(module) in kept or isinstance(module, nn.Conv2d)):
            raise UnsupportedModelError(
                f"layer '{name}' ({type(module).__name__}) is called {count} times "
                'in one forward pass; give every convolution and its ReLU a module of its own')


def _same_tensor(a: object, b: object) -> bool:
    if a is b:
        return True
    return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
            and a.data_ptr() == b.data_ptr() and a.stride() == b.stride())


def _no_relu(conv_name: str, next_name: str | None) -> UnsupportedModelError:
    where = f"before '{next_name}'" if next_name else 'before the end of the network'
    return UnsupportedModelError(
        f"convolutional layer '{conv_name}' has no nn.ReLU module after it ({where}); "
        'VisualBackProp needs the post-ReLU map of every convolution (a functional relu in '
        'forward() is not visible to hooks)')
