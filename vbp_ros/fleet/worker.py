"""The model side of vbp-fleet: one place that loads the model, and the worker that runs the
engine over segments of frames (angles, attention statistics, gallery candidates). Ray-free: a Ray
actor wraps :class:`SegmentWorker`, and tests use it directly. With ``--compare`` the worker
hands each segment on to its :class:`~vbp_ros.fleet.comparison.Comparison`, which runs the
second model through the same functions (:mod:`vbp_ros.fleet.masks`)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..models.checkpoint import ModelSpec, default_model_path
from ..engine.build import build_engine
from ..engine.config import EngineConfig
from ..engine.engine import VBPEngine
from ..pixels.overlay import DEFAULT_OVERLAY_ALPHA, network_view_overlay
from ..data.fleet.reading import BagInfo, Segment
from .masks import mask_columns, segment_masks, top_rows

if TYPE_CHECKING:
    from .comparison import Comparison, ComparisonRows

# Gallery categories: what makes a frame worth a look, largest first.
CATEGORIES = {
    'error': 'largest steering error (network - recorded)',
    'off_road': 'mask off the road (share outside the region of interest, --attention-roi)',
    'jump': 'biggest attention jump (mask change from the frame before)',
}


def model_card(path: str | Path | None, spec: ModelSpec) -> dict:
    """What a run reports about the model loaded from ``path``: file, SHA-256 and spec."""
    source = Path(path or default_model_path())
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return {'path': str(source.resolve()), 'sha256': digest, 'spec': asdict(spec)}


@dataclass
class Candidate:
    """A frame proposed for the gallery: its category, score, row and overlay picture (the
    network's input with the mask in red, RGB uint8)."""

    category: str
    score: float
    index: int
    stamp_ns: int
    log_ns: int
    angle: float
    recorded: float
    overlay: np.ndarray


@dataclass
class SegmentResult:
    """The rows of one segment (column arrays), its gallery candidates and, for a bag's last
    segment, the bag's reading info; with ``--compare``, the comparison's rows."""

    bag: str
    number: int
    messages: int
    rows: dict[str, np.ndarray]
    candidates: list[Candidate]
    info: BagInfo | None
    comparison: ComparisonRows | None = None


def gallery_scores(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per category, the score of each row (NaN: not a candidate). Off the road is what
    vbp_node's attention alarm watches: the mask's share outside the region of interest."""
    return {'error': np.abs(rows['error']), 'off_road': 1.0 - rows['roi_mass'],
            'jump': rows['change']}


class SegmentWorker:
    """Runs the engine over segments in batches of the engine's ``max_batch``, and the
    comparison's second model where there is one; gallery overlays have the mask in red at
    ``overlay_alpha``."""

    def __init__(self, engine: VBPEngine, gallery: int, comparison: Comparison | None = None,
                 overlay_alpha: float = DEFAULT_OVERLAY_ALPHA) -> None:
        self.engine, self.gallery, self.comparison = engine, gallery, comparison
        self.overlay_alpha = overlay_alpha

    @classmethod
    def load(cls, model: str | None, device: str, batch: int, threads: int,
             gallery: int, comparison: Comparison | None = None) -> SegmentWorker:
        """A worker with the model loaded once and its engine warmed up."""
        config = EngineConfig(device=device, max_batch=batch, threads=threads)
        return cls(build_engine(model, config=config), gallery, comparison)

    def process(self, segment: Segment) -> SegmentResult:
        """The rows and gallery candidates of a segment (and its comparison's rows)."""
        masks, angles, previous = segment_masks(self.engine, segment)
        rows = {'index': segment.index, 'stamp_ns': segment.stamp_ns,
                'log_time_ns': segment.log_ns, 'angle': angles,
                **mask_columns(masks, previous, segment),
                'recorded_angle': segment.recorded, 'error': angles - segment.recorded}
        comparison = None if self.comparison is None else self.comparison.compare(
            segment, rows, masks, self.overlay_alpha)
        return SegmentResult(segment.bag, segment.number, segment.messages, rows,
                             self.candidates(segment, rows, masks), segment.info, comparison)

    def candidates(self, segment: Segment, rows: dict[str, np.ndarray],
                   masks: np.ndarray) -> list[Candidate]:
        """The segment's top ``gallery`` frames of each category, with overlays."""
        found, overlays = [], {}
        for category, scores in gallery_scores(rows).items():
            for row in top_rows(scores, self.gallery):
                if row not in overlays:
                    overlays[row] = network_view_overlay(segment.planes[row], masks[row],
                                                         self.overlay_alpha)
                found.append(Candidate(category, float(scores[row]), int(rows['index'][row]),
                                       int(rows['stamp_ns'][row]), int(rows['log_time_ns'][row]),
                                       float(rows['angle'][row]),
                                       float(rows['recorded_angle'][row]), overlays[row]))
        return found
