"""One way from a model file to a running engine, for the node and every tool.

:func:`build_engine` opens the model and its card (:func:`vbp_ros.models.loading.open_model`),
builds the :class:`~vbp_ros.engine.engine.VBPEngine` and warms it up on a blank frame of the
card's size, so that whatever is wrong with the model, the card or the settings surfaces here,
as a ValueError with a reason (onnx's and onnxruntime's exceptions included, as
:mod:`vbp_ros.engine.onnx_backend` turns them into one), before anything is swapped in or
processed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping

from ..models.loading import MAX_MODEL_MB, open_model
from .config import EngineConfig
from .engine import VBPEngine


def build_engine(model: str | Path | None, card: str | Path | None = None,
                 overrides: Mapping | str | None = None, config: EngineConfig | None = None, *,
                 max_model_mb: float = MAX_MODEL_MB, **settings: object) -> VBPEngine:
    """A warmed-up engine for a model file ('' or None: the bundled default) and its card, run
    as ``config`` says (default: :class:`EngineConfig`'s defaults), with ``settings`` (its
    fields, e.g. ``device='cpu'``) replacing the config's; raises ValueError
    (CheckpointError included) naming what does not fit."""
    config = replace(config or EngineConfig(), **settings)
    loaded = open_model(model, card, overrides, max_model_mb)
    return VBPEngine(loaded.network, loaded.spec, config, model_name=loaded.name)
