"""The real-time engine: camera frames in; network outputs, VisualBackProp masks and timings out.

ROS-free. Everything that decides speed lives here: preprocessing into a preallocated staging
buffer, device placement, CUDA streams and events, optional CUDA-graph capture, reduced
precision and batching. The network's forward pass and the mask come from one call
(:class:`~vbp_ros.core.vbp.VisualBackProp`). Deadlines are judged by the caller, which knows
when a frame arrived and when its results left (:class:`~vbp_ros.engine.monitor.PipelineMonitor`).

On CUDA, :meth:`VBPEngine.submit` stages frames in pinned memory, copies them to the device on a
copy stream and queues the network on a compute stream behind an event, so the copy of
submission N+1 overlaps the compute of submission N; :meth:`VBPEngine.collect` waits on that
submission's event only. On the CPU the same calls run synchronously and make no CUDA calls.
Several frames (up to ``max_batch``, e.g. one per camera) go through the network as one batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..core.checkpoint import OUTPUT_LIMITS, ModelSpec
from ..core.vbp import VisualBackProp
from ..pixels.frames import Crop, to_rgb8
from ..pixels.overlay import DEFAULT_OVERLAY_WIDTH, overlay_shape, red_overlay
from .preprocess import Preprocessor

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N', checked."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f'unsupported device {name!r}; use auto, cpu, cuda or cuda:N')
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {name!r} requested but CUDA is not available')
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f'device {name!r} does not exist '
                             f'({torch.cuda.device_count()} CUDA devices)')
        if device.index is None:
            device = torch.device('cuda', torch.cuda.current_device())
    return device


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
        angle: the first output (``output_unit`` of the checkpoint; radians for steering).
        mask: (H, W) float32 in [0, 1] at network resolution.
        frame_mask: the mask placed back into the full frame (zeros outside the crop), or None.
        overlay: HxWx3 uint8 RGB frame with the mask in red, or None; at the frame's size,
            shrunk to the engine's ``overlay_max_width`` for wider frames.
        times: per-stage timings of the submission the frame was part of.
    """

    stamp: object
    outputs: np.ndarray
    mask: np.ndarray
    frame_mask: np.ndarray | None
    overlay: np.ndarray | None
    times: StageTimes

    @property
    def angle(self) -> float:
        """The first network output."""
        return float(self.outputs[0])


def output_problem(result: FrameResult, spec: ModelSpec) -> str | None:
    """Why a result must not be published, or None: a first output that is NaN, infinite or
    beyond what its unit allows (:data:`~vbp_ros.core.checkpoint.OUTPUT_LIMITS`), or a mask
    that is not finite (e.g. from a frame that drove the network out of its range)."""
    angle, limit = result.angle, OUTPUT_LIMITS[spec.output_unit]
    if not np.isfinite(result.outputs).all():
        return f'non-finite network output ({angle!r})'
    if abs(angle) > limit:
        return f'output {angle:.4g} {spec.output_unit} is beyond +-{limit:.4g}'
    if not np.isfinite(result.mask).all():
        return 'non-finite mask'
    return None


@dataclass(frozen=True)
class _Job:
    """One frame of a submission, as collect() needs it."""

    stamp: object
    frame: np.ndarray | None  # kept only when a full-frame mask or overlay is asked for
    order: str
    want_frame_mask: bool
    want_overlay: bool


@dataclass
class _Submission:
    slot: int
    jobs: list[_Job]
    start: float
    preprocess_ms: float
    result: tuple[torch.Tensor, torch.Tensor] | None = None  # CPU: (outputs, masks)


