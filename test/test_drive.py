"""vbp-drive as its console script: the whole pipeline over real DDS, recorded and read back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from vbp_ros.data.bags import open_bag
from vbp_ros.data.camera_bags import CameraFrame, NodeOutput, write_camera_bag
from vbp_ros.drive.summary import Observations, drive_problems, drive_summary, format_summary
from vbp_ros.interface import stamp_to_ns
from vbp_ros.live.client import FoxgloveClient, protobuf_fields

from dds_segments import stop

pytestmark = pytest.mark.ros

REPOSITORY = Path(__file__).resolve().parents[1]
pytest.importorskip('rclpy')
DRIVE = str(Path(sys.executable).parent / 'vbp-drive')


def header_stamps(bag: Path, topic: str) -> list[int]:
    with open_bag(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [stamp_to_ns(reader.deserialize(d, c.msgtype).header.stamp)
                for c, _, d in reader.messages(connections=connections)]


def test_drive_records_the_camera_and_every_processed_frame(tmp_path: Path) -> None:
    """The bag holds the camera frames (frame one included) and, for every processed frame,
    the mask and the angle; no overlays (vbp-review draws them)."""
    bag = tmp_path / 'bag'
    result = subprocess.run([DRIVE, '--duration', '4', '--bag-dir', str(bag),
                             '--namespace', 'car1'], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'latency p50' in result.stdout  # the live status line
    summary = json.loads((tmp_path / 'bag_logs' / 'summary.json').read_text())
    assert summary['exit codes'] == {'road_camera': 0, 'vbp': 0, 'vbp_record': 0}
    messages = summary['recorded']['messages']
    masks = messages['/car1/vbp/mask']
    assert masks > 0  # how many depends on the machine's load; the counts below must agree
    assert messages['/car1/steering_angle'] == masks and '/car1/vbp/overlay' not in messages
    # The counts are the processes' own: the node's processed frames are all in the bag, and
    # what it did not process is accounted for by its drop counters.
    node = summary['vbp_node']
    assert node['frames processed'] == masks
    assert node['frames received'] == node['frames processed'] + sum(
        value for key, value in node.items() if key.startswith('dropped'))
    published, recorded = summary['camera frames published'], summary['camera frames recorded']
    assert recorded == {'topic': '/car1/camera/image_raw',
                        'frames': messages['/car1/camera/image_raw']}
    assert published >= node['frames received'] and published >= recorded['frames'] > 0
    assert f"the bag holds {recorded['frames']} of the {published} camera frames" in result.stdout
    assert summary['problems'] == [] and summary['recorded']['complete']
    assert summary['recorded']['images with a camera frame stamp'] == {
        '/car1/vbp/mask': masks, '/car1/camera/image_raw': recorded['frames']}
    assert (bag / 'metadata.yaml').exists()
    stamps = header_stamps(bag, '/car1/vbp/mask')
    assert stamps == sorted(stamps) and len(set(stamps)) == masks
    camera = header_stamps(bag, '/car1/camera/image_raw')
    assert set(stamps) <= set(camera)
    # Frame one was recorded and processed.
    assert camera[0] == stamps[0], (node, (tmp_path / 'bag_logs' / 'vbp_node.log').read_text())
    assert summary['latency samples'] == summary['seen by vbp-drive']['steering angles']
    assert 0 < summary['pipeline latency ms']['p50'] < 1000
    assert messages['/car1/vbp/mask_roi'] >= 1  # latched: where each mask lies in its frame
    review = subprocess.run([str(Path(DRIVE).with_name('vbp-review')), str(bag)],
                            capture_output=True, text=True, timeout=240)
    assert review.returncode == 0, review.stderr
    assert f'{masks} overlays drawn from /car1/camera/image_raw' in review.stdout, review.stdout


def test_ctrl_c_stops_the_pipeline_in_order_and_closes_the_bag(tmp_path: Path) -> None:
    """A terminal's Ctrl-C, pressed twice 30 ms apart (the second one used to surface as a
    KeyboardInterrupt inside a pybind11 call and leave the processes running); the overlays
    are recorded on request, and vbp-review reviews them."""
    bag = tmp_path / 'bag'
    process = subprocess.Popen([DRIVE, '--bag-dir', str(bag), '--record-overlay'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while sum('latency p50' in line for line in lines) < 2:
            line = process.stdout.readline()
            assert line and time.monotonic() < deadline, ''.join(lines)
            lines.append(line)
        os.killpg(process.pid, signal.SIGINT)
        time.sleep(0.03)
        os.killpg(process.pid, signal.SIGINT)
        output = ''.join(lines) + process.communicate(timeout=120)[0]
    finally:
        stop(process, group=True)
    assert process.returncode == 0, output
    assert (bag / 'metadata.yaml').exists(), output
    summary = json.loads((tmp_path / 'bag_logs' / 'summary.json').read_text())
    assert summary['exit codes'] == {'road_camera': 0, 'vbp': 0, 'vbp_record': 0}
    messages = summary['recorded']['messages']
    masks = messages['/vbp/mask']
    assert masks > 0 and masks == summary['vbp_node']['frames processed']
    assert messages['/vbp/overlay'] == masks
    review = subprocess.run([str(Path(DRIVE).with_name('vbp-review')), str(bag)],
                            capture_output=True, text=True, timeout=120)
    assert review.returncode == 0, review.stderr
    assert f'{masks} recorded overlays' in review.stdout


@pytest.mark.parametrize('recorded', [3, 0])
def test_the_summary_counts_the_camera_frames_in_the_bag(tmp_path: Path, recorded: int) -> None:
    """How many of the camera frames published the bag holds; none is a problem."""
    frames = [CameraFrame(i * 10**8, i * 10**8 + 10**6, np.zeros((48, 64), np.uint8))
              for i in range(3)]
    outputs = [NodeOutput(f.stamp_ns, f.log_ns + 10**6, np.zeros((8, 8), np.float32), 0.0)
               for f in frames]
    bag = write_camera_bag(tmp_path / 'bag', frames[:recorded], outputs=outputs)
    final = {'road_camera': {'frames published': '3', 'final': 'true'},
             'vbp': {'frames processed': '3', 'final': 'true'}}
    summary = drive_summary(Observations(), bag, {'road_camera': 0, 'vbp': 0}, tmp_path, final,
                            '/camera/image_raw')
    assert summary['camera frames recorded'] == {'topic': '/camera/image_raw',
                                                 'frames': recorded}
    assert f'the bag holds {recorded} of the 3 camera frames published' in \
        format_summary(summary)
    assert drive_problems(summary) == ([] if recorded else [
        'the bag holds none of the 3 camera frames published on /camera/image_raw: '
        'vbp-review and vbp-fleet need them'])


def test_a_process_that_failed_is_one_problem_not_two(tmp_path: Path) -> None:
    """Its exit code says it; the final counts it never sent are no news."""
    summary = drive_summary(Observations(), None, {'road_camera': 1, 'vbp': 0, 'vbp_record': 0},
                            tmp_path, {'road_camera': {}, 'vbp_record': {},
                                       'vbp': {'frames processed': '0', 'final': 'true'}},
                            '/camera/image_raw')
    assert drive_problems(summary) == [
        'road_camera exited with code 1',
        'the final counts of vbp_record did not arrive (it was killed?)']


@pytest.mark.parametrize('option, message', [
    (['--namespace', 'car 1'], "--namespace 'car 1': Invalid namespace"),
    (['--image-topic', 'front camera'], "--image-topic 'front camera': Invalid topic name")])
def test_names_ros_refuses_are_refused_before_anything_starts(
        option: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    """They ended in an InvalidNamespaceException or RCLError traceback."""
    from vbp_ros.ros.drive import main

    with pytest.raises(SystemExit) as refused:
        main(option)
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_drive_refuses_an_existing_bag_directory(tmp_path: Path) -> None:
    result = subprocess.run([DRIVE, '--duration', '1', '--bag-dir', str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and 'exists already' in result.stderr


def run_in_private_mounts(script: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a shell script in a mount namespace of its own (root only; a small tmpfs or a
    read-only bind mount vanishes with it)."""
    if shutil.which('unshare') is None or os.geteuid() != 0:
        pytest.skip('needs root and unshare to mount a small file system for the test')
    return subprocess.run(['unshare', '-m', 'sh', '-ec', script], capture_output=True,
                          text=True, timeout=timeout)


