"""vbp_node reads camera Images from their serialized bytes (vbp_ros/ros/image_cdr.py): every
field as rclpy's own deserialization gives it, the pixels left in the bytes, and None (rclpy
then decides) for bytes it does not read."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from vbp_ros.ros.image_cdr import CDR_LE, image_from_cdr

FIELDS = ('height', 'width', 'encoding', 'is_bigendian', 'step')


def image(frame_id: str, encoding: str, height: int, width: int, channels: int,
          is_bigendian: int = 0) -> Image:
    message = Image(height=height, width=width, encoding=encoding, step=width * channels,
                    is_bigendian=is_bigendian)
    message.header.frame_id = frame_id
    message.header.stamp.sec, message.header.stamp.nanosec = -3, 999_999_999
    message.data = np.random.default_rng(height).integers(
        0, 256, height * width * channels, np.uint8).tobytes()
    return message


@pytest.mark.parametrize('frame_id', ['', 'c', 'ca', 'cam', 'cam0', 'front_optical', 'κάμερα'])
@pytest.mark.parametrize('encoding, channels, is_bigendian', [
    ('rgb8', 3, 0), ('mono8', 1, 0), ('16UC1', 2, 1), ('bgra8', 4, 0)])
def test_every_field_equals_rclpys(frame_id: str, encoding: str, channels: int,
                                   is_bigendian: int) -> None:
    """Frame ids of every length modulo 4 (and not ASCII) move the later fields' alignment."""
    sent = image(frame_id, encoding, 3, 5, channels, is_bigendian)
    buffer = serialize_message(sent)
    assert buffer[:2] == CDR_LE
    read = image_from_cdr(buffer)
    assert read is not None
    assert read.header == sent.header
    assert [getattr(read, name) for name in FIELDS] == [getattr(sent, name) for name in FIELDS]
    assert bytes(read.data) == bytes(sent.data)
    assert read.data.obj is buffer  # a view: the pixels are not copied


def test_an_empty_image_is_read() -> None:
    read = image_from_cdr(serialize_message(Image()))
    assert read is not None and read.height == 0 and len(read.data) == 0


def test_bytes_that_hold_no_whole_image_give_none() -> None:
    buffer = serialize_message(image('cam', 'rgb8', 2, 2, 3))
    assert all(image_from_cdr(buffer[:end]) is None for end in range(len(buffer)))
    assert image_from_cdr(b'\x00\x00' + buffer[2:]) is None  # big-endian: rclpy's to read
    assert image_from_cdr(b'\x00\x0b' + buffer[2:]) is None  # another encapsulation
    no_terminator = bytearray(buffer)
    no_terminator[15] = ord('x')  # frame_id 'cam' + NUL at bytes 12..15
    assert image_from_cdr(bytes(no_terminator)) is None
    not_utf8 = bytearray(buffer)
    not_utf8[12] = 0xff
    assert image_from_cdr(bytes(not_utf8)) is None
