"""The real-time engine: camera frames in; network outputs, VisualBackProp masks and timings out.

ROS-free. The engine preprocesses frames into its backend's preallocated staging buffer, hands
them to the backend as one batch, and turns what comes back into one :class:`FrameResult` per
frame (the steering angle by the card, the mask placed back into the frame where asked for).
Deadlines are judged by the caller, which knows when a frame arrived and when its results left
(:class:`~vbp_ros.engine.monitor.PipelineMonitor`); overlays are drawn by the caller too
(:func:`~vbp_ros.pixels.overlay.draw_overlay`).

The backend is chosen once, when the engine is built (:mod:`vbp_ros.engine.backends`): torch on
the CPU, torch on CUDA (:meth:`VBPEngine.submit` stages frames in pinned memory, copies them to
the device on a copy stream and queues the network on a compute stream behind an event, so the
copy of submission N+1 overlaps the compute of submission N; :meth:`VBPEngine.collect` waits on
that submission's event only; optional CUDA graphs), or onnxruntime (the mask computed inside
the ONNX graph; ONNX models, and PyTorch networks exported in memory). On the CPU the same calls
run synchronously and make no CUDA calls. Several frames (up to ``max_batch``, e.g. one per
camera) go through the network as one batch. The settings and their defaults:
:class:`~vbp_ros.engine.config.EngineConfig`.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np

from ..models.checkpoint import ANGLE_UNITS, OUTPUT_LIMITS, CheckpointError, ModelSpec
from ..models.loading import Model
from ..models.preprocess import Preprocessor
from .backends.base import Computed
from .backends.choice import open_backend
from .config import EngineConfig

#: The backend of an engine built without a config: the eager network itself.
DIRECT_BACKEND = 'torch'


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent per stage of one submission (transfer is 0 on the CPU)."""

    preprocess_ms: float
    transfer_ms: float
    compute_ms: float
    postprocess_ms: float
    total_ms: float


@dataclass(frozen=True)
class FrameResult:
    """The engine's answer for one frame.

    Attributes:
        stamp: the caller's timestamp of the frame, passed through unchanged.
        outputs: every network output for this frame, flattened, float32.
        mask: (H, W) float32 in [0, 1] at network resolution.
        frame_mask: the mask placed back into the full frame (zeros outside the crop), or None.
        times: per-stage timings of the submission the frame was part of.
        angle: the steering output (the card's ``output.index``), in radians where the card's
            ``output.unit`` is an angle (REP 103); NaN or infinite if the network gave that.
    """

    stamp: object
    outputs: np.ndarray
    mask: np.ndarray
    frame_mask: np.ndarray | None
    times: StageTimes
    angle: float


def output_problem(result: FrameResult, spec: ModelSpec) -> str | None:
    """Why a result must not be published, or None: an output that is NaN or infinite, a
    steering output (as published: radians for angle units) beyond what its unit allows
    (:data:`~vbp_ros.models.checkpoint.OUTPUT_LIMITS`), or a mask that is not finite (e.g. from a
    frame that drove the network out of its range)."""
    angle, limit = result.angle, OUTPUT_LIMITS[spec.output_unit]
    if not np.isfinite(result.outputs).all() or not math.isfinite(angle):
        return f'non-finite network output ({angle!r})'
    if abs(angle) > limit:
        unit = 'rad' if spec.output_unit in ANGLE_UNITS else spec.output_unit
        return f'output {angle:.4g} {unit} ({spec.output_unit}) is beyond +-{limit:.4g} {unit}'
    if not np.isfinite(result.mask).all():
        return 'non-finite mask'
    return None


@dataclass(frozen=True)
class _Job:
    """One frame of a submission, as collect() needs it."""

    stamp: object
    frame: np.ndarray | None  # kept only when a full-frame mask is asked for


@dataclass(frozen=True)
class _Submission:
    slot: int
    jobs: list[_Job]
    start: float
    preprocess_ms: float


