"""vbp-review: a quick look at a recorded vbp session (a rosbag2 directory, .mcap or .db3 file).

Reads the vbp node's topics (``vbp/overlay``, ``vbp/mask``, ``vbp/mask_roi``,
``steering_angle``, ``debug/pipeline_latency_ms``, ``debug/processing_time_ms``; matched by
suffix, so a namespace such as ``/car1`` is found) and writes into ``--out`` (default:
``<bag name>_review`` beside the bag):

  overlays.mp4        every overlay (every Nth with --stride) with its steering angle and time;
                      the frame rate is the recorded one (divided by the stride), estimated from
                      header stamps (30 Hz when they do not tell). overlays.gif with --gif, or
                      when OpenCV cannot write MP4 (the GIF's palette frames stay in memory
                      until it is written: use --stride for long recordings)
  steering_angle.png  steering angle (deg) and pipeline latency (ms) over bag receive time
  attention.png       the attention timeline of vbp/attention: ROI mass (with the alarm's
                      default bound), change from the frame before, centroid
  contact_sheet.png   a grid of overlays spread evenly over the recording, masks under them
  summary.json        message counts, pairing, bad frames, stamps, frame rate, latency figures

A bag without recorded overlays (what vbp-drive and drive.launch.py record by default) gets
them drawn as vbp_node draws them: each mask with the camera frame of the same header stamp
(the camera topic in the session's namespace, or --camera-topic), resized into the region of
vbp/mask_roi, in red (--overlay-alpha); masks without a camera frame are counted. The steering
angle (std_msgs/Float32, no header) is paired with the overlay (or mask) whose bag receive time
is nearest, within half the median frame period and at most 50 ms. Angles follow REP 103
(positive = left); the drawn indicator tilts by the angle times --angle-gain. Frames that
cannot be decoded are counted and skipped.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection

from ..data.bags import BagError, open_bag
from ..data.pairing import pair_nearest
from ..data.sessions import (SessionError, SessionIndex, default_tolerance_ns, find_topics,
                             frame_rate, index_session, read_image)
from ..engine.attention_health import AttentionSettings
from ..engine.monitor import percentiles
from ..explain.attention import ATTENTION_LABELS
from ..interface import json_text
from ..pixels.frames import FrameError, to_rgb8
from ..pixels.overlay import DEFAULT_OVERLAY_ALPHA
from ..render.pictures import (Cell, angle_text, annotate, contact_sheet, overlay_in_region,
                               thumbnail)
from ..render.plots import plot_attention, plot_series
from ..render.video import GifVideo, Mp4Video, open_video
from ..arguments import finite_float, int_from, positive_float, positive_int, unit_interval

VIDEO_MP4, VIDEO_GIF = 'overlays.mp4', 'overlays.gif'
PLOT, SHEET, SUMMARY = 'steering_angle.png', 'contact_sheet.png', 'summary.json'
ATTENTION_PLOT = 'attention.png'
REVIEW_FILES = (VIDEO_MP4, VIDEO_GIF, PLOT, ATTENTION_PLOT, SHEET, SUMMARY)
MAX_WARNINGS = 5
SHEET_MAX = 16  # contact sheet rows and columns at most: 256 thumbnails
BAD_LABELS = {'overlay': 'overlays', 'mask': 'masks', 'camera': 'camera_frames',
              'region': 'mask_regions'}

Thumbnails = dict[int, np.ndarray]  # overlays by frame index, masks by header stamp
MaskSink = Callable[[int, np.ndarray, str], None]  # header stamp, mask, channel order


@dataclass(frozen=True)
class Plan:
    """What the second pass draws: per-frame angle and time, video and contact-sheet picks."""

    angles: np.ndarray  # radians, NaN where no angle was paired
    times_s: np.ndarray  # header stamp since the first overlay
    stride: int
    sheet: np.ndarray  # overlay indices on the contact sheet
    angle_gain: float
    thumb_width: int
    overlay_alpha: float


def sheet_indices(frames: int, cells: int) -> np.ndarray:
    """Up to ``cells`` frame indices spread evenly from the first to the last frame."""
    return np.unique(np.linspace(0, frames - 1, min(frames, cells)).round().astype(np.int64))


def render(reader: AnyReader, topics: dict[str, list[Connection]], index: SessionIndex,
           plan: Plan, video: Mp4Video | GifVideo) -> tuple[Thumbnails, Thumbnails]:
    """Second pass: writes the video and returns the contact sheet's overlay thumbnails (by
    frame index) and mask thumbnails (by header stamp)."""
    on_sheet = set(plan.sheet.tolist())
    sheet_stamps = {int(index.overlay_stamp_ns[i]) for i in on_sheet}
    wanted = [i for i in range(len(index.overlay_stamp_ns))
              if i % plan.stride == 0 or i in on_sheet]
    overlays, masks = {}, {}

    def keep_mask(stamp: int, mask: np.ndarray, order: str) -> None:
        if stamp in sheet_stamps and stamp not in masks:
            masks[stamp] = thumbnail(to_rgb8(mask, order), plan.thumb_width)

    pictures = drawn_overlays(reader, topics, index, wanted, plan.overlay_alpha, keep_mask) \
        if index.drawn else recorded_overlays(reader, topics, set(wanted), keep_mask)
    for frame_index, rgb in pictures:
        if frame_index % plan.stride == 0:
            video.write(annotate(rgb, plan.angles[frame_index], plan.times_s[frame_index],
                                 plan.angle_gain))
        if frame_index in on_sheet:
            overlays[frame_index] = thumbnail(rgb, plan.thumb_width)
    return overlays, masks


def recorded_overlays(reader: AnyReader, topics: dict[str, list[Connection]], wanted: set[int],
                      on_mask: MaskSink) -> Iterator[tuple[int, np.ndarray]]:
    """The recorded overlays of the frame indices ``wanted`` (RGB), in order; every decodable
    mask goes to ``on_mask``."""
    mask_ids = {c.id for c in topics['mask']}
    frame_index = -1
    for connection, _, raw in reader.messages(connections=topics['overlay'] + topics['mask']):
        try:
            stamp, frame, order = read_image(reader, connection, raw)
        except FrameError:
            continue  # counted and reported by the first pass
        if connection.id in mask_ids:
            on_mask(stamp, frame, order)
            continue
        frame_index += 1
        if frame_index in wanted:
            yield frame_index, to_rgb8(frame, order)


def drawn_overlays(reader: AnyReader, topics: dict[str, list[Connection]], index: SessionIndex,
                   wanted: list[int], alpha: float,
                   on_mask: MaskSink) -> Iterator[tuple[int, np.ndarray]]:
    """The overlays of the frame indices ``wanted`` (ascending), drawn from each one's mask and
    the camera frame of the same header stamp, whichever the bag holds first, in order;
    every decodable mask goes to ``on_mask``."""
    waiting = {int(index.overlay_stamp_ns[i]): i for i in wanted}
    frames: dict[int, tuple[np.ndarray, str]] = {}
    masks: dict[int, np.ndarray] = {}
    drawn: dict[int, np.ndarray] = {}
    upcoming = iter(wanted)
    following = next(upcoming, None)
    camera_ids = {c.id for c in topics['camera']}
    for connection, _, raw in reader.messages(connections=topics['camera'] + topics['mask']):
        try:
            stamp, picture, order = read_image(reader, connection, raw)
        except FrameError:
            continue  # counted and reported by the first pass
        if connection.id not in camera_ids:
            on_mask(stamp, picture, order)
        if stamp not in waiting:
            continue
        if connection.id in camera_ids:
            frames.setdefault(stamp, (picture, order))
        else:
            masks.setdefault(stamp, picture)
        if stamp in frames and stamp in masks:
            frame_index = waiting.pop(stamp)
            (frame, frame_order), mask = frames.pop(stamp), masks.pop(stamp)
            drawn[frame_index] = overlay_in_region(frame, frame_order, mask,
                                                   index.regions[frame_index], alpha)
        while following in drawn:
            yield following, drawn.pop(following)
            following = next(upcoming, None)


def sheet_cells(plan: Plan, index: SessionIndex, overlays: Thumbnails,
                masks: Thumbnails) -> list[Cell]:
    """Contact sheet cells in time order, labelled 't=12.3 s +3.2 deg'."""
    return [(overlays[i], masks.get(int(index.overlay_stamp_ns[i])),
             f't={plan.times_s[i]:.1f} s {angle_text(plan.angles[i])}')
            for i in plan.sheet if i in overlays]


def summarise(bag: Path, namespace: str, index: SessionIndex, plan: Plan, fps: float,
              tolerance_ns: int, files: dict[str, str], camera_topic: str | None) -> dict:
    """The summary.json document (``camera_topic``: where the overlays were drawn from; None
    for recorded overlays)."""
    angles_deg = np.degrees(index.series['angle'].values)
    return {
        'bag': str(bag.resolve()), 'namespace': namespace or '/',
        'topics': index.counts,
        'overlays': len(index.overlay_stamp_ns), 'masks': index.masks,
        'overlays_drawn_from': camera_topic,
        'camera_frames': index.camera_frames if camera_topic else None,
        'masks_without_camera_frame': index.unpaired_masks if camera_topic else None,
        'angles': len(angles_deg), 'overlays_with_angle': int((~np.isnan(plan.angles)).sum()),
        'bad_frames_skipped': {BAD_LABELS[role]: len(lines)
                               for role, lines in index.bad.items()},
        'first_stamp_ns': int(index.overlay_stamp_ns[0]),
        'last_stamp_ns': int(index.overlay_stamp_ns[-1]),
        'duration_s': float(plan.times_s[-1]), 'frame_rate_hz': fps,
        'pair_tolerance_ms': tolerance_ns / 1e6, 'frame_size': list(index.frame_size),
        'angle_deg': {'min': float(angles_deg.min()), 'max': float(angles_deg.max()),
                      'mean': float(angles_deg.mean())} if len(angles_deg) else None,
        'pipeline_latency_ms': percentiles(index.series['latency'].values),
        'processing_time_ms': percentiles(index.series['processing'].values),
        'attention': attention_summary(index.series['attention'].values),
        'stride': plan.stride, 'files': files,
    }


def attention_summary(values: np.ndarray) -> dict | None:
    """vbp/attention in a few figures: messages, frames without attention (NaN), ROI mass
    and change percentiles, the share of frames below the alarm's default ROI mass bound."""
    if not len(values):
        return None
    rows = values.reshape(len(values), len(ATTENTION_LABELS))
    roi_mass, change = (rows[:, ATTENTION_LABELS.index(name)] for name in ('roi_mass', 'change'))
    bound = AttentionSettings().min_roi_mass
    finite = roi_mass[np.isfinite(roi_mass)]
    return {'messages': len(rows), 'without_attention': int(len(rows) - len(finite)),
            'roi_mass': percentiles(finite), 'change': percentiles(change[np.isfinite(change)]),
            f'share_roi_mass_below_{bound:g}': float(np.mean(~(roi_mass >= bound)))}


