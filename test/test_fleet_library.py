"""vbp-fleet's library without Ray: gallery ranking, bag discovery, frame reading (counts, skips,
pairing, segments) and the worker's rows against the engine (the attention statistics
themselves: test_attention.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from vbp_ros.models.checkpoint import ModelSpec
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from vbp_ros.data.camera_bags import CameraFrame, NodeOutput, SteeringSample, write_camera_bag
from vbp_ros.data.fleet.discovery import find_bags
from vbp_ros.data.fleet.reading import BagReadError, ReadOptions, choose_camera, read_segments
from vbp_ros.explain.attention import STATISTICS, AttentionStatistics
from vbp_ros.models.loading import load_model
from vbp_ros.fleet.masks import top_rows
from vbp_ros.fleet.worker import SegmentWorker
from vbp_ros.data.fleet.results import ResultStore
from vbp_ros.render.report import write_thumbnail
from vbp_ros.tools.fleet import PLOT, BagWriter, main as fleet_main
from vbp_ros.data.sources import synthetic_frames
from vbp_ros.engine.engine import VBPEngine
from vbp_ros.pixels.frames import Crop

MS = 1_000_000
T0 = 1_600_000_000 * 1000 * MS
SPEC = ModelSpec('authors', 1, 20, 64, crop=(8, 0, 40, 64))  # a small camera: 64x48 frames


# -- gallery ----------------------------------------------------------------------------------

def test_top_rows_takes_the_largest_finite_scores_first() -> None:
    scores = np.array([0.1, np.nan, 0.9, 0.5, 0.9])
    assert top_rows(scores, 3).tolist() == [2, 4, 3]


# -- discovery ---------------------------------------------------------------------------------

def test_discovery_finds_each_bag_once(tmp_path: Path) -> None:
    bag2 = tmp_path / 'fleet' / 'car1' / 'run1'
    bag2.mkdir(parents=True)
    (bag2 / 'metadata.yaml').write_text('x')
    (bag2 / 'run1_0.mcap').write_bytes(b'')  # part of run1, not a bag of its own
    killed = tmp_path / 'fleet' / 'car2' / 'killed'
    killed.mkdir(parents=True)
    (killed / 'killed_0.mcap').write_bytes(b'')  # no metadata.yaml: the file is the bag
    (tmp_path / 'fleet' / 'old.bag').write_bytes(b'')
    (tmp_path / 'fleet' / 'notes.txt').write_text('')
    single = tmp_path / 'single.db3'
    single.write_bytes(b'')
    found = find_bags([tmp_path / 'fleet', single, bag2, tmp_path / 'nope'])
    assert found.bags == sorted([bag2, killed / 'killed_0.mcap', tmp_path / 'fleet' / 'old.bag',
                                 single])
    assert found.missing == [str(tmp_path / 'nope')]


# -- reading -------------------------------------------------------------------------------------

def camera_frames(count: int, period_ms: int = 50) -> list[CameraFrame]:
    rng = np.random.default_rng(3)
    return [CameraFrame(T0 + i * period_ms * MS, T0 + i * period_ms * MS + 7 * MS,
                        rng.integers(0, 255, (48, 64), np.uint8)) for i in range(count)]


def test_every_message_is_a_row_a_skip_or_subsampled(tmp_path: Path) -> None:
    frames = camera_frames(11)
    frames[4] = CameraFrame(frames[4].stamp_ns, frames[4].log_ns, frames[4].pixels,
                            payload=b'\xff\xd8 broken')
    bag = write_camera_bag(tmp_path / 'bag', frames, compressed=True, storage='sqlite3')
    segments = list(read_segments(bag, SPEC, ReadOptions(every=2, segment_inputs=3)))
    info = segments[-1].info
    index = np.concatenate([s.index for s in segments])
    assert index.tolist() == [0, 2, 6, 8, 10]  # message 4 is skipped, odd ones subsampled
    assert (info.messages, info.frames, info.subsampled) == (11, 5, 5)
    assert info.skipped == {'truncated JPEG (no end-of-image marker)': 1}
    assert all(s.info is None for s in segments[:-1]) and info.segments == len(segments)
    # segment 2 onwards carries the frame before it, for the mask change
    assert segments[0].context is None
    for before, after in zip(segments, segments[1:]):
        if after.frames:
            np.testing.assert_array_equal(after.context, before.planes[-1])
    stamps = np.concatenate([s.stamp_ns for s in segments])
    assert stamps.tolist() == [frames[i].stamp_ns for i in index]


def test_a_bag_directory_named_like_a_file_is_read_as_a_directory(tmp_path: Path) -> None:
    """A rosbag2 folder called drive.mcap failed with 'IsADirectoryError'."""
    bag = write_camera_bag(tmp_path / 'drive.mcap', camera_frames(3))
    assert bag.is_dir() and find_bags([tmp_path]).bags == [bag]
    info = list(read_segments(bag, SPEC, ReadOptions()))[-1].info
    assert (info.messages, info.frames) == (3, 3)


@pytest.mark.parametrize('kind', ['report', 'float32', 'float64'])
def test_recorded_steering_pairs_with_the_nearest_sample(tmp_path: Path, kind: str) -> None:
    frames = camera_frames(6)
    samples = [SteeringSample(T0 + t * MS, T0 + t * MS + 7 * MS, 0.01 * t)
               for t in range(0, 300, 40) if not 90 < t < 190]  # nothing near 150 ms
    topic = '/vehicle/steering_report' if kind == 'report' else '/steer'
    ros1 = kind == 'report'
    bag = write_camera_bag(tmp_path / ('bag.bag' if ros1 else 'bag'), frames,
                           storage='ros1' if ros1 else 'mcap', steering=samples,
                           steering_kind=kind, steering_topic=topic)
    options = ReadOptions(steering_topic=None if kind == 'report' else topic,
                          steering_tolerance_ns=20 * MS, segment_inputs=64)
    (segment,) = read_segments(bag, SPEC, options)
    # frames at 0, 50, 100, 150, 200, 250 ms; samples at 0, 40, 80, 200, 240, 280 ms
    expected = [0.0, 0.4, 0.8, np.nan, 2.0, 2.4]
    np.testing.assert_allclose(segment.recorded, expected, rtol=1e-6)
    assert segment.info.steering_topic == topic


def test_a_bag_without_the_camera_topic_is_an_error(tmp_path: Path) -> None:
    bag = write_camera_bag(tmp_path / 'bag', camera_frames(2), topic='/front')
    with pytest.raises(BagReadError, match='camera topics: /front'):
        list(read_segments(bag, SPEC, ReadOptions(topic='/rear')))


def test_the_busiest_image_topic_is_the_camera() -> None:
    def connection(topic: str, msgtype: str, count: int) -> SimpleNamespace:
        return SimpleNamespace(topic=topic, msgtype=msgtype, msgcount=count)

    connections = [connection('/thumb', 'sensor_msgs/msg/Image', 5),
                   connection('/front/compressed', 'sensor_msgs/msg/CompressedImage', 30),
                   connection('/steering', 'std_msgs/msg/Float32', 90)]
    assert [c.topic for c in choose_camera(connections, None)] == ['/front/compressed']
    with pytest.raises(BagReadError, match='no camera frames: no sensor_msgs/Image'):
        choose_camera(connections[2:], None)


def test_vbp_nodes_pictures_are_never_the_camera() -> None:
    """A drive's bag without camera frames used to be analysed on /vbp/mask: masks of masks."""
    def connection(topic: str, count: int) -> SimpleNamespace:
        return SimpleNamespace(topic=topic, msgtype='sensor_msgs/msg/Image', msgcount=count)

    outputs = [connection('/vbp/mask', 600), connection('/car1/vbp/overlay', 600),
               connection('/front/vbp/mask', 600)]
    camera = connection('/camera/image_raw', 10)
    assert choose_camera([*outputs, camera], None) == [camera]
    with pytest.raises(BagReadError, match=r'no camera frames: .* besides vbp_node\'s own '
                       r'pictures \(/car1/vbp/overlay, /front/vbp/mask, /vbp/mask\)'):
        choose_camera(outputs, None)
    with pytest.raises(BagReadError, match='/vbp/mask holds vbp_node\'s pictures'):
        choose_camera([*outputs, camera], '/vbp/mask')


