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
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import websocket

from waiting import wait_until
from vbp_ros.data.camera_bags import CameraFrame, NodeOutput, SteeringSample, write_camera_bag
from vbp_ros.explain.attention import AttentionStatistics, horizon_in_mask
from vbp_ros.data.sources import synthetic_frames
from vbp_ros.engine.build import build_engine
from vbp_ros.pixels.frames import Crop

pytestmark = pytest.mark.slow

MS = 1_000_000
T0 = 1_700_000_000 * 1000 * MS
FRAMES = 9  # per bag, 20 Hz
REPORT_OFFSET_MS = 3  # 50 Hz steering reports, 3 ms after a frame period boundary
BROKEN = 4  # the JPEG bags' frame 4 is cut short
HORIZON_ROW = 240.0
GALLERY = 2
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync']
# name: (storage, compressed, colour)
BAGS = {'car1/mcap_raw': ('mcap', False, False), 'car1/mcap_jpeg': ('mcap', True, False),
        'car2/sqlite_raw': ('sqlite3', False, True), 'car2/sqlite_jpeg': ('sqlite3', True, True),
        'old/ros1_raw.bag': ('ros1', False, False), 'old/ros1_jpeg.bag': ('ros1', True, True)}
# A drive's bag (the camera, vbp_node's outputs for it in its namespace) is read; the same
# outputs without the camera frames (a drive recorded before the camera was) fail, and say so.
DRIVE, DRIVE_WITHOUT_CAMERA = 'drives/front', 'drives/front_outputs_only'
READ = len(BAGS) + 1


def report_ms(index: int) -> int:
    return REPORT_OFFSET_MS + 20 * index


def recorded_angle(frame_ms: int) -> float:
    """The angle of the report nearest a frame (brute force over the reports)."""
    nearest = min(range(FRAMES * 3), key=lambda j: abs(report_ms(j) - frame_ms))
    return float(np.float32(0.001 * report_ms(nearest)))


