"""The console-script entry points of the ROS executables that ``ros2 launch`` and
``ros2 run`` start. Each takes over SIGINT and SIGTERM (:class:`~vbp_ros.ros.stop.StopRequest`)
before it imports its node's module, which loads PyTorch and onnxruntime for seconds: a stop
signal then (launch stopping a drive whose camera failed at start, a Ctrl-C right after
``ros2 launch``) ends the process cleanly with exit code 0, instead of a KeyboardInterrupt
traceback from inside an import and death by SIGINT.
"""

from __future__ import annotations

from importlib import import_module

from .stop import StopRequest


def _main(module: str) -> int:
    StopRequest().install()
    return import_module(f'{__package__}.{module}').main()


def vbp_node() -> int:
    """``vbp_node``: :func:`vbp_ros.ros.vbp_node.main`."""
    return _main('vbp_node')


def vbp_lifecycle_node() -> int:
    """``vbp_lifecycle_node``: :func:`vbp_ros.ros.vbp_lifecycle_node.main`."""
    return _main('vbp_lifecycle_node')


def road_camera() -> int:
    """``road_camera``: :func:`vbp_ros.ros.road_camera.main`."""
    return _main('road_camera')


def vbp_record() -> int:
    """``vbp_record``: :func:`vbp_ros.ros.recorder.main`."""
    return _main('recorder')
