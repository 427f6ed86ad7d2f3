"""Udacity-layout bags to a training set: small bags written here with rosbags' writers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from vbp_ros.data.udacity import (COMPRESSED_IMAGE_TOPIC, IMAGE_TOPIC, STEERING_REPORT_TYPE,
                                  STEERING_TOPIC, IngestError, SteeringTrack, image_to_gray,
                                  ingest_bags, load_training_set, message_decoder,
                                  read_steering, udacity_typestore, write_training_set)
from vbp_ros.models.checkpoint import read_spec
from vbp_ros.models.preprocess import Preprocessor
from vbp_ros.tools import ingest, train

MS = 1_000_000
T0 = 1_500_000_000 * 1000 * MS  # header stamps, ns
WIDTH, HEIGHT = 640, 480
CROP = (230, 0, 250, 640)
SIZE = (640, 125)
IMAGE_TIMES_MS = [50 * i for i in range(20)]  # 20 Hz
GAP_MS = (600, 900)  # no steering reports in here
REPORT_TIMES_MS = [20 * j + 3 for j in range(50) if not GAP_MS[0] <= 20 * j + 3 < GAP_MS[1]]
CORRUPT_IMAGE = 12  # at 600 ms: paired, fast, but its data is truncated
ENCODINGS = ['rgb8', 'bgr8', 'mono8', 'bayer_rggb8']
RECORD_DELAY = 5 * MS  # bag record time lags the header stamp


def report_angle(time_ms: int) -> float:
    return float(np.float32(0.001 * time_ms - 0.3))


def report_speed(time_ms: int) -> float:
    return 3.0 if time_ms < 200 else 10.0 + 0.01 * time_ms


def colour_frame(index: int) -> np.ndarray:
    """A frame-specific RGB image: noise plus ``index + 1`` bright vertical stripes."""
    rgb = np.random.default_rng(index).integers(0, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    for stripe in range(index + 1):
        rgb[:, 20 * stripe:20 * stripe + 8] = 255
    return rgb


def bayer_rggb(rgb: np.ndarray) -> np.ndarray:
    """The RGGB mosaic a camera would record for an RGB scene."""
    mosaic = rgb[:, :, 1].copy()
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return mosaic


def encoded(index: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Encoding, Image rows (bgr8 padded by 8 bytes a row) and the full-frame gray reference."""
    rgb = colour_frame(index)
    encoding = ENCODINGS[index % len(ENCODINGS)]
    if encoding == 'rgb8':
        return encoding, rgb.reshape(HEIGHT, -1), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding == 'bgr8':
        rows = np.hstack([rgb[:, :, ::-1].reshape(HEIGHT, -1), np.zeros((HEIGHT, 8), np.uint8)])
        return encoding, rows, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding == 'mono8':
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return encoding, gray, gray
    mosaic = bayer_rggb(rgb)
    return encoding, mosaic, cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2GRAY)


def network_input(gray: np.ndarray, crop: tuple[int, int, int, int] = CROP) -> np.ndarray:
    top, left, height, width = crop
    return cv2.resize(gray[top:top + height, left:left + width], SIZE,
                      interpolation=cv2.INTER_AREA)


def header(typestore: Typestore, stamp: int, ros1: bool) -> Any:
    time = typestore.types['builtin_interfaces/msg/Time'](sec=stamp // 10**9,
                                                          nanosec=stamp % 10**9)
    fields = {'seq': 0} if ros1 else {}
    return typestore.types['std_msgs/msg/Header'](stamp=time, frame_id='', **fields)


def steering_report(typestore: Typestore, time_ms: int, ros1: bool) -> Any:
    flags = dict.fromkeys(['enabled', 'override', 'driver', 'timeout', 'fault_wheel_sensor',
                           'fault_bus1', 'fault_bus2', 'fault_calibration', 'fault_connector'],
                          False)
    return typestore.types[STEERING_REPORT_TYPE](
        header=header(typestore, T0 + time_ms * MS, ros1),
        steering_wheel_angle=report_angle(time_ms), steering_wheel_angle_cmd=0.0,
        steering_wheel_torque=0.0, speed=report_speed(time_ms), **flags)


