"""vbp-review: a quick look at a recorded vbp session (a rosbag2 directory, .mcap or .db3 file).

Reads the vbp node's topics (``vbp/overlay``, ``vbp/mask``, ``steering_angle``,
``debug/pipeline_latency_ms``, ``debug/processing_time_ms``; matched by suffix, so a namespace
such as ``/car1`` is found) and writes into ``--out`` (default: ``<bag name>_review`` beside
the bag):

  overlays.mp4        every overlay (every Nth with --stride) with its steering angle and time;
                      the frame rate is the recorded one (divided by the stride), estimated from
                      header stamps (30 Hz when they do not tell). overlays.gif with --gif, or
                      when OpenCV cannot write MP4 (the GIF's palette frames stay in memory
                      until it is written: use --stride for long recordings)
  steering_angle.png  steering angle (deg) and pipeline latency (ms) over bag receive time
  contact_sheet.png   a grid of overlays spread evenly over the recording, masks under them
  summary.json        message counts, pairing, bad frames, stamps, frame rate, latency figures

The steering angle (std_msgs/Float32, no header) is paired with the overlay whose bag receive
time is nearest, within half the median frame period and at most 50 ms. Angles follow REP 103
(positive = left); the drawn indicator tilts by the angle times --angle-gain. Frames that
cannot be decoded are counted and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection

from ..data.bags import BagError, open_bag
from ..data.image_encoding import FrameError, decode_raw, mask_to_mono8
from ..monitor import percentiles

IMAGE, FLOAT32 = 'sensor_msgs/msg/Image', 'std_msgs/msg/Float32'
TOPICS = {  # role: (topic suffix, message type)
    'overlay': ('vbp/overlay', IMAGE), 'mask': ('vbp/mask', IMAGE),
    'angle': ('steering_angle', FLOAT32), 'latency': ('debug/pipeline_latency_ms', FLOAT32),
    'processing': ('debug/processing_time_ms', FLOAT32),
}
SCALARS = ('angle', 'latency', 'processing')
VIDEO_MP4, VIDEO_GIF = 'overlays.mp4', 'overlays.gif'
PLOT, SHEET, SUMMARY = 'steering_angle.png', 'contact_sheet.png', 'summary.json'
REVIEW_FILES = (VIDEO_MP4, VIDEO_GIF, PLOT, SHEET, SUMMARY)
FALLBACK_FPS = 30.0
MAX_PAIR_GAP_NS = 50_000_000
SHEET_GAP = 4  # pixels between contact sheet cells
FONT = cv2.FONT_HERSHEY_SIMPLEX
MAX_WARNINGS = 5


Thumbnails = dict[int, np.ndarray]  # overlays by frame index, masks by header stamp
Cell = tuple[np.ndarray, np.ndarray | None, str]  # overlay thumbnail, mask thumbnail, label


class ReviewError(ValueError):
    """A bag that cannot be reviewed as asked (the message says why)."""


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
class BagIndex:
    """What the first pass over a bag learns (no pixels are kept)."""

    counts: dict[str, int]
    overlay_log_ns: np.ndarray  # decodable overlays, in bag order
    overlay_stamp_ns: np.ndarray
    frame_size: tuple[int, int]  # width, height of the first decodable overlay
    masks: int
    bad: dict[str, list[str]]  # role: one line per skipped frame
    series: dict[str, Series]


@dataclass(frozen=True)
class Plan:
    """What the second pass draws: per-frame angle and time, video and contact-sheet picks."""

    angles: np.ndarray  # radians, NaN where no angle was paired
    times_s: np.ndarray  # header stamp since the first overlay
    stride: int
    sheet: np.ndarray  # overlay indices on the contact sheet
    angle_gain: float
    thumb_width: int


def topic_namespace(topic: str, suffix: str) -> str | None:
    """The namespace ('' for none) of ``topic`` if it ends in ``suffix`` at a '/' boundary."""
    topic = '/' + topic.strip('/')
    if topic.endswith('/' + suffix):
        return topic[:-len(suffix) - 1]
    return None


def normalise_namespace(namespace: str) -> str:
    """'car1', '/car1/' and '/car1' all become '/car1'; '/' and '' mean no namespace."""
    return '/' + namespace.strip('/') if namespace.strip('/') else ''


def find_topics(connections: Sequence[Connection],
                namespace: str | None) -> tuple[str, dict[str, list[Connection]]]:
    """The namespace to review and its connections by role (empty lists for absent topics).

    Without ``namespace`` the only namespace with an overlay topic is taken.
    """
    suffix, msgtype = TOPICS['overlay']
    found = sorted({ns for c in connections if c.msgtype == msgtype
                    and (ns := topic_namespace(c.topic, suffix)) is not None})
    if not found:
        topics = ', '.join(sorted({c.topic for c in connections})) or 'none'
        raise ReviewError(f'no {msgtype} topic ending in {suffix} (topics: {topics})')
    shown = ', '.join(ns or '/' for ns in found)
    if namespace is None and len(found) > 1:
        raise ReviewError(f'overlays in several namespaces ({shown}); choose one with --namespace')
    chosen = found[0] if namespace is None else normalise_namespace(namespace)
    if chosen not in found:
        raise ReviewError(f'no overlays in namespace {chosen or "/"} (found: {shown})')
    return chosen, {role: [c for c in connections if c.msgtype == msgtype
                           and topic_namespace(c.topic, suffix) == chosen]
                    for role, (suffix, msgtype) in TOPICS.items()}


def read_image(reader: AnyReader, connection: Connection,
               raw: bytes) -> tuple[int, np.ndarray, str]:
    """Header stamp (ns), pixels and channel order of a serialized Image; FrameError if bad."""
    try:
        message = reader.deserialize(raw, connection.msgtype)
    except AnyReaderError as error:
        raise FrameError(f'cannot deserialize: {error}') from None
    stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
    frame, order = decode_raw(message.encoding, message.height, message.width, message.step,
                              bool(message.is_bigendian), message.data)
    return stamp, frame, order


def index_bag(reader: AnyReader, topics: dict[str, list[Connection]]) -> BagIndex:
    """First pass: counts every topic, checks every frame, collects times and Float32 values."""
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
        raise ReviewError(f'no decodable frame on {topics["overlay"][0].topic}: ' + (
            f'{len(failed)} bad, the first {failed[0]}' if failed else 'no messages'))
    return BagIndex(dict(sorted(counts.items())),
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


def pair_nearest(times_ns: np.ndarray, reference_ns: np.ndarray,
                 tolerance_ns: int) -> np.ndarray:
    """For each time, the index of the nearest sorted reference time, or -1 beyond tolerance."""
    if not len(reference_ns):
        return np.full(len(times_ns), -1, np.int64)
    after = np.searchsorted(reference_ns, times_ns).clip(0, len(reference_ns) - 1)
    before = (after - 1).clip(0)
    nearer = np.abs(reference_ns[before] - times_ns) <= np.abs(reference_ns[after] - times_ns)
    nearest = np.where(nearer, before, after)
    return np.where(np.abs(reference_ns[nearest] - times_ns) <= tolerance_ns, nearest, -1)


def sheet_indices(frames: int, cells: int) -> np.ndarray:
    """Up to ``cells`` frame indices spread evenly from the first to the last frame."""
    return np.unique(np.linspace(0, frames - 1, min(frames, cells)).round().astype(np.int64))


def to_rgb8(frame: np.ndarray, order: str) -> np.ndarray:
    """An HxWx3 uint8 RGB picture of a decoded frame ([0, 1] floats and 16-bit are scaled)."""
    if frame.dtype == np.float32:
        frame = mask_to_mono8(frame)
    elif frame.dtype == np.uint16:
        frame = cv2.convertScaleAbs(frame, alpha=255 / 65535)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    frame = frame[:, :, :3]
    return np.ascontiguousarray(frame[:, :, ::-1] if order == 'bgr' else frame)


def angle_text(angle_rad: float) -> str:
    """'+3.2 deg' (REP 103: positive is left), or 'no angle' for NaN."""
    return 'no angle' if np.isnan(angle_rad) else f'{np.degrees(angle_rad):+.1f} deg'


def fitting_scale(texts: list[str], width: int, preferred: float) -> float:
    """The preferred font scale, or a smaller one at which every text fits ``width`` pixels."""
    widest = max(cv2.getTextSize(text, FONT, 1.0, 1)[0][0] for text in texts)
    return min(preferred, max(width, 1) / widest)


def put_text(picture: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text on a black box, in place: readable on any frame, and, unlike outlined text,
    free of ghosts from frame to frame in an mp4v video."""
    thickness = max(1, round(scale * 1.5))
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    left, bottom = origin
    cv2.rectangle(picture, (left - 4, bottom - height - 4), (left + width + 4, bottom + baseline),
                  (0, 0, 0), cv2.FILLED)
    cv2.putText(picture, text, origin, FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def annotate(rgb: np.ndarray, angle_rad: float, time_s: float, gain: float) -> np.ndarray:
    """A copy of an RGB frame with angle and time written at the top and, when the angle is
    known, a green line from the bottom centre tilted left for positive angles by angle x gain
    (at most 90 degrees) beside a gray straight-ahead line."""
    picture = rgb.copy()
    height, width = picture.shape[:2]
    text = f'{angle_text(angle_rad)}  t={time_s:.3f} s'
    scale = fitting_scale([text], width - 16, max(0.3, width / 800))
    put_text(picture, text, (8, round(30 * scale) + 4), scale)
    if not np.isnan(angle_rad):
        base, length = np.array([width / 2, height - 1]), height / 3
        tilt = float(np.clip(angle_rad * gain, -np.pi / 2, np.pi / 2))
        tip = base + length * np.array([-np.sin(tilt), -np.cos(tilt)])
        thickness = max(1, round(3 * scale))
        cv2.line(picture, _point(base), _point(base - [0, length]), (128, 128, 128), thickness)
        cv2.line(picture, _point(base), _point(tip), (0, 255, 0), thickness + 1, cv2.LINE_AA)
    return picture


def _point(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0])), round(float(xy[1]))


