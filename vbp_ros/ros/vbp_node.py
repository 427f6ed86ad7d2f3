"""vbp_node: camera images in; steering angle, network outputs, VisualBackProp mask and overlay
out. A thin ROS 2 adapter of :class:`vbp_ros.engine.pipeline.FramePipeline`.

One node class, a managed (lifecycle) node (ros2/demos ``lifecycle_py``): ``configure`` loads
and validates the model (the engine is built and warmed up) and makes the publishers;
``activate`` subscribes, starts the pipeline's worker and the live view; ``deactivate`` stops
processing and frees the engine's device memory (the next activation builds it again);
``cleanup`` drops the model and the publishers; ``shutdown`` stops everything. Each transition
is logged; one that fails (a model that does not load) leaves the node where it was. The
executable ``vbp_node`` is this node configured and activated at start (exit code 1 with the
reason when that fails); ``vbp_lifecycle_node`` leaves the transitions to its manager.

Threads: the executor (a SingleThreadedExecutor in the main thread) serves the lifecycle
services and the parameter services that read; the set services have a thread of their own
(:class:`~vbp_ros.ros.parameter_server.SetParameterServer`); the pipeline's worker takes the
newest frame of each camera straight from its subscription when it is ready
(:class:`~vbp_ros.ros.camera_source.CameraSource`), runs the engine and publishes through
:class:`~vbp_ros.ros.outputs.RosOutputs`; a thread of its own publishes /diagnostics once a
second, in every state (:mod:`vbp_ros.ros.pipeline_status`).
So a parameter change that builds a new engine holds up neither frames, nor diagnostics, nor
the other parameter services, nor a quick parameter change.

Validation before acceptance: a change of ``model``, ``model_card``, ``card_overrides``,
``backend``, ``device``, ``precision`` or ``cuda_graphs`` builds the new engine and warms it up
in a builder thread while the old engine keeps serving frames. Only an engine that built is
accepted and handed to the worker; otherwise the change is refused with the reason, the
parameters keep their values and the old model keeps running. /diagnostics names the model
that runs. Every build (at configure too) is answered within ``build_timeout_s``, and at once
when the node stops (SIGINT, SIGTERM, destruction): a build still running then is abandoned in
its daemon thread (:func:`~vbp_ros.engine.bounded.run_bounded`), so it never holds the process.
"""

from __future__ import annotations

import threading
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ..engine.bounded import run_bounded
from ..engine.build import build_engine
from ..engine.config import EngineConfig
from ..engine.engine import VBPEngine
from ..engine.memory import settle_heap
from ..engine.pipeline import FramePipeline, PipelineSettings, engine_note
from ..interface import (ATTENTION_TOPIC, DIAGNOSTICS_TOPIC, MASK_TOPIC, OVERLAY_TOPIC,
                         PIPELINE_LATENCY_TOPIC, STEERING_TOPIC, VBP_NODE, camera_topic,
                         one_line)
from ..live.foxglove_view import CameraTopics, LiveView
from . import parameters
from .camera_source import CameraSource
from .diagnostics import Periodic
from .lifecycle import ReleasingLifecycleNode
from .outputs import RosOutputs
from .parameter_server import SetParameterServer
from .parameters import ENGINE_PARAMETERS, SUBSCRIPTION_PARAMETERS, network_threads
from .pipeline_status import pipeline_diagnostics
from .runner import run_node
from .stop import STOPPING, StopGrace

DIAGNOSTICS_PERIOD_S = 1.0
WORKER_STOP_S = 30.0  # longest wait for the frame in hand when processing stops
FINAL_DIAGNOSTICS_S = 1.0  # longest wait for the last /diagnostics to be acknowledged
# After a stop signal, the longest time the frames of cameras still publishing are answered
# (vbp_record waits longer for this node's outputs: its own STOP_GRACE_S).
STOP_GRACE_S = 1.0
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
# The state each transition leads to when it succeeds.
GOALS = {'configure': 'inactive', 'activate': 'active', 'deactivate': 'inactive',
         'cleanup': 'unconfigured', 'shutdown': 'finalized'}


