"""The Foxglove live view, seen by a WebSocket client that speaks the protocol."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from waiting import wait_until
from vbp_ros.live import foxglove_view
from vbp_ros.live.client import FoxgloveClient, protobuf_fields
from vbp_ros.live.foxglove_view import CameraTopics, LiveFrame, LiveView

TOPICS = CameraTopics(camera='/camera/image_raw', overlay='/car1/vbp/overlay',
                      mask='/car1/vbp/mask', angle='/car1/steering_angle',
                      latency='/car1/debug/pipeline_latency_ms',
                      attention='/car1/vbp/attention')
ATTENTION = (0.5, 0.75, 0.2, 0.4, 0.6, 0.1)


def frame(index: int) -> LiveFrame:
    pixels = np.full((48, 64), 10 * index, np.uint8)
    overlay = np.zeros((48, 64, 3), np.uint8)
    overlay[:, :, 0] = 200
    mask = np.linspace(0, 1, 16 * 64, dtype=np.float32).reshape(16, 64)
    return LiveFrame(stamp_ns=1_700_000_000_000_000_000 + index, frame_id='camera',
                     pixels=pixels, order='rgb', overlay=overlay, mask=mask,
                     angle=0.01 * index, latency_ms=5.0 + index, attention=ATTENTION)


@pytest.fixture
def view():
    live = LiveView(port=0, max_rate_hz=0)
    live.add_camera('front', TOPICS)
    yield live
    live.close()


@pytest.fixture
def encodings(monkeypatch) -> list[tuple]:
    calls = []
    real = foxglove_view.encode_jpeg

    def counted(picture: np.ndarray, quality: int) -> bytes:
        calls.append((picture.shape, quality))
        return real(picture, quality)

    monkeypatch.setattr(foxglove_view, 'encode_jpeg', counted)
    return calls


def test_channels_are_named_like_the_topics(view) -> None:
    with FoxgloveClient(view.port) as client:
        client.read_advertisements(set(vars(TOPICS).values()))
    assert client.channels[TOPICS.overlay]['schemaName'] == 'foxglove.CompressedImage'
    assert client.channels[TOPICS.angle]['encoding'] == 'json'


def test_nothing_is_encoded_without_a_subscriber(view, encodings) -> None:
    with FoxgloveClient(view.port) as client:  # connected, but subscribed to nothing
        client.read_advertisements({TOPICS.overlay})
        assert not view.wants_overlay('front')
        assert not any(view.publish('front', frame(i)) for i in range(10))
    assert encodings == [] and view.frames_sent == 0


@pytest.mark.slow
def test_a_subscriber_gets_jpeg_frames_and_scalars_until_it_leaves(view, encodings) -> None:
    with FoxgloveClient(view.port) as client:
        client.read_advertisements({TOPICS.overlay, TOPICS.angle})
        client.subscribe([TOPICS.overlay, TOPICS.angle])
        assert wait_until(lambda: view.wants_overlay('front'))
        for index in range(20):
            view.publish('front', frame(index))
        client.collect(1.0)
        overlays = client.received.by_topic[TOPICS.overlay]
        angles = client.received.by_topic[TOPICS.angle]
        assert len(overlays) == 20 and len(angles) == 20
        image = protobuf_fields(overlays[-1][1])
        assert image[3] == b'jpeg' and image[4] == b'camera'
        picture = cv2.imdecode(np.frombuffer(image[2], np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (48, 64, 3) and picture[:, :, 2].mean() > 180  # red, BGR
        assert json.loads(angles[-1][1]) == {'data': pytest.approx(0.19)}
        assert {shape for shape, _ in encodings} == {(48, 64, 3)}  # the overlay only
        client.unsubscribe_all()
        assert wait_until(lambda: not view.wants_overlay('front'))
        sent = view.frames_sent
        assert not view.publish('front', frame(21)) and view.frames_sent == sent


@pytest.mark.slow
@pytest.mark.slow
def test_attention_is_sent_as_vbp_attention_publishes_it(view, encodings) -> None:
    """The layout's ``/vbp/attention.data[4]`` plots the live channel as it plots a bag: the
    same fields as the node's Float32MultiArray, its values and labels; NaN (a mask without
    attention) as JSON null."""
    messages = pytest.importorskip('vbp_ros.ros.messages')
    published = []
    for values in ([0.25, 0.5, 0.1, 0.3, 0.8, 0.05], [float('nan')] * 6):
        message = messages.attention_array()  # filled as vbp_node fills it
        message.data = np.asarray(values, np.float32).tobytes()
        published.append(message)
    with FoxgloveClient(view.port) as client:
        client.read_advertisements({TOPICS.attention})
        client.subscribe([TOPICS.attention])
        assert wait_until(lambda: view.publish('front', replace(
            frame(0), attention=published[0].data)))
        view.publish('front', replace(frame(1), attention=published[1].data))
        client.collect(1.0)
    assert client.channels[TOPICS.attention]['encoding'] == 'json'
    received = [json.loads(payload) for _, payload in
                client.received.by_topic[TOPICS.attention]]
    assert len(received) == 2 and encodings == []  # no picture encoded for it
    dim = published[0].layout.dim[0]
    assert received[0]['layout'] == {'dim': [{'label': dim.label, 'size': 6, 'stride': 6}],
                                     'data_offset': 0}
    assert dim.label.split(',')[4] == 'roi_mass'
    assert received[0]['data'] == list(published[0].data)  # float32, as published
    assert received[0]['data'][4] == pytest.approx(0.8)
    assert received[1]['data'] == [None] * 6


def test_a_wide_camera_frame_is_sent_shrunk_to_max_width(encodings) -> None:
    """An 8K camera must not put a full-size JPEG encode in the worker for every frame."""
    live = LiveView(port=0, max_rate_hz=0, max_width=640)
    live.add_camera('front', TOPICS)
    wide = np.zeros((2160, 3840, 3), np.uint8)
    wide[:, 1920:] = (0, 0, 255)  # the right half blue
    try:
        with FoxgloveClient(live.port) as client:
            client.read_advertisements({TOPICS.camera})
            client.subscribe([TOPICS.camera])
            assert wait_until(lambda: live.publish('front', LiveFrame(
                stamp_ns=1, frame_id='camera', pixels=wide, order='rgb', overlay=None,
                mask=np.zeros((16, 64), np.float32), angle=0.0, latency_ms=None,
                attention=ATTENTION)))
            client.collect(1.0)
            image = protobuf_fields(client.received.by_topic[TOPICS.camera][-1][1])
    finally:
        live.close()
    picture = cv2.imdecode(np.frombuffer(image[2], np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (360, 640, 3) and encodings == [((360, 640, 3), 80)]
    assert picture[:, 400:, 0].mean() > 200 and picture[:, :240, 0].mean() < 20  # BGR


def test_rate_limit_per_camera(encodings, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(foxglove_view.time, 'monotonic', lambda: clock[0])
    live = LiveView(port=0, max_rate_hz=4.0, jpeg_quality=50)
    live.add_camera('front', TOPICS)
    try:
        with FoxgloveClient(live.port) as client:
            client.read_advertisements({TOPICS.mask})
            client.subscribe([TOPICS.mask])
            assert wait_until(lambda: live.publish('front', frame(0)))
            sent = []
            for _ in range(16):  # a 16 Hz camera for one second
                clock[0] += 1 / 16
                sent.append(live.publish('front', frame(1)))
            assert sent == [False, False, False, True] * 4  # every 0.25 s
            assert all(quality == 50 for _, quality in encodings)
            sent = []
            for index in range(48):  # a 12 Hz camera for 4 s, frames 3 ms early or late
                clock[0] += 1 / 12 + (0.003 if index % 2 else -0.003)
                sent.append(live.publish('front', frame(1)))
            assert sum(sent) >= 15  # 4 Hz; timed from each send it was 13 (3.25 Hz)
            clock[0] += 10.0  # after a pause: one frame, then the rate again, no burst
            assert [live.publish('front', frame(1)) for _ in range(3)] == [True, False, False]
    finally:
        live.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match='jpeg_quality'):
        LiveView(port=0, jpeg_quality=0)
    with pytest.raises(ValueError, match='max_width'):
        LiveView(port=0, max_width=0)


def test_layout_file_shows_the_live_channels() -> None:
    """config/vbp_foxglove_layout.json (Lichtblick/Foxglove 'import layout') shows the
    channels a node in the root namespace advertises, on the default camera topic."""
    from pathlib import Path

    from vbp_ros import interface
    from vbp_ros.explain.attention import ATTENTION_LABELS

    layout = json.loads((Path(__file__).resolve().parents[1] / 'config' /
                         'vbp_foxglove_layout.json').read_text())
    panels = layout['configById']
    images = {config['imageMode']['imageTopic'] for name, config in panels.items()
              if name.startswith('Image!')}
    assert images == {interface.resolve_topic(interface.OVERLAY_TOPIC, ''),
                      interface.resolve_topic(interface.MASK_TOPIC, ''),
                      interface.resolve_topic(interface.DEFAULT_CAMERA_TOPIC, '')}
    plotted = {path['value'].rsplit('.', 1)[0] for path in panels['Plot!steering']['paths']}
    assert plotted == {interface.resolve_topic(interface.STEERING_TOPIC, ''),
                       interface.resolve_topic(interface.PIPELINE_LATENCY_TOPIC, '')}
    attention = {path['value'] for path in panels['Plot!attention']['paths'] if path['enabled']}
    topic = interface.resolve_topic(interface.ATTENTION_TOPIC, '')
    labels = ATTENTION_LABELS  # the values plotted by default: ROI mass and change
    assert attention == {f'{topic}.data[{labels.index("roi_mass")}]',
                         f'{topic}.data[{labels.index("change")}]'}
