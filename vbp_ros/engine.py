"""The real-time engine: camera frame in; steering angle, VisualBackProp mask and timings out.

ROS-free. Everything that decides speed lives here: preprocessing into a preallocated staging
buffer, device placement, CUDA streams and events, optional CUDA-graph capture, reduced
precision, and deadline bookkeeping. The network's forward pass and the mask come from one call
(:class:`~vbp_ros.core.vbp.VisualBackProp`).

On CUDA, :meth:`VBPEngine.submit` stages a frame in pinned memory, copies it to the device on a
copy stream and queues the network on a compute stream behind an event, so the copy of frame N+1
overlaps the compute of frame N; :meth:`VBPEngine.collect` waits on that frame's event only.
On the CPU the same calls run synchronously and make no CUDA calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from .core.checkpoint import ModelSpec
from .overlay import red_overlay
from .core.vbp import VisualBackProp
from .preprocess import Preprocessor, frame_to_rgb8

class LatestFrameMailbox:
    """A single-slot hand-over between a producer and one worker: the worker always gets the
    newest item; an item replaced before the worker took it is counted as dropped.

    ``put`` never blocks (a camera callback must not wait on inference); ``get`` blocks until an
    item arrives, the timeout passes (returns None) or the mailbox is closed (returns None).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: object = None
        self._full = False
        self._closed = False
        self.offered = 0
        self.dropped = 0

    def put(self, item: object) -> None:
        with self._condition:
            self.offered += 1
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self._condition.notify()

    def get(self, timeout: float | None = None) -> object | None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting ``get``; later ones return None at once unless an item waits."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


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
    """Milliseconds spent per stage of one frame (transfer is 0 on the CPU)."""

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
        angle: the network output (``output_unit`` of the checkpoint; radians for steering).
        mask: (H, W) float32 in [0, 1] at network resolution.
        frame_mask: the mask placed back into the full frame (zeros outside the crop), or None.
        overlay: HxWx3 uint8 RGB frame with the mask in red, or None.
        times: per-stage timings.
        deadline_met: whether ``times.total_ms`` stayed within the engine's deadline.
    """

    stamp: object
    angle: float
    mask: np.ndarray
    frame_mask: np.ndarray | None
    overlay: np.ndarray | None
    times: StageTimes
    deadline_met: bool


@dataclass
class _Pending:
    slot: int
    stamp: object
    frame: np.ndarray | None  # kept only when a full-frame mask or overlay is asked for
    order: str
    want_frame_mask: bool
    want_overlay: bool
    start: float
    preprocess_ms: float


class VBPEngine:
    """Runs a steering network and VisualBackProp on camera frames.

    Args:
        model: the network (moved to ``device`` and ``precision``; put in eval mode).
        spec: the checkpoint's :class:`ModelSpec` (crop, colour, input size, scaling).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        precision: 'fp32', 'fp16' or 'bf16' for the network; masks are float32 regardless.
        cuda_graphs: capture network and mask as one CUDA graph (CUDA only).
        deadline_ms: per-frame budget from submit to result; 0 means no deadline.
        overlay_alpha: strength of the red overlay, in [0, 1].
        threads: CPU threads for torch (0 keeps torch's default: one per physical core).
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, *, device: str = 'auto',
                 precision: str = 'fp32', cuda_graphs: bool = False, deadline_ms: float = 0.0,
                 overlay_alpha: float = 0.8, threads: int = 0) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {tuple(PRECISIONS)}, not {precision!r}')
        if deadline_ms < 0 or not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError('deadline_ms must be >= 0 and overlay_alpha in [0, 1]')
        self.device = resolve_device(device)
        if cuda_graphs and self.device.type != 'cuda':
            raise ValueError('cuda_graphs needs a CUDA device')
        if threads:
            torch.set_num_threads(threads)
        self.spec = spec
        self.precision = precision
        self.deadline_ms = deadline_ms
        self.overlay_alpha = overlay_alpha
        self.preprocess = Preprocessor(spec)
        self.dtype = PRECISIONS[precision]
        self.model = model.to(self.device, self.dtype).eval()
        self.vbp = VisualBackProp(self.model)
        self._cuda = self.device.type == 'cuda'
        slots = 2 if self._cuda else 1
        shape = (1, *self.preprocess.shape)
        self._host_inputs = [torch.empty(shape, pin_memory=self._cuda) for _ in range(slots)]
        self._host_views = [t.numpy()[0] for t in self._host_inputs]
        self._pending: deque[_Pending] = deque()
        self._next_slot = 0
        self._cpu_result: tuple[torch.Tensor, torch.Tensor] | None = None
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
        with self._lock:
            self._submit(frame, stamp, order, frame_mask, overlay)
            return self._collect()

    def submit(self, frame: np.ndarray, stamp: object = None, *, order: str = 'rgb',
               frame_mask: bool = False, overlay: bool = False) -> None:
        """Queue a frame; on CUDA this returns once the work is enqueued. Raises FrameError."""
        with self._lock:
            if len(self._pending) == len(self._host_inputs):
                raise RuntimeError('collect() the oldest frame before submitting another')
            self._submit(frame, stamp, order, frame_mask, overlay)

    def collect(self) -> FrameResult:
        """The result of the oldest submitted frame."""
        with self._lock:
            return self._collect()

    @property
    def description(self) -> str:
        """Device and precision, e.g. for diagnostics."""
        name = torch.cuda.get_device_name(self.device) if self._cuda else 'cpu'
        return f'{self.device} ({name}), {self.precision}'

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, frame: np.ndarray, stamp: object, order: str, want_frame_mask: bool,
                want_overlay: bool) -> None:
        start = time.perf_counter()
        slot = self._next_slot
        if self._cuda:
            self._copied[slot].synchronize()  # the previous copy out of this staging slot
        self.preprocess(frame, order, out=self._host_views[slot])
        preprocess_ms = (time.perf_counter() - start) * 1e3
        keep = frame if (want_frame_mask or want_overlay) else None
        if self._cuda:
            self._launch(slot)
        else:
            network_input = self._host_inputs[slot]
            if self._cpu_cast is not None:
                network_input = self._cpu_cast.copy_(network_input)
            with torch.inference_mode():
                self._cpu_result = self.vbp(network_input)
        self._pending.append(_Pending(slot, stamp, keep, order, want_frame_mask, want_overlay,
                                      start, preprocess_ms))
        self._next_slot = (slot + 1) % len(self._host_inputs)

    def _collect(self) -> FrameResult:
        if not self._pending:
            raise RuntimeError('no frame was submitted')
        job = self._pending.popleft()
        computed = time.perf_counter()
        if self._cuda:
            self._done[job.slot].synchronize()
            transfer_ms = self._copy_start[job.slot].elapsed_time(self._copied[job.slot])
            compute_ms = self._compute_start[job.slot].elapsed_time(self._done[job.slot])
            output = self._host_outputs[job.slot]
            mask = self._host_masks[job.slot][0, 0].numpy().copy()
        else:
            output, mask_tensor = self._cpu_result
            self._cpu_result = None
            transfer_ms = 0.0
            compute_ms = (computed - job.start) * 1e3 - job.preprocess_ms
            mask = mask_tensor[0, 0].numpy()
        post_start = time.perf_counter()
        angle = float(output.reshape(-1)[0])
        full_mask = self._place_in_frame(mask, job.frame) if job.frame is not None else None
        overlay = (red_overlay(frame_to_rgb8(job.frame, job.order), full_mask,
                               self.overlay_alpha) if job.want_overlay else None)
        end = time.perf_counter()
        total_ms = (end - job.start) * 1e3
        times = StageTimes(job.preprocess_ms, transfer_ms, compute_ms,
                           (end - post_start) * 1e3, total_ms)
        met = self.deadline_ms == 0 or total_ms <= self.deadline_ms
        return FrameResult(job.stamp, angle, mask, full_mask if job.want_frame_mask else None,
                           overlay, times, met)

    def _place_in_frame(self, mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """The network-resolution mask resized into the crop region of a full-size frame."""
        height, width = frame.shape[:2]
        top, left, crop_h, crop_w = self.spec.crop or (0, 0, height, width)
        resized = cv2.resize(mask, (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
        if (crop_h, crop_w) == (height, width):
            return resized
        full = np.zeros((height, width), np.float32)
        full[top:top + crop_h, left:left + crop_w] = resized
        return full

    def _warm_up(self) -> None:
        """Trace the layout, build VBP buffers, pick kernels: nothing is built per frame later."""
        blank = np.zeros((self.spec.input_height, self.spec.input_width), np.uint8)
        if self.spec.crop is not None:
            top, left, height, width = self.spec.crop
            blank = np.zeros((top + height, left + width), np.uint8)
        for _ in range(3):
            self.process(blank)

    # -- CUDA ---------------------------------------------------------------------------------

    def _cuda_setup(self, shape: tuple[int, ...], slots: int, cuda_graphs: bool) -> None:
        torch.backends.cudnn.benchmark = True  # one fixed input shape
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
        self._host_outputs = [torch.empty((1, 1), pin_memory=True) for _ in range(slots)]
        self._host_masks = [torch.empty((1, 1, *shape[2:]), pin_memory=True)
                            for _ in range(slots)]
        self._graph = None
        self._graph_outputs = None
        if cuda_graphs:
            self._capture_graph()

    def _run_network(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is not None:
            self._graph.replay()
            return self._graph_outputs
        return self.vbp(self._network_input)

    def _launch(self, slot: int) -> None:
        with torch.cuda.stream(self._copy_stream):
            self._copy_start[slot].record()
            self._device_inputs[slot].copy_(self._host_inputs[slot], non_blocking=True)
            self._copied[slot].record()
        with torch.cuda.stream(self._compute_stream), torch.inference_mode():
            self._compute_stream.wait_event(self._copied[slot])
            self._compute_start[slot].record()
            self._network_input.copy_(self._device_inputs[slot])
            output, mask = self._run_network()
            self._host_outputs[slot].copy_(output[:, :1].float(), non_blocking=True)
            self._host_masks[slot].copy_(mask, non_blocking=True)
            self._done[slot].record()

    def _capture_graph(self) -> None:
        """Capture network + mask once on the compute stream; replays reuse its memory."""
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
