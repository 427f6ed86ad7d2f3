"""vbp_record as its console script over real DDS, and the bag writer beneath it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vbp_ros.data.bags import BagError, open_bag
from vbp_ros.data.recording import BagRecording

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

import dds_segments  # noqa: E402
from waiting import wait_until  # noqa: E402

RECORDER = str(Path(sys.executable).parent / 'vbp_record')
RELIABLE = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
FLOAT32 = 'std_msgs/msg/Float32'


@pytest.fixture(scope='module')
def node(ros):
    node = rclpy.create_node('recorder_probe', namespace='/rec')
    yield node
    node.destroy_node()


def start_recorder(bag: Path, *parameters: str) -> subprocess.Popen:
    return subprocess.Popen(
        [RECORDER, '--ros-args', '-r', '__ns:=/rec', '-p', f'bag_dir:={bag}',
         '-p', 'topics:=[camera, steering_angle, /rec/vbp/overlay]', *parameters],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_subscribed(node, publishers: list, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while any(p.get_subscription_count() == 0 for p in publishers):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, 'the recorder never subscribed'
        rclpy.spin_once(node, timeout_sec=0.05)


def wait_written(node, topic: str, count: int, process: subprocess.Popen) -> None:
    """Until the recorder's /diagnostics says ``count`` messages of ``topic`` are written."""
    written: list[int] = []

    def on_diagnostics(array: DiagnosticArray) -> None:
        for status in array.status:
            written.extend(int(kv.value) for kv in status.values
                           if kv.key == f'written {topic}')

    subscription = node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    try:
        deadline = time.monotonic() + 20
        while not written or max(written) < count:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, f'{topic}: {written} written'
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_subscription(subscription)


def image(index: int) -> Image:
    message = Image(height=48, width=64, encoding='mono8', step=64,
                    data=np.full(48 * 64, index % 256, np.uint8).tobytes())
    message.header.stamp.sec, message.header.stamp.nanosec = 1000 + index, index
    message.header.frame_id = 'camera'
    return message


def publish(node, count: int, period_s: float, overlay, angle) -> None:
    for index in range(count):
        overlay.publish(image(index))
        angle.publish(Float32(data=index / 100))
        rclpy.spin_once(node, timeout_sec=period_s)


def read_back(bag: Path) -> dict[str, list]:
    with open_bag(bag) as reader:
        messages: dict[str, list] = {c.topic: [] for c in reader.connections}
        for connection, _, data in reader.messages():
            messages[connection.topic].append(reader.deserialize(data, connection.msgtype))
    return messages


@pytest.mark.parametrize('stop', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_recorder_writes_what_was_published_and_closes_on_a_signal(node, tmp_path, stop) -> None:
    bag = tmp_path / 'bag'
    overlay = node.create_publisher(Image, 'vbp/overlay', RELIABLE)
    angle = node.create_publisher(Float32, 'steering_angle', RELIABLE)
    process = start_recorder(bag)
    try:
        wait_subscribed(node, [overlay, angle], process)
        publish(node, 60, 0.01, overlay, angle)
        time.sleep(0.5)
        process.send_signal(stop)
        output = process.communicate(timeout=20)[0]
    finally:
        dds_segments.stop(process)
        node.destroy_publisher(overlay)
        node.destroy_publisher(angle)
    assert process.returncode == 0, output
    assert (bag / 'metadata.yaml').exists(), output
    messages = read_back(bag)
    assert [m.header.stamp.sec for m in messages['/rec/vbp/overlay']] == \
        [1000 + i for i in range(60)]
    assert [m.data[0] for m in messages['/rec/vbp/overlay']] == list(range(60))
    assert np.allclose([m.data for m in messages['/rec/steering_angle']],
                       np.arange(60) / 100)
    assert '/rec/camera' not in messages  # never published: awaited, not invented
    with open_bag(bag) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert qos['/rec/vbp/overlay'][0].reliability.name == 'RELIABLE'


def test_what_a_publisher_sent_just_before_it_went_is_recorded(node, tmp_path) -> None:
    """A Ctrl-C stops the publishers and the recorder at once: the recorder keeps recording
    while a recorded topic has a publisher, and then until a spin brings nothing more (the
    messages a publisher sent just before it went still wait in the subscription)."""
    bag = tmp_path / 'bag'
    angle = node.create_publisher(Float32, 'steering_angle',
                                  QoSProfile(depth=90, reliability=ReliabilityPolicy.RELIABLE))
    process = start_recorder(bag)
    try:
        wait_subscribed(node, [angle], process)
        for index in range(90):  # within the subscription's depth (SUBSCRIPTION_DEPTH)
            angle.publish(Float32(data=index / 1000))
        assert angle.wait_for_all_acked(Duration(seconds=5.0))  # in the recorder's reader
        node.destroy_publisher(angle)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=20)[0]
    finally:
        dds_segments.stop(process)
    assert process.returncode == 0, output
    recorded = [message.data for message in read_back(bag)['/rec/steering_angle']]
    assert np.allclose(recorded, np.arange(90) / 1000), (len(recorded), output)


