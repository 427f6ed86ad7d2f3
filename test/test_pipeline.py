"""vbp_node's frame pipeline without ROS: what is published, in which order, for which frames,
and how every frame that is not answered is counted."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from waiting import wait_until
from vbp_ros.engine import pipeline as pipeline_module
from vbp_ros.engine.build import build_engine
from vbp_ros.engine.mailbox import LatestFrameMailbox
from vbp_ros.engine.pipeline import (ERROR, OK, WARN, Answer, Arrival, FramePipeline,
                                     PipelineSettings)
from vbp_ros.pixels.overlay import red_overlay

NOW_NS = 2_000_000_000_000


class Port:
    """A FrameOutputs that records its calls."""

    def __init__(self, overlay: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.answers: list[Answer] = []
        self.overlays: list[np.ndarray] = []
        self.statistics: list[np.ndarray] = []
        self.want_overlay = overlay

    def steering(self, answer: Answer) -> None:
        self.calls.append(('steering', answer.stamp_ns))
        self.answers.append(answer)

    def mask(self, answer: Answer) -> None:
        self.calls.append(('mask', answer.stamp_ns))

    def attention(self, answer: Answer, statistics: np.ndarray) -> None:
        self.calls.append(('attention', answer.stamp_ns))
        self.statistics.append(statistics)

    def wants_overlay(self, camera: str) -> bool:
        return self.want_overlay

    def overlay(self, answer: Answer, overlay: np.ndarray) -> None:
        self.calls.append(('overlay', answer.stamp_ns))
        self.overlays.append(overlay.copy())  # the buffer is reused for the next frame

    def timing(self, answer: Answer, processing_ms: float, latency_ms: float | None) -> None:
        self.calls.append(('timing', answer.stamp_ns))

    def live_view(self, answer: Answer, overlay: np.ndarray | None,
                  latency_ms: float | None) -> None:
        self.calls.append(('live', answer.stamp_ns))


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(('info', message))

    def warning(self, message: str) -> None:
        self.lines.append(('warning', message))

    def error(self, message: str) -> None:
        self.lines.append(('error', message))


def image(pixels: np.ndarray, stamp_ns: int, encoding: str = 'mono8') -> SimpleNamespace:
    """A sensor_msgs/Image as the ROS layer hands it over (any object with its fields)."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id='cam')
    return SimpleNamespace(header=header, encoding=encoding, height=pixels.shape[0],
                           width=pixels.shape[1], step=pixels.strides[0], is_bigendian=0,
                           data=pixels.tobytes())


def frame(seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 90, (480, 640), dtype=np.uint8)
    pixels[260:440, 150 + 20 * seed:170 + 20 * seed] = 255
    return pixels


@pytest.fixture(scope='module')
def engine(checkpoint):
    return build_engine(checkpoint, device='cpu', threads=1)


def settings(engine, **changes) -> PipelineSettings:
    values = dict(engine=engine, overlay_alpha=0.8, overlay_max_width=1920, deadline_ms=0.0,
                  max_age_ms=0.0, max_stamp_age_s=60.0, camera_stale_s=0.5, batch_wait_s=0.0)
    return PipelineSettings(**{**values, **changes})


def pipeline(engine, port: Port, log: Log | None = None, **changes) -> FramePipeline:
    """A pipeline fed through a newest-frame mailbox (see offer)."""
    result = FramePipeline(LatestFrameMailbox(['']), port, log or Log(), lambda: NOW_NS)
    result.update(settings(engine, **changes))
    return result


def offer(frames: FramePipeline, message: SimpleNamespace) -> None:
    frames.source.put(Arrival(message, time.perf_counter()), '')


def test_the_angle_goes_out_first_and_the_overlay_only_when_wanted(engine) -> None:
    port = Port(overlay=True)
    frames = pipeline(engine, port)
    frames.start()
    try:
        offer(frames, image(frame(1), NOW_NS - 5_000_000))
        assert wait_until(lambda: ('live', NOW_NS - 5_000_000) in port.calls)
        port.want_overlay = False
        offer(frames, image(frame(2), NOW_NS - 1_000_000))
        assert wait_until(lambda: ('live', NOW_NS - 1_000_000) in port.calls)
    finally:
        assert frames.stop(10.0)
    first, second = NOW_NS - 5_000_000, NOW_NS - 1_000_000
    assert port.calls == [('steering', first), ('mask', first), ('attention', first),
                          ('overlay', first), ('timing', first), ('live', first),
                          ('steering', second), ('mask', second), ('attention', second),
                          ('timing', second), ('live', second)]
    expected = engine.process(frame(1))
    answer = port.answers[0]
    assert answer.result.angle == pytest.approx(expected.angle, abs=1e-6)
    np.testing.assert_array_equal(answer.result.mask, expected.mask)
    assert answer.region.as_tuple() == (200, 0, 250, 640)
    overlay = red_overlay(frame(1), answer.region.place(expected.mask, (480, 640)), 0.8)
    np.testing.assert_array_equal(port.overlays[0], overlay)
    assert frames.monitor.snapshot().totals['overlays'] == 1


def test_the_newest_frame_is_answered_and_the_others_counted(engine) -> None:
    port = Port()
    frames = pipeline(engine, port)
    for stamp in range(1, 4):  # waiting before the worker runs: only the newest is kept
        offer(frames, image(frame(stamp), NOW_NS - stamp))
    frames.start()
    assert wait_until(lambda: port.answers)
    assert frames.stop(10.0)
    totals = frames.monitor.snapshot().totals
    assert [answer.stamp_ns for answer in port.answers] == [NOW_NS - 3]
    assert (totals['received'], totals['processed'], totals['dropped_superseded']) == (3, 1, 2)