def make_plan(index: SessionIndex, args: argparse.Namespace, tolerance_ns: int) -> Plan:
    """Angles paired to overlays, frame times and contact sheet picks."""
    angle = index.series['angle']
    nearest = pair_nearest(index.overlay_log_ns, angle.log_ns, tolerance_ns)
    angles = np.append(angle.values, np.nan)[nearest]  # -1 (no angle) picks the NaN
    return Plan(angles, (index.overlay_stamp_ns - index.overlay_stamp_ns[0]) / 1e9, args.stride,
                sheet_indices(len(angles), args.sheet_cols * args.sheet_rows), args.angle_gain,
                min(args.thumb_width, index.frame_size[0]), args.overlay_alpha)


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
        raise SessionError(f'{out} already holds {", ".join(review_files(out))}; '
                           'pass --force to replace them')
    with open_bag(bag) as reader:
        if reader.repair is not None:
            _warn(reader.repair.describe())
        namespace, topics = find_topics(reader.connections, args.namespace, args.camera_topic)
        index = index_session(reader, topics)
        _report_bad_frames(index.bad)
        camera_topic = topics['camera'][0].topic if index.drawn else None
        if index.unpaired_masks:
            _warn(f'{index.unpaired_masks} masks have no camera frame of their header stamp on '
                  f'{camera_topic}: no overlay drawn for them')
        fps = frame_rate(index.overlay_stamp_ns)
        tolerance_ns = (default_tolerance_ns(index.overlay_stamp_ns)
                        if args.pair_tolerance_ms is None else round(args.pair_tolerance_ms * 1e6))
        plan = make_plan(index, args, tolerance_ns)
        out.mkdir(parents=True, exist_ok=True)
        for name in review_files(out):
            (out / name).unlink()
        video = open_video(out / (VIDEO_GIF if args.gif else VIDEO_MP4), fps / args.stride,
                           index.frame_size)
        if video.path.name == VIDEO_GIF and not args.gif:
            _warn(f'OpenCV cannot write {VIDEO_MP4}; writing {VIDEO_GIF} instead')
        overlays, masks = render(reader, topics, index, plan, video)
        video.close()
    sheet = contact_sheet(sheet_cells(plan, index, overlays, masks), args.sheet_cols,
                          args.sheet_rows)
    cv2.imwrite(str(out / SHEET), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    title = f'{bag.name} (namespace {namespace or "/"})'
    plot_series(out / PLOT, index.series, title)
    plot_attention(out / ATTENTION_PLOT, index.series['attention'], ATTENTION_LABELS,
                   AttentionSettings().min_roi_mass, title)
    files = {'video': video.path.name, 'plot': PLOT, 'attention': ATTENTION_PLOT,
             'contact_sheet': SHEET, 'summary': SUMMARY}
    summary = summarise(bag, namespace, index, plan, fps, tolerance_ns, files, camera_topic)
    summary.update(out=str(out), video_frames=video.frames, unreadable_bytes_left_out=(
        reader.repair.unreadable if reader.repair is not None else 0))
    (out / SUMMARY).write_text(json_text(summary) + '\n')
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
    bad = ', '.join(f'{count} {label}' for label, count in
                    summary['bad_frames_skipped'].items()).replace('_', ' ')
    source = summary['overlays_drawn_from']
    overlays = f'{summary["overlays"]} ' + (
        f'overlays drawn from {source} ({summary["camera_frames"]} camera frames; '
        f'{summary["masks_without_camera_frame"]} masks without one)' if source
        else 'recorded overlays')
    lines = [f'{summary["bag"]} (namespace {summary["namespace"]}): {overlays} over '
             f'{summary["duration_s"]:.3f} s at {summary["frame_rate_hz"]:.1f} Hz, '
             f'{summary["masks"]} masks, {summary["angles"]} steering angles',
             f'{summary["overlays_with_angle"]} overlays paired with an angle (within '
             f'{summary["pair_tolerance_ms"]:.1f} ms); bad frames skipped: {bad}']
    latency = summary['pipeline_latency_ms']
    if latency:
        lines.append(f'pipeline latency p50 {latency["p50"]:.1f} ms, p99 {latency["p99"]:.1f} '
                     f'ms, max {latency["max"]:.1f} ms')
    files = summary['files']
    lines.append(f'wrote {summary["out"]}/: {files["video"]} ({summary["video_frames"]} frames), '
                 f'{files["plot"]}, {files["attention"]}, {files["contact_sheet"]}, '
                 f'{files["summary"]}')
    return '\n'.join(lines)


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
    parser.add_argument('--camera-topic', metavar='TOPIC',
                        help='camera frames to draw the overlays on when the bag holds none '
                        '(default: the camera topic in the namespace)')
    parser.add_argument('--overlay-alpha', type=unit_interval, default=DEFAULT_OVERLAY_ALPHA,
                        metavar='A', help='strength of the red mask in overlays drawn here, 0 '
                        'to 1 (default: %(default)s, as vbp_node)')
    parser.add_argument('--stride', type=positive_int, default=1, metavar='N',
                        help='put every Nth overlay in the video, which keeps real time '
                        '(frame rate / N) (default: %(default)s)')
    parser.add_argument('--gif', action='store_true',
                        help=f'write {VIDEO_GIF} instead of {VIDEO_MP4}')
    parser.add_argument('--angle-gain', type=finite_float, default=10.0, metavar='G',
                        help='the drawn steering line tilts by angle x G, capped at 90 degrees '
                        '(default: %(default)s)')
    parser.add_argument('--pair-tolerance-ms', type=positive_float, metavar='MS',
                        help='largest gap between an overlay and its steering angle in bag '
                        'receive time (default: half the median frame period, at most 50 ms)')
    parser.add_argument('--sheet-cols', type=int_from(1, SHEET_MAX), default=4, metavar='N',
                        help='contact sheet columns (default: %(default)s)')
    parser.add_argument('--sheet-rows', type=int_from(1, SHEET_MAX), default=4, metavar='N',
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
    except (SessionError, BagError, AnyReaderError, OSError) as error:
        print(f'vbp-review: error: {error}', file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
