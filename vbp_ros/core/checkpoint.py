"""Checkpoints: weights in safetensors, with the metadata needed to use them on camera frames.

Loading never unpickles: safetensors holds raw tensors and a string-to-string header, and the
header is validated before any network is built.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .architectures import build_architecture

FORMAT = 'vbp_ros.checkpoint.v1'
# Units of the steering output and their factor to radians; the others are published as they are.
ANGLE_UNITS = {'rad': 1.0, 'deg': math.pi / 180.0, 'steering_wheel_rad': 1.0,
               'steering_wheel_deg': math.pi / 180.0}
OUTPUT_UNITS = (*ANGLE_UNITS, 'class_logits', 'unknown')
COLORS = ('gray', 'rgb', 'bgr', 'yuv')
# The model card's keys (YAML, nested at the dots) and the ModelSpec fields they fill.
CARD_FIELDS = {
    'architecture': 'architecture', 'arguments': 'arguments', 'description': 'description',
    'input.name': 'input_name', 'input.color': 'color', 'input.channels': 'input_channels',
    'input.height': 'input_height', 'input.width': 'input_width', 'input.crop': 'crop',
    'input.scale': 'pixel_scale', 'input.mean': 'mean', 'input.std': 'std',
    'output.index': 'output_index', 'output.unit': 'output_unit', 'output.scale': 'output_scale',
    'output.steering_ratio': 'steering_ratio', 'output.names': 'output_names',
}
CARD_KEYS = {spec_field: key for key, spec_field in CARD_FIELDS.items()}


class CheckpointError(ValueError):
    """A model file or card that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ModelSpec:
    """What a network is and how camera frames must be prepared for it: a model card.

    Every field is a key of the YAML model card (:data:`CARD_FIELDS`); a vbp_ros checkpoint
    carries its spec in the safetensors header, so it is its own card.

    Attributes:
        architecture: a name in :data:`vbp_ros.core.networks.ARCHITECTURES`, a name registered
            by a package under the ``vbp_ros.networks`` entry points, or an import path
            ``package.module:callable`` (which runs that package's code); '' for ONNX models.
        arguments: keyword arguments of that architecture's constructor.
        input_channels, input_height, input_width: the network input.
        color: 'gray', 'rgb', 'bgr' or 'yuv': how a camera frame is converted before resizing.
        crop: (top, left, height, width) of the region taken from the camera frame, or None for
            the whole frame; it is resized to the network input.
        pixel_scale, mean, std: network input = (8-bit pixel * pixel_scale - mean) / std, per
            channel (one value applies to every channel).
        output_index: which element of the flattened outputs is the steering output.
        output_unit: its unit (:data:`OUTPUT_UNITS`); angles are published in radians.
        output_scale: factor from the network output to ``output_unit``.
        steering_ratio: steering-wheel angle over road-wheel angle; with a steering_wheel_*
            unit it turns the output into the road-wheel angle (0: publish the wheel angle).
        output_names: names of the outputs, for people (steering, throttle...).
        input_name: the ONNX graph input that takes the image ('' when there is only one).
        description: free text (provenance).
    """

    architecture: str
    input_channels: int
    input_height: int
    input_width: int
    arguments: dict = field(default_factory=dict)
    color: str = 'gray'
    crop: tuple[int, int, int, int] | None = None
    pixel_scale: float = 1.0 / 255.0
    output_unit: str = 'rad'
    description: str = ''
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    output_index: int = 0
    output_scale: float = 1.0
    steering_ratio: float = 0.0
    output_names: tuple[str, ...] = ()
    input_name: str = ''

    def __post_init__(self) -> None:
        def refuse(name: str, text: str) -> CheckpointError:
            return CheckpointError(f'{CARD_KEYS[name]} {text}')

        if self.color not in COLORS:
            raise refuse('color', f'must be one of {", ".join(COLORS)}, not {self.color!r}')
        if self.output_unit not in OUTPUT_UNITS:
            raise refuse('output_unit', f'must be one of {", ".join(OUTPUT_UNITS)}, not '
                         f'{self.output_unit!r}')
        if min(self.input_channels, self.input_height, self.input_width) < 1:
            raise CheckpointError('input channels, height and width must be positive '
                                  '(input.channels, input.height, input.width)')
        if self.crop is not None and (len(self.crop) != 4 or min(self.crop[2:]) < 1
                                      or min(self.crop[:2]) < 0):
            raise refuse('crop', f'must be (top, left, height, width), not {self.crop}')
        for name in ('mean', 'std'):
            values = getattr(self, name)
            if len(values) not in (1, self.input_channels):
                raise refuse(name, f'has {len(values)} values for {self.input_channels} input '
                             'channels (give one, or one per channel)')
        if min(self.std) <= 0 or self.pixel_scale <= 0:
            raise CheckpointError('input.std and input.scale must be positive')
        if self.output_index < 0:
            raise refuse('output_index', f'must not be negative, not {self.output_index}')
        if self.steering_ratio < 0:
            raise refuse('steering_ratio', 'must not be negative')

    def steering_angle(self, outputs: Sequence[float]) -> float:
        """The steering output of one frame's flattened outputs, in radians where its unit is
        an angle (REP 103); other units are returned as they are."""
        value = float(outputs[self.output_index]) * self.output_scale
        value *= ANGLE_UNITS.get(self.output_unit, 1.0)
        if self.output_unit.startswith('steering_wheel') and self.steering_ratio:
            value /= self.steering_ratio
        return value

    def to_metadata(self) -> dict[str, str]:
        """The safetensors header entries (strings only)."""
        return {'format': FORMAT, 'spec': json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, source: str) -> ModelSpec:
        if not metadata or metadata.get('format') != FORMAT:
            raise CheckpointError(f'{source}: not a vbp_ros checkpoint (no {FORMAT} metadata)')
        try:
            values = json.loads(metadata['spec'])
            return cls(**{name: _as_tuple(value) for name, value in values.items()})
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise CheckpointError(f'{source}: malformed checkpoint metadata: {error}') from None

    def build(self) -> nn.Module:
        """A freshly initialised network of this architecture (may import the user's code)."""
        return build_architecture(self.architecture, self.arguments)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the spec's fields."""
        return tuple(f.name for f in fields(cls))


def _as_tuple(value: object) -> object:
    """JSON lists back into the tuples the spec holds (crop, mean, std, output names)."""
    return tuple(value) if isinstance(value, list) else value


def default_model_path() -> Path:
    """The bundled default steering model (trained by vbp-train on synthetic roads)."""
    return Path(str(resources.files('vbp_ros') / 'models' / 'default.safetensors'))


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec) -> None:
    """Write ``model``'s state dict and ``spec`` to a safetensors file."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in
             model.state_dict().items()}
    save_file(state, str(path), metadata=spec.to_metadata())


def load_checkpoint(path: str | Path, device: str | torch.device = 'cpu'
                    ) -> tuple[nn.Module, ModelSpec]:
    """The network (in eval mode, on ``device``) and its spec from a safetensors file."""
    source = str(path)
    try:
        with safe_open(source, framework='pt') as handle:
            metadata = handle.metadata()
        state = load_file(source)
    except FileNotFoundError:
        raise CheckpointError(f'{source}: no such checkpoint file') from None
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f'{source}: not a readable safetensors file ({error})') from None
    spec = ModelSpec.from_metadata(metadata, source)
    try:
        model = spec.build()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f'{source}: cannot build {spec.architecture!r}: {error}') from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f'{source}: weights do not fit {spec.architecture!r}: '
                              f'{error}') from None
    return model.to(device).eval(), spec