def drive_outputs(count: int) -> list[NodeOutput]:
    return [NodeOutput(T0 + i * 50 * MS, T0 + i * 50 * MS + 20 * MS,
                       np.full((20, 64), 0.5, np.float32), 0.1) for i in range(count)]


def test_a_drives_bag_is_read_on_its_camera(tmp_path: Path) -> None:
    bag = write_camera_bag(tmp_path / 'drive', camera_frames(5), outputs=drive_outputs(5),
                           mask_region=Crop(8, 0, 40, 64))
    segments = list(read_segments(bag, SPEC, ReadOptions()))
    info = segments[-1].info
    assert (info.topic, info.messages, info.frames) == ('/camera/image_raw', 5, 5)


def test_a_bag_without_camera_frames_says_so(tmp_path: Path) -> None:
    old_drive = write_camera_bag(tmp_path / 'old_drive', [], outputs=drive_outputs(5))
    with pytest.raises(BagReadError, match='no camera frames: .* own pictures \\(/vbp/mask\\)'):
        list(read_segments(old_drive, SPEC, ReadOptions()))
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / 'silent', version=9) as writer:  # a camera topic, no message
        writer.add_connection('/camera/image_raw', 'sensor_msgs/msg/Image', typestore=typestore)
    with pytest.raises(BagReadError, match='no camera frames: /camera/image_raw holds no '
                       'messages'):
        list(read_segments(tmp_path / 'silent', SPEC, ReadOptions()))


