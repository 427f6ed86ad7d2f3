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
CAMERA_PARAMS = 'road_camera.yaml'
VBP_PARAMS = 'vbp.yaml'
RECORD_PARAMS = 'record.yaml'
FASTDDS_PROFILE = 'fastdds.xml'
RVIZ_CONFIG = 'vbp.rviz'


def node_parameters(params_file: Path, node_name: str) -> dict:
    """The ``ros__parameters`` of ``node_name`` in a ROS 2 parameter file (keys ``name``,
    ``/name``, ``/**/name`` or ``/**``), later entries overriding earlier ones."""
    document = yaml.safe_load(Path(params_file).read_text()) or {}
    parameters: dict = {}
    for key, entry in document.items():
        if key.lstrip('/') in (node_name, f'**/{node_name}', '**'):
            parameters.update((entry or {}).get('ros__parameters', {}))
    return parameters


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


def ros2_bag_record_command(topics: list[str], bag_dir: str, namespace: str) -> list[str]:
    """``ros2 bag record`` of ``topics`` (resolved in ``namespace``) into ``bag_dir`` as MCAP;
    an empty ``bag_dir`` lets rosbag2 name it."""
    output = ['-o', bag_dir] if bag_dir else []
    return ['ros2', 'bag', 'record', '-s', 'mcap', *output,
            *(resolve_topic(topic, namespace) for topic in topics)]
