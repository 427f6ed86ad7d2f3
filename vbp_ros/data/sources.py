"""Camera frame sources for the road camera: synthetic roads, a video file, a folder of images.

Each source is an endless iterator of ``(pixels, encoding)`` (HxW mono8 or HxWx3 rgb8); video
and image folders start over at the end when ``loop`` is set, and otherwise stop.
"""

from __future__ import annotations

import logging
import re
from itertools import count
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..pixels.frames import FrameError, as_rgb
from .synthetic import SyntheticRoads

LOG = logging.getLogger(__name__)

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
    """Frames of a video file (rgb8); ValueError when it cannot be opened or none of its
    frames decodes."""
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
        if not read_any:
            raise ValueError(f'{path}: no frame of the video could be decoded')
        if not loop:
            return


def read_image(path: Path) -> np.ndarray:
    """An 8-bit gray or RGB image from a file; FrameError when it is none."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameError(f'{path}: not a readable image')
    if image.dtype != np.uint8:
        raise FrameError(f'{path}: only 8-bit images are supported, not {image.dtype}')
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4
                             else cv2.COLOR_BGR2RGB)
    return image


def image_paths(sources: list[str | Path]) -> list[Path]:
    """Image files named directly or found in named folders (sorted naturally: 2 before 10)."""
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = [p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            paths += sorted(found, key=_natural_key)
        else:
            paths.append(source)
    return paths


def _natural_key(path: Path) -> list[str | int]:
    """'img2' before 'img10': digit runs compare as numbers (strings and numbers alternate,
    so like is always compared with like)."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', path.name)]


def image_frames(folder: str, loop: bool = True) -> Iterator[Frame]:
    """The images of a folder in natural name order (mono8 for gray files, rgb8 otherwise);
    unreadable and non-8-bit files are skipped with a warning on the first lap, and a folder
    none of whose images can be read is a ValueError."""
    if not Path(folder).is_dir():
        raise ValueError(f'{folder}: not a folder')
    paths = image_paths([folder])
    if not paths:
        raise ValueError(f'{folder}: no images ({", ".join(IMAGE_SUFFIXES)})')
    for lap in count():
        readable, skipped = 0, []
        for path in paths:
            try:
                image = read_image(path)
            except FrameError as error:
                skipped.append(str(error))
                if lap == 0:
                    LOG.warning('skipped %s', error)
                continue
            readable += 1
            yield image, 'mono8' if image.ndim == 2 else 'rgb8'
        if not readable:
            raise ValueError(f'{folder}: none of its {len(paths)} images can be read '
                             f'({skipped[0]})')
        if not loop:
            return
