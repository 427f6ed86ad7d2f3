"""vbp-review on small bags written here like the vbp node's recordings (MCAP and SQLite 3):
old ones with the overlays recorded, and new ones whose overlays it draws from the camera
frames, the masks and their region."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vbp_ros.data import sessions
from vbp_ros.data.bags import open_bag
from vbp_ros.data.camera_bags import CameraFrame, NodeOutput, write_camera_bag
from vbp_ros.data.pairing import pair_nearest
from vbp_ros.data.sources import synthetic_frames
from vbp_ros.engine.build import build_engine
from vbp_ros.pixels.encodings import mask_to_mono8
from vbp_ros.pixels.frames import Crop
from vbp_ros.pixels.overlay import DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_WIDTH, draw_overlay
from vbp_ros.render import pictures
from vbp_ros.explain.attention import ATTENTION_LABELS
from vbp_ros.tools import review

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
IMAGE, FLOAT32 = 'sensor_msgs/msg/Image', 'std_msgs/msg/Float32'
FLOAT32_ARRAY = 'std_msgs/msg/Float32MultiArray'
MS = 1_000_000
T0 = 1_700_000_000 * 1000 * MS  # first camera header stamp, ns
PERIOD = 50 * MS  # 20 Hz
RECEIVED = 30 * MS  # bag receive time lags the header stamp
FRAMES, WIDTH, HEIGHT = 40, 64, 48
MCAP_CLOSE = b'\x89MCAP0\r\n'  # an MCAP file's first and last bytes (its magic)
OP_CHUNK = 0x06
MASK_WIDTH, MASK_HEIGHT = 64, 16


def ramp_angle(index: int) -> float:
    return float(np.float32(-0.2 + 0.01 * index))


def latency_ms(index: int) -> float:
    return float(np.float32(5.0 + 0.1 * index))


def red_level(index: int) -> int:
    """Overlay content encodes the frame index in its red channel."""
    return 20 + 5 * index


def overlay_pixels(index: int) -> np.ndarray:
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:, :, 0], rgb[:, :, 1] = red_level(index), 90
    return rgb


def roi_mass(index: int) -> float:
    """The recorded ROI mass falls over the drive: below 0.5 from frame 20 on."""
    return 1.0 - index / FRAMES


def attention(index: int) -> object:
    """vbp/attention as vbp_node publishes it (the first frame has no change)."""
    values = [0.5, 0.7, 0.2, 1.0, roi_mass(index), math.nan if index == 0 else 0.25]
    dimension = TYPESTORE.types['std_msgs/msg/MultiArrayDimension'](
        label=','.join(ATTENTION_LABELS), size=6, stride=6)
    layout = TYPESTORE.types['std_msgs/msg/MultiArrayLayout'](dim=[dimension], data_offset=0)
    return TYPESTORE.types[FLOAT32_ARRAY](layout=layout, data=np.array(values, np.float32))


def image(stamp: int, encoding: str, pixels: np.ndarray, step: int | None = None) -> object:
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    header = TYPESTORE.types['std_msgs/msg/Header'](
        stamp=TYPESTORE.types['builtin_interfaces/msg/Time'](sec=stamp // 10**9,
                                                             nanosec=stamp % 10**9),
        frame_id='camera')
    return TYPESTORE.types[IMAGE](
        header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
        is_bigendian=0, step=rows.shape[1] if step is None else step, data=rows.reshape(-1))


def frame_messages(index: int, bad: bool) -> list[tuple[str, str, int, object]]:
    """What the node publishes for one camera frame: (topic suffix, type, receive time, msg)."""
    stamp = T0 + index * PERIOD
    received = stamp + RECEIVED
    mask = np.full((MASK_HEIGHT, MASK_WIDTH), index / FRAMES, np.float32)
    overlay = image(stamp, 'rgb8', overlay_pixels(index), step=WIDTH * 3 + 5 if bad else None)
    float32 = TYPESTORE.types[FLOAT32]
    return [('steering_angle', FLOAT32, received, float32(data=ramp_angle(index))),
            ('vbp/mask', IMAGE, received + 10_000, image(stamp, '32FC1', mask)),
            ('vbp/attention', FLOAT32_ARRAY, received + 15_000, attention(index)),
            ('vbp/overlay', IMAGE, received + 20_000, overlay),
            ('debug/processing_time_ms', FLOAT32, received + 30_000, float32(data=3.0)),
            ('debug/pipeline_latency_ms', FLOAT32, received + 40_000,
             float32(data=latency_ms(index)))]


def write_bag(path: Path, storage: StoragePlugin = StoragePlugin.MCAP,
              namespaces: tuple[str, ...] = ('',), bad: tuple[int, ...] = (),
              skip: tuple[str, ...] = (), chunk_every: int = 0, angle_every: int = 1) -> Path:
    """A bag of FRAMES frames per namespace; ``skip`` leaves topic suffixes out,
    ``chunk_every`` closes an MCAP chunk every so many frames (as the package's recorder does)
    and ``angle_every`` publishes the steering angle for every so many frames only."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for index in range(FRAMES):
            for namespace in namespaces:
                for suffix, msgtype, received, message in frame_messages(index, index in bad):
                    if suffix in skip or (suffix == 'steering_angle' and index % angle_every):
                        continue
                    topic = f'{namespace}/{suffix}'
                    if topic not in connections:
                        connections[topic] = writer.add_connection(topic, msgtype,
                                                                   typestore=TYPESTORE)
                    writer.write(connections[topic], received,
                                 TYPESTORE.serialize_cdr(message, msgtype))
            if chunk_every and index % chunk_every == chunk_every - 1:
                writer.storage.close_chunk()
    return path


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = review.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    capture.release()
    return frames


def corner_red(frame: np.ndarray) -> float:
    """Mean red of the bottom-left corner, where neither the text nor the indicator is drawn."""
    return float(frame[-12:, :12, 0].mean())


def sheet_band(columns: int, rows: int, paired: bool = True) -> int:
    """Height of the label band above each contact sheet overlay (WIDTH x HEIGHT, full size)."""
    labels = [f't={i * PERIOD / 1e9:.1f} s '
              + pictures.angle_text(ramp_angle(i) if paired else math.nan)
              for i in review.sheet_indices(FRAMES, columns * rows)]
    scale = pictures.fitting_scale(labels, WIDTH - 4, max(0.3, WIDTH / 600))
    return cv2.getTextSize('0', pictures.FONT, scale, 1)[0][1] + round(10 * scale) + 2


def sheet_shape(columns: int, rows: int, paired: bool = True,
                with_masks: bool = True) -> tuple[int, int]:
    """Contact sheet (height, width) for WIDTH x HEIGHT overlays at full size."""
    height = (sheet_band(columns, rows, paired) + HEIGHT + (MASK_HEIGHT if with_masks else 0)
              + pictures.SHEET_GAP)
    return rows * height, columns * (WIDTH + pictures.SHEET_GAP)


@pytest.fixture(scope='module')
def mcap_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bag(tmp_path_factory.mktemp('mcap') / 'drive')


@pytest.mark.slow
def test_mcap_bag_review(mcap_bag: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, mcap_bag)
    assert code == 0, err
    folder = mcap_bag.with_name('drive_review')
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['topics'] == {f'/{suffix}': FRAMES for role, (suffix, _)
                                 in sessions.TOPICS.items() if role != 'region'}
    assert summary['overlays_drawn_from'] is None
    assert (summary['overlays'], summary['masks'], summary['angles'],
            summary['overlays_with_angle']) == (FRAMES, FRAMES, FRAMES, FRAMES)
    assert summary['bad_frames_skipped'] == {'overlays': 0, 'masks': 0}
    assert summary['namespace'] == '/' and summary['frame_size'] == [WIDTH, HEIGHT]
    assert (summary['first_stamp_ns'], summary['last_stamp_ns']) == (
        T0, T0 + (FRAMES - 1) * PERIOD)
    assert summary['frame_rate_hz'] == pytest.approx(20.0)
    recorded = summary['attention']  # the timeline: attention.png, and these figures
    assert (recorded['messages'], recorded['without_attention']) == (FRAMES, 0)
    assert recorded['roi_mass']['max'] == pytest.approx(1.0)
    assert recorded['change'] == {'p50': 0.25, 'p99': 0.25, 'max': 0.25}
    assert recorded['share_roi_mass_below_0.5'] == pytest.approx(19 / FRAMES)
    assert cv2.imread(str(folder / summary['files']['attention'])).shape[:2] == (520, 800)
    assert summary['pair_tolerance_ms'] == pytest.approx(25.0)
    degrees = [math.degrees(ramp_angle(i)) for i in range(FRAMES)]
    assert summary['angle_deg'] == pytest.approx(
        {'min': degrees[0], 'max': degrees[-1], 'mean': float(np.mean(degrees))})
    latencies = [latency_ms(i) for i in range(FRAMES)]
    assert summary['pipeline_latency_ms'] == pytest.approx(
        {'p50': np.percentile(latencies, 50), 'p99': np.percentile(latencies, 99),
         'max': latencies[-1]})
    assert summary['files'] == {'video': 'overlays.mp4', 'plot': 'steering_angle.png',
                                'attention': 'attention.png',
                                'contact_sheet': 'contact_sheet.png', 'summary': 'summary.json'}
    frames = video_frames(folder / 'overlays.mp4')
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert [corner_red(f) for f in frames] == pytest.approx(
        [red_level(i) for i in range(FRAMES)], abs=8)
    sheet = cv2.imread(str(folder / 'contact_sheet.png'))[:, :, ::-1]
    assert sheet.shape[:2] == sheet_shape(4, 4)
    cell_h, cell_w, band = sheet.shape[0] // 4, WIDTH + pictures.SHEET_GAP, sheet_band(4, 4)
    for cell, index in enumerate(review.sheet_indices(FRAMES, 16)):
        top, left = cell // 4 * cell_h + band, cell % 4 * cell_w
        assert corner_red(sheet[top:top + HEIGHT, left:left + WIDTH]) == red_level(index)
        mask = sheet[top + HEIGHT:top + HEIGHT + MASK_HEIGHT, left:left + WIDTH]
        assert mask.mean() == pytest.approx(255 * index / FRAMES, abs=1)
    plot = cv2.imread(str(folder / 'steering_angle.png'))
    assert plot is not None and plot.shape[0] > plot.shape[1] / 2  # two subplots
    assert f'{FRAMES} overlays' in out and 'overlays.mp4' in out


def test_first_pass_reads_the_ramp_and_pairs_every_overlay(mcap_bag: Path) -> None:
    with open_bag(mcap_bag) as reader:
        namespace, topics = sessions.find_topics(reader.connections, None)
        index = sessions.index_session(reader, topics)
    assert namespace == ''
    angle = index.series['angle']
    np.testing.assert_array_equal(angle.values, [ramp_angle(i) for i in range(FRAMES)])
    nearest = pair_nearest(index.overlay_log_ns, angle.log_ns,
                           sessions.default_tolerance_ns(index.overlay_stamp_ns))
    np.testing.assert_array_equal(nearest, np.arange(FRAMES))


def test_pair_nearest_respects_the_tolerance() -> None:
    reference = np.array([100, 200, 400], np.int64)
    times = np.array([0, 100, 149, 151, 310, 389, 1000], np.int64)
    np.testing.assert_array_equal(pair_nearest(times, reference, 50),
                                  [-1, 0, 0, 1, -1, 2, -1])
    np.testing.assert_array_equal(pair_nearest(times, reference[:0], 50), [-1] * 7)


def test_topics_match_by_suffix_at_a_slash() -> None:
    assert sessions.topic_namespace('/car1/vbp/overlay', 'vbp/overlay') == '/car1'
    assert sessions.topic_namespace('/vbp/overlay', 'vbp/overlay') == ''
    assert sessions.topic_namespace('/my_steering_angle', 'steering_angle') is None
    assert sessions.normalise_namespace('car1/') == '/car1'
    assert sessions.normalise_namespace('/') == ''


def test_indicator_tilts_left_for_positive_angles() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)

    def green_columns(angle: float) -> np.ndarray:
        picture = pictures.annotate(frame, angle, 1.0, gain=10.0)
        return np.nonzero((picture[40:, :, 1] == 255) & (picture[40:, :, 0] == 0))[1]

    assert green_columns(0.05).mean() < 95 and green_columns(-0.05).mean() > 105
    assert not len(green_columns(math.nan))


