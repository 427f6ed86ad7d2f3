"""The main loop every executable of the package shares (ros2/examples style), with a Ctrl-C
that always completes a clean shutdown.

A terminal's Ctrl-C reaches every process of its process group, and ``ros2 launch`` forwards
it once more, so each node gets SIGINT twice within milliseconds; an impatient user presses
it again. rclpy's own handlers turn a later signal into a KeyboardInterrupt wherever the main
thread happens to be (inside a bag's close, a thread join, a pybind11 call), which loses data
or aborts the process. Here SIGINT and SIGTERM only set a flag: the first one asks the node to
stop, the main loop notices it within :data:`SPIN_PERIOD_S`, and the node's shutdown (the
worker's last frame, the recorder's backlog, MCAP summary and ``metadata.yaml``) runs to its
end however many signals follow.
"""

from __future__ import annotations

import difflib
from typing import Callable

import rclpy
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterException)
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..engine.memory import keep_frame_memory, settle_heap
from ..interface import one_line
from .stop import StopRequest

SPIN_PERIOD_S = 0.1  # longest time between a signal and the start of the shutdown


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None) -> int:
    """Create the node, spin it until SIGINT/SIGTERM, destroy it; the exit code.

    A node may define ``finishing() -> bool``: after the stop signal it is spun for as long as
    that says True (a recorder takes what its publishers, stopped by the same Ctrl-C, still
    send). Anything that stops the node from starting (a bad parameter value or type, a missing
    file, an unusable device) is logged as one fatal line and gives exit code 1. A node may
    define ``exit_problem() -> str | None``, asked after its destruction: a problem (e.g. a
    recorder that lost messages) is logged as an error and gives exit code 1. A clean stop
    gives 0, however many signals arrived. The executor is single-threaded: a node that
    must not wait for its services (vbp_node's frames) serves those entities on a thread of
    its own (:mod:`vbp_ros.ros.camera_source`). Freed frame buffers stay with the process
    (:func:`~vbp_ros.engine.memory.keep_frame_memory`), and the objects of its start-up are
    left out of the garbage collector's full passes (:func:`~vbp_ros.engine.memory.settle_heap`).
    """
    stop = StopRequest().install()
    if stop.requested:  # a stop signal came while the executable started (its imports)
        return 0
    keep_frame_memory()
    try:
        initialized = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except _rclpy.RCLError as error:  # a --ros-args rule or parameter file rcl cannot read
        get_logger(name).fatal(f'invalid --ros-args: {one_line(error)}')
        return 1
    with initialized:
        executor = SingleThreadedExecutor()
        try:
            node = make_node()
        except ParameterException as error:  # rclpy refused a -p value or a file's entry
            get_logger(name).fatal(f'invalid start-up parameter: {_parameter_problem(error)}'
                                   + _type_hint(error))
            return 1
        except Exception as error:  # every other start-up failure: one line, exit code 1
            get_logger(name).fatal(one_line(error))
            return 1
        warn_unknown_parameters(node)
        settle_heap()
        try:
            executor.add_node(node)
            while not stop.requested and rclpy.ok():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            finishing = getattr(node, 'finishing', lambda: False)
            while rclpy.ok() and finishing():
                executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        finally:
            executor.remove_node(node)
            executor.shutdown()
            node.destroy_node()
        problem = getattr(node, 'exit_problem', lambda: None)()
    if problem:
        get_logger(name).error(problem)
        return 1
    return 0


def _parameter_problem(error: ParameterException) -> str:
    """rclpy's reason for refusing a parameter value, which names the parameter, without the
    preamble of a refused value ('Invalid parameter value (-5.0) for parameter. Reason: ') and
    the parameter's name that rclpy appends (': rate')."""
    reason = str(error).rpartition(': ')[0] or str(error)
    if isinstance(error, InvalidParameterValueException):
        reason = reason.partition('Reason: ')[2] or reason
    return reason


def _type_hint(error: Exception) -> str:
    """How to write the value rclpy refused for its type, where that is the whole story: ROS
    reads -p deadline_ms:=50 as an INTEGER, and a DOUBLE parameter takes 50.0 only."""
    if isinstance(error, InvalidParameterTypeException) and \
            "of type 'INTEGER', expecting type 'DOUBLE'" in str(error):
        return ' (write the number with a decimal point, e.g. 50.0)'
    return ''


def warn_unknown_parameters(node: Node) -> None:
    """Warn of each parameter given (``-p``, a parameter file) that ``node`` does not declare,
    with the nearest declared name: rclpy ignores them, so a mistyped ``model`` ran the
    bundled model without a word."""
    declared = node.list_parameters([], 0).names
    given = getattr(node, '_parameter_overrides', {})  # rclpy keeps them, but offers no getter
    for name in sorted(set(given) - set(declared)):
        nearest = difflib.get_close_matches(name, declared, n=1)
        hint = f" (did you mean '{nearest[0]}'?)" if nearest else ''
        node.get_logger().warning(f"parameter '{name}' is not one of this node's and is "
                                  f'ignored{hint}')
