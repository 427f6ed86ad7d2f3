"""vbp_node's output port in ROS: per camera, the publishers of its outputs (under the camera's
name) and the messages they publish again and again, and the live view
(:class:`RosOutputs`, the :class:`~vbp_ros.engine.pipeline.FrameOutputs` of the node)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher
from rclpy.qos import DurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Float32, Float32MultiArray, MultiArrayDimension

from ..engine.pipeline import Answer
from ..interface import (ATTENTION_TOPIC, MASK_ROI_TOPIC, MASK_TOPIC, OUTPUTS_TOPIC,
                         OVERLAY_TOPIC, PIPELINE_LATENCY_TOPIC, PROCESSING_TIME_TOPIC,
                         STEERING_TOPIC, camera_topic)
from ..live.foxglove_view import LiveFrame, LiveView
from ..pixels.encodings import mask_to_mono8
from ..pixels.frames import Crop
from .messages import ImageBuffer, attention_array

OUTPUT_QOS = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
# The mask's region changes rarely (a new frame size): the last one waits for late joiners.
REGION_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class CameraPublishers:
    """The publishers of one camera's outputs and the messages they publish again and again
    (their fixed fields set once, picture buffers allocated once per size)."""

    angle: LifecyclePublisher
    outputs: LifecyclePublisher
    mask: LifecyclePublisher
    mask_roi: LifecyclePublisher
    overlay: LifecyclePublisher
    processing: LifecyclePublisher
    latency: LifecyclePublisher
    attention: LifecyclePublisher
    angle_message: Float32 = field(default_factory=Float32)
    outputs_message: Float32MultiArray = field(default_factory=Float32MultiArray)
    mask8: ImageBuffer = field(default_factory=lambda: ImageBuffer('mono8'))
    mask32: ImageBuffer = field(default_factory=lambda: ImageBuffer('32FC1', np.float32))
    overlay_image: ImageBuffer = field(default_factory=lambda: ImageBuffer('rgb8'))
    processing_message: Float32 = field(default_factory=Float32)
    latency_message: Float32 = field(default_factory=Float32)
    attention_message: Float32MultiArray = field(default_factory=attention_array)
    region: Crop | None = None  # the mask's region last published

    def all(self) -> tuple[LifecyclePublisher, ...]:
        """Every publisher."""
        return (self.angle, self.outputs, self.mask, self.mask_roi, self.overlay,
                self.processing, self.latency, self.attention)


class RosOutputs:
    """The pipeline's output port in ROS: per camera, its topics (under the camera's name),
    and the live view; see :class:`~vbp_ros.engine.pipeline.FrameOutputs`."""

    def __init__(self, node: LifecycleNode, cameras: list[str]) -> None:
        self.cameras = {name: self._publishers(node, name) for name in cameras}
        self.publish_overlay = True
        self.mask_float = False
        self.viewer: LiveView | None = None

    @staticmethod
    def _publishers(node: LifecycleNode, camera: str) -> CameraPublishers:
        def publisher(kind: type, topic: str, qos: QoSProfile | int = OUTPUT_QOS
                      ) -> LifecyclePublisher:
            return node.create_lifecycle_publisher(kind, camera_topic(camera, topic), qos)
        return CameraPublishers(
            angle=publisher(Float32, STEERING_TOPIC),
            outputs=publisher(Float32MultiArray, OUTPUTS_TOPIC),
            mask=publisher(Image, MASK_TOPIC), mask_roi=publisher(RegionOfInterest,
                                                                  MASK_ROI_TOPIC, REGION_QOS),
            overlay=publisher(Image, OVERLAY_TOPIC),
            processing=publisher(Float32, PROCESSING_TIME_TOPIC, 10),
            latency=publisher(Float32, PIPELINE_LATENCY_TOPIC, 10),
            attention=publisher(Float32MultiArray, ATTENTION_TOPIC))

    def destroy(self, node: LifecycleNode) -> None:
        """Destroy every publisher."""
        for camera in self.cameras.values():
            for publisher in camera.all():
                node.destroy_lifecycle_publisher(publisher)
        self.cameras = {}

    def steering(self, answer: Answer) -> None:
        """The steering angle, then every network output (flattened, in order)."""
        camera, result = self.cameras[answer.camera], answer.result
        camera.angle_message.data = result.angle
        camera.angle.publish(camera.angle_message)
        message = camera.outputs_message
        count = len(result.outputs)
        if not message.layout.dim or message.layout.dim[0].size != count:
            message.layout.dim = [MultiArrayDimension(label='outputs', size=count,
                                                      stride=count)]
        message.data = np.asarray(result.outputs, np.float32).tobytes()
        camera.outputs.publish(message)

    def mask(self, answer: Answer) -> None:
        """The mask with the camera frame's header, and its region when that changed."""
        camera, mask = self.cameras[answer.camera], answer.result.mask
        header = answer.message.header
        if self.mask_float:
            np.copyto(camera.mask32.pixels(header, mask.shape), mask)
            camera.mask.publish(camera.mask32.message)
        else:
            mask_to_mono8(mask, out=camera.mask8.pixels(header, mask.shape))
            camera.mask.publish(camera.mask8.message)
        if answer.region != camera.region:
            camera.region = region = answer.region
            camera.mask_roi.publish(RegionOfInterest(
                x_offset=region.left, y_offset=region.top, height=region.height,
                width=region.width, do_rectify=False))

    def attention(self, answer: Answer, statistics: np.ndarray) -> None:
        """The mask's attention statistics (NaN for a mask without attention)."""
        camera = self.cameras[answer.camera]
        camera.attention_message.data = statistics.astype(np.float32).tobytes()
        camera.attention.publish(camera.attention_message)

    def wants_overlay(self, camera: str) -> bool:
        """An overlay is drawn only for a subscriber or the live view."""
        return self._ros_overlay(camera) or (
            self.viewer is not None and self.viewer.wants_overlay(camera))

    def _ros_overlay(self, camera: str) -> bool:
        return self.publish_overlay and \
            self.cameras[camera].overlay.get_subscription_count() > 0

    def overlay(self, answer: Answer, overlay: np.ndarray) -> None:
        """The overlay, where it is subscribed."""
        if self._ros_overlay(answer.camera):
            camera = self.cameras[answer.camera]
            np.copyto(camera.overlay_image.pixels(answer.message.header, overlay.shape),
                      overlay)
            camera.overlay.publish(camera.overlay_image.message)

    def timing(self, answer: Answer, processing_ms: float, latency_ms: float | None) -> None:
        """Processing time and pipeline latency (none when the stamp gives none)."""
        camera = self.cameras[answer.camera]
        camera.processing_message.data = processing_ms
        camera.processing.publish(camera.processing_message)
        if latency_ms is not None:
            camera.latency_message.data = latency_ms
            camera.latency.publish(camera.latency_message)

    def live_view(self, answer: Answer, overlay: np.ndarray | None,
                  latency_ms: float | None) -> None:
        """The live view's channels, when it runs (vbp/attention's values as published)."""
        if self.viewer is not None:
            self.viewer.publish(answer.camera, LiveFrame(
                answer.stamp_ns, answer.message.header.frame_id, answer.frame, answer.order,
                overlay, answer.result.mask, answer.result.angle, latency_ms,
                self.cameras[answer.camera].attention_message.data))
