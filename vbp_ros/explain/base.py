"""The one contract of the explanation methods (VisualBackProp, LRP-epsilon, Grad-CAM), as
captum's ``Attribution`` base class is theirs: made from the network, called on an input batch,
detached from the network by :meth:`Explainer.remove` or at the end of a ``with`` block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

from torch import Tensor, nn

__all__ = ['Explainer']


class Explainer(ABC):
    """An explanation method on a network ``model``.

    >>> with Method(model) as method:
    ...     output, attribution = method(x)

    ``attribution`` is a (B, 1, H, W) float32 map at the input size whose magnitude ranks the
    input pixels; ``output`` is the network's output of the same forward pass. A subclass
    implements :meth:`__call__` (and may add keyword arguments, e.g. the explained output) and
    overrides :meth:`remove` where it attaches anything to the network (hooks, traced graphs).
    """

    model: nn.Module

    @abstractmethod
    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The network's output for the batch ``x`` (B, C, H, W) and its (B, 1, H, W) map."""

    def remove(self) -> None:
        """Detach what the method attached to the network (nothing, unless overridden)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
