"""A Foxglove WebSocket server of vbp_node's outputs, for Foxglove and Lichtblick in a browser.

The server (the ``foxglove-sdk`` package) advertises, per camera, channels named like the ROS
topics: the camera frame, ``vbp/overlay`` and ``vbp/mask`` as ``foxglove.CompressedImage``
(JPEG), the steering angle and the pipeline latency as JSON ``{"data": value}``, and
``vbp/attention`` as JSON shaped like its std_msgs/Float32MultiArray (``{"layout": ...,
"data": [...]}``, NaN sent as null), so that one message path (``/vbp/attention.data[4]``)
plots it live and from a recorded bag. A channel
is encoded only while a client subscribes to it (the server says so through
``has_sinks()``), at most ``max_rate_hz`` times a second per camera, so the live view costs
nothing without a client. The camera frame is shrunk to at most ``max_width`` columns first,
as the overlay is, so an 8K camera does not put a 30 MB encode in the worker. It binds to
127.0.0.1 unless another address is given, which exposes the stream to that network.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import foxglove
import numpy as np
from foxglove.channels import CompressedImageChannel
from foxglove.messages import CompressedImage, Timestamp

from ..interface import ATTENTION_LABELS, ATTENTION_LAYOUT_LABEL, ns_to_stamp
from ..pixels.encodings import encode_jpeg, mask_to_mono8
from ..pixels.frames import to_rgb8
from ..pixels.overlay import DEFAULT_OVERLAY_WIDTH, shrunk_to_width

SCALAR_SCHEMA = foxglove.Schema(
    name='vbp_ros.Scalar', encoding='jsonschema',
    data=b'{"type": "object", "properties": {"data": {"type": "number"}}}')
# std_msgs/Float32MultiArray's fields, as foxglove_bridge and a bag give them to Foxglove.
ATTENTION_SCHEMA = foxglove.Schema(
    name='vbp_ros.Attention', encoding='jsonschema',
    data=b'{"type": "object", "properties": {'
         b'"layout": {"type": "object", "properties": {'
         b'"dim": {"type": "array", "items": {"type": "object", "properties": {'
         b'"label": {"type": "string"}, "size": {"type": "integer"}, '
         b'"stride": {"type": "integer"}}}}, '
         b'"data_offset": {"type": "integer"}}}, '
         b'"data": {"type": "array", "items": {"type": "number"}, '
         b'"description": "null where vbp/attention has NaN (a mask without attention)"}}}')
ATTENTION_LAYOUT = {'dim': [{'label': ATTENTION_LAYOUT_LABEL, 'size': len(ATTENTION_LABELS),
                             'stride': len(ATTENTION_LABELS)}], 'data_offset': 0}


@dataclass(frozen=True)
class CameraTopics:
    """The (resolved) ROS topic names of one camera's input and outputs; channel names."""

    camera: str
    overlay: str
    mask: str
    angle: str
    latency: str
    attention: str


@dataclass(frozen=True)
class LiveFrame:
    """One processed frame, as the live view may show it.

    Attributes:
        stamp_ns: the camera frame's header stamp.
        frame_id: the camera frame's header frame_id.
        pixels: the camera frame (any accepted layout) and ``order``, its channel order.
        overlay: the rgb8 overlay, or None when it was not computed.
        mask: the [0, 1] mask at network resolution.
        angle: the steering angle (radians).
        latency_ms: the pipeline latency, or None when the stamp gives none.
        attention: the mask's attention statistics, in the order of ``ATTENTION_LABELS``.
    """

    stamp_ns: int
    frame_id: str
    pixels: np.ndarray
    order: str
    overlay: np.ndarray | None
    mask: np.ndarray
    angle: float
    latency_ms: float | None
    attention: Sequence[float]


class _CameraChannels:
    def __init__(self, topics: CameraTopics, context: foxglove.Context) -> None:
        self.camera = CompressedImageChannel(topics.camera, context=context)
        self.overlay = CompressedImageChannel(topics.overlay, context=context)
        self.mask = CompressedImageChannel(topics.mask, context=context)
        self.angle = foxglove.Channel(topics.angle, schema=SCALAR_SCHEMA,
                                      message_encoding='json', context=context)
        self.latency = foxglove.Channel(topics.latency, schema=SCALAR_SCHEMA,
                                        message_encoding='json', context=context)
        self.attention = foxglove.Channel(topics.attention, schema=ATTENTION_SCHEMA,
                                          message_encoding='json', context=context)
        self.next_due = 0.0

    def watched(self) -> bool:
        return any(channel.has_sinks() for channel in (self.camera, self.overlay, self.mask,
                                                       self.angle, self.latency,
                                                       self.attention))


