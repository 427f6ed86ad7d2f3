"""Service calls that survive a lost answer, for the tests only.

``wait_for_service`` returns once the client's request writer has matched the server. The
server's response writer may not yet have matched the client's response reader: rmw_fastrtps
then waits 100 ms and drops the answer (ros2/rmw_fastrtps#390, #467). On a loaded 2-core
machine discovery takes longer than that, so a first request can go unanswered. Asking again
is what a client has to do; only idempotent requests may be asked again.
"""

from __future__ import annotations

import time

import rclpy


def call_until_answered(node, client, request, *, attempt_s: float = 10.0,
                        total_s: float = 120.0):
    """The response to ``request`` (idempotent), asked again every ``attempt_s`` seconds."""
    assert client.wait_for_service(timeout_sec=min(60.0, total_s)), \
        f'{client.srv_name} is not offered'
    deadline = time.monotonic() + total_s
    while time.monotonic() < deadline:
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future,
                                         timeout_sec=min(attempt_s, deadline - time.monotonic()))
        if future.done():
            return future.result()
        client.remove_pending_request(future)
    raise AssertionError(f'{client.srv_name} did not answer in {total_s:.0f} s')
