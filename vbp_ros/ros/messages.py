"""sensor_msgs images of numpy pictures (made once, or reused frame to frame), vbp/attention's
array, and header stamps: one place for each."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Header, MultiArrayDimension

from ..interface import ATTENTION_LABELS, ATTENTION_LAYOUT_LABEL, ns_to_stamp, stamp_to_ns


def image_message(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """An Image of HxW or HxWxC ``pixels`` (row-major, any row padding removed)."""
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return Image(header=header or Header(), height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=pixels.strides[0], data=pixels.tobytes())


def attention_array() -> Float32MultiArray:
    """vbp/attention's message, its one dimension labelled with the statistics' names in
    their order ('centroid_x,centroid_y,...'); the data is filled per frame."""
    count = len(ATTENTION_LABELS)
    message = Float32MultiArray()
    message.layout.dim = [MultiArrayDimension(label=ATTENTION_LAYOUT_LABEL, size=count,
                                              stride=count)]
    return message


class ImageBuffer:
    """An Image message that is published again and again: its data is allocated once per
    size, and :meth:`pixels` hands out a numpy view of it to draw the next picture into."""

    def __init__(self, encoding: str, dtype: type = np.uint8) -> None:
        self.message = Image(encoding=encoding, is_bigendian=0)
        self._dtype = np.dtype(dtype)
        self._pixels: np.ndarray | None = None

    def pixels(self, header: Header, shape: tuple[int, ...]) -> np.ndarray:
        """The message, stamped with ``header``, for a picture of ``shape`` (HxW or HxWxC);
        the view to write that picture into."""
        message = self.message
        if self._pixels is None or self._pixels.shape != shape:
            message.height, message.width = shape[:2]
            message.step = int(np.prod(shape[1:])) * self._dtype.itemsize
            message.data = bytes(message.step * message.height)
            self._pixels = np.frombuffer(message.data, self._dtype).reshape(shape)
        message.header = header
        return self._pixels


def header_ns(header: Header) -> int:
    """A header's stamp in integer nanoseconds."""
    return stamp_to_ns(header.stamp)


def time_message(nanoseconds: int) -> Time:
    """builtin_interfaces/Time of integer nanoseconds."""
    sec, nanosec = ns_to_stamp(nanoseconds)
    return Time(sec=sec, nanosec=nanosec)