@pytest.mark.slow
def test_sqlite_bag_with_namespaces_stride_and_unpaired_angles(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / 'two_cars', StoragePlugin.SQLITE3, namespaces=('/car1', '/car2'))
    code, _, err = run(capsys, bag)
    assert code == 2 and 'several namespaces' in err and '--namespace' in err
    assert run(capsys, bag, '--namespace', 'car3')[0] == 2
    out = tmp_path / 'review'
    code, _, err = run(capsys, bag, '--namespace', 'car2', '--stride', '3', '--out', out,
                       '--pair-tolerance-ms', '0.001', '--sheet-cols', '3', '--sheet-rows', '2')
    assert code == 0, err
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['namespace'] == '/car2' and summary['topics']['/car1/vbp/overlay'] == FRAMES
    assert summary['overlays'] == FRAMES and summary['overlays_with_angle'] == 0
    frames = video_frames(out / 'overlays.mp4')
    assert len(frames) == math.ceil(FRAMES / 3) == summary['video_frames']
    assert [corner_red(f) for f in frames] == pytest.approx(
        [red_level(i) for i in range(0, FRAMES, 3)], abs=8)
    assert cv2.imread(str(out / 'contact_sheet.png')).shape[:2] == sheet_shape(3, 2, False)


def test_gif_and_a_bag_without_masks_or_latency(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / 'bare', skip=('vbp/mask', 'debug/pipeline_latency_ms'),
                    angle_every=2)
    code, _, err = run(capsys, bag, '--gif', '--sheet-cols', '2', '--sheet-rows', '2')
    assert code == 0, err
    folder = tmp_path / 'bare_review'
    assert not (folder / 'overlays.mp4').exists()
    with Image.open(folder / 'overlays.gif') as gif:
        assert (gif.n_frames, gif.size) == (FRAMES, (WIDTH, HEIGHT))
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['masks'] == 0 and summary['pipeline_latency_ms'] is None
    assert summary['angles'] == summary['overlays_with_angle'] == FRAMES // 2
    assert summary['files']['video'] == 'overlays.gif'
    sheet = cv2.imread(str(folder / 'contact_sheet.png'))
    assert sheet.shape[0] % 2 == 0 and sheet.shape[1] == 2 * (WIDTH + pictures.SHEET_GAP)
    assert sheet.shape[0] // 2 > HEIGHT + pictures.SHEET_GAP + 8


