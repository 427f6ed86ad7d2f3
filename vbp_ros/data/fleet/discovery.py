"""Finding the bags among vbp-fleet's inputs: rosbag2 directories (MCAP or SQLite 3), single
.mcap and .db3 files, ROS 1 .bag files, and folders searched recursively for them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

BAG_FILE_SUFFIXES = ('.mcap', '.db3', '.bag')
METADATA = 'metadata.yaml'


@dataclass(frozen=True)
class Discovery:
    """The bags found (absolute paths, sorted, each once) and the inputs that are none."""

    bags: list[Path]
    missing: list[str]


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (it has metadata.yaml) or a bag file (by suffix)."""
    return (path.is_dir() and (path / METADATA).is_file()) or \
        (path.is_file() and path.suffix in BAG_FILE_SUFFIXES)


def find_bags(inputs: Iterable[str | Path]) -> Discovery:
    """Every bag named or inside the folders named. A rosbag2 directory is one bag (its
    storage files are not bags of their own); a folder without metadata.yaml is searched, so a
    killed recorder's folder yields its .mcap file. Symbolic links to folders are not followed
    (no cycles); inputs that do not exist, or are neither bags nor folders, are ``missing``."""
    bags: set[Path] = set()
    missing = []
    for name in inputs:
        path = Path(name).absolute()
        if is_bag(path):
            bags.add(path)
        elif path.is_dir():
            bags.update(_search(path))
        else:
            missing.append(str(name))
    return Discovery(sorted(bags), missing)


def _search(folder: Path) -> list[Path]:
    found = []
    for root, folders, files in os.walk(folder):
        here = Path(root)
        if (here / METADATA).is_file():
            found.append(here)
            folders.clear()
            continue
        folders.sort()
        found += [here / name for name in files if Path(name).suffix in BAG_FILE_SUFFIXES]
    return found
