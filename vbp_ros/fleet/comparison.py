"""vbp-fleet --compare: a second model over the same frames, in the same worker.

The worker runs its own model on a segment, then hands the segment to :class:`Comparison`,
which runs the second engine on the segment's ``compared`` inputs (the same frames through the
second model's preprocessing) with the same functions (:func:`~vbp_ros.fleet.masks.segment_masks`,
:func:`~vbp_ros.fleet.masks.mask_columns`), so both models' statistics are computed one way.
Per frame it adds the second model's angle and statistics (suffixed ``_other``), the angle
difference (other minus this, radians: both engines give road wheel radians, see
:func:`check_comparable`), the masks' similarity in camera coordinates
(:func:`~vbp_ros.explain.mask_comparison.mask_similarity`) and a disagreement score; the
segment's frames of largest disagreement come back with both overlays as JPEG thumbnails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.fleet.reading import Segment
from ..data.fleet.results import OTHER
from ..engine.build import build_engine
from ..engine.engine import VBPEngine
from ..explain.mask_comparison import mask_similarity
from ..models.checkpoint import ANGLE_UNITS, CheckpointError, ModelSpec
from ..models.preprocess import Preprocessor
from ..pixels.encodings import encode_jpeg
from ..pixels.frames import FrameSizeError
from ..pixels.overlay import network_view_overlay, shrunk_to_width
from .masks import mask_columns, segment_masks, top_rows

TOP_FRAMES = 20  # frames of largest disagreement shown in the report
THUMBNAIL_WIDTH = 320  # pixels: the report's picture width


@dataclass(frozen=True)
class Disagreement:
    """When two models disagree on a frame: their angles differ by more than ``angle_rad``
    (radians) or their masks' similarity is below ``similarity``. A frame's score is the larger
    of ``|angle_diff| / angle_rad`` and ``(1 - mask_similarity) / (1 - similarity)``: above 1
    it disagrees, and the frames of largest disagreement are those of largest score (a NaN
    similarity, for a blank mask, leaves the angle alone to decide)."""

    angle_rad: float = 0.05
    similarity: float = 0.5

    def __post_init__(self) -> None:
        if not (self.angle_rad > 0 and -1.0 <= self.similarity < 1.0):
            raise ValueError('the disagreement thresholds need an angle above 0 and a '
                             f'similarity in [-1, 1), not {self.angle_rad} and '
                             f'{self.similarity}')

    def scores(self, angle_diff: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        """The score of each frame (class docstring)."""
        return np.fmax(np.abs(angle_diff) / self.angle_rad,
                       (1.0 - similarity) / (1.0 - self.similarity))

    def shares(self, angle_diff: np.ndarray, similarity: np.ndarray) -> dict[str, float]:
        """The shares of frames that disagree on the angle, on the mask (a NaN similarity
        does not) and on either (a score above 1); NaN without frames."""
        if not len(angle_diff):
            return {'angle': math.nan, 'mask': math.nan, 'either': math.nan}
        return {'angle': float(np.mean(np.abs(angle_diff) > self.angle_rad)),
                'mask': float(np.mean(similarity < self.similarity)),
                'either': float(np.mean(self.scores(angle_diff, similarity) > 1.0))}


@dataclass(frozen=True)
class CompareJob:
    """The compared model: file, card (None: the one beside it), spec and the thresholds."""

    model: str
    card: str | None
    spec: ModelSpec
    disagreement: Disagreement = Disagreement()


def _angle_kind(spec: ModelSpec) -> str | None:
    """'road wheel' or 'steering wheel' for the angle a card's output gives; None when the
    output is no angle."""
    if spec.output_unit not in ANGLE_UNITS:
        return None
    if spec.output_unit.startswith('steering_wheel') and not spec.steering_ratio:
        return 'steering wheel'
    return 'road wheel'


def check_comparable(spec: ModelSpec, other: ModelSpec, name: str, other_name: str) -> None:
    """Refuse (CheckpointError, one line naming the file at fault) two models whose angles
    cannot be subtracted, or whose cards do not fit one camera (checked on the camera size
    either card states; without one, each frame is checked as it is read)."""
    kinds = {name: _angle_kind(spec), other_name: _angle_kind(other)}
    for file, kind in kinds.items():
        if kind is None:
            unit = (spec if file == name else other).output_unit
            raise CheckpointError(f'{file}: output.unit {unit!r} is not an angle, so the two '
                                  'models\' steering cannot be compared; set output.unit in '
                                  'its card')
    if kinds[name] != kinds[other_name]:
        wheel = name if kinds[name] == 'steering wheel' else other_name
        raise CheckpointError(f'{wheel} gives a steering wheel angle and the other model a '
                              'road wheel angle: set output.steering_ratio in its card')
    camera = spec.camera_size or other.camera_size
    if camera is None:
        return
    try:
        for checked in (spec, other):
            Preprocessor(checked).region((camera[1], camera[0]))
    except FrameSizeError as error:
        raise CheckpointError(f'{other_name} does not fit the {camera[0]}x{camera[1]} camera '
                              f'of {name}: {error}') from error


@dataclass
class PairCandidate:
    """A frame proposed for the report's largest disagreements: its score, row, angles,
    similarity and both overlays (each model's view with its mask in red, JPEG)."""

    score: float
    index: int
    stamp_ns: int
    log_ns: int
    angle: float
    angle_other: float
    mask_similarity: float
    jpeg: bytes
    jpeg_other: bytes


@dataclass
class ComparisonRows:
    """The comparison's columns of a segment and its candidate frames."""

    rows: dict[str, np.ndarray]
    candidates: list[PairCandidate]


def thumbnail_jpeg(planes: np.ndarray, mask: np.ndarray, alpha: float) -> bytes:
    """A model's overlay of a frame as a JPEG at most the report's width wide."""
    return encode_jpeg(shrunk_to_width(network_view_overlay(planes, mask, alpha),
                                       THUMBNAIL_WIDTH))


class Comparison:
    """The compared model's engine and what a segment's comparison computes."""

    def __init__(self, engine: VBPEngine, disagreement: Disagreement,
                 top: int = TOP_FRAMES) -> None:
        self.engine, self.disagreement, self.top = engine, disagreement, top

    @classmethod
    def load(cls, job: CompareJob, device: str, batch: int, threads: int) -> Comparison:
        """The compared model loaded once, its engine warmed up."""
        return cls(build_engine(job.model, job.card, device=device, max_batch=batch,
                                threads=threads), job.disagreement)

    def compare(self, segment: Segment, rows: dict[str, np.ndarray], masks: np.ndarray,
                alpha: float) -> ComparisonRows:
        """The comparison of a segment whose own model gave ``rows`` and ``masks`` (its
        overlays drawn with ``alpha``)."""
        other = segment.compared
        if other is None:
            raise ValueError(f'{segment.bag}: the segment was read without the compared '
                             "model's inputs")
        masks_other, angles_other, previous = segment_masks(self.engine, other)
        angle_diff = angles_other - rows['angle']
        similarity = mask_similarity(masks, segment.regions, masks_other, other.regions)
        scores = self.disagreement.scores(angle_diff, similarity)
        columns = {'angle_other': angles_other, 'angle_diff': angle_diff,
                   'mask_similarity': similarity, 'disagreement': scores,
                   **{name + OTHER: values for name, values in
                      mask_columns(masks_other, previous, other).items()}}
        candidates = [PairCandidate(
            float(scores[row]), int(segment.index[row]), int(segment.stamp_ns[row]),
            int(segment.log_ns[row]), float(rows['angle'][row]), float(angles_other[row]),
            float(similarity[row]), thumbnail_jpeg(segment.planes[row], masks[row], alpha),
            thumbnail_jpeg(other.planes[row], masks_other[row], alpha))
            for row in top_rows(scores, self.top)]
        return ComparisonRows(columns, candidates)