def test_stop_answers_what_waits(engine) -> None:
    port = Port()
    frames = pipeline(engine, port)
    frames.start()
    offer(frames, image(frame(4), NOW_NS - 7))
    assert frames.stop(10.0)
    totals = frames.monitor.snapshot().totals
    assert totals['received'] == totals['processed'] + totals['dropped_superseded'] == 1
    assert not frames.running


def test_bad_and_stale_frames_are_counted_and_the_next_is_answered(engine) -> None:
    port, log = Port(), Log()
    frames = pipeline(engine, port, log, max_age_ms=50.0)
    frames.start()
    try:
        bad = image(frame(5), NOW_NS - 10)
        bad.encoding = 'nv24'
        offer(frames, bad)
        assert wait_until(lambda: frames.monitor.snapshot().totals['dropped_invalid'] == 1)
        offer(frames, image(frame(6), NOW_NS - 60_000_000))  # 60 ms old
        assert wait_until(lambda: frames.monitor.snapshot().totals['dropped_stale'] == 1)
        offer(frames, image(frame(7), NOW_NS - 1_000_000))
        assert wait_until(lambda: port.answers)
    finally:
        assert frames.stop(10.0)
    assert [answer.stamp_ns for answer in port.answers] == [NOW_NS - 1_000_000]
    assert any('nv24' in text for level, text in log.lines if level == 'warning')
    assert any('stale' in text for level, text in log.lines if level == 'warning')


def test_a_frame_size_the_model_cannot_take_is_an_error_said_once(engine) -> None:
    port, log = Port(), Log()
    frames = pipeline(engine, port, log)
    frames.start()
    try:
        for stamp in (1, 2):
            offer(frames, image(np.zeros((100, 100), np.uint8), NOW_NS - stamp))
            assert wait_until(lambda: frames.monitor.snapshot().totals['dropped_invalid'] == stamp)
    finally:
        assert frames.stop(10.0)
    assert len([text for level, text in log.lines if level == 'error']) == 1
    level, message = frames.health(frames.monitor.snapshot(), 'active')
    assert level == ERROR and 'does not fit the model' in message


def test_new_settings_reach_the_next_frame(engine, checkpoint) -> None:
    port, log = Port(), Log()
    frames = pipeline(engine, port, log)
    frames.start()
    try:
        replacement = build_engine(checkpoint, device='cpu', threads=1)
        replacement.model_name = 'the replacement'
        frames.update(settings(replacement))
        offer(frames, image(frame(8), NOW_NS - 3))
        assert wait_until(lambda: port.answers)
    finally:
        assert frames.stop(10.0)
    assert frames.engine is replacement
    assert ('info', f'now running the replacement on {replacement.description}') in log.lines


def test_health_follows_the_counts(engine) -> None:
    frames = pipeline(engine, Port())
    snapshot = frames.monitor.snapshot()
    assert frames.health(snapshot, 'inactive') == (OK, 'inactive: not processing')
    assert frames.health(snapshot, 'active') == (OK, 'ok')
    frames.monitor.count('received', 5)
    frames.monitor.count('deadline_misses')
    time.sleep(0.01)
    level, message = frames.health(frames.monitor.snapshot(), 'active')
    assert (level, message) == (WARN, 'receiving frames but processing none')


def test_a_deadline_miss_is_a_warning_for_a_while_not_for_good(engine, monkeypatch) -> None:
    """One late frame makes the health WARN, which clears WARN_HOLD_S after the last one (a
    node that runs for hours is not left warning for a frame late long ago); the count stays."""
    monkeypatch.setattr(pipeline_module, 'WARN_HOLD_S', 1.0)  # past a busy machine's stalls
    frames = pipeline(engine, Port())
    monitor = frames.monitor
    monitor.count('received')
    monitor.frame_done(30.0, 31.0, deadline_ms=20.0)  # processed, late
    assert frames.health(monitor.snapshot(), 'active') == (
        WARN, 'deadline misses in the last 1 s')
    monitor.count('dropped_invalid')
    assert frames.health(monitor.snapshot(), 'active') == (
        WARN, 'deadline misses, invalid frames in the last 1 s')
    time.sleep(1.05)
    snapshot = monitor.snapshot()
    assert frames.health(snapshot, 'active') == (OK, 'ok')
    assert snapshot.totals['deadline_misses'] == 1 and snapshot.totals['dropped_invalid'] == 1
    monitor.frame_done(30.0, 31.0, deadline_ms=20.0)
    assert frames.health(monitor.snapshot(), 'active')[0] == WARN


@pytest.mark.slow
def test_a_frame_that_takes_seconds_is_a_warning(engine) -> None:
    port = Port()
    release = threading.Event()
    port.steering = lambda answer: release.wait(10.0)  # a stuck output, or a stuck network
    frames = pipeline(engine, port)
    frames.start()

    def health() -> tuple[str, str]:
        return frames.health(frames.monitor.snapshot(), 'active')
    try:
        offer(frames, image(frame(9), NOW_NS - 3))
        assert wait_until(lambda: health() == (WARN, 'one frame has been processing for 2 s'),
                          timeout=10.0)
    finally:
        release.set()
        assert frames.stop(10.0)
    assert 'processing for' not in health()[1]