def test_recorder_matches_a_best_effort_publisher(node, tmp_path) -> None:
    camera = node.create_publisher(Image, 'camera', qos_profile_sensor_data)
    process = start_recorder(tmp_path / 'bag')
    try:
        wait_subscribed(node, [camera], process)
        (info,) = node.get_subscriptions_info_by_topic('/rec/camera')
        assert info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        for index in range(20):
            camera.publish(image(index))
            time.sleep(0.02)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
    finally:
        dds_segments.stop(process)
        node.destroy_publisher(camera)
    stamps = [m.header.stamp.sec for m in read_back(tmp_path / 'bag')['/rec/camera']]
    assert len(stamps) >= 18 and stamps == sorted(stamps)


def test_a_killed_recorder_leaves_a_bag_readable_up_to_its_last_chunk(node, tmp_path) -> None:
    bag = tmp_path / 'bag'
    overlay = node.create_publisher(Image, 'vbp/overlay', RELIABLE)
    angle = node.create_publisher(Float32, 'steering_angle', RELIABLE)
    process = start_recorder(bag, '-p', 'chunk_period_s:=0.2')
    try:
        wait_subscribed(node, [overlay, angle], process)
        publish(node, 50, 0.01, overlay, angle)
        wait_written(node, '/rec/vbp/overlay', 50, process)
        time.sleep(0.6)  # more than chunk_period_s: these 50 are on disk
        publish(node, 20, 0.0, overlay, angle)  # the last of these may be lost
        dds_segments.kill(process)
        process.communicate(timeout=20)
    finally:
        dds_segments.stop(process)
        node.destroy_publisher(overlay)
        node.destroy_publisher(angle)
    assert not (bag / 'metadata.yaml').exists()
    stamps = [m.header.stamp.sec for m in read_back(bag)['/rec/vbp/overlay']]
    assert 50 <= len(stamps) <= 70
    assert stamps == [1000 + i for i in range(len(stamps))]


@pytest.mark.ros
def test_recorder_refuses_an_existing_bag_directory(tmp_path) -> None:
    bag = tmp_path / 'bag'
    bag.mkdir()
    result = subprocess.run([RECORDER, '--ros-args', '-p', f'bag_dir:={bag}'],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert 'exists already' in result.stdout + result.stderr
    assert not any(bag.iterdir())


def test_writer_drops_and_counts_beyond_its_queue_limit(tmp_path) -> None:
    with BagRecording(tmp_path / 'bag', queue_limit_bytes=100) as recording:
        recording.add_topic('/big', FLOAT32)
        assert not recording.write('/big', 1, bytes(200))
        assert recording.write('/big', 2, bytes(8))
    stats = recording.stats()
    assert stats.dropped == {'/big': 1} and stats.written == {'/big': 1}


def test_writer_rejects_unknown_types_and_duplicate_topics(tmp_path) -> None:
    with BagRecording(tmp_path / 'bag') as recording:
        with pytest.raises(ValueError, match='unknown'):
            recording.add_topic('/x', 'my_msgs/msg/Thing')
        recording.add_topic('/a', FLOAT32)
        with pytest.raises(ValueError, match='already'):
            recording.add_topic('/a', FLOAT32)


def test_a_bag_being_written_is_not_repaired(tmp_path) -> None:
    with BagRecording(tmp_path / 'bag') as recording:
        with pytest.raises(BagError, match='still being recorded'):
            open_bag(recording.path / 'bag.mcap')


def test_writer_completes_chunks_on_time(tmp_path) -> None:
    """A message reaches the file within chunk_period_s, while the recording stays open."""
    with BagRecording(tmp_path / 'bag', chunk_period_s=0.1) as recording:
        recording.add_topic('/a', FLOAT32)
        recording.write('/a', 1, bytes(8))
        file = recording.path / 'bag.mcap'
        size = file.stat().st_size
        assert wait_until(lambda: file.stat().st_size > size, 0.5)
