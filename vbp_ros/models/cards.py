"""Model cards: the YAML file beside a model that says what the network is and how camera frames
become its input.

A card has the model's stem (``pilotnet.onnx`` -> ``pilotnet.yaml``) or is named explicitly.
Its keys are those of :data:`vbp_ros.models.checkpoint.CARD_FIELDS`, nested at the dots::

    architecture: my_pkg.nets:build   # weights files only: the network's import path
    arguments: {}
    input: {color: rgb, height: 66, width: 200, crop: [200, 0, 280, 640],
            scale: 1.0, mean: [0, 0, 0], std: [1, 1, 1]}
    output: {index: 0, unit: rad}

A card fills a :class:`~vbp_ros.models.checkpoint.ModelSpec`; what it leaves out comes from a base
spec (a vbp_ros checkpoint's own, or what an ONNX graph says about its input). Overrides
(node parameters, command-line options) use the same keys, nested or dotted
(``{output.index: 1}``). Every error names the key.

Cards and overrides are untrusted text: a card file is checked before it is opened (a regular
file of at most :data:`MAX_CARD_BYTES`), YAML aliases are refused (ten levels of nested
anchors in 600 bytes expand to gigabytes), and a refusal shows a value shortened
(:func:`shown`), never the whole of it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Mapping

import yaml

from .checkpoint import (CARD_FIELDS, CARD_KEYS, COLORS, CheckpointError, ModelSpec,
                         color_channels, read_small_file, shown)

CARD_SUFFIX = '.yaml'
MAX_CARD_BYTES = 256 * 1024  # cards are a few hundred bytes; so are overrides
_INTEGERS = {'input_channels', 'input_height', 'input_width', 'output_index'}
_FLOATS = {'pixel_scale', 'output_scale', 'steering_ratio'}
_STRINGS = {'architecture', 'description', 'input_name', 'input_layout', 'color',
            'output_unit', 'interpolation', 'weights_entry', 'weights_prefix'}


def card_path_for(model_path: str | Path) -> Path:
    """The card beside a model: same folder, same stem, ``.yaml``."""
    return Path(model_path).with_suffix(CARD_SUFFIX)


def read_card(path: str | Path) -> dict[str, object]:
    """The card's values by dotted key, checked against the known keys (not yet a spec)."""
    data = read_small_file(path, MAX_CARD_BYTES, 'model card')
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as error:
        raise CheckpointError(f'{path}: unreadable model card ({error.reason} at byte '
                              f'{error.start}; a card is UTF-8 text)') from None
    return parse_card(text, str(path))


class _CardLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases: a card has no use for them, and nested ones
    expand exponentially."""

    def compose_node(self, parent: object, index: object) -> object:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f'an alias (*{shown(event.anchor)[1:-1]}): aliases are not '
                'allowed in a model card', event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str) -> object:
    """A YAML document of a card or of overrides: at most :data:`MAX_CARD_BYTES`, no
    aliases; CheckpointError naming ``source`` otherwise."""
    if len(text) > MAX_CARD_BYTES:
        raise CheckpointError(f'{source}: {len(text)} characters; a model card or overrides '
                              f'are at most {MAX_CARD_BYTES}')
    try:
        return yaml.load(text, Loader=_CardLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as error:
        raise CheckpointError(f'{source}: not valid YAML ({_yaml_problem(error)})') from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What YAML found wrong and where, without the text around it (a line may be long)."""
    problem = getattr(error, 'problem', None) or type(error).__name__
    mark = getattr(error, 'problem_mark', None)
    where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
    return f'{problem[:200]}{where}'


def parse_card(text: str, source: str = 'model card') -> dict[str, object]:
    """Card values by dotted key from YAML text (a mapping, nested or dotted)."""
    document = load_yaml(text, source)
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise CheckpointError(f'{source}: a model card is a mapping of keys, not '
                              f'{type(document).__name__}')
    return flatten(document, source)


def flatten(values: Mapping, source: str, prefix: str = '') -> dict[str, object]:
    """Nested card values as {dotted key: value}; unknown keys are refused by name."""
    flat: dict[str, object] = {}
    for key, value in values.items():
        dotted = f'{prefix}{key}'
        if dotted in CARD_FIELDS:
            flat[dotted] = value
        elif any(k.startswith(f'{dotted}.') for k in CARD_FIELDS):
            if not isinstance(value, Mapping):
                sections = ', '.join(k[len(dotted) + 1:] for k in CARD_FIELDS
                                     if k.startswith(f'{dotted}.'))
                raise CheckpointError(f'{source}: {shown(dotted)} is a section of keys '
                                      f'({sections}), not {shown(value)}: give its keys '
                                      'under it, indented or as {key: value}')
            flat.update(flatten(value, source, f'{dotted}.'))
        else:
            raise CheckpointError(f'{source}: unknown key {shown(dotted)}; known keys: '
                                  f'{", ".join(CARD_FIELDS)}')
    return flat


