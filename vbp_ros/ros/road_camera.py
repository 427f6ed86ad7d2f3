"""road_camera: publishes camera frames (synthetic roads, a video or a folder of images) as
sensor_msgs/Image on ``image`` at ``rate`` Hz, with camera-driver QoS (sensor data: best
effort, keep last 5), the configured frame_id and the publishing time as stamp; the count of
frames published goes to /diagnostics each second and once more when it stops."""

from __future__ import annotations

import time
from typing import Iterator

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ..data.sources import Frame, image_frames, synthetic_frames, video_frames
from ..interface import CAMERA_NODE, CAMERA_SOURCES, DIAGNOSTICS_TOPIC, IMAGE_TOPIC
from .diagnostics import diagnostic_array
from .messages import image_message
from .runner import run_node

SYNTHETIC_MODES = ('drive', 'independent')
FINAL_DIAGNOSTICS_S = 1.0  # longest wait for the last /diagnostics to be acknowledged
# The subscriber count is this writer's view of the match; each reader matches the writer on
# its own, in its own process, and drops the best-effort frames that arrive before. Measured
# here with a new process (a fresh participant, as vbp_node at start) subscribing each time:
# its reader matched a median 70 ms after this writer counted it, and 404 and 407 ms after in 2
# of 80 tries. With both cores busy, frame one of a recorded launch missed vbp_node in 4 of
# about 60 launches after 0.1 s, in none of 36 after 1 s. So frame one waits until the count
# has held this long (a drive's duration counts from frame one).
SUBSCRIBERS_SETTLE_S = 1.0


class RoadCamera(Node):
    """The node ``road_camera``."""

    def __init__(self) -> None:
        super().__init__(CAMERA_NODE)
        self.published = 0
        self.diagnostics_pub = None  # destroy_node of a node that failed
        string, double, integer = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE,
                                   ParameterType.PARAMETER_INTEGER)
        self.declare_parameter('source', 'synthetic', ParameterDescriptor(
            type=string, read_only=True, description='synthetic, video or images',
            additional_constraints='one of: ' + ', '.join(CAMERA_SOURCES)))
        self.declare_parameter('path', '', ParameterDescriptor(
            type=string, read_only=True, description='video file or image folder'))
        self.declare_parameter('rate', 30.0, ParameterDescriptor(
            type=double, read_only=True, description='frames per second',
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=1000.0)]))
        self.declare_parameter('frame_id', 'camera', ParameterDescriptor(
            type=string, description='header frame_id'))
        self.declare_parameter('seed', 0, ParameterDescriptor(
            type=integer, read_only=True, description='synthetic roads seed'))
        self.declare_parameter('synthetic_mode', 'drive', ParameterDescriptor(
            type=string, read_only=True, description='drive: a continuous drive at rate Hz, a '
            'new scene every 8 s; independent: unrelated frames, as in training',
            additional_constraints='one of: ' + ', '.join(SYNTHETIC_MODES)))
        self.declare_parameter('loop', True, ParameterDescriptor(
            type=ParameterType.PARAMETER_BOOL, read_only=True,
            description='start a video or image folder over at its end'))
        self.declare_parameter('wait_for_subscribers', 0, ParameterDescriptor(
            type=integer, read_only=True, description='publish the first frame once this many '
            f'subscribers have been matched for {SUBSCRIBERS_SETTLE_S:g} s (0: at once), so '
            'that a pipeline starts with frame one',
            integer_range=[IntegerRange(from_value=0, to_value=100)]))
        # Declared by type: an empty list default would be typed as bytes.
        self.declare_parameter('wait_for_topics', Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY, read_only=True,
            description='the first frame also waits until each of these topics has a '
            'subscriber (a recorder of the pipeline\'s outputs), held as long; relative names '
            'resolve in the namespace'))
        self.awaited_topics = [self.resolve_topic_name(topic) for topic in
                               self.get_parameter_or('wait_for_topics').value or []]
        self.frames = self._open_source()
        # The first frame costs the most (generator set-up, file opening): pay it now, not in
        # the first timer period, which would make the second frame follow the first at once.
        self.next_frame = next(self.frames, None)
        self.subscribed_since: float | None = None  # monotonic time the wait was satisfied
        self.publisher = self.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_timer(1.0 / self.get_parameter('rate').value, self._publish)
        self.create_timer(1.0, self._publish_diagnostics)

    def _open_source(self) -> Iterator[Frame]:
        source = self.get_parameter('source').value
        path = self.get_parameter('path').value
        loop = self.get_parameter('loop').value
        if source == 'synthetic':
            mode = self.get_parameter('synthetic_mode').value
            if mode not in SYNTHETIC_MODES:
                raise ValueError(f"synthetic_mode must be one of {', '.join(SYNTHETIC_MODES)}, "
                                 f'not {mode!r}')
            rate = self.get_parameter('rate').value if mode == 'drive' else None
            return synthetic_frames(self.get_parameter('seed').value, rate)
        if source not in CAMERA_SOURCES or not path:
            raise ValueError(f"source must be one of {', '.join(CAMERA_SOURCES)} (video and "
                             f"images need 'path'), not {source!r} with path {path!r}")
        return video_frames(path, loop) if source == 'video' else image_frames(path, loop)

    def _publish(self) -> None:
        if not self.published and not self._subscribers_settled():
            return
        frame = self.next_frame
        if frame is None:
            self.get_logger().info('end of the source', once=True)
            return
        message = image_message(*frame)
        message.header.stamp = self.get_clock().now().to_msg()
        message.header.frame_id = self.get_parameter('frame_id').value
        self.publisher.publish(message)
        self.published += 1
        self.next_frame = next(self.frames, None)

    def _subscribers_settled(self) -> bool:
        """Whether ``wait_for_subscribers`` subscribers have been matched, and each of
        ``wait_for_topics`` has had a subscriber, for :data:`SUBSCRIBERS_SETTLE_S` (at once
        when neither is asked for)."""
        wanted = self.get_parameter('wait_for_subscribers').value
        if not wanted and not self.awaited_topics:
            return True
        if self.publisher.get_subscription_count() < wanted or \
                not all(self.count_subscribers(topic) for topic in self.awaited_topics):
            self.subscribed_since = None
            return False
        now = time.monotonic()
        if self.subscribed_since is None:
            self.subscribed_since = now
        return now - self.subscribed_since >= SUBSCRIBERS_SETTLE_S

    def _publish_diagnostics(self, message: str = 'ok') -> None:
        self.diagnostics_pub.publish(diagnostic_array(
            self, 'camera', DiagnosticStatus.OK, message, self.publisher.topic_name,
            {'frames published': self.published}))

    def destroy_node(self) -> None:
        """Publish the final count, then destroy the node."""
        if self.diagnostics_pub is not None:
            self._publish_diagnostics('stopped')
            self.diagnostics_pub.wait_for_all_acked(Duration(seconds=FINAL_DIAGNOSTICS_S))
        super().destroy_node()
        # Logged after the node is gone: its rosout publisher may be shut down already.
        self.get_logger().info(f'published {self.published} frames')


def main(args: list[str] | None = None) -> int:
    """Entry point of ``road_camera``."""
    return run_node(RoadCamera, CAMERA_NODE, args)


if __name__ == '__main__':
    raise SystemExit(main())
