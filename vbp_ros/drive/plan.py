"""What a drive starts, shared by launch/drive.launch.py and the pip runner vbp-drive: the
parameters in the parameter files, the recorded topics and the recorder command. The names
themselves (topics, files, sources) are :mod:`vbp_ros.interface`'s.

Free of launch and rclpy imports, so the launch file stays thin and all of this is tested
where launch_ros cannot run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from ..interface import (CAMERA_NODE, COMPRESSED_IMAGE_TOPIC, DEFAULT_CAMERA_TOPIC, IMAGE_TOPIC,
                         MASK_ROI_TOPIC, MASK_TOPIC, OVERLAY_TOPIC, RECORDED_TOPICS, RECORDER_NODE,
                         VBP_NODE, VBP_OUTPUTS, resolve_topic)
from .supervisor import Child, executable

# Seconds each process may take to stop after SIGINT (the recorder writes its backlog).
STOP_TIMEOUT_S = {CAMERA_NODE: 10.0, VBP_NODE: 35.0, RECORDER_NODE: 120.0}
RESPAWN_DELAY_S = 2.0  # drive.launch.py respawn:=true: pause before vbp_node starts again


@dataclass(frozen=True)
class DriveRequest:
    """What a drive is asked to run (vbp-drive's options; None keeps a file's value)."""

    namespace: str
    image_topic: str
    params_file: Path
    camera_params_file: Path
    record_params_file: Path
    bag: Path | None  # None: no recording
    source: str | None = None
    path: str | None = None
    model: str | None = None
    device: str | None = None
    foxglove_port: int | None = None
    record_overlay: bool = False

    def recorded_topics(self) -> list[str]:
        """What the recorder records (empty without a recording)."""
        if self.bag is None:
            return []
        return recorded_topics(self.record_params_file, self.image_topic, self.record_overlay)

    def records_camera(self) -> bool:
        """Whether the recorder records the camera topic."""
        return records_camera(self.recorded_topics(), self.image_topic, self.namespace)

    def awaited_outputs(self) -> list[str]:
        """vbp_node's outputs the recorder must subscribe before frame one (resolved)."""
        return awaited_outputs(self.recorded_topics(), self.namespace)


def node_parameters(params_file: Path, node_name: str) -> dict:
    """The ``ros__parameters`` of ``node_name`` in a ROS 2 parameter file (keys ``name``,
    ``/name``, ``/**/name`` or ``/**``), later entries overriding earlier ones."""
    document = yaml.safe_load(Path(params_file).read_text()) or {}
    parameters: dict = {}
    for key, entry in document.items():
        if key.lstrip('/') in (node_name, f'**/{node_name}', '**'):
            parameters.update((entry or {}).get('ros__parameters', {}))
    return parameters


def record_bag_dir(params_file: Path, bag_dir: str) -> str:
    """The bag directory of a recording: ``bag_dir`` when given, else the parameter file's
    (``''``: the recorder names it)."""
    return bag_dir or str(node_parameters(params_file, RECORDER_NODE).get('bag_dir', ''))


def record_topics(params_file: Path) -> list[str]:
    """The topics vbp_record records with this parameter file (its default where the file
    names none)."""
    return list(node_parameters(params_file, RECORDER_NODE).get('topics', RECORDED_TOPICS))


def recorded_topics(params_file: Path, image_topic: str, record_overlay: bool = False
                    ) -> list[str]:
    """What a drive records: the parameter file's topics, its camera
    (:data:`~vbp_ros.interface.DEFAULT_CAMERA_TOPIC`) being the drive's ``image_topic``, and
    vbp/overlay too when ``record_overlay``."""
    topics = [image_topic if topic == DEFAULT_CAMERA_TOPIC else topic
              for topic in record_topics(params_file)]
    return topics + [OVERLAY_TOPIC] if record_overlay and OVERLAY_TOPIC not in topics \
        else topics


def records_camera(topics: Sequence[str], image_topic: str, namespace: str) -> bool:
    """Whether ``topics`` (as a recorder in ``namespace`` resolves them) hold the camera."""
    camera = resolve_topic(image_topic, namespace)
    return any(resolve_topic(topic, namespace) == camera for topic in topics)


def awaited_outputs(topics: Sequence[str], namespace: str) -> list[str]:
    """vbp_node's per-frame outputs among the recorded ``topics``, resolved in ``namespace``:
    the camera's first frame waits until the recorder subscribes them, so that frame one's
    outputs are recorded. vbp/mask_roi is not awaited: it is latched (transient local), so
    the recorder gets it whenever it subscribes."""
    recorded = {resolve_topic(topic, namespace) for topic in topics}
    outputs = [resolve_topic(topic, namespace) for topic in VBP_OUTPUTS if topic != MASK_ROI_TOPIC]
    return [topic for topic in outputs if topic in recorded]


def camera_subscribers(records_camera: bool, watchers: int) -> int:
    """How many subscribers road_camera waits for before its first frame: vbp_node, the
    recorder when it records the camera, and ``watchers`` (vbp-drive's monitor, rviz2), which
    would otherwise make up the count before the others listen. So frame one is processed
    and recorded."""
    return 1 + records_camera + watchers


