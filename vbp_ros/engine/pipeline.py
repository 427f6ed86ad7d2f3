"""vbp_node's frame pipeline, ROS-free: camera frames in, answers handed to an output port.

The node feeds it through a :class:`FrameSource` (the camera subscriptions themselves, or a
:class:`~vbp_ros.engine.mailbox.LatestFrameMailbox` that a producer fills) and drains it
through a :class:`FrameOutputs` port that publishes. In between, one worker thread:

1. takes the newest frame of every camera at once from the source, when it is ready for them
   (an older frame still waiting is replaced and counted as superseded: latency never piles
   up, and a frame that is replaced costs nothing to process);
2. prepares each: its stamp is checked (a stamp that gives no age is flagged and kept out of
   the latency figures), a frame older than ``max_age_ms`` is dropped, the message is decoded
   (a view of its data where the layout allows);
3. runs them through the engine as one batch (at most ``max_batch`` frames per forward pass;
   a batch with a frame the network refuses is retried frame by frame);
4. publishes each answer in the order a car needs it: the steering angle and the network's
   outputs first, then the mask, then its attention statistics and the camera's attention
   alarm (:mod:`vbp_ros.engine.attention_health`), then the overlay (drawn only when the
   port wants one, at the size it is published), then the timings; the live view last.

Every frame that is not answered is counted by reason (:mod:`vbp_ros.engine.monitor`); no
exception ends the worker. The worker is the only thread that runs the engine: the node
hands it immutable :class:`PipelineSettings` (with the engine they name, built and warmed up
beforehand), which it takes up between frames. Processing time runs from the frame's receipt
to its last ROS output, the clock of the deadline; pipeline latency from its header stamp.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from ..interface import one_line, stamp_to_ns
from ..pixels.encodings import decode_compressed, decode_image
from ..pixels.frames import Crop, FrameError, FrameSizeError
from ..pixels.overlay import draw_overlay
from .attention_health import AttentionSettings, AttentionTracker
from .engine import FrameResult, VBPEngine, output_problem
from .memory import settle_heap
from .monitor import PipelineMonitor, Snapshot, stamp_problem

WARN_PERIOD_S = 5.0  # the same warning at most this often
ERROR_HOLD_S = 10.0  # health stays ERROR this long after a failed or refused frame
IDLE_WAKE_S = 0.25  # an idle worker takes up new settings (a new engine) this often
STALL_S = 2.0  # health is WARN while one batch of frames takes longer than this
WARN_HOLD_S = 10.0  # health stays WARN this long after the last doubtful frame
# Frames that make the health WARN, by monitor counter: the totals stay in the status's values.
DOUBTFUL = (('deadline_misses', 'deadline misses'), ('dropped_invalid', 'invalid frames'),
            ('dropped_bad_output', 'unpublishable outputs'), ('bad_stamps', 'bad stamps'),
            ('errors', 'failed frames'))
REMEMBERED_SIZES = 16  # frame sizes whose rule was logged; more distinct sizes start over
OK, WARN, ERROR = 'OK', 'WARN', 'ERROR'


class Log(Protocol):
    """Where the pipeline says what happens (an rclpy logger fits)."""

    def info(self, message: str) -> object: ...

    def warning(self, message: str) -> object: ...

    def error(self, message: str) -> object: ...


@dataclass(frozen=True)
class PipelineSettings:
    """What the worker reads per frame, replaced as a whole when the node's parameters change."""

    engine: VBPEngine  # built and warmed up before it was handed over
    overlay_alpha: float
    overlay_max_width: int
    deadline_ms: float
    max_age_ms: float
    max_stamp_age_s: float
    camera_stale_s: float
    batch_wait_s: float
    attention: AttentionSettings = AttentionSettings()


@dataclass(frozen=True)
class Arrival:
    """A camera message as it arrived: sensor_msgs Image or CompressedImage (or anything with
    their fields), and ``time.perf_counter()`` at receipt."""

    message: object
    received: float


@dataclass(frozen=True)
class Answer:
    """One camera frame, answered.

    Attributes:
        camera: the camera's name ('' for the node's only camera).
        message: the camera message; its header goes on every output.
        stamp_ns: its header stamp.
        frame: the decoded frame and ``order``, its channel order.
        region: the rectangle of the frame that the network saw and the mask covers.
        result: the engine's answer (outputs, angle, mask at network resolution).
    """

    camera: str
    message: object
    stamp_ns: int
    frame: np.ndarray
    order: str
    region: Crop
    result: FrameResult