class Mp4Video:
    """An MP4 (mp4v) file fed RGB frames one at a time; frames of another size are resized."""

    def __init__(self, writer: cv2.VideoWriter, path: Path, size: tuple[int, int]) -> None:
        self._writer, self.path, self.size, self.frames = writer, path, size, 0

    @classmethod
    def open(cls, path: Path, fps: float, size: tuple[int, int]) -> Mp4Video | None:
        """The video, or None when OpenCV cannot write MP4 here."""
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
        return cls(writer, path, size) if writer.isOpened() else None

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame."""
        self._writer.write(cv2.cvtColor(_fit(rgb, self.size), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file."""
        self._writer.release()


class GifVideo:
    """An animated GIF: palette frames are kept until close() writes them with Pillow."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path, self._fps, self.size = path, fps, size
        self._frames: list[Image.Image] = []

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return len(self._frames)

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame (reduced to an adaptive 256-colour palette)."""
        self._frames.append(Image.fromarray(_fit(rgb, self.size)).quantize(256))

    def close(self) -> None:
        """Write the file (looping, at the frame rate rounded to GIF's 10 ms steps)."""
        first, *rest = self._frames
        first.save(self.path, save_all=True, append_images=rest, loop=0,
                   duration=round(1000 / self._fps))


def _fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    same = (rgb.shape[1], rgb.shape[0]) == size
    return rgb if same else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def open_video(out: Path, fps: float, size: tuple[int, int], gif: bool) -> Mp4Video | GifVideo:
    """MP4 unless ``gif`` is set or OpenCV cannot write it (then a GIF, with a warning)."""
    video = None if gif else Mp4Video.open(out / VIDEO_MP4, fps, size)
    if video is None and not gif:
        (out / VIDEO_MP4).unlink(missing_ok=True)
        _warn(f'OpenCV cannot write {VIDEO_MP4}; writing {VIDEO_GIF} instead')
    return video or GifVideo(out / VIDEO_GIF, fps, size)


