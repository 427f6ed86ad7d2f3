"""Checkpoints: weights in safetensors, with the metadata needed to use them on camera frames.

Loading never unpickles: safetensors holds raw tensors and a string-to-string header, and the
header is validated before any network is built.
"""

from __future__ import annotations

import json
import math
import stat
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
# The largest magnitude a first output of each unit can have and still be an answer: a road
# wheel turns less than half a turn, a steering wheel less than three turns either way. Outputs
# beyond it (or NaN, infinite) are refused, never published as a steering angle.
OUTPUT_LIMITS = {'rad': math.pi, 'steering_wheel_rad': 6 * math.pi, 'class_logits': math.inf,
                 'unknown': math.inf}
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
        camera_size: (width, height) of the camera frames ``crop`` is stated for; frames of
            another resolution with the same aspect ratio get the crop scaled to them. None
            (checkpoints written before it existed): the crop is in pixels of any frame that
            holds it (see :class:`vbp_ros.engine.preprocess.Preprocessor` for the whole rule).
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
    camera_size: tuple[int, int] | None = None
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
        if self.camera_size is not None:
            if len(self.camera_size) != 2 or min(self.camera_size) < 1:
                raise CheckpointError(
                    f'camera_size must be (width, height), not {self.camera_size}')
            if self.crop is not None and (self.crop[0] + self.crop[2] > self.camera_size[1] or
                                          self.crop[1] + self.crop[3] > self.camera_size[0]):
                raise CheckpointError(f'crop {self.crop} (top, left, height, width) does not '
                                      f'fit the {self.camera_size[0]}x{self.camera_size[1]} '
                                      'camera it is stated for')

    def to_metadata(self) -> dict[str, str]:
        """The safetensors header entries (strings only)."""
        return {'format': FORMAT, 'spec': json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, source: str) -> ModelSpec:
        if not metadata or metadata.get('format') != FORMAT:
            raise CheckpointError(f'{source}: not a vbp_ros checkpoint (no {FORMAT} metadata)')
        try:
            values = json.loads(metadata['spec'])
            for key in ('crop', 'camera_size'):
                if values.get(key) is not None:
                    values[key] = tuple(int(v) for v in values[key])
            return cls(**values)
        except (KeyError, TypeError, AttributeError, ValueError) as error:  # JSON errors too
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


def check_regular_file(path: str | Path) -> None:
    """Raise CheckpointError unless ``path`` is an existing regular file. Checked before any
    open: opening a FIFO or a device would block, or read without end."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise CheckpointError(f'{path}: no such checkpoint file') from None
    except OSError as error:
        raise CheckpointError(f'{path}: cannot read it ({error.strerror})') from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f'{path}: not a regular file (a FIFO, device or directory)')


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of a checkpoint, from its header alone (no weights are read):
    a quick check of a file before it is loaded."""
    check_regular_file(path)
    source = str(path)
    try:
        with safe_open(source, framework='pt') as handle:
            metadata = handle.metadata()
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f'{source}: not a readable safetensors file ({error})') from None
    return ModelSpec.from_metadata(metadata, source)


def load_checkpoint(path: str | Path, device: str | torch.device = 'cpu'
                    ) -> tuple[nn.Module, ModelSpec]:
    """The network (in eval mode, on ``device``) and its spec from a safetensors file."""
    source = str(path)
    spec = read_spec(path)
    try:
        state = load_file(source)
    except FileNotFoundError:
        raise CheckpointError(f'{source}: no such checkpoint file') from None
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f'{source}: not a readable safetensors file ({error})') from None
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
