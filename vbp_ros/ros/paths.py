"""Installed package files, found through the ament index (colcon install or the pip venv)."""

from __future__ import annotations

import sys
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory


def share(*parts: str) -> Path:
    """A file under share/vbp_ros, e.g. ``share('config', 'fastdds.xml')``. Without an ament
    index (a venv used without AMENT_PREFIX_PATH) it is the interpreter prefix's share/."""
    try:
        root = Path(get_package_share_directory('vbp_ros'))
    except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH is not set
        root = Path(sys.prefix, 'share', 'vbp_ros')
        if not root.is_dir():
            raise
    return root.joinpath(*parts)