def rosbag2_available() -> bool:
    """Whether ``ros2 bag record`` with MCAP storage can run here (a ROS 2 install)."""
    if shutil.which('ros2') is None:
        return False
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        get_package_prefix('ros2bag')
        get_package_prefix('rosbag2_storage_mcap')
    except (PackageNotFoundError, ValueError):
        return False
    return True


def rviz2_available() -> bool:
    """Whether rviz2 can run here (a ROS 2 install with rviz2)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        prefix = get_package_prefix('rviz2')
    except (PackageNotFoundError, ValueError):
        return False
    return (Path(prefix) / 'lib' / 'rviz2' / 'rviz2').is_file()


def missing_pieces(rviz: bool, record: bool, recorder: str) -> list[str]:
    """What a drive asks for that this machine lacks, one sentence each (empty: all there)."""
    problems = []
    if rviz and not rviz2_available():
        problems.append('rviz:=true needs rviz2, which is not installed (install '
                        'ros-$ROS_DISTRO-rviz2, or drop rviz:=true)')
    if record and recorder == 'rosbag2' and not rosbag2_available():
        problems.append('recorder:=rosbag2 needs ros2bag and rosbag2_storage_mcap, which are '
                        'not installed (install ros-$ROS_DISTRO-rosbag2 and '
                        'ros-$ROS_DISTRO-rosbag2-storage-mcap, or use recorder:=vbp_record)')
    return problems


def chosen_recorder(recorder: str) -> str:
    """The recorder a drive starts for ``recorder`` (one of
    :data:`vbp_ros.interface.RECORDERS`): 'rosbag2' or 'vbp_record'; 'auto' picks rosbag2
    where it can run."""
    if recorder != 'auto':
        return recorder
    return 'rosbag2' if rosbag2_available() else 'vbp_record'


def ros2_bag_record_command(params_file: Path, topics: Sequence[str], bag_dir: str,
                            namespace: str, use_sim_time: bool = False) -> list[str]:
    """``ros2 bag record`` as MCAP of ``topics`` (resolved in ``namespace``) with the
    compression of vbp_record's ``params_file`` (zstd: the zstd_fast preset). An empty
    ``bag_dir`` lets rosbag2 name the bag; ``use_sim_time`` stamps with /clock."""
    parameters = node_parameters(params_file, RECORDER_NODE)
    output = ['-o', bag_dir] if bag_dir else []
    clock = ['--use-sim-time'] if use_sim_time else []
    preset = ['--storage-preset-profile', 'zstd_fast'] \
        if parameters.get('compression') == 'zstd' else []
    return ['ros2', 'bag', 'record', '-s', 'mcap', *preset, *output, *clock,
            *(resolve_topic(topic, namespace) for topic in topics)]


def rviz_remappings() -> list[tuple[str, str]]:
    """rviz2 remappings that move the vbp_node topics config/vbp.rviz shows (absolute names
    there) into rviz2's namespace, where vbp_node publishes them (the camera topic is remapped
    to the image_topic argument by the launch file)."""
    return [(resolve_topic(topic, ''), topic) for topic in (OVERLAY_TOPIC, MASK_TOPIC)]


def drive_processes(request: DriveRequest, log_dir: Path) -> list[Child]:
    """The processes in data-flow order: camera, node, recorder (when recording). The
    camera's first frame waits for vbp_node and vbp-drive, and for the recorder when it
    records the camera."""
    namespace, topic = request.namespace, request.image_topic
    common = ['--ros-args', '-r', f'__ns:=/{namespace.strip("/")}']
    camera = [*common, '--params-file', str(request.camera_params_file),
              '-r', f'{IMAGE_TOPIC}:={topic}']
    camera += _overrides(source=request.source, path=request.path,
                         wait_for_subscribers=camera_subscribers(request.records_camera(), 1))
    node = [*common, '--params-file', str(request.params_file), '-r', f'{IMAGE_TOPIC}:={topic}',
            '-r', f'{COMPRESSED_IMAGE_TOPIC}:={topic}/compressed']
    node += _overrides(model=request.model, device=request.device,
                       foxglove_port=request.foxglove_port)
    processes = [(CAMERA_NODE, 'road_camera', camera), (VBP_NODE, 'vbp_node', node)]
    if request.bag is not None:
        processes.append((RECORDER_NODE, 'vbp_record', [
            *common, '--params-file', str(request.record_params_file),
            '-p', f'bag_dir:={request.bag.resolve()}',
            '-p', f'topics:={json.dumps(request.recorded_topics())}']))
    return [Child(name, [executable(program), *arguments], log_dir / f'{program}.log',
                  STOP_TIMEOUT_S[name])
            for name, program, arguments in processes]


def _overrides(**parameters: object) -> list[str]:
    return [argument for name, value in parameters.items() if value is not None
            for argument in ('-p', f'{name}:={value}')]
