"""A bag's camera frames as network inputs, in segments: topic choice, decoding, the engine's
preprocessing, and the recorded steering paired with each frame.

A *segment* is a run of consecutive processed frames of one bag, as ``planes``: cropped,
resized and colour-converted by the engine's :class:`~vbp_ros.models.preprocess.Preprocessor`
(before scaling, in the frame's pixel type), all of one frame size and crop (``camera``: the
masks' statistics are in camera coordinates). Every segment but a bag's first also carries the
planes of the frame before it (``context``), so that a model worker can compute the
frame-to-frame mask change of its first frame without waiting for another worker. A segment
read for two models (vbp-fleet --compare) carries the second model's inputs of the same frames
as a segment of their own (``compared``), each model's planes made by its own preprocessing
(crop, size, colour) from the same decoded frame; a frame either model cannot take is skipped
for both, so the two always hold the same frames.

Every camera message of a bag ends in exactly one count: a processed frame (a row), a
``subsampled`` frame (``every``), or a ``skipped`` one, with its reason. vbp_node's own
pictures (``vbp/mask``, ``vbp/overlay``) are never camera frames, and a bag without camera
frames is an error that says so, never a bag of no frames.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.serde import SerdeError

from ...models.checkpoint import ModelSpec
from ...models.preprocess import Preprocessor
from ...interface import stamp_to_ns
from ...pixels.frames import Crop, FrameError
from ..bags import open_bag
from ..pairing import NO_PARTNER, pair_nearest
from ..sessions import CAMERA_TYPES, camera_connections, decode_frame, is_image_output
from ..udacity import (STEERING_REPORT_TYPE, STEERING_TOPIC, message_decoder, read_steering,
                       udacity_typestore)
from ...explain.attention import DEFAULT_ROI, horizon_in_mask

SCALARS = ('std_msgs/msg/Float32', 'std_msgs/msg/Float64')
MAX_REASONS = 20  # distinct skip reasons kept per bag; further ones count as 'other'
MAX_EXAMPLES = 5


class BagReadError(ValueError):
    """A bag that cannot be read as asked (the message says why)."""


@dataclass(frozen=True)
class ReadOptions:
    """How frames are chosen and paired.

    Attributes:
        topic: the camera topic; None picks the Image or CompressedImage topic with the most
            messages.
        steering_topic: a Float32/Float64 (paired by log time) or SteeringReport topic; None
            uses Udacity's /vehicle/steering_report where a bag has it.
        every: process every Nth camera message (1: all).
        segment_inputs: network inputs per segment, the context frame included.
        horizon_row: the camera frame row of the horizon, or None when unknown.
        steering_tolerance_ns: largest gap between a frame and its steering sample.
        roi: the region of interest of the masks' ROI mass (flat x, y pairs of a polygon in
            normalized camera coordinates, as vbp_node's ``attention_roi``).
    """

    topic: str | None = None
    steering_topic: str | None = None
    every: int = 1
    segment_inputs: int = 64
    horizon_row: float | None = None
    steering_tolerance_ns: int = 100_000_000
    roi: tuple[float, ...] = DEFAULT_ROI

    def __post_init__(self) -> None:
        if self.every < 1 or self.segment_inputs < 2:
            raise ValueError('every must be at least 1 and segment_inputs at least 2')


@dataclass
class BagInfo:
    """What reading a bag found; sent with its last segment."""

    topic: str
    msgtype: str
    messages: int
    start_ns: int = 0  # the bag's first log time: 'ros2 bag play --start-offset' counts from it
    frames: int = 0
    subsampled: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: list[str] = field(default_factory=list)
    steering_topic: str | None = None
    steering_samples: int = 0
    segments: int = 0
    # A bag that was not closed (recorder killed, disk full) is read from a repaired copy:
    # the frames before its cut are recovered, the bytes after it left out.
    repaired: bool = False
    bytes_left_out: int = 0


@dataclass
class Segment:
    """Consecutive processed frames of one bag (see the module docstring)."""

    bag: str
    number: int
    messages: int  # camera messages in the bag, for progress
    planes: np.ndarray  # (S, C, H, W) in the frames' pixel type
    context: np.ndarray | None  # (C, H, W): the frame before the first, or None
    index: np.ndarray  # (S,) camera message number in the bag
    stamp_ns: np.ndarray  # header stamps
    log_ns: np.ndarray  # bag log (receive) times
    recorded: np.ndarray  # recorded steering angle, NaN where none was near
    horizon: np.ndarray  # horizon as a mask row (NaN: unknown)
    camera: tuple[Crop, tuple[int, int]] | None  # the frames' crop and (rows, columns)
    regions: np.ndarray  # (S, 4) the rectangle of each camera frame the planes show, in its
    # pixels (top, left, height, width)
    info: BagInfo | None = None  # on the bag's last segment only
    compared: Segment | None = None  # the compared model's inputs of the same frames
    roi: tuple[float, ...] = DEFAULT_ROI  # the region of interest of the ROI mass

    @property
    def frames(self) -> int:
        """Processed frames in the segment (the context frame not counted)."""
        return len(self.index)


@dataclass(frozen=True)
class SteeringSeries:
    """Recorded steering: topic, sorted times (ns), angles, and which frame time pairs with
    them ('stamp': header stamps of SteeringReports; 'log': receive times of scalars)."""

    topic: str
    times_ns: np.ndarray
    angles: np.ndarray
    clock: str

    def pair(self, stamp_ns: np.ndarray, log_ns: np.ndarray, tolerance_ns: int) -> np.ndarray:
        """The recorded angle nearest each frame within ``tolerance_ns``, NaN elsewhere
        (header stamps that are zero fall back to the log time, as for the reports)."""
        times = np.where(stamp_ns != 0, stamp_ns, log_ns) if self.clock == 'stamp' else log_ns
        nearest = pair_nearest(times, self.times_ns, tolerance_ns)
        return np.where(nearest == NO_PARTNER, np.nan, self.angles[nearest].astype(np.float64))


def choose_camera(connections: Sequence[Connection], topic: str | None) -> list[Connection]:
    """The connections of the camera topic: ``topic``, or the camera topic with most messages.
    vbp_node's pictures are never camera frames."""
    if topic is not None and is_image_output(topic):
        raise BagReadError(f'{topic} holds vbp_node\'s pictures, not camera frames')
    images = camera_connections(connections)
    if topic is not None:
        chosen = [c for c in images if c.topic == topic]
        if not chosen:
            found = ', '.join(sorted({c.topic for c in images})) or 'none'
            raise BagReadError(f'no Image or CompressedImage topic {topic} (camera topics: '
                               f'{found})')
        return chosen
    counts = Counter()
    for connection in images:
        counts[connection.topic] += connection.msgcount
    if not counts:
        outputs = sorted({c.topic for c in connections
                          if c.msgtype in CAMERA_TYPES and is_image_output(c.topic)})
        raise BagReadError('no camera frames: no sensor_msgs/Image or CompressedImage topic' + (
            f' besides vbp_node\'s own pictures ({", ".join(outputs)}); record the camera '
            'topic (vbp-drive does by default)' if outputs else ''))
    best = min(counts, key=lambda name: (-counts[name], name))
    return [c for c in images if c.topic == best]