def thumbnail(rgb: np.ndarray, width: int) -> np.ndarray:
    """The picture scaled to ``width`` pixels, keeping its aspect ratio."""
    height = max(1, round(width * rgb.shape[0] / rgb.shape[1]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def render(reader: AnyReader, topics: dict[str, list[Connection]], index: BagIndex,
           plan: Plan, video: Mp4Video | GifVideo) -> tuple[Thumbnails, Thumbnails]:
    """Second pass: writes the video and returns the contact sheet's overlay thumbnails (by
    overlay index) and mask thumbnails (by header stamp)."""
    wanted = {int(index.overlay_stamp_ns[i]) for i in plan.sheet}
    picks, overlays, masks = set(plan.sheet.tolist()), {}, {}
    frame_index = -1
    mask_ids = {c.id for c in topics['mask']}
    for connection, _, raw in reader.messages(connections=topics['overlay'] + topics['mask']):
        try:
            stamp, frame, order = read_image(reader, connection, raw)
        except FrameError:
            continue  # counted and reported by the first pass
        if connection.id in mask_ids:
            if stamp in wanted:
                masks.setdefault(stamp, thumbnail(to_rgb8(frame, order), plan.thumb_width))
            continue
        frame_index += 1
        in_video, on_sheet = frame_index % plan.stride == 0, frame_index in picks
        if not (in_video or on_sheet):
            continue
        rgb = to_rgb8(frame, order)
        if in_video:
            video.write(annotate(rgb, plan.angles[frame_index], plan.times_s[frame_index],
                                 plan.angle_gain))
        if on_sheet:
            overlays[frame_index] = thumbnail(rgb, plan.thumb_width)
    return overlays, masks


def contact_sheet(cells: list[Cell], columns: int, rows: int) -> np.ndarray:
    """A columns x rows RGB grid of (overlay thumbnail, mask thumbnail or None, label) cells,
    each label above its overlay and the mask under it; unused cells stay dark."""
    width = max(overlay.shape[1] for overlay, _, _ in cells)
    scale = fitting_scale([label for _, _, label in cells], width - 4, max(0.3, width / 600))
    band = cv2.getTextSize('0', FONT, scale, 1)[0][1] + round(10 * scale) + 2
    overlay_height = max(overlay.shape[0] for overlay, _, _ in cells)
    mask_height = max((mask.shape[0] for _, mask, _ in cells if mask is not None), default=0)
    cell_w, cell_h = width + SHEET_GAP, band + overlay_height + mask_height + SHEET_GAP
    sheet = np.full((rows * cell_h, columns * cell_w, 3), 32, np.uint8)
    for position, (overlay, mask, label) in enumerate(cells):
        top, left = (position // columns) * cell_h, (position % columns) * cell_w
        put_text(sheet, label, (left + 2, top + band - round(5 * scale) - 1), scale)
        _paste(sheet, overlay, top + band, left)
        if mask is not None:
            _paste(sheet, mask, top + band + overlay_height, left)
    return sheet


def _paste(canvas: np.ndarray, picture: np.ndarray, top: int, left: int) -> None:
    canvas[top:top + picture.shape[0], left:left + picture.shape[1]] = picture


def sheet_cells(plan: Plan, index: BagIndex, overlays: Thumbnails,
                masks: Thumbnails) -> list[Cell]:
    """Contact sheet cells in time order, labelled 't=12.3 s +3.2 deg'."""
    return [(overlays[i], masks.get(int(index.overlay_stamp_ns[i])),
             f't={plan.times_s[i]:.1f} s {angle_text(plan.angles[i])}')
            for i in plan.sheet if i in overlays]


def plot_series(path: Path, series: dict[str, Series], title: str) -> None:
    """Steering angle (deg) and, when recorded, pipeline latency (ms) over bag receive time.

    Uses matplotlib's object API (Figure renders with Agg): pyplot and its GUI backends are
    never imported.
    """
    shown = [(role, series[role]) for role in ('angle', 'latency')
             if role == 'angle' or len(series[role].log_ns)]
    starts = [s.log_ns[0] for _, s in shown if len(s.log_ns)]
    start = min(starts, default=0)
    figure = Figure(figsize=(10, 3 + 2.5 * len(shown)), layout='constrained')
    axes = figure.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    labels = {'angle': ('steering angle (deg, + = left)', np.degrees, 'tab:blue'),
              'latency': ('pipeline latency (ms)', lambda v: v, 'tab:orange')}
    for axis, (role, samples) in zip(axes, shown):
        label, convert, colour = labels[role]
        axis.plot((samples.log_ns - start) / 1e9, convert(samples.values), color=colour, lw=1)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if not len(samples.log_ns):
            axis.text(0.5, 0.5, 'no steering_angle messages', ha='center',
                      transform=axis.transAxes)
    axes[-1].set_xlabel('bag receive time since the first message (s)')
    figure.suptitle(title)
    figure.savefig(path, dpi=100)


def series_percentiles(values: np.ndarray) -> dict[str, float] | None:
    """p50, p99 and max of a series, None (JSON null) when it is empty."""
    return percentiles(values) if len(values) else None


def summarise(bag: Path, namespace: str, index: BagIndex, plan: Plan, fps: float,
              tolerance_ns: int, files: dict[str, str]) -> dict:
    """The summary.json document."""
    angles_deg = np.degrees(index.series['angle'].values)
    return {
        'bag': str(bag.resolve()), 'namespace': namespace or '/',
        'topics': index.counts,
        'overlays': len(index.overlay_stamp_ns), 'masks': index.masks,
        'angles': len(angles_deg), 'overlays_with_angle': int((~np.isnan(plan.angles)).sum()),
        'bad_frames_skipped': {role + 's': len(lines) for role, lines in index.bad.items()},
        'first_stamp_ns': int(index.overlay_stamp_ns[0]),
        'last_stamp_ns': int(index.overlay_stamp_ns[-1]),
        'duration_s': float(plan.times_s[-1]), 'frame_rate_hz': fps,
        'pair_tolerance_ms': tolerance_ns / 1e6, 'frame_size': list(index.frame_size),
        'angle_deg': {'min': float(angles_deg.min()), 'max': float(angles_deg.max()),
                      'mean': float(angles_deg.mean())} if len(angles_deg) else None,
        'pipeline_latency_ms': series_percentiles(index.series['latency'].values),
        'processing_time_ms': series_percentiles(index.series['processing'].values),
        'stride': plan.stride, 'files': files,
    }


def make_plan(index: BagIndex, args: argparse.Namespace, tolerance_ns: int) -> Plan:
    """Angles paired to overlays, frame times and contact sheet picks."""
    angle = index.series['angle']
    nearest = pair_nearest(index.overlay_log_ns, angle.log_ns, tolerance_ns)
    angles = np.append(angle.values, np.nan)[nearest]  # -1 (no angle) picks the NaN
    return Plan(angles, (index.overlay_stamp_ns - index.overlay_stamp_ns[0]) / 1e9, args.stride,
                sheet_indices(len(angles), args.sheet_cols * args.sheet_rows), args.angle_gain,
                min(args.thumb_width, index.frame_size[0]))


def default_out(bag: Path) -> Path:
    """``<bag name>_review`` beside the bag directory or file."""
    bag = bag.resolve()
    return bag.with_name((bag.stem if bag.is_file() else bag.name) + '_review')


def review_files(out: Path) -> list[str]:
    """The review files already in ``out``."""
    return [name for name in REVIEW_FILES if (out / name).exists()]


def review(args: argparse.Namespace) -> dict:
    """Reviews ``args.bag`` into its output folder and returns the summary."""
    bag = Path(args.bag)
    out = Path(args.out) if args.out else default_out(bag)
    if review_files(out) and not args.force:
        raise ReviewError(f'{out} already holds {", ".join(review_files(out))}; '
                          'pass --force to replace them')
    with open_bag(bag) as reader:
        namespace, topics = find_topics(reader.connections, args.namespace)
        index = index_bag(reader, topics)
        _report_bad_frames(index.bad)
        fps = frame_rate(index.overlay_stamp_ns)
        tolerance_ns = (default_tolerance_ns(index.overlay_stamp_ns)
                        if args.pair_tolerance_ms is None else round(args.pair_tolerance_ms * 1e6))
        plan = make_plan(index, args, tolerance_ns)
        out.mkdir(parents=True, exist_ok=True)
        for name in review_files(out):
            (out / name).unlink()
        video = open_video(out, fps / args.stride, index.frame_size, args.gif)
        overlays, masks = render(reader, topics, index, plan, video)
        video.close()
    sheet = contact_sheet(sheet_cells(plan, index, overlays, masks), args.sheet_cols,
                          args.sheet_rows)
    cv2.imwrite(str(out / SHEET), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    plot_series(out / PLOT, index.series, f'{bag.name} (namespace {namespace or "/"})')
    files = {'video': video.path.name, 'plot': PLOT, 'contact_sheet': SHEET, 'summary': SUMMARY}
    summary = summarise(bag, namespace, index, plan, fps, tolerance_ns, files)
    summary.update(out=str(out), video_frames=video.frames)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + '\n')
    return summary


def _report_bad_frames(bad: dict[str, list[str]]) -> None:
    lines = [line for role_lines in bad.values() for line in role_lines]
    for line in lines[:MAX_WARNINGS]:
        _warn(f'skipped {line}')
    if len(lines) > MAX_WARNINGS:
        _warn(f'skipped {len(lines) - MAX_WARNINGS} more bad frames')


def _warn(message: str) -> None:
    print(f'vbp-review: warning: {message}', file=sys.stderr)


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    bad = summary['bad_frames_skipped']
    lines = [f'{summary["bag"]} (namespace {summary["namespace"]}): '
             f'{summary["overlays"]} overlays over {summary["duration_s"]:.3f} s at '
             f'{summary["frame_rate_hz"]:.1f} Hz, {summary["masks"]} masks, '
             f'{summary["angles"]} steering angles',
             f'{summary["overlays_with_angle"]} overlays paired with an angle (within '
             f'{summary["pair_tolerance_ms"]:.1f} ms); bad frames skipped: '
             f'{bad["overlays"]} overlays, {bad["masks"]} masks']
    latency = summary['pipeline_latency_ms']
    if latency:
        lines.append(f'pipeline latency p50 {latency["p50"]:.1f} ms, p99 {latency["p99"]:.1f} '
                     f'ms, max {latency["max"]:.1f} ms')
    files = summary['files']
    lines.append(f'wrote {summary["out"]}/: {files["video"]} ({summary["video_frames"]} frames), '
                 f'{files["plot"]}, {files["contact_sheet"]}, {files["summary"]}')
    return '\n'.join(lines)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text} is not a positive integer')
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog='vbp-review', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help='rosbag2 directory, or its .mcap or .db3 file')
    parser.add_argument('--out', metavar='DIR',
                        help='output folder (default: <bag name>_review beside the bag)')
    parser.add_argument('--force', action='store_true',
                        help='replace review files already in the output folder')
    parser.add_argument('--namespace', metavar='NS', help='namespace of the vbp topics, e.g. '
                        '/car1 (default: the only one in the bag; / for none)')
    parser.add_argument('--stride', type=positive_int, default=1, metavar='N',
                        help='put every Nth overlay in the video, which keeps real time '
                        '(frame rate / N) (default: %(default)s)')
    parser.add_argument('--gif', action='store_true',
                        help=f'write {VIDEO_GIF} instead of {VIDEO_MP4}')
    parser.add_argument('--angle-gain', type=float, default=10.0, metavar='G',
                        help='the drawn steering line tilts by angle x G, capped at 90 degrees '
                        '(default: %(default)s)')
    parser.add_argument('--pair-tolerance-ms', type=float, metavar='MS',
                        help='largest gap between an overlay and its steering angle in bag '
                        'receive time (default: half the median frame period, at most 50 ms)')
    parser.add_argument('--sheet-cols', type=positive_int, default=4, metavar='N',
                        help='contact sheet columns (default: %(default)s)')
    parser.add_argument('--sheet-rows', type=positive_int, default=4, metavar='N',
                        help='contact sheet rows (default: %(default)s)')
    parser.add_argument('--thumb-width', type=positive_int, default=240, metavar='PX',
                        help='contact sheet thumbnail width, at most the frame width '
                        '(default: %(default)s)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 2 (with a one-line message) when the bag cannot be reviewed."""
    args = parse_args(argv)
    try:
        summary = review(args)
    except (ReviewError, BagError, AnyReaderError, OSError) as error:
        print(f'vbp-review: error: {error}', file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
