"""Raw and compressed camera images to numpy frames, and masks to 8-bit pictures (ROS-free).

The meaning of each encoding follows sensor_msgs/image_encodings and cv_bridge: ``data`` holds
``height`` rows of ``step`` bytes each (the row may be padded past ``width * pixel size``),
multi-byte pixels are big-endian when ``is_bigendian`` is set, and ``yuv422``/``uyvy`` is
U0 Y0 V0 Y1 while ``yuv422_yuy2``/``yuyv`` is Y0 U0 Y1 V0. ``nv12`` and ``nv21`` (4:2:0,
as Jetson, libcamera and phone cameras deliver it) are a plane of ``height`` luma rows followed
by one of ``height / 2`` rows of interleaved U V (nv12) or V U (nv21) samples, both ``step``
bytes a row, as rviz2 reads them. Bayer mosaics (8 and 16 bits) are demosaiced to RGB; the
alpha of 16-bit four-channel pixels is dropped.
cv_bridge itself is not used (it does not work with numpy 2).

Every problem raises :class:`~vbp_ros.pixels.frames.FrameError` with a message naming it, so a
caller can drop the frame and count it.

Compressed images are untrusted: their size is read from the JPEG or PNG header and held to
the raw frames' pixel limit before anything is decoded (a 531-byte JPEG may declare
32767x32767 pixels), and so are a PNG's bit depth and colour type (a 522-byte 16-bit RGBA PNG
of 8192x8192 would decode to 512 MiB before being refused), and JPEG data that libjpeg can
only "recover" (a file cut short, with or without an end marker, decoded as grey fill) is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import struct

import cv2
import numpy as np
import simplejpeg

from .frames import FrameError, check_pixel_count

Buffer = bytes | bytearray | memoryview | np.ndarray


class ImageFields(Protocol):
    """sensor_msgs/Image as rclpy and rosbags both deliver it."""

    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: int
    data: object


@dataclass(frozen=True)
class Encoding:
    """Layout of one encoding: bytes per channel sample, channels, channel order, decoder."""

    dtype: str
    channels: int
    order: str = 'rgb'
    colour_code: int | None = None  # demosaicing, YUV or alpha-dropping conversion to RGB
    even: tuple[bool, bool] = (False, False)  # (height, width) must be even
    chroma_plane: bool = False  # 4:2:0: height / 2 rows of chroma follow the luma rows

    def rows(self, height: int) -> int:
        """The rows of ``step`` bytes that a frame of ``height`` rows occupies."""
        return height + height // 2 if self.chroma_plane else height


def _yuv(code: int) -> Encoding:
    """A packed 4:2:2 encoding (two bytes a pixel, one chroma pair for two pixels)."""
    return Encoding('u1', 2, colour_code=code, even=(False, True))


def _semi_planar(code: int) -> Encoding:
    """A 4:2:0 encoding: a luma plane, then a plane of interleaved chroma pairs."""
    return Encoding('u1', 1, colour_code=code, even=(True, True), chroma_plane=True)


def _bayer(dtype: str, code: int) -> Encoding:
    return Encoding(dtype, 1, colour_code=code, even=(False, True))


ENCODINGS = {
    'mono8': Encoding('u1', 1), 'mono16': Encoding('u2', 1),
    '8UC1': Encoding('u1', 1), '16UC1': Encoding('u2', 1),
    'rgb8': Encoding('u1', 3), 'bgr8': Encoding('u1', 3, 'bgr'),
    'rgba8': Encoding('u1', 4), 'bgra8': Encoding('u1', 4, 'bgr'),
    '8UC3': Encoding('u1', 3, 'bgr'), '8UC4': Encoding('u1', 4, 'bgr'),
    'rgb16': Encoding('u2', 3), 'bgr16': Encoding('u2', 3, 'bgr'),
    '16UC3': Encoding('u2', 3, 'bgr'),
    # Frames have four channels at 8 bits only: the alpha goes at decoding.
    'rgba16': Encoding('u2', 4, colour_code=cv2.COLOR_RGBA2RGB),
    'bgra16': Encoding('u2', 4, colour_code=cv2.COLOR_BGRA2RGB),
    '16UC4': Encoding('u2', 4, colour_code=cv2.COLOR_BGRA2RGB),
    '32FC1': Encoding('f4', 1),
    'yuv422': _yuv(cv2.COLOR_YUV2RGB_UYVY), 'uyvy': _yuv(cv2.COLOR_YUV2RGB_UYVY),
    'yuv422_yuy2': _yuv(cv2.COLOR_YUV2RGB_YUYV), 'yuyv': _yuv(cv2.COLOR_YUV2RGB_YUYV),
    'nv12': _semi_planar(cv2.COLOR_YUV2RGB_NV12), 'nv21': _semi_planar(cv2.COLOR_YUV2RGB_NV21),
    # OpenCV names a Bayer pattern after its second row: ROS rggb is OpenCV's BG.
    **{f'bayer_{pattern}{bits}': _bayer(dtype, code)
       for pattern, code in (('rggb', cv2.COLOR_BayerBG2RGB), ('bggr', cv2.COLOR_BayerRG2RGB),
                             ('gbrg', cv2.COLOR_BayerGR2RGB), ('grbg', cv2.COLOR_BayerGB2RGB))
       for bits, dtype in (('8', 'u1'), ('16', 'u2'))},
}


def decode_image(message: ImageFields) -> tuple[np.ndarray, str]:
    """A frame and its channel order from a sensor_msgs/Image (rclpy or rosbags message)."""
    return decode_raw(message.encoding, message.height, message.width, message.step,
                      bool(message.is_bigendian), message.data)


def decode_raw(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
               data: Buffer) -> tuple[np.ndarray, str]:
    """A frame (HxW or HxWxC, uint8/uint16/float32) and its channel order from Image fields.

    The returned array may share memory with ``data`` (no copy for native-endian layouts).
    """
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise FrameError(f'unsupported encoding {encoding!r}; supported: '
                         f'{", ".join(sorted(ENCODINGS))}')
    check_pixel_count(width, height)
    sample = np.dtype(layout.dtype)
    row_bytes = width * layout.channels * sample.itemsize
    for name, length, even in zip(('height', 'width'), (height, width), layout.even):
        if even and length % 2:
            raise FrameError(f'{encoding} needs an even {name}, got {length}')
    if step < row_bytes:
        raise FrameError(f'step {step} is smaller than width x pixel size ({row_bytes})')
    buffer, rows = _bytes(data), layout.rows(height)
    if buffer.size != step * rows:
        size = 'step x height x 3/2' if layout.chroma_plane else 'step x height'
        raise FrameError(f'data holds {buffer.size} bytes, {size} is {step * rows}')
    order = ('>' if is_bigendian else '<') if sample.itemsize > 1 else '|'
    pixels = _as_samples(buffer.reshape(rows, step)[:, :row_bytes],
                         np.dtype(order + layout.dtype))
    pixels = pixels.reshape(rows, width, layout.channels)
    if layout.channels == 1:
        pixels = pixels[:, :, 0]
    if layout.colour_code is not None:
        return cv2.cvtColor(np.ascontiguousarray(pixels), layout.colour_code), 'rgb'
    return pixels, layout.order


def _as_samples(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Reinterpret byte rows as samples in native byte order."""
    if not rows.flags.c_contiguous and dtype.itemsize > 1:
        rows = np.ascontiguousarray(rows)  # padded rows: view() needs contiguous samples
    samples = rows.view(dtype)
    return samples if dtype.isnative else samples.astype(dtype.newbyteorder('='))


