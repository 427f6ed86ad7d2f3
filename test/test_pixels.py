"""Image message fields to numpy, with cv_bridge's meaning of each encoding; frames and crops."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from vbp_ros.pixels.area import AreaShrink, shrink_rows, takes_area_shrink, takes_row_shrink
from vbp_ros.pixels.encodings import decode_compressed, decode_raw, mask_to_mono8
from vbp_ros.pixels.frames import FrameError, to_rgb8

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
@pytest.mark.parametrize('encoding, order', [('rgb16', 'rgb'), ('bgr16', 'bgr'),
                                             ('16UC3', 'bgr')])
def test_16_bit_colour_respects_is_bigendian_and_padding(encoding: str, order: str,
                                                         big_endian: bool) -> None:
    """16-bit colour, as machine-vision cameras publish it: the samples in native order,
    the picture the 8-bit frame's."""
    values = COLOUR.astype(np.uint16) * 257  # 8-bit values across the 16-bit range
    data, step = padded(values.astype('>u2' if big_endian else '<u2'), 4)
    frame, got_order = decode_raw(encoding, 6, 10, step, big_endian, data)
    np.testing.assert_array_equal(frame, values)
    assert got_order == order and frame.dtype == np.uint16 and frame.dtype.isnative
    np.testing.assert_array_equal(to_rgb8(frame, order), COLOUR if order == 'rgb' else
                                  COLOUR[:, :, ::-1])


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


@pytest.mark.parametrize('big_endian', [False, True])
@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_16_bit_bayer_demosaics_as_the_8_bit_mosaic(pattern: str, big_endian: bool) -> None:
    """A 16-bit mosaic (padded rows, either byte order) gives the 8-bit mosaic's picture."""
    mosaic = RNG.integers(0, 255, (6, 8), dtype=np.uint8)
    eight, _ = decode_raw(f'bayer_{pattern}8', 6, 8, 8, False, mosaic.tobytes())
    data, step = padded((mosaic.astype(np.uint16) * 257).astype('>u2' if big_endian else '<u2'),
                        6)
    sixteen, order = decode_raw(f'bayer_{pattern}16', 6, 8, step, big_endian, data)
    assert order == 'rgb' and sixteen.dtype == np.uint16 and sixteen.shape == (6, 8, 3)
    np.testing.assert_array_equal(to_rgb8(sixteen), eight)


@pytest.mark.parametrize('encoding, order', [('rgba16', 'rgb'), ('bgra16', 'bgr'),
                                             ('16UC4', 'bgr')])
def test_16_bit_four_channels_lose_the_alpha(encoding: str, order: str) -> None:
    rgba = RNG.integers(0, 65535, (4, 6, 4), dtype=np.uint16)
    data, step = padded(rgba.astype('>u2'), 2)
    frame, got_order = decode_raw(encoding, 4, 6, step, True, data)
    expected = rgba[:, :, :3] if order == 'rgb' else rgba[:, :, 2::-1]
    np.testing.assert_array_equal(frame, expected)
    assert got_order == 'rgb'