class VBPNode(ReleasingLifecycleNode):
    """The node ``vbp`` (see the module docstring; topics and parameters: docs/node.md)."""

    def __init__(self) -> None:
        super().__init__(VBP_NODE)
        self._starting = False  # configured and activated at start: failures end the process
        self._failure = ''
        self._candidate: VBPEngine | None = None  # built by the on-set callback, not yet taken
        # Built by the set service's prepare for these engine values (or why not), not yet taken.
        self._prebuilt: tuple[dict[str, object], VBPEngine | str] | None = None
        self._engine_lock = threading.RLock()  # transitions and parameter changes, one at a time
        parameters.declare(self)
        self._check_start_up_parameters()
        self.cameras = parameters.camera_topics(self._param('image_topics'), 'raw')
        self.outputs: RosOutputs | None = None
        self.source = CameraSource(self)
        self._input_problem: str | None = None
        self._stop_grace = StopGrace(STOP_GRACE_S)
        self.pipeline = FramePipeline(self.source, None, self.get_logger(), self._now_ns)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.add_pre_set_parameters_callback(parameters.normalized)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.setter = SetParameterServer(self, self._changes_engine, self._prepare_change,
                                         self._engine_lock)
        self.diagnostics = Periodic(
            self._publish_diagnostics, DIAGNOSTICS_PERIOD_S,
            lambda error: self.get_logger().error(f'/diagnostics: {one_line(error)}'))

    @classmethod
    def active(cls) -> VBPNode:
        """The node, configured and activated; ValueError with the reason when that fails."""
        node = cls()
        node._starting = True
        for trigger in (node.trigger_configure, node.trigger_activate):
            if trigger() != SUCCESS:
                node.destroy_node()
                raise ValueError(node._failure)
        node._starting = False
        return node

    @property
    def lifecycle_state(self) -> str:
        """The label of the node's lifecycle state ('unconfigured', 'active', ...)."""
        return self._state_machine.current_state[1]

    # -- transitions --------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load and validate the model; make the publishers."""
        return self._transition('configure', state, self._configure)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe and process."""
        return self._transition('activate', state, lambda: self._activate(state))

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop processing; free the engine's device memory."""
        return self._transition('deactivate', state, lambda: self._deactivate(state))

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Drop the model and the publishers."""
        return self._transition('cleanup', state, self._cleanup)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop whatever runs."""
        return self._transition('shutdown', state, lambda: self._shutdown(state))

    def _transition(self, name: str, state: State, step: Callable[[], None]
                    ) -> TransitionCallbackReturn:
        try:
            with self._engine_lock:
                step()
        except Exception as error:  # a model that does not load, a busy port...
            self._failure = one_line(error)
            if not self._starting:  # at start the process ends with this one line
                self.get_logger().error(f'{name} failed: {self._failure}; still '
                                        f'{state.label}')
            return FAILURE
        self.get_logger().info(f'{name}: now {GOALS[name]}')
        return SUCCESS

    def _configure(self) -> None:
        engine = self._build_engine(parameters.values(self, ENGINE_PARAMETERS))
        self.outputs = RosOutputs(self, list(self.cameras))
        self._apply_output_settings()
        self.pipeline.outputs = self.outputs
        self.pipeline.update(self._settings(engine))

    def _activate(self, state: State) -> None:
        if self.pipeline.settings is None:  # released by a deactivation
            self.pipeline.update(self._settings(self._build_engine(
                parameters.values(self, ENGINE_PARAMETERS))))
        self.outputs.viewer = self._live_view()
        super().on_activate(state)  # the lifecycle publishers publish from now on
        settle_heap()  # before the first frame: a full collection now costs no deadline
        self.pipeline.start()
        self._subscribe()
        engine = self.pipeline.engine
        self.get_logger().info(f'ready: model {engine.model_name} on {engine.description}'
                               f'{engine_note(engine)}; cameras '
                               f'{", ".join(self._camera_inputs())}')

    def _deactivate(self, state: State) -> None:
        self._stop_processing()
        super().on_deactivate(state)
        self._release_engine()

    def _cleanup(self) -> None:
        self._release_engine()
        self.outputs.destroy(self)
        self.outputs = self.pipeline.outputs = None

    def _shutdown(self, state: State) -> None:
        if self.pipeline.running:
            self._deactivate(state)
        self._release_engine()
        if self.outputs is not None:
            self._cleanup()

    def _stop_processing(self) -> None:
        """Let the worker answer the frames in hand and those waiting, unsubscribe, close
        the live view."""
        if not self.pipeline.stop(WORKER_STOP_S):
            self.get_logger().error(f'worker still busy after {WORKER_STOP_S:.0f} s')
        for name in self.cameras:
            self.source.unsubscribe(name)
        if self.outputs is not None and self.outputs.viewer is not None:
            self.outputs.viewer.close()
            self.outputs.viewer = None

    def _release_engine(self) -> None:
        """Close the engine (and a candidate not taken up) and give its memory back."""
        settings = self.pipeline.settings
        engines = {settings.engine if settings else None, self.pipeline.engine, self._candidate}
        for engine in engines - {None}:
            engine.close()
        self._candidate = None
        self._discard_prebuilt()
        self.pipeline.release()

    def finishing(self) -> bool:
        """After a stop signal: whether to keep answering frames, because a camera topic
        still has a publisher; at most STOP_GRACE_S. A Ctrl-C stops the camera driver at the
        same moment, and the frames it sends until it notices would go unanswered."""
        return self.pipeline.running and self._stop_grace.running() and \
            self.source.publishers() > 0

    def destroy_node(self) -> None:
        """Stop the frames and diagnostics, let the worker finish the frame in hand, publish
        the final counts, then destroy the node."""
        if hasattr(self, 'diagnostics'):  # a node that failed to start has nothing to stop
            self.setter.close()
            self.diagnostics.stop()
            running = self.pipeline.running
            self._stop_processing()
            self.source.destroy()
            if running or self.lifecycle_state != 'unconfigured':
                self._publish_diagnostics(final=True)
                self.diagnostics_pub.wait_for_all_acked(Duration(seconds=FINAL_DIAGNOSTICS_S))
        super().destroy_node()

    # -- parameters ---------------------------------------------------------------------------

    def _param(self, name: str) -> object:
        return parameters.value(self, name)

    def _check_start_up_parameters(self) -> None:
        """Start-up values get the run-time treatment: normalized, then validated; ValueError
        (one line, exit code 1) for the first invalid one."""
        declared = [parameters.current(self, name) for name in parameters.PARAMETERS]
        changed = [new for old, new in zip(declared, parameters.normalized(declared))
                   if new.value != old.value]
        if changed:
            self.set_parameters(changed)  # no callbacks are registered yet
        problem = (parameters.problem(parameters.values(self)) or
                   parameters.camera_problem(list(self._param('image_topics'))))
        if problem:
            raise ValueError(f'invalid start-up parameter: {problem}')

    def _settings(self, engine: VBPEngine) -> PipelineSettings:
        return PipelineSettings(engine=engine,
                                overlay_alpha=self._param('overlay_alpha'),
                                overlay_max_width=self._param('overlay_max_width'),
                                deadline_ms=self._param('deadline_ms'),
                                max_age_ms=self._param('max_age_ms'),
                                max_stamp_age_s=self._param('max_stamp_age_s'),
                                camera_stale_s=self._param('camera_stale_ms') / 1e3,
                                batch_wait_s=self._param('batch_wait_ms') / 1e3,
                                attention=parameters.attention_settings(self))

    def _apply_output_settings(self) -> None:
        if self.outputs is not None:
            self.outputs.publish_overlay = self._param('publish_overlay')
            self.outputs.mask_float = self._param('mask_encoding') == '32FC1'
            if self.outputs.viewer is not None:
                self.outputs.viewer.max_width = self._param('overlay_max_width')

    def _build_engine(self, values: dict[str, object]) -> VBPEngine:
        """Load the model and its card, build the engine and warm it up, in a thread of its
        own, waiting at most ``build_timeout_s`` or until the node stops (ValueError if any of
        it fails: the message is the reason); one batch holds every camera, or
        ``camera_batch`` frames."""
        cameras = len(self.cameras)
        config = EngineConfig.of({
            **values, 'threads': self._param('cpu_threads') or network_threads(),
            'max_batch': min(self._param('camera_batch') or cameras, cameras)})

        def build() -> VBPEngine:
            return build_engine(values['model'], values['model_card'], values['card_overrides'],
                                config, max_model_mb=self._param('max_model_mb'))

        return run_bounded(build, self._param('build_timeout_s'), 'the model build',
                           stopping=lambda: STOPPING.is_set() or self.setter.closing,
                           discard=VBPEngine.close)

    def _build_candidate(self, values: dict[str, object]) -> VBPEngine | str:
        """The engine for new parameter values, built while the old one keeps serving; the
        reason it could not be built otherwise."""
        try:
            return self._build_engine(values)
        except Exception as error:  # the user's code may fail in any way; the old one runs on
            return one_line(error)

    def _changes_engine(self, changed: list[ParameterMsg]) -> bool:
        """Whether a set request changes a parameter of the engine (the set service then
        builds it first, see :meth:`_prepare_change`)."""
        return any(parameter.name in ENGINE_PARAMETERS for parameter in changed)

    def _prepare_change(self, changed: list[ParameterMsg]) -> None:
        """Build the engine that a set request asks for, before the request takes the lock
        (the on-set callback takes it, or the reason it could not be built)."""
        changes = {p.name: p.value for p in parameters.normalized(
            [Parameter.from_parameter_msg(message) for message in changed])}
        if parameters.problem(changes) or self.pipeline.settings is None:
            return  # refused, or built at configure, by the callbacks as usual
        values = {**parameters.values(self, ENGINE_PARAMETERS), **changes}
        outcome = self._build_candidate(values)
        with self._engine_lock:
            self._discard_prebuilt()
            self._prebuilt = (values, outcome)

    def _take_prebuilt(self, values: dict[str, object]) -> VBPEngine | str | None:
        """What :meth:`_prepare_change` built for exactly these engine values, if it did."""
        if self._prebuilt is not None and self._prebuilt[0] == values:
            outcome, self._prebuilt = self._prebuilt[1], None
            return outcome
        self._discard_prebuilt()
        return None

    def _discard_prebuilt(self) -> None:
        prebuilt, self._prebuilt = self._prebuilt, None
        if prebuilt is not None and isinstance(prebuilt[1], VBPEngine):
            prebuilt[1].close()

    def _validate_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        """On-set: refuse invalid values with a reason; the old values stay. A change of the
        engine's parameters is accepted only once its engine is built and warmed up (an
        unconfigured node builds it when it is configured)."""
        changes = {p.name: p.value for p in changed}
        late = sorted(set(changes) & set(parameters.READ_AT_START))
        if late:
            return _refuse(f'{", ".join(late)} is read at start; restart the node to change it')
        problem = parameters.problem(changes)
        if problem:
            return _refuse(problem)
        self._candidate = None
        if set(changes) & set(ENGINE_PARAMETERS) and self.pipeline.settings is not None:
            values = {**parameters.values(self, ENGINE_PARAMETERS), **changes}
            candidate = self._take_prebuilt(values)
            if candidate is None:  # set from within the process, or prepared for other values
                candidate = self._build_candidate(values)
            if isinstance(candidate, str):
                self.get_logger().error(f'refused {", ".join(sorted(changes))}: {candidate}; '
                                        f'still running {self.pipeline.engine.model_name}')
                return _refuse(candidate)
            self._candidate = candidate
        return SetParametersResult(successful=True)

    def _apply_parameters(self, changed: list[Parameter]) -> None:
        """Post-set: subscribe again for a new transport or QoS, and hand the worker the new
        settings (one assignment: it sees all or none), with the engine that the on-set
        callback built, if any."""
        if {p.name for p in changed} & set(SUBSCRIPTION_PARAMETERS) and self.pipeline.running:
            self._subscribe()
        self._apply_output_settings()
        if self.pipeline.settings is not None:
            engine, self._candidate = self._candidate or self.pipeline.settings.engine, None
            self.pipeline.update(self._settings(engine))

    # -- input --------------------------------------------------------------------------------

    def _subscribe(self) -> None:
        """Subscribe (again) every camera with the transport and QoS of the parameters."""
        compressed = self._param('input_transport') == 'compressed'
        topics = parameters.camera_topics(self._param('image_topics'),
                                          self._param('input_transport'))
        for name, topic in topics.items():
            qos = self._input_qos(topic)
            self.source.subscribe(name, CompressedImage if compressed else Image, topic, qos)
            reliability = 'reliable' if qos.reliability == QoSReliabilityPolicy.RELIABLE \
                else 'best effort'
            self.get_logger().info(f'subscribed to {self.resolve_topic_name(topic)} '
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

    def _unreachable_publishers(self) -> str | None:
        """Camera publishers that a reliable subscription cannot receive: they send best
        effort, and DDS then delivers nothing, which only the publisher's side logs."""
        problems = []
        for topic in self.source.reliable_topics():
            publishers = self.get_publishers_info_by_topic(topic)
            best_effort = sum(p.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT
                              for p in publishers)
            if best_effort:
                problems.append(f'{best_effort} of the {len(publishers)} publishers of {topic} '
                                'send best effort, which the reliable subscription cannot '
                                'receive: set input_qos to auto or sensor_data')
        return '; '.join(problems) or None

    def _camera_inputs(self) -> list[str]:
        return [self.source.topic(name) or '' for name in self.cameras]

    def _live_view(self) -> LiveView | None:
        port = self._param('foxglove_port')
        if not port:
            return None
        live = LiveView(port, self._param('foxglove_address'),
                        self._param('foxglove_jpeg_quality'),
                        self._param('foxglove_max_rate_hz'), self._param('overlay_max_width'))
        resolve = self.resolve_topic_name
        for name, topic in self.cameras.items():
            live.add_camera(name, CameraTopics(
                camera=resolve(topic),
                overlay=resolve(camera_topic(name, OVERLAY_TOPIC)),
                mask=resolve(camera_topic(name, MASK_TOPIC)),
                angle=resolve(camera_topic(name, STEERING_TOPIC)),
                latency=resolve(camera_topic(name, PIPELINE_LATENCY_TOPIC)),
                attention=resolve(camera_topic(name, ATTENTION_TOPIC))))
        self.get_logger().info(f'live view on ws://{self._param("foxglove_address")}:'
                               f'{live.port} (Foxglove or Lichtblick)')
        return live

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # -- diagnostics --------------------------------------------------------------------------

    def _publish_diagnostics(self, final: bool = False) -> None:
        viewer = self.outputs.viewer if self.outputs is not None else None
        live_view = None if viewer is None else (
            f'ws://{self._param("foxglove_address")}:{viewer.port}, '
            f'{viewer.frames_sent} frames sent')
        problem = self._unreachable_publishers() if self.pipeline.running else None
        if problem and problem != self._input_problem:
            self.get_logger().warning(problem)
        self._input_problem = problem
        self.diagnostics_pub.publish(pipeline_diagnostics(
            self, self.pipeline, self.lifecycle_state, list(self.cameras),
            self._param('deadline_ms'), live_view, final, problem))


def _refuse(reason: str) -> SetParametersResult:
    return SetParametersResult(successful=False, reason=reason)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``vbp_node``: the node, configured and activated at start."""
    return run_node(VBPNode.active, VBP_NODE, args)


if __name__ == '__main__':
    raise SystemExit(main())
