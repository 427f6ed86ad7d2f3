"""The package's ROS interface as plain facts: topic and node names, sources, file names.

One owner for every name that the node, the camera, the recorder, the launch files, vbp-drive
and vbp-review share, and the one way their summaries are written as JSON. Imports the
standard library only, so every layer may read it.
"""

from __future__ import annotations

import json
import math
from typing import Protocol

# Node names.
VBP_NODE = 'vbp'
# vbp_node's model parameter and the launch files' model argument.
MODEL_DESCRIPTION = ('model file: a vbp_ros checkpoint, weights of your own network '
                     '(.safetensors, or a torch.save file: .pt, .pth, .ckpt...) or an ONNX file '
                     "(.onnx), with its model card beside it; '' for the bundled default model")
CAMERA_NODE = 'road_camera'
RECORDER_NODE = 'vbp_record'

# vbp_node's input topics (relative: a namespace or a remapping moves them).
IMAGE_TOPIC = 'image'
COMPRESSED_IMAGE_TOPIC = 'image/compressed'
DEFAULT_CAMERA_TOPIC = 'camera/image_raw'  # relative: a namespace moves the camera too

# vbp_node's outputs, published once per processed frame (relative names).
STEERING_TOPIC = 'steering_angle'
OUTPUTS_TOPIC = 'outputs'  # std_msgs/Float32MultiArray: every network output, flattened
MASK_TOPIC = 'vbp/mask'
OVERLAY_TOPIC = 'vbp/overlay'
# sensor_msgs/RegionOfInterest, latched (transient local): the rectangle of the camera frame
# that vbp/mask covers (the network's crop), published when it changes; with the camera
# frames it lets a review draw overlays that the node never drew.
MASK_ROI_TOPIC = 'vbp/mask_roi'
# std_msgs/Float32MultiArray: the mask's attention statistics (computed by
# vbp_ros.explain.attention), ATTENTION_LABELS in that order, named by the layout's label
# ATTENTION_LAYOUT_LABEL (in ROS and in the live view); vbp-fleet's columns of the same names.
ATTENTION_TOPIC = 'vbp/attention'
ATTENTION_LABELS = ('centroid_x', 'centroid_y', 'spread', 'concentration', 'roi_mass',
                    'change')
ATTENTION_LAYOUT_LABEL = ','.join(ATTENTION_LABELS)
PROCESSING_TIME_TOPIC = 'debug/processing_time_ms'
PIPELINE_LATENCY_TOPIC = 'debug/pipeline_latency_ms'
VBP_OUTPUTS = (STEERING_TOPIC, OUTPUTS_TOPIC, MASK_TOPIC, MASK_ROI_TOPIC, ATTENTION_TOPIC,
               OVERLAY_TOPIC, PROCESSING_TIME_TOPIC, PIPELINE_LATENCY_TOPIC)
# vbp_node's pictures: never camera frames, whatever reads a bag (vbp-fleet, vbp-review).
IMAGE_OUTPUTS = (MASK_TOPIC, OVERLAY_TOPIC)
DIAGNOSTICS_TOPIC = '/diagnostics'
# What a recording keeps by default (config/record.yaml lists the same): the camera, vbp_node's
# outputs but the overlay, which a review draws from the camera frames, the masks and their
# region, and /diagnostics. Recording the overlay is an option (record_overlay:=true,
# vbp-drive --record-overlay): it makes vbp_node draw a picture per frame for the recorder.
RECORDED_TOPICS = (DEFAULT_CAMERA_TOPIC,
                   *(topic for topic in VBP_OUTPUTS if topic != OVERLAY_TOPIC), DIAGNOSTICS_TOPIC)

# road_camera's sources; drive.launch.py adds 'topic': an existing camera publishes the topic.
CAMERA_SOURCES = ('synthetic', 'video', 'images')
LAUNCH_SOURCES = (*CAMERA_SOURCES, 'topic')
# auto: rosbag2 where it can run, else the package's vbp_record.
RECORDERS = ('auto', 'rosbag2', 'vbp_record')

# Files of the installed share/vbp_ros/config folder.
VBP_PARAMS = 'vbp.yaml'
CAMERA_PARAMS = 'road_camera.yaml'
RECORD_PARAMS = 'record.yaml'
FASTDDS_PROFILE = 'fastdds.xml'
RVIZ_CONFIG = 'vbp.rviz'

NANOSECONDS_PER_SECOND = 1_000_000_000


class Stamp(Protocol):
    """builtin_interfaces/Time as rclpy and rosbags both deliver it."""

    sec: int
    nanosec: int


def stamp_to_ns(stamp: Stamp) -> int:
    """A header stamp in integer nanoseconds."""
    return int(stamp.sec) * NANOSECONDS_PER_SECOND + int(stamp.nanosec)


def ns_to_stamp(nanoseconds: int) -> tuple[int, int]:
    """(sec, nanosec) of integer nanoseconds, for a header stamp."""
    return divmod(int(nanoseconds), NANOSECONDS_PER_SECOND)


def camera_name(topic: str) -> str:
    """The name of a camera by its image topic, which its outputs are published under: the
    topic's namespace (``/front/image_raw`` -> ``front``, ``cams/left/image`` -> ``cams/left``),
    or the topic itself when it has none (``image_front`` -> ``image_front``)."""
    parts = [part for part in topic.split('/') if part]
    if not parts:
        raise ValueError(f'{topic!r} is not a topic name')
    return '/'.join(parts[:-1]) or parts[0]


def camera_topic(camera: str, topic: str) -> str:
    """An output topic of a camera (relative), e.g. ``front/vbp/mask``; the node's own names
    for the single camera ('')."""
    return f'{camera}/{topic}' if camera else topic


MAX_REASON_CHARS = 1000  # the longest error line (the values in it are shortened already)


def message_line(error: BaseException, *, first_line: bool = False) -> str:
    """An error's message on one line (with ``first_line``, its first line alone, for messages
    that explain themselves at length below it), at most :data:`MAX_REASON_CHARS` long; its
    type's name where it has no message."""
    message = str(error)
    if first_line:
        message = next((line for line in message.splitlines() if line.strip()), '')
    text = ' '.join(message[:MAX_REASON_CHARS * 2].split()) or type(error).__name__
    if len(text) > MAX_REASON_CHARS or len(message) > MAX_REASON_CHARS * 2:
        text = f'{text[:MAX_REASON_CHARS - 40]} ... ({len(message)} characters in all)'
    return text


def one_line(error: BaseException) -> str:
    """How every error reads in a log line, a refusal or /diagnostics: its message on one line
    (:func:`message_line`), with its type where the message alone is vague (anything but
    ValueError and its subclasses, e.g. CheckpointError)."""
    text = message_line(error)
    return text if isinstance(error, ValueError) else f'{type(error).__name__}: {text}'


def json_text(document: object, indent: int | None = 2) -> str:
    """``document`` as standard JSON, as every summary and report file is written: a float
    that is not finite (a NaN angle, no latency figure) becomes null, since strict parsers (a
    browser's JSON.parse, jq) refuse Python's NaN and Infinity."""
    return json.dumps(_finite(document), indent=indent, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def resolve_topic(topic: str, namespace: str) -> str:
    """A topic name as a node in ``namespace`` resolves it (absolute names stay)."""
    if topic.startswith('/'):
        return topic
    namespace = namespace.strip('/')
    return f'/{namespace}/{topic}' if namespace else f'/{topic}'