def read_steering_series(reader: AnyReader, decode: Callable[[Connection, bytes], Any],
                         topic: str | None) -> SteeringSeries | None:
    """The recorded steering of an open bag, or None when it has none."""
    name = topic or STEERING_TOPIC
    connections = [c for c in reader.connections if c.topic == name]
    if not connections:
        return None
    kinds = {c.msgtype for c in connections}
    if kinds == {STEERING_REPORT_TYPE}:
        track = read_steering(reader, decode)
        return SteeringSeries(name, track.stamps, track.angles, 'stamp')
    if topic is None or not kinds <= set(SCALARS):
        raise BagReadError(f'steering topic {name} is {", ".join(sorted(kinds))}; expected '
                           f'{STEERING_REPORT_TYPE} or std_msgs Float32/Float64')
    samples = [(log_ns, decode(c, raw).data) for c, log_ns, raw in reader.messages(connections)]
    times = np.array([t for t, _ in samples], np.int64)
    order = np.argsort(times, kind='stable')
    return SteeringSeries(name, times[order],
                          np.array([v for _, v in samples], np.float64)[order], 'log')


class _SegmentBuilder:
    """Collects processed frames of one bag into segments."""

    def __init__(self, bag: str, messages: int, options: ReadOptions,
                 steering: SteeringSeries | None) -> None:
        self.bag, self.messages, self.options, self.steering = bag, messages, options, steering
        self.number = 0
        self.context: np.ndarray | None = None
        self.planes: list[np.ndarray] = []
        self.rows: list[tuple[int, int, int, float]] = []
        self.regions: list[tuple[int, int, int, int]] = []
        self.camera: tuple[Crop, tuple[int, int]] | None = None

    def add(self, index: int, stamp_ns: int, log_ns: int, inputs: FrameInputs,
            frame_shape: tuple[int, int]) -> Iterator[Segment]:
        """Add a frame; yields the segment it completes (or a different pixel type, frame
        size or crop ends)."""
        planes, camera = inputs.planes, (inputs.region, frame_shape)
        if self.planes and (planes.dtype != self.planes[0].dtype or camera != self.camera):
            yield self.flush()
        self.camera = camera
        self.planes.append(planes)
        self.rows.append((index, stamp_ns, log_ns, inputs.horizon))
        self.regions.append(inputs.region.as_tuple())
        if len(self.planes) + (self.context is not None) == self.options.segment_inputs:
            yield self.flush()

    def flush(self, info: BagInfo | None = None) -> Segment:
        """The collected frames as a segment (maybe empty, to carry ``info``)."""
        index, stamp, log, horizon = (np.array(column) for column in zip(*self.rows)) \
            if self.rows else (np.zeros(0, np.int64),) * 3 + (np.zeros(0),)
        stamp, log = stamp.astype(np.int64), log.astype(np.int64)
        recorded = np.full(len(index), np.nan) if self.steering is None else \
            self.steering.pair(stamp, log, self.options.steering_tolerance_ns)
        planes = np.stack(self.planes) if self.planes else np.zeros((0, 1, 1, 1), np.uint8)
        regions = np.array(self.regions, np.int64).reshape(-1, 4)
        segment = Segment(self.bag, self.number, self.messages, planes, self.context,
                          index.astype(np.int64), stamp, log, recorded,
                          horizon.astype(np.float64), self.camera if self.planes else None,
                          regions, info, roi=self.options.roi)
        if self.planes:
            self.context = self.planes[-1]
        self.number += 1
        self.planes, self.rows, self.regions = [], [], []
        return segment


