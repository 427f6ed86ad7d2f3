"""The real-time engine: camera frames in; network outputs, VisualBackProp masks and timings out.

ROS-free. Everything that decides speed lives here: preprocessing into a preallocated staging
buffer, device placement, CUDA streams and events, optional CUDA-graph capture, reduced
precision and batching. The network's forward pass and the mask come from one call
(:class:`~vbp_ros.explain.vbp.VisualBackProp`). Deadlines are judged by the caller, which knows
when a frame arrived and when its results left (:class:`~vbp_ros.engine.monitor.PipelineMonitor`).

On CUDA, :meth:`VBPEngine.submit` stages frames in pinned memory, copies them to the device on a
copy stream and queues the network on a compute stream behind an event, so the copy of
submission N+1 overlaps the compute of submission N; :meth:`VBPEngine.collect` waits on that
submission's event only. On the CPU the same calls run synchronously and make no CUDA calls.
Several frames (up to ``max_batch``, e.g. one per camera) go through the network as one batch.

Two backends run the network and its mask: ``torch`` (eager PyTorch with
:class:`~vbp_ros.explain.vbp.VisualBackProp`; CUDA streams and graphs) and ``onnxruntime`` (the
mask computed inside the ONNX graph, :mod:`vbp_ros.engine.onnx_backend`; ONNX models, and
PyTorch networks exported in memory). ``auto`` takes onnxruntime for ONNX models and for
PyTorch networks on the CPU (where it is faster), torch on CUDA, and falls back to torch where
the export or the graph reading fails (``backend_note`` says why).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import onnx
import torch

from ..models.checkpoint import ANGLE_UNITS, OUTPUT_LIMITS, CheckpointError, ModelSpec
from ..explain.rules import UnsupportedModelError
from ..models.loading import Model, flatten_outputs
from ..models.onnx_batch import free_batch_advice
from ..explain.vbp import VisualBackProp
from ..pixels.frames import Crop
from ..pixels.overlay import DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_WIDTH, draw_overlay
from .onnx_backend import OnnxRuntimeNetwork, export_onnx
from ..models.preprocess import Preprocessor

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
BACKENDS = ('auto', 'torch', 'onnxruntime')


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
        mask: (H, W) float32 in [0, 1] at network resolution.
        frame_mask: the mask placed back into the full frame (zeros outside the crop), or None.
        overlay: HxWx3 uint8 RGB frame with the mask in red, or None; at the frame's size,
            shrunk to the engine's ``overlay_max_width`` for wider frames.
        times: per-stage timings of the submission the frame was part of.
        angle: the steering output (the card's ``output.index``), in radians where the card's
            ``output.unit`` is an angle (REP 103); NaN or infinite if the network gave that.
    """

    stamp: object
    outputs: np.ndarray
    mask: np.ndarray
    frame_mask: np.ndarray | None
    overlay: np.ndarray | None
    times: StageTimes
    angle: float


