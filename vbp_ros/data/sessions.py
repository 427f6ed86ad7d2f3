"""Recorded vbp sessions: finding vbp_node's topics in a bag and indexing them.

A session is what vbp_node published while it was recorded: ``vbp/overlay`` or, instead, the
camera frames with ``vbp/mask`` and ``vbp/mask_roi`` (the overlays are then drawn from them),
``steering_angle`` and the ``debug/*`` figures, matched by suffix so that a namespace such as
``/car1`` is found. :func:`index_session` reads a bag once (no pixels kept) and learns the
counts, the overlay times (of recorded overlays, or of the masks that have a camera frame of
the same header stamp), the Float32 series (and ``vbp/attention``'s arrays, one row per
frame) and the frames that cannot be decoded; vbp-review
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

from ..explain.attention import ATTENTION_LABELS
from ..interface import (ATTENTION_TOPIC, IMAGE_OUTPUTS, MASK_ROI_TOPIC, MASK_TOPIC,
                         OVERLAY_TOPIC, PIPELINE_LATENCY_TOPIC, PROCESSING_TIME_TOPIC,
                         STEERING_TOPIC, stamp_to_ns)
from ..pixels.encodings import decode_compressed, decode_image
from ..pixels.frames import Crop, FrameError, check_frame
from ..pixels.overlay import DEFAULT_OVERLAY_WIDTH, overlay_shape

IMAGE, COMPRESSED = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'
FLOAT32, REGION = 'std_msgs/msg/Float32', 'sensor_msgs/msg/RegionOfInterest'
FLOAT32_ARRAY = 'std_msgs/msg/Float32MultiArray'
CAMERA_TYPES = (IMAGE, COMPRESSED)
TOPICS = {  # role: (topic suffix, message type)
    'overlay': (OVERLAY_TOPIC, IMAGE), 'mask': (MASK_TOPIC, IMAGE),
    'region': (MASK_ROI_TOPIC, REGION),
    'angle': (STEERING_TOPIC, FLOAT32), 'latency': (PIPELINE_LATENCY_TOPIC, FLOAT32),
    'processing': (PROCESSING_TIME_TOPIC, FLOAT32),
    'attention': (ATTENTION_TOPIC, FLOAT32_ARRAY),
}
SCALARS = ('angle', 'latency', 'processing', 'attention')  # 'attention': rows of values
PICTURES = ('overlay', 'mask', 'camera')  # roles whose messages are decoded and checked
FALLBACK_FPS = 30.0
MAX_PAIR_GAP_NS = 50_000_000


class SessionError(ValueError):
    """A bag that holds no readable vbp session as asked (the message says why)."""


@dataclass(frozen=True)
class Series:
    """A Float32 topic: bag receive times (ns, sorted) and values (vbp/attention: one row of
    values per message)."""

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
    """What one pass over a session learns (no pixels are kept). Its frames are the recorded
    overlays or, without them, the masks that have a camera frame of the same header stamp
    (their overlays to be drawn in ``regions``)."""

    counts: dict[str, int]
    overlay_log_ns: np.ndarray  # decodable overlays (or paired masks), in bag order
    overlay_stamp_ns: np.ndarray
    frame_size: tuple[int, int]  # width, height of the first overlay
    masks: int
    bad: dict[str, list[str]]  # role: one line per skipped frame
    series: dict[str, Series]
    regions: tuple[Crop, ...] = ()  # per frame: where its mask lies in the camera frame
    camera_frames: int = 0  # decodable camera frames (drawn overlays only)
    unpaired_masks: int = 0  # decodable masks without a camera frame of their stamp

    @property
    def drawn(self) -> bool:
        """Whether the overlays are drawn from camera frames (none were recorded)."""
        return bool(self.regions)


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


def find_topics(connections: Sequence[Connection], namespace: str | None,
                camera_topic: str | None = None) -> tuple[str, dict[str, list[Connection]]]:
    """The namespace of the session and its connections by role (empty lists for absent
    topics). Without ``namespace`` the only namespace with vbp_node's pictures is taken. A
    session without recorded overlays needs camera frames (``camera_topic``, or the one
    camera topic in its namespace) and the masks' region: role 'camera'."""
    chosen = _session_namespace(connections, namespace)
    topics = {role: [c for c in connections if c.msgtype == msgtype
                     and topic_namespace(c.topic, suffix) == chosen]
              for role, (suffix, msgtype) in TOPICS.items()}
    topics['camera'] = [] if topics['overlay'] else _camera(connections, chosen, camera_topic)
    if not topics['overlay'] and not topics['region']:
        raise SessionError(f'no {chosen}/{OVERLAY_TOPIC} and no {chosen}/{MASK_ROI_TOPIC} (the '
                           'region of the camera frame that the masks cover): overlays cannot '
                           'be drawn; record vbp/overlay, or vbp/mask_roi from a vbp_node that '
                           'publishes it')
    return chosen, topics


