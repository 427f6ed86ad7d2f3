"""Training sets from Udacity self-driving-car bags: centre-camera frames paired with steering.

The VisualBackProp paper trains its steering networks on Udacity driving data. This module reads
bags in the Udacity layout with ``rosbags.highlevel.AnyReader`` (ROS 1 ``.bag`` files or ROS 2
bag folders, MCAP or sqlite3; no ROS installation needed):

* images: ``/center_camera/image_color`` (sensor_msgs/Image: mono8, rgb8, bgr8 or a Bayer
  mosaic such as bayer_rggb8) or, when that topic is absent,
  ``/center_camera/image_color/compressed`` (sensor_msgs/CompressedImage, JPEG or PNG);
* steering: ``/vehicle/steering_report`` (dbw_mkz_msgs/SteeringReport).

Each image is paired with the steering report nearest in time. Times are header stamps (the bag's
record time where a header stamp is zero). The label is the STEERING WHEEL angle in radians
(``SteeringReport.steering_wheel_angle``, as in the paper), not the road-wheel angle.

Every image read ends in exactly one count: ``no_report`` (no report within ``max_gap_s``),
``slow`` (speed of the paired report not above ``min_speed``), ``undecodable`` (message or
pixels unreadable; skipped) or ``kept``. Bags are streamed: only kept frames, already cropped,
gray and scaled, stay in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ..interface import NANOSECONDS_PER_SECOND, stamp_to_ns
from ..models.checkpoint import ModelSpec
from ..models.preprocess import Preprocessor
from ..pixels.encodings import decode_compressed, decode_image
from ..pixels.frames import Crop, FrameError, to_gray
from .pairing import nearest

IMAGE_TOPIC = '/center_camera/image_color'
COMPRESSED_IMAGE_TOPIC = '/center_camera/image_color/compressed'
STEERING_TOPIC = '/vehicle/steering_report'
STEERING_REPORT_TYPE = 'dbw_mkz_msgs/msg/SteeringReport'
STEERING_REPORT_MSG = '\n'.join([
    'Header header',
    'float32 steering_wheel_angle',
    'float32 steering_wheel_angle_cmd',
    'float32 steering_wheel_torque',
    'float32 speed',
    'bool enabled',
    'bool override',
    'bool driver',
    'bool timeout',
    'bool fault_wheel_sensor',
    'bool fault_bus1',
    'bool fault_bus2',
    'bool fault_calibration',
    'bool fault_connector',
])
DEFAULT_SIZE = (640, 125)
DEFAULT_CROP = Crop(230, 0, 250, 640)  # the road ahead in the Udacity centre camera's 640x480


class IngestError(Exception):
    """A bag cannot be ingested (missing, unreadable, lacking a topic, crop too large)."""


@dataclass
class IngestCounts:
    """What happened to the images read; read == no_report + slow + undecodable + kept."""

    read: int = 0
    no_report: int = 0
    slow: int = 0
    undecodable: int = 0
    kept: int = 0

    @property
    def paired(self) -> int:
        """Images with a steering report within the time tolerance."""
        return self.read - self.no_report

    def as_dict(self) -> dict[str, int]:
        """All counts, ``paired`` included."""
        return {**asdict(self), 'paired': self.paired}


@dataclass
class IngestResult:
    """A training set: ``frames`` (N, H, W) uint8 gray network inputs, ``angles`` (N,) float32
    steering wheel angles in radians, ``stamps`` (N,) int64 nanoseconds (sorted), ``speeds``
    (N,) float32 m/s, and ``meta`` (sources, topics, crop, size, filters, counts)."""

    frames: np.ndarray
    angles: np.ndarray
    stamps: np.ndarray
    speeds: np.ndarray
    meta: dict[str, Any]


@dataclass
class SteeringTrack:
    """Steering reports sorted by time: stamps (ns), wheel angles (rad), speeds (m/s)."""

    stamps: np.ndarray
    angles: np.ndarray
    speeds: np.ndarray

    def nearest(self, stamps: np.ndarray | np.int64) -> tuple[np.ndarray, np.ndarray]:
        """For each stamp (ns; an array or a scalar) the index of the nearest report and its
        distance in ns (index -1 and the largest distance when there are no reports)."""
        return nearest(self.stamps, stamps)


@dataclass
class _Collector:
    """Kept samples and counts, filled one image message at a time."""

    crop: Crop
    size: tuple[int, int]
    min_speed: float
    max_gap_ns: int
    counts: IngestCounts = field(default_factory=IngestCounts)
    frames: list[np.ndarray] = field(default_factory=list)
    labels: list[tuple[int, float, float]] = field(default_factory=list)
    camera_sizes: set[tuple[int, int]] = field(default_factory=set)  # (width, height) kept

    def __post_init__(self) -> None:
        # The engine's own resize (a card's 'area'), so that a network trained on these frames
        # sees in vbp_node what it saw in training.
        width, height = self.size
        self.resize = Preprocessor(ModelSpec('vbp-ingest', 1, height, width, color='gray',
                                             interpolation='area')).resize

    def add(self, stamp: int, pixels: Callable[[], np.ndarray], steering: SteeringTrack) -> None:
        """Count one image at ``stamp``; keep it when paired, fast enough and decodable.
        ``pixels`` decodes the gray full frame only when needed."""
        self.counts.read += 1
        index, gap = (int(value) for value in steering.nearest(np.int64(stamp)))
        if gap > self.max_gap_ns:
            self.counts.no_report += 1
        elif not steering.speeds[index] > self.min_speed:
            self.counts.slow += 1
        else:
            self._keep(stamp, pixels, float(steering.angles[index]),
                       float(steering.speeds[index]))

    def add_undecodable(self) -> None:
        """Count an image message that could not even be deserialized."""
        self.counts.read += 1
        self.counts.undecodable += 1

    def _keep(self, stamp: int, pixels: Callable[[], np.ndarray], angle: float,
              speed: float) -> None:
        try:
            gray = pixels()
        except FrameError:
            self.counts.undecodable += 1
            return
        if not self.crop.fits(gray.shape):
            raise IngestError(f'crop {self.crop.as_tuple()} (top, left, height, width) does not '
                              f'fit the {gray.shape[1]}x{gray.shape[0]} (width x height) camera '
                              'images')
        self.frames.append(self.resize(self.crop.apply(gray)))
        self.camera_sizes.add((gray.shape[1], gray.shape[0]))
        self.labels.append((stamp, angle, speed))
        self.counts.kept += 1

    def result(self, meta: dict[str, Any]) -> IngestResult:
        """The kept samples sorted by stamp."""
        width, height = self.size
        frames = np.stack(self.frames) if self.frames else np.zeros((0, height, width), np.uint8)
        stamps = np.array([label[0] for label in self.labels], dtype=np.int64)
        order = np.argsort(stamps, kind='stable')
        angles = np.array([label[1] for label in self.labels], dtype=np.float32)
        speeds = np.array([label[2] for label in self.labels], dtype=np.float32)
        meta = {**meta, 'counts': self.counts.as_dict()}
        if len(self.camera_sizes) == 1:  # the camera the crop is stated for
            meta['camera_size'] = list(next(iter(self.camera_sizes)))
        return IngestResult(frames[order], angles[order], stamps[order], speeds[order], meta)


def udacity_typestore(ros1: bool) -> Typestore:
    """ROS 1 Noetic or latest ROS 2 types plus dbw_mkz_msgs/SteeringReport, registered from its
    message definition (used when a bag carries no definition of its own)."""
    typestore = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.LATEST)
    typestore.register(get_types_from_msg(STEERING_REPORT_MSG, STEERING_REPORT_TYPE))
    return typestore


def message_decoder(reader: AnyReader,
                    fallback: Typestore) -> Callable[[Connection, bytes], Any]:
    """Deserialize with the bag's embedded definitions where it has them, else ``fallback``."""
    def decode(connection: Connection, raw: bytes) -> Any:
        if connection.msgtype in reader.typestore.fielddefs:
            return reader.deserialize(raw, connection.msgtype)
        if reader.is2:
            return fallback.deserialize_cdr(raw, connection.msgtype)
        return fallback.deserialize_ros1(raw, connection.msgtype)
    return decode


