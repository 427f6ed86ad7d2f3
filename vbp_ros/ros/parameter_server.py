"""A node's set_parameters and set_parameters_atomically services, served on a thread of their
own so that a slow change (a model build, seconds) holds up neither the executor (the other
parameter services, lifecycle transitions) nor a quick change that comes meanwhile.

rclpy's own :class:`~rclpy.parameter_service.ParameterService` makes the services and answers
them (its callbacks run the node's on-set callbacks, as always); only who runs them changes:
they move to a callback group that no executor runs, and a thread takes their requests from a
wait set. A request that the node calls slow is answered by a thread of its own, after the
node's ``prepare`` (which builds the engine, bounded in time, before any lock is taken); one
slow request at a time, a second one meanwhile is refused with the reason. Every answer is
given under the node's ``lock``, which its lifecycle transitions hold too.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Callable

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidHandle
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.service import Service

from .camera_source import OwnThreadGroup

SET_SERVICES = ('set_parameters', 'set_parameters_atomically')
CLOSE_S = 5.0  # longest wait for the request in hand when the server closes
BUSY = 'another change of the model is being built; set it again once that one is answered'


class SetParameterServer:
    """Serves ``node``'s set services (see the module docstring).

    Args:
        node: a node with rclpy's parameter services.
        slow: whether a request's parameters (their messages) need ``prepare`` first.
        prepare: called with those parameters outside ``lock`` before the request is answered.
        lock: held while a request is answered.
    """

    def __init__(self, node: Node, slow: Callable[[list[ParameterMsg]], bool],
                 prepare: Callable[[list[ParameterMsg]], None], lock: threading.RLock) -> None:
        self._slow, self._prepare, self._lock = slow, prepare, lock
        group = OwnThreadGroup()
        self._services = [service for service in node.services
                          if service.srv_name.rsplit('/', 1)[-1] in SET_SERVICES]
        for service in self._services:
            service.callback_group = group
        self._context = node.context
        self._wake = GuardCondition(None, None, context=node.context)
        self._closing = threading.Event()
        self._slow_thread: threading.Thread | None = None
        self._thread = threading.Thread(target=self._serve, name='vbp_parameters', daemon=True)
        self._thread.start()

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called (a prepare in hand may give up)."""
        return self._closing.is_set()

    def close(self) -> None:
        """Stop taking requests; wait a little for the one in hand (a slow one is left to
        give up by itself: its thread is a daemon)."""
        self._closing.set()
        self._wake.trigger()
        self._thread.join(CLOSE_S)
        self._wake.destroy()

    def _serve(self) -> None:
        while not self._closing.is_set():
            for service, request, header in self._wait_and_take():
                if not self._slow(list(request.parameters)):
                    self._answer(service, request, header)
                elif self._slow_thread is not None and self._slow_thread.is_alive():
                    self._send(service, _refusal(service, request, BUSY), header)
                else:
                    self._slow_thread = threading.Thread(
                        target=self._answer_slow, args=(service, request, header),
                        name='vbp_model_change', daemon=True)
                    self._slow_thread.start()

    def _answer_slow(self, service: Service, request: object, header: object) -> None:
        self._prepare(list(request.parameters))
        if not self._closing.is_set():
            self._answer(service, request, header)

    def _answer(self, service: Service, request: object, header: object) -> None:
        with self._lock:
            response = service.callback(request, service.srv_type.Response())
        self._send(service, response, header)

    @staticmethod
    def _send(service: Service, response: object, header: object) -> None:
        try:
            service.send_response(response, header)
        except InvalidHandle:  # the node is going away
            pass

    def _wait_and_take(self) -> list[tuple[Service, object, object]]:
        """Wait for requests (or a wake-up) and take every one that waits."""
        with ExitStack() as held:
            held.enter_context(self._context.handle)
            wait_set = _rclpy.WaitSet(0, 1, 0, 0, len(self._services), 0, self._context.handle)
            for service in self._services:
                held.enter_context(service.handle)
                wait_set.add_service(service.handle)
            held.enter_context(self._wake.handle)
            wait_set.add_guard_condition(self._wake.handle)
            wait_set.wait(-1)
            ready = wait_set.get_ready_entities('service')
            taken = []
            for service in self._services:
                if service.handle.pointer in ready:
                    request, header = service.handle.service_take_request(
                        service.srv_type.Request)
                    if header is not None:
                        taken.append((service, request, header))
            return taken


def _refusal(service: Service, request: object, reason: str) -> object:
    """The response that refuses every parameter of ``request`` with ``reason``."""
    response = service.srv_type.Response()
    result = SetParametersResult(successful=False, reason=reason)
    if hasattr(response, 'results'):
        response.results = [result] * len(request.parameters)
    else:
        response.result = result
    return response
