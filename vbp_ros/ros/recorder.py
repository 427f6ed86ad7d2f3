"""vbp_record: records topics into a rosbag2 directory (MCAP storage, metadata.yaml) for review.

Each topic is subscribed once a publisher for it appears, with the publishers' QoS (reliable
only when every publisher is, as rosbag2 does), and receives messages still serialized: the
callback stamps and queues the bytes, and :class:`vbp_ros.data.recording.BagRecording` writes
them on its own thread. SIGINT and SIGTERM close the bag (backlog, MCAP summary,
``metadata.yaml``), however many of them arrive (:mod:`vbp_ros.ros.runner`); after SIGKILL it
is readable up to its last completed chunk (at most ``chunk_period_s`` is lost). A recording
that lost messages (a full disk, a backlog beyond ``queue_limit_mb``) ends with exit code 1.
"""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rclpy.topic_endpoint_info import TopicEndpointInfo
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)

from ..data.recording import COMPRESSIONS, BagRecording, default_bag_dir
from ..interface import DIAGNOSTICS_TOPIC, RECORDED_TOPICS, RECORDER_NODE, ns_to_stamp
from .diagnostics import diagnostic_array
from .runner import run_node
from .stop import StopGrace

DISCOVERY_PERIOD_S = 0.1  # as rosbag2's --polling-interval: a late topic loses less
SUBSCRIPTION_DEPTH = 100
FINAL_DIAGNOSTICS_S = 1.0  # longest wait for the last /diagnostics to be acknowledged
STOP_GRACE_S = 3.0  # after a stop signal, the longest wait for the recorded publishers to go