# -- the worker against the engine ---------------------------------------------------------------

def road_frames(count: int) -> list[CameraFrame]:
    """A synthetic drive at 20 Hz (mono8 640x480), as the bundled model was trained on."""
    drive = synthetic_frames(seed=4, drive_rate_hz=20.0)
    return [CameraFrame(T0 + i * 50 * MS, T0 + i * 50 * MS + 7 * MS, next(drive)[0])
            for i in range(count)]


@pytest.fixture(scope='module')
def bundled() -> tuple[torch.nn.Module, ModelSpec]:
    return load_model(None)


def test_worker_rows_equal_the_engine_frame_by_frame(tmp_path: Path, bundled) -> None:
    network, spec = bundled
    frames = road_frames(7)
    bag = write_camera_bag(tmp_path / 'bag', frames)
    worker = SegmentWorker(VBPEngine(network, spec, device='cpu', max_batch=2), gallery=2)
    results = [worker.process(s) for s in read_segments(bag, spec, ReadOptions(
        segment_inputs=4))]
    reference = VBPEngine(network, spec, device='cpu')
    expected = [reference.process(frame.pixels) for frame in frames]
    angles = np.concatenate([r.rows['angle'] for r in results])
    np.testing.assert_allclose(angles, [e.angle for e in expected], rtol=1e-5, atol=1e-7)
    masks = np.stack([e.mask for e in expected])
    stats = AttentionStatistics(masks.shape[1:], Crop(230, 0, 250, 640), (480, 640)).table(masks)
    for name in STATISTICS:
        got = np.concatenate([r.rows[name] for r in results])
        if name == 'change':
            assert np.isnan(got[0])  # the bag's first frame; the others across segments too
            np.testing.assert_allclose(got[1:], stats[name][1:], rtol=1e-4, atol=1e-6)
        elif name != 'above_horizon':  # no horizon given: NaN
            np.testing.assert_allclose(got, stats[name], rtol=1e-5, atol=1e-7, err_msg=name)
    candidates = [c for r in results for c in r.candidates]
    assert {c.category for c in candidates} == {'off_road', 'jump'}  # no steering: no error
    assert all(c.overlay.shape == (125, 640, 3) and c.overlay.dtype == np.uint8
               for c in candidates)


def test_the_roi_mass_is_taken_in_the_region_of_interest_given(
        tmp_path: Path, bundled) -> None:
    """--attention-roi reaches the rows: the left half of the frame, then the right half,
    share the mass between them."""
    network, spec = bundled
    frames = road_frames(3)
    bag = write_camera_bag(tmp_path / 'bag', frames)
    worker = SegmentWorker(VBPEngine(network, spec, device='cpu'), gallery=1)
    halves = {'left': (0.0, 0.0, 0.5, 0.0, 0.5, 1.0, 0.0, 1.0),
              'right': (0.5, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5, 1.0)}
    masses = {side: np.concatenate([worker.process(s).rows['roi_mass'] for s in read_segments(
        bag, spec, ReadOptions(roi=roi))]) for side, roi in halves.items()}
    np.testing.assert_allclose(masses['left'] + masses['right'], 1.0, rtol=1e-5)
    assert 0.0 < masses['left'].min() and 0.0 < masses['right'].min()
    default = np.concatenate([worker.process(s).rows['roi_mass']
                              for s in read_segments(bag, spec, ReadOptions())])
    assert not np.allclose(default, masses['left'])


