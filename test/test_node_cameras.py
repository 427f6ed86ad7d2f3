"""vbp_node with several cameras in one forward pass, and its Foxglove live view, over real DDS
(the console script in its own process) and a WebSocket client that speaks the protocol."""

from __future__ import annotations

import json
import math
import socket
import time
from typing import Callable

import cv2
import numpy as np
import pytest

from vbp_ros.engine.build import build_engine
from vbp_ros.live.client import FoxgloveClient, protobuf_fields
from vbp_ros.pixels.encodings import mask_to_mono8

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402

from node_harness import spin_until, start_node  # noqa: E402

pytestmark = pytest.mark.ros

CAMERAS = ('front', 'left', 'right')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


class Node:
    """vbp_node in its own process, stopped with SIGINT at the end."""

    def __init__(self, namespace: str, *parameters: str) -> None:
        self.process = start_node('-r', f'__ns:=/{namespace}',
                                  *[argument for p in parameters for argument in ('-p', p)])

    def stop(self) -> str:
        self.process.send_signal(2)
        output, _ = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, output
        return output


def frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 90, (480, 640), dtype=np.uint8)
    image[260:440, 100 + 30 * (seed % 10):130 + 30 * (seed % 10)] = 255
    return image


def image(pixels: np.ndarray, stamp: int, frame_id: str) -> Image:
    message = Image(height=pixels.shape[0], width=pixels.shape[1], encoding='mono8',
                    step=pixels.shape[1], data=pixels.tobytes())
    message.header.stamp.sec, message.header.frame_id = stamp, frame_id
    return message


def latest_values(arrays: list[DiagnosticArray], name: str) -> dict[str, str]:
    for array in reversed(arrays):
        for status in array.status:
            if status.name == name:
                return {kv.key: kv.value for kv in status.values}
    return {}


class CameraRig:
    """Three cameras publishing into a vbp_node in ``namespace``, and its outputs collected."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.probe = rclpy.create_node('cameras_probe', namespace=f'/{namespace}')
        self.publishers = {name: self.probe.create_publisher(Image, f'{name}/image_raw',
                                                             qos_profile_sensor_data)
                           for name in CAMERAS}
        self.masks: dict[str, dict[int, Image]] = {name: {} for name in CAMERAS}
        for name in CAMERAS:
            self.probe.create_subscription(
                Image, f'{name}/vbp/mask',
                lambda m, name=name: self.masks[name].__setitem__(m.header.stamp.sec, m), 10)
        self.diagnostics: list[DiagnosticArray] = []
        self.probe.create_subscription(DiagnosticArray, '/diagnostics',
                                       self.diagnostics.append, 10)
        self.stamp = 100

    def send_round(self, names: tuple[str, ...] = CAMERAS) -> dict[str, np.ndarray]:
        """A frame from each of ``names`` (all of them are made) with the next stamp."""
        self.stamp += 1
        sent = {name: frame(self.stamp + index) for index, name in enumerate(CAMERAS)}
        for name in names:
            self.publishers[name].publish(image(sent[name], self.stamp, f'{name}_optical'))
        return sent

    def answer(self, names: tuple[str, ...], timeout: float) -> bool:
        """Wait until every camera of ``names`` has its mask of the last round."""
        return self.spin_until(lambda: all(self.stamp in self.masks[n] for n in names), timeout)

    def answered_rounds(self, count: int) -> dict[int, dict[str, np.ndarray]]:
        """Send rounds until ``count`` are answered by every camera (the node loads first)."""
        answered = {}
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and len(answered) < count:
            sent = self.send_round()
            if self.answer(CAMERAS, 1.0):
                answered[self.stamp] = sent
        assert len(answered) == count, 'vbp_node did not answer all three cameras'
        return answered

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        return spin_until(self.probe, condition, timeout)

    def reported(self, rounds: int) -> dict[str, str]:
        """The pipeline's newest /diagnostics (1 Hz) once it counts ``rounds`` of 3 frames."""
        def newest() -> dict[str, str]:
            return latest_values(self.diagnostics, f'{self.namespace}/vbp: pipeline')
        assert self.spin_until(lambda: int(newest().get('frames processed', 0))
                               >= len(CAMERAS) * rounds, 5.0)
        return newest()