def frames_of(seed: int, compressed: bool, colour: bool) -> tuple[list[CameraFrame], list]:
    """Camera messages and the pixels the engine gets from each (None: undecodable)."""
    drive = synthetic_frames(seed=seed, drive_rate_hz=20.0)
    messages, decoded = [], []
    for index in range(FRAMES):
        gray = next(drive)[0]
        pixels = cv2.merge([gray, gray // 2 + 60, gray]) if colour else gray
        stamp = T0 + index * 50 * MS
        if not compressed:
            messages.append(CameraFrame(stamp, stamp + 5 * MS, pixels))
            decoded.append((pixels, 'rgb'))
            continue
        payload = cv2.imencode('.jpg', pixels)[1].tobytes()
        if index == BROKEN:
            payload = payload[:len(payload) // 2]
        messages.append(CameraFrame(stamp, stamp + 5 * MS, payload=payload))
        decoded.append(None if index == BROKEN else
                       (cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED),
                        'bgr'))
    return messages, decoded


@pytest.fixture(scope='module')
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The folder of bags, and per bag path what the engine sees of each frame."""
    root = tmp_path_factory.mktemp('fleet')
    steering = [SteeringSample(T0 + report_ms(j) * MS, T0 + report_ms(j) * MS + MS,
                               float(np.float32(0.001 * report_ms(j))))
                for j in range(FRAMES * 3)]
    expected = {}
    for seed, (name, (storage, compressed, colour)) in enumerate(BAGS.items()):
        messages, decoded = frames_of(seed, compressed, colour)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        path = write_camera_bag(root / name, messages, storage=storage, compressed=compressed,
                                topic='/front/image_raw' + ('/compressed' if compressed else ''),
                                steering=steering)
        expected[str(path)] = decoded
    messages, decoded = frames_of(len(BAGS), False, False)
    outputs = [NodeOutput(frame.stamp_ns, frame.log_ns + 20 * MS,
                          np.full((66, 200), 0.5, np.float32), 0.1, np.zeros((480, 640, 3),
                                                                             np.uint8))
               for frame in messages]
    drive = write_camera_bag(root / DRIVE, messages, topic='/front/image_raw', steering=steering,
                             outputs=outputs, mask_region=Crop(200, 0, 280, 640),
                             node_namespace='front')
    expected[str(drive)] = decoded
    write_camera_bag(root / DRIVE_WITHOUT_CAMERA, [], steering=steering, outputs=outputs,
                     node_namespace='front')
    (root / 'broken.mcap').write_bytes(b'\x89MCAP0\r\n' + bytes(range(256)) * 8)
    (root / 'car1' / 'notes.txt').write_text('not a bag')
    return root, expected


def run_fleet(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, '-m', 'vbp_ros.tools.fleet', *map(str, args),
               '--object-store-mb', '100', '--no-progress']
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


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
        for column in ('error', 'above_horizon', 'change'):
            finite = sum(np.isfinite(table[column][i]) for i in rows)
            total += min(GALLERY, finite)
    return total


def open_in_chromium(page: Path, profile: Path) -> tuple[list[str], dict]:
    """Load a page in headless Chromium over the DevTools protocol; returns the console
    errors (messages, exceptions, failed loads) and what the page shows."""
    log = (profile.parent / 'chromium.log').open('w')
    browser = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f'--user-data-dir={profile}',
                                '--remote-debugging-port=0', 'about:blank'],
                               stdout=log, stderr=log)
    try:
        port_file = profile / 'DevToolsActivePort'
        wait_until(port_file.exists, 60.0)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list') as response:
            targets = json.load(response)
        url = next(t['webSocketDebuggerUrl'] for t in targets if t['type'] == 'page')
        connection = websocket.create_connection(url, timeout=60, suppress_origin=True)
        errors, calls = [], iter(range(1, 1000))

        def call(method: str, **params: object) -> dict:
            number = next(calls)
            connection.send(json.dumps({'id': number, 'method': method, 'params': params}))
            while True:
                message = json.loads(connection.recv())
                if message.get('id') == number:
                    return message.get('result', {})
                note(message)

        def note(message: dict) -> None:
            method, params = message.get('method'), message.get('params', {})
            if method == 'Runtime.consoleAPICalled' and params['type'] in ('error', 'assert'):
                errors.append(json.dumps(params['args']))
            elif method == 'Runtime.exceptionThrown':
                errors.append(params['exceptionDetails']['text'])
            elif method == 'Log.entryAdded' and params['entry']['level'] == 'error':
                errors.append(params['entry']['text'])

        for domain in ('Runtime', 'Log', 'Page'):
            call(f'{domain}.enable')
        call('Page.navigate', url=page.as_uri())
        while True:
            message = json.loads(connection.recv())
            if message.get('method') == 'Page.loadEventFired':
                break
            note(message)
        shown = call('Runtime.evaluate', returnByValue=True, expression='''({
            thumbnails: document.querySelectorAll('div.gallery img').length,
            loaded: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
            images: document.images.length,
            plots: document.querySelectorAll('img.plot').length,
            sections: document.querySelectorAll('section.bag').length,
            text: document.body.innerText})''')['result']['value']
        connection.close()
        return errors, shown
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        log.close()


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


def test_a_killed_run_resumes_without_duplicate_rows(tmp_path: Path) -> None:
    folder, out = tmp_path / 'bags', tmp_path / 'out'
    for seed in range(4):
        messages, _ = frames_of(seed, False, False)
        write_camera_bag(folder / f'drive{seed}', messages)
    command = [sys.executable, '-m', 'vbp_ros.tools.fleet', str(folder), '--out', str(out),
               '--workers', '1', '--readers', '1', '--batch', '4', '--segment', '4',
               '--object-store-mb', '100', '--no-progress']
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    wait_until(lambda: list(out.glob('parts/*.parquet')) or first.poll() is not None, 240.0)
    assert first.poll() is None, 'the run ended before it could be killed'
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    finished = {path: path.stat().st_mtime_ns for path in out.glob('parts/*.parquet')}
    assert 1 <= len(finished) < 4, 'the kill came too late to interrupt the run'
    refused = run_fleet(folder, '--out', out)
    assert refused.returncode == 2 and '--resume' in refused.stderr
    second = run_fleet(folder, '--out', out, '--resume', '--batch', '4')
    assert second.returncode == 0, second.stderr
    summary = json.loads((out / 'summary.json').read_text())
    assert len(summary['bags_resumed']) == len(finished)
    assert summary['bags_read_this_run'] == 4 - len(finished) and summary['bags_read'] == 4
    table = pq.read_table(out / 'frames.parquet').to_pydict()
    keys = list(zip(table['bag'], table['index']))
    assert len(keys) == len(set(keys)) == 4 * FRAMES
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
