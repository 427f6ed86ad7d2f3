"""vbp_node's parameters: one table of names, defaults, descriptions and ranges, and the rules
that normalise and check their values (config/vbp.yaml lists the same names for users). The
engine's settings take their defaults and choices from
:class:`~vbp_ros.engine.config.EngineConfig`, the overlay's from :mod:`vbp_ros.pixels.overlay`."""

from __future__ import annotations

import os
from dataclasses import fields

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..engine.attention_health import AttentionSettings
from ..engine.config import CHOICES as ENGINE_CHOICES
from ..engine.config import EngineConfig, choice_problem
from ..explain.attention import roi_problem
from ..interface import (COMPRESSED_IMAGE_TOPIC, IMAGE_TOPIC, MODEL_DESCRIPTION,
                         camera_name)
from ..models.loading import MAX_MODEL_MB
from ..pixels.overlay import (DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_WIDTH, OVERLAY_ALPHA_RANGE,
                              OVERLAY_WIDTH_RANGE)

CHOICES = {
    'input_transport': ('raw', 'compressed'),
    'input_qos': ('sensor_data', 'reliable', 'auto'),
    'mask_encoding': ('mono8', '32FC1'),
    **ENGINE_CHOICES,
}
ENGINE_DEFAULTS = EngineConfig()
SUBSCRIPTION_PARAMETERS = ('input_transport', 'input_qos')  # a change subscribes again
# Read at start, but not declared read-only: an empty list can only be given a value by a set
# (see declare), and rclpy's get_parameters answers nothing at all while any parameter asked
# for has none (`ros2 param dump` printed an empty node). The node refuses their changes.
READ_AT_START = ('image_topics',)
CASE_INSENSITIVE = ('input_transport', 'input_qos', 'precision', 'backend', 'device')


def _describe(kind: int, text: str, choices: tuple[str, ...] = (),
              low: float | None = None, high: float | None = None) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(type=kind, description=text)
    if choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(choices)
    if low is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    return descriptor


def _read_only_integer(text: str, low: int, high: int) -> ParameterDescriptor:
    return ParameterDescriptor(type=ParameterType.PARAMETER_INTEGER, read_only=True,
                               description=text,
                               integer_range=[IntegerRange(from_value=low, to_value=high,
                                                           step=1)])


STRING, DOUBLE, BOOL = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE,
                        ParameterType.PARAMETER_BOOL)
ATTENTION = AttentionSettings()  # the defaults of the attention_* parameters
ATTENTION_PARAMETERS = {'attention_roi': 'roi', 'attention_min_roi_mass': 'min_roi_mass',
                        'attention_alarm_frames': 'alarm_frames',
                        'attention_max_change': 'max_change'}