@dataclass(frozen=True)
class FrameInputs:
    """One model's input of a frame: its planes, the horizon as a row of its mask, and the
    rectangle of the frame they show."""

    planes: np.ndarray
    horizon: float
    region: Crop


class ModelInputs:
    """One model's preprocessing of decoded frames (``label`` names the model in the reason
    a frame is skipped for: empty for the model of the run, whose reasons read as before)."""

    def __init__(self, spec: ModelSpec, horizon_row: float | None, label: str = '') -> None:
        self.preprocess, self.horizon_row, self.label = Preprocessor(spec), horizon_row, label

    def __call__(self, frame: np.ndarray, order: str) -> FrameInputs:
        """The model's input of a frame; FrameError (naming the model) when it cannot take it."""
        try:
            planes = self.preprocess.planes(frame, order)
        except ValueError as error:
            if not self.label:
                raise
            raise FrameError(f'{self.label}: {error}') from error
        region = self.preprocess.region(frame.shape)
        return FrameInputs(planes, horizon_in_mask(self.horizon_row, region,
                                                   self.preprocess.spec.input_height), region)


def _joined(segments: list[Segment], compared: list[Segment] | None) -> Iterator[Segment]:
    """The run model's segments, each carrying the compared model's of the same frames (a
    generator: Ray's streaming tasks send into the generators they delegate to)."""
    for number, segment in enumerate(segments):
        if compared:
            segment.compared = compared[number]
        yield segment


def read_segments(path: str | Path, spec: ModelSpec, options: ReadOptions,
                  compared: ModelSpec | None = None) -> Iterator[Segment]:
    """The segments of a bag, the last one carrying :class:`BagInfo`; with ``compared``, each
    carrying that model's inputs of the same frames. Raises BagReadError (or the bag reader's
    own errors) when the bag cannot be read at all."""
    bag = str(path)
    models = [ModelInputs(spec, options.horizon_row)]
    if compared is not None:
        models.append(ModelInputs(compared, options.horizon_row, 'compared model'))
    with open_bag(Path(path)) as reader:
        camera = choose_camera(reader.connections, options.topic)
        decode = message_decoder(reader, udacity_typestore(ros1=not reader.is2))
        steering = read_steering_series(reader, decode, options.steering_topic)
        messages = sum(c.msgcount for c in camera)
        info = BagInfo(camera[0].topic, camera[0].msgtype, messages, reader.start_time,
                       steering_topic=steering and steering.topic,
                       steering_samples=0 if steering is None else len(steering.times_ns),
                       repaired=reader.repair is not None,
                       bytes_left_out=reader.repair.unreadable if reader.repair else 0)
        builder = _SegmentBuilder(bag, messages, options, steering)
        other = _SegmentBuilder(bag, messages, options, None) if compared else None
        skipped: Counter[str] = Counter()
        read = 0
        for read, (connection, log_ns, raw) in enumerate(reader.messages(camera), start=1):
            index = read - 1
            if index % options.every:
                info.subsampled += 1
                continue
            try:
                message = decode(connection, raw)
                frame, order = decode_frame(message, connection.msgtype)
                inputs = [model(frame, order) for model in models]
            except (FrameError, AnyReaderError, SerdeError, ValueError) as error:
                reason = str(error) if len(skipped) < MAX_REASONS or str(error) in skipped \
                    else 'other'
                skipped[reason] += 1
                if len(info.skip_examples) < MAX_EXAMPLES:
                    info.skip_examples.append(f'message {index} (log time {log_ns}): {error}')
                continue
            info.frames += 1
            stamp, shape = stamp_to_ns(message.header.stamp), frame.shape[:2]
            done = list(builder.add(index, stamp, log_ns, inputs[0], shape))
            yield from _joined(done, other and list(other.add(index, stamp, log_ns, inputs[1],
                                                              shape)))
        if not read:
            raise BagReadError(f'no camera frames: {info.topic} holds no messages')
        info.messages = read
        info.skipped = dict(skipped)
        info.segments = builder.number + 1
        yield from _joined([builder.flush(info)], other and [other.flush()])