def test_a_full_disk_fails_the_drive_loudly(tmp_path: Path) -> None:
    """A recorder that cannot write (a 3 MB disk) used to leave vbp-drive exiting 0 with a
    normal-looking summary."""
    disk, logs = tmp_path / 'disk', tmp_path / 'logs'
    disk.mkdir()
    result = run_in_private_mounts(
        f'mount -t tmpfs -o size=3m tmpfs {disk}\n'
        f'exec {DRIVE} --duration 5 --bag-dir {disk}/bag --log-dir {logs}', timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'vbp-drive: vbp_record exited with code 1' in result.stderr, output
    summary = json.loads((logs / 'summary.json').read_text())
    assert summary['exit codes']['vbp_record'] == 1
    processed = summary['vbp_node']['frames processed']
    assert f'vbp_node published {processed}' in ' '.join(summary['problems'])
    assert 'No space left on device' in (logs / 'vbp_record.log').read_text()


def test_a_full_disk_under_the_logs_too_gives_one_line_problems(tmp_path: Path) -> None:
    """With the logs on the full disk as well (the default: beside the bag), vbp-drive ended
    in a traceback (OSError 28 writing summary.json) and left summary.json at 0 bytes."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    result = run_in_private_mounts(
        f'mount -t tmpfs -o size=3m tmpfs {disk}\n'
        f'{DRIVE} --duration 5 --bag-dir {disk}/bag && status=0 || status=$?\n'
        f'ls {disk}/bag_logs | sed "s/^/LS: /"; exit $status', timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'Traceback' not in output, output
    assert 'vbp-drive: vbp_record exited with code 1' in result.stderr, output
    assert f'vbp-drive: cannot write {disk}/bag_logs/summary.json: No space left on device' \
        in result.stderr, output
    assert 'LS: vbp_node.log' in result.stdout and 'LS: summary.json' not in result.stdout
    assert 'camera published' in result.stdout  # the summary was printed


def test_a_foxglove_client_receives_the_live_overlay_while_the_drive_runs(tmp_path: Path
                                                                          ) -> None:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([DRIVE, '--no-record', '--log-dir', str(tmp_path / 'logs'),
                                '--foxglove-port', str(port), '--namespace', 'live_drive',
                                '--watch-live-view'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        lines = []
        while 'latency p50' not in ''.join(lines):  # frames flow
            line = process.stdout.readline()
            assert line, ''.join(lines)
            lines.append(line)
        overlay = '/live_drive/vbp/overlay'
        with FoxgloveClient(port) as client:
            client.read_advertisements({overlay, '/live_drive/camera/image_raw'})
            client.subscribe([overlay])
            client.collect(3.0)
        os.killpg(process.pid, signal.SIGINT)
        output = ''.join(lines) + process.communicate(timeout=120)[0]
    finally:
        stop(process, group=True)
    assert process.returncode == 0, output
    overlays = client.received.by_topic.get(overlay, [])
    assert len(overlays) >= 5, output
    fields = protobuf_fields(overlays[-1][1])
    assert fields[3] == b'jpeg'
    picture = cv2.imdecode(np.frombuffer(fields[2], np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (480, 640, 3)
    # --watch-live-view: vbp-drive's own client on every channel, its rates in the summary
    live = json.loads((tmp_path / 'logs' / 'summary.json').read_text())['live view client']
    assert live['messages'][overlay] >= 5 and 0 < live['messages a second'][overlay] <= 16
    assert 'live view client received (messages a second): ' in output