def test_falls_back_to_gif_when_opencv_cannot_write_mp4(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedWriter:
        def __init__(self, *args: object) -> None:
            pass

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return False

    monkeypatch.setattr(review.cv2, 'VideoWriter', ClosedWriter)
    bag = write_bag(tmp_path / 'no_mp4', skip=('vbp/mask',))
    code, _, err = run(capsys, bag, '--stride', '10')
    assert code == 0 and 'cannot write overlays.mp4' in err
    with Image.open(tmp_path / 'no_mp4_review' / 'overlays.gif') as gif:
        assert gif.n_frames == FRAMES // 10


def test_bag_cut_short_is_reviewed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / 'killed', chunk_every=10)
    (bag / 'metadata.yaml').unlink()
    file = bag / 'killed.mcap'
    with file.open('r+b') as stream:
        stream.truncate(file.stat().st_size * 6 // 10)
    cut = file.read_bytes()
    code, _, err = run(capsys, bag)
    assert code == 0, err
    summary = json.loads((tmp_path / 'killed_review' / 'summary.json').read_text())
    assert 0 < summary['overlays'] < FRAMES and summary['overlays'] % 10 == 0
    assert summary['overlays_with_angle'] == summary['overlays']
    frames = video_frames(tmp_path / 'killed_review' / 'overlays.mp4')
    assert len(frames) == summary['overlays']
    assert file.read_bytes() == cut  # read, never repaired in place
    assert 'was not closed' in err and summary['unreadable_bytes_left_out'] > 0


def record_offsets(data: bytes, opcode: int) -> list[int]:
    """Where the records of one kind start in an MCAP file."""
    offsets, position = [], len(MCAP_CLOSE)
    while position + 9 <= len(data):
        kind, length = data[position], int.from_bytes(data[position + 1:position + 9], 'little')
        if kind == opcode:
            offsets.append(position)
        position += 9 + length
    return offsets


def test_a_corrupt_record_is_reported_and_the_bag_left_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A bag never closed with one corrupt record went from 58 MB to 23 MB in place, silently
    (exit 0); now the bag is unchanged and the review says what it had to leave out."""
    bag = write_bag(tmp_path / 'corrupt', chunk_every=5)
    (bag / 'metadata.yaml').unlink()
    file = bag / 'corrupt.mcap'
    data = bytearray(file.read_bytes())
    del data[-len(MCAP_CLOSE):]  # the recorder never closed it...
    chunk = record_offsets(data, OP_CHUNK)[3]  # ...and the fourth chunk's length is garbled
    data[chunk + 1:chunk + 9] = (2 ** 62).to_bytes(8, 'little')
    file.write_bytes(bytes(data))
    code, _, err = run(capsys, bag)
    assert code == 0, err
    assert file.read_bytes() == bytes(data)
    summary = json.loads((tmp_path / 'corrupt_review' / 'summary.json').read_text())
    left_out = summary['unreadable_bytes_left_out']
    assert code == 0 and left_out == len(data) - chunk
    assert f'{left_out} bytes' in err and 'the file itself is unchanged' in err


@pytest.mark.slow
def test_a_bag_on_read_only_media_is_reviewed(tmp_path: Path) -> None:
    """A killed bag on read-only media could not be reviewed at all (the repair wrote it)."""
    if shutil.which('unshare') is None or os.geteuid() != 0:
        pytest.skip('needs root and unshare for a read-only bind mount')
    bag = write_bag(tmp_path / 'media' / 'killed', chunk_every=10)
    (bag / 'metadata.yaml').unlink()
    with (bag / 'killed.mcap').open('r+b') as stream:
        stream.truncate(stream.seek(0, 2) * 6 // 10)
    media, out = tmp_path / 'media', tmp_path / 'review'
    result = subprocess.run(
        ['unshare', '-m', 'sh', '-ec', f'mount --bind {media} {media}\n'
         f'mount -o remount,bind,ro {media}\n'
         f'! touch {media}/probe 2>/dev/null\n'
         f'exec {sys.executable} -m vbp_ros.tools.review {bag} --out {out}'],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((out / 'summary.json').read_text())['overlays'] > 0


def test_bad_frames_are_counted_and_skipped(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / 'bad', bad=(5, 17))
    code, _, err = run(capsys, bag / 'bad.mcap')
    assert code == 0, err
    assert err.count('warning: skipped') == 2 and 'step' in err
    folder = bag / 'bad_review'  # beside the .mcap file, named after it
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['bad_frames_skipped'] == {'overlays': 2, 'masks': 0}
    assert summary['overlays'] == summary['overlays_with_angle'] == FRAMES - 2
    frames = video_frames(folder / 'overlays.mp4')
    kept = [i for i in range(FRAMES) if i not in (5, 17)]
    assert [corner_red(f) for f in frames] == pytest.approx([red_level(i) for i in kept], abs=8)


def test_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, tmp_path / 'nowhere')
    assert code == 2 and 'does not exist' in err and err.count('\n') == 1
    assert not (tmp_path / 'nowhere_review').exists()
    bag = write_bag(tmp_path / 'angles_only', skip=('vbp/overlay', 'vbp/mask'))
    code, _, err = run(capsys, bag)
    assert code == 2 and 'vbp/overlay' in err and '/steering_angle' in err
    assert 'Traceback' not in err and err.count('\n') == 1


@pytest.mark.slow
def test_existing_review_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_bag(tmp_path / 'again', skip=('vbp/mask',))
    out = tmp_path / 'out'
    assert run(capsys, bag, '--out', out)[0] == 0
    before = (out / 'summary.json').stat().st_mtime_ns
    code, _, err = run(capsys, bag, '--out', out)
    assert code == 2 and '--force' in err
    assert (out / 'summary.json').stat().st_mtime_ns == before
    assert run(capsys, bag, '--out', out, '--force', '--gif')[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        'attention.png', 'contact_sheet.png', 'overlays.gif', 'steering_angle.png',
        'summary.json']


# -- new bags: camera frames, masks and their region; the overlays are drawn here -----------

REGION = Crop(8, 0, 32, WIDTH)  # rows 8 to 39 of the 64x48 camera frame
ALPHA = DEFAULT_OVERLAY_ALPHA


def gray_level(index: int) -> int:
    """Camera frame content encodes the frame index in its gray level."""
    return 20 + 4 * index


def mask_level(index: int) -> float:
    return index / FRAMES


def drive_outputs(namespace: str = '/', overlays: bool = False) -> list[NodeOutput]:
    """vbp_node's outputs for FRAMES camera frames, 20 ms after each (a uniform mask)."""
    return [NodeOutput(T0 + i * PERIOD, T0 + i * PERIOD + 20 * MS,
                       np.full((MASK_HEIGHT, MASK_WIDTH), mask_level(i), np.float32),
                       ramp_angle(i), overlay_pixels(i) if overlays else None)
            for i in range(FRAMES)]


def camera(indices: range | list[int]) -> list[CameraFrame]:
    return [CameraFrame(T0 + i * PERIOD, T0 + i * PERIOD + 5 * MS,
                        np.full((HEIGHT, WIDTH), gray_level(i), np.uint8)) for i in indices]


def mono8_level(index: int) -> int:
    """The mask as the bag stores it."""
    return int(mask_to_mono8(np.float32([mask_level(index)]))[0])


def drawn_red_shift(index: int) -> int:
    """How far the red overlay moves a pixel inside the region."""
    return round(mono8_level(index) * ALPHA)


def test_a_new_bag_gets_its_overlays_drawn_from_camera_frames(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lost = 7  # the recorder lost this camera frame: its mask gets no overlay
    bag = write_camera_bag(tmp_path / 'drive', camera([i for i in range(FRAMES) if i != lost]),
                           outputs=drive_outputs(), mask_region=REGION)
    code, out, err = run(capsys, bag, '--sheet-cols', '8', '--sheet-rows', '5')
    assert code == 0, err
    folder = tmp_path / 'drive_review'
    summary = json.loads((folder / 'summary.json').read_text())
    kept = [i for i in range(FRAMES) if i != lost]
    assert summary['overlays_drawn_from'] == '/camera/image_raw'
    assert (summary['overlays'], summary['masks'], summary['camera_frames'],
            summary['masks_without_camera_frame']) == (FRAMES - 1, FRAMES, FRAMES - 1, 1)
    assert summary['overlays_with_angle'] == FRAMES - 1
    assert summary['frame_size'] == [WIDTH, HEIGHT]
    assert summary['bad_frames_skipped'] == {'camera_frames': 0, 'masks': 0, 'mask_regions': 0}
    assert 'overlays drawn from /camera/image_raw' in out and '1 masks have no camera' in err
    frames = video_frames(folder / 'overlays.mp4')
    assert len(frames) == FRAMES - 1 == summary['video_frames']
    inside = [float(f[20:30, :12, 0].mean()) for f in frames]  # in the region, left
    outside = [float(f[-6:, :12, 0].mean()) for f in frames]  # below it
    assert inside == pytest.approx([min(255, gray_level(i) + drawn_red_shift(i)) for i in kept],
                                   abs=8)
    assert outside == pytest.approx([gray_level(i) for i in kept], abs=8)
    # The contact sheet (lossless) shows every frame: the overlay exactly, its mask under it.
    sheet = cv2.imread(str(folder / 'contact_sheet.png'))[:, :, ::-1]
    labels = [f't={i * PERIOD / 1e9:.1f} s ' + pictures.angle_text(ramp_angle(i)) for i in kept]
    scale = pictures.fitting_scale(labels, WIDTH - 4, max(0.3, WIDTH / 600))
    band = cv2.getTextSize('0', pictures.FONT, scale, 1)[0][1] + round(10 * scale) + 2
    cell_h, cell_w = band + HEIGHT + MASK_HEIGHT + pictures.SHEET_GAP, WIDTH + pictures.SHEET_GAP
    for cell, index in enumerate(kept):
        top, left = cell // 8 * cell_h + band, cell % 8 * cell_w
        overlay = sheet[top:top + HEIGHT, left:left + WIDTH].astype(int)
        gray, shift = gray_level(index), drawn_red_shift(index)
        assert (overlay[:8] == gray).all() and (overlay[40:] == gray).all()
        assert (overlay[8:40, :, 0] == min(255, gray + shift)).all()
        assert (overlay[8:40, :, 1:] == max(0, gray - shift)).all()
        mask = sheet[top + HEIGHT:top + HEIGHT + MASK_HEIGHT, left:left + WIDTH]
        assert (mask == mono8_level(index)).all()


@pytest.mark.slow
def test_a_drive_of_nan_angles_gives_a_standard_json_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """summary.json held bare NaN (from a bag of NaN steering angles), which a browser's
    JSON.parse and jq refuse."""
    outputs = [replace(output, angle=math.nan) for output in drive_outputs()]
    bag = write_camera_bag(tmp_path / 'drive', camera(range(FRAMES)), outputs=outputs,
                           mask_region=REGION)
    code, _, err = run(capsys, bag)
    assert code == 0, err
    text = (tmp_path / 'drive_review' / 'summary.json').read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f'{name} in summary.json'))


