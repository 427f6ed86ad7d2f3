"""rclpy's LifecycleNode, let go of completely by ``destroy_node``.

rclpy's ``LifecycleNode.destroy_node`` (rclpy 9.1, Kilted) destroys the node's entities and
asks for its rcl node to be destroyed, but not for its lifecycle state machine, which holds the
rcl node (its services and transition publisher are made on it) until the Python object is
freed. While any rcl node lives, the RMW keeps the process's DDS participant, and Fast DDS
removes the participant's shared-memory segment (``/dev/shm/fastdds_<id>`` and its ``_el``
lock: 0.5 MiB, 64 MiB with config/fastdds.xml) only when it deletes the participant. A node
object sits in reference cycles (its own bound callbacks), so only the garbage collector frees
it, and the objects that vbp_node freezes once it has started
(:func:`~vbp_ros.engine.memory.settle_heap`) are never collected, not even at exit: the
participant outlived every clean stop and each run left its segment in /dev/shm until reboot.
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode


class ReleasingLifecycleNode(LifecycleNode):
    """A LifecycleNode whose :meth:`destroy_node` also destroys its state machine, so that
    nothing of the node holds the DDS participant afterwards (see the module docstring)."""

    def destroy_node(self) -> None:
        """Destroy the node, then its lifecycle state machine (once no wait holds it); the
        node's lifecycle state cannot be read any more."""
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()
