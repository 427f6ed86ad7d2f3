"""vbp-fleet end to end on Ray: a folder of mixed bags written here (rosbag2 MCAP and SQLite 3,
ROS 1; raw and JPEG frames; one corrupt bag), Parquet rows checked one by one against the
engine, the summary, the HTML report in headless Chromium, a killed run resumed, and drives'
bags with and without camera frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from chromium import open_in_chromium
from fleet_bags import (DRIVE_WITHOUT_CAMERA, FRAMES, MS, READ, T0, frames_of, recorded_angle,
                        run_fleet, write_fleet)
from waiting import wait_until
from vbp_ros.data.camera_bags import write_camera_bag
from vbp_ros.explain.attention import AttentionStatistics, horizon_in_mask
from vbp_ros.engine.build import build_engine
from vbp_ros.models.checkpoint import default_model_path

pytestmark = pytest.mark.slow

HORIZON_ROW = 240.0
GALLERY = 2


@pytest.fixture(scope='module')
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The folder of bags, and per bag path what the engine sees of each frame."""
    root = tmp_path_factory.mktemp('fleet')
    return root, write_fleet(root)


@pytest.fixture(scope='module')
def fleet_run(fleet, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp('out') / 'run'
    result = run_fleet(fleet[0], '--out', out, '--workers', 2, '--threads', 1, '--batch', 2,
                       '--segment', 4, '--gallery', GALLERY, '--horizon-row', HORIZON_ROW)
    return out, result


def test_a_corrupt_bag_and_one_without_camera_frames_are_reported_and_the_rest_is_read(
        fleet, fleet_run) -> None:
    out, result = fleet_run
    assert result.returncode == 1, result.stderr  # 1: finished, some bags failed
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['bags_found'] == READ + 2 and summary['bags_read'] == READ
    broken, outputs_only = summary['bags_failed']
    assert broken['bag'].endswith('broken.mcap') and broken['reason']
    assert 'broken.mcap' in result.stderr
    # Never the masks of vbp_node for camera frames (it used to rank masks of masks).
    assert outputs_only['bag'] == str(fleet[0] / DRIVE_WITHOUT_CAMERA)
    assert outputs_only['reason'] == (
        "no camera frames: no sensor_msgs/Image or CompressedImage topic besides vbp_node's own "
        'pictures (/front/vbp/mask, /front/vbp/overlay); record the camera topic (vbp-drive '
        'does by default)')
    assert f'failed: {outputs_only["bag"]}: no camera frames' in result.stderr
    assert outputs_only['reason'] in (out / 'report.html').read_text().replace('&#x27;', "'")
    for bag, counts in summary['frames_per_bag'].items():
        compressed = 'jpeg' in bag
        assert counts['messages'] == FRAMES
        assert counts['frames'] == FRAMES - compressed
        assert sum(counts['skipped'].values()) == compressed
        assert counts['steering_topic'] == '/vehicle/steering_report'
    assert summary['frames'] == summary['frames_this_run'] == READ * FRAMES - 3
    assert summary['frames_per_s'] > 0 and summary['wall_s'] > summary['processing_s']
    assert summary['ray']['resources']['CPU'] >= 2 and summary['ray']['workers'] == 2
    assert summary['model']['spec']['architecture'] == 'authors'


def test_rows_equal_the_engine_frame_by_frame(fleet, fleet_run) -> None:
    _, expected = fleet
    out, _ = fleet_run
    rows = pq.read_table(out / 'frames.parquet').to_pylist()
    assert len(rows) == READ * FRAMES - 3
    engine = build_engine(None, device='cpu')  # the path vbp-fleet's workers take
    spec = engine.spec
    region = engine.preprocess.region((480, 640))
    horizon = horizon_in_mask(HORIZON_ROW, region, spec.input_height)
    statistics = AttentionStatistics((spec.input_height, spec.input_width), region, (480, 640))
    by_bag: dict[str, list[dict]] = {}
    for row in rows:
        by_bag.setdefault(row['bag'], []).append(row)
    assert set(by_bag) == set(expected)
    for bag, bag_rows in by_bag.items():
        decoded = expected[bag]
        assert [r['index'] for r in bag_rows] == [i for i, d in enumerate(decoded) if d]
        previous = None
        for row in bag_rows:
            frame, order = decoded[row['index']]
            result = engine.process(frame, order=order)
            assert row['topic'].startswith('/front/image_raw')
            assert row['stamp_ns'] == T0 + row['index'] * 50 * MS
            assert row['log_time_ns'] == row['stamp_ns'] + 5 * MS
            assert row['angle'] == pytest.approx(result.angle, rel=1e-5, abs=1e-7)
            stats = statistics.table(result.mask[None], horizon, previous)
            for name, values in stats.items():
                assert row[name] == pytest.approx(values[0], rel=1e-4, abs=1e-6, nan_ok=True), \
                    name
            assert np.isnan(row['change']) == (previous is None)
            previous = result.mask
            recorded = recorded_angle(row['index'] * 50)
            assert row['recorded_angle'] == pytest.approx(recorded)
            assert row['error'] == pytest.approx(row['angle'] - recorded)


def gallery_size(table: dict) -> int:
    """Thumbnails the report should show: per bag and category, up to GALLERY frames with a
    score (the first frame of a bag has no mask change)."""
    total = 0
    for bag in set(table['bag']):
        rows = [i for i, name in enumerate(table['bag']) if name == bag]
        for column in ('error', 'roi_mass', 'change'):
            finite = sum(np.isfinite(table[column][i]) for i in rows)
            total += min(GALLERY, finite)
    return total


def test_report_loads_in_chromium_with_every_thumbnail(fleet_run, tmp_path: Path) -> None:
    out, _ = fleet_run
    table = pq.read_table(out / 'frames.parquet').to_pydict()
    errors, shown = open_in_chromium(out / 'report.html', tmp_path / 'profile')
    assert errors == []
    assert shown['thumbnails'] == gallery_size(table) > 0
    assert shown['loaded'] == shown['images'] == shown['thumbnails'] + READ
    assert shown['plots'] == shown['sections'] == READ
    assert 'broken.mcap' in shown['text'] and 't = ' in shown['text']
    for link in out.glob('report_files/*/*'):
        assert link.stat().st_size > 0


@pytest.mark.parametrize('compare', [[], ['--compare', str(default_model_path())]],
                         ids=['one model', 'compared'])
def test_a_killed_run_resumes_without_duplicate_rows(tmp_path: Path, compare: list[str]
                                                     ) -> None:
    folder, out = tmp_path / 'bags', tmp_path / 'out'
    for seed in range(4):
        messages, _ = frames_of(seed, False, False)
        write_camera_bag(folder / f'drive{seed}', messages)
    command = [sys.executable, '-m', 'vbp_ros.tools.fleet', str(folder), '--out', str(out),
               '--workers', '1', '--readers', '1', '--batch', '4', '--segment', '4',
               '--object-store-mb', '100', '--no-progress', *compare]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    wait_until(lambda: list(out.glob('parts/*.parquet')) or first.poll() is not None, 240.0)
    assert first.poll() is None, 'the run ended before it could be killed'
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    finished = {path: path.stat().st_mtime_ns for path in out.glob('parts/*.parquet')}
    assert 1 <= len(finished) < 4, 'the kill came too late to interrupt the run'
    refused = run_fleet(folder, '--out', out, *compare)
    assert refused.returncode == 2 and '--resume' in refused.stderr
    second = run_fleet(folder, '--out', out, '--resume', '--batch', '4', *compare)
    assert second.returncode == 0, second.stderr
    summary = json.loads((out / 'summary.json').read_text())
    assert len(summary['bags_resumed']) == len(finished)
    assert summary['bags_read_this_run'] == 4 - len(finished) and summary['bags_read'] == 4
    table = pq.read_table(out / 'frames.parquet').to_pydict()
    keys = list(zip(table['bag'], table['index']))
    assert len(keys) == len(set(keys)) == 4 * FRAMES
    if compare:  # the comparison's rows are committed with the frames' (one part per bag)
        compared = pq.read_table(out / 'comparison.parquet').to_pydict()
        assert list(zip(compared['bag'], compared['index'])) == keys
        assert (np.array(compared['mask_similarity']) >= 0.999).all()
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    assert not list(out.glob('parts/*.tmp'))


def test_a_bag_cut_short_is_read_up_to_the_cut_and_reported(tmp_path: Path) -> None:
    """A truncated bag was reported as '1 of 1 bags read, 0 failed; 128 frames', nothing
    saying that it was cut or how much was lost."""
    messages, _ = frames_of(0, False, False)
    bag = write_camera_bag(tmp_path / 'killed', messages)
    (bag / 'metadata.yaml').unlink()  # as a killed recorder leaves it
    file = next(bag.glob('*.mcap'))
    with file.open('r+b') as stream:
        stream.truncate(file.stat().st_size * 7 // 10)
    cut = file.read_bytes()
    out = tmp_path / 'out'
    result = run_fleet(bag, '--out', out, '--workers', 1, '--batch', 2)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / 'summary.json').read_text())
    [report] = summary['bags_cut_short']
    assert report['bag'] == str(file) and 0 < report['frames_recovered'] < FRAMES
    assert 0 < report['bytes_left_out'] < len(cut)
    assert summary['frames'] == report['frames_recovered']
    assert summary['frames_per_bag'][str(file)]['repaired'] is True
    assert f"1 cut short ({report['bytes_left_out']} bytes left out)" in result.stdout
    assert f'{file} was not closed' in result.stderr
    assert 'cut short' in (out / 'report.html').read_text()
    assert file.read_bytes() == cut  # read from a repaired copy, never repaired in place
