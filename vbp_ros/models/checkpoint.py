"""Checkpoints: weights in safetensors, with the metadata needed to use them on camera frames.

Loading never unpickles: safetensors holds raw tensors and a string-to-string header, and the
header is validated before any network is built.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import stat
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..explain.layouts import INPUT_LAYOUTS, NCHW
from .architectures import build_architecture

FORMAT = 'vbp_ros.checkpoint.v1'
# Units of the steering output and their factor to radians; the others are published as they are.
ANGLE_UNITS = {'rad': 1.0, 'deg': math.pi / 180.0, 'steering_wheel_rad': 1.0,
               'steering_wheel_deg': math.pi / 180.0}
OUTPUT_UNITS = (*ANGLE_UNITS, 'class_logits', 'unknown')
# The largest magnitude the published steering output of each unit can have and still be an
# answer (radians for the angle units): a road wheel turns less than half a turn, a steering
# wheel less than three turns either way. Outputs beyond it (or NaN, infinite) are refused,
# never published as a steering angle.
OUTPUT_LIMITS = {'rad': math.pi, 'deg': math.pi, 'steering_wheel_rad': 6 * math.pi,
                 'steering_wheel_deg': 6 * math.pi, 'class_logits': math.inf,
                 'unknown': math.inf}
COLORS = ('gray', 'rgb', 'bgr', 'yuv')

# How a frame's region is resized to the network input (OpenCV's flag for each is in
# vbp_ros.models.preprocess; docs/model-cards.md, "The resize", says which library calls
# each reproduces).
INTERPOLATIONS = ('area', 'linear', 'cubic', 'nearest')
# The model card's keys (YAML, nested at the dots) and the ModelSpec fields they fill.
CARD_FIELDS = {
    'architecture': 'architecture', 'arguments': 'arguments', 'description': 'description',
    'input.name': 'input_name', 'input.layout': 'input_layout', 'input.color': 'color',
    'input.channels': 'input_channels', 'input.height': 'input_height',
    'input.width': 'input_width', 'input.crop': 'crop',
    'input.camera_size': 'camera_size', 'input.scale': 'pixel_scale', 'input.mean': 'mean',
    'input.std': 'std', 'output.index': 'output_index', 'output.unit': 'output_unit',
    'output.scale': 'output_scale', 'output.steering_ratio': 'steering_ratio',
    'output.names': 'output_names',
    'input.interpolation': 'interpolation', 'weights.entry': 'weights_entry',
    'weights.prefix': 'weights_prefix',
}
CARD_KEYS = {spec_field: key for key, spec_field in CARD_FIELDS.items()}


def color_channels(color: str) -> int:
    """The channels of a network input in ``color``: one for gray, three for the others."""
    return 1 if color == 'gray' else 3


def default_color(channels: int) -> str:
    """The colour of a network input of ``channels`` where no card says: gray for one channel,
    RGB otherwise."""
    return 'gray' if channels == 1 else 'rgb'


class CheckpointError(ValueError):
    """A model file or card that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ModelSpec:
    """What a network is and how camera frames must be prepared for it: a model card.

    Every field is a key of the YAML model card (:data:`CARD_FIELDS`); a vbp_ros checkpoint
    carries its spec in the safetensors header, so it is its own card.

    Attributes:
        architecture: a name in :data:`vbp_ros.models.networks.ARCHITECTURES`, a name registered
            by a package under the ``vbp_ros.networks`` entry points, or an import path
            ``package.module:callable`` (which runs that package's code); '' for ONNX models.
        arguments: keyword arguments of that architecture's constructor.
        input_channels, input_height, input_width: the network input.
        color: 'gray', 'rgb', 'bgr' or 'yuv': how a camera frame is converted (after resizing).
        crop: (top, left, height, width) of the region taken from the camera frame, or None for
            the whole frame; it is resized to the network input.
        camera_size: (width, height) of the camera frames ``crop`` is stated for; frames of
            another resolution with the same aspect ratio get the crop scaled to them. None
            (checkpoints written before it existed): the crop is in pixels of any frame that
            holds it (see :class:`vbp_ros.models.preprocess.Preprocessor` for the whole rule).
        pixel_scale, mean, std: network input = (8-bit pixel * pixel_scale - mean) / std, per
            channel (one value applies to every channel).
        output_index: which element of the flattened outputs is the steering output.
        output_unit: its unit (:data:`OUTPUT_UNITS`); angles are published in radians.
        output_scale: factor from the network output to ``output_unit``.
        steering_ratio: steering-wheel angle over road-wheel angle; with a steering_wheel_*
            unit it turns the output into the road-wheel angle (0: publish the wheel angle).
        output_names: names of the outputs, for people (steering, throttle...).
        input_name: the ONNX graph input that takes the image ('' when there is only one).
        input_layout: the axis order of that input (:data:`INPUT_LAYOUTS`): 'nchw', or 'nhwc'
            for a channels-last ONNX graph (Keras, tf2onnx); PyTorch networks take 'nchw'.
        description: free text (provenance).
        interpolation: how the frame's region is resized to the network input
            (:data:`INTERPOLATIONS`): 'area' (the area average, OpenCV's INTER_AREA or
            :class:`~vbp_ros.pixels.area.AreaShrink`, when shrinking; INTER_LINEAR when
            enlarging), 'linear', 'cubic' or 'nearest' (OpenCV's INTER_LINEAR,
            INTER_CUBIC, INTER_NEAREST); choose what the network was trained with.
        weights_entry, weights_prefix: where a weights file of a state dict keeps it: the key
            of the checkpoint dictionary that holds it and the prefix of its keys ('': found by
            fitting them to the network, :func:`vbp_ros.models.state_dicts.fit_state_dict`).
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
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    output_index: int = 0
    output_scale: float = 1.0
    steering_ratio: float = 0.0
    output_names: tuple[str, ...] = ()
    input_name: str = ''
    input_layout: str = NCHW
    interpolation: str = 'area'
    weights_entry: str = ''
    weights_prefix: str = ''

    def __post_init__(self) -> None:
        def refuse(name: str, text: str) -> CheckpointError:
            return CheckpointError(f'{CARD_KEYS[name]} {text}')

        if self.color not in COLORS:
            raise refuse('color', f'must be one of {", ".join(COLORS)}, not {shown(self.color)}')
        if self.input_layout not in INPUT_LAYOUTS:
            raise refuse('input_layout', f'must be one of {", ".join(INPUT_LAYOUTS)}, not '
                         f'{shown(self.input_layout)}')
        if self.output_unit not in OUTPUT_UNITS:
            raise refuse('output_unit', f'must be one of {", ".join(OUTPUT_UNITS)}, not '
                         f'{shown(self.output_unit)}')
        if min(self.input_channels, self.input_height, self.input_width) < 1:
            raise CheckpointError('input channels, height and width must be positive '
                                  '(input.channels, input.height, input.width)')
        if self.crop is not None and (len(self.crop) != 4 or min(self.crop[2:]) < 1
                                      or min(self.crop[:2]) < 0):
            raise refuse('crop', f'must be (top, left, height, width), not {self.crop}')
        if self.camera_size is not None:
            if len(self.camera_size) != 2 or min(self.camera_size) < 1:
                raise refuse('camera_size', f'must be (width, height), not {self.camera_size}')
            if self.crop is not None and (self.crop[0] + self.crop[2] > self.camera_size[1] or
                                          self.crop[1] + self.crop[3] > self.camera_size[0]):
                raise CheckpointError(f'input.crop {self.crop} (top, left, height, width) does '
                                      f'not fit the {self.camera_size[0]}x'
                                      f'{self.camera_size[1]} camera it is stated for '
                                      '(input.camera_size)')
        for name in ('mean', 'std'):
            values = getattr(self, name)
            if len(values) not in (1, self.input_channels):
                raise refuse(name, f'has {len(values)} values for {self.input_channels} input '
                             'channels (give one, or one per channel)')
        for name in ('mean', 'std', 'pixel_scale', 'output_scale', 'steering_ratio'):
            value = getattr(self, name)
            if not all(map(math.isfinite, value if isinstance(value, tuple) else (value,))):
                raise refuse(name, f'must be finite, not {shown(value)}')
        if min(self.std) <= 0 or self.pixel_scale <= 0:
            raise CheckpointError('input.std and input.scale must be positive')
        if self.output_scale == 0:
            raise refuse('output_scale', 'must not be 0 (every steering angle would be 0)')
        if self.output_index < 0:
            raise refuse('output_index', f'must not be negative, not {self.output_index}')
        if self.steering_ratio < 0:
            raise refuse('steering_ratio', 'must not be negative')
        if self.interpolation not in INTERPOLATIONS:
            raise refuse('interpolation', f'must be one of {", ".join(INTERPOLATIONS)}, not '
                         f'{self.interpolation!r}')

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
            values = {name: _as_tuple(value) for name, value in values.items()}
            for key in ('crop', 'camera_size'):
                if values.get(key) is not None:
                    values[key] = tuple(int(v) for v in values[key])
            return cls(**values)
        except (KeyError, TypeError, AttributeError, ValueError) as error:  # JSON errors too
            raise CheckpointError(f'{source}: malformed checkpoint metadata: {error}') from None

    def build(self) -> nn.Module:
        """A freshly initialised network of this architecture (may import the user's code)."""
        return build_architecture(self.architecture, self.arguments)


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


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxtuple = 2, 6, 4, 6


def shown(value: object) -> str:
    """``repr(value)`` shortened for a message: a refusal never carries the whole of a long
    string or a deep value (a card's expanded YAML made a 35.8 MB reason)."""
    return _SHOWN.repr(value)


def check_regular_file(path: str | Path, max_bytes: int | None = None,
                       what: str = 'model file', limit_name: str = '') -> None:
    """Raise CheckpointError unless ``path`` is an existing regular file of at most
    ``max_bytes`` (named ``limit_name`` in the refusal, e.g. a parameter). Checked before any
    open: opening a FIFO or a device would block, or read without end."""
    try:
        status = Path(path).stat()
    except FileNotFoundError:
        raise CheckpointError(f'{path}: no such {what}') from None
    except OSError as error:
        raise CheckpointError(f'{path}: cannot read it ({error.strerror})') from None
    _check_status(path, status, max_bytes, what, limit_name)


def available_memory_bytes() -> int | None:
    """Memory this process may still take: the system's available memory, or less where its
    cgroup (a container, a systemd MemoryMax) allows less; None where neither can be read."""
    limits = []
    try:
        with open('/proc/meminfo', encoding='ascii') as stream:
            for line in stream:
                if line.startswith('MemAvailable:'):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        cgroup = Path('/sys/fs/cgroup')
        maximum = (cgroup / 'memory.max').read_text().strip()
        if maximum != 'max':
            limits.append(int(maximum) - int((cgroup / 'memory.current').read_text()))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_fits_in_memory(path: str | Path, size: int, what: str = 'model file') -> None:
    """Raise CheckpointError where a file of ``size`` bytes, read whole, cannot fit in the
    memory this process may still take."""
    available = available_memory_bytes()
    if available is not None and size > available:
        raise CheckpointError(f'{path}: {size / 2**20:.0f} MB, more than the '
                              f'{max(available, 0) / 2**20:.0f} MB of memory left to this '
                              f'process; a {what} is read whole')


def read_small_file(path: str | Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a small file (a card), checked like :func:`check_regular_file` and again
    on the opened file (opened without blocking: a FIFO put there meanwhile gives no wait)."""
    check_regular_file(path, max_bytes, what)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise CheckpointError(f'{path}: cannot read it ({error.strerror})') from None
    with os.fdopen(descriptor, 'rb') as stream:
        _check_status(path, os.fstat(descriptor), max_bytes, what, '')
        return stream.read(max_bytes + 1)[:max_bytes]


def _check_status(path: str | Path, status: os.stat_result, max_bytes: int | None, what: str,
                  limit_name: str) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise CheckpointError(f'{path}: not a regular file (a FIFO, device or directory)')
    if max_bytes is not None and status.st_size > max_bytes:
        limit = f'{max_bytes / 2**20:g} MB' if max_bytes >= 2**20 else f'{max_bytes} bytes'
        raise CheckpointError(f'{path}: {status.st_size} bytes; a {what} is at most {limit}'
                              + (f' ({limit_name})' if limit_name else ''))


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