class VBPEngine:
    """Runs a steering network and VisualBackProp on camera frames.

    Args:
        model: the network (moved to ``device`` and ``precision``; put in eval mode).
        spec: the checkpoint's :class:`ModelSpec` (crop, colour, input size, scaling).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        precision: 'fp32', 'fp16' or 'bf16' for the network; masks are float32 regardless.
        cuda_graphs: capture network and mask as one CUDA graph (CUDA only).
        overlay_alpha: strength of the red overlay, in [0, 1].
        overlay_max_width: widest overlay; wider frames get a proportionally smaller overlay.
        threads: CPU threads for torch (0 keeps torch's default: one per physical core).
        max_batch: most frames per submission (one forward pass).
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, *, device: str = 'auto',
                 precision: str = 'fp32', cuda_graphs: bool = False,
                 overlay_alpha: float = 0.8, overlay_max_width: int = DEFAULT_OVERLAY_WIDTH,
                 threads: int = 0, max_batch: int = 1) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {tuple(PRECISIONS)}, not {precision!r}')
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f'overlay_alpha must be in [0, 1], not {overlay_alpha}')
        if max_batch < 1:
            raise ValueError(f'max_batch must be at least 1, not {max_batch}')
        self.device = resolve_device(device)
        if cuda_graphs and self.device.type != 'cuda':
            raise ValueError('cuda_graphs needs a CUDA device')
        if threads:
            torch.set_num_threads(threads)
        self.spec = spec
        self.precision = precision
        self.overlay_alpha = overlay_alpha
        self.overlay_max_width = overlay_max_width
        self.max_batch = max_batch
        self.preprocess = Preprocessor(spec)
        self.dtype = PRECISIONS[precision]
        self.model = model.to(self.device, self.dtype).eval()
        self.vbp = VisualBackProp(self.model)
        self._cuda = self.device.type == 'cuda'
        slots = 2 if self._cuda else 1
        shape = (max_batch, *self.preprocess.shape)
        self._host_inputs = [torch.empty(shape, pin_memory=self._cuda) for _ in range(slots)]
        self._host_views = [t.numpy() for t in self._host_inputs]
        self._pending: deque[_Submission] = deque()
        self._next_slot = 0
        self._cpu_cast = (torch.empty(shape, dtype=self.dtype)
                          if not self._cuda and self.dtype != torch.float32 else None)
        self._lock = threading.Lock()
        if self._cuda:
            self._cuda_setup(shape, slots, cuda_graphs)
        self._warm_up()

    # -- public API ---------------------------------------------------------------------------

    def process(self, frame: np.ndarray, stamp: object = None, *, order: str = 'rgb',
                frame_mask: bool = False, overlay: bool = False) -> FrameResult:
        """Submit one frame and wait for its result (lowest latency for a single stream)."""
        return self.process_batch([frame], [stamp], orders=[order], frame_mask=frame_mask,
                                  overlay=overlay)[0]

    def process_batch(self, frames: Sequence[np.ndarray], stamps: Sequence[object] = (),
                      *, orders: Sequence[str] = (), frame_mask: bool = False,
                      overlay: bool = False) -> list[FrameResult]:
        """Run up to ``max_batch`` frames as one batch and wait for their results (in order).

        ``stamps`` and ``orders`` (channel orders, default 'rgb') are per frame. A frame that
        cannot be used raises :class:`~vbp_ros.pixels.frames.FrameError` before any work.
        """
        with self._lock:
            self._submit(frames, stamps, orders, frame_mask, overlay)
            return self._collect()

    def process_planes(self, planes: Sequence[np.ndarray], stamps: Sequence[object] = ()
                       ) -> list[FrameResult]:
        """Like :meth:`process_batch` for frames already cropped, resized and colour-converted
        by :meth:`Preprocessor.planes` (for example in another process); the results have no
        full-frame mask or overlay. Planes that do not fit raise FrameError before any work."""
        with self._lock:
            self._submit(planes, stamps, (), False, False, prepared=True)
            return self._collect()

    def submit(self, frame: np.ndarray, stamp: object = None, *, order: str = 'rgb',
               frame_mask: bool = False, overlay: bool = False) -> None:
        """Queue a frame; on CUDA this returns once the work is enqueued. Raises FrameError."""
        with self._lock:
            if len(self._pending) == len(self._host_inputs):
                raise RuntimeError('collect() the oldest frame before submitting another')
            self._submit([frame], [stamp], [order], frame_mask, overlay)

    def collect(self) -> FrameResult:
        """The result of the oldest submitted frame."""
        with self._lock:
            return self._collect()[0]

    @property
    def description(self) -> str:
        """Device and precision, e.g. for diagnostics."""
        name = torch.cuda.get_device_name(self.device) if self._cuda else 'cpu'
        return f'{self.device} ({name}), {self.precision}'

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, frames: Sequence[np.ndarray], stamps: Sequence[object],
                orders: Sequence[str], want_frame_mask: bool, want_overlay: bool,
                prepared: bool = False) -> None:
        count = len(frames)
        if not 1 <= count <= self.max_batch:
            raise ValueError(f'a submission holds 1 to {self.max_batch} frames, not {count}')
        stamps = list(stamps) or [None] * count
        orders = list(orders) or ['rgb'] * count
        start = time.perf_counter()
        slot = self._next_slot
        if self._cuda:
            self._copied[slot].synchronize()  # the previous copy out of this staging slot
        for index, (frame, order) in enumerate(zip(frames, orders)):
            if prepared:
                self.preprocess.scale(frame, out=self._host_views[slot][index])
            else:
                self.preprocess(frame, order, out=self._host_views[slot][index])
        preprocess_ms = (time.perf_counter() - start) * 1e3
        keep = want_frame_mask or want_overlay
        jobs = [_Job(stamp, frame if keep else None, order, want_frame_mask, want_overlay)
                for frame, stamp, order in zip(frames, stamps, orders)]
        submission = _Submission(slot, jobs, start, preprocess_ms)
        if self._cuda:
            self._launch(slot, count)
        else:
            network_input = self._host_inputs[slot][:count]
            if self._cpu_cast is not None:
                network_input = self._cpu_cast[:count].copy_(network_input)
            with torch.inference_mode():
                submission.result = self.vbp(network_input)
        self._pending.append(submission)
        self._next_slot = (slot + 1) % len(self._host_inputs)

    def _collect(self) -> list[FrameResult]:
        if not self._pending:
            raise RuntimeError('no frame was submitted')
        submission = self._pending.popleft()
        slot, count = submission.slot, len(submission.jobs)
        computed = time.perf_counter()
        if self._cuda:
            self._done[slot].synchronize()
            transfer_ms = self._copy_start[slot].elapsed_time(self._copied[slot])
            compute_ms = self._compute_start[slot].elapsed_time(self._done[slot])
            outputs = self._host_outputs[slot][:count].numpy().copy()
            masks = self._host_masks[slot][:count, 0].numpy().copy()
        else:
            output, mask = submission.result
            transfer_ms = 0.0
            compute_ms = (computed - submission.start) * 1e3 - submission.preprocess_ms
            outputs = output.detach().float().reshape(count, -1).numpy()
            masks = mask[:, 0].numpy()
        post_start = time.perf_counter()
        pictures = [self._pictures(job, mask) for job, mask in zip(submission.jobs, masks)]
        end = time.perf_counter()
        times = StageTimes(submission.preprocess_ms, transfer_ms, compute_ms,
                           (end - post_start) * 1e3, (end - submission.start) * 1e3)
        return [FrameResult(job.stamp, row, mask, frame_mask, overlay, times)
                for job, row, mask, (frame_mask, overlay)
                in zip(submission.jobs, outputs, masks, pictures)]

    def _pictures(self, job: _Job, mask: np.ndarray
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The full-frame mask and the overlay of one frame, as far as they were asked for."""
        if job.frame is None:
            return None, None
        region = self.preprocess.region(job.frame.shape)
        full_mask = region.place(mask, job.frame.shape) if job.want_frame_mask else None
        overlay = self._overlay(job, region, mask) if job.want_overlay else None
        return full_mask, overlay

    def _overlay(self, job: _Job, region: Crop, mask: np.ndarray) -> np.ndarray:
        """The red overlay, drawn at its published size: a frame wider than
        ``overlay_max_width`` is shrunk first, so the work is bounded whatever comes in."""
        frame = job.frame
        rows, columns = overlay_shape(frame.shape, self.overlay_max_width)
        if (rows, columns) != frame.shape[:2]:
            frame = cv2.resize(frame, (columns, rows), interpolation=cv2.INTER_AREA)
            region = region.scaled(columns / job.frame.shape[1], rows / job.frame.shape[0])
        return red_overlay(to_rgb8(frame, job.order), region.place(mask, frame.shape),
                           self.overlay_alpha)

    def _warm_up(self) -> None:
        """Trace the layout, build VBP buffers, pick kernels: nothing is built per frame later."""
        blank = np.zeros(self.preprocess.camera_shape, np.uint8)
        for count in sorted({1, self.max_batch}):
            for _ in range(3):
                self.process_batch([blank] * count)

    # -- CUDA ---------------------------------------------------------------------------------

    def _cuda_setup(self, shape: tuple[int, ...], slots: int, cuda_graphs: bool) -> None:
        torch.backends.cudnn.benchmark = True  # fixed input shapes
        device = self.device
        self._copy_stream = torch.cuda.Stream(device)
        self._compute_stream = torch.cuda.Stream(device)

        def events() -> list[torch.cuda.Event]:
            return [torch.cuda.Event(enable_timing=True) for _ in range(slots)]

        self._copy_start, self._copied = events(), events()
        self._compute_start, self._done = events(), events()
        for event in self._copied:
            event.record(self._copy_stream)
        self._device_inputs = [torch.empty(shape, device=device) for _ in range(slots)]
        self._network_input = torch.zeros(shape, device=device, dtype=self.dtype)
        with torch.inference_mode():
            outputs = self.model(self._network_input).reshape(shape[0], -1).shape[1]
        self._host_outputs = [torch.empty((shape[0], outputs), pin_memory=True)
                              for _ in range(slots)]
        self._host_masks = [torch.empty((shape[0], 1, *shape[2:]), pin_memory=True)
                            for _ in range(slots)]
        self._graph = None
        self._graph_outputs = None
        if cuda_graphs:
            self._capture_graph()

    def _run_network(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is not None:
            self._graph.replay()
            output, mask = self._graph_outputs
            return output[:count], mask[:count]
        return self.vbp(self._network_input[:count])

    def _launch(self, slot: int, count: int) -> None:
        with torch.cuda.stream(self._copy_stream):
            self._copy_start[slot].record()
            self._device_inputs[slot][:count].copy_(self._host_inputs[slot][:count],
                                                    non_blocking=True)
            self._copied[slot].record()
        with torch.cuda.stream(self._compute_stream), torch.inference_mode():
            self._compute_stream.wait_event(self._copied[slot])
            self._compute_start[slot].record()
            self._network_input[:count].copy_(self._device_inputs[slot][:count])
            output, mask = self._run_network(count)
            self._host_outputs[slot][:count].copy_(output.reshape(count, -1).float(),
                                                   non_blocking=True)
            self._host_masks[slot][:count].copy_(mask, non_blocking=True)
            self._done[slot].record()

    def _capture_graph(self) -> None:
        """Capture network + mask once (at ``max_batch``) on the compute stream; replays reuse
        its memory, and smaller submissions use the first rows of its outputs."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self.vbp(self._network_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, stream=self._compute_stream):
            self._graph_outputs = self.vbp(self._network_input)
        self._graph = graph
