"""sensor_msgs images to and from numpy frames, and header stamps: one place for each."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..interface import ns_to_stamp, stamp_to_ns
from ..pixels.encodings import decode_compressed, decode_image


def image_message(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """An Image of HxW or HxWxC ``pixels`` (row-major, any row padding removed)."""
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return Image(header=header or Header(), height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=pixels.strides[0], data=pixels.tobytes())


def frame_of(message: Image | CompressedImage) -> tuple[np.ndarray, str]:
    """The frame (numpy, possibly sharing the message's memory) and its channel order;
    :class:`~vbp_ros.pixels.frames.FrameError` when it cannot be decoded."""
    if isinstance(message, CompressedImage):
        return decode_compressed(message.data)
    return decode_image(message)


def header_ns(header: Header) -> int:
    """A header's stamp in integer nanoseconds."""
    return stamp_to_ns(header.stamp)


def time_message(nanoseconds: int) -> Time:
    """builtin_interfaces/Time of integer nanoseconds."""
    sec, nanosec = ns_to_stamp(nanoseconds)
    return Time(sec=sec, nanosec=nanosec)
