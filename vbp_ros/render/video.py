"""Videos of RGB frames: MP4 (OpenCV's mp4v) or, where OpenCV cannot write MP4, a GIF."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


class Mp4Video:
    """An MP4 (mp4v) file fed RGB frames one at a time; frames of another size are resized."""

    def __init__(self, writer: cv2.VideoWriter, path: Path, size: tuple[int, int]) -> None:
        self._writer, self.path, self.size, self.frames = writer, path, size, 0

    @classmethod
    def open(cls, path: Path, fps: float, size: tuple[int, int]) -> Mp4Video | None:
        """The video, or None when OpenCV cannot write MP4 here."""
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
        return cls(writer, path, size) if writer.isOpened() else None

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame."""
        self._writer.write(cv2.cvtColor(_fit(rgb, self.size), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file."""
        self._writer.release()


class GifVideo:
    """An animated GIF: palette frames are kept until close() writes them with Pillow."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path, self._fps, self.size = path, fps, size
        self._frames: list[Image.Image] = []

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return len(self._frames)

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame (reduced to an adaptive 256-colour palette)."""
        self._frames.append(Image.fromarray(_fit(rgb, self.size)).quantize(256))

    def close(self) -> None:
        """Write the file (looping, at the frame rate rounded to GIF's 10 ms steps)."""
        first, *rest = self._frames
        first.save(self.path, save_all=True, append_images=rest, loop=0,
                   duration=round(1000 / self._fps))


def _fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    same = (rgb.shape[1], rgb.shape[0]) == size
    return rgb if same else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def open_video(path: Path, fps: float, size: tuple[int, int]) -> Mp4Video | GifVideo:
    """An MP4 video at ``path`` or, when its suffix is .gif or OpenCV cannot write MP4 here,
    a GIF beside it (check the returned video's ``path``)."""
    if path.suffix != '.gif':
        video = Mp4Video.open(path, fps, size)
        if video is not None:
            return video
        path.unlink(missing_ok=True)
    return GifVideo(path.with_suffix('.gif'), fps, size)
