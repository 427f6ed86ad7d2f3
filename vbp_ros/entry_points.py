"""The console scripts' entry points. Each imports its executable's module only when called:
those modules load PyTorch, onnxruntime or Ray, for seconds, and a stop signal during that
import must not end in a traceback from inside it.

- The ROS executables that ``ros2 launch`` and ``ros2 run`` start take over SIGINT and SIGTERM
  (:class:`~vbp_ros.ros.stop.StopRequest`) before the import: a stop then (launch stopping a
  drive whose camera failed at start, a Ctrl-C right after ``ros2 launch``) ends the process
  cleanly with exit code 0, as a stop once running does.
- The command-line tools keep Python's Ctrl-C during the import, and end with one line and
  exit code 130 (128 + SIGINT, as a shell reports it); once imported, a tool handles Ctrl-C as
  it always has (vbp-drive stops its processes in order and writes its summary).
"""

from __future__ import annotations

import inspect
import sys
from functools import partial
from importlib import import_module
from pathlib import Path
from types import ModuleType

from .ros.stop import StopRequest

INTERRUPTED_EXIT_CODE = 130


def _ros_executable(module: str) -> int:
    """Run ``vbp_ros.ros.<module>``'s main with SIGINT and SIGTERM taken over first; with
    ``-h`` or ``--help`` before any ``--ros-args``, print what it is instead (rcl ignores the
    flag: vbp_record --help recorded a bag)."""
    StopRequest().install()
    executable = import_module(f'{__package__}.ros.{module}')
    own = sys.argv[1:sys.argv.index('--ros-args')] if '--ros-args' in sys.argv else sys.argv[1:]
    if {'-h', '--help'} & set(own):
        name = Path(sys.argv[0]).name
        print(f'usage: {name} [--ros-args [-p NAME:=VALUE] [-r FROM:=TO] [--params-file FILE] '
              f'...]\n\n{inspect.cleandoc(executable.__doc__ or "")}\n\nIts parameters, '
              f'with types, ranges and descriptions: ros2 param describe while it runs.')
        return 0
    return executable.main()


def _tool(name: str, module: str) -> int:
    """Run ``vbp_ros.<module>``'s main; a Ctrl-C while importing it ends ``name`` with 130."""
    try:
        imported: ModuleType = import_module(f'{__package__}.{module}')
    except KeyboardInterrupt:
        print(f'{name}: interrupted', file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    return imported.main()


# The ROS executables (setup.py's names), each with its module under vbp_ros.ros.
vbp_node = partial(_ros_executable, 'vbp_node')
vbp_lifecycle_node = partial(_ros_executable, 'vbp_lifecycle_node')
road_camera = partial(_ros_executable, 'road_camera')
vbp_record = partial(_ros_executable, 'recorder')

# The command-line tools: the name they report under, their module under vbp_ros.
vbp_drive = partial(_tool, 'vbp-drive', 'ros.drive')
vbp_latency = partial(_tool, 'vbp-latency', 'ros.latency_bench')
vbp_ceiling = partial(_tool, 'vbp-ceiling', 'ros.ceiling_bench')
vbp_import_t7 = partial(_tool, 'vbp-import-t7', 'tools.import_t7')
vbp_figure2 = partial(_tool, 'vbp-figure2', 'tools.figure2')
vbp_bench = partial(_tool, 'vbp-bench', 'tools.bench')
vbp_agreement = partial(_tool, 'vbp-agreement', 'tools.agreement')
vbp_ingest = partial(_tool, 'vbp-ingest', 'tools.ingest')
vbp_train = partial(_tool, 'vbp-train', 'tools.train')
vbp_eval = partial(_tool, 'vbp-eval', 'tools.evaluate')
vbp_inspect = partial(_tool, 'vbp-inspect', 'tools.inspect')
vbp_review = partial(_tool, 'vbp-review', 'tools.review')
vbp_export = partial(_tool, 'vbp-export', 'tools.export')
vbp_card = partial(_tool, 'vbp-card', 'tools.card')
vbp_gpu_check = partial(_tool, 'vbp-gpu-check', 'tools.gpu_check')
vbp_fleet = partial(_tool, 'vbp-fleet', 'tools.fleet')
vbp_fleet_bench = partial(_tool, 'vbp-fleet-bench', 'tools.fleet_bench')
