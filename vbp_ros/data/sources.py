"""Camera frame sources for the road camera: synthetic roads, a video file, a folder of images.

Each source is an endless iterator of ``(pixels, encoding)`` (HxW mono8 or HxWx3 rgb8); video
and image folders start over at the end when ``loop`` is set, and otherwise stop.
"""

from __future__ import annotations

from itertools import count
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..pixels.frames import as_rgb
from .synthetic import SyntheticRoads

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.pgm', '.ppm')
Frame = tuple[np.ndarray, str]


def synthetic_frames(seed: int = 0, drive_rate_hz: float | None = None, width: int = 640,
                     height: int = 480) -> Iterator[Frame]:
    """Synthetic road frames 0, 1, 2, ... of ``seed`` (mono8): a drive filmed at
    ``drive_rate_hz``, or independent frames (as in training) when it is None."""
    roads = SyntheticRoads(seed=seed, width=width, height=height)
    for index in count():
        params = roads.sample_params(index) if drive_rate_hz is None else \
            roads.drive_params(index, drive_rate_hz)
        yield roads.render(params).image, 'mono8'


def video_frames(path: str, loop: bool = True) -> Iterator[Frame]:
    """Frames of a video file (rgb8)."""
    while True:
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise ValueError(f'{path}: cannot open video')
        read_any = False
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            read_any = True
            yield as_rgb(frame, 'bgr'), 'rgb8'
        capture.release()
        if not (loop and read_any):
            return


def image_frames(folder: str, loop: bool = True) -> Iterator[Frame]:
    """The images of a folder in name order (mono8 for gray files, rgb8 otherwise)."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f'{folder}: no images ({", ".join(IMAGE_SUFFIXES)})')
    while True:
        readable = 0
        for path in paths:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.dtype != np.uint8:
                continue  # unreadable or not 8-bit: skipped
            readable += 1
            yield (image, 'mono8') if image.ndim == 2 else (as_rgb(image, 'bgr'), 'rgb8')
        if not (loop and readable):
            return
