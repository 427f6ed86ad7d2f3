"""Architectures by name: the built-in networks, those that packages register, and the user's own
networks by import path.

An architecture is a callable that returns an ``nn.Module`` when called with the card's
``arguments``. It is found, in this order, among:

1. the built-in networks (:data:`vbp_ros.models.networks.ARCHITECTURES`);
2. the entry points of the group ``vbp_ros.networks`` that installed packages declare, e.g. in a
   ``pyproject.toml``: ``[project.entry-points."vbp_ros.networks"] pilotnet =
   "my_pkg.nets:PilotNet"``;
3. an import path ``package.module:callable`` (``callable`` may be dotted: ``module:Class``).

2 and 3 import and run the user's code: that is what naming them in a model card asks for.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Callable

from torch import nn

from .networks import ARCHITECTURES

ENTRY_POINT_GROUP = 'vbp_ros.networks'


class ArchitectureError(ValueError):
    """An architecture that cannot be found, imported or built (the message names the card's
    ``architecture`` key)."""


def resolve_architecture(name: str) -> Callable[..., nn.Module]:
    """The callable that builds the architecture ``name`` (imports the user's module)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    registered = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    if name in registered:
        return _imported(registered[name].value, f"entry point '{name}' "
                         f"({ENTRY_POINT_GROUP})", registered[name].load)
    if ':' in name:
        return _imported(name, f"import path '{name}'", lambda: _import_path(name))
    known = sorted(ARCHITECTURES) + sorted(registered)
    raise ArchitectureError(
        f"architecture: unknown {name!r}; give a built-in or registered name ({', '.join(known)})"
        " or an import path 'package.module:callable'")


def _import_path(path: str) -> object:
    module_name, _, attribute = path.partition(':')
    target = importlib.import_module(module_name)
    for part in attribute.split('.'):
        target = getattr(target, part)
    return target


def _imported(path: str, what: str, load: Callable[[], object]) -> Callable[..., nn.Module]:
    try:
        target = load()
    except Exception as error:  # the user's module may fail in any way while it is imported
        raise ArchitectureError(f'architecture: {what} cannot be imported: '
                                f'{type(error).__name__}: {error}') from None
    if not callable(target):
        raise ArchitectureError(f'architecture: {what} is not callable')
    return target


def build_architecture(name: str, arguments: dict | None = None) -> nn.Module:
    """A freshly initialised ``nn.Module`` of the architecture ``name``."""
    factory = resolve_architecture(name)
    try:
        model = factory(**(arguments or {}))
    except Exception as error:  # the user's constructor may fail in any way
        raise ArchitectureError(f'architecture: {name!r} with arguments {arguments or {}} '
                                f'failed: {type(error).__name__}: {error}') from None
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f'architecture: {name!r} returned a {type(model).__name__}, '
                                'not a torch.nn.Module')
    return model
