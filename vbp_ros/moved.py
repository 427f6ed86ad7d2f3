"""Old module paths of the package, kept importable for one release with a DeprecationWarning.

The ROS-free ``core/`` was split into ``models/`` (networks, checkpoints, cards, loading,
preprocessing) and ``explain/`` (VisualBackProp, LRP, Grad-CAM, metrics), and vbp-fleet's
compute moved from ``data/fleet/`` to ``fleet/``. ``import vbp_ros.core.vbp`` still works and
gives the module at its new path. Imports nothing of the package, so every layer may be loaded
without it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

_MODELS = ('architectures', 'cards', 'checkpoint', 'loading', 'networks', 'onnx_batch',
           'state_dicts', 'torch7')
_EXPLAIN = ('explainers', 'explanation_metrics', 'gradcam', 'graph', 'lrp', 'metrics',
            'onnx_vbp', 'reference', 'rules', 'targets', 'vbp')
MOVED = {
    **{f'vbp_ros.core.{name}': f'vbp_ros.models.{name}' for name in _MODELS},
    **{f'vbp_ros.core.{name}': f'vbp_ros.explain.{name}' for name in _EXPLAIN},
    'vbp_ros.engine.preprocess': 'vbp_ros.models.preprocess',
    'vbp_ros.data.fleet.worker': 'vbp_ros.fleet.worker',
    'vbp_ros.data.fleet.cluster': 'vbp_ros.fleet.cluster',
    'vbp_ros.data.fleet.stats': 'vbp_ros.explain.attention',
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old path with the module at its new path, warning once per import."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f'{spec.name} moved to {new}; the old path goes in the next release',
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module at the new path is already executed."""


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
