"""vbp_lifecycle_node: vbp_node left unconfigured at start, for a lifecycle manager (``ros2
lifecycle set /vbp configure``, launch's ``managed:=true``, nav2's lifecycle manager ...). The
node and its transitions: :class:`vbp_ros.ros.vbp_node.VBPNode`."""

from __future__ import annotations

from ..interface import VBP_NODE
from .runner import run_node
from .vbp_node import VBPNode


def unconfigured() -> VBPNode:
    """The node, waiting for its manager's ``configure``."""
    node = VBPNode()
    node.get_logger().info('unconfigured: waiting for configure')
    return node


def main(args: list[str] | None = None) -> int:
    """Entry point of ``vbp_lifecycle_node``."""
    return run_node(unconfigured, VBP_NODE, args)


if __name__ == '__main__':
    raise SystemExit(main())