class FrameSource(Protocol):
    """Where the worker takes its frames from (a :class:`LatestFrameMailbox` fits)."""

    offered: int  # frames that reached the source, every camera together
    dropped: int  # of them, replaced by a newer frame of their camera before they were taken

    def take(self, timeout: float | None, gather_s: float, live_s: float
             ) -> dict[str, Arrival]:
        """The newest Arrival of every camera that has one (see LatestFrameMailbox.take)."""

    def open(self) -> None:
        """Take frames again after :meth:`close`."""

    def close(self) -> None:
        """Wake a waiting take; takes return what waits, at once, until :meth:`open`."""


class FrameOutputs(Protocol):
    """What the pipeline publishes through (the ROS node), in the order it calls them."""

    def steering(self, answer: Answer) -> None:
        """The steering angle and every network output."""

    def mask(self, answer: Answer) -> None:
        """The mask (and where it lies in the frame, when that changed)."""

    def attention(self, answer: Answer, statistics: np.ndarray) -> None:
        """The mask's attention statistics, in the order of
        :data:`~vbp_ros.explain.attention.ATTENTION_LABELS`."""

    def wants_overlay(self, camera: str) -> bool:
        """Whether anyone takes this camera's next overlay (subscribers, the live view)."""

    def overlay(self, answer: Answer, overlay: np.ndarray) -> None:
        """The rgb8 overlay; valid during the call only (its buffer is reused)."""

    def timing(self, answer: Answer, processing_ms: float, latency_ms: float | None) -> None:
        """Processing time (receipt to last output) and pipeline latency (None: the stamp
        gives none)."""

    def live_view(self, answer: Answer, overlay: np.ndarray | None, latency_ms: float | None
                  ) -> None:
        """The live view, after every ROS output."""


@dataclass(frozen=True)
class _Ready:
    """A camera's frame, decoded and found fit for the network."""

    camera: str
    arrival: Arrival
    frame: np.ndarray
    order: str
    stamp: int
    unusable: str | None  # why the stamp gives no latency, if it does not


