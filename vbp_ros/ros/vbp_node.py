"""vbp_node: camera images in; steering angle, all outputs, VisualBackProp mask and overlay out.

A thin ROS 2 adapter around :class:`vbp_ros.engine.engine.VBPEngine`: parameters, QoS,
messages, publishing and diagnostics. The subscription callbacks only store the newest frame of
each camera (with its receipt time) in a mailbox; one worker thread takes the newest frame of
every camera at once, decodes them, runs them through the engine as one batch and publishes
each camera's outputs, so the executor (parameter services, diagnostics) stays responsive and
latency never piles up. The worker is the only thread that runs the engine: parameter
callbacks hand it immutable :class:`Settings`, which it takes up before its next frames. The
processing time, the deadline and /diagnostics share one clock: from receipt to the last
publish.

Several cameras (``image_topics``): one subscription per camera, its outputs under the
camera's name (``front/steering_angle``, ``front/vbp/mask``, ...); the worker waits for the
other cameras at most ``batch_wait_ms`` after the first frame, and only for cameras that
delivered within ``camera_stale_ms``, so a camera that falls quiet holds nobody up.

Live view (``foxglove_port``): a Foxglove WebSocket server (:mod:`vbp_ros.live`) with the
outputs as JPEG images and JSON, encoded in the worker after the ROS outputs are published and
only while a client subscribes.

Validation before acceptance: a change of ``model``, ``model_card``, ``card_overrides``,
``backend``, ``device``, ``precision`` or ``cuda_graphs`` builds the new engine and warms it up
on a blank frame of the card's size in a builder thread (:meth:`VBPNode._build_candidate`),
while the old engine keeps serving frames and the node's other callbacks keep running (a
multi-threaded executor; the parameter service waits alone). Only an engine that built is
accepted and swapped in; otherwise the change is refused with the reason, the parameters keep
their values and the old model keeps running. /diagnostics names the model that runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32, Float32MultiArray, MultiArrayDimension

from ..engine.build import build_engine
from ..engine.engine import BACKENDS, PRECISIONS, FrameResult, VBPEngine, output_problem
from ..engine.mailbox import LatestFrameMailbox
from ..engine.monitor import PipelineMonitor, stamp_problem
from ..interface import (COMPRESSED_IMAGE_TOPIC, DIAGNOSTICS_TOPIC, IMAGE_TOPIC, MASK_TOPIC,
                         OUTPUTS_TOPIC, OVERLAY_TOPIC, PIPELINE_LATENCY_TOPIC,
                         PROCESSING_TIME_TOPIC, STEERING_TOPIC, VBP_NODE, camera_name,
                         camera_topic)
from ..live.foxglove_view import CameraTopics, LiveFrame, LiveView
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
    'backend': BACKENDS,
}
ENGINE_PARAMETERS = ('model', 'model_card', 'card_overrides', 'backend', 'device', 'precision',
                     'cuda_graphs')
SUBSCRIPTION_PARAMETERS = ('input_transport', 'input_qos')
OUTPUT_QOS = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
WARN_PERIOD_S = 5.0
ERROR_HOLD_S = 10.0  # /diagnostics stays at ERROR this long after a failed or refused frame
WORKER_STOP_S = 30.0  # longest wait for the frame in hand at shutdown
FINAL_DIAGNOSTICS_S = 1.0  # longest wait for the last /diagnostics to be acknowledged
REMEMBERED_SIZES = 16  # frame sizes whose rule was logged; more distinct sizes start over
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
    'overlay_max_width': (DEFAULT_OVERLAY_WIDTH, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER,
        description='widest published overlay (and live-view camera picture) in pixels; a '
                    'wider frame gives a proportionally smaller one (never larger than the '
                    'frame)',
        integer_range=[IntegerRange(from_value=16, to_value=8192, step=1)])),
    'cpu_threads': (0, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER, read_only=True,
        description='torch CPU threads (read at start); 0 keeps torch\'s default, one per '
                    'physical core',
        integer_range=[IntegerRange(from_value=0, to_value=256, step=1)])),
    'cuda_graphs': (False, _describe(ParameterType.PARAMETER_BOOL,
                                     'capture network and mask as a CUDA graph (CUDA only)')),
    'image_topics': ([], ParameterDescriptor(
        type=ParameterType.PARAMETER_STRING_ARRAY, read_only=True,
        description="cameras processed as one batch, one image topic each; a camera's outputs "
                    'go under its name (the topic\'s namespace: /front/image_raw -> '
                    "front/steering_angle, front/vbp/mask ...); []: the one topic 'image'")),
    'camera_batch': (0, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER, read_only=True,
        description='several cameras: most frames in one forward pass; 0: every camera '
                    '(1: one pass per camera, faster on some CPUs: see vbp-bench --cameras)',
        integer_range=[IntegerRange(from_value=0, to_value=64, step=1)])),
    'camera_stale_ms': (500.0, _describe(ParameterType.PARAMETER_DOUBLE,
                                         'several cameras: one whose newest frame is older than '
                                         'this is not waited for', low=1.0, high=60000.0)),
    'batch_wait_ms': (15.0, _describe(ParameterType.PARAMETER_DOUBLE,
                                      'several cameras: how long the first frame waits for '
                                      'the other live cameras to join its batch', low=0.0,
                                      high=1000.0)),
    'foxglove_port': (0, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER, read_only=True,
        description='live view for Foxglove/Lichtblick (WebSocket) on this port; 0: off',
        integer_range=[IntegerRange(from_value=0, to_value=65535, step=1)])),
    'foxglove_address': ('127.0.0.1', ParameterDescriptor(
        type=ParameterType.PARAMETER_STRING, read_only=True,
        description='address the live view listens on; another than 127.0.0.1 exposes the '
                    'camera and the masks to that network')),
    'foxglove_jpeg_quality': (80, ParameterDescriptor(
        type=ParameterType.PARAMETER_INTEGER, read_only=True,
        description='JPEG quality of the live view',
        integer_range=[IntegerRange(from_value=1, to_value=100, step=1)])),
    'foxglove_max_rate_hz': (15.0, ParameterDescriptor(
        type=ParameterType.PARAMETER_DOUBLE, read_only=True,
        description='most live-view frames a second per camera; 0: every frame',
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1000.0)])),
}


@dataclass(frozen=True)
class Settings:
    """What the worker reads per frame, replaced as a whole when parameters change."""

    engine: VBPEngine  # built and warmed up before it was accepted
    overlay_alpha: float
    overlay_max_width: int
    deadline_ms: float
    max_age_ms: float
    publish_overlay: bool
    mask_float: bool
    camera_stale_s: float
    batch_wait_s: float


@dataclass(frozen=True)
class _Frame:
    message: Image | CompressedImage
    received: float  # time.perf_counter() at receipt


@dataclass
class _Camera:
    """One camera: its input topic and the publishers of its outputs."""

    name: str  # the mailbox key and the namespace of its outputs ('' for the node's own)
    topic: str
    angle: object
    outputs: object
    mask: object
    overlay: object
    processing: object
    latency: object
    subscription: object | None = None


@dataclass(frozen=True)
class _Ready:
    """A camera's frame, decoded and found fit for the network."""

    camera: _Camera
    frame: _Frame
    image: np.ndarray
    order: str
    stamp: int
    unusable: str | None  # why the stamp gives no latency, if it does not


