"""vbp_lifecycle_node: vbp_node as a managed (lifecycle) node.

The same node (:class:`vbp_ros.ros.vbp_node.VBPPipeline`) driven by the lifecycle services
(``ros2 lifecycle set /vbp configure`` ...): ``configure`` loads and validates the model (the
engine is built and warmed up) and makes the publishers; ``activate`` subscribes, starts the
worker and the live view; ``deactivate`` stops processing and frees the engine's device memory
(the next activation builds it again); ``cleanup`` drops the model and the publishers;
``shutdown`` stops everything. Each transition is logged, and /diagnostics reports the state.
A transition that fails (a model that does not load) leaves the node where it was.
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

from ..interface import VBP_NODE
from .runner import one_line, run_node
from .vbp_node import EXECUTOR_THREADS, VBPPipeline

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class VBPLifecycleNode(VBPPipeline, LifecycleNode):
    """The managed node ``vbp``: see the package README for topics and parameters."""

    def __init__(self) -> None:
        super().__init__(VBP_NODE)
        self._init_pipeline()
        self.get_logger().info('unconfigured: waiting for configure')

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load and validate the model; make the publishers."""
        return self._transition('configure', self._configure_pipeline)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe and process."""
        result = self._transition('activate', self._activate_pipeline)
        return super().on_activate(state) if result == SUCCESS else result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop processing; free the engine's device memory."""
        result = self._transition('deactivate', self._deactivate_and_release)
        return super().on_deactivate(state) if result == SUCCESS else result

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Drop the model and the publishers."""
        return self._transition('cleanup', self._cleanup_pipeline)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop whatever runs."""
        return self._transition('shutdown', self._finalize)

    def _finalize(self) -> None:
        self._finish_pipeline()
        self.state = 'finalized'

    def _deactivate_and_release(self) -> None:
        self._deactivate_pipeline()
        self._release_engine()

    def _transition(self, name: str, step) -> TransitionCallbackReturn:
        try:
            step()
        except Exception as error:  # a model that does not load, a busy port...
            self.get_logger().error(f'{name} failed: {one_line(error)}; still {self.state}')
            self._publish_diagnostics()
            return FAILURE
        self.get_logger().info(f'{name}: now {self.state}')
        self._publish_diagnostics()
        return SUCCESS

    def destroy_node(self) -> None:
        """Stop what runs, then destroy the node."""
        if hasattr(self, '_builder'):
            self._finish_pipeline()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``vbp_lifecycle_node``."""
    return run_node(VBPLifecycleNode, VBP_NODE, args, executor_threads=EXECUTOR_THREADS)


if __name__ == '__main__':
    raise SystemExit(main())
