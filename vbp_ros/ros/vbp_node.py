"""vbp_node: camera images in; steering angle, all outputs, VisualBackProp mask and overlay out.

A thin ROS 2 adapter around :class:`vbp_ros.engine.engine.VBPEngine`: parameters, QoS,
messages, publishing and diagnostics. The subscription callback only stores the newest frame
(with its receipt time) in a one-slot mailbox; one worker thread decodes it, runs the engine
and publishes, so the executor (parameter services, diagnostics) stays responsive and latency
never piles up. The worker is the only thread that runs the engine: parameter callbacks hand
it immutable :class:`Settings`, which it takes up before its next frame. The processing time,
the deadline and /diagnostics share one clock: from receipt to the last publish.

Validation before acceptance: a change of ``model``, ``model_card``, ``card_overrides``,
``backend``, ``device``, ``precision`` or ``cuda_graphs`` builds the new engine and warms it up
on a blank frame of the card's size in a builder thread (:meth:`VBPNode._build_candidate`),
while the old engine keeps serving frames and the node's other callbacks keep running (a
multi-threaded executor; the parameter service waits alone). Only an engine that built is
accepted and swapped in; otherwise the change is refused with the reason. /diagnostics names
the model that is running.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32, Float32MultiArray, MultiArrayDimension

from ..engine.build import build_engine
from ..engine.engine import BACKENDS, PRECISIONS, VBPEngine
from ..engine.mailbox import LatestFrameMailbox
from ..engine.monitor import PipelineMonitor
from ..interface import (COMPRESSED_IMAGE_TOPIC, DIAGNOSTICS_TOPIC, IMAGE_TOPIC, MASK_TOPIC,
                         OUTPUTS_TOPIC, OVERLAY_TOPIC, PIPELINE_LATENCY_TOPIC,
                         PROCESSING_TIME_TOPIC, STEERING_TOPIC, VBP_NODE)
from ..pixels.encodings import mask_to_mono8
from ..pixels.frames import FrameError
from .diagnostics import diagnostic_array
from .messages import frame_of, header_ns, image_message
from .runner import run_node

CHOICES = {
    'input_transport': ('raw', 'compressed'),
    'input_qos': ('sensor_data', 'reliable', 'auto'),
    'mask_encoding': ('mono8', '32FC1'),
    'precision': tuple(PRECISIONS),
    'backend': BACKENDS,
}
ENGINE_PARAMETERS = ('model', 'model_card', 'card_overrides', 'backend', 'device', 'precision',
                     'cuda_graphs')
SUBSCRIPTION_PARAMETERS = ('input_transport', 'input_qos')
OUTPUT_QOS = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
WARN_PERIOD_S = 5.0
BUILD_TIMEOUT_S = 300.0  # a model change whose engine is not built by then is refused
EXECUTOR_THREADS = 3  # parameter service (may wait for a build), frames, diagnostics


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
                            'model file: a vbp_ros checkpoint or safetensors weights of your own '
                            "network (.safetensors), or an ONNX file (.onnx); '' for the bundled "
                            'default model')),
    'model_card': ('', _describe(ParameterType.PARAMETER_STRING,
                                 "model card (YAML); '' for the card beside the model (same "
                                 "stem, .yaml), or a vbp_ros checkpoint's own")),
    'card_overrides': ('', _describe(ParameterType.PARAMETER_STRING,
                                     "card values that win over the card's, as YAML, e.g. "
                                     "'{output.index: 1, input.color: bgr}'")),
    'backend': ('auto', _describe(ParameterType.PARAMETER_STRING,
                                  'torch, onnxruntime (mask inside the ONNX graph), or auto: '
                                  'onnxruntime for ONNX models and on the CPU, else torch',
                                  CHOICES['backend'])),
    'device': ('auto', _describe(ParameterType.PARAMETER_STRING,
                                 'auto (CUDA when present), cpu, cuda or cuda:N; tensorrt[:N] '
                                 'with onnxruntime')),
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

    engine: VBPEngine  # built and warmed up before it was accepted
    overlay_alpha: float
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
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        self.monitor = PipelineMonitor()
        self.mailbox = LatestFrameMailbox()
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix='vbp_build')
        self._candidate: VBPEngine | None = None  # built by the on-set callback, not yet taken
        self.engine = self._build_engine(self._engine_values())
        self.settings = self._read_settings(self.engine)
        # Frames and diagnostics never wait for the parameter service (which may be building).
        self._io_group = ReentrantCallbackGroup()
        self._subscription = None
        self._subscribe()
        self.angle_pub = self.create_publisher(Float32, STEERING_TOPIC, OUTPUT_QOS)
        self.outputs_pub = self.create_publisher(Float32MultiArray, OUTPUTS_TOPIC, OUTPUT_QOS)
        self.mask_pub = self.create_publisher(Image, MASK_TOPIC, OUTPUT_QOS)
        self.overlay_pub = self.create_publisher(Image, OVERLAY_TOPIC, OUTPUT_QOS)
        self.processing_pub = self.create_publisher(Float32, PROCESSING_TIME_TOPIC, 10)
        self.latency_pub = self.create_publisher(Float32, PIPELINE_LATENCY_TOPIC, 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.add_pre_set_parameters_callback(self._normalize_parameters)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._io_group)
        self._running = True
        self._worker = threading.Thread(target=self._work, name='vbp_worker', daemon=True)
        self._worker.start()
        self.get_logger().info(f'ready: model {self.engine.model_name} on '
                               f'{self.engine.description}{_note(self.engine)}')

    # -- parameters ---------------------------------------------------------------------------

    def _param(self, name: str) -> object:
        return self.get_parameter(name).value

    def _engine_values(self, changes: dict | None = None) -> dict[str, object]:
        """The engine parameters, with ``changes`` (not yet set) in place of the current."""
        return {name: (changes or {}).get(name, self._param(name)) for name in ENGINE_PARAMETERS}

    def _read_settings(self, engine: VBPEngine) -> Settings:
        return Settings(engine=engine,
                        overlay_alpha=self._param('overlay_alpha'),
                        deadline_ms=self._param('deadline_ms'),
                        max_age_ms=self._param('max_age_ms'),
                        publish_overlay=self._param('publish_overlay'),
                        mask_float=self._param('mask_encoding') == '32FC1')

    def _build_engine(self, values: dict[str, object]) -> VBPEngine:
        """Load the model and its card, build the engine and warm it up (ValueError if any of
        it fails: the message is the reason)."""
        return build_engine(values['model'], values['model_card'], values['card_overrides'],
                            backend=values['backend'], device=values['device'],
                            precision=values['precision'], cuda_graphs=values['cuda_graphs'],
                            threads=self._param('cpu_threads'),
                            overlay_alpha=self._param('overlay_alpha'))

    def _build_candidate(self, values: dict[str, object]) -> VBPEngine | str:
        """The engine for new parameter values, built in the builder thread while the old one
        keeps serving; the reason it could not be built otherwise."""
        future = self._builder.submit(self._build_engine, values)
        try:
            return future.result(timeout=BUILD_TIMEOUT_S)
        except FutureTimeout:
            return f'the new engine was not built within {BUILD_TIMEOUT_S:.0f} s'
        except (ValueError, RuntimeError, OSError) as error:
            return str(error)

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
        changes = {p.name: p.value for p in parameters}
        for name, value in changes.items():
            if name in CHOICES and value not in CHOICES[name]:
                return _refuse(f'{name} must be one of {", ".join(CHOICES[name])}, '
                               f'not {value!r}')
        self._candidate = None
        if set(changes) & set(ENGINE_PARAMETERS):
            candidate = self._build_candidate(self._engine_values(changes))
            if isinstance(candidate, str):
                self.get_logger().error(f'refused {", ".join(sorted(changes))}: {candidate}; '
                                        f'still running {self.engine.model_name}')
                return _refuse(candidate)
            self._candidate = candidate
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        """Post-set: hand the worker the new settings (one assignment: it sees all or none),
        with the engine that the on-set callback built, if any."""
        names = {p.name for p in parameters}
        if names & set(SUBSCRIPTION_PARAMETERS):
            self._subscribe()
        engine, self._candidate = self._candidate or self.settings.engine, None
        self.settings = self._read_settings(engine)

    # -- input --------------------------------------------------------------------------------

    def _subscribe(self) -> None:
        compressed = self._param('input_transport') == 'compressed'
        topic, kind = ((COMPRESSED_IMAGE_TOPIC, CompressedImage) if compressed
                       else (IMAGE_TOPIC, Image))
        qos = self._input_qos(topic)
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
        self._subscription = self.create_subscription(kind, topic, self._on_frame, qos,
                                                      callback_group=self._io_group)
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
        seen_drops = 0
        while self._running:
            frame = self.mailbox.get(timeout=0.1)
            drops = self.mailbox.dropped
            if drops != seen_drops:
                self.monitor.count('dropped_superseded', drops - seen_drops)
                seen_drops = drops
            if frame is None:
                continue
            settings = self.settings
            if settings.engine is not self.engine:
                self._swap_engine(settings.engine)
            self.engine.overlay_alpha = settings.overlay_alpha
            try:
                self._process(frame, settings)
            except FrameError as error:
                self.monitor.count('dropped_invalid')
                self.get_logger().warning(f'dropped frame: {error}',
                                          throttle_duration_sec=WARN_PERIOD_S)
            except Exception as error:  # keep serving; report what went wrong
                if not rclpy.ok():
                    return
                self.monitor.count('dropped_invalid')
                self.get_logger().error(f'frame failed: {type(error).__name__}: {error}',
                                        throttle_duration_sec=WARN_PERIOD_S)

    def _swap_engine(self, engine: VBPEngine) -> None:
        """Take up an accepted engine (worker thread only, between frames)."""
        self.engine = engine
        self.get_logger().info(f'now running {engine.model_name} on '
                               f'{engine.description}{_note(engine)}')

    def _process(self, frame: _Frame, settings: Settings) -> None:
        header = frame.message.header
        if settings.max_age_ms > 0 and header_ns(header):
            age_ms = self._age_ms(header)
            if age_ms > settings.max_age_ms:
                self.monitor.count('dropped_stale')
                self.get_logger().warning(f'dropped stale frame ({age_ms:.0f} ms old)',
                                          throttle_duration_sec=WARN_PERIOD_S)
                return
        image, order = frame_of(frame.message)
        overlay = settings.publish_overlay and self.overlay_pub.get_subscription_count() > 0
        result = self.engine.process(image, order=order, overlay=overlay)
        if not result.finite:
            self._count_nonfinite(result)
            return
        self.angle_pub.publish(Float32(data=result.angle))
        self.outputs_pub.publish(_outputs_message(result.outputs))
        self.mask_pub.publish(self._mask_message(header, result.mask, settings.mask_float))
        if result.overlay is not None:
            self.overlay_pub.publish(image_message(result.overlay, 'rgb8', header))
            self.monitor.count('overlays')
        latency_ms = self._age_ms(header)
        processing_ms = (time.perf_counter() - frame.received) * 1e3
        self.processing_pub.publish(Float32(data=processing_ms))
        self.latency_pub.publish(Float32(data=latency_ms))
        self.monitor.frame_done(processing_ms, latency_ms, settings.deadline_ms)

    def _count_nonfinite(self, result: object) -> None:
        """A frame whose outputs or mask are NaN or infinite: nothing of it is published."""
        self.monitor.count('nonfinite_outputs')
        self.get_logger().warning(
            f'network gave non-finite outputs {np.array2string(result.outputs, threshold=8)} '
            'for a frame; nothing published for it', throttle_duration_sec=WARN_PERIOD_S)

    def _age_ms(self, header: object) -> float:
        return (self.get_clock().now().nanoseconds - header_ns(header)) / 1e6

    @staticmethod
    def _mask_message(header: object, mask: np.ndarray, as_float: bool) -> Image:
        if as_float:
            return image_message(mask, '32FC1', header)
        return image_message(mask_to_mono8(mask), 'mono8', header)

    # -- diagnostics --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        snapshot = self.monitor.snapshot()
        totals = snapshot.totals
        level = DiagnosticStatus.OK
        message = 'ok'
        if totals['received'] and not snapshot.rates_hz['processed'] and \
                snapshot.rates_hz['received']:
            level, message = DiagnosticStatus.WARN, 'receiving frames but processing none'
        elif totals['nonfinite_outputs']:
            level, message = DiagnosticStatus.WARN, 'non-finite network outputs seen'
        elif totals['deadline_misses'] or totals['dropped_invalid']:
            level, message = DiagnosticStatus.WARN, 'deadline misses or invalid frames seen'
        latency, processing = snapshot.latency_ms or {}, snapshot.processing_ms or {}
        values = {
            'frames received': totals['received'], 'frames processed': totals['processed'],
            'dropped (superseded by a newer frame)': totals['dropped_superseded'],
            'dropped (stale)': totals['dropped_stale'],
            'dropped (invalid)': totals['dropped_invalid'],
            'non-finite outputs (not published)': totals['nonfinite_outputs'],
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
            'model': self.engine.model_name,  # the engine running, not the parameter
            'backend': self.engine.backend + _note(self.engine),
        }
        self.diagnostics_pub.publish(diagnostic_array(
            self, 'pipeline', level, message, self.engine.description, values))

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the frame in hand), then the node."""
        self._running = False
        self.mailbox.close()
        self._worker.join(timeout=5.0)
        self._builder.shutdown(wait=False, cancel_futures=True)
        super().destroy_node()


def _milliseconds(value: float | None) -> str:
    return 'nan' if value is None else f'{value:.2f}'


def _note(engine: VBPEngine) -> str:
    return f' ({engine.backend_note})' if engine.backend_note else ''


def _outputs_message(outputs: np.ndarray) -> Float32MultiArray:
    """All of a frame's network outputs, flattened, in order."""
    message = Float32MultiArray(data=outputs.astype(np.float32).tolist())
    message.layout.dim = [MultiArrayDimension(label='outputs', size=len(outputs),
                                              stride=len(outputs))]
    return message


def _refuse(reason: str) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=reason)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``vbp_node``."""
    return run_node(VBPNode, 'vbp', args, executor_threads=EXECUTOR_THREADS)


if __name__ == '__main__':
    raise SystemExit(main())