def spec_from_card(values: Mapping[str, object], base: ModelSpec | Mapping | None = None,
                   source: str = 'model card') -> ModelSpec:
    """A spec from card values (dotted keys) over ``base`` (a spec, or partial spec fields)."""
    if isinstance(base, ModelSpec):
        fields = dataclasses.asdict(base)
    else:
        fields = dict(base or {})
    color_given = 'input.color' in values
    for key, value in values.items():
        fields[CARD_FIELDS[key]] = _coerce(key, value, source)
    if 'input.channels' not in values and (color_given or 'input_channels' not in fields):
        fields['input_channels'] = color_channels(fields.get('color', 'gray'))
    elif 'input.channels' in values and color_given:
        _check_channels(fields['input_channels'], fields['color'], source)
    fields.setdefault('architecture', '')
    missing = [CARD_KEYS[name] for name in ('input_height', 'input_width') if name not in fields]
    if missing:
        raise CheckpointError(f'{source}: {" and ".join(missing)} missing (the network input '
                              'size)')
    try:
        return ModelSpec(**fields)
    except CheckpointError as error:
        raise CheckpointError(f'{source}: {error}') from None
    except TypeError as error:
        raise CheckpointError(f'{source}: {error}') from None


def apply_overrides(spec: ModelSpec, overrides: Mapping | str | None,
                    source: str = 'card overrides') -> ModelSpec:
    """``spec`` with card values replaced (a mapping, or its YAML text; '' or None: none)."""
    if not overrides:
        return spec
    values = parse_card(overrides, source) if isinstance(overrides, str) else \
        flatten(overrides, source)
    return spec_from_card(values, spec, source)


def parse_assignments(assignments: list[str], source: str = '--set') -> dict[str, object]:
    """``KEY=VALUE`` strings (values in YAML: numbers, lists...) as card values by dotted key."""
    values = {}
    for assignment in assignments:
        key, separator, text = assignment.partition('=')
        if not separator:
            raise CheckpointError(f'{source}: {shown(assignment)} is not KEY=VALUE')
        values[key.strip()] = load_yaml(text, f'{source}: the value of {shown(key.strip())}')
    return flatten(values, source)


def card_document(spec: ModelSpec) -> dict[str, object]:
    """The nested card of a spec (every key, plain YAML types)."""
    document: dict[str, object] = {}
    for key, name in CARD_FIELDS.items():
        value = getattr(spec, name)
        if isinstance(value, tuple):
            value = list(value)
        section, _, leaf = key.rpartition('.')
        (document.setdefault(section, {}) if section else document)[leaf or key] = value
    return document


def card_text(spec: ModelSpec) -> str:
    """The YAML card of a spec."""
    header = ('# vbp_ros model card: how camera frames become this network\'s input and what '
              'its outputs mean.\n# Keys: docs/model-cards.md of vbp_ros.\n')
    return header + yaml.safe_dump(card_document(spec), sort_keys=False,
                                   default_flow_style=None)


def write_card(path: str | Path, spec: ModelSpec) -> Path:
    """Write the YAML card of ``spec`` to ``path``."""
    path = Path(path)
    path.write_text(card_text(spec), encoding='utf-8')
    return path


def _yaml_number_hint(value: object) -> str:
    """For a string that Python reads as a number but YAML 1.1 did not (``4e-3``: YAML wants
    a dot in the mantissa), how to write it (``0.004``); else ''."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ''
        if math.isfinite(number):  # 'nan' and 'inf' are no advice: a card refuses them
            return f' (YAML reads {value} as text: write {number!r})'
    return ''


def _check_channels(channels: int, color: str, source: str) -> None:
    expected = color_channels(color)
    if color in COLORS and channels != expected:
        raise CheckpointError(f'{source}: input.channels {channels} does not fit input.color '
                              f'{shown(color)} ({expected} channel{"s" * (expected > 1)})')


def _coerce(key: str, value: object, source: str) -> object:
    """A card value as the spec field holds it; a wrong type is refused naming the key."""
    name = CARD_FIELDS[key]

    def refuse(kind: str) -> CheckpointError:
        return CheckpointError(f'{source}: {key} must be {kind}, not {shown(value)}')

    if name in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse('an integer')
        return value
    if name in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(f'{source}: {key} must be a number, not {shown(value)}'
                                  f'{_yaml_number_hint(value)}')
        return float(value)
    if name in _STRINGS:
        if value is None:
            return ''
        if not isinstance(value, str):
            raise refuse('a string')
        return value
    if name == 'arguments':
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise refuse('a mapping of keyword arguments')
        return dict(value)
    if name in ('crop', 'camera_size'):
        if value is None:
            return None
        size = 4 if name == 'crop' else 2
        if not isinstance(value, (list, tuple)) or len(value) != size or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise refuse('[top, left, height, width] in pixels' if name == 'crop'
                         else '[width, height] in pixels')
        return tuple(value)
    if name in ('mean', 'std'):
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 for v in values):
            hint = next((_yaml_number_hint(v) for v in values if _yaml_number_hint(v)), '')
            raise CheckpointError(f'{source}: {key} must be a number or a list of numbers, '
                                  f'one per channel, not {shown(value)}{hint}')
        return tuple(float(v) for v in values)
    if name == 'output_names':
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(str(v) for v in values)
    raise AssertionError(name)
