"""The model side of vbp-fleet: one place that loads the model, and the worker that runs the
engine over segments of frames (angles, mask statistics, gallery candidates). Ray-free: a Ray
actor wraps :class:`SegmentWorker`, and tests use it directly."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..models.checkpoint import ModelSpec, default_model_path
from ..engine.build import build_engine
from ..engine.config import EngineConfig
from ..engine.engine import VBPEngine
from ..pixels.overlay import DEFAULT_OVERLAY_ALPHA, network_view_overlay
from ..data.fleet.reading import BagInfo, Segment
from ..explain.attention import mask_change, mask_statistics

# Gallery categories: what makes a frame worth a look, largest first.
CATEGORIES = {
    'error': 'largest steering error (network - recorded)',
    'off_road': 'mask off the road (share above the horizon, else in the upper half)',
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
    segment, the bag's reading info."""

    bag: str
    number: int
    messages: int
    rows: dict[str, np.ndarray]
    candidates: list[Candidate]
    info: BagInfo | None


def gallery_scores(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per category, the score of each row (NaN: not a candidate)."""
    off_road = np.where(np.isfinite(rows['above_horizon']), rows['above_horizon'],
                        rows['upper_share'])
    return {'error': np.abs(rows['error']), 'off_road': off_road, 'jump': rows['mask_change']}


def top_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` largest finite scores, largest first (earlier on ties)."""
    finite = np.flatnonzero(np.isfinite(scores))
    order = np.argsort(-scores[finite], kind='stable')
    return finite[order[:count]]


class SegmentWorker:
    """Runs the engine over segments in batches of the engine's ``max_batch``; gallery overlays
    have the mask in red at ``overlay_alpha``."""

    def __init__(self, engine: VBPEngine, gallery: int,
                 overlay_alpha: float = DEFAULT_OVERLAY_ALPHA) -> None:
        self.engine, self.gallery, self.overlay_alpha = engine, gallery, overlay_alpha

    @classmethod
    def load(cls, model: str | None, device: str, batch: int, threads: int,
             gallery: int) -> SegmentWorker:
        """A worker with the model loaded once and its engine warmed up."""
        config = EngineConfig(device=device, max_batch=batch, threads=threads)
        return cls(build_engine(model, config=config), gallery)

    def masks_and_angles(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) masks and (N,) angles of preprocessed planes, batch by batch."""
        batch = self.engine.max_batch
        results = [result for start in range(0, len(planes), batch)
                   for result in self.engine.process_planes(planes[start:start + batch])]
        height, width = self.engine.preprocess.shape[1:]
        masks = np.stack([r.mask for r in results]) if results else \
            np.zeros((0, height, width), np.float32)
        return masks, np.array([r.angle for r in results], np.float64)

    def process(self, segment: Segment) -> SegmentResult:
        """The rows and gallery candidates of a segment."""
        inputs = segment.planes if segment.context is None or not segment.frames else \
            np.concatenate([segment.context[None], segment.planes])
        masks, angles = self.masks_and_angles(inputs)
        previous = None
        if len(masks) > segment.frames:
            previous, masks, angles = masks[0], masks[1:], angles[1:]
        rows = {'index': segment.index, 'stamp_ns': segment.stamp_ns,
                'log_time_ns': segment.log_ns, 'angle': angles,
                **mask_statistics(masks, segment.horizon),
                'mask_change': mask_change(masks, previous),
                'recorded_angle': segment.recorded, 'error': angles - segment.recorded}
        return SegmentResult(segment.bag, segment.number, segment.messages, rows,
                             self.candidates(segment, rows, masks), segment.info)

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