class Recorder(Node):
    """The node ``vbp_record``."""

    def __init__(self) -> None:
        super().__init__(RECORDER_NODE)
        self.recording: BagRecording | None = None  # destroy_node of a node that failed
        self._declare_parameters()
        bag_dir = self.get_parameter('bag_dir').value
        self.recording = BagRecording(
            Path(bag_dir) if bag_dir else default_bag_dir(),
            compression=self.get_parameter('compression').value,
            chunk_period_s=self.get_parameter('chunk_period_s').value,
            queue_limit_bytes=int(self.get_parameter('queue_limit_mb').value * (1 << 20)))
        self._waiting = {self.resolve_topic_name(topic)
                         for topic in self.get_parameter('topics').value}
        self._recorded: set[str] = set()
        self._stop_grace = StopGrace(STOP_GRACE_S)
        # Messages received (/diagnostics aside), and that count when finishing() last asked.
        self._received = 0
        self._received_when_asked = -1
        self.get_logger().info(f'recording {", ".join(sorted(self._waiting))} into '
                               f'{self.recording.path}')
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._discovery = self.create_timer(DISCOVERY_PERIOD_S, self._discover)
        self.create_timer(1.0, self._publish_diagnostics)

    def _declare_parameters(self) -> None:
        read_only = partial(ParameterDescriptor, read_only=True)
        self.declare_parameter('topics', list(RECORDED_TOPICS), read_only(
            type=ParameterType.PARAMETER_STRING_ARRAY,
            description='topics to record (relative names resolve in the namespace)'))
        self.declare_parameter('bag_dir', '', read_only(
            type=ParameterType.PARAMETER_STRING,
            description='new bag directory; empty: rosbag2_YYYY_MM_DD-HH_MM_SS'))
        self.declare_parameter('compression', 'zstd', read_only(
            type=ParameterType.PARAMETER_STRING, description='MCAP chunk compression',
            additional_constraints='one of: ' + ', '.join(COMPRESSIONS)))
        self.declare_parameter('chunk_period_s', 1.0, read_only(
            type=ParameterType.PARAMETER_DOUBLE,
            description='a chunk reaches the file at least this often',
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=60.0)]))
        self.declare_parameter('queue_limit_mb', 512.0, read_only(
            type=ParameterType.PARAMETER_DOUBLE,
            description='messages waiting for the disk beyond this are dropped and counted',
            floating_point_range=[FloatingPointRange(from_value=1.0, to_value=65536.0)]))
        if not [topic for topic in self.get_parameter('topics').value if topic]:
            raise ValueError("parameter 'topics' names no topic to record")

    def _discover(self) -> None:
        """Subscribe every awaited topic that has a publisher now; stop looking once none is
        awaited."""
        for topic, types in self.get_topic_names_and_types():
            if topic not in self._waiting:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            self._waiting.discard(topic)
            try:
                self._subscribe(topic, types[0], publishers)
            except (ValueError, ImportError, AttributeError) as error:
                self.get_logger().error(f'not recording {topic}: {error}')
        if not self._waiting:
            self._discovery.cancel()

    def _subscribe(self, topic: str, msgtype: str, publishers: list[TopicEndpointInfo]) -> None:
        self.recording.add_topic(topic, msgtype, [_bag_qos(p.qos_profile) for p in publishers])
        self.create_subscription(_message_class(msgtype), topic, partial(self._on_message, topic),
                                 _subscription_qos(publishers), raw=True)
        self._recorded.add(topic)
        self.get_logger().info(f'recording {topic} ({msgtype})')

    def _on_message(self, topic: str, data: bytes) -> None:
        if topic != DIAGNOSTICS_TOPIC:
            self._received += 1
        if not self.recording.write(topic, self.get_clock().now().nanoseconds, data):
            self.get_logger().warning(f'dropped a {topic} message: {self._drop_reason()}',
                                      throttle_duration_sec=5.0)

    def _drop_reason(self) -> str:
        if self.recording.error is not None:
            return f'the bag cannot be written ({self.recording.error})'
        return 'the disk is not keeping up (queue_limit_mb reached)'

    def _publish_diagnostics(self, final: bool = False) -> None:
        stats = self.recording.stats()
        error = self.recording.error
        level = DiagnosticStatus.ERROR if error else (
            DiagnosticStatus.WARN if stats.dropped else DiagnosticStatus.OK)
        values = {'bag': str(self.recording.path),
                  'MB of messages written': f'{stats.bytes_written / 1e6:.1f}',
                  'MB of messages queued': f'{stats.queued_bytes / 1e6:.1f}',
                  'topics awaiting a publisher': ', '.join(sorted(self._waiting))}
        values.update({f'written {topic}': count for topic, count in stats.written.items()})
        values.update({f'dropped {topic}': count for topic, count in stats.dropped.items()})
        message = str(error) if error else ('dropping messages' if stats.dropped else 'ok')
        if final:
            message = f'closed; {message}'
        self.diagnostics_pub.publish(diagnostic_array(
            self, 'recording', level, message, str(self.recording.path), values))

    def finishing(self) -> bool:
        """After a stop signal: whether to keep recording, because a recorded topic (other
        than /diagnostics, which every node publishes) still has a publisher, or the last spin
        still brought its messages (those a publisher sent just before it went); at most
        STOP_GRACE_S. A Ctrl-C stops the whole pipeline at once, and the last frames of a
        node are still on their way when the recorder hears it."""
        previous, self._received_when_asked = self._received_when_asked, self._received
        return self._stop_grace.running() and (previous != self._received or any(
            self.count_publishers(topic) for topic in self._recorded
            if topic != DIAGNOSTICS_TOPIC))

    def destroy_node(self) -> None:
        """Stop receiving, write what is queued, close the bag, and publish the final counts."""
        if self.recording is not None:
            for subscription in list(self.subscriptions):
                self.destroy_subscription(subscription)
            stats = self.recording.close()
            self._publish_diagnostics(final=True)
            self.diagnostics_pub.wait_for_all_acked(Duration(seconds=FINAL_DIAGNOSTICS_S))
            summary = ', '.join(f'{topic} {count}'
                                for topic, count in sorted(stats.written.items()))
            dropped = f'; dropped {stats.dropped}' if stats.dropped else ''
            closing = f'closed {self.recording.path}: {summary or "no messages"}{dropped}'
        super().destroy_node()
        if self.recording is not None:
            # Logged after the node is gone: its rosout publisher may be shut down already.
            self.get_logger().info(closing)

    def exit_problem(self) -> str | None:
        """What the recording lost, if anything (the runner then exits with code 1)."""
        if self.recording is None:
            return None
        stats, error = self.recording.stats(), self.recording.error
        if error is not None:
            return f'the bag {self.recording.path} is incomplete: {error}'
        if stats.dropped:
            return f'the bag {self.recording.path} lacks {sum(stats.dropped.values())} ' \
                f'messages that were dropped: {stats.dropped}'
        return None


def _message_class(msgtype: str) -> type:
    """The Python class of e.g. ``sensor_msgs/msg/Image``."""
    package, interface, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{interface}'), name)


def _subscription_qos(publishers: list[TopicEndpointInfo]) -> QoSProfile:
    """Reliable and transient-local only where every publisher offers it, as rosbag2 does."""
    offered = [p.qos_profile for p in publishers]
    reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
    latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=SUBSCRIPTION_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def _bag_qos(profile: QoSProfile) -> Qos:
    """A publisher's QoS as rosbag2 metadata, so ``ros2 bag play`` offers it again."""
    def duration(value: object) -> QosTime:
        return QosTime(*ns_to_stamp(value.nanoseconds))
    return Qos(QosHistory(int(profile.history)), profile.depth,
               QosReliability(int(profile.reliability)), QosDurability(int(profile.durability)),
               duration(profile.deadline), duration(profile.lifespan),
               QosLiveliness(int(profile.liveliness)), duration(profile.liveliness_lease_duration),
               profile.avoid_ros_namespace_conventions)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``vbp_record``."""
    return run_node(Recorder, RECORDER_NODE, args)


if __name__ == '__main__':
    raise SystemExit(main())
