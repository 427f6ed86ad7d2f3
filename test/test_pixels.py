"""Image message fields to numpy, with cv_bridge's meaning of each encoding; frames and crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vbp_ros.pixels.encodings import decode_compressed, decode_raw, mask_to_mono8
from vbp_ros.pixels.frames import FrameError

RNG = np.random.default_rng(0)
COLOUR = RNG.integers(0, 255, (6, 10, 3), dtype=np.uint8)


def padded(rows: np.ndarray, padding: int) -> tuple[bytes, int]:
    """Row bytes with ``padding`` junk bytes after each row, and the step."""
    flat = rows.reshape(rows.shape[0], -1).view(np.uint8)
    junk = np.full((rows.shape[0], padding), 0xAB, np.uint8)
    return np.hstack([flat, junk]).tobytes(), flat.shape[1] + padding


@pytest.mark.parametrize('padding', [0, 3])
def test_rgb8_and_bgr8_with_row_padding(padding: int) -> None:
    data, step = padded(COLOUR, padding)
    frame, order = decode_raw('rgb8', 6, 10, step, False, data)
    np.testing.assert_array_equal(frame, COLOUR)
    assert order == 'rgb'
    frame, order = decode_raw('bgr8', 6, 10, step, False, data)
    np.testing.assert_array_equal(frame, COLOUR)
    assert order == 'bgr'


@pytest.mark.parametrize('encoding, order', [('rgba8', 'rgb'), ('bgra8', 'bgr')])
def test_four_channel_encodings(encoding: str, order: str) -> None:
    rgba = RNG.integers(0, 255, (4, 6, 4), dtype=np.uint8)
    frame, got_order = decode_raw(encoding, 4, 6, 24, False, rgba.tobytes())
    np.testing.assert_array_equal(frame, rgba)
    assert got_order == order


@pytest.mark.parametrize('big_endian', [False, True])
def test_mono16_respects_is_bigendian(big_endian: bool) -> None:
    values = np.array([[0, 1, 256, 65535], [1000, 2, 3, 40000]], np.uint16)
    data = values.astype('>u2' if big_endian else '<u2').tobytes()
    frame, _ = decode_raw('mono16', 2, 4, 8, big_endian, data)
    np.testing.assert_array_equal(frame, values)
    assert frame.dtype == np.uint16 and frame.dtype.isnative


def test_mono16_padded_rows() -> None:
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    data, step = padded(values, 2)
    frame, _ = decode_raw('mono16', 3, 4, step, False, data)
    np.testing.assert_array_equal(frame, values)


@pytest.mark.parametrize('big_endian', [False, True])
def test_32fc1(big_endian: bool) -> None:
    values = RNG.random((3, 5)).astype(np.float32)
    data = values.astype('>f4' if big_endian else '<f4').tobytes()
    frame, _ = decode_raw('32FC1', 3, 5, 20, big_endian, data)
    np.testing.assert_array_equal(frame, values)


@pytest.mark.parametrize('encoding, code', [
    ('yuv422', cv2.COLOR_YUV2RGB_UYVY), ('uyvy', cv2.COLOR_YUV2RGB_UYVY),
    ('yuv422_yuy2', cv2.COLOR_YUV2RGB_YUYV), ('yuyv', cv2.COLOR_YUV2RGB_YUYV)])
def test_yuv422_byte_orders(encoding: str, code: int) -> None:
    packed = RNG.integers(16, 235, (4, 8, 2), dtype=np.uint8)
    frame, order = decode_raw(encoding, 4, 8, 16, False, packed.tobytes())
    np.testing.assert_array_equal(frame, cv2.cvtColor(packed, code))
    assert order == 'rgb'


def test_bayer_rggb8_demosaics_to_rgb() -> None:
    """A pure red scene under an RGGB mosaic: red photosites at even rows and columns."""
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 255
    frame, order = decode_raw('bayer_rggb8', 8, 8, 8, False, mosaic.tobytes())
    centre = frame[2:6, 2:6].reshape(-1, 3).astype(int)
    assert order == 'rgb' and (centre[:, 0] > 200).all() and (centre[:, 1:] < 60).all()


def test_uyvy_luma_is_the_odd_bytes() -> None:
    """UYVY carries Y at odd byte positions: U=V=128 with Y=200 is a grey of video-range luma
    (200 - 16) * 255 / 219 = 214, where reading U as luma would give 130."""
    packed = np.zeros((2, 4, 2), np.uint8)
    packed[:, :, 0] = 128  # U and V
    packed[:, :, 1] = 200  # Y
    frame, _ = decode_raw('yuv422', 2, 4, 8, False, packed.tobytes())
    assert np.abs(frame.astype(int) - 214).max() <= 1


@pytest.mark.parametrize('fields, message', [
    (('bayer_rggb16', 4, 4, 8, False, bytes(32)), 'unsupported encoding'),
    (('mono8', 0, 4, 4, False, b''), 'empty image'),
    (('mono8', 4, 0, 0, False, b''), 'empty image'),
    (('mono8', 4, 4, 4, False, bytes(15)), 'data holds 15 bytes'),
    (('mono8', 4, 4, 4, False, bytes(17)), 'data holds 17 bytes'),
    (('rgb8', 4, 4, 8, False, bytes(32)), 'step 8 is smaller'),
    (('yuyv', 2, 3, 6, False, bytes(12)), 'even width'),
    (('mono8', 9000, 9000, 9000, False, b''), 'pixel limit'),
])
def test_malformed_images_are_named(fields: tuple, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_raw(*fields)


def test_jpeg_and_png_decode() -> None:
    gray = RNG.integers(0, 255, (16, 24), dtype=np.uint8)
    frame, _ = decode_compressed(cv2.imencode('.png', gray)[1].tobytes())
    np.testing.assert_array_equal(frame, gray)
    frame, order = decode_compressed(cv2.imencode('.png', COLOUR)[1].tobytes())
    np.testing.assert_array_equal(frame, COLOUR)  # OpenCV writes and reads BGR
    assert order == 'bgr'
    frame, _ = decode_compressed(cv2.imencode('.jpg', COLOUR)[1].tobytes())
    assert frame.shape == COLOUR.shape


@pytest.mark.parametrize('data, message', [
    (b'', 'empty'), (b'GIF89a' + bytes(20), 'neither JPEG nor PNG'),
    (b'\xff\xd8\xff\xe0' + bytes(100), 'truncated JPEG'),
    (b'\x89PNG\r\n\x1a\n' + bytes(40), 'corrupt PNG'),
])
def test_broken_compressed_images_are_named(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_compressed(data)


def test_truncated_real_jpeg() -> None:
    data = cv2.imencode('.jpg', RNG.integers(0, 255, (64, 64), dtype=np.uint8))[1].tobytes()
    with pytest.raises(FrameError):
        decode_compressed(data[:len(data) // 2])


def test_mask_to_mono8_rounds_to_the_full_range() -> None:
    mask = np.array([[0.0, 0.5, 1.0, 0.999]], np.float32)
    np.testing.assert_array_equal(mask_to_mono8(mask), [[0, 128, 255, 255]])