def _bytes(data: Buffer) -> np.ndarray:
    """The bytes of a message's data field as a flat uint8 array (no copy)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, np.uint8)


JPEG_MAGIC, PNG_MAGIC = b'\xff\xd8', b'\x89PNG\r\n\x1a\n'
# IHDR: chunk length, type, width, height, bit depth, colour type.
_PNG_HEADER = struct.Struct('>I4sIIBB')
# The PNG colour types, their channels once decoded, and the bit depths each may have.
_PNG_COLOURS = {0: ('gray', (1, 2, 4, 8, 16)), 2: ('RGB', (8, 16)), 3: ('palette', (1, 2, 4, 8)),
                4: ('gray with alpha', (8, 16)), 6: ('RGBA', (8, 16))}
_PNG_ALPHA = (4, 6)  # decoded to 4 channels, which frames only have at 8 bits


def decode_compressed(data: Buffer) -> tuple[np.ndarray, str]:
    """A frame from JPEG or PNG bytes (gray stays gray; colour JPEG comes back as RGB, colour
    PNG as BGR): sizes above the pixel limit, truncated or corrupt data raise FrameError."""
    buffer = _bytes(data)
    if buffer.size == 0:
        raise FrameError('empty compressed image')
    magic = bytes(buffer[:8])
    if magic.startswith(JPEG_MAGIC):
        return _decode_jpeg(buffer)
    if magic == PNG_MAGIC:
        return _decode_png(buffer)
    raise FrameError('compressed image is neither JPEG nor PNG')


def _decode_jpeg(buffer: np.ndarray) -> tuple[np.ndarray, str]:
    if bytes(buffer[-2:]) != b'\xff\xd9':
        raise FrameError('truncated JPEG (no end-of-image marker)')
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(buffer)
    except ValueError as error:
        raise FrameError(f'corrupt JPEG header: {error}') from None
    check_pixel_count(width, height)
    gray = colorspace == 'Gray'
    try:
        frame = simplejpeg.decode_jpeg(buffer, colorspace='GRAY' if gray else 'RGB', strict=True)
    except ValueError as error:  # strict: libjpeg's warnings too
        raise FrameError(f'corrupt JPEG data: {error}') from None
    return (frame[:, :, 0], 'rgb') if gray else (frame, 'rgb')


def _decode_png(buffer: np.ndarray) -> tuple[np.ndarray, str]:
    if buffer.size < len(PNG_MAGIC) + _PNG_HEADER.size:
        raise FrameError('truncated PNG (no header)')
    _, kind, width, height, depth, colour = _PNG_HEADER.unpack(
        bytes(buffer[8:8 + _PNG_HEADER.size]))
    if kind != b'IHDR':
        raise FrameError('corrupt PNG (the first chunk is not IHDR)')
    check_pixel_count(width, height)
    name, depths = _PNG_COLOURS.get(colour, (None, ()))
    if depth not in depths:
        raise FrameError(f'corrupt PNG header (colour type {colour}, bit depth {depth})')
    if depth == 16 and colour in _PNG_ALPHA:
        raise FrameError(f'16-bit {name} PNG ({width}x{height}): frames with alpha must be '
                         '8-bit; publish 8-bit RGBA, or RGB or gray at 16 bits')
    try:
        frame = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise FrameError(f'cannot decode PNG: {error}') from None
    if frame is None:
        raise FrameError('cannot decode PNG (truncated or corrupt data)')
    return frame, 'bgr' if frame.ndim == 3 else 'rgb'


def mask_to_mono8(mask: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A [0, 1] float mask as 8-bit gray (0 to 255, rounded), written into ``out`` (uint8 of
    the mask's shape) when given."""
    return cv2.convertScaleAbs(mask, dst=out, alpha=255.0)


def encode_jpeg(picture: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of an 8-bit HxW gray or HxWx3 RGB picture."""
    if picture.ndim == 3:
        picture = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode('.jpg', picture, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'cannot encode a {picture.shape} {picture.dtype} picture as JPEG')
    return data.tobytes()