def raw_image(typestore: Typestore, index: int) -> Any:
    encoding, rows, _ = encoded(index)
    data = rows.reshape(-1)
    if index == CORRUPT_IMAGE:
        data = data[:1000]
    return typestore.types['sensor_msgs/msg/Image'](
        header=header(typestore, T0 + IMAGE_TIMES_MS[index] * MS, True), height=HEIGHT,
        width=WIDTH, encoding=encoding, is_bigendian=0, step=rows.shape[1], data=data)


def write_ros1(path: Path, with_images: bool = True, with_steering: bool = True) -> Path:
    typestore = udacity_typestore(ros1=True)
    records = []
    if with_images:
        records += [(IMAGE_TOPIC, 'sensor_msgs/msg/Image', T0 + t * MS + RECORD_DELAY,
                     raw_image(typestore, i)) for i, t in enumerate(IMAGE_TIMES_MS)]
    if with_steering:
        records += [(STEERING_TOPIC, STEERING_REPORT_TYPE, T0 + t * MS + RECORD_DELAY,
                     steering_report(typestore, t, True)) for t in REPORT_TIMES_MS]
    with Writer1(path) as writer:
        topics = {topic: msgtype for topic, msgtype, _, _ in records}
        connections = {topic: writer.add_connection(topic, msgtype, typestore=typestore)
                       for topic, msgtype in topics.items()}
        for topic, msgtype, time, message in sorted(records, key=lambda r: r[2]):
            writer.write(connections[topic], time, typestore.serialize_ros1(message, msgtype))
    return path


def jpeg(index: int) -> bytes:
    ok, data = cv2.imencode('.jpg', colour_frame(index)[:, :, ::-1])
    assert ok
    return data.tobytes()


def write_ros2_compressed(path: Path) -> Path:
    """ROS 2 MCAP bag: JPEG images (one corrupt) and steering reports."""
    typestore = udacity_typestore(ros1=False)
    compressed = typestore.types['sensor_msgs/msg/CompressedImage']
    with Writer2(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection(COMPRESSED_IMAGE_TOPIC, compressed.__msgtype__,
                                       typestore=typestore)
        steering = writer.add_connection(STEERING_TOPIC, STEERING_REPORT_TYPE,
                                         typestore=typestore)
        for time_ms in REPORT_TIMES_MS:
            message = steering_report(typestore, time_ms, False)
            writer.write(steering, T0 + time_ms * MS,
                         typestore.serialize_cdr(message, STEERING_REPORT_TYPE))
        for index, time_ms in enumerate(IMAGE_TIMES_MS):
            data = b'\xff\xd8 not a jpeg' if index == CORRUPT_IMAGE else jpeg(index)
            message = compressed(header=header(typestore, T0 + time_ms * MS, False),
                                 format='jpeg', data=np.frombuffer(data, np.uint8))
            writer.write(images, T0 + time_ms * MS,
                         typestore.serialize_cdr(message, compressed.__msgtype__))
    return path


def nearest_report_ms(time_ms: int) -> int:
    return min(REPORT_TIMES_MS, key=lambda t: (abs(t - time_ms), t))


def expected_kept() -> list[int]:
    """Image indices that survive the gap, speed and decoding filters (brute force)."""
    return [i for i, t in enumerate(IMAGE_TIMES_MS)
            if abs(nearest_report_ms(t) - t) <= 100 and report_speed(nearest_report_ms(t)) > 5
            and i != CORRUPT_IMAGE]


@pytest.fixture(scope='module')
def ros1_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ros1(tmp_path_factory.mktemp('ros1') / 'udacity.bag')


@pytest.fixture(scope='module')
def ros2_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ros2_compressed(tmp_path_factory.mktemp('ros2') / 'udacity')


def test_rggb_pure_red_mosaic_decodes_to_red() -> None:
    """ROS bayer_rggb8 is OpenCV's BayerBG: a red scene stays red, gray is 0.299 x red."""
    mosaic = bayer_rggb(np.dstack([np.full((8, 8), 200, np.uint8)] + [np.zeros((8, 8), np.uint8)]
                                  * 2))
    assert (cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB)[2:6, 2:6] == (200, 0, 0)).all()
    message = SimpleNamespace(encoding='bayer_rggb8', height=8, width=8, step=8, is_bigendian=0,
                              data=mosaic.reshape(-1))
    assert (image_to_gray(message)[2:6, 2:6] == round(0.299 * 200)).all()