def _session_namespace(connections: Sequence[Connection], namespace: str | None) -> str:
    """The namespace whose vbp/overlay or vbp/mask is reviewed."""
    found = sorted({ns for c in connections if c.msgtype == IMAGE for suffix in IMAGE_OUTPUTS
                    if (ns := topic_namespace(c.topic, suffix)) is not None})
    if not found:
        topics = ', '.join(sorted({c.topic for c in connections})) or 'none'
        raise SessionError(f'no {IMAGE} topic ending in {OVERLAY_TOPIC} or {MASK_TOPIC}: no '
                           f'overlays and no masks to draw them from (topics: {topics})')
    shown = ', '.join(ns or '/' for ns in found)
    if namespace is None and len(found) > 1:
        raise SessionError(f'vbp_node outputs in several namespaces ({shown}); choose one '
                           'with --namespace')
    chosen = found[0] if namespace is None else normalise_namespace(namespace)
    if chosen not in found:
        raise SessionError(f'no overlays or masks in namespace {chosen or "/"} (found: {shown})')
    return chosen


def _camera(connections: Sequence[Connection], namespace: str,
            topic: str | None) -> list[Connection]:
    """The connections of the camera whose frames the masks of ``namespace`` were made from:
    ``topic``, or the only camera topic in the namespace."""
    cameras = camera_connections(connections)
    names = sorted({c.topic for c in cameras})
    if topic is not None:
        chosen = [c for c in cameras if c.topic == topic]
        if not chosen:
            raise SessionError(f'no camera topic {topic} (camera topics: '
                               f'{", ".join(names) or "none"})')
        return chosen
    inside = sorted({name for name in names if name.startswith(namespace + '/')})
    if not inside:
        raise SessionError(f'{namespace}/{MASK_TOPIC} but neither {namespace}/{OVERLAY_TOPIC} '
                           'nor camera frames to draw overlays on (camera topics: '
                           f'{", ".join(names) or "none"}): record the camera, as vbp-drive '
                           'does, or vbp/overlay')
    if len(inside) > 1:
        raise SessionError(f'several camera topics ({", ".join(inside)}); choose one with '
                           '--camera-topic')
    return [c for c in cameras if c.topic == inside[0]]


def decode_frame(message: Any, msgtype: str) -> tuple[np.ndarray, str]:
    """Pixels and channel order of a deserialized Image or CompressedImage."""
    return decode_image(message) if msgtype == IMAGE else decode_compressed(message.data)


def read_image(reader: AnyReader, connection: Connection,
               raw: bytes) -> tuple[int, np.ndarray, str]:
    """Header stamp (ns), pixels and channel order of a serialized Image or CompressedImage;
    FrameError if it cannot be decoded or is not a usable frame."""
    try:
        message = reader.deserialize(raw, connection.msgtype)
    except AnyReaderError as error:
        raise FrameError(f'cannot deserialize: {error}') from None
    frame, order = decode_frame(message, connection.msgtype)
    check_frame(frame)
    return stamp_to_ns(message.header.stamp), frame, order


def read_region(reader: AnyReader, raw: bytes) -> Crop:
    """The camera frame rectangle of a serialized RegionOfInterest; ValueError if empty."""
    try:
        region = reader.deserialize(raw, REGION)
    except AnyReaderError as error:
        raise ValueError(f'cannot deserialize: {error}') from None
    return Crop(int(region.y_offset), int(region.x_offset), int(region.height),
                int(region.width))


Picture = tuple[int, int, tuple[int, int]]  # log time, header stamp, (rows, columns)