def semi_planar(rgb: np.ndarray, swap: bool, padding: int) -> tuple[bytes, int, np.ndarray]:
    """An RGB picture as nv12 (nv21 with ``swap``) data with padded rows, its step, and the
    RGB picture OpenCV decodes from the same samples in its planar I420 layout."""
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    quarter = height * width // 4
    u, v = (i420[height:].reshape(-1)[start:start + quarter] for start in (0, quarter))
    pairs = np.stack([v, u] if swap else [u, v], axis=1)
    planes = np.vstack([i420[:height], pairs.reshape(height // 2, width)])
    data, step = padded(planes, padding)
    return data, step, cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)


@pytest.mark.parametrize('encoding', ['nv12', 'nv21'])
@pytest.mark.parametrize('padding', [0, 6])
def test_nv12_and_nv21_planes(encoding: str, padding: int) -> None:
    """4:2:0 semi-planar frames as rviz2 reads them: luma rows, then half as many rows of
    chroma pairs (U V for nv12, V U for nv21), each ``step`` bytes."""
    data, step, expected = semi_planar(COLOUR, encoding == 'nv21', padding)
    frame, order = decode_raw(encoding, 6, 10, step, False, data)
    np.testing.assert_array_equal(frame, expected)
    assert order == 'rgb'


@pytest.mark.parametrize('encoding', ['nv12', 'nv21'])
def test_a_red_scene_stays_red_in_nv12_and_nv21(encoding: str) -> None:
    red = np.zeros((4, 8, 3), np.uint8)
    red[:, :, 0] = 200
    data, step, _ = semi_planar(red, encoding == 'nv21', 0)
    frame, _ = decode_raw(encoding, 4, 8, step, False, data)
    assert (np.abs(frame.astype(int) - [200, 0, 0]) <= 3).all()


def test_uyvy_luma_is_the_odd_bytes() -> None:
    """UYVY carries Y at odd byte positions: U=V=128 with Y=200 is a grey of video-range luma
    (200 - 16) * 255 / 219 = 214, where reading U as luma would give 130."""
    packed = np.zeros((2, 4, 2), np.uint8)
    packed[:, :, 0] = 128  # U and V
    packed[:, :, 1] = 200  # Y
    frame, _ = decode_raw('yuv422', 2, 4, 8, False, packed.tobytes())
    assert np.abs(frame.astype(int) - 214).max() <= 1


@pytest.mark.parametrize('fields, message', [
    (('nv24', 4, 4, 8, False, bytes(32)), 'unsupported encoding'),
    (('nv12', 3, 4, 4, False, bytes(16)), 'even height'),
    (('nv21', 4, 3, 3, False, bytes(18)), 'even width'),
    (('nv12', 4, 4, 4, False, bytes(16)), 'step x height x 3/2 is 24'),
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


def _exact_area_average(source: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The area average in float64 from each axis's coverage matrix (target pixel by source
    pixel: the part of the source pixel inside the target pixel, over the target's width)."""
    def coverage(count: int, target: int) -> np.ndarray:
        edges = np.arange(target + 1) * count / target
        pixels = np.arange(count)[None, :]
        covered = np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels)
        return np.clip(covered, 0, None) * target / count

    pixels = source.astype(np.float64).reshape(*source.shape[:2], -1)  # (rows, columns, ch)
    columns = coverage(source.shape[1], size[0])
    rows = coverage(source.shape[0], size[1]) @ pixels.reshape(source.shape[0], -1)
    return np.einsum('jc,ick->ijk', columns, rows.reshape(size[1], source.shape[1], -1),
                     optimize=True).reshape(size[1], size[0], *source.shape[2:])


# (frame shape, network input): car cameras to PilotNet, a near-free 32x32 and a 640x125
# input, the paper's 640x125 crop to PilotNet, and a column-cropped view of a wider frame.
UNEVEN_SHRINKS = [((1080, 1920, 3), (200, 66)), ((1080, 1920), (32, 32)),
                  ((1080, 1920, 4), (640, 125)), ((720, 1280, 1), (320, 160)),
                  ((250, 640, 3), (200, 66))]


@pytest.mark.parametrize('shape, size', UNEVEN_SHRINKS)
def test_area_shrink_is_the_exact_area_average_rounded(shape, size) -> None:
    frame = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert takes_area_shrink(frame, size)
    shrunk = AreaShrink(frame.shape, size)(frame)
    exact = _exact_area_average(frame, size).reshape(shrunk.shape)  # (H, W, 1): (H, W)
    assert shrunk.dtype == np.uint8
    # equal to the rounded exact average, but where it lies within float32 noise of a half
    np.testing.assert_array_equal(shrunk[np.abs(exact % 1 - 0.5) > 1e-3],
                                  np.rint(exact)[np.abs(exact % 1 - 0.5) > 1e-3])
    # and OpenCV's INTER_AREA, which sums in float32, at most one level away, on few pixels
    opencv = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    gap = np.abs(shrunk.astype(int) - opencv)
    assert gap.max() <= 1 and np.count_nonzero(gap) <= gap.size * 5 // 1000


def test_area_shrink_reads_a_cropped_view_and_is_planned_per_shape() -> None:
    frame = np.random.default_rng(2).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    crop = frame[400:1000, 100:1800]  # a view: rows 5760 bytes apart, 5100 of them read
    shrink = AreaShrink(crop.shape, (200, 66))
    np.testing.assert_array_equal(shrink(crop),
                                  shrink(np.ascontiguousarray(crop)))
    with pytest.raises(ValueError, match=r'planned for \(600, 1700, 3\), got \(601, 1700, 3\)'):
        shrink(frame[400:1001, 100:1800])


def test_area_shrink_gives_each_thread_its_own_working_arrays() -> None:
    frames = [np.full((1080, 1920), level, np.uint8) for level in (10, 200)]
    shrink = AreaShrink(frames[0].shape, (200, 66))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: [shrink(frames[i % 2]) for _ in range(20)], range(4)))
    for index, shrunk in enumerate(results):
        assert all((picture == (10, 200)[index % 2]).all() for picture in shrunk)


# (frame shape, rows and columns of its crop): the bundled model's road rows, a cropped view of
# a car camera's frame (rows 5760 bytes apart), a gray frame, an rgba one.
ROW_CROPS = [((480, 640, 3), slice(230, 480), slice(0, 640)),
             ((1080, 1920, 3), slice(100, 1060), slice(37, 1837)),
             ((480, 640), slice(0, 480), slice(0, 640)),
             ((720, 1280, 4), slice(0, 720), slice(0, 1280))]


@pytest.mark.parametrize('shape, rows, columns', ROW_CROPS)
@pytest.mark.parametrize('factor', [2, 3, 4, 6])
def test_shrinking_by_whole_rows_is_opencvs_area_average_pixel_for_pixel(
        shape, rows, columns, factor: int) -> None:
    """Even and odd levels side by side, so that many averages are ties (x.5)."""
    rng = np.random.default_rng(factor)
    frame = (rng.integers(0, 128, shape) * 2 + rng.integers(0, 2, shape)).astype(np.uint8)
    region = frame[rows, columns]
    region = region[:region.shape[0] // factor * factor]
    size = (region.shape[1], region.shape[0] // factor)
    assert takes_row_shrink(region, size)
    shrunk = shrink_rows(region, factor)
    np.testing.assert_array_equal(shrunk, cv2.resize(region, size,
                                                     interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize('shape, size, taken', [
    ((250, 640, 3), (640, 125), True),  # the bundled model's road rows halved
    ((1080, 1920), (1920, 270), True),
    ((250, 640, 3), (320, 125), False),  # the columns shrink too
    ((251, 640), (640, 125), False),  # not a whole number of rows
    ((125, 640), (640, 125), False),  # nothing to shrink
    ((1080, 1920), (1920, 4), False),  # 270 rows a row: past 16-bit sums
])
def test_shrinking_by_whole_rows_is_taken_where_only_whole_rows_shrink(shape, size,
                                                                       taken) -> None:
    assert takes_row_shrink(np.zeros(shape, np.uint8), size) is taken
    assert not takes_row_shrink(np.zeros(shape, np.uint16), size)


@pytest.mark.parametrize('shape, size, taken', [
    ((1080, 1920, 3), (200, 66), True),  # uneven both ways
    ((1080, 1920), (240, 135), False),  # 8 by 8: OpenCV's fast path
    ((1080, 1920), (240, 136), True),  # 8 by 7.94
    ((1080, 1920), (1000, 700), False),  # keeps over a third of the rows
    ((125, 640), (200, 66), False),  # 1.9 rows per row: OpenCV is faster
    ((1080, 1920), (2000, 66), False),  # enlarged along the columns
    ((1080, 1920), (200, 66), True),
])
def test_area_shrink_is_taken_where_it_is_faster(shape, size, taken) -> None:
    assert takes_area_shrink(np.zeros(shape, np.uint8), size) is taken
    assert not takes_area_shrink(np.zeros(shape, np.uint16), size)