PARAMETERS = {
    'model': ('', _describe(STRING, MODEL_DESCRIPTION)),
    'model_card': ('', _describe(STRING, "model card (YAML); '' for the card beside the model "
                                 "(same stem, .yaml), or a vbp_ros checkpoint's own")),
    'card_overrides': ('', _describe(STRING, "card values that win over the card's, as YAML, "
                                     "e.g. '{output.index: 1, input.color: bgr}'")),
    'backend': (ENGINE_DEFAULTS.backend, _describe(
        STRING, 'torch, onnxruntime (mask inside the ONNX graph), or auto: onnxruntime for '
        'ONNX models and on the CPU, else torch', CHOICES['backend'])),
    'device': (ENGINE_DEFAULTS.device, _describe(
        STRING, 'auto (CUDA when present), cpu, cuda or cuda:N; tensorrt[:N] with onnxruntime')),
    'precision': (ENGINE_DEFAULTS.precision, _describe(STRING, 'network precision',
                                                       CHOICES['precision'])),
    'input_transport': ('raw', _describe(STRING, "subscribe 'image' (raw) or 'image/compressed'",
                                         CHOICES['input_transport'])),
    'input_qos': ('sensor_data', _describe(
        STRING, 'input QoS: best effort depth 1, reliable, or auto (reliable when every '
        'publisher is reliable)', CHOICES['input_qos'])),
    'deadline_ms': (33.3, _describe(DOUBLE, 'per-frame processing budget; 0 disables',
                                    low=0.0, high=10000.0)),
    'max_age_ms': (0.0, _describe(DOUBLE, 'drop frames whose header stamp is older than this; '
                                  '0 off', low=0.0, high=60000.0)),
    'max_stamp_age_s': (60.0, _describe(
        DOUBLE, "a header stamp more than this before the node's clock cannot be the capture "
        'time (a driver without a clock): no latency figure, counted as unusable; 0 off',
        low=0.0, high=1e9)),
    'publish_overlay': (True, _describe(BOOL, 'publish vbp/overlay (only while subscribed)')),
    'mask_encoding': ('mono8', _describe(STRING, 'vbp/mask encoding', CHOICES['mask_encoding'])),
    'overlay_alpha': (DEFAULT_OVERLAY_ALPHA, _describe(DOUBLE, 'strength of the red mask',
                                                       low=OVERLAY_ALPHA_RANGE[0],
                                                       high=OVERLAY_ALPHA_RANGE[1])),
    'overlay_max_width': (DEFAULT_OVERLAY_WIDTH, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER,
        description='widest published overlay (and live-view camera picture) in pixels; a '
                    'wider frame gives a proportionally smaller one (never larger than the '
                    'frame)',
        integer_range=[IntegerRange(from_value=OVERLAY_WIDTH_RANGE[0],
                                    to_value=OVERLAY_WIDTH_RANGE[1], step=1)])),
    'build_timeout_s': (30.0, _describe(
        DOUBLE, 'longest wait for a model build (a change of model, card, backend...; '
        'configure): a build not done by then is abandoned and the change refused',
        low=1.0, high=3600.0)),
    'max_model_mb': (MAX_MODEL_MB, _read_only_integer(
        "most MB that a model's files may hold, checked before any is read (and the memory "
        'left to the node), read at start', 1, 1 << 20)),
    'cpu_threads': (ENGINE_DEFAULTS.threads, _read_only_integer(
        'CPU threads of the network (torch, onnxruntime), read at start; 0: one per core '
        'that the node\'s other threads leave free', 0, 256)),
    'cuda_graphs': (ENGINE_DEFAULTS.cuda_graphs, _describe(
        BOOL, 'capture network and mask as a CUDA graph (CUDA only)')),
    'image_topics': ([], ParameterDescriptor(
        type=ParameterType.PARAMETER_STRING_ARRAY,
        description="cameras processed as one batch, one image topic each; a camera's outputs "
                    'go under its name (the topic\'s namespace: /front/image_raw -> '
                    "front/steering_angle, front/vbp/mask ...); []: the one topic 'image'; "
                    'read at start (a change is refused)')),
    'camera_batch': (0, _read_only_integer(
        'several cameras: most frames in one forward pass; 0: every camera (1: one pass per '
        'camera, faster on some CPUs: see vbp-bench --cameras)', 0, 64)),
    'camera_stale_ms': (500.0, _describe(DOUBLE, 'several cameras: one whose newest frame is '
                                         'older than this is not waited for', low=1.0,
                                         high=60000.0)),
    'batch_wait_ms': (15.0, _describe(DOUBLE, 'several cameras: how long the first frame '
                                      'waits for the other live cameras to join its batch',
                                      low=0.0, high=1000.0)),
    'foxglove_port': (0, _read_only_integer(
        'live view for Foxglove/Lichtblick (WebSocket) on this port; 0: off', 0, 65535)),
    'foxglove_address': ('127.0.0.1', ParameterDescriptor(
        type=STRING, read_only=True,
        description='address the live view listens on; another than 127.0.0.1 exposes the '
                    'camera and the masks to that network')),
    'foxglove_jpeg_quality': (80, _read_only_integer('JPEG quality of the live view', 1, 100)),
    'foxglove_max_rate_hz': (15.0, ParameterDescriptor(
        type=DOUBLE, read_only=True,
        description='most live-view frames a second per camera; 0: every frame',
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1000.0)])),
    'attention_roi': (list(ATTENTION.roi), ParameterDescriptor(
        type=ParameterType.PARAMETER_DOUBLE_ARRAY,
        description='region of interest of vbp/attention\'s ROI mass: x, y pairs of a polygon '
                    'in normalized camera coordinates (0 to 1, y down), one for all cameras')),
    'attention_min_roi_mass': (ATTENTION.min_roi_mass, _describe(
        DOUBLE, '/diagnostics warns when the ROI mass stays below this for '
        'attention_alarm_frames frames in a row', low=0.0, high=1.0)),
    'attention_alarm_frames': (ATTENTION.alarm_frames, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER,
        description='frames in a row below attention_min_roi_mass that raise the attention '
                    'alarm, and within bounds that clear it',
        integer_range=[IntegerRange(from_value=1, to_value=100000, step=1)])),
    'attention_max_change': (ATTENTION.max_change, _describe(
        DOUBLE, '/diagnostics warns when more than this share of the mask\'s mass moves from '
        'one frame to the next', low=0.0, high=1.0)),
}