class VBPEngine:
    """Runs a steering network and VisualBackProp on camera frames.

    Args:
        model: the network: an ``nn.Module`` (moved to the device and precision; put in eval
            mode) or an ``onnx.ModelProto``.
        spec: the model's card, a :class:`ModelSpec` (crop, colour, input size, scaling).
        config: backend, device, precision, CUDA graphs, threads and batch size
            (:class:`EngineConfig`); without one, EngineConfig's defaults but backend torch
            (:data:`DIRECT_BACKEND`).
        model_name: the model as diagnostics and errors name it (its file); default: the
            card's description or architecture.
        settings: fields of :class:`EngineConfig` that replace the config's (``device='cpu'``).

    Raises:
        ValueError: a setting that cannot work (the message says which);
            :class:`~vbp_ros.models.checkpoint.CheckpointError` where the card contradicts the
            network (e.g. ``output.index`` out of range, found in the warm-up).
    """

    def __init__(self, model: Model, spec: ModelSpec, config: EngineConfig | None = None, *,
                 model_name: str = '', **settings: object) -> None:
        config = replace(config or EngineConfig(backend=DIRECT_BACKEND), **settings)
        self.config = config
        self.spec = spec
        self.max_batch = config.max_batch
        self.preprocess = Preprocessor(spec)
        self.model_name = model_name or spec.description or spec.architecture or 'model'
        if config.threads:
            cv2.setNumThreads(config.threads)
        self._backend, self.backend_note = open_backend(
            model, spec, config, (config.max_batch, *self.preprocess.shape), self.model_name)
        self.backend = self._backend.name
        # Read once: /diagnostics' thread asks for it at any time, also while the engine closes.
        self._description = self._backend.description
        self._pending: deque[_Submission] = deque()
        self._next_slot = 0
        self._lock = threading.Lock()
        self._warm_up()

    # -- public API ---------------------------------------------------------------------------

    def process(self, frame: np.ndarray, stamp: object = None, *, order: str = 'rgb',
                frame_mask: bool = False) -> FrameResult:
        """Submit one frame and wait for its result (lowest latency for a single stream)."""
        return self.process_batch([frame], [stamp], orders=[order], frame_mask=frame_mask)[0]

    def process_batch(self, frames: Sequence[np.ndarray], stamps: Sequence[object] = (),
                      *, orders: Sequence[str] = (), frame_mask: bool = False
                      ) -> list[FrameResult]:
        """Run up to ``max_batch`` frames as one batch and wait for their results (in order).

        ``stamps`` and ``orders`` (channel orders, default 'rgb') are per frame. A frame that
        cannot be used raises :class:`~vbp_ros.pixels.frames.FrameError` before any work.
        """
        with self._lock:
            self._submit(frames, stamps, orders, frame_mask)
            return self._collect()

    def process_planes(self, planes: Sequence[np.ndarray], stamps: Sequence[object] = ()
                       ) -> list[FrameResult]:
        """Like :meth:`process_batch` for frames already cropped, resized and colour-converted
        by :meth:`Preprocessor.planes` (for example in another process); the results have no
        full-frame mask. Planes that do not fit raise FrameError before any work."""
        with self._lock:
            self._submit(planes, stamps, (), False, prepared=True)
            return self._collect()

    def submit(self, frame: np.ndarray, stamp: object = None, *, order: str = 'rgb',
               frame_mask: bool = False) -> None:
        """Queue a frame; on CUDA this returns once the work is enqueued. Raises FrameError."""
        with self._lock:
            if len(self._pending) == self._backend.slots:
                raise RuntimeError('collect() the oldest frame before submitting another')
            self._submit([frame], [stamp], [order], frame_mask)

    def collect(self) -> FrameResult:
        """The result of the oldest submitted frame."""
        with self._lock:
            return self._collect()[0]

    def close(self) -> None:
        """Give back what the engine holds on its device (network, buffers, CUDA graph); the
        engine cannot be used afterwards."""
        with self._lock:
            gc.unfreeze()  # objects settle_heap froze are collectable again
            self._backend.close()
            self._pending = None
            gc.collect()

    @property
    def description(self) -> str:
        """Device, precision and backend, e.g. for diagnostics (also after :meth:`close`)."""
        return self._description

    @property
    def model(self) -> object:
        """The PyTorch network that the torch backend runs (None with onnxruntime)."""
        return getattr(self._backend, 'model', None)

    @property
    def vbp(self) -> object:
        """The torch backend's VisualBackProp of :attr:`model` (None with onnxruntime)."""
        return getattr(self._backend, 'vbp', None)

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, frames: Sequence[np.ndarray], stamps: Sequence[object],
                orders: Sequence[str], want_frame_mask: bool, prepared: bool = False) -> None:
        count = len(frames)
        if not 1 <= count <= self.max_batch:
            raise ValueError(f'a submission holds 1 to {self.max_batch} frames, not {count}')
        stamps = list(stamps) or [None] * count
        orders = list(orders) or ['rgb'] * count
        start = time.perf_counter()
        slot = self._next_slot
        staging = self._backend.stage(slot)
        for index, (frame, order) in enumerate(zip(frames, orders)):
            if prepared:
                self.preprocess.scale(frame, out=staging[index])
            else:
                self.preprocess(frame, order, out=staging[index])
        preprocess_ms = (time.perf_counter() - start) * 1e3
        jobs = [_Job(stamp, frame if want_frame_mask else None)
                for frame, stamp in zip(frames, stamps)]
        self._backend.launch(slot, count)
        self._pending.append(_Submission(slot, jobs, start, preprocess_ms))
        self._next_slot = (slot + 1) % self._backend.slots

    def _collect(self, check_outputs: bool = False) -> list[FrameResult]:
        """The results of the oldest submission; with ``check_outputs``, CheckpointError first
        when the card's output.index is beyond the network's outputs."""
        if not self._pending:
            raise RuntimeError('no frame was submitted')
        submission = self._pending.popleft()
        computed = self._backend.collect(submission.slot, len(submission.jobs))
        if check_outputs:
            self._check_output_index(computed)
        post_start = time.perf_counter()
        frame_masks = [self._frame_mask(job, mask)
                       for job, mask in zip(submission.jobs, computed.masks)]
        end = time.perf_counter()
        times = StageTimes(submission.preprocess_ms, computed.transfer_ms, computed.compute_ms,
                           (end - post_start) * 1e3, (end - submission.start) * 1e3)
        return [FrameResult(job.stamp, row, mask, frame_mask, times,
                            self.spec.steering_angle(row))
                for job, row, mask, frame_mask
                in zip(submission.jobs, computed.outputs, computed.masks, frame_masks)]

    def _frame_mask(self, job: _Job, mask: np.ndarray) -> np.ndarray | None:
        """The mask placed back into the full frame, where it was asked for."""
        if job.frame is None:
            return None
        return self.preprocess.region(job.frame.shape).place(mask, job.frame.shape)

    def _warm_up(self) -> None:
        """Trace the layout, build VBP buffers, pick kernels: nothing is built per frame later."""
        blank = np.zeros(self.preprocess.camera_shape, np.uint8)
        for count in sorted({1, self.max_batch}):
            for _ in range(3):
                with self._lock:
                    self._submit([blank] * count, (), (), False)
                    self._collect(check_outputs=True)

    def _check_output_index(self, computed: Computed) -> None:
        """CheckpointError when the card's output.index is beyond the network's outputs."""
        count = computed.outputs.shape[1]
        if self.spec.output_index >= count:
            raise CheckpointError(f'output.index {self.spec.output_index} is out of range: the '
                                  f'network gives {count} output{"s" * (count != 1)} per image')
