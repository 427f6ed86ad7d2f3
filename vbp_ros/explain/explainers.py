"""The explanation methods by name: one table that the tools (``vbp-eval``, ``vbp-bench``,
``vbp-inspect``) look up.

Every method derives from :class:`~vbp_ros.explain.base.Explainer`, as captum's derive from
its ``Attribution``: ``output, attribution = EXPLAINERS[name](model)(x)``, with ``attribution`` a
(B, 1, H, W) float32 map at the input size whose magnitude ranks the input pixels; ``remove()``
(or a ``with`` block) detaches what the method attached to the model.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from .base import Explainer
from .gradcam import GradCAM
from .lrp import LRPEpsilon
from .vbp import VisualBackProp

__all__ = ['EXPLAINERS', 'Explainer', 'explainer']

#: name -> factory of a method from a model (LRP: the paper's epsilon 100, normalized per
#: image so that deep networks do not underflow float32).
EXPLAINERS: dict[str, Callable[[nn.Module], Explainer]] = {
    'vbp': VisualBackProp,
    'lrp': partial(LRPEpsilon, epsilon=100.0, normalize=True),
    'gradcam': GradCAM,
}


def explainer(name: str, model: nn.Module) -> Explainer:
    """The method ``name`` for ``model``; ValueError naming the known methods otherwise."""
    try:
        factory = EXPLAINERS[name]
    except KeyError:
        raise ValueError(f'unknown method {name!r}; known: {", ".join(EXPLAINERS)}') from None
    return factory(model)
