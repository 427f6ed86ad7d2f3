"""vbp-drive as its console script: the whole pipeline over real DDS, recorded and read back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vbp_ros.data.bags import open_bag
from vbp_ros.interface import stamp_to_ns

REPOSITORY = Path(__file__).resolve().parents[1]
pytest.importorskip('rclpy')
DRIVE = str(Path(sys.executable).parent / 'vbp-drive')


def header_stamps(bag: Path, topic: str) -> list[int]:
    with open_bag(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [stamp_to_ns(reader.deserialize(d, c.msgtype).header.stamp)
                for c, _, d in reader.messages(connections=connections)]


def test_drive_records_every_processed_frame_with_camera_stamps(tmp_path: Path) -> None:
    bag = tmp_path / 'bag'
    record_params = tmp_path / 'record.yaml'  # the package's, plus the camera
    record_params.write_text((REPOSITORY / 'config' / 'record.yaml').read_text().replace(
        '      - /diagnostics\n', '      - /diagnostics\n      - /camera/image_raw\n'))
    result = subprocess.run([DRIVE, '--duration', '4', '--bag-dir', str(bag),
                             '--namespace', 'car1', '--record-params-file', str(record_params)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'latency p50' in result.stdout  # the live status line
    summary = json.loads((tmp_path / 'bag_logs' / 'summary.json').read_text())
    assert summary['exit codes'] == {'road_camera': 0, 'vbp': 0, 'vbp_record': 0}
    messages = summary['recorded']['messages']
    overlays = messages['/car1/vbp/overlay']
    assert overlays >= 60  # 4 s at 30 Hz, allowing for a loaded machine
    assert messages['/car1/vbp/mask'] == overlays == messages['/car1/steering_angle']
    assert overlays >= 0.9 * summary['camera frames seen']
    assert summary['recorded']['images with a camera frame stamp'] == {
        '/car1/vbp/mask': overlays, '/car1/vbp/overlay': overlays,
        '/camera/image_raw': messages['/camera/image_raw']}
    assert (bag / 'metadata.yaml').exists()
    stamps = header_stamps(bag, '/car1/vbp/overlay')
    assert stamps == sorted(stamps) and len(set(stamps)) == overlays
    camera = header_stamps(bag, '/camera/image_raw')
    assert set(stamps) <= set(camera)
    assert camera[0] == stamps[0]  # frame one was recorded and processed
    assert summary['latency samples'] == summary['steering angles seen']
    assert 0 < summary['pipeline latency ms']['p50'] < 1000


def test_ctrl_c_stops_the_pipeline_in_order_and_closes_the_bag(tmp_path: Path) -> None:
    bag = tmp_path / 'bag'
    process = subprocess.Popen([DRIVE, '--bag-dir', str(bag)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while sum('latency p50' in line for line in lines) < 2:
            line = process.stdout.readline()
            assert line and time.monotonic() < deadline, ''.join(lines)
            lines.append(line)
        process.send_signal(signal.SIGINT)
        output = ''.join(lines) + process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert (bag / 'metadata.yaml').exists(), output
    summary = json.loads((tmp_path / 'bag_logs' / 'summary.json').read_text())
    assert summary['exit codes'] == {'road_camera': 0, 'vbp': 0, 'vbp_record': 0}
    assert summary['recorded']['messages']['/vbp/mask'] >= 30


def test_drive_refuses_an_existing_bag_directory(tmp_path: Path) -> None:
    result = subprocess.run([DRIVE, '--duration', '1', '--bag-dir', str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and 'exists already' in result.stderr