def image_to_gray(message: Any) -> np.ndarray:
    """The (H, W) gray image of a sensor_msgs/Image (any encoding vbp_node accepts, Bayer
    mosaics included)."""
    frame, order = decode_image(message)
    if frame.dtype != np.uint8:
        raise FrameError(f'{message.encoding} is not an 8-bit camera encoding')
    return to_gray(frame, order)


def compressed_to_gray(message: Any) -> np.ndarray:
    """The (H, W) gray image of a sensor_msgs/CompressedImage (JPEG, PNG)."""
    return to_gray(*decode_compressed(message.data))


def message_stamp(message: Any, record_time: int) -> int:
    """The header stamp in ns, or the bag record time where the header stamp is zero."""
    return stamp_to_ns(message.header.stamp) or int(record_time)


def read_steering(reader: AnyReader, decode: Callable[[Connection, bytes], Any]
                  ) -> SteeringTrack:
    """All steering reports of an open reader, sorted by time."""
    connections = [c for c in reader.connections if c.topic == STEERING_TOPIC]
    if not connections:
        raise IngestError(f'{_joined(reader.paths)}: no steering topic {STEERING_TOPIC}')
    stamps, angles, speeds = [], [], []
    for connection, record_time, raw in reader.messages(connections):
        report = decode(connection, raw)
        stamps.append(message_stamp(report, record_time))
        angles.append(report.steering_wheel_angle)
        speeds.append(report.speed)
    order = np.argsort(np.array(stamps, dtype=np.int64), kind='stable')
    return SteeringTrack(np.array(stamps, dtype=np.int64)[order],
                         np.array(angles, dtype=np.float32)[order],
                         np.array(speeds, dtype=np.float32)[order])