@pytest.mark.parametrize('option, message', [
    (['--angle-gain', 'nan'], '--angle-gain: nan is not a finite number'),
    (['--pair-tolerance-ms', '-5'], '--pair-tolerance-ms: -5 is not a positive number'),
    (['--sheet-rows', '100000'], '--sheet-rows: 100000 is not an integer from 1 to 16')])
def test_settings_that_cannot_work_are_refused_before_anything_is_written(
        option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--angle-gain nan died after writing part of the video, --sheet-rows 100000 asked for
    67 GiB, --pair-tolerance-ms -5 paired nothing without a word."""
    bag = write_camera_bag(tmp_path / 'drive', camera(range(FRAMES)), outputs=drive_outputs(),
                           mask_region=REGION)
    with pytest.raises(SystemExit) as stop:
        run(capsys, bag, *option)
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'drive_review').exists()


def test_overlays_are_drawn_as_vbp_node_draws_them() -> None:
    """The review's overlay of a recorded camera frame, mask and region is the node's own."""
    engine = build_engine(None, device='cpu')
    for width, height in ((640, 480), (2560, 1920)):  # the second is shrunk to 1920 wide
        frame = cv2.resize(next(synthetic_frames(seed=1))[0], (width, height))
        result = engine.process(frame)
        region = engine.preprocess.region(frame.shape)
        node = draw_overlay(frame, 'rgb', region, result.mask, DEFAULT_OVERLAY_ALPHA,
                            DEFAULT_OVERLAY_WIDTH)  # as vbp_node's frame pipeline draws it
        drawn = pictures.overlay_in_region(frame, 'rgb', result.mask, region,
                                           DEFAULT_OVERLAY_ALPHA)
        np.testing.assert_array_equal(drawn, node)  # a 32FC1 mask
        mono8 = pictures.overlay_in_region(frame, 'rgb', mask_to_mono8(result.mask), region,
                                           DEFAULT_OVERLAY_ALPHA)
        assert np.abs(mono8.astype(int) - node).max() <= 1  # mono8 rounding


def test_recorded_overlays_are_taken_over_camera_frames(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """record_overlay: the bag holds both; the overlays are the node's, not drawn again."""
    bag = write_camera_bag(tmp_path / 'both', camera(range(FRAMES)),
                           outputs=drive_outputs(overlays=True), mask_region=REGION)
    code, _, err = run(capsys, bag)
    assert code == 0, err
    summary = json.loads((tmp_path / 'both_review' / 'summary.json').read_text())
    assert summary['overlays_drawn_from'] is None and summary['overlays'] == FRAMES
    frames = video_frames(tmp_path / 'both_review' / 'overlays.mp4')
    assert [corner_red(f) for f in frames] == pytest.approx(
        [red_level(i) for i in range(FRAMES)], abs=8)


def test_the_camera_in_the_sessions_namespace_is_taken(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A JPEG camera in the session's namespace, beside another camera."""
    bag = write_camera_bag(tmp_path / 'car1', camera(range(FRAMES)), topic='/car1/front/image',
                           compressed=True, outputs=drive_outputs(), mask_region=REGION,
                           node_namespace='car1')
    code, _, err = run(capsys, bag)
    assert code == 0, err
    summary = json.loads((tmp_path / 'car1_review' / 'summary.json').read_text())
    assert summary['namespace'] == '/car1' and summary['overlays'] == FRAMES
    assert summary['overlays_drawn_from'] == '/car1/front/image'
    with open_bag(bag) as reader:
        with pytest.raises(sessions.SessionError, match='no camera topic /rear'):
            sessions.find_topics(reader.connections, None, '/rear')
        with pytest.raises(sessions.SessionError, match='no camera topic /car1/vbp/mask'):
            sessions.find_topics(reader.connections, None, '/car1/vbp/mask')


@pytest.mark.parametrize('frames, region, expected', [
    (False, True, 'neither /vbp/overlay nor camera frames'),
    (True, False, 'no /vbp/mask_roi'),
])
def test_a_bag_without_overlays_or_what_draws_them_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, frames: bool, region: bool,
        expected: str) -> None:
    bag = write_camera_bag(tmp_path / 'bag', camera(range(FRAMES)) if frames else [],
                           outputs=drive_outputs(), mask_region=REGION if region else None)
    code, _, err = run(capsys, bag)
    assert code == 2 and expected in err, err
    assert 'Traceback' not in err and err.count('\n') == 1
    assert not (tmp_path / 'bag_review').exists()


def test_a_region_that_does_not_fit_the_camera_frame_skips_its_masks(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_camera_bag(tmp_path / 'bag', camera(range(FRAMES)), outputs=drive_outputs(),
                           mask_region=Crop(40, 0, 32, WIDTH))
    code, _, err = run(capsys, bag)
    assert code == 2 and 'does not fit the camera frame 64x48' in err
    assert 'Traceback' not in err