class FramePipeline:
    """The worker, its engine and the counts of one node (see the module docstring).

    Args:
        source: where the frames come from.
        outputs: the port the answers go to (set before :meth:`start`).
        log: where problems are reported (each warning at most every WARN_PERIOD_S).
        now_ns: the node's clock (ROS time: simulated time in a replay), for stamps.
    """

    def __init__(self, source: FrameSource, outputs: FrameOutputs | None, log: Log,
                 now_ns: Callable[[], int]) -> None:
        self.source = source
        self.outputs = outputs
        self.log = log
        self.now_ns = now_ns
        self.monitor = PipelineMonitor()
        self.processed_by_camera: Counter[str] = Counter()
        self.attention = AttentionTracker()
        self.settings: PipelineSettings | None = None
        self.engine: VBPEngine | None = None  # the engine the worker runs
        self.last_failure: tuple[float, str] | None = None  # (monotonic time, what)
        self._doubtful_counts = dict.fromkeys((key for key, _ in DOUBTFUL), 0)
        self._doubtful_at: dict[str, float] = {}  # counter: when it last grew (monotonic)
        self._counted = (0, 0)  # the source's offered and dropped frames, counted so far
        self._busy_since: float | None = None  # monotonic time the batch in hand was taken
        self._worker: threading.Thread | None = None
        self._running = False
        self._sizes_seen: set[object] = set()
        self._warned: dict[str, float] = {}
        self._overlays: dict[str, np.ndarray] = {}  # per camera, reused frame to frame

    # -- the node's side ----------------------------------------------------------------------

    def update(self, settings: PipelineSettings) -> None:
        """Hand the worker new settings; it takes them up before its next frames."""
        if self.engine is None:
            self.engine = settings.engine
        self.settings = settings

    @property
    def running(self) -> bool:
        """Whether the worker runs."""
        return self._worker is not None

    def start(self) -> None:
        """Start the worker (settings must have been given)."""
        if self.settings is None:
            raise RuntimeError('the pipeline has no settings')
        self._running = True
        self.source.open()
        self._worker = threading.Thread(target=self._work, name='vbp_worker', daemon=True)
        self._worker.start()

    def stop(self, timeout: float) -> bool:
        """Stop the worker once it has answered the frames in hand and those the source
        hands after its close (a mailbox hands what waits at every take: stop its producers
        first), so that every frame received is answered or counted; whether it did within
        ``timeout`` seconds."""
        if self._worker is None:
            return True
        self._running = False
        self.source.close()
        self._worker.join(timeout)
        stopped = not self._worker.is_alive()
        self._worker = None
        return stopped

    def release(self) -> None:
        """Forget the engine and the settings (the node closes the engine)."""
        self.engine = self.settings = None

    def health(self, snapshot: Snapshot, state: str) -> tuple[str, str]:
        """Level (OK, WARN or ERROR) and message of the pipeline in the node's ``state``
        ('active' when it processes), from a monitor snapshot: ERROR after a recent failed or
        refused frame, WARN while one batch takes longer than STALL_S (frames that arrive
        meanwhile wait in DDS, uncounted until the next take), for frames received but none
        processed, and for WARN_HOLD_S after the last doubtful frame (a deadline miss, an
        invalid frame...: one frame late an hour ago is no warning now; the totals are in
        the snapshot)."""
        now = time.monotonic()
        recent = self.last_failure
        if recent and now - recent[0] < ERROR_HOLD_S:
            return ERROR, recent[1]
        if state != 'active':
            return OK, f'{state}: not processing'
        busy = self._busy_since
        if busy is not None and now - busy > STALL_S:
            return WARN, f'one frame has been processing for {now - busy:.0f} s'
        totals, rates = snapshot.totals, snapshot.rates_hz
        if totals['received'] and rates['received'] and not rates['processed']:
            return WARN, 'receiving frames but processing none'
        for key, count in self._doubtful_counts.items():
            if totals[key] > count:
                self._doubtful_at[key], self._doubtful_counts[key] = now, totals[key]
        doubtful = [text for key, text in DOUBTFUL
                    if now - self._doubtful_at.get(key, -math.inf) < WARN_HOLD_S]
        if doubtful:
            return WARN, f'{", ".join(doubtful)} in the last {WARN_HOLD_S:g} s'
        return OK, 'ok'

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        """Until stopped and drained. No exception ends the loop: each is counted, logged and
        reported as the health's ERROR, and the next frames are processed."""
        while True:
            waiting = self.settings
            arrivals = self.source.take(IDLE_WAKE_S, waiting.batch_wait_s,
                                        waiting.camera_stale_s)
            self._count_arrivals()
            settings = self.settings  # the newest: a frame sent after a change sees it
            if settings.engine is not self.engine:  # between frames, also when idle
                self._swap_engine(settings.engine)
            if not arrivals:
                if self._running:
                    continue
                return  # stopped, and the last frames are answered
            self._busy_since = time.monotonic()
            try:
                self._handle(arrivals, settings)
            except Exception as error:  # MemoryError too: keep serving, say what went wrong
                self._report_failure('frame failed', error)
            finally:
                self._busy_since = None

    def _count_arrivals(self) -> None:
        """Frames received and superseded since the last count, by the source's totals."""
        offered, dropped = self.source.offered, self.source.dropped
        if (offered, dropped) != self._counted:
            self.monitor.count('received', offered - self._counted[0])
            self.monitor.count('dropped_superseded', dropped - self._counted[1])
            self._counted = (offered, dropped)

    def _swap_engine(self, engine: VBPEngine) -> None:
        self.engine = engine
        self._sizes_seen.clear()
        settle_heap()  # the old engine's objects go, the new one's are spared from now on
        self.log.info(f'now running {engine.model_name} on {engine.description}'
                      f'{engine_note(engine)}')

    def _handle(self, arrivals: dict[str, Arrival], settings: PipelineSettings) -> None:
        ready = [item for camera, arrival in arrivals.items()
                 if (item := self._guarded(self._prepare, camera, arrival, settings))]
        size = self.engine.max_batch
        for batch in (ready[start:start + size] for start in range(0, len(ready), size)):
            if len(batch) > 1 and self._guarded(self._run, batch, settings, quiet=True):
                continue
            for item in batch:  # one camera, or a batch with a frame the network refuses
                self._guarded(self._run, [item], settings)

    def _guarded(self, step: Callable, *args: object, quiet: bool = False) -> object | None:
        """``step(*args)``; a frame it refuses is counted and reported (unless ``quiet``, for
        a batch that is retried frame by frame), giving None."""
        try:
            return step(*args)
        except FrameSizeError as error:
            if not quiet:
                self._refuse_frame_size(error)
        except FrameError as error:
            if not quiet:
                self.monitor.count('dropped_invalid')
                self._warn('invalid', f'dropped frame: {error}')
        return None

    def _prepare(self, camera: str, arrival: Arrival, settings: PipelineSettings
                 ) -> _Ready | None:
        """The frame decoded, or None when it is stale; FrameError when it cannot be used."""
        message = arrival.message
        stamp = stamp_to_ns(message.header.stamp)
        now = self.now_ns()
        unusable = stamp_problem(stamp, now, settings.max_stamp_age_s)
        if unusable:
            self.monitor.count('bad_stamps')
            self._warn('stamp', f'frame stamp {unusable}: kept out of the latency figures')
        if settings.max_age_ms > 0 and self._stale(now - stamp, unusable, settings.max_age_ms):
            return None
        frame, order = decode(message)
        self._log_frame_size(frame.shape)
        return _Ready(camera, arrival, frame, order, stamp, unusable)

    def _stale(self, age_ns: int, unusable: str | None, max_age_ms: float) -> bool:
        """Whether max_age_ms drops this frame: too old, or of unknown age (a zero, negative
        or future stamp cannot show that the frame is fresh)."""
        age_ms = age_ns / 1e6
        if not unusable and age_ms <= max_age_ms:
            return False
        self.monitor.count('dropped_stale')
        reason = f'stamp {unusable}' if unusable else f'{age_ms:.0f} ms old'
        self._warn('stale', f'dropped stale frame ({reason}; max_age_ms {max_age_ms:g})')
        return True

    def _run(self, batch: list[_Ready], settings: PipelineSettings) -> bool:
        """One forward pass for the batch, then each frame's outputs."""
        results = self.engine.process_batch([item.frame for item in batch],
                                            orders=[item.order for item in batch])
        self.monitor.count('forward_passes')
        for item, result in zip(batch, results):
            self._publish(item, result, settings)
        return True

    def _publish(self, item: _Ready, result: FrameResult, settings: PipelineSettings) -> None:
        problem = output_problem(result, self.engine.spec)
        if problem:
            self.monitor.count('dropped_bad_output')
            self._warn('output', f'not published: {problem}')
            return
        region = self.engine.preprocess.region(item.frame.shape)
        answer = Answer(item.camera, item.arrival.message, item.stamp, item.frame, item.order,
                        region, result)
        outputs = self.outputs
        outputs.steering(answer)
        outputs.mask(answer)
        outputs.attention(answer, self.attention.measure(
            item.camera, result.mask, region, item.frame.shape, settings.attention))
        overlay = None
        if outputs.wants_overlay(item.camera):
            overlay = self._overlays[item.camera] = draw_overlay(
                item.frame, item.order, region, result.mask, settings.overlay_alpha,
                settings.overlay_max_width, out=self._overlays.get(item.camera))
            outputs.overlay(answer, overlay)
            self.monitor.count('overlays')
        latency_ms = None if item.unusable else (self.now_ns() - item.stamp) / 1e6
        processing_ms = (time.perf_counter() - item.arrival.received) * 1e3
        outputs.timing(answer, processing_ms, latency_ms)
        self.monitor.frame_done(processing_ms, latency_ms, settings.deadline_ms)
        self.processed_by_camera[item.camera] += 1
        outputs.live_view(answer, overlay, latency_ms)

    # -- reports ------------------------------------------------------------------------------

    def _report_failure(self, what: str, error: BaseException) -> None:
        self.monitor.count('errors')
        self.last_failure = (time.monotonic(), f'{what}: {one_line(error)}')
        self._warn('failure', self.last_failure[1], self.log.error)

    def _refuse_frame_size(self, error: FrameSizeError) -> None:
        """Frames of a size the model cannot be used on: counted as invalid, reported as
        ERROR health, and logged once per size (not a warning per frame)."""
        self.monitor.count('dropped_invalid')
        self.last_failure = (time.monotonic(), str(error))
        if self._first_time_seen(str(error)):
            self.log.error(str(error))

    def _log_frame_size(self, shape: tuple[int, ...]) -> None:
        """Say once per frame size which part of the frame the network sees."""
        size = (shape[1], shape[0])
        if self._first_time_seen(size):
            try:
                rule = self.engine.preprocess.rule(shape)
            except FrameSizeError:
                return  # refused, and said so, by _refuse_frame_size
            self.log.info(f'frames of {size[0]}x{size[1]}: the network sees {rule}')

    def _first_time_seen(self, key: object) -> bool:
        if key in self._sizes_seen:
            return False
        if len(self._sizes_seen) >= REMEMBERED_SIZES:
            self._sizes_seen.clear()
        self._sizes_seen.add(key)
        return True

    def _warn(self, kind: str, message: str, say: Callable[[str], object] | None = None
              ) -> None:
        """Log ``message`` unless a message of this kind was logged within WARN_PERIOD_S."""
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_PERIOD_S) >= WARN_PERIOD_S:
            self._warned[kind] = now
            (say or self.log.warning)(message)


def decode(message: object) -> tuple[np.ndarray, str]:
    """The frame of a camera message (numpy, possibly sharing the message's memory) and its
    channel order: a CompressedImage has ``format``, an Image ``encoding``; FrameError when it
    cannot be decoded."""
    if hasattr(message, 'format'):
        return decode_compressed(message.data)
    return decode_image(message)


def engine_note(engine: VBPEngine) -> str:
    """Why the engine runs another backend than asked, as ' (...)', or ''."""
    return f' ({engine.backend_note})' if engine.backend_note else ''
