"""The package on the pip install as ROS 2 users run it: the ament index, ``ros2 pkg``,
``ros2 run`` and ``ros2 launch vbp_ros drive.launch.py`` of the upstream launch system and
command line (installed by the set-up from ../shared/upstream), stopped the way a terminal's
Ctrl-C stops them: SIGINT to the whole process group, so every process gets it twice (directly
and forwarded by launch), and sometimes twice more 30 ms later.

The loops are short here (the suite stays a few minutes on two cores); run them longer by hand:

    VBP_SHUTDOWN_LOOPS=50 .venv/bin/python -m pytest test/test_ros2_launch.py -k loop
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from importlib.metadata import distribution
from pathlib import Path

import pytest
import torch

from conftest import require
from dds_segments import kill, owned, remove, stop
from vbp_ros.data.bags import open_bag
from vbp_ros.interface import stamp_to_ns

pytest.importorskip('rclpy')
from ament_index_python.packages import (get_package_prefix,  # noqa: E402
                                         get_package_share_directory)

pytestmark = pytest.mark.ros

BIN = Path(sys.executable).parent
ROS2 = BIN / 'ros2'
LOOPS = int(os.environ.get('VBP_SHUTDOWN_LOOPS', '2'))
DRIVE_PROCESSES = ('road_camera-1', 'vbp_node-2', 'vbp_record-3')
STARTUP_S = 120.0


@pytest.fixture(scope='module')
def ros2() -> Path:
    require(ROS2.is_file(), f'the ros2 command line is not installed in {BIN} (make test '
            'installs it from ../shared/upstream/install-ros2-launch.sh)',
            'VBP_REQUIRE_ROS2_LAUNCH')
    return ROS2


class Running:
    """A command in a process group of its own (as a terminal runs it), its output collected
    by a thread. As a context manager it stops the group if it is still running at the end,
    as a Ctrl-C would, and kills it if that fails (a failed assertion leaves no processes, and
    no shared memory, behind)."""

    def __init__(self, *command: str) -> None:
        self.process = subprocess.Popen([str(part) for part in command],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True,
                                        env=dict(os.environ, PYTHONFAULTHANDLER='1'))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc_info: object) -> None:
        stop(self.process, group=True, drain=False)  # launch's children are in its group

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return ''.join(self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = STARTUP_S) -> None:
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            assert self.process.poll() is None, f'exited before {text!r}:\n{self.output}'
            assert time.monotonic() < deadline, f'no {text!r} after {timeout} s:\n{self.output}'
            time.sleep(0.05)

    def ctrl_c(self, times: int = 1) -> None:
        """A terminal's Ctrl-C: SIGINT to the whole process group, ``times`` times 30 ms
        apart."""
        for press in range(times):
            if press:
                time.sleep(0.03)
            os.killpg(self.process.pid, signal.SIGINT)

    def finish(self, timeout: float = 180.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # SIGABRT first: faulthandler shows where it hangs
            segments = owned(self.process, group=True)
            os.killpg(self.process.pid, signal.SIGABRT)
            time.sleep(2.0)
            kill(self.process, group=True)
            remove(segments)
            self._reader.join(5.0)
            pytest.fail(f'still running {timeout} s later:\n{self.output}')
        self._reader.join(5.0)
        return code

    def started_pids(self) -> list[int]:
        """The pids launch reports as started."""
        return [int(line.split('pid [')[1].split(']')[0]) for line in self.lines
                if 'process started with pid [' in line]


def assert_gone(pids: list[int]) -> None:
    """None of these processes is left running (no orphans)."""
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def console_scripts() -> list[str]:
    return sorted(e.name for e in distribution('vbp_ros').entry_points
                  if e.group == 'console_scripts')


def test_every_console_script_is_where_ros2_run_and_launch_look() -> None:
    """The README's pip set-up left lib/vbp_ros/ missing: 'libexec directory ... does not
    exist' from ros2 run and ros2 launch."""
    share = Path(get_package_share_directory('vbp_ros'))
    assert {'package.xml', 'launch', 'config'} <= {path.name for path in share.iterdir()}
    assert {'drive.launch.py', 'vbp.launch.py'} <= {p.name for p in (share / 'launch').iterdir()}
    libexec = Path(get_package_prefix('vbp_ros')) / 'lib' / 'vbp_ros'
    for script in console_scripts():
        executable = libexec / script
        assert executable.is_file() and os.access(executable, os.X_OK), executable
        assert executable.read_text().startswith(f'#!{sys.executable}'), executable


