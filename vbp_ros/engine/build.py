"""One way from a model file to a running engine, for the node and every tool.

:func:`build_engine` loads the model and its card (:func:`vbp_ros.models.loading.load_model`),
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

from ..models.checkpoint import default_model_path
from ..models.loading import MAX_MODEL_MB, load_model, model_card_path
from .config import EngineConfig
from .engine import VBPEngine


def describe_model(model: str | Path | None, card: str | Path | None = None) -> str:
    """The model (and the card that applies to it) as people name it: a path, or 'bundled
    default'."""
    name = str(model) if model else f'bundled default ({default_model_path().name})'
    card_file = model_card_path(model, card) if model else None
    return f'{name} (card {card_file})' if card_file else name


def build_engine(model: str | Path | None, card: str | Path | None = None,
                 overrides: Mapping | str | None = None, config: EngineConfig | None = None, *,
                 max_model_mb: float = MAX_MODEL_MB, **settings: object) -> VBPEngine:
    """A warmed-up engine for a model file ('' or None: the bundled default) and its card, run
    as ``config`` says (default: :class:`EngineConfig`'s defaults), with ``settings`` (its
    fields, e.g. ``device='cpu'``) replacing the config's; raises ValueError
    (CheckpointError included) naming what does not fit."""
    config = replace(config or EngineConfig(), **settings)
    network, spec = load_model(model, card, overrides, max_model_mb)
    return VBPEngine(network, spec, config, model_name=describe_model(model, card))
