"""vbp_node's camera source over real DDS: the worker takes the newest frame of each camera,
frames that DDS replaced meanwhile are counted, and several cameras are gathered into one
batch only while they deliver."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from vbp_ros.ros.camera_source import CameraSource  # noqa: E402
from waiting import wait_until  # noqa: E402


@pytest.fixture
def node(ros):
    node = rclpy.create_node('camera_source_test')
    yield node
    node.destroy_node()


def publisher(node, topic: str):
    result = node.create_publisher(Image, topic, qos_profile_sensor_data)
    assert wait_until(result.get_subscription_count, 10.0), f'nobody subscribed {topic}'
    return result


def send(camera, first: int, count: int) -> None:
    for stamp in range(first, first + count):
        message = Image(height=1, width=1, encoding='mono8', step=1, data=b'\x00')
        message.header.stamp.sec = stamp
        camera.publish(message)
    time.sleep(0.3)  # delivered


def seconds(arrival) -> int:
    return arrival.message.header.stamp.sec


def test_the_newest_frame_is_taken_and_the_replaced_ones_counted(node) -> None:
    source = CameraSource(node)
    source.subscribe('', Image, 'image', qos_profile_sensor_data)
    source.open()
    camera = publisher(node, 'image')
    send(camera, 1, 1)
    assert seconds(source.take(5.0)['']) == 1
    send(camera, 2, 5)  # the worker is busy meanwhile: DDS keeps the newest
    taken = source.take(5.0)
    assert [seconds(arrival) for arrival in taken.values()] == [6]
    assert (source.offered, source.dropped) == (6, 4)
    send(camera, 7, 1)
    assert seconds(source.take(5.0)['']) == 7
    assert (source.offered, source.dropped) == (7, 4)
    source.close()
    started = time.monotonic()
    assert source.take(5.0) == {} and time.monotonic() - started < 1.0
    source.destroy()


def test_a_frame_waiting_at_close_is_taken_once(node) -> None:
    """vbp_node stops its worker before it unsubscribes: the frame that came while the worker
    was busy is answered, not destroyed with the subscription."""
    source = CameraSource(node)
    source.subscribe('', Image, 'image', qos_profile_sensor_data)
    source.open()
    camera = publisher(node, 'image')
    send(camera, 1, 1)
    source.close()
    assert seconds(source.take(5.0)['']) == 1
    send(camera, 2, 1)
    started = time.monotonic()
    assert source.take(5.0) == {} and time.monotonic() - started < 1.0
    source.open()
    send(camera, 3, 1)
    assert seconds(source.take(5.0)['']) == 3
    assert (source.offered, source.dropped) == (3, 1)  # frame 2 waited, replaced by 3
    source.destroy()


def test_several_cameras_are_gathered_only_while_they_deliver(node) -> None:
    source = CameraSource(node)
    for name in ('front', 'left'):
        source.subscribe(name, Image, f'{name}/image', qos_profile_sensor_data)
    source.open()
    front, left = publisher(node, 'front/image'), publisher(node, 'left/image')
    send(front, 1, 1)
    started = time.monotonic()
    assert list(source.take(5.0, gather_s=2.0, live_s=1.0)) == ['front']  # left never sent
    assert time.monotonic() - started < 1.0
    send(left, 1, 1)
    source.take(5.0)
    send(front, 2, 1)  # left is live now: the batch waits for it
    started = time.monotonic()
    taken = source.take(5.0, gather_s=2.0, live_s=10.0)
    assert list(taken) == ['front'] and time.monotonic() - started >= 1.9
    send(front, 3, 1)
    send(left, 2, 1)
    assert sorted(source.take(5.0, gather_s=2.0, live_s=10.0)) == ['front', 'left']
    source.destroy()
