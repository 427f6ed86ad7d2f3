"""Checkpoints: weights in safetensors, with the metadata needed to use them on camera frames.

Loading never unpickles: safetensors holds raw tensors and a string-to-string header, and the
header is validated before any network is built.
"""

from __future__ import annotations

import json
from importlib import resources
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .networks import build_network

FORMAT = 'vbp_ros.checkpoint.v1'
OUTPUT_UNITS = ('rad', 'steering_wheel_rad', 'class_logits', 'unknown')
COLORS = ('gray', 'rgb')


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint's network is and how camera frames must be prepared for it.

    Attributes:
        architecture: name in :data:`vbp_ros.core.networks.ARCHITECTURES`.
        arguments: keyword arguments of that architecture's constructor.
        input_channels, input_height, input_width: the network input.
        color: 'gray' or 'rgb': how a camera frame is converted before resizing.
        crop: (top, left, height, width) of the region taken from the camera frame, or None for
            the whole frame; it is resized to the network input.
        pixel_scale: factor from 8-bit pixel values to network input values.
        output_unit: meaning of the network output ('rad', 'steering_wheel_rad', ...).
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

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise CheckpointError(f'color must be one of {COLORS}, not {self.color!r}')
        if self.output_unit not in OUTPUT_UNITS:
            raise CheckpointError(
                f'output_unit must be one of {OUTPUT_UNITS}, not {self.output_unit!r}')
        if min(self.input_channels, self.input_height, self.input_width) < 1:
            raise CheckpointError('input channels, height and width must be positive')
        if self.crop is not None and (len(self.crop) != 4 or min(self.crop[2:]) < 1
                                      or min(self.crop[:2]) < 0):
            raise CheckpointError(f'crop must be (top, left, height, width), not {self.crop}')

    def to_metadata(self) -> dict[str, str]:
        """The safetensors header entries (strings only)."""
        return {'format': FORMAT, 'spec': json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, source: str) -> ModelSpec:
        if not metadata or metadata.get('format') != FORMAT:
            raise CheckpointError(f'{source}: not a vbp_ros checkpoint (no {FORMAT} metadata)')
        try:
            values = json.loads(metadata['spec'])
            if values.get('crop') is not None:
                values['crop'] = tuple(int(v) for v in values['crop'])
            return cls(**values)
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise CheckpointError(f'{source}: malformed checkpoint metadata: {error}') from None

    def build(self) -> nn.Module:
        """A freshly initialised network of this architecture."""
        return build_network(self.architecture, **self.arguments)


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
