"""vbp-bench prints its table with both backends, timed side by side, and the engine's
figures: its stages, and several cameras batched against separate passes; and issue 19's
figure, the mask's cost as % of the forward pass against its targets; and issue 23's, the
attention statistics per frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vbp_ros.ros import ceiling_bench, latency_bench
from vbp_ros.tools import bench


@pytest.mark.slow
def test_bench_times_torch_and_onnxruntime_side_by_side(tmp_path: Path, capsys) -> None:
    out = tmp_path / 'bench.json'
    assert bench.main(['--networks', 'authors', '--batches', '1', '--methods', 'forward,vbp',
                       '--backends', 'torch,onnxruntime', '--repeats', '3', '--warmup', '1',
                       '--engine-frames', '2', '--json', str(out)]) == 0
    printed = capsys.readouterr().out
    records = json.loads(out.read_text())
    assert {(r['backend'], r['method']) for r in records} == {
        ('torch', 'forward'), ('torch', 'vbp'), ('onnxruntime', 'forward'),
        ('onnxruntime', 'vbp')}
    assert all(r['median_ms'] > 0 for r in records)
    assert 'onnxruntime vs torch, authors batch 1: forward ' in printed
    assert printed.count('engine, NetSVF, mono8') == 2 and 'onnxruntime' in printed
    assert printed.count('engine, NetSVF, 3 cameras') == 2
    assert 'a frame as one batch' in printed


def test_mask_cost_is_the_median_paired_difference_over_the_median_forward() -> None:
    forward = np.array([10.0, 12.0, 11.0, 30.0])
    with_mask = np.array([11.0, 13.5, 12.0, 31.0])  # paired differences 1, 1.5, 1, 1
    # not the difference of the medians (12.75 - 11.5), which a slow round would skew
    assert bench.mask_cost_percent(with_mask, forward) == pytest.approx(100.0 * 1.0 / 11.5)


def test_mask_cost_takes_the_best_repetition_against_the_issue_target() -> None:
    missed = bench.MaskCost('netsvf', 'onnxruntime', (15.0, 15.4), (12.0, 10.5))
    met = bench.MaskCost('resnet18', 'onnxruntime', (10.0, 10.2), (6.0, 4.9))
    untargeted = bench.MaskCost('authors', 'torch', (9.0,), (7.0,))
    assert (missed.best, missed.target, missed.verdict) == (10.5, 10.0, 'MISSED')
    assert (met.best, met.target, met.verdict) == (4.9, 5.0, 'met')
    assert (untargeted.target, untargeted.verdict) == (None, '')
    table = bench.format_mask_costs([missed, met, untargeted], rounds=50, clock='cpu')
    header, columns, *rows = table.splitlines()
    assert 'best of 2 repetitions of 50 rounds' in header and 'CPU time' in header
    assert rows[0].split() == ['netsvf', 'onnxruntime', '15.20', '12.0', '10.5', '10.5', '10',
                               'MISSED']
    assert rows[1].split()[-3:] == ['4.9', '5', 'met']
    assert rows[2].split()[-2:] == ['7.0', '-']


def test_mask_cost_mode_times_both_backends_per_network(capsys) -> None:
    assert bench.main(['--mask-cost', '--networks', 'authors', '--repeats', '3',
                       '--repetitions', '2', '--warmup', '1', '--clock', 'cpu']) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:2] for row in rows] == [['authors', 'torch'], ['authors', 'onnxruntime']]
    assert all(len(row) == 7 and row[-1] == '-' for row in rows)  # forward, 2 runs, best, target


@pytest.mark.slow
def test_attention_mode_prints_the_cost_per_frame_against_the_budget(capsys) -> None:
    assert bench.main(['--attention', '--engine-frames', '3', '--repeats', '2']) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('attention statistics per frame (640x125 mask, wall-clock time, '
                           '6 frames): median ')
    assert line.endswith(('budget 0.5 ms: met', 'budget 0.5 ms: MISSED'))


@pytest.mark.parametrize('main, arguments, message', [
    (bench.main, ['--batches', '1,0'], 'argument --batches: 0 is not a positive integer'),
    (bench.main, ['--threads', '-1'], 'argument --threads: -1 is not an integer of 0 or more'),
    (ceiling_bench.main, ['--rates', '30,0'], 'argument --rates: 0 is not a positive number'),
    (ceiling_bench.main, ['--sizes', '0x0'], "'0x0' is not WIDTHxHEIGHT in pixels"),
    (ceiling_bench.main, ['--sizes', '640x480,abc'], "'abc' is not WIDTHxHEIGHT in pixels"),
    (latency_bench.main, ['--rate', 'nan'], 'argument --rate: nan is not a positive number'),
    (latency_bench.main, ['--width', '0'], 'argument --width: 0 is not a positive integer')])
def test_benchmark_settings_that_cannot_run_are_refused_before_anything_starts(
        main, arguments: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    """They died in a ZeroDivisionError or a reshape, or (--sizes 0x0) ran until killed."""
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    assert stop.value.code == 2 and message in capsys.readouterr().err
