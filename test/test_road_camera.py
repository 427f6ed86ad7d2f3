"""road_camera as its console script, over real DDS."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vbp_ros.data.sources import image_frames, image_paths, video_frames

rclpy = pytest.importorskip('rclpy')
from rclpy.event_handler import SubscriptionEventCallbacks  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dds_segments import stop  # noqa: E402
from waiting import wait_until  # noqa: E402

CAMERA = str(Path(sys.executable).parent / 'road_camera')


def receive(arguments: list[str], count: int, namespace: str) -> list[Image]:
    process = subprocess.Popen([CAMERA, '--ros-args', '-r', f'__ns:={namespace}', *arguments],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node('camera_probe', namespace=namespace)
    received: list[Image] = []
    node.create_subscription(Image, 'image', received.append, qos_profile_sensor_data)
    try:
        deadline = time.monotonic() + 60.0
        while len(received) < count and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0 and 'Traceback' not in output, output
    return received


def stamps(messages: list[Image]) -> list[int]:
    return [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in messages]


def test_synthetic_roads_at_the_configured_rate(ros) -> None:
    messages = receive(['-p', 'rate:=20.0', '-p', 'frame_id:=front_camera'], 8, '/cam_a')
    assert len(messages) == 8
    assert all((m.encoding, m.width, m.height) == ('mono8', 640, 480) for m in messages)
    assert all(m.header.frame_id == 'front_camera' for m in messages)
    times = np.diff(stamps(messages)) / 1e9
    assert (times > 0).all() and 0.02 < np.median(times) < 0.2


def test_image_folder_in_name_order(ros, tmp_path: Path) -> None:
    gray = np.full((48, 64), 10, np.uint8)
    colour = np.zeros((48, 64, 3), np.uint8)
    colour[:, :, 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / 'a.png'), gray)
    cv2.imwrite(str(tmp_path / 'b.png'), colour)
    (tmp_path / 'c.png').write_bytes(b'not an image')
    messages = receive(['-p', 'source:=images', '-p', f'path:={tmp_path}', '-p', 'rate:=20.0'],
                       4, '/cam_b')
    encodings = [m.encoding for m in messages]
    start = encodings.index('mono8')
    assert encodings[start:start + 2] == ['mono8', 'rgb8']
    red = np.frombuffer(messages[start + 1].data, np.uint8).reshape(48, 64, 3)
    assert (red[:, :, 0] == 200).all() and not red[:, :, 1:].any()


def test_image_folders_are_read_in_natural_order(tmp_path: Path) -> None:
    """img2 before img10: a folder of numbered frames plays in the order it was written."""
    for name in ('img10.png', 'img2.png', 'b10.png', 'b9.png', 'a.png'):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4), np.uint8))
    (tmp_path / 'notes.txt').write_text('')
    assert [p.name for p in image_paths([tmp_path])] == [
        'a.png', 'b9.png', 'b10.png', 'img2.png', 'img10.png']
    assert len(list(image_frames(str(tmp_path), loop=False))) == 5


def test_unreadable_images_are_skipped_with_a_warning_and_none_readable_is_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """road_camera published nothing, silently, from a folder of text files named .png,
    and vbp-drive waited for a first frame until its start-up timeout."""
    (tmp_path / 'a.png').write_text('not an image')
    cv2.imwrite(str(tmp_path / 'b.png'), np.zeros((4, 4), np.uint8))
    with caplog.at_level('WARNING'):
        assert len(list(image_frames(str(tmp_path), loop=False))) == 1
    assert 'a.png: not a readable image' in caplog.text
    (tmp_path / 'b.png').write_text('no longer one either')
    with pytest.raises(ValueError, match='none of its 2 images can be read'):
        next(image_frames(str(tmp_path)))
    (tmp_path / 'clip.mp4').write_text('not a video')
    with pytest.raises(ValueError, match='clip.mp4: '):
        next(video_frames(str(tmp_path / 'clip.mp4')))


@pytest.mark.parametrize('parameter, message', [
    ('source:=video', "need 'path'"), ('synthetic_mode:=replay', 'synthetic_mode must be'),
    ('rate:=50', "[road_camera]: invalid start-up parameter: Trying to set parameter 'rate' to "
                 "'50' of type 'INTEGER', expecting type 'DOUBLE' (write the number with a "
                 'decimal point'),
    ('rate:=-1.0', '[road_camera]: invalid start-up parameter: Parameter rate out of range')])
def test_bad_source_is_a_clear_error(ros, parameter: str, message: str) -> None:
    result = subprocess.run([CAMERA, '--ros-args', '-p', parameter], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stdout + result.stderr


@pytest.mark.parametrize('arguments', [['-p', 'frame_id:={a: 1}'],
                                       ['--params-file', '/nonexistent.yaml']])
def test_ros_arguments_rcl_cannot_read_end_in_a_fatal_line(ros, arguments: list[str]) -> None:
    """Every executable of run_node: rclpy.init's RCLError was a traceback."""
    result = subprocess.run([CAMERA, '--ros-args', *arguments], capture_output=True,
                            text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and 'Traceback' not in output, output
    assert '[road_camera]: invalid --ros-args: RCLError: failed to initialize rcl' in output


def test_a_parameter_it_does_not_have_is_named_with_the_nearest(ros, tmp_path: Path) -> None:
    """rclpy ignores a parameter the node does not declare: a mistyped vbp_node model ran
    the bundled model without a word."""
    log = tmp_path / 'camera.log'
    with log.open('w') as output:
        camera = subprocess.Popen([CAMERA, '--ros-args', '-p', 'rat:=10.0', '-r',
                                   '__ns:=/typo_test'], stdout=output, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: 'is ignored' in log.read_text(), timeout=30), log.read_text()
    finally:
        stop(camera)
    assert "parameter 'rat' is not one of this node's and is ignored (did you mean 'rate'?)" \
        in log.read_text()


def test_waits_for_its_subscribers_and_reports_what_it_published(ros) -> None:
    process = subprocess.Popen([CAMERA, '--ros-args', '-r', '__ns:=/cam_c', '-p', 'rate:=20.0',
                                '-p', 'wait_for_subscribers:=1'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node('camera_probe', namespace='/cam_c')
    try:
        assert wait_until(lambda: node.count_publishers('/cam_c/image'), 60.0), 'no camera'
        time.sleep(2.0)  # a camera that did not wait would publish 40 frames into the void
        received: list[Image] = []
        matched: list[int] = []  # when this subscription matched the camera (wall clock, ns)
        node.create_subscription(Image, 'image', received.append, qos_profile_sensor_data,
                                 event_callbacks=SubscriptionEventCallbacks(
                                     matched=lambda _: matched.append(time.time_ns())))
        deadline = time.monotonic() + 60.0
        while len(received) < 10 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
        for _ in range(10):
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        stop(process)
    published = int(re.search(r'published (\d+) frames', output).group(1))
    assert len(received) >= 10
    # It waited: nothing was published into the void. SIGINT may land between publish and count.
    assert len(received) - 1 <= published <= len(received) + 1
    # Frame one (stamped with its publishing time) waited until the match had settled: a frame
    # sent the moment the camera counts a subscriber can come before the subscriber's own match
    # (a camera that did so sent it 0 to 50 ms after this match; the settle is 100 ms, and the
    # margin leaves 40 ms for this probe's matched callback to run late on a busy machine).
    first = received[0].header.stamp
    assert first.sec * 10**9 + first.nanosec - matched[0] >= 0.06e9


def test_waits_for_a_subscriber_of_each_awaited_topic(ros) -> None:
    """drive.launch.py's recording: frame one waits until the recorder subscribes vbp_node's
    outputs (wait_for_topics), not only the camera."""
    process = subprocess.Popen([CAMERA, '--ros-args', '-r', '__ns:=/cam_t', '-p', 'rate:=20.0',
                                '-p', 'wait_for_topics:=[recorded, /cam_t/also]'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node('topics_probe', namespace='/cam_t')
    received: list[Image] = []
    try:
        node.create_subscription(Image, 'image', received.append, qos_profile_sensor_data)
        node.create_subscription(Image, 'recorded', lambda _: None, 10)
        assert wait_until(lambda: node.count_publishers('/cam_t/image'), 60.0), 'no camera'
        deadline = time.monotonic() + 2.0  # the camera listened to, one awaited topic not
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        assert received == []
        node.create_subscription(Image, 'also', lambda _: None, 10)
        subscribed = time.time_ns()
        deadline = time.monotonic() + 60.0
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    finally:
        node.destroy_node()
        stop(process)
    assert received, 'no frame once every awaited topic had a subscriber'
    first = received[0].header.stamp
    assert first.sec * 10**9 + first.nanosec - subscribed >= 0.06e9  # after the settle