def test_nearest_report_is_vectorised_and_picks_the_closer_neighbour() -> None:
    track = SteeringTrack(np.array([100, 200, 400], np.int64), np.zeros(3, np.float32),
                          np.zeros(3, np.float32))
    index, gap = track.nearest(np.array([0, 100, 149, 151, 310, 1000]))
    np.testing.assert_array_equal(index, [0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(gap, [100, 0, 49, 49, 90, 600])


def test_ros1_bag_counts_pairs_and_frames(ros1_bag: Path) -> None:
    result = ingest_bags([ros1_bag], crop=CROP, size=SIZE)
    assert result.meta['counts'] == {'read': 20, 'no_report': 3, 'slow': 4, 'undecodable': 1,
                                     'kept': 12, 'paired': 17}
    kept = expected_kept()
    assert len(kept) == 12
    assert result.frames.shape == (12, 125, 640) and result.frames.dtype == np.uint8
    assert result.angles.dtype == np.float32 and result.speeds.dtype == np.float32
    assert result.stamps.dtype == np.int64 and (np.diff(result.stamps) > 0).all()
    np.testing.assert_array_equal(result.stamps, [T0 + IMAGE_TIMES_MS[i] * MS for i in kept])
    for row, index in enumerate(kept):
        report_ms = nearest_report_ms(IMAGE_TIMES_MS[index])
        assert result.angles[row] == np.float32(report_angle(report_ms))
        assert result.speeds[row] == np.float32(report_speed(report_ms))
        # Bayer frames are demosaiced to colour first: two gray levels of rounding either way
        np.testing.assert_allclose(result.frames[row], network_input(encoded(index)[2]), atol=2)
    assert result.meta['image_topics'] == [IMAGE_TOPIC]
    assert result.meta['crop'] == list(CROP) and result.meta['size'] == list(SIZE)


def test_filters_follow_their_parameters(ros1_bag: Path) -> None:
    loose = ingest_bags([ros1_bag], crop=CROP, min_speed=0.0, max_gap_s=0.2)
    assert loose.meta['counts']['no_report'] == 0 and loose.meta['counts']['slow'] == 0
    assert loose.meta['counts']['kept'] == 19


def test_other_crop_and_size(ros1_bag: Path) -> None:
    crop, size = (100, 40, 200, 400), (200, 50)
    result = ingest_bags([ros1_bag], crop=crop, size=size)
    index = expected_kept()[0]
    top, left, height, width = crop
    expected = cv2.resize(encoded(index)[2][top:top + height, left:left + width], size,
                          interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(result.frames[0], expected, atol=2)


def test_crop_must_fit_the_images(ros1_bag: Path) -> None:
    with pytest.raises(IngestError, match='does not fit the 640x480'):
        ingest_bags([ros1_bag], crop=(300, 0, 250, 640))


def test_training_set_round_trip(ros1_bag: Path, tmp_path: Path) -> None:
    result = ingest_bags([ros1_bag], crop=CROP)
    loaded = load_training_set(write_training_set(result, tmp_path / 'set.npz'))
    for name in ('frames', 'angles', 'stamps', 'speeds'):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
        assert getattr(loaded, name).dtype == getattr(result, name).dtype
    assert loaded.meta == result.meta
    assert loaded.meta['sources'] == [str(ros1_bag)] and loaded.meta['min_speed'] == 5.0


def test_ros2_mcap_bag_with_compressed_jpeg(ros2_bag: Path) -> None:
    result = ingest_bags([ros2_bag], crop=CROP)
    assert result.meta['counts']['undecodable'] == 1 and result.meta['counts']['kept'] == 12
    assert result.meta['image_topics'] == [COMPRESSED_IMAGE_TOPIC]
    for row, index in enumerate(expected_kept()):
        gray = cv2.imdecode(np.frombuffer(jpeg(index), np.uint8), cv2.IMREAD_GRAYSCALE)
        # decoded to colour, then gray (as vbp_node does): libjpeg's own gray path differs by
        # chroma upsampling rounding, a few levels at saturated edges
        difference = np.abs(result.frames[row].astype(int) - network_input(gray))
        assert difference.max() <= 8 and difference.mean() < 0.5
        assert result.angles[row] == np.float32(report_angle(
            nearest_report_ms(IMAGE_TIMES_MS[index])))


@pytest.mark.parametrize('bag', ['ros1_bag', 'ros2_bag'])
def test_steering_reports_decode_without_embedded_definitions(
        bag: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(bag)
    with AnyReader([path]) as reader:
        reader.typestore = get_typestore(Stores.EMPTY)  # as if the bag carried no definitions
        fallback = udacity_typestore(ros1=not reader.is2)
        track = read_steering(reader, message_decoder(reader, fallback))
    np.testing.assert_array_equal(track.stamps, [T0 + t * MS for t in REPORT_TIMES_MS])
    np.testing.assert_array_equal(track.angles, [report_angle(t) for t in REPORT_TIMES_MS])


def test_cli_end_to_end(ros1_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'data' / 'train.npz'
    assert ingest.main([str(ros1_bag), '--out', str(out), '--crop', '230,0,250,640',
                        '--size', '640x125', '--min-speed', '5', '--max-gap', '0.1']) == 0
    printed = capsys.readouterr().out
    assert 'read 20' in printed and 'kept 12' in printed and 'undecodable 1' in printed
    loaded = load_training_set(out)
    np.testing.assert_array_equal(loaded.frames, ingest_bags([ros1_bag], crop=CROP).frames)


@pytest.mark.slow
def test_a_network_trained_on_an_ingested_set_gets_its_crop_in_its_card(
        ros1_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """vbp-ingest's crop and camera go into the card of what vbp-train trains on the set, so
    that vbp_node feeds the network the very frames it was trained on (the card used to state
    the synthetic roads' crop, whatever the set was cut with)."""
    data, out = tmp_path / 'set.npz', tmp_path / 'run'
    assert ingest.main([str(ros1_bag), '--out', str(data), '--crop', '200,40,250,600']) == 0
    assert train.main(['--data', str(data), '--out', str(out), '--epochs', '1',
                       '--batch-size', '4', '--quiet']) == 0
    spec = read_spec(out / 'model.safetensors')
    assert spec.crop == (200, 40, 250, 600) and spec.camera_size == (WIDTH, HEIGHT)
    assert spec.description.startswith('trained by vbp-train on set.npz (vbp-ingest: ')
    kept = expected_kept()
    mono = next(index for index in kept if ENCODINGS[index % len(ENCODINGS)] == 'mono8')
    camera_frame = encoded(mono)[2]
    np.testing.assert_array_equal(Preprocessor(spec).planes(camera_frame)[0],
                                  load_training_set(data).frames[kept.index(mono)])
    assert train.main(['--data', str(data), '--out', str(tmp_path / 'rgb'),
                       '--architecture', 'pilotnet', '--quiet']) == 1
    assert ('holds gray frames (vbp-ingest); --architecture pilotnet takes 3 channels: train '
            'authors or netsvf on it') in capsys.readouterr().err


@pytest.mark.parametrize('kind, message', [
    ('no_steering', 'no steering topic /vehicle/steering_report'),
    ('no_images', 'no image topic /center_camera/image_color'),
    ('missing', 'bag not found'),
    ('folder', 'unreadable bag: '),  # a folder without metadata.yaml: a traceback before
])
def test_cli_errors(kind: str, message: str, tmp_path: Path,
                    capsys: pytest.CaptureFixture) -> None:
    bag = tmp_path / f'{kind}.bag'
    if kind == 'folder':
        bag = tmp_path / 'empty'
        bag.mkdir()
    elif kind != 'missing':
        write_ros1(bag, with_images=kind != 'no_images', with_steering=kind != 'no_steering')
    assert ingest.main([str(bag), '--out', str(tmp_path / 'out.npz')]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'out.npz').exists()


def test_cli_crop_too_large(ros1_bag: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture) -> None:
    assert ingest.main([str(ros1_bag), '--out', str(tmp_path / 'o.npz'),
                        '--crop', '0,0,481,640']) == 1
    assert 'does not fit' in capsys.readouterr().err


def test_cli_rejects_a_malformed_crop(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ingest.main(['x.bag', '--out', str(tmp_path / 'o.npz'), '--crop', '1,2,3'])
    assert exit_info.value.code == 2