def test_ros2_pkg_executables_lists_them(ros2: Path) -> None:
    result = subprocess.run([ros2, 'pkg', 'executables', 'vbp_ros'], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [word for script in console_scripts()
                                     for word in ('vbp_ros', script)]


def recorded_counts(bag: Path) -> dict[str, int]:
    with open_bag(bag) as reader:
        assert reader.repair is None  # closed: summary and footer written
        return {connection.topic: connection.msgcount for connection in reader.connections}


def header_stamps(bag: Path, topic: str) -> list[int]:
    with open_bag(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [stamp_to_ns(reader.deserialize(raw, c.msgtype).header.stamp)
                for c, _, raw in reader.messages(connections=connections)]


def launch_record_and_ctrl_c(ros2: Path, bag: Path, presses: int, *arguments: str) -> str:
    """``ros2 launch vbp_ros drive.launch.py record:=true``, a few recorded seconds, then a
    terminal's Ctrl-C; the bag's counts are checked (the camera frame of every mask among
    them) and the output returned."""
    with Running(ros2, 'launch', 'vbp_ros', 'drive.launch.py', 'record:=true',
                 f'bag_dir:={bag}', *arguments) as launch:
        launch.wait_for('recording /vbp/mask ')
        launch.wait_for('[vbp]: frames of ', timeout=60.0)  # frames flow
        time.sleep(2.0)
        launch.ctrl_c(presses)
        code = launch.finish()
    output = launch.output
    assert code == 0, output
    for process in DRIVE_PROCESSES:
        assert f'[{process}]: process has finished cleanly' in output, output
    assert 'Traceback' not in output and 'process has died' not in output, output
    assert (bag / 'metadata.yaml').is_file(), output
    counts = recorded_counts(bag)
    assert counts['/camera/image_raw'] > 0 and counts['/vbp/mask'] > 0, counts
    # road_camera's frame one waited for the recorder's subscriptions to vbp_node's outputs:
    # every mask has its steering angle, and frame one its mask.
    assert counts['/steering_angle'] >= counts['/vbp/mask'], counts
    assert ('/vbp/overlay' in counts) == ('record_overlay:=true' in arguments), counts
    # vbp-review draws every mask's overlay. The last frame, which the camera may send after
    # the Ctrl-C reached vbp_node, has its mask too.
    masks, frames = header_stamps(bag, '/vbp/mask'), header_stamps(bag, '/camera/image_raw')
    assert set(masks) <= set(frames) and frames[0] == masks[0], (frames[:3], masks[:3], output)
    assert frames[-1] == masks[-1], (frames[-3:], masks[-3:], output)
    assert_gone(launch.started_pids())
    return output


def test_ros2_launch_record_ctrl_c_loop(ros2: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl-C on ros2 launch record:=true used to kill vbp_node (SIGABRT) in 6 of
    11 runs and leave the bag without metadata.yaml every time. Odd runs press it twice."""
    for run in range(LOOPS):
        launch_record_and_ctrl_c(ros2, tmp_path / f'bag{run}', 1 + run % 2)


def test_ros2_run_vbp_node_double_ctrl_c_loop(ros2: Path, tmp_path: Path) -> None:
    """ros2 run with two SIGINTs 30 ms apart killed vbp_node in 4 of 5 runs."""
    for run in range(LOOPS):
        with Running(ros2, 'run', 'vbp_ros', 'vbp_node', '--ros-args', '-r',
                     f'__ns:=/ros2_run_{run}') as node:
            node.wait_for('ready')
            node.ctrl_c(2)
            assert node.finish(60.0) == 0, node.output
        assert 'Traceback' not in node.output and 'terminate called' not in node.output, \
            node.output


def test_demo_images_drive_through_source_images(ros2: Path, tmp_path: Path,
                                                 reference_dir: Path) -> None:
    """The authors' 640x125 demo images with the bundled model: every frame used to be dropped
    ('smaller than the crop region'); they are taken as cropped already."""
    bag = tmp_path / 'bag'
    output = launch_record_and_ctrl_c(ros2, bag, 1, 'source:=images',
                                      f'path:={reference_dir / "images"}', 'record_overlay:=true')
    assert 'frames of 640x125: the network sees the whole frame' in output, output
    assert 'dropped frame' not in output and 'does not fit' not in output, output
    with open_bag(bag) as reader:
        (overlays,) = [c for c in reader.connections if c.topic == '/vbp/overlay']
        _, _, raw = next(reader.messages(connections=[overlays]))
        overlay = reader.deserialize(raw, overlays.msgtype)
    assert (overlay.width, overlay.height) == (640, 125)


def test_rviz_without_rviz2_starts_nothing(ros2: Path) -> None:
    """rviz:=true without rviz2 used to exit 1 with road_camera and vbp_node left running."""
    with Running(ros2, 'launch', 'vbp_ros', 'drive.launch.py', 'rviz:=true') as launch:
        assert launch.finish(60.0) == 1, launch.output
    assert 'rviz:=true needs rviz2, which is not installed' in launch.output
    assert 'process started' not in launch.output, launch.output


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_vbp_node_exiting_stops_the_launch(ros2: Path) -> None:
    """device:=cuda without CUDA: vbp_node exits 1; the launch used to keep running without
    it. Now it stops everything and exits 1, with one line from vbp_node saying why."""
    with Running(ros2, 'launch', 'vbp_ros', 'drive.launch.py', 'device:=cuda') as launch:
        assert launch.finish(120.0) == 1, launch.output
    output = launch.output
    fatal = [line for line in launch.lines if '[vbp_node-2]' in line and 'FATAL' in line]
    assert len(fatal) == 1 and 'CUDA is not available' in fatal[0], output
    assert 'vbp_node-2 exited with code 1 while the drive was running' in output, output
    assert '[road_camera-1]: process has finished cleanly' in output, output
    assert 'Traceback' not in output, output
    assert_gone(launch.started_pids())


def test_a_camera_failing_at_start_stops_the_drive_cleanly(ros2: Path) -> None:
    """road_camera on a missing video exits 1 within a second; the launch then stopped
    vbp_node while it was still importing PyTorch: a KeyboardInterrupt traceback and 'process
    has died' (exit code -2) in 3 of 3 runs. The entry point now takes over SIGINT first."""
    with Running(ros2, 'launch', 'vbp_ros', 'drive.launch.py', 'source:=video',
                 'path:=/nonexistent/drive.mp4') as launch:
        assert launch.finish(120.0) == 1, launch.output
    output = launch.output
    assert 'road_camera-1 exited with code 1 while the drive was running' in output, output
    assert '[vbp_node-2]: process has finished cleanly' in output, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output
    assert_gone(launch.started_pids())


def test_ctrl_c_before_the_managed_node_is_up_ends_the_launch_cleanly(ros2: Path) -> None:
    """A Ctrl-C while launch still waits for vbp_lifecycle_node's change_state service (its
    first seconds) made launch_ros's wait raise on launch's destroyed ROS node: 'Caught
    exception in launch', exit code 1, in 9 of 9 tries at 0.8 to 3 s. It ends cleanly."""
    with Running(ros2, 'launch', 'vbp_ros', 'drive.launch.py', 'managed:=true',
                 'namespace:=early_stop') as launch:
        launch.wait_for('[vbp_lifecycle_node-2]: process started with pid')
        time.sleep(0.5)  # launch waits for the service from the start: the node imports torch
        assert 'configure: now inactive' not in launch.output, 'too late to test the wait'
        launch.ctrl_c()
        code = launch.finish()
    assert code == 0, launch.output
    assert 'Caught exception' not in launch.output, launch.output
    assert '[vbp_lifecycle_node-2]: process has finished cleanly' in launch.output, launch.output
    assert_gone(launch.started_pids())


LIFECYCLE_TRIES = 3  # a busy machine can take longer than one --spin-time to discover a node


def lifecycle(ros2: Path, *arguments: str) -> str:
    """``ros2 lifecycle ARGUMENTS`` (ros2lifecycle, installed by the set-up), as a user types
    it, without a daemon left behind; its output, after checking that it succeeded. Without a
    daemon each call discovers the graph anew within ``--spin-time``: a call that found nothing
    ('Node not found', or an empty answer from ``nodes``: the node or its lifecycle services not
    discovered yet, nothing done) is tried again, as a user would."""
    for _ in range(LIFECYCLE_TRIES):
        result = subprocess.run([str(ros2), 'lifecycle', *arguments, '--no-daemon',
                                 '--spin-time', '3'], capture_output=True, text=True, timeout=60)
        if 'Node not found' not in result.stderr and result.stdout.strip():
            break
    assert result.returncode == 0, result
    return result.stdout


def test_managed_vbp_node_is_configured_and_activated_by_the_launch(ros2: Path) -> None:
    """managed:=true starts vbp_lifecycle_node; launch configures it once it runs and activates
    it once the configure made it inactive, frames flow. ``ros2 lifecycle`` sees it and drives
    it: a deactivate by the user stays (the launch used to activate the node again at once), an
    activate makes frames flow again, and Ctrl-C stops it cleanly."""
    node = '/managed_drive/vbp'
    with Running(ros2, 'launch', 'vbp_ros', 'drive.launch.py', 'managed:=true',
                 'namespace:=managed_drive') as launch:
        launch.wait_for('configure: now inactive')
        launch.wait_for('activate: now active')
        launch.wait_for('[managed_drive.vbp]: frames of ', timeout=60.0)
        assert node in lifecycle(ros2, 'nodes').split()
        assert lifecycle(ros2, 'get', node).strip() == 'active [3]'
        assert 'Transitioning successful' in lifecycle(ros2, 'set', node, 'deactivate')
        launch.wait_for('deactivate: now inactive')
        time.sleep(2.0)
        assert launch.output.count('activate: now active') == 1, launch.output
        assert lifecycle(ros2, 'get', node).strip() == 'inactive [2]'
        assert '- activate [3]' in lifecycle(ros2, 'list', node)
        assert 'Transitioning successful' in lifecycle(ros2, 'set', node, 'activate')
        launch.wait_for('activate: now active', count=2)
        angle = subprocess.run(  # published again: a message, not just a state
            [str(ros2), 'topic', 'echo', '--once', '/managed_drive/steering_angle',
             'std_msgs/msg/Float32'], capture_output=True, text=True, timeout=60)
        assert angle.stdout.startswith('data: '), angle
        launch.ctrl_c()
        code = launch.finish()
    assert code == 0, launch.output
    assert '[vbp_lifecycle_node-2]: process has finished cleanly' in launch.output, launch.output
    assert 'Traceback' not in launch.output, launch.output
    assert_gone(launch.started_pids())
