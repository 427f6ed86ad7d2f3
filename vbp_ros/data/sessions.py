"""Recorded vbp sessions: finding vbp_node's topics in a bag and indexing them.

A session is what vbp_node published while it was recorded: ``vbp/overlay``, ``vbp/mask``,
``steering_angle`` and the ``debug/*`` figures, matched by suffix so that a namespace such as
``/car1`` is found. :func:`index_session` reads a bag once (no pixels kept) and learns the
counts, the overlay times, the Float32 series and the frames that cannot be decoded; vbp-review
and vbp-drive's summary build on it. vbp_node's own pictures are never camera frames
(:func:`camera_connections`, also vbp-fleet's rule).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection

from ..interface import (IMAGE_OUTPUTS, MASK_TOPIC, OVERLAY_TOPIC, PIPELINE_LATENCY_TOPIC,
                         PROCESSING_TIME_TOPIC, STEERING_TOPIC, stamp_to_ns)
from ..pixels.encodings import decode_compressed, decode_image
from ..pixels.frames import FrameError, check_frame

IMAGE, COMPRESSED = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'
FLOAT32 = 'std_msgs/msg/Float32'
CAMERA_TYPES = (IMAGE, COMPRESSED)
TOPICS = {  # role: (topic suffix, message type)
    'overlay': (OVERLAY_TOPIC, IMAGE), 'mask': (MASK_TOPIC, IMAGE),
    'angle': (STEERING_TOPIC, FLOAT32), 'latency': (PIPELINE_LATENCY_TOPIC, FLOAT32),
    'processing': (PROCESSING_TIME_TOPIC, FLOAT32),
}
SCALARS = ('angle', 'latency', 'processing')
FALLBACK_FPS = 30.0
MAX_PAIR_GAP_NS = 50_000_000


class SessionError(ValueError):
    """A bag that holds no readable vbp session as asked (the message says why)."""


@dataclass(frozen=True)
class Series:
    """A Float32 topic: bag receive times (ns, sorted) and values."""

    log_ns: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, samples: list[tuple[int, float]]) -> Series:
        """A series from (receive time, value) samples in any order."""
        times = np.array([t for t, _ in samples], np.int64)
        order = np.argsort(times, kind='stable')
        return cls(times[order], np.array([v for _, v in samples], np.float64)[order])


@dataclass(frozen=True)
class SessionIndex:
    """What one pass over a session learns (no pixels are kept)."""

    counts: dict[str, int]
    overlay_log_ns: np.ndarray  # decodable overlays, in bag order
    overlay_stamp_ns: np.ndarray
    frame_size: tuple[int, int]  # width, height of the first decodable overlay
    masks: int
    bad: dict[str, list[str]]  # role: one line per skipped frame
    series: dict[str, Series]


def topic_namespace(topic: str, suffix: str) -> str | None:
    """The namespace ('' for none) of ``topic`` if it ends in ``suffix`` at a '/' boundary."""
    topic = '/' + topic.strip('/')
    if topic.endswith('/' + suffix):
        return topic[:-len(suffix) - 1]
    return None


def normalise_namespace(namespace: str) -> str:
    """'car1', '/car1/' and '/car1' all become '/car1'; '/' and '' mean no namespace."""
    return '/' + namespace.strip('/') if namespace.strip('/') else ''


def is_image_output(topic: str) -> bool:
    """Whether ``topic`` is one of vbp_node's pictures (vbp/mask, vbp/overlay) in any
    namespace: never camera frames."""
    return any(topic_namespace(topic, output) is not None for output in IMAGE_OUTPUTS)


def camera_connections(connections: Sequence[Connection]) -> list[Connection]:
    """The Image and CompressedImage connections that may hold camera frames: all but
    vbp_node's own pictures."""
    return [c for c in connections
            if c.msgtype in CAMERA_TYPES and not is_image_output(c.topic)]


def decode_frame(message: Any, msgtype: str) -> tuple[np.ndarray, str]:
    """Pixels and channel order of a deserialized Image or CompressedImage."""
    return decode_image(message) if msgtype == IMAGE else decode_compressed(message.data)


