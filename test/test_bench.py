"""vbp-bench prints its table with both backends, timed side by side, and the engine's
figures: its stages, and several cameras batched against separate passes."""

from __future__ import annotations

import json
from pathlib import Path

from vbp_ros.tools import bench


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
