"""vbp-latency end to end, as a user runs it: the console script starts vbp_node, streams
frames over DDS, connects a Foxglove client to the live view, and prints its figures."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vbp_ros.models.checkpoint import default_model_path

pytest.importorskip('rclpy')
pytestmark = pytest.mark.ros

SCRIPTS = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def test_vbp_latency_reports_where_frames_went_and_the_live_view() -> None:
    result = subprocess.run(
        [str(SCRIPTS / 'vbp-latency'), '--model', str(default_model_path()), '--rate', '10',
         '--duration', '4', '--live-view', str(free_port())],
        capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sent = int(re.search(r'frames sent (\d+), masks received (\d+)', output)[1])
    assert sent == 40
    went = re.search(r'where frames went .*: published (\d+), not received by the node (\d+), '
                     r'processed (\d+)', output)
    assert went and int(went[1]) >= sent and int(went[3]) > 0, output
    halves = re.findall(r'live view, (no client|with a client on every channel): '
                        r'(\d+)/(\d+) masks received', output)
    assert [half[0] for half in halves] == ['no client', 'with a client on every channel']
    assert sum(int(half[2]) for half in halves) == sent
    rate = re.search(r'live view client received: .*/vbp/overlay ([\d.]+) Hz', output)
    assert rate and float(rate[1]) > 0, output