def find_topics(connections: Sequence[Connection],
                namespace: str | None) -> tuple[str, dict[str, list[Connection]]]:
    """The namespace of the session and its connections by role (empty lists for absent
    topics). Without ``namespace`` the only namespace with an overlay topic is taken."""
    suffix, msgtype = TOPICS['overlay']
    found = sorted({ns for c in connections if c.msgtype == msgtype
                    and (ns := topic_namespace(c.topic, suffix)) is not None})
    if not found:
        topics = ', '.join(sorted({c.topic for c in connections})) or 'none'
        raise SessionError(f'no {msgtype} topic ending in {suffix} (topics: {topics})')
    shown = ', '.join(ns or '/' for ns in found)
    if namespace is None and len(found) > 1:
        raise SessionError(f'overlays in several namespaces ({shown}); choose one with '
                           '--namespace')
    chosen = found[0] if namespace is None else normalise_namespace(namespace)
    if chosen not in found:
        raise SessionError(f'no overlays in namespace {chosen or "/"} (found: {shown})')
    return chosen, {role: [c for c in connections if c.msgtype == msgtype
                           and topic_namespace(c.topic, suffix) == chosen]
                    for role, (suffix, msgtype) in TOPICS.items()}


def read_image(reader: AnyReader, connection: Connection,
               raw: bytes) -> tuple[int, np.ndarray, str]:
    """Header stamp (ns), pixels and channel order of a serialized Image; FrameError if it
    cannot be decoded or is not a usable frame."""
    try:
        message = reader.deserialize(raw, connection.msgtype)
    except AnyReaderError as error:
        raise FrameError(f'cannot deserialize: {error}') from None
    frame, order = decode_image(message)
    check_frame(frame)
    return stamp_to_ns(message.header.stamp), frame, order


def index_session(reader: AnyReader, topics: dict[str, list[Connection]]) -> SessionIndex:
    """One pass: counts every topic, checks every frame, collects times and Float32 values."""
    roles = {c.id: role for role, connections in topics.items() for c in connections}
    counts: Counter[str] = Counter()
    scalars: dict[str, list[tuple[int, float]]] = {role: [] for role in SCALARS}
    images: dict[str, list[tuple[int, int, tuple[int, int]]]] = {'overlay': [], 'mask': []}
    bad: dict[str, list[str]] = {'overlay': [], 'mask': []}
    for connection, log_ns, raw in reader.messages():
        counts[connection.topic] += 1
        role = roles.get(connection.id)
        if role in SCALARS:
            scalars[role].append((log_ns, reader.deserialize(raw, connection.msgtype).data))
        elif role is not None:
            try:
                stamp, frame, _ = read_image(reader, connection, raw)
            except FrameError as error:
                bad[role].append(f'{connection.topic} received at {log_ns / 1e9:.3f} s: {error}')
                continue
            images[role].append((log_ns, stamp, (frame.shape[1], frame.shape[0])))
    if not images['overlay']:
        failed = bad['overlay']
        raise SessionError(f'no decodable frame on {topics["overlay"][0].topic}: ' + (
            f'{len(failed)} bad, the first {failed[0]}' if failed else 'no messages'))
    return SessionIndex(dict(sorted(counts.items())),
                        np.array([log for log, _, _ in images['overlay']], np.int64),
                        np.array([stamp for _, stamp, _ in images['overlay']], np.int64),
                        images['overlay'][0][2], len(images['mask']), bad,
                        {role: Series.of(samples) for role, samples in scalars.items()})


def frame_rate(stamps_ns: np.ndarray) -> float:
    """Frames per second from the median header stamp period (FALLBACK_FPS if it is unknown)."""
    periods = np.diff(stamps_ns)
    periods = periods[periods > 0]
    return 1e9 / float(np.median(periods)) if len(periods) else FALLBACK_FPS


def default_tolerance_ns(stamps_ns: np.ndarray) -> int:
    """Half the median frame period, at most MAX_PAIR_GAP_NS."""
    return int(min(0.5e9 / frame_rate(stamps_ns), MAX_PAIR_GAP_NS))


def image_stamps(reader: AnyReader) -> dict[str, list[int]]:
    """The header stamps (ns) of every sensor_msgs/Image message, by topic."""
    stamps: dict[str, list[int]] = {}
    images = [c for c in reader.connections if c.msgtype == IMAGE]
    for connection, _, data in reader.messages(connections=images):
        stamp = reader.deserialize(data, connection.msgtype).header.stamp
        stamps.setdefault(connection.topic, []).append(stamp_to_ns(stamp))
    return stamps