def test_three_cameras_share_forward_passes_and_a_quiet_one_stalls_none(ros, checkpoint) -> None:
    vbp = Node('multi', f'model:={checkpoint}', 'image_topics:=[front/image_raw, '
               'left/image_raw, right/image_raw]', 'deadline_ms:=0.0')
    rig = CameraRig('multi')
    try:
        answered = rig.answered_rounds(8)
        engine = build_engine(checkpoint, device='cpu', max_batch=3)
        for stamp, sent in list(answered.items())[-3:]:
            expected = engine.process_batch([sent[n] for n in CAMERAS])
            for name, result in zip(CAMERAS, expected):
                mask = rig.masks[name][stamp]
                assert mask.header.frame_id == f'{name}_optical'  # the camera's own header
                received = np.frombuffer(mask.data, np.uint8).reshape(125, 640).astype(int)
                assert np.abs(received - mask_to_mono8(result.mask)).max() <= 1

        values = rig.reported(len(answered))
        assert int(values['forward passes']) < int(values['frames processed'])  # shared passes
        assert all(int(values[f'frames processed ({name})']) > 0 for name in CAMERAS)

        # 'right' falls quiet: the other two go on, in batches of their own.
        time.sleep(1.0)
        quiet_answers = 0
        for _ in range(5):
            rig.send_round(('front', 'left'))
            quiet_answers += rig.answer(('front', 'left'), 5.0)
        assert quiet_answers == 5
        assert not any(s > max(answered) for s in rig.masks['right'])
    finally:
        rig.probe.destroy_node()
        vbp.stop()


def test_camera_batch_one_gives_each_camera_its_own_forward_pass(ros, checkpoint) -> None:
    vbp = Node('single', f'model:={checkpoint}', 'image_topics:=[front/image_raw, '
               'left/image_raw, right/image_raw]', 'camera_batch:=1', 'deadline_ms:=0.0')
    rig = CameraRig('single')
    try:
        answered = rig.answered_rounds(3)
        values = rig.reported(len(answered))
        assert int(values['forward passes']) == int(values['frames processed'])
    finally:
        rig.probe.destroy_node()
        vbp.stop()


def test_live_view_sends_jpeg_overlays_to_a_websocket_client(ros, checkpoint) -> None:
    port = free_port()
    vbp = Node('live', f'model:={checkpoint}', f'foxglove_port:={port}',
               'foxglove_max_rate_hz:=0.0')
    probe = rclpy.create_node('live_probe', namespace='/live')
    try:
        camera = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
        masks: dict[int, Image] = {}
        probe.create_subscription(Image, 'vbp/mask',
                                  lambda m: masks.__setitem__(m.header.stamp.sec, m), 10)
        attention: list[Float32MultiArray] = []
        probe.create_subscription(Float32MultiArray, 'vbp/attention', attention.append, 50)

        def answered(stamp: int) -> bool:
            camera.publish(image(frame(stamp), stamp, 'camera'))
            return spin_until(probe, lambda: stamp in masks, 0.5)

        deadline = time.monotonic() + 90.0
        stamp = 1
        while not answered(stamp) and time.monotonic() < deadline:
            stamp += 1
        assert stamp in masks, 'vbp_node did not answer'
        with FoxgloveClient(port) as client:
            overlay, angle = '/live/vbp/overlay', '/live/steering_angle'
            live_attention = '/live/vbp/attention'
            client.read_advertisements({overlay, angle, live_attention, '/live/image',
                                        '/live/vbp/mask'})
            client.subscribe([overlay, angle, live_attention])
            for _ in range(40):
                stamp += 1
                camera.publish(image(frame(stamp), stamp, 'camera'))
                spin_until(probe, lambda: stamp in masks, 0.2)
                client.collect(0.01)
            client.collect(1.0)
        overlays = client.received.by_topic.get(overlay, [])
        assert len(overlays) >= 10 and len(client.received.by_topic.get(angle, [])) >= 10
        fields = protobuf_fields(overlays[-1][1])
        assert fields[3] == b'jpeg' and fields[4] == b'camera'
        picture = cv2.imdecode(np.frombuffer(fields[2], np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (480, 640, 3)
        live = [json.loads(payload) for _, payload in
                client.received.by_topic.get(live_attention, [])]

        def all_published() -> bool:  # as vbp/attention published them; JSON has null for NaN
            published = [[None if math.isnan(value) else value for value in message.data]
                         for message in attention]
            return all(message['data'] in published for message in live)

        assert len(live) >= 10 and spin_until(probe, all_published, 2.0)
        assert live[-1]['layout']['dim'][0]['label'] == attention[-1].layout.dim[0].label
    finally:
        probe.destroy_node()
        output = vbp.stop()
    assert f'live view on ws://127.0.0.1:{port}' in output