def test_a_bag_redone_with_another_model_replaces_its_pictures(tmp_path: Path, bundled) -> None:
    """--resume with other settings redoes a bag: its gallery thumbnails and angle plot are the
    new model's, not those the earlier run left under the same names."""
    network, spec = bundled
    other = copy.deepcopy(network)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(1.0 + 0.3 * torch.randn_like(parameter))
    bag = str(write_camera_bag(tmp_path / 'bag', road_frames(6)))
    out, plots = tmp_path / 'out', []
    for model, settings in ((network, 'first'), (other, 'second')):
        results = [SegmentWorker(VBPEngine(model, spec, device='cpu'), gallery=2).process(s)
                   for s in read_segments(bag, spec, ReadOptions())]
        store = ResultStore(out, settings)
        store.prepare(resume=True)
        sidecar = BagWriter(store, 2, SimpleNamespace()).store_bag(bag, results)
        plots.append((out / 'report_files').glob(f'*/{PLOT}').__next__().read_bytes())
    overlays = {c.index: c.overlay for r in results for c in r.candidates}
    for item in sidecar['gallery']:
        expected = tmp_path / 'expected.jpg'
        write_thumbnail(expected, overlays[item['index']])
        assert (out / item['image']).read_bytes() == expected.read_bytes(), item
    assert plots[0] != plots[1]


@pytest.mark.parametrize('roi, problem', [(['0.1', '0.2', '0.3'], 'at least 3 x, y pairs'),
                                          (['0', '0', '1', '0', '1', '1.5'], 'must lie in')])
def test_a_wrong_attention_roi_is_refused_before_anything_starts(
        roi: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        fleet_main([str(tmp_path), '--out', str(tmp_path / 'out'), '--attention-roi', *roi])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert '--attention-roi: the region of interest' in error and problem in error
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('device, problem', [('gpu', "unknown device 'gpu'"),
                                             ('cuda', 'CUDA is not available')])
def test_a_device_that_is_not_here_is_refused_before_ray_starts(
        device: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A local run's actors would wait for a GPU forever (Ray: 'No available node types can
    fulfill resource request')."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert fleet_main([str(tmp_path), '--out', str(tmp_path / 'out'), '--device', device]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_inputs_without_a_bag_are_refused_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / 'empty').mkdir()
    for inputs, named in (([tmp_path / 'empty'], 'no bags in'),
                          ([tmp_path / 'absent'], 'absent: neither a bag nor a folder')):
        assert fleet_main([*map(str, inputs), '--out', str(tmp_path / 'out')]) == 2
        assert named in capsys.readouterr().err
        assert not (tmp_path / 'out').exists()


def test_planes_through_the_engine_equal_whole_frames(bundled) -> None:
    network, spec = bundled
    engine = VBPEngine(network, spec, device='cpu', max_batch=3)
    rgb = np.random.default_rng(5).integers(0, 255, (3, 480, 640, 3), np.uint8)
    direct = engine.process_batch(list(rgb), orders=['bgr'] * 3)
    planes = [engine.preprocess.planes(frame, 'bgr') for frame in rgb]
    prepared = engine.process_planes(planes)
    for a, b in zip(direct, prepared):
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.angle == b.angle
    with pytest.raises(ValueError, match='do not fit'):
        engine.process_planes([cv2.resize(planes[0][0], (32, 10))[None]])


def test_the_off_road_gallery_holds_the_frames_most_outside_the_region_of_interest(
        tmp_path: Path, bundled) -> None:
    """'Mask off the road' is what vbp_node's attention alarm watches: the frames with the
    smallest ROI mass, largest share outside first, whichever region is given."""
    network, spec = bundled
    bag = write_camera_bag(tmp_path / 'bag', road_frames(6))
    worker = SegmentWorker(VBPEngine(network, spec, device='cpu'), gallery=2)
    halves = ((0.0, 0.0, 0.5, 0.0, 0.5, 1.0, 0.0, 1.0),  # the left half of the frame
              (0.5, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5, 1.0))  # the right half
    for roi in halves:
        [result] = [worker.process(s) for s in read_segments(bag, spec, ReadOptions(roi=roi))]
        off_road = [c for c in result.candidates if c.category == 'off_road']
        roi_mass = result.rows['roi_mass']
        assert [c.index for c in off_road] == list(np.argsort(roi_mass)[:2])
        np.testing.assert_allclose([c.score for c in off_road],
                                   1.0 - np.sort(roi_mass)[:2], rtol=1e-6)