class VBPPipeline:
    """What vbp_node does, for a :class:`~rclpy.node.Node` or a lifecycle node to mix in.

    The stages follow the managed-node life cycle: :meth:`_init_pipeline` (parameters,
    diagnostics), :meth:`_configure_pipeline` (the model, the publishers),
    :meth:`_activate_pipeline` (subscriptions, worker, live view),
    :meth:`_deactivate_pipeline`, :meth:`_release_engine` and :meth:`_cleanup_pipeline`.
    """

    def _init_pipeline(self) -> None:
        self._worker: threading.Thread | None = None
        self.engine: VBPEngine | None = None
        self.settings: Settings | None = None
        self.cameras: dict[str, _Camera] = {}
        self.live: LiveView | None = None
        self.state = 'unconfigured'
        self._running = False
        for name, (default, descriptor) in PARAMETERS.items():
            # An empty list would be typed as bytes: such a parameter is declared by its type.
            self.declare_parameter(name, Parameter.Type.STRING_ARRAY if default == [] else
                                   default, descriptor)
        self._check_start_up_parameters()
        self.monitor = PipelineMonitor()
        self.mailbox = LatestFrameMailbox(list(self._camera_topics()))
        self._processed_by_camera: Counter[str] = Counter()
        self._last_failure: tuple[float, str] | None = None  # (monotonic time, what)
        self._sizes_seen: set[tuple[int, int]] = set()
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix='vbp_build')
        self._candidate: VBPEngine | None = None  # built by the on-set callback, not yet taken
        # Frames and diagnostics never wait for the parameter service (which may be building).
        self._io_group = ReentrantCallbackGroup()
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.add_pre_set_parameters_callback(self._normalize_parameters)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=self._io_group)

    def _configure_pipeline(self) -> None:
        """Load and validate the model (the engine, warmed up) and make the publishers."""
        self._set_engine(self._build_engine(self._engine_values()))
        self.cameras = {name: self._make_camera(name, topic)
                        for name, topic in self._camera_topics().items()}
        self.state = 'inactive'

    def _activate_pipeline(self) -> None:
        """Subscribe, start the worker and the live view (rebuilding an engine released by a
        deactivation)."""
        if self.engine is None:
            self._set_engine(self._build_engine(self._engine_values()))
        for name, topic in self._camera_topics().items():  # input_transport may have changed
            self.cameras[name].topic = topic
        self._start_live_view()
        for camera in self.cameras.values():
            self._subscribe(camera)
        self._running = True
        self._worker = threading.Thread(target=self._work, name='vbp_worker', daemon=True)
        self._worker.start()
        self.state = 'active'
        self.get_logger().info(f'ready: model {self.engine.model_name} on '
                               f'{self.engine.description}{_note(self.engine)}; cameras '
                               f'{", ".join(self._camera_inputs())}')

    def _deactivate_pipeline(self) -> None:
        """Stop receiving and processing: the worker finishes the frames in hand."""
        for camera in self.cameras.values():
            if camera.subscription is not None:
                self.destroy_subscription(camera.subscription)
                camera.subscription = None
        if self._worker is not None:
            self._running = False
            self.mailbox.close()
            self._worker.join(timeout=WORKER_STOP_S)
            if self._worker.is_alive():
                self.get_logger().error(f'worker still busy after {WORKER_STOP_S:.0f} s')
            self._worker = None
            self.mailbox = LatestFrameMailbox(list(self.cameras) or [''])
        if self.live is not None:
            self.live.close()
            self.live = None
        self.state = 'inactive'

    def _release_engine(self) -> None:
        """Drop the engine and give its device memory back (a deactivated managed node)."""
        for engine in {self.engine, self._candidate} - {None}:
            engine.close()
        self.engine = self._candidate = self.settings = None

    def _cleanup_pipeline(self) -> None:
        """Drop the model and the publishers."""
        self._release_engine()
        for camera in self.cameras.values():
            for publisher in (camera.angle, camera.outputs, camera.mask, camera.overlay,
                              camera.processing, camera.latency):
                self.destroy_publisher(publisher)
        self.cameras = {}
        self.state = 'unconfigured'

    def _finish_pipeline(self) -> None:
        """At shutdown: stop, publish the final counts."""
        if self._worker is not None:
            self._deactivate_pipeline()
            self._publish_diagnostics(final=True)
            self.diagnostics_pub.wait_for_all_acked(Duration(seconds=FINAL_DIAGNOSTICS_S))
        self._builder.shutdown(wait=False, cancel_futures=True)

    # -- parameters ---------------------------------------------------------------------------

    def _param(self, name: str) -> object:
        return self._parameter(name).value

    def _parameter(self, name: str) -> Parameter:
        """A parameter, its default where it is declared by type alone and has no value."""
        default = PARAMETERS[name][0]
        return self.get_parameter_or(name, Parameter(name, value=default) if default != []
                                     else Parameter(name, Parameter.Type.STRING_ARRAY, []))

    def _check_start_up_parameters(self) -> None:
        """Start-up values get the run-time treatment: normalized, then validated; ValueError
        (one line, exit code 1) for the first invalid one."""
        declared = [self._parameter(name) for name in PARAMETERS]
        changed = [new for old, new in zip(declared, self._normalize_parameters(declared))
                   if new.value != old.value]
        if changed:
            self.set_parameters(changed)  # no callbacks are registered yet
        problem = (self._problem({name: self._param(name) for name in PARAMETERS})
                   or self._camera_problem())
        if problem:
            raise ValueError(f'invalid start-up parameter: {problem}')

    def _camera_topics(self) -> dict[str, str]:
        """The cameras by name, with their input topics (one unnamed camera by default)."""
        topics = list(self._param('image_topics'))
        compressed = self._param('input_transport') == 'compressed'
        if not topics:
            return {'': COMPRESSED_IMAGE_TOPIC if compressed else IMAGE_TOPIC}
        return {camera_name(topic): f'{topic}/compressed' if compressed else topic
                for topic in topics}

    def _camera_problem(self) -> str | None:
        topics = list(self._param('image_topics'))
        try:
            names = [camera_name(topic) for topic in topics]
        except ValueError as error:
            return f'image_topics: {error}'
        if len(set(names)) != len(names):
            return (f'image_topics {topics} give cameras of the same name {names}: a camera is '
                    "named by its topic's namespace (/front/image_raw -> front)")
        return None

    def _batch_size(self) -> int:
        """Most frames in one forward pass: every camera, or at most ``camera_batch``."""
        cameras = len(self._camera_topics())
        return min(self._param('camera_batch') or cameras, cameras)

    def _camera_inputs(self) -> list[str]:
        return [self.resolve_topic_name(camera.topic) for camera in self.cameras.values()]

    def _engine_values(self, changes: dict | None = None) -> dict[str, object]:
        """The engine parameters, with ``changes`` (not yet set) in place of the current."""
        return {name: (changes or {}).get(name, self._param(name)) for name in ENGINE_PARAMETERS}

    def _read_settings(self, engine: VBPEngine) -> Settings:
        return Settings(engine=engine,
                        overlay_alpha=self._param('overlay_alpha'),
                        overlay_max_width=self._param('overlay_max_width'),
                        deadline_ms=self._param('deadline_ms'),
                        max_age_ms=self._param('max_age_ms'),
                        publish_overlay=self._param('publish_overlay'),
                        mask_float=self._param('mask_encoding') == '32FC1',
                        camera_stale_s=self._param('camera_stale_ms') / 1e3,
                        batch_wait_s=self._param('batch_wait_ms') / 1e3)

    def _set_engine(self, engine: VBPEngine) -> None:
        self.engine = engine
        self.settings = self._read_settings(engine)

    def _build_engine(self, values: dict[str, object]) -> VBPEngine:
        """Load the model and its card, build the engine and warm it up (ValueError if any of
        it fails: the message is the reason); one batch holds every camera, or
        ``camera_batch`` frames."""
        return build_engine(values['model'], values['model_card'], values['card_overrides'],
                            backend=values['backend'], device=values['device'],
                            precision=values['precision'], cuda_graphs=values['cuda_graphs'],
                            threads=self._param('cpu_threads'),
                            max_batch=self._batch_size(),
                            overlay_alpha=self._param('overlay_alpha'),
                            overlay_max_width=self._param('overlay_max_width'))

    def _build_candidate(self, values: dict[str, object]) -> VBPEngine | str:
        """The engine for new parameter values, built in the builder thread while the old one
        keeps serving; the reason it could not be built otherwise."""
        future = self._builder.submit(self._build_engine, values)
        try:
            return future.result(timeout=BUILD_TIMEOUT_S)
        except FutureTimeout:
            return f'the new engine was not built within {BUILD_TIMEOUT_S:.0f} s'
        except Exception as error:  # the user's code may fail in any way; the old one runs on
            return one_line(error)

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
        """On-set: refuse invalid values with a reason; the old values stay. A change of the
        engine's parameters is accepted only once its engine is built and warmed up (an
        unconfigured managed node builds it when it is configured)."""
        changes = {p.name: p.value for p in parameters}
        problem = self._problem(changes)
        if problem:
            return _refuse(problem)
        self._candidate = None
        if set(changes) & set(ENGINE_PARAMETERS) and self.engine is not None:
            candidate = self._build_candidate(self._engine_values(changes))
            if isinstance(candidate, str):
                self.get_logger().error(f'refused {", ".join(sorted(changes))}: {candidate}; '
                                        f'still running {self.engine.model_name}')
                return _refuse(candidate)
            self._candidate = candidate
        return SetParametersResult(successful=True)

    def _problem(self, changes: dict[str, object]) -> str | None:
        """What is wrong with these values of the enumerated parameters, or None (the engine's
        parameters are checked by building the engine)."""
        for name, value in changes.items():
            if name in CHOICES and value not in CHOICES[name]:
                return f'{name} must be one of {", ".join(CHOICES[name])}, not {value!r}'
        return None

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        """Post-set: hand the worker the new settings (one assignment: it sees all or none),
        with the engine that the on-set callback built, if any."""
        names = {p.name for p in parameters}
        if names & set(SUBSCRIPTION_PARAMETERS) and self.state == 'active':
            for name, topic in self._camera_topics().items():
                self.cameras[name].topic = topic
                self._subscribe(self.cameras[name])
        if self.settings is None:
            return
        engine, self._candidate = self._candidate or self.settings.engine, None
        self.settings = self._read_settings(engine)

    # -- input --------------------------------------------------------------------------------

    def _make_camera(self, name: str, topic: str) -> _Camera:
        def publisher(kind: type, output: str, qos: QoSProfile | int = OUTPUT_QOS) -> object:
            return self.create_publisher(kind, camera_topic(name, output), qos)
        return _Camera(name, topic, angle=publisher(Float32, STEERING_TOPIC),
                       outputs=publisher(Float32MultiArray, OUTPUTS_TOPIC),
                       mask=publisher(Image, MASK_TOPIC), overlay=publisher(Image, OVERLAY_TOPIC),
                       processing=publisher(Float32, PROCESSING_TIME_TOPIC, 10),
                       latency=publisher(Float32, PIPELINE_LATENCY_TOPIC, 10))

    def _subscribe(self, camera: _Camera) -> None:
        compressed = self._param('input_transport') == 'compressed'
        qos = self._input_qos(camera.topic)
        if camera.subscription is not None:
            self.destroy_subscription(camera.subscription)
        camera.subscription = self.create_subscription(
            CompressedImage if compressed else Image, camera.topic,
            lambda message, name=camera.name: self._on_frame(name, message), qos,
            callback_group=self._io_group)
        reliability = 'reliable' if qos.reliability == QoSReliabilityPolicy.RELIABLE \
            else 'best effort'
        self.get_logger().info(f'subscribed to {self.resolve_topic_name(camera.topic)} '
                               f'({reliability})')

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

    def _on_frame(self, camera: str, message: Image | CompressedImage) -> None:
        self.monitor.count('received')
        self.mailbox.put(_Frame(message, time.perf_counter()), camera)

    def _start_live_view(self) -> None:
        port = self._param('foxglove_port')
        if not port:
            return
        self.live = LiveView(port, self._param('foxglove_address'),
                             self._param('foxglove_jpeg_quality'),
                             self._param('foxglove_max_rate_hz'),
                             self._param('overlay_max_width'))
        for camera in self.cameras.values():
            resolve = self.resolve_topic_name
            self.live.add_camera(camera.name, CameraTopics(
                camera=resolve(camera.topic),
                overlay=resolve(camera_topic(camera.name, OVERLAY_TOPIC)),
                mask=resolve(camera_topic(camera.name, MASK_TOPIC)),
                angle=resolve(camera_topic(camera.name, STEERING_TOPIC)),
                latency=resolve(camera_topic(camera.name, PIPELINE_LATENCY_TOPIC))))
        self.get_logger().info(f'live view on ws://{self._param("foxglove_address")}:'
                               f'{self.live.port} (Foxglove or Lichtblick)')

    # -- worker -------------------------------------------------------------------------------

    def _work(self) -> None:
        """The worker loop: no exception ends it; each is counted, logged and reported at
        ERROR on /diagnostics, and the next frames are processed."""
        seen_drops = 0
        while self._running:
            settings = self.settings
            frames = self.mailbox.take(timeout=0.1, gather_s=settings.batch_wait_s,
                                       live_s=settings.camera_stale_s)
            drops = self.mailbox.dropped
            if drops != seen_drops:
                self.monitor.count('dropped_superseded', drops - seen_drops)
                seen_drops = drops
            if self.settings.engine is not self.engine:  # between frames, also when idle
                self._swap_engine(self.settings.engine)
            if not frames:
                continue
            try:
                self._handle(frames)
            except Exception as error:  # MemoryError too: keep serving, say what went wrong
                self._report_failure('frame failed', error)

    def _handle(self, frames: dict[str, _Frame]) -> None:
        settings = self.settings
        self.engine.overlay_alpha = settings.overlay_alpha
        self.engine.overlay_max_width = settings.overlay_max_width
        if self.live is not None:
            self.live.max_width = settings.overlay_max_width
        ready = [item for name, frame in frames.items()
                 if (item := self._guarded(self._prepare, self.cameras[name], frame, settings))]
        if not ready:
            return
        size = self.engine.max_batch
        for batch in (ready[start:start + size] for start in range(0, len(ready), size)):
            if len(batch) > 1 and self._guarded(self._run, batch, settings, quiet=True):
                continue
            for item in batch:  # one camera, or a batch with a frame the network refuses
                self._guarded(self._run, [item], settings)

    def _guarded(self, step, *args: object, quiet: bool = False) -> object | None:
        """``step(*args)``; a frame it refuses is counted and reported (unless ``quiet``, for a
        batch that is retried frame by frame), giving None."""
        try:
            return step(*args)
        except FrameSizeError as error:
            if not quiet:
                self._refuse_frame_size(error)
        except FrameError as error:
            if not quiet:
                self.monitor.count('dropped_invalid')
                self.get_logger().warning(f'dropped frame: {error}',
                                          throttle_duration_sec=WARN_PERIOD_S)
        return None

    def _prepare(self, camera: _Camera, frame: _Frame, settings: Settings) -> _Ready | None:
        """The frame decoded, or None when it is stale; FrameError when it cannot be used."""
        stamp = header_ns(frame.message.header)
        unusable = stamp_problem(stamp, self._now_ns())
        if unusable:
            self.monitor.count('bad_stamps')
            self.get_logger().warning(f'frame stamp {unusable}: kept out of the latency '
                                      'figures', throttle_duration_sec=WARN_PERIOD_S)
        if settings.max_age_ms > 0 and self._stale(stamp, unusable, settings.max_age_ms):
            return None
        image, order = frame_of(frame.message)
        self._log_frame_size(image.shape)
        return _Ready(camera, frame, image, order, stamp, unusable)

    def _run(self, ready: list[_Ready], settings: Settings) -> bool:
        """Run the frames through the engine as one batch (one forward pass) and publish each
        camera's outputs."""
        ros_overlays = [self._ros_overlay(item.camera, settings) for item in ready]
        overlays = [ros or self._live_overlay(item.camera)
                    for item, ros in zip(ready, ros_overlays)]
        results = self.engine.process_batch([item.image for item in ready],
                                            orders=[item.order for item in ready],
                                            overlay=overlays)
        self.monitor.count('forward_passes')
        for item, result, ros_overlay in zip(ready, results, ros_overlays):
            self._publish(item, result, settings, ros_overlay)
        return True

    def _ros_overlay(self, camera: _Camera, settings: Settings) -> bool:
        return settings.publish_overlay and camera.overlay.get_subscription_count() > 0

    def _live_overlay(self, camera: _Camera) -> bool:
        return self.live is not None and self.live.wants_overlay(camera.name)

    def _publish(self, item: _Ready, result: FrameResult, settings: Settings,
                 ros_overlay: bool) -> None:
        """The camera's ROS outputs (the overlay when ``ros_overlay``), then its live view."""
        camera, header = item.camera, item.frame.message.header
        problem = output_problem(result, self.engine.spec)
        if problem:
            self.monitor.count('dropped_bad_output')
            self.get_logger().warning(f'not published: {problem}',
                                      throttle_duration_sec=WARN_PERIOD_S)
            return
        camera.angle.publish(Float32(data=result.angle))
        camera.outputs.publish(_outputs_message(result.outputs))
        camera.mask.publish(self._mask_message(header, result.mask, settings.mask_float))
        if ros_overlay:
            camera.overlay.publish(image_message(result.overlay, 'rgb8', header))
            self.monitor.count('overlays')
        latency_ms = None if item.unusable else (self._now_ns() - item.stamp) / 1e6
        processing_ms = (time.perf_counter() - item.frame.received) * 1e3
        camera.processing.publish(Float32(data=processing_ms))
        if latency_ms is not None:
            camera.latency.publish(Float32(data=latency_ms))
        self.monitor.frame_done(processing_ms, latency_ms, settings.deadline_ms)
        self._processed_by_camera[camera.name] += 1
        if self.live is not None:  # after the ROS outputs: the live view never delays them
            self.live.publish(camera.name, LiveFrame(
                item.stamp, header.frame_id, item.image, item.order, result.overlay,
                result.mask, result.angle, latency_ms))

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

    def _swap_engine(self, engine: VBPEngine) -> None:
        """Take up an accepted engine (worker thread only, between frames)."""
        self.engine = engine
        self._sizes_seen.clear()
        self.get_logger().info(f'now running {engine.model_name} on '
                               f'{engine.description}{_note(engine)}')

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
        """The level and message of /diagnostics: ERROR for a recent failed or refused frame,
        WARN for dropped or doubtful frames."""
        recent = self._last_failure
        if recent and time.monotonic() - recent[0] < ERROR_HOLD_S:
            return DiagnosticStatus.ERROR, recent[1]
        if self.state != 'active':
            return DiagnosticStatus.OK, f'{self.state}: not processing'
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
            'state': self.state,
            'frames received': totals['received'], 'frames processed': totals['processed'],
            'forward passes': totals['forward_passes'],
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
            'deadline (ms)': self._param('deadline_ms'),
        }
        if len(self.cameras) > 1:
            values.update({f'frames processed ({name})': self._processed_by_camera[name]
                           for name in self.cameras})
        engine = self.engine
        if engine is not None:
            values.update({'device': engine.description,
                           'model': engine.model_name,  # the engine running, not the parameter
                           'backend': engine.backend + _note(engine)})
        if self.live is not None:
            values['live view'] = (f'ws://{self._param("foxglove_address")}:{self.live.port}, '
                                   f'{self.live.frames_sent} frames sent')
        if final:
            message = f'stopped; {message}'
        hardware = engine.description if engine is not None else 'no model loaded'
        self.diagnostics_pub.publish(diagnostic_array(
            self, 'pipeline', level, message, hardware, values))


class VBPNode(VBPPipeline, Node):
    """The node ``vbp``: see the package README for topics and parameters."""

    def __init__(self) -> None:
        super().__init__(VBP_NODE)
        self._init_pipeline()
        self._configure_pipeline()
        self._activate_pipeline()

    def destroy_node(self) -> None:
        """Stop the worker (it finishes the frames in hand), publish the final counts, then
        destroy the node."""
        if hasattr(self, '_builder'):  # a node that failed to start has nothing to stop
            self._finish_pipeline()
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