class LiveView:
    """A Foxglove WebSocket server of vbp_node's outputs; ``close()`` stops it.

    Args:
        port: TCP port (0: any free port, see :attr:`port`).
        host: address to bind; 127.0.0.1 keeps the stream on this machine.
        jpeg_quality: JPEG quality of the images, 1 to 100.
        max_rate_hz: most frames a second per camera (0: every frame).
        max_width: widest camera picture sent; wider frames are shrunk proportionally.
    """

    def __init__(self, port: int, host: str = '127.0.0.1', jpeg_quality: int = 80,
                 max_rate_hz: float = 15.0, max_width: int = DEFAULT_OVERLAY_WIDTH) -> None:
        if not 1 <= jpeg_quality <= 100 or max_rate_hz < 0 or max_width < 1:
            raise ValueError('jpeg_quality must be in [1, 100], max_rate_hz >= 0 and '
                             'max_width >= 1')
        self.jpeg_quality = jpeg_quality
        self.max_width = max_width
        self.period_s = 1.0 / max_rate_hz if max_rate_hz else 0.0
        self._context = foxglove.Context()
        self._cameras: dict[str, _CameraChannels] = {}
        self._server = foxglove.start_server(name='vbp_ros', host=host, port=port,
                                             context=self._context)
        self.frames_sent = 0

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._server.port

    def add_camera(self, key: str, topics: CameraTopics) -> None:
        """Advertise the channels of one camera, known by ``key`` afterwards."""
        self._cameras[key] = _CameraChannels(topics, self._context)

    def wants_overlay(self, key: str) -> bool:
        """Whether the next :meth:`publish` for this camera would send an overlay (a client
        subscribes and the rate allows it): the caller computes overlays only then."""
        channels = self._cameras[key]
        return channels.overlay.has_sinks() and time.monotonic() >= channels.next_due

    def publish(self, key: str, frame: LiveFrame) -> bool:
        """Send what clients subscribe to, unless the camera's rate limit says wait; whether
        anything was sent."""
        channels = self._cameras[key]
        now = time.monotonic()
        if now < channels.next_due or not channels.watched():
            return False
        channels.next_due = _next_due(channels.next_due, now, self.period_s)
        stamp = Timestamp(*ns_to_stamp(frame.stamp_ns))
        if channels.camera.has_sinks():
            picture = to_rgb8(shrunk_to_width(frame.pixels, self.max_width), frame.order)
            self._image(channels.camera, picture, frame, stamp)
        if channels.overlay.has_sinks() and frame.overlay is not None:
            self._image(channels.overlay, frame.overlay, frame, stamp)
        if channels.mask.has_sinks():
            self._image(channels.mask, mask_to_mono8(frame.mask), frame, stamp)
        if channels.angle.has_sinks():
            channels.angle.log({'data': frame.angle})
        if channels.latency.has_sinks() and frame.latency_ms is not None:
            channels.latency.log({'data': frame.latency_ms})
        if channels.attention.has_sinks():
            channels.attention.log({'layout': ATTENTION_LAYOUT,
                                    'data': _json_numbers(frame.attention)})
        self.frames_sent += 1
        return True

    def _image(self, channel: CompressedImageChannel, picture: np.ndarray, frame: LiveFrame,
               stamp: Timestamp) -> None:
        channel.log(CompressedImage(timestamp=stamp, frame_id=frame.frame_id, format='jpeg',
                                    data=encode_jpeg(picture, self.jpeg_quality)))

    def close(self) -> None:
        """Stop the server (clients are disconnected)."""
        self._server.stop()


def _json_numbers(values: Sequence[float]) -> list[float | None]:
    """``values`` for JSON, which has no NaN (Python would write one that browsers refuse)."""
    return [None if math.isnan(value) else float(value) for value in values]


def _next_due(due: float, now: float, period_s: float) -> float:
    """When a camera's next live frame is due, after one sent at ``now`` that was due at
    ``due``: one period after the due time, so that frames a little late keep the rate (a
    30 Hz camera at a 15 Hz limit sends every second frame; one period after ``now`` gave
    every third, 10 Hz, as frames arrived a millisecond early as often as late), or after
    ``now`` when it is a period or more behind (no burst after a pause)."""
    return (due if now - due < period_s else now) + period_s
