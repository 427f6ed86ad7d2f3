"""Decompression bombs: small valid JPEGs and PNGs whose headers declare huge sizes, and the
refusal each gets (test_hostile.py decodes them, test_vbp_node.py sends them over DDS)."""

from __future__ import annotations

import zlib

import cv2
import numpy as np


def with_size(jpeg_or_png: bytes, width: int, height: int) -> bytes:
    """A small valid JPEG or PNG whose header declares another size (a decompression bomb:
    the decoder would allocate for the declared size)."""
    data = bytearray(jpeg_or_png)
    if data.startswith(b'\x89PNG'):
        data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
        data[29:33] = zlib.crc32(data[12:29]).to_bytes(4, 'big')  # IHDR stays valid
        return bytes(data)
    position = 2
    while not (0xC0 <= data[position + 1] <= 0xCF and data[position + 1] not in (0xC4, 0xC8,
                                                                                 0xCC)):
        position += 2 + int.from_bytes(data[position + 2:position + 4], 'big')
    data[position + 5:position + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    return bytes(data)


def tiny(extension: str, channels: int = 1, dtype: type = np.uint8) -> bytes:
    """An 8x8 image of one grey, encoded as ``extension``."""
    shape = (8, 8) if channels == 1 else (8, 8, channels)
    return cv2.imencode(extension, np.full(shape, 90, dtype))[1].tobytes()


LIMIT = 'exceeds the .*-pixel limit'
BOMBS = {  # name: (data, the refusal)
    'jpeg 32767x32767 gray': (with_size(tiny('.jpg'), 32767, 32767), LIMIT),
    'jpeg 30000x30000 colour': (with_size(tiny('.jpg', 3), 30000, 30000), LIMIT),
    'png 20000x20000': (with_size(tiny('.png'), 20000, 20000), LIMIT),
    # Within the pixel limit, but 512 MiB decoded, and then no frame: refused from the header.
    'png 8192x8192 16-bit RGBA': (with_size(tiny('.png', 4, np.uint16), 8192, 8192),
                                  '16-bit RGBA PNG .*must be 8-bit'),
}
