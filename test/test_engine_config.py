"""EngineConfig owns the engine's defaults and checks, and pixels/overlay.py the overlay's:
vbp_node's parameter table, config/vbp.yaml and docs/node.md say the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vbp_ros.engine.config import BACKENDS, PRECISIONS, EngineConfig
from vbp_ros.pixels.overlay import (DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_WIDTH,
                                    OVERLAY_ALPHA_RANGE, OVERLAY_WIDTH_RANGE)
from vbp_ros.ros.parameters import CHOICES, ENGINE_PARAMETERS, PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = EngineConfig()
# vbp_node's parameter -> the engine's default it declares.
ENGINE_DEFAULTS = {'backend': DEFAULTS.backend, 'device': DEFAULTS.device,
                   'precision': DEFAULTS.precision, 'cuda_graphs': DEFAULTS.cuda_graphs,
                   'cpu_threads': DEFAULTS.threads, 'overlay_alpha': DEFAULT_OVERLAY_ALPHA,
                   'overlay_max_width': DEFAULT_OVERLAY_WIDTH}


def node_guide_default(name: str) -> str:
    """The default of ``name`` in docs/node.md's parameter table, without backticks."""
    text = (ROOT / 'docs' / 'node.md').read_text()
    found = re.search(rf'^\| `{name}` \| `([^`]*)` \|', text, re.MULTILINE)
    assert found, f'docs/node.md does not list {name}'
    return found.group(1)


def as_written(value: object) -> str:
    """A default as docs/node.md writes it: false, 0.8, auto."""
    if isinstance(value, bool):
        return str(value).lower()
    return f'{value:g}' if isinstance(value, float) else str(value)


def test_the_node_declares_the_engine_and_overlay_defaults() -> None:
    declared = {name: PARAMETERS[name][0] for name in ENGINE_DEFAULTS}
    assert declared == ENGINE_DEFAULTS
    assert CHOICES['backend'] == BACKENDS and CHOICES['precision'] == tuple(PRECISIONS)
    for name in ('backend', 'precision'):
        assert PARAMETERS[name][1].additional_constraints == 'one of: ' + ', '.join(CHOICES[name])
    alpha = PARAMETERS['overlay_alpha'][1].floating_point_range[0]
    assert (alpha.from_value, alpha.to_value) == OVERLAY_ALPHA_RANGE
    width = PARAMETERS['overlay_max_width'][1].integer_range[0]
    assert (width.from_value, width.to_value) == OVERLAY_WIDTH_RANGE


def test_the_parameter_file_and_the_node_guide_give_the_same_defaults() -> None:
    (section,) = yaml.safe_load((ROOT / 'config' / 'vbp.yaml').read_text()).values()
    in_file = {name: section['ros__parameters'][name] for name in ENGINE_DEFAULTS}
    assert in_file == ENGINE_DEFAULTS
    documented = {name: node_guide_default(name) for name in ENGINE_DEFAULTS}
    assert documented == {name: as_written(value) for name, value in ENGINE_DEFAULTS.items()}


def test_a_change_of_the_model_or_the_engine_settings_builds_a_new_engine() -> None:
    assert ENGINE_PARAMETERS == ('model', 'model_card', 'card_overrides', 'backend', 'device',
                                 'precision', 'cuda_graphs')


@pytest.mark.parametrize('settings, message', [
    ({'backend': 'tensorflow'}, 'backend must be one of auto, torch, onnxruntime'),
    ({'precision': 'fp8'}, 'precision must be one of fp32, fp16, bf16'),
    ({'max_batch': 0}, 'max_batch must be at least 1'),
    ({'threads': -2}, 'threads must be 0'),
])
def test_settings_that_cannot_work_are_refused_when_the_config_is_made(settings: dict,
                                                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineConfig(**settings)


def test_a_config_takes_the_values_that_name_its_fields() -> None:
    config = EngineConfig.of({'backend': 'torch', 'max_batch': 3, 'model': 'net.onnx',
                              'deadline_ms': 33.3})
    assert config == EngineConfig(backend='torch', max_batch=3)
    with pytest.raises(AttributeError):
        config.backend = 'onnxruntime'  # frozen: a running engine's settings do not change