MODEL_PARAMETERS = ('model', 'model_card', 'card_overrides')  # what build_engine loads
# A change of these builds a new engine, accepted only once it is built and warmed up: the
# model's files and the engine's settings that are parameters of the same name.
ENGINE_PARAMETERS = (*MODEL_PARAMETERS,
                     *(field.name for field in fields(EngineConfig) if field.name in PARAMETERS))


def declare(node: Node) -> None:
    """Declare every parameter of the table on ``node``."""
    for name, (default, descriptor) in PARAMETERS.items():
        # An empty list would be typed as bytes: such a parameter is declared by its type, and
        # then given its empty value where the start-up parameters gave none.
        declared = node.declare_parameter(
            name, Parameter.Type.STRING_ARRAY if default == [] else default, descriptor)
        if declared.type_ == Parameter.Type.NOT_SET:
            node.set_parameters([Parameter(name, Parameter.Type.STRING_ARRAY, default)])


def current(node: Node, name: str) -> Parameter:
    """A parameter; its default where it is declared by type alone and has no value."""
    default = PARAMETERS[name][0]
    fallback = (Parameter(name, value=default) if default != []
                else Parameter(name, Parameter.Type.STRING_ARRAY, []))
    return node.get_parameter_or(name, fallback)


def value(node: Node, name: str) -> object:
    """A parameter's value (see :func:`current`)."""
    return current(node, name).value


def values(node: Node, names: tuple[str, ...] | None = None) -> dict[str, object]:
    """The values of ``names`` (every parameter of the table by default)."""
    return {name: value(node, name) for name in names or PARAMETERS}


def normalized(parameters: list[Parameter]) -> list[Parameter]:
    """Enumerated strings matched without regard to spaces (and to case, but for the
    mask encoding's OpenCV names)."""
    result = []
    for parameter in parameters:
        if (parameter.name in CHOICES or parameter.name == 'device') and \
                parameter.type_ == Parameter.Type.STRING:
            text = parameter.value.strip()
            if parameter.name in CASE_INSENSITIVE:
                text = text.lower()
            parameter = Parameter(parameter.name, Parameter.Type.STRING, text)
        result.append(parameter)
    return result


def problem(changes: dict[str, object]) -> str | None:
    """What is wrong with these values of the enumerated parameters, or None (the engine's
    parameters are checked by building the engine)."""
    for name, new in changes.items():
        if (found := choice_problem(name, new, CHOICES)) is not None:
            return found
    if 'attention_roi' in changes:
        roi = roi_problem(list(changes['attention_roi']))
        if roi:
            return f'attention_roi: {roi}'
    return None


def attention_settings(node: Node) -> AttentionSettings:
    """The attention_* parameters as the pipeline takes them."""
    settings = {field: value(node, name) for name, field in ATTENTION_PARAMETERS.items()}
    settings['roi'] = tuple(float(v) for v in settings['roi'])
    return AttentionSettings(**settings)


def camera_topics(image_topics: list[str], transport: str) -> dict[str, str]:
    """The cameras by name, with their input topics (one unnamed camera by default)."""
    compressed = transport == 'compressed'
    if not image_topics:
        return {'': COMPRESSED_IMAGE_TOPIC if compressed else IMAGE_TOPIC}
    return {camera_name(topic): f'{topic}/compressed' if compressed else topic
            for topic in image_topics}


def camera_problem(image_topics: list[str]) -> str | None:
    """What is wrong with ``image_topics``, or None: names that give no camera, or two
    cameras of the same name."""
    try:
        names = [camera_name(topic) for topic in image_topics]
    except ValueError as error:
        return f'image_topics: {error}'
    if len(set(names)) != len(names):
        return (f'image_topics {image_topics} give cameras of the same name {names}: a camera '
                "is named by its topic's namespace (/front/image_raw -> front)")
    return None


def network_threads() -> int:
    """CPU threads for the network where ``cpu_threads`` is 0: the cores this process may use,
    less one for the node's own threads (frames, executor, DDS), at least one."""
    return max(1, len(os.sched_getaffinity(0)) - 1)