def index_session(reader: AnyReader, topics: dict[str, list[Connection]]) -> SessionIndex:
    """One pass: counts every topic, checks every frame, collects times and Float32 values,
    and, without recorded overlays, pairs masks with camera frames by header stamp."""
    drawn = not topics['overlay']
    checked = ('camera', 'mask', 'region') if drawn else ('overlay', 'mask')
    roles = {c.id: role for role, connections in topics.items() for c in connections
             if role in SCALARS or role in checked}
    counts: Counter[str] = Counter()
    scalars: dict[str, list[tuple[int, float]]] = {role: [] for role in SCALARS}
    pictures: dict[str, list[Picture]] = {role: [] for role in PICTURES}
    regions: list[tuple[int, Crop]] = []
    bad: dict[str, list[str]] = {role: [] for role in checked}
    for connection, log_ns, raw in reader.messages():
        counts[connection.topic] += 1
        role = roles.get(connection.id)
        if role in SCALARS:
            value = reader.deserialize(raw, connection.msgtype).data
            if role != 'attention' or len(value) == len(ATTENTION_LABELS):
                scalars[role].append((log_ns, value))
            continue
        try:
            if role == 'region':
                regions.append((log_ns, read_region(reader, raw)))
            elif role is not None:
                stamp, frame, _ = read_image(reader, connection, raw)
                pictures[role].append((log_ns, stamp, frame.shape[:2]))
        except ValueError as error:  # FrameError, or an empty region
            bad[role].append(f'{connection.topic} received at {log_ns / 1e9:.3f} s: {error}')
    series = {role: Series.of(samples) for role, samples in scalars.items()}
    if drawn:
        return _drawn_index(dict(sorted(counts.items())), topics, pictures, regions, bad, series)
    overlays = pictures['overlay']
    if not overlays:
        failed = bad['overlay']
        raise SessionError(f'no decodable frame on {topics["overlay"][0].topic}: ' + (
            f'{len(failed)} bad, the first {failed[0]}' if failed else 'no messages'))
    return SessionIndex(dict(sorted(counts.items())),
                        np.array([log for log, _, _ in overlays], np.int64),
                        np.array([stamp for _, stamp, _ in overlays], np.int64),
                        overlays[0][2][::-1], len(pictures['mask']), bad, series)


def _drawn_index(counts: dict[str, int], topics: dict[str, list[Connection]],
                 pictures: dict[str, list[Picture]], regions: list[tuple[int, Crop]],
                 bad: dict[str, list[str]], series: dict[str, Series]) -> SessionIndex:
    """The frames of a session without recorded overlays: each mask (the first of its stamp)
    with the camera frame of the same header stamp, in the region last received before the
    mask (the first region for masks before it)."""
    if not regions:
        raise SessionError(f'no usable region on {topics["region"][0].topic}: '
                           f'{"; ".join(bad["region"]) or "no messages"}')
    sizes: dict[int, tuple[int, int]] = {}
    for _, stamp, size in pictures['camera']:
        sizes.setdefault(stamp, size)
    region_times = np.array([log for log, _ in regions], np.int64)
    frames: list[tuple[int, int, Crop]] = []
    seen: set[int] = set()
    unpaired = 0
    for log_ns, stamp, _ in pictures['mask']:
        size = sizes.get(stamp)
        if size is None:
            unpaired += 1
            continue
        region = regions[max(int(np.searchsorted(region_times, log_ns, 'right')) - 1, 0)][1]
        if stamp in seen:
            bad['mask'].append(f'a second mask of stamp {stamp} received at {log_ns / 1e9:.3f} s')
        elif not region.fits(size):
            bad['mask'].append(f'mask of stamp {stamp}: its region {region.as_tuple()} (top, '
                               f'left, height, width) does not fit the camera frame '
                               f'{size[1]}x{size[0]}')
        else:
            frames.append((log_ns, stamp, region))
        seen.add(stamp)
    if not frames:
        raise SessionError(
            f'no overlay can be drawn: of the {len(pictures["mask"])} decodable masks on '
            f'{topics["mask"][0].topic}, {unpaired} have no camera frame of their header stamp '
            f'on {topics["camera"][0].topic} and {len(bad["mask"])} are skipped' + (
                f' (the first: {bad["mask"][0]})' if bad['mask'] else ''))
    rows, columns = overlay_shape(sizes[frames[0][1]], DEFAULT_OVERLAY_WIDTH)
    return SessionIndex(counts, np.array([log for log, _, _ in frames], np.int64),
                        np.array([stamp for _, stamp, _ in frames], np.int64), (columns, rows),
                        len(pictures['mask']), bad, series,
                        tuple(region for _, _, region in frames), len(pictures['camera']),
                        unpaired)


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