def image_connections(reader: AnyReader) -> tuple[str, list[Connection]]:
    """The image topic to use (raw preferred over compressed) and its connections."""
    for topic in (IMAGE_TOPIC, COMPRESSED_IMAGE_TOPIC):
        connections = [c for c in reader.connections if c.topic == topic]
        if connections:
            return topic, connections
    raise IngestError(f'{_joined(reader.paths)}: no image topic {IMAGE_TOPIC} or '
                      f'{COMPRESSED_IMAGE_TOPIC}')


def _joined(paths: Sequence[str | Path]) -> str:
    return ', '.join(map(str, paths))


def _reader_groups(paths: Sequence[Path]) -> list[list[Path]]:
    """ROS 1 .bag files are read together (one recording split in parts); each ROS 2 bag
    folder alone."""
    ros1 = [path for path in paths if path.suffix == '.bag']
    return ([ros1] if ros1 else []) + [[path] for path in paths if path.suffix != '.bag']


def _ingest_group(paths: list[Path], collector: _Collector) -> str:
    """Stream one reader's images into ``collector``; returns the image topic used."""
    fallback = udacity_typestore(ros1=paths[0].suffix == '.bag')
    try:
        with AnyReader(paths, default_typestore=fallback) as reader:
            decode = message_decoder(reader, fallback)
            topic, connections = image_connections(reader)
            steering = read_steering(reader, decode)
            to_gray = image_to_gray if topic == IMAGE_TOPIC else compressed_to_gray
            for connection, record_time, raw in reader.messages(connections):
                _add_image(collector, decode, connection, record_time, raw, to_gray, steering)
            return topic
    except (AnyReaderError, OSError) as error:  # OSError: a folder that is no rosbag2 bag
        raise IngestError(f'{_joined(paths)}: unreadable bag: {error}') from error


def _add_image(collector: _Collector, decode: Callable[[Connection, bytes], Any],
               connection: Connection, record_time: int, raw: bytes,
               to_gray: Callable[[Any], np.ndarray], steering: SteeringTrack) -> None:
    try:
        message = decode(connection, raw)
    except (AnyReaderError, SerdeError):
        collector.add_undecodable()
        return

    collector.add(message_stamp(message, record_time), lambda: to_gray(message), steering)


def ingest_bags(paths: Sequence[str | Path],
                crop: Crop | tuple[int, int, int, int] = DEFAULT_CROP,
                size: tuple[int, int] = DEFAULT_SIZE, min_speed: float = 5.0,
                max_gap_s: float = 0.1) -> IngestResult:
    """Read Udacity-layout bags into a training set of gray frames (``size`` is width x height,
    640x125 for NetSVF, NetHVF and the authors' model) cut by ``crop`` (top, left, height,
    width) from the full camera frame, labelled with the nearest steering report's wheel angle
    (radians). Frames whose nearest report is more than ``max_gap_s`` away, or whose speed is
    not above ``min_speed`` m/s, are dropped. Raises IngestError for a missing or unreadable
    bag, a missing topic, or a crop that does not fit the images."""
    bags = [Path(path) for path in paths]
    if not bags:
        raise IngestError('no bags given')
    if missing := [path for path in bags if not path.exists()]:
        raise IngestError(f'bag not found: {_joined(missing)}')
    try:
        crop = crop if isinstance(crop, Crop) else Crop(*crop)
    except ValueError as error:
        raise IngestError(str(error)) from None
    size = (int(size[0]), int(size[1]))
    collector = _Collector(crop, size, min_speed, round(max_gap_s * NANOSECONDS_PER_SECOND))
    image_topics = [_ingest_group(group, collector) for group in _reader_groups(bags)]
    return collector.result({
        'sources': [str(path) for path in bags],
        'image_topics': sorted(set(image_topics)),
        'steering_topic': STEERING_TOPIC,
        'angle': 'steering wheel angle, radians (SteeringReport.steering_wheel_angle)',
        'crop': list(crop.as_tuple()),
        'size': list(size),
        'min_speed': min_speed,
        'max_gap_s': max_gap_s,
    })


def write_training_set(result: IngestResult, path: str | Path) -> Path:
    """Write one compressed ``.npz`` (frames, angles, stamps, speeds, meta as a JSON string);
    returns the path written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open('wb') as stream:
        np.savez_compressed(stream, frames=result.frames, angles=result.angles,
                            stamps=result.stamps, speeds=result.speeds,
                            meta=np.array(json.dumps(result.meta)))
    return target


def load_training_set(path: str | Path) -> IngestResult:
    """Read a training set written by ``write_training_set``."""
    with np.load(Path(path), allow_pickle=False) as data:
        return IngestResult(data['frames'], data['angles'], data['stamps'], data['speeds'],
                            json.loads(str(data['meta'])))
