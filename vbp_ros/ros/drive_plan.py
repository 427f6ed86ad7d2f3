"""What a drive starts, shared by launch/drive.launch.py and the pip runner vbp-drive: the
parameter files, the camera topic, the recorded topics and the recorder command.

Free of launch and rclpy imports, so the launch file stays thin and all of this is tested
where launch_ros cannot run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

DEFAULT_IMAGE_TOPIC = '/camera/image_raw'
# What vbp_node publishes per frame (relative names).
VBP_OUTPUTS = ('steering_angle', 'vbp/mask', 'vbp/overlay', 'debug/processing_time_ms',
               'debug/pipeline_latency_ms')
CAMERA_PARAMS = 'road_camera.yaml'
VBP_PARAMS = 'vbp.yaml'
RECORD_PARAMS = 'record.yaml'
FASTDDS_PROFILE = 'fastdds.xml'
RVIZ_CONFIG = 'vbp.rviz'
# road_camera's sources; drive.launch.py adds 'topic': an existing camera publishes the
# image topic.
CAMERA_SOURCES = ('synthetic', 'video', 'images')
LAUNCH_SOURCES = (*CAMERA_SOURCES, 'topic')
# auto: rosbag2 where it can run, else the package's vbp_record.
RECORDERS = ('auto', 'rosbag2', 'vbp_record')


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
    return bag_dir or str(node_parameters(params_file, 'vbp_record').get('bag_dir', ''))


def record_topics(params_file: Path) -> list[str]:
    """The topics vbp_record records with this parameter file."""
    return list(node_parameters(params_file, 'vbp_record').get('topics', []))


def resolve_topic(topic: str, namespace: str) -> str:
    """A topic name as a node in ``namespace`` resolves it (absolute names stay)."""
    if topic.startswith('/'):
        return topic
    namespace = namespace.strip('/')
    return f'/{namespace}/{topic}' if namespace else f'/{topic}'


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
    except PackageNotFoundError:
        return False
    return True


def chosen_recorder(recorder: str) -> str:
    """The recorder a drive starts for ``recorder`` (one of RECORDERS): 'rosbag2' or
    'vbp_record'; 'auto' picks rosbag2 where it can run."""
    if recorder != 'auto':
        return recorder
    return 'rosbag2' if rosbag2_available() else 'vbp_record'


def ros2_bag_record_command(params_file: Path, bag_dir: str, namespace: str,
                            use_sim_time: bool = False) -> list[str]:
    """``ros2 bag record`` as MCAP of what vbp_record would record with ``params_file``: its
    topics (resolved in ``namespace``) and its compression (zstd: the zstd_fast preset).
    An empty ``bag_dir`` lets rosbag2 name the bag; ``use_sim_time`` stamps with /clock."""
    parameters = node_parameters(params_file, 'vbp_record')
    output = ['-o', bag_dir] if bag_dir else []
    clock = ['--use-sim-time'] if use_sim_time else []
    preset = ['--storage-preset-profile', 'zstd_fast'] \
        if parameters.get('compression') == 'zstd' else []
    return ['ros2', 'bag', 'record', '-s', 'mcap', *preset, *output, *clock,
            *(resolve_topic(topic, namespace) for topic in parameters.get('topics', []))]


def rviz_remappings() -> list[tuple[str, str]]:
    """rviz2 remappings that move the vbp_node topics config/vbp.rviz shows (absolute names
    there) into rviz2's namespace, where vbp_node publishes them."""
    return [(resolve_topic(topic, ''), topic) for topic in ('vbp/overlay', 'vbp/mask')]
