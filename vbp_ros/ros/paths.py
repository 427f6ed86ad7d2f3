"""Installed package files, found through the ament index (colcon install or the pip venv)."""

from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_share_directory


def share(*parts: str) -> Path:
    """A file under share/vbp_ros, e.g. ``share('config', 'fastdds.xml')``."""
    return Path(get_package_share_directory('vbp_ros'), *parts)