def output_problem(result: FrameResult, spec: ModelSpec) -> str | None:
    """Why a result must not be published, or None: an output that is NaN or infinite, a
    steering output (as published: radians for angle units) beyond what its unit allows
    (:data:`~vbp_ros.models.checkpoint.OUTPUT_LIMITS`), or a mask that is not finite (e.g. from a
    frame that drove the network out of its range)."""
    angle, limit = result.angle, OUTPUT_LIMITS[spec.output_unit]
    if not np.isfinite(result.outputs).all():
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
        model: the network: an ``nn.Module`` (moved to ``device`` and ``precision``; put in eval
            mode) or an ``onnx.ModelProto``.
        spec: the model's card, a :class:`ModelSpec` (crop, colour, input size, scaling).
        backend: 'torch', 'onnxruntime' or 'auto' (see the module docstring).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'; with onnxruntime also 'tensorrt[:N]'.
        precision: 'fp32', 'fp16' or 'bf16' for the network; masks are float32 regardless.
        cuda_graphs: capture network and mask as one CUDA graph (CUDA only).
        overlay_alpha: strength of the red overlay, in [0, 1].
        overlay_max_width: widest overlay; wider frames get a proportionally smaller overlay.
        threads: CPU threads for torch, onnxruntime and OpenCV's preprocessing (0 keeps their
            defaults: one per physical core). Process-wide for torch and OpenCV.
        max_batch: most frames per submission (one forward pass).
        model_name: the model as diagnostics and errors name it (its file); default: the
            card's description or architecture.

    Raises:
        ValueError: a setting that cannot work (the message says which);
            :class:`~vbp_ros.models.checkpoint.CheckpointError` where the card contradicts the
            network (e.g. ``output.index`` out of range, found in the warm-up).
    """

    def __init__(self, model: Model, spec: ModelSpec, *, backend: str = 'torch',
                 device: str = 'auto', precision: str = 'fp32', cuda_graphs: bool = False,
                 overlay_alpha: float = DEFAULT_OVERLAY_ALPHA,
                 overlay_max_width: int = DEFAULT_OVERLAY_WIDTH,
                 threads: int = 0, max_batch: int = 1, model_name: str = '') -> None:
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {tuple(PRECISIONS)}, not {precision!r}')
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(f'overlay_alpha must be in [0, 1], not {overlay_alpha}')
        if max_batch < 1:
            raise ValueError(f'max_batch must be at least 1, not {max_batch}')
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {", ".join(BACKENDS)}, not {backend!r}')
        self.spec = spec
        self.precision = precision
        self.overlay_alpha = overlay_alpha
        self.overlay_max_width = overlay_max_width
        self.max_batch = max_batch
        self.preprocess = Preprocessor(spec)
        self.backend_note = ''
        self.model_name = model_name or spec.description or spec.architecture or 'model'
        self.dtype = PRECISIONS[precision]
        self._onnx = None
        if threads:
            cv2.setNumThreads(threads)
        self.backend = self._choose_backend(model, backend, device, precision, cuda_graphs,
                                            threads)
        if self.backend == 'onnxruntime':
            self._onnx = self._onnxruntime(model, device, threads)
            self.device = torch.device('cpu')  # where the engine's inputs and outputs live
        else:
            self.device = resolve_device(device)
            if cuda_graphs and self.device.type != 'cuda':
                raise ValueError('cuda_graphs needs a CUDA device')
            if threads:
                torch.set_num_threads(threads)
            self.model = model.to(self.device, self.dtype).eval()
            self.vbp = VisualBackProp(self.model)
        self._cuda = self.device.type == 'cuda' and self._onnx is None
        slots = 2 if self._cuda else 1
        shape = (max_batch, *self.preprocess.shape)
        # A channels-last graph reads the staging buffer in place: it lies NHWC in memory.
        layout = torch.channels_last if self._onnx is not None and self._onnx.channels_last \
            else torch.contiguous_format
        self._host_inputs = [torch.empty(shape, pin_memory=self._cuda, memory_format=layout)
                             for _ in range(slots)]
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
                      overlay: bool | Sequence[bool] = False) -> list[FrameResult]:
        """Run up to ``max_batch`` frames as one batch and wait for their results (in order).

        ``stamps``, ``orders`` (channel orders, default 'rgb') and, when it is a sequence,
        ``overlay`` are per frame. A frame that cannot be used raises
        :class:`~vbp_ros.pixels.frames.FrameError` before any work.
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

    def close(self) -> None:
        """Give back what the engine holds on its device (network, buffers, CUDA graph); the
        engine cannot be used afterwards."""
        with self._lock:
            for name in ('model', 'vbp', '_onnx', '_device_inputs', '_network_input', '_graph',
                         '_graph_outputs', '_pending'):
                if hasattr(self, name):
                    setattr(self, name, None)
            gc.unfreeze()  # objects settle_heap froze are collectable again
            gc.collect()
            if self._cuda:
                torch.cuda.empty_cache()

    @property
    def description(self) -> str:
        """Device, precision and backend, e.g. for diagnostics."""
        if self._onnx is not None:
            return f'{self._onnx.device} ({self._onnx.provider}), fp32, onnxruntime'
        name = torch.cuda.get_device_name(self.device) if self._cuda else 'cpu'
        return f'{self.device} ({name}), {self.precision}, torch'

    # -- backends -----------------------------------------------------------------------------

    def _choose_backend(self, model: Model, backend: str, device: str, precision: str,
                        cuda_graphs: bool, threads: int) -> str:
        if isinstance(model, onnx.ModelProto):
            if backend == 'torch':
                raise ValueError('backend torch runs PyTorch networks; this model is ONNX '
                                 '(use backend onnxruntime or auto)')
            backend = 'onnxruntime'
        elif backend == 'auto':
            on_cuda = device.startswith('cuda') or (device == 'auto' and
                                                    torch.cuda.is_available())
            backend = 'torch' if on_cuda or precision != 'fp32' or cuda_graphs \
                else 'onnxruntime'
            if backend == 'onnxruntime':
                try:
                    self._onnx = self._onnxruntime(model, device, threads)
                except (UnsupportedModelError, RuntimeError, ValueError) as error:
                    self.backend_note = f'onnxruntime not used: {error}'
                    backend = 'torch'
        if backend == 'onnxruntime' and (precision != 'fp32' or cuda_graphs):
            raise ValueError('backend onnxruntime runs fp32 without cuda_graphs; use backend '
                             'torch for fp16, bf16 or CUDA graphs')
        return backend

    def _onnxruntime(self, model: Model, device: str, threads: int) -> OnnxRuntimeNetwork:
        """The onnxruntime network (a PyTorch network exported in memory first), made once."""
        if self._onnx is not None:
            return self._onnx
        graph = model if isinstance(model, onnx.ModelProto) else export_onnx(
            model.cpu().float().eval(), self.preprocess.shape, source=self.model_name)
        network = OnnxRuntimeNetwork(graph, self.spec, device, threads, source=self.model_name)
        if network.max_batch is not None and self.max_batch > network.max_batch:
            raise ValueError(f'{self.model_name}: max_batch {self.max_batch} exceeds the '
                             f'batch size {network.max_batch} that the graph fixes; '
                             f'{free_batch_advice(network.input_name)}')
        return network

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, frames: Sequence[np.ndarray], stamps: Sequence[object],
                orders: Sequence[str], want_frame_mask: bool,
                want_overlay: bool | Sequence[bool], prepared: bool = False) -> None:
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
        overlays = ([want_overlay] * count if isinstance(want_overlay, bool)
                    else list(want_overlay))
        jobs = [_Job(stamp, frame if want_frame_mask or overlay else None, order,
                     want_frame_mask, overlay)
                for frame, stamp, order, overlay in zip(frames, stamps, orders, overlays)]
        submission = _Submission(slot, jobs, start, preprocess_ms)
        if self._onnx is not None:
            submission.result = self._onnx(self._host_views[slot][:count])
        elif self._cuda:
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
            outputs, masks = submission.result
            if self._onnx is None:
                outputs, masks = _flat_outputs(outputs, count).numpy(), masks[:, 0].numpy()
            transfer_ms = 0.0
            compute_ms = (computed - submission.start) * 1e3 - submission.preprocess_ms
        post_start = time.perf_counter()
        pictures = [self._pictures(job, mask) for job, mask in zip(submission.jobs, masks)]
        end = time.perf_counter()
        times = StageTimes(submission.preprocess_ms, transfer_ms, compute_ms,
                           (end - post_start) * 1e3, (end - submission.start) * 1e3)
        return [FrameResult(job.stamp, row, mask, frame_mask, overlay, times,
                            self.spec.steering_angle(row))
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
        """The red overlay, drawn at its published size (:func:`draw_overlay`)."""
        return draw_overlay(job.frame, job.order, region, mask, self.overlay_alpha,
                            self.overlay_max_width)

    def _warm_up(self) -> None:
        """Trace the layout, build VBP buffers, pick kernels: nothing is built per frame later."""
        blank = np.zeros(self.preprocess.camera_shape, np.uint8)
        for count in sorted({1, self.max_batch}):
            for _ in range(3):
                with self._lock:  # (the output index is checked before the angle is taken)
                    self._submit([blank] * count, (), (), False, False)
                    self._check_output_index(self._pending[-1])
                    self._collect()

    def _check_output_index(self, submission: _Submission) -> None:
        """CheckpointError when the card's output.index is beyond the network's outputs."""
        if self._cuda:
            count = self._host_outputs[submission.slot].shape[1]
        else:
            outputs = submission.result[0]
            count = (outputs.shape[1] if self._onnx is not None
                     else sum(t[0].numel() for t in flatten_outputs(outputs)))
        if self.spec.output_index >= count:
            self._pending.clear()
            raise CheckpointError(f'output.index {self.spec.output_index} is out of range: the '
                                  f'network gives {count} output{"s" * (count != 1)} per image')

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
            outputs = _flat_outputs(self.model(self._network_input), shape[0]).shape[1]
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
            self._host_outputs[slot][:count].copy_(_flat_outputs(output, count),
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


def _flat_outputs(output: object, count: int) -> torch.Tensor:
    """A network's output (a tensor or a tuple of tensors) as (count, K) float32, in order."""
    return torch.cat([t.detach().reshape(count, -1).float() for t in flatten_outputs(output)],
                     dim=1)
