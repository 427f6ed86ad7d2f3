"""Shared fixtures: the paper authors' reference model and images (../shared/reference); the
DDS settings of every test that starts ROS 2 processes and the one rclpy context of the session;
and the markers that select a fast subset (``pytest -m "not ros and not slow"``).

The reference data is not part of the repository. Without it the tests that need it are
skipped with one line saying where to get it; VBP_REQUIRE_REFERENCE=1 (set by .ci/run) makes
its absence a failure, so CI always runs them."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
# The ROS 2 tests talk over DDS on this host only, in a domain of their own, with the package's
# Fast DDS profile (camera-sized images); the processes they start inherit this.
os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(REPOSITORY / 'config' / 'fastdds.xml')
REFERENCE = Path(os.environ.get(
    'VBP_REFERENCE_DIR', REPOSITORY.parent / 'shared' / 'reference' / 'visualbackprop-authors'))
REFERENCE_MISSING = (
    f'reference data not found at {REFERENCE}: get model.t7b and images/ from the public '
    'repository mbojarski/VisualBackProp and set VBP_REFERENCE_DIR to that folder')


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', 'ros: starts ROS 2 processes or talks over DDS')
    config.addinivalue_line('markers', 'slow: a second or more here (fleets, training, '
                            'subprocesses, end-to-end tools); the fast subset, under a minute, '
                            'is -m "not ros and not slow"')


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses rclpy (the ``ros`` fixture, also through another fixture) is a ROS test."""
    for item in items:
        if 'ros' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.ros)


@pytest.fixture(scope='session')
def ros():
    """rclpy initialised once for the whole session; the tests' nodes live in its context."""
    rclpy = pytest.importorskip('rclpy')
    rclpy.init()
    yield rclpy
    rclpy.shutdown()


def require(condition: bool, missing: str, variable: str) -> None:
    """Skip the test with ``missing`` unless ``condition``; fail instead when the environment
    variable ``variable`` is 1 (CI requires it)."""
    if condition:
        return
    if os.environ.get(variable) == '1':
        pytest.fail(f'{missing} ({variable}=1)')
    pytest.skip(missing)


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    require((REFERENCE / 'model.t7b').is_file() and (REFERENCE / 'images').is_dir(),
            REFERENCE_MISSING, 'VBP_REQUIRE_REFERENCE')
    return REFERENCE


@pytest.fixture(scope='session')
def reference_images(reference_dir: Path) -> list[np.ndarray]:
    """The 22 demo images, 8-bit grayscale 125x640, in numeric order."""
    paths = [reference_dir / 'images' / f'img{i}.jpg' for i in range(1, 23)]
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths]


@pytest.fixture(scope='session')
def authors_checkpoint(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The authors' model converted by the vbp-import-t7 tool."""
    from vbp_ros.tools import import_t7

    target = tmp_path_factory.mktemp('models') / 'authors.safetensors'
    assert import_t7.main([str(reference_dir / 'model.t7b'), str(target)]) == 0
    return target


@pytest.fixture(scope='session')
def camera_spec():
    """The card of the node tests' model: the authors' architecture on the road of a 640x480
    camera (rows 200 to 450)."""
    from vbp_ros import ModelSpec

    return ModelSpec('authors', 1, 125, 640, crop=(200, 0, 250, 640))


@pytest.fixture(scope='session')
def checkpoint(camera_spec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The node tests' model: ``camera_spec`` with seed-0 initial weights."""
    import torch

    from vbp_ros import authors_net, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('node') / 'model.safetensors'
    save_checkpoint(path, authors_net().eval(), camera_spec)
    return path
