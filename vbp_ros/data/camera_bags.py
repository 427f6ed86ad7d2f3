"""Camera bags written with rosbags: rosbag2 (MCAP or SQLite 3) and ROS 1, raw or compressed
frames, with steering as Udacity SteeringReports or a Float32/Float64 topic, and vbp_node's
outputs as a drive records them. For tests, benchmarks and demos of the tools that read
recordings (vbp-fleet, vbp-review)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin, Writer as Ros2Writer
from rosbags.typesys.store import Typestore

from ..interface import (MASK_ROI_TOPIC, MASK_TOPIC, OVERLAY_TOPIC, STEERING_TOPIC as ANGLE_TOPIC,
                         camera_topic, ns_to_stamp)
from ..pixels.encodings import mask_to_mono8
from ..pixels.frames import Crop
from .udacity import STEERING_REPORT_TYPE, STEERING_TOPIC, udacity_typestore

STORAGES = ('mcap', 'sqlite3', 'ros1')
IMAGE, COMPRESSED = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'
REGION = 'sensor_msgs/msg/RegionOfInterest'
SCALARS = {'float32': 'std_msgs/msg/Float32', 'float64': 'std_msgs/msg/Float64'}
ENCODING_OF = {(2, 'u1'): 'mono8', (3, 'u1'): 'rgb8', (2, 'u2'): 'mono16'}


@dataclass(frozen=True)
class CameraFrame:
    """One camera message: header stamp and bag log time (ns), pixels (mono8/mono16 HxW or
    rgb8 HxWx3), or ``payload`` bytes to store as they are (e.g. a broken JPEG)."""

    stamp_ns: int
    log_ns: int
    pixels: np.ndarray | None = None
    payload: bytes | None = None


@dataclass(frozen=True)
class SteeringSample:
    """One steering message: header stamp (reports only) and log time (ns), angle (rad)."""

    stamp_ns: int
    log_ns: int
    angle: float


@dataclass(frozen=True)
class NodeOutput:
    """What vbp_node publishes for one camera frame: the frame's header stamp and the log time
    (ns) of the outputs, the mask (HxW floats in [0, 1] at network resolution, stored as
    mono8), the steering angle (rad) and, in a bag recorded with it, the overlay (rgb8)."""

    stamp_ns: int
    log_ns: int
    mask: np.ndarray
    angle: float
    overlay: np.ndarray | None = None


def write_camera_bag(path: Path, frames: Iterable[CameraFrame], *, storage: str = 'mcap',
                     topic: str = '/camera/image_raw', compressed: bool = False,
                     steering: Iterable[SteeringSample] = (), steering_kind: str = 'report',
                     steering_topic: str = STEERING_TOPIC, outputs: Iterable[NodeOutput] = (),
                     mask_region: Crop | None = None, node_namespace: str = '/') -> Path:
    """Write a bag at ``path`` (a rosbag2 directory, or a ROS 1 .bag file for 'ros1').

    ``compressed`` stores frames as JPEG (sensor_msgs/CompressedImage); ``steering_kind`` is
    'report' (dbw_mkz_msgs/SteeringReport, steering_wheel_angle) or 'float32'/'float64'
    (std_msgs, no header). ``outputs`` are vbp_node's (steering_angle, vbp/mask, vbp/overlay
    where given) in ``node_namespace``, with ``mask_region`` as vbp/mask_roi just before the
    first. Messages are written in log-time order.
    """
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {STORAGES}, not {storage!r}')
    ros1 = storage == 'ros1'
    typestore = udacity_typestore(ros1=ros1)
    image_type = COMPRESSED if compressed else IMAGE
    steering_type = STEERING_REPORT_TYPE if steering_kind == 'report' else SCALARS[steering_kind]
    records = [(frame.log_ns, topic, image_type, _image(typestore, frame, compressed, ros1))
               for frame in frames]
    records += [(sample.log_ns, steering_topic, steering_type,
                 _steering(typestore, sample, steering_type, ros1)) for sample in steering]
    records += _node_records(typestore, list(outputs), mask_region, node_namespace, ros1)
    records.sort(key=lambda record: record[0])
    path = Path(path)
    writer = Ros1Writer(path) if ros1 else Ros2Writer(
        path, version=9, storage_plugin=StoragePlugin.MCAP if storage == 'mcap'
        else StoragePlugin.SQLITE3)
    serialize = typestore.serialize_ros1 if ros1 else typestore.serialize_cdr
    with writer:
        connections = {}
        for log_ns, name, msgtype, message in records:
            if name not in connections:
                connections[name] = writer.add_connection(name, msgtype, typestore=typestore)
            writer.write(connections[name], log_ns, serialize(message, msgtype))
    return path


def _header(typestore: Typestore, stamp_ns: int, ros1: bool) -> Any:
    sec, nanosec = ns_to_stamp(stamp_ns)
    stamp = typestore.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)
    return typestore.types['std_msgs/msg/Header'](stamp=stamp, frame_id='camera',
                                                  **({'seq': 0} if ros1 else {}))


def _image(typestore: Typestore, frame: CameraFrame, compressed: bool, ros1: bool) -> Any:
    header = _header(typestore, frame.stamp_ns, ros1)
    if compressed:
        data = frame.payload
        if data is None:
            pixels = frame.pixels if frame.pixels.ndim == 2 else frame.pixels[:, :, ::-1]
            ok, encoded = cv2.imencode('.jpg', pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
            data = encoded.tobytes()
        return typestore.types[COMPRESSED](header=header, format='jpeg',
                                           data=np.frombuffer(data, np.uint8))
    pixels = frame.pixels
    encoding = ENCODING_OF[pixels.ndim, pixels.dtype.str[1:]]
    rows = np.ascontiguousarray(pixels).reshape(pixels.shape[0], -1).view(np.uint8)
    data = rows.reshape(-1) if frame.payload is None else np.frombuffer(frame.payload, np.uint8)
    return typestore.types[IMAGE](header=header, height=pixels.shape[0], width=pixels.shape[1],
                                  encoding=encoding, is_bigendian=0, step=rows.shape[1],
                                  data=data)


def _node_records(typestore: Typestore, outputs: list[NodeOutput], region: Crop | None,
                  namespace: str, ros1: bool) -> list[tuple[int, str, str, Any]]:
    """(log time, topic, type, message) of vbp_node's outputs."""
    def topic(name: str) -> str:
        return '/' + camera_topic(namespace.strip('/'), name)

    records = []
    for output in outputs:
        records.append((output.log_ns, topic(ANGLE_TOPIC), SCALARS['float32'],
                        typestore.types[SCALARS['float32']](data=output.angle)))
        pictures = [(MASK_TOPIC, mask_to_mono8(output.mask))]
        if output.overlay is not None:
            pictures.append((OVERLAY_TOPIC, output.overlay))
        records += [(output.log_ns, topic(name), IMAGE, _image(
            typestore, CameraFrame(output.stamp_ns, output.log_ns, pixels), False, ros1))
            for name, pixels in pictures]
    if region is not None and outputs:
        records.append((outputs[0].log_ns - 1, topic(MASK_ROI_TOPIC), REGION,
                        typestore.types[REGION](x_offset=region.left, y_offset=region.top,
                                                height=region.height, width=region.width,
                                                do_rectify=False)))
    return records


def _steering(typestore: Typestore, sample: SteeringSample, msgtype: str, ros1: bool) -> Any:
    if msgtype != STEERING_REPORT_TYPE:
        return typestore.types[msgtype](data=sample.angle)
    flags = dict.fromkeys(['enabled', 'override', 'driver', 'timeout', 'fault_wheel_sensor',
                           'fault_bus1', 'fault_bus2', 'fault_calibration', 'fault_connector'],
                          False)
    return typestore.types[STEERING_REPORT_TYPE](
        header=_header(typestore, sample.stamp_ns, ros1), steering_wheel_angle=sample.angle,
        steering_wheel_angle_cmd=0.0, steering_wheel_torque=0.0, speed=10.0, **flags)
