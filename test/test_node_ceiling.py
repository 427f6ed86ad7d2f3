"""vbp-ceiling: the near-free network and its card, the figures' arithmetic (ROS-free), and
the command end to end as a user runs it (node, DDS, rgb8 frames; no timing assertions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from vbp_ros.bench.ceiling import (NOT_RECEIVED, RateFigures, RateRun, ceiling_hz, ceiling_line,
                                   near_free_network, near_free_spec, overload, overload_line,
                                   process_cpu_seconds, rate_figures, skip_reason)
from vbp_ros.models.checkpoint import save_checkpoint
from vbp_ros.engine.build import build_engine

MS = 1_000_000  # ns


def figures(rate: float, answered_share: float = 1.0, send_rate: float | None = None,
            answered_rate: float | None = None) -> RateFigures:
    """Figures of a rate as the report reads them (only what the rules look at matters)."""
    return RateFigures(rate_hz=rate, sent=1000, send_rate_hz=send_rate or rate,
                       answered=round(1000 * answered_share),
                       answered_rate_hz=answered_rate or rate * answered_share,
                       cpu_ms_per_frame=1.0, cpu_cores=0.1, latency_ms=None, node_counts={})


@pytest.mark.parametrize('width, height', [(640, 480), (1920, 1080), (33, 47)])
def test_the_near_free_checkpoint_takes_any_frame_whole(tmp_path, width: int, height: int
                                                        ) -> None:
    path = tmp_path / 'near_free.safetensors'
    save_checkpoint(path, near_free_network(), near_free_spec())
    engine = build_engine(path, backend='torch', device='cpu')
    frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    result = engine.process(frame)
    assert result.mask.shape == (32, 32) and np.isfinite(result.mask).all()
    assert near_free_spec().crop is None and near_free_spec().color == 'rgb'


def test_rate_figures_count_each_frame_of_the_window_once() -> None:
    sent = [1000 * MS + index * 10 * MS for index in range(10)]  # 10 frames in 0.1 s
    answers = [(stamp, stamp + 2 * MS) for stamp in sent[:8]]
    answers += [(sent[0], sent[0] + 9 * MS), (5 * MS, 6 * MS)]  # a repeat, a warm-up frame
    before = {'frames received': '100', 'dropped (superseded by a newer frame)': '4',
              'deadline misses': '1', 'frames processed': '96'}
    after = {'frames received': '109', 'dropped (superseded by a newer frame)': '5',
             'deadline misses': '3', 'frames processed': '104'}
    run = RateRun(rate_hz=100.0, sent_stamps=sent, send_seconds=0.1, answers=answers,
                  cpu_seconds=0.016, cpu_window_seconds=0.2, counts_before=before,
                  counts_after=after)
    result = rate_figures(run)
    assert (result.sent, result.answered) == (10, 8)
    assert result.answered_share == pytest.approx(0.8)
    assert result.send_rate_hz == pytest.approx(100.0)
    assert result.answered_rate_hz == pytest.approx(80.0)
    assert result.cpu_ms_per_frame == pytest.approx(2.0)  # 16 ms over 8 frames answered
    assert result.cpu_cores == pytest.approx(0.08)
    assert result.latency_ms['max'] == pytest.approx(2.0)  # the first receipt of each
    assert result.node_counts == {NOT_RECEIVED: 1, 'dropped (superseded by a newer frame)': 1,
                                  'deadline misses': 2}
    assert not result.within_ceiling
    silent = rate_figures(RateRun(100.0, sent, 0.1, [], 0.01, 0.2, {}, {}))
    assert silent.answered == 0 and silent.cpu_ms_per_frame is None
    assert silent.node_counts == {}


def test_the_ceiling_is_the_highest_rate_answered_with_the_publisher_keeping_up() -> None:
    rates = [figures(30), figures(60, 0.995), figures(120, 0.97), figures(240, 1.0, 150.0)]
    assert ceiling_hz(rates) == 60
    assert ceiling_line(rates).startswith('ceiling: 60 Hz (the highest rate with at least 99 %')
    assert ceiling_hz([figures(30, 0.98)]) is None
    assert ceiling_line([figures(30, 0.98)]).startswith('ceiling: below the lowest rate')
    assert ceiling_line([figures(30), figures(60, 1.0, 40.0)]).startswith(
        'ceiling: at least 30 Hz (the publisher could not reach 60 Hz')
    assert ceiling_line([figures(30), figures(60)]) == \
        'ceiling: at least 60 Hz (the highest rate tried; try higher ones)'
    assert ceiling_line([figures(15, 0.973), figures(30)]).endswith(
        '; lower, yet under 99 %: 15 Hz (97.3 %)')


def test_overload_is_judged_by_the_slowest_rate_up_to_four_times_the_ceiling() -> None:
    rates = [figures(30), figures(60, answered_rate=40.0), figures(120, answered_rate=28.0),
             figures(240, answered_rate=1.0)]  # 240 Hz is beyond 4x 30 Hz: not judged
    judged = overload(rates, 30.0)
    assert (judged.limit_hz, judged.floor_hz, judged.worst.rate_hz) == (120.0, 27.0, 120)
    assert judged.met and overload_line(judged).endswith('27.0 Hz: met')
    assert not overload(rates[:2] + [figures(120, answered_rate=26.0)], 30.0).met
    assert overload(rates[:1], 30.0).worst is None
    assert overload_line(overload(rates[:1], 30.0)).endswith('none tried, not judged')


def test_rates_beyond_the_publisher_or_four_times_the_ceiling_are_skipped() -> None:
    assert skip_reason(120, [figures(30), figures(60, 0.9)]) is None
    assert 'beyond 4x the ceiling' in skip_reason(240, [figures(30), figures(60, 0.9)])
    assert 'publisher reached only 50.0 Hz' in skip_reason(120, [figures(60, 1.0, 50.0)])
    assert skip_reason(480, [figures(30, 0.5)]) is None  # no ceiling yet: every rate runs


def test_process_cpu_time_counts_every_thread() -> None:
    start = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    used = process_cpu_seconds(os.getpid()) - start
    assert 0.1 < used < 2.0
    times = os.times()
    assert process_cpu_seconds(os.getpid()) == pytest.approx(times.user + times.system, abs=0.05)


RATE_LINE = re.compile(r'  ([\d.]+) Hz: sent (\d+) \(([\d.]+) Hz(, the publisher fell SHORT)?\), '
                       r'answered (\d+) \(([\d.]+) %, ([\d.]+) Hz\), node CPU ([\d.]+) ms/frame')


@pytest.mark.ros
def test_vbp_ceiling_reports_rates_a_ceiling_and_the_node_answers() -> None:
    pytest.importorskip('rclpy')
    result = subprocess.run(
        [sys.executable, '-m', 'vbp_ros.ros.ceiling_bench', '--sizes', '320x240',
         '--rates', '10,20', '--duration', '2', '--warmup', '0.5'],
        capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert 'rgb8 320x240' in output
    rows = RATE_LINE.findall(output)
    assert [float(row[0]) for row in rows] == [10.0, 20.0], output
    within = []
    for rate, sent, send_hz, short, answered, share, answered_hz, _ in rows:
        sent, answered = int(sent), int(answered)
        assert 0 < answered <= sent, output
        assert float(share) == pytest.approx(100 * answered / sent, abs=0.06)
        assert float(answered_hz) == pytest.approx(float(send_hz) * answered / sent, abs=0.06)
        if not short and answered >= 0.99 * sent:
            within.append(float(rate))
    ceiling = re.search(r'ceiling: (?:at least )?([\d.]+) Hz', output)
    if within:
        assert ceiling and float(ceiling[1]) == max(within), output
    else:
        assert 'ceiling: below the lowest rate tried' in output
