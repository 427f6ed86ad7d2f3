"""vbp_node: camera images in; steering angle, VisualBackProp mask and overlay out.

A thin ROS 2 adapter around :class:`vbp_ros.engine.engine.VBPEngine`: parameters, QoS,
messages, publishing and diagnostics. The subscription callback only stores the newest frame
(with its receipt time) in a one-slot mailbox; one worker thread decodes it, runs the engine
and publishes, so the executor (parameter services, diagnostics) stays responsive and latency
never piles up. The worker is the only thread that touches the engine: parameter callbacks hand
it immutable :class:`Settings`, which it takes up before its next frame. The processing time,
the deadline and /diagnostics share one clock: from receipt to the last publish.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32

from ..core.checkpoint import CheckpointError, default_model_path, load_checkpoint, read_spec
from ..engine.engine import PRECISIONS, VBPEngine, output_problem, resolve_device
from ..engine.mailbox import LatestFrameMailbox
from ..engine.monitor import PipelineMonitor, stamp_problem
from ..engine.preprocess import Preprocessor
from ..interface import (COMPRESSED_IMAGE_TOPIC, DIAGNOSTICS_TOPIC, IMAGE_TOPIC, MASK_TOPIC,
                         OVERLAY_TOPIC, PIPELINE_LATENCY_TOPIC, PROCESSING_TIME_TOPIC,
                         STEERING_TOPIC, VBP_NODE)
from ..pixels.encodings import mask_to_mono8
from ..pixels.frames import FrameError, FrameSizeError
from ..pixels.overlay import DEFAULT_OVERLAY_WIDTH
from .diagnostics import diagnostic_array
from .messages import frame_of, header_ns, image_message
from .runner import one_line, run_node

CHOICES = {
    'input_transport': ('raw', 'compressed'),
    'input_qos': ('sensor_data', 'reliable', 'auto'),
    'mask_encoding': ('mono8', '32FC1'),
    'precision': tuple(PRECISIONS),
}
ENGINE_PARAMETERS = ('model', 'device', 'precision', 'cuda_graphs')
SUBSCRIPTION_PARAMETERS = ('input_transport', 'input_qos')
OUTPUT_QOS = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
WARN_PERIOD_S = 5.0
ERROR_HOLD_S = 10.0  # /diagnostics stays at ERROR this long after a failed or refused frame
WORKER_STOP_S = 30.0  # longest wait for the frame in hand at shutdown
FINAL_DIAGNOSTICS_S = 1.0  # longest wait for the last /diagnostics to be acknowledged
REMEMBERED_SIZES = 16  # frame sizes whose rule was logged; more distinct sizes start over


def _describe(kind: int, text: str, choices: tuple[str, ...] = (),
              low: float | None = None, high: float | None = None) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(type=kind, description=text)
    if choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(choices)
    if low is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    return descriptor


PARAMETERS = {
    'model': ('', _describe(ParameterType.PARAMETER_STRING,
                            "checkpoint path (vbp_ros safetensors); '' for the bundled default "
                            'model')),
    'device': ('auto', _describe(ParameterType.PARAMETER_STRING,
                                 'auto (CUDA when present), cpu, cuda or cuda:N')),
    'precision': ('fp32', _describe(ParameterType.PARAMETER_STRING, 'network precision',
                                    CHOICES['precision'])),
    'input_transport': ('raw', _describe(ParameterType.PARAMETER_STRING,
                                         "subscribe 'image' (raw) or 'image/compressed'",
                                         CHOICES['input_transport'])),
    'input_qos': ('sensor_data', _describe(
        ParameterType.PARAMETER_STRING, 'input QoS: best effort depth 1, reliable, or auto '
        '(reliable when every publisher is reliable)', CHOICES['input_qos'])),
    'deadline_ms': (33.3, _describe(ParameterType.PARAMETER_DOUBLE,
                                    'per-frame processing budget; 0 disables', low=0.0,
                                    high=10000.0)),
    'max_age_ms': (0.0, _describe(ParameterType.PARAMETER_DOUBLE,
                                  'drop frames whose header stamp is older than this; 0 off',
                                  low=0.0, high=60000.0)),
    'publish_overlay': (True, _describe(ParameterType.PARAMETER_BOOL,
                                        'publish vbp/overlay (only while subscribed)')),
    'mask_encoding': ('mono8', _describe(ParameterType.PARAMETER_STRING, 'vbp/mask encoding',
                                         CHOICES['mask_encoding'])),
    'overlay_alpha': (0.8, _describe(ParameterType.PARAMETER_DOUBLE, 'strength of the red mask',
                                     low=0.0, high=1.0)),
    'overlay_max_width': (DEFAULT_OVERLAY_WIDTH, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER,
        description='widest published overlay in pixels; a wider frame gives a proportionally '
                    'smaller overlay (never larger than the frame)',
        integer_range=[IntegerRange(from_value=16, to_value=8192, step=1)])),
    'cpu_threads': (0, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER, read_only=True,
        description='torch CPU threads (read at start); 0 keeps torch\'s default, one per '
                    'physical core',
        integer_range=[IntegerRange(from_value=0, to_value=256, step=1)])),
    'cuda_graphs': (False, _describe(ParameterType.PARAMETER_BOOL,
                                     'capture network and mask as a CUDA graph (CUDA only)')),
}


@dataclass(frozen=True)
class Settings:
    """What the worker reads per frame, replaced as a whole when parameters change."""

    engine: tuple  # values of ENGINE_PARAMETERS: a new tuple means a new engine
    overlay_alpha: float
    overlay_max_width: int
    deadline_ms: float
    max_age_ms: float
    publish_overlay: bool
    mask_float: bool


@dataclass(frozen=True)
class _Frame:
    message: Image | CompressedImage
    received: float  # time.perf_counter() at receipt


class VBPNode(Node):
    """The node ``vbp``: see the package README for topics and parameters."""

    def __init__(self) -> None:
        super().__init__(VBP_NODE)
        self._worker: threading.Thread | None = None  # destroy_node of a node that failed
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self._check_start_up_parameters()
        self.monitor = PipelineMonitor()
        self.mailbox = LatestFrameMailbox()
        self.settings = self._read_settings()
        self._reverting = False  # the worker's failed model is being taken back
        self._failed_engine: tuple | None = None
        self._model_error: str | None = None
        self._last_failure: tuple[float, str] | None = None  # (monotonic time, what)
        self._sizes_seen: set[tuple[int, int]] = set()
        self.engine = self._build_engine(self.settings.engine)
        self._engine_settings = self.settings.engine
        self._subscription = None
        self._subscribe()
        self.angle_pub = self.create_publisher(Float32, STEERING_TOPIC, OUTPUT_QOS)
        self.mask_pub = self.create_publisher(Image, MASK_TOPIC, OUTPUT_QOS)
        self.overlay_pub = self.create_publisher(Image, OVERLAY_TOPIC, OUTPUT_QOS)
        self.processing_pub = self.create_publisher(Float32, PROCESSING_TIME_TOPIC, 10)
        self.latency_pub = self.create_publisher(Float32, PIPELINE_LATENCY_TOPIC, 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.add_pre_set_parameters_callback(self._normalize_parameters)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._revert_request = self.create_guard_condition(self._revert_engine_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self._running = True
        self._worker = threading.Thread(target=self._work, name='vbp_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(f'ready: model {_model_path(self._param("model"))} on '
                               f'{self.engine.description}')

    # -- parameters ---------------------------------------------------------------------------

    def _param(self, name: str) -> object:
        return self.get_parameter(name).value

    def _check_start_up_parameters(self) -> None:
        """Start-up values get the run-time treatment: normalized, then validated; ValueError
        (one line, exit code 1) for the first invalid one."""
        declared = [self.get_parameter(name) for name in PARAMETERS]
        changed = [new for old, new in zip(declared, self._normalize_parameters(declared))
                   if new.value != old.value]
        if changed:
            self.set_parameters(changed)  # no callbacks are registered yet
        problem = self._problem({name: self._param(name) for name in PARAMETERS})
        if problem:
            raise ValueError(f'invalid start-up parameter: {problem}')

    def _read_settings(self) -> Settings:
        return Settings(engine=tuple(self._param(name) for name in ENGINE_PARAMETERS),
                        overlay_alpha=self._param('overlay_alpha'),
                        overlay_max_width=self._param('overlay_max_width'),
                        deadline_ms=self._param('deadline_ms'),
                        max_age_ms=self._param('max_age_ms'),
                        publish_overlay=self._param('publish_overlay'),
                        mask_float=self._param('mask_encoding') == '32FC1')

    def _build_engine(self, engine_settings: tuple) -> VBPEngine:
        settings = dict(zip(ENGINE_PARAMETERS, engine_settings))
        model, spec = load_checkpoint(_model_path(settings['model']))
        return VBPEngine(model, spec, device=settings['device'],
                         precision=settings['precision'], cuda_graphs=settings['cuda_graphs'],
                         threads=self._param('cpu_threads'))

    def _normalize_parameters(self, parameters: list[Parameter]) -> list[Parameter]:
        """Pre-set: enumerated strings are matched without regard to case or spaces."""
        normalized = []
        for parameter in parameters:
            if parameter.name in CHOICES or parameter.name == 'device':
                if parameter.type_ == Parameter.Type.STRING:
                    value = parameter.value.strip()
                    if parameter.name != 'mask_encoding':
                        value = value.lower()
                    parameter = Parameter(parameter.name, Parameter.Type.STRING, value)
            normalized.append(parameter)
        return normalized

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """On-set: refuse invalid values with a reason; the old values stay."""
        if self._reverting:  # the running engine's own values: nothing to check
            return SetParametersResult(successful=True)
        problem = self._problem({p.name: p.value for p in parameters})
        return _refuse(problem) if problem else SetParametersResult(successful=True)

    def _problem(self, changes: dict[str, object]) -> str | None:
        """What is wrong with these new values (with the others as they are), or None. Quick
        enough for the executor: a model is checked by its header, after making sure that it
        is a regular file (a FIFO would block); the worker loads it."""
        for name, value in changes.items():
            if name in CHOICES and value not in CHOICES[name]:
                return f'{name} must be one of {", ".join(CHOICES[name])}, not {value!r}'
        if set(changes) & {'model', 'device', 'cuda_graphs'}:
            settings = {name: changes.get(name, self._param(name)) for name in ENGINE_PARAMETERS}
            try:
                device = resolve_device(settings['device'])
                if settings['cuda_graphs'] and device.type != 'cuda':
                    return 'cuda_graphs needs a CUDA device'
                if 'model' in changes:
                    Preprocessor(read_spec(_model_path(settings['model'])))
            except ValueError as error:  # CheckpointError and FrameError too
                return str(error)
        return None

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        """Post-set: hand the worker the new settings (one assignment: it sees all or none)."""
        names = {p.name for p in parameters}
        if names & set(SUBSCRIPTION_PARAMETERS):
            self._subscribe()
        self.settings = self._read_settings()
        if self.settings.engine != self._engine_settings and not self._reverting:
            self.get_logger().info('engine settings changed; rebuilding before the next frame')

    def _revert_engine_parameters(self) -> None:
        """On the executor, at the worker's request: a model change that failed to load is
        taken back, so the parameters name the engine that runs."""
        running = dict(zip(ENGINE_PARAMETERS, self._engine_settings))
        changed = [Parameter(name, value=value) for name, value in running.items()
                   if self._param(name) != value]
        self._reverting = True
        try:
            self.set_parameters(changed)
        finally:
            self._reverting = False

    # -- input --------------------------------------------------------------------------------

    def _subscribe(self) -> None:
        compressed = self._param('input_transport') == 'compressed'
        topic, kind = ((COMPRESSED_IMAGE_TOPIC, CompressedImage) if compressed
                       else (IMAGE_TOPIC, Image))
        qos = self._input_qos(topic)
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
        self._subscription = self.create_subscription(kind, topic, self._on_frame, qos)
        reliability = 'reliable' if qos.reliability == QoSReliabilityPolicy.RELIABLE \
            else 'best effort'
        self.get_logger().info(f'subscribed to {self.resolve_topic_name(topic)} ({reliability})')

    def _input_qos(self, topic: str) -> QoSProfile:
        choice = self._param('input_qos')
        if choice == 'reliable':
            return QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE)
        if choice == 'auto':
            publishers = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
            if publishers and all(p.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE
                                  for p in publishers):
                return QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE)
        return qos_profile_sensor_data

    def _on_frame(self, message: Image | CompressedImage) -> None:
        self.monitor.count('received')
        self.mailbox.put(_Frame(message, time.perf_counter()))

    # -- worker -------------------------------------------------------------------------------

    def _work(self) -> None:
        """The worker loop: no exception ends it; each is counted, logged and reported at
        ERROR on /diagnostics, and the next frame is processed."""
        seen_drops = 0
        while self._running:
            frame = self.mailbox.get(timeout=0.1)
            drops = self.mailbox.dropped
            if drops != seen_drops:
                self.monitor.count('dropped_superseded', drops - seen_drops)
                seen_drops = drops
            if frame is None:
                continue
            try:
                self._handle(frame)
            except Exception as error:  # MemoryError too: keep serving, say what went wrong
                self._report_failure('frame failed', error)

    def _handle(self, frame: _Frame) -> None:
        settings = self.settings
        if settings.engine not in (self._engine_settings, self._failed_engine):
            self._rebuild_engine(settings.engine)
        self.engine.overlay_alpha = settings.overlay_alpha
        self.engine.overlay_max_width = settings.overlay_max_width
        try:
            self._process(frame, settings)
        except FrameSizeError as error:
            self._refuse_frame_size(error)
        except FrameError as error:
            self.monitor.count('dropped_invalid')
            self.get_logger().warning(f'dropped frame: {error}',
                                      throttle_duration_sec=WARN_PERIOD_S)

    def _report_failure(self, what: str, error: BaseException) -> None:
        self.monitor.count('errors')
        self._last_failure = (time.monotonic(), f'{what}: {one_line(error)}')
        self.get_logger().error(self._last_failure[1], throttle_duration_sec=WARN_PERIOD_S)

    def _refuse_frame_size(self, error: FrameSizeError) -> None:
        """Frames of a size the model cannot be used on: counted as invalid, reported at ERROR
        on /diagnostics, and logged once per size (not a warning per frame)."""
        self.monitor.count('dropped_invalid')
        self._last_failure = (time.monotonic(), str(error))
        if self._first_time_seen(str(error)):
            self.get_logger().error(str(error))

    def _first_time_seen(self, key: object) -> bool:
        if key in self._sizes_seen:
            return False
        if len(self._sizes_seen) >= REMEMBERED_SIZES:
            self._sizes_seen.clear()
        self._sizes_seen.add(key)
        return True

    def _rebuild_engine(self, engine_settings: tuple) -> None:
        """Build the engine of new settings; on failure keep the running one, say so on
        /diagnostics and take the parameters back to what runs."""
        try:
            self.engine = self._build_engine(engine_settings)
        except Exception as error:  # a model deleted since its check, CUDA out of memory...
            self._failed_engine = engine_settings
            running = self._engine_settings[0] or 'the bundled default'
            self._model_error = (f'engine settings {engine_settings} failed to load '
                                 f'({one_line(error)}); still running model {running}')
            self.get_logger().error(self._model_error)
            self._revert_request.trigger()
            return
        self._engine_settings, self._failed_engine, self._model_error = \
            engine_settings, None, None
        self._sizes_seen.clear()
        self.get_logger().info(f'engine rebuilt: {engine_settings[0] or "bundled default"} '
                               f'on {self.engine.description}')

    def _process(self, frame: _Frame, settings: Settings) -> None:
        header = frame.message.header
        stamp = header_ns(header)
        unusable = stamp_problem(stamp, self._now_ns())
        if unusable:
            self.monitor.count('bad_stamps')
            self.get_logger().warning(f'frame stamp {unusable}: kept out of the latency '
                                      'figures', throttle_duration_sec=WARN_PERIOD_S)
        if settings.max_age_ms > 0 and self._stale(stamp, unusable, settings.max_age_ms):
            return
        image, order = frame_of(frame.message)
        self._log_frame_size(image.shape)
        overlay = settings.publish_overlay and self.overlay_pub.get_subscription_count() > 0
        result = self.engine.process(image, order=order, overlay=overlay)
        problem = output_problem(result, self.engine.spec)
        if problem:
            self.monitor.count('dropped_bad_output')
            self.get_logger().warning(f'not published: {problem}',
                                      throttle_duration_sec=WARN_PERIOD_S)
            return
        self.angle_pub.publish(Float32(data=result.angle))
        self.mask_pub.publish(self._mask_message(header, result.mask, settings.mask_float))
        if result.overlay is not None:
            self.overlay_pub.publish(image_message(result.overlay, 'rgb8', header))
            self.monitor.count('overlays')
        latency_ms = None if unusable else (self._now_ns() - stamp) / 1e6
        processing_ms = (time.perf_counter() - frame.received) * 1e3
        self.processing_pub.publish(Float32(data=processing_ms))
        if latency_ms is not None:
            self.latency_pub.publish(Float32(data=latency_ms))
        self.monitor.frame_done(processing_ms, latency_ms, settings.deadline_ms)

    def _stale(self, stamp: int, unusable: str | None, max_age_ms: float) -> bool:
        """Whether max_age_ms drops this frame: too old, or of unknown age (a zero, negative
        or future stamp cannot show that the frame is fresh)."""
        age_ms = (self._now_ns() - stamp) / 1e6
        if not unusable and age_ms <= max_age_ms:
            return False
        self.monitor.count('dropped_stale')
        reason = f'stamp {unusable}' if unusable else f'{age_ms:.0f} ms old'
        self.get_logger().warning(f'dropped stale frame ({reason}; max_age_ms {max_age_ms:g})',
                                  throttle_duration_sec=WARN_PERIOD_S)
        return True

    def _log_frame_size(self, shape: tuple[int, ...]) -> None:
        """Say once per frame size which part of the frame the network sees."""
        size = (shape[1], shape[0])
        if self._first_time_seen(size):
            try:
                rule = self.engine.preprocess.rule(shape)
            except FrameSizeError:
                return  # refused, and said so, by _refuse_frame_size
            self.get_logger().info(f'frames of {size[0]}x{size[1]}: the network sees {rule}')

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    @staticmethod
    def _mask_message(header: object, mask: np.ndarray, as_float: bool) -> Image:
        if as_float:
            return image_message(mask, '32FC1', header)
        return image_message(mask_to_mono8(mask), 'mono8', header)

    # -- diagnostics --------------------------------------------------------------------------

    def _status(self, totals: dict[str, int], rates: dict[str, float]) -> tuple[bytes, str]:
        """The level and message of /diagnostics: ERROR for a model that failed to load or a
        recent failed or refused frame, WARN for dropped or doubtful frames."""
        recent = self._last_failure
        if self._model_error:
            return DiagnosticStatus.ERROR, self._model_error
        if recent and time.monotonic() - recent[0] < ERROR_HOLD_S:
            return DiagnosticStatus.ERROR, recent[1]
        if totals['received'] and rates['received'] and not rates['processed']:
            return DiagnosticStatus.WARN, 'receiving frames but processing none'
        doubtful = [text for key, text in (
            ('deadline_misses', 'deadline misses'), ('dropped_invalid', 'invalid frames'),
            ('dropped_bad_output', 'unpublishable outputs'), ('bad_stamps', 'bad stamps'),
            ('errors', 'failed frames')) if totals[key]]
        if doubtful:
            return DiagnosticStatus.WARN, ', '.join(doubtful) + ' seen'
        return DiagnosticStatus.OK, 'ok'

    def _publish_diagnostics(self, final: bool = False) -> None:
        snapshot = self.monitor.snapshot()
        totals = snapshot.totals
        level, message = self._status(totals, snapshot.rates_hz)
        latency, processing = snapshot.latency_ms or {}, snapshot.processing_ms or {}
        values = {
            'frames received': totals['received'], 'frames processed': totals['processed'],
            'dropped (superseded by a newer frame)': totals['dropped_superseded'],
            'dropped (stale)': totals['dropped_stale'],
            'dropped (invalid)': totals['dropped_invalid'],
            'dropped (unpublishable output)': totals['dropped_bad_output'],
            'dropped (failed)': totals['errors'],
            'frames with unusable stamps': totals['bad_stamps'],
            'deadline misses': totals['deadline_misses'],
            'overlays published': totals['overlays'],
            'input rate (Hz)': f'{snapshot.rates_hz["received"]:.1f}',
            'output rate (Hz)': f'{snapshot.rates_hz["processed"]:.1f}',
            'pipeline latency p50 (ms)': _milliseconds(latency.get('p50')),
            'pipeline latency p99 (ms)': _milliseconds(latency.get('p99')),
            'processing time p50 (ms)': _milliseconds(processing.get('p50')),
            'processing time p99 (ms)': _milliseconds(processing.get('p99')),
            'deadline (ms)': self.settings.deadline_ms,
            'device': self.engine.description,
            'model': self._engine_settings[0] or 'bundled default',
        }
        if final:
            message = f'stopped; {message}'
        self.diagnostics_pub.publish(diagnostic_array(
            self, 'pipeline', level, message, self.engine.description, values))

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the frame in hand), publish the final counts, then
        destroy the node."""
        if self._worker is not None:
            self._running = False
            self.mailbox.close()
            self._worker.join(timeout=WORKER_STOP_S)
            if self._worker.is_alive():
                self.get_logger().error(f'worker still busy after {WORKER_STOP_S:.0f} s')
            self._publish_diagnostics(final=True)
            self.diagnostics_pub.wait_for_all_acked(Duration(seconds=FINAL_DIAGNOSTICS_S))
            self._worker = None
        super().destroy_node()


def _milliseconds(value: float | None) -> str:
    return 'nan' if value is None else f'{value:.2f}'


def _model_path(model: str) -> Path:
    """The checkpoint to load: the given path, or the bundled default model for ''."""
    if model:
        return Path(model)
    default = default_model_path()
    if not default.is_file():
        raise CheckpointError(
            "no model given and no bundled default model: set the 'model' parameter to a "
            'vbp_ros checkpoint, e.g. --ros-args -p model:=/path/to/model.safetensors')
    return default


def _refuse(reason: str) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=reason)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``vbp_node``."""
    return run_node(VBPNode, 'vbp', args)


if __name__ == '__main__':
    raise SystemExit(main())
