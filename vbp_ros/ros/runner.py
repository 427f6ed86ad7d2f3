"""The main loop every executable of the package shares (ros2/examples style)."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import (Executor, ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.logging import get_logger
from rclpy.node import Node


def spin_until_shutdown(executor: Executor) -> None:
    """Spin until SIGINT/SIGTERM or shutdown. A signal that shuts the context down while the
    executor builds its wait set surfaces as RCLError; that is a clean stop, not a failure."""
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _rclpy.RCLError:
        if rclpy.ok():
            raise


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None,
             executor_threads: int = 1) -> int:
    """Create the node, spin it until a signal, destroy it. A ValueError while creating it
    (bad parameters, missing files) is logged as fatal and gives exit code 1. With more than
    one executor thread, callbacks of different callback groups run side by side."""
    try:
        with rclpy.init(args=args):
            # Before the node: a signal may come any time.
            executor = (MultiThreadedExecutor(num_threads=executor_threads)
                        if executor_threads > 1 else SingleThreadedExecutor())
            try:
                node = make_node()
            except ValueError as error:
                get_logger(name).fatal(str(error))
                return 1
            try:
                executor.add_node(node)
                spin_until_shutdown(executor)
            finally:
                executor.shutdown()  # joins a multi-threaded executor's threads before exit
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0
