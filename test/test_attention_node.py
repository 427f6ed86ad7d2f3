"""vbp_node's attention health over real DDS: vbp/attention's labels and values, and the
/diagnostics alarm when the crop is moved to the sky or the frames are blanked, cleared after
recovery (the bundled model on a synthetic drive)."""

from __future__ import annotations

import signal

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402

from vbp_ros.data.sources import synthetic_frames  # noqa: E402
from vbp_ros.engine.build import build_engine  # noqa: E402
from vbp_ros.explain.attention import ATTENTION_LABELS, AttentionStatistics  # noqa: E402

from node_harness import Harness, raw, start_node  # noqa: E402

pytestmark = pytest.mark.ros
FRAMES = 4  # attention_alarm_frames
MIN_ROI_MASS = 0.05  # below every frame of the drive (0.08 at least), above the sky's (0.001)
SKY = '{input.crop: [0, 0, 250, 640]}'  # the bundled model's crop moved to the sky


class AttentionProbe:
    """The harness with a vbp/attention subscriber and the attention status of each frame."""

    def __init__(self) -> None:
        self.harness = Harness()
        self.arrays: list[Float32MultiArray] = []
        self.harness.node.create_subscription(Float32MultiArray, 'vbp/attention',
                                              self.arrays.append, 10)
        self.drive = synthetic_frames(seed=4, drive_rate_hz=20.0)

    def send(self, frame: np.ndarray) -> tuple[np.ndarray, DiagnosticStatus]:
        """One frame: its vbp/attention values and the attention status of the first
        /diagnostics that counts it as processed (one built before it was processed can
        arrive after its mask)."""
        arrays, processed = len(self.arrays), self.harness.counter('frames processed')
        assert self.harness.send(raw(frame), self.harness.reliable) is not None
        assert self.harness.spin_until(lambda: len(self.arrays) > arrays, 5.0)
        assert self.harness.spin_until(
            lambda: self.harness.counter('frames processed') > processed, 5.0)
        status = next(status for status in self.harness.diagnostics[-1].status
                      if status.name == 'vbp: attention')
        return np.array(self.arrays[-1].data, np.float64), status

    def levels(self, frames: list[np.ndarray]) -> list[bytes]:
        return [self.send(frame)[1].level for frame in frames]

    def road(self, count: int) -> list[np.ndarray]:
        return [next(self.drive)[0] for _ in range(count)]


OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN


@pytest.fixture(scope='module')
def probe(ros):
    process = start_node('-p', f'attention_alarm_frames:={FRAMES}', '-p', 'deadline_ms:=0.0')
    probe = AttentionProbe()
    try:
        assert probe.harness.send(raw(probe.road(1)[0]), timeout=60.0) is not None
        yield probe
    finally:
        probe.harness.node.destroy_node()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def test_vbp_attention_names_and_carries_the_statistics(probe) -> None:
    assert probe.harness.set_parameter('attention_min_roi_mass', MIN_ROI_MASS) == (True, '')
    frame = probe.road(1)[0]
    values, status = probe.send(frame)
    layout = probe.arrays[-1].layout.dim
    assert [(d.label, d.size) for d in layout] == [(','.join(ATTENTION_LABELS), 6)]
    engine = build_engine(None, device='cpu')
    mask = engine.process(frame).mask
    expected = AttentionStatistics(mask.shape, engine.preprocess.region(frame.shape),
                                   frame.shape).measure(mask[None])[0][0]
    np.testing.assert_allclose(values[:5], expected[:5], rtol=1e-4, atol=1e-5)
    assert 0.0 <= values[5] <= 1.0  # the change from the frame before
    assert status.level == OK and {'roi_mass', 'alarm'} <= {kv.key for kv in status.values}


def test_a_crop_in_the_sky_raises_the_alarm_and_recovery_clears_it(probe) -> None:
    assert probe.harness.set_parameter('attention_min_roi_mass', MIN_ROI_MASS) == (True, '')
    assert probe.levels(probe.road(FRAMES)) == [OK] * FRAMES  # driving: no alarm
    assert probe.harness.set_parameter('card_overrides', SKY) == (True, '')
    try:
        levels = probe.levels(probe.road(FRAMES))
        assert levels == [OK] * (FRAMES - 1) + [WARN]
        values, status = probe.send(probe.road(1)[0])
        assert values[ATTENTION_LABELS.index('roi_mass')] < MIN_ROI_MASS
        assert values[ATTENTION_LABELS.index('centroid_y')] < 0.5  # above the middle
        assert status.message == (f'ROI mass below {MIN_ROI_MASS:g} for {FRAMES + 1} frames in a '
                                  'row (attention off the road, or blank frames)')
    finally:
        assert probe.harness.set_parameter('card_overrides', '') == (True, '')
    assert probe.levels(probe.road(FRAMES)) == [WARN] * (FRAMES - 1) + [OK]


def test_blank_frames_raise_the_alarm_and_recovery_clears_it(probe) -> None:
    """The bundled model's mask of a blank frame is not empty but diffuse (zero padding): the
    attention jumps from the lane markings to everywhere, which raises the alarm at once."""
    assert probe.harness.set_parameter('attention_min_roi_mass', MIN_ROI_MASS) == (True, '')
    probe.levels(probe.road(FRAMES))
    levels = probe.levels([np.zeros((480, 640), np.uint8)] * FRAMES)
    assert WARN in levels
    recovery = probe.levels(probe.road(2 * FRAMES))
    cleared = recovery.index(OK)
    assert cleared <= FRAMES and set(recovery[cleared:]) == {OK}
