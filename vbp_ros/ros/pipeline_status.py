"""vbp_node's 'pipeline' status on /diagnostics: the frame pipeline's health, counts, rates and
percentiles, and the engine that runs."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node

from ..engine.pipeline import ERROR, OK, WARN, FramePipeline, engine_note
from .diagnostics import attention_status, diagnostic_array

LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


def pipeline_diagnostics(node: Node, pipeline: FramePipeline, state: str, cameras: list[str],
                         deadline_ms: float, live_view: str | None, final: bool,
                         input_problem: str | None = None) -> DiagnosticArray:
    """vbp_node's 'pipeline' status in lifecycle ``state``: the pipeline's health, counts,
    rates and percentiles, per camera where there are several, the engine running (not the
    parameters), and the live view's address and frames (``live_view``, where it runs);
    ``final``: the last status, when the node stops; ``input_problem``: why frames cannot
    reach the node (a WARN where the pipeline itself is OK)."""
    snapshot = pipeline.monitor.snapshot()
    totals = snapshot.totals
    level, message = pipeline.health(snapshot, state)
    if input_problem and level == OK:
        level, message = WARN, input_problem
    latency, processing = snapshot.latency_ms or {}, snapshot.processing_ms or {}
    values = {
        'state': state,
        'frames received': totals['received'], 'frames processed': totals['processed'],
        'forward passes': totals['forward_passes'],
        'dropped (superseded by a newer frame)': totals['dropped_superseded'],
        'dropped (stale)': totals['dropped_stale'],
        'dropped (invalid)': totals['dropped_invalid'],
        'dropped (unpublishable output)': totals['dropped_bad_output'],
        'dropped (failed)': totals['errors'],
        'frames with unusable stamps': totals['bad_stamps'],
        'deadline misses': totals['deadline_misses'],
        'overlays published': totals['overlays'],
        'input rate (Hz)': f'{snapshot.rates_hz["received"]:.1f}',
        'output rate (Hz)': f'{snapshot.rates_hz["processed"]:.1f}',
        'pipeline latency p50 (ms)': _milliseconds(latency.get('p50')),
        'pipeline latency p99 (ms)': _milliseconds(latency.get('p99')),
        'processing time p50 (ms)': _milliseconds(processing.get('p50')),
        'processing time p99 (ms)': _milliseconds(processing.get('p99')),
        'deadline (ms)': deadline_ms,
    }
    if len(cameras) > 1:
        values.update({f'frames processed ({name})': pipeline.processed_by_camera[name]
                       for name in cameras})
    engine = pipeline.engine
    if engine is not None:
        values.update({'device': engine.description,
                       'model': engine.model_name,  # the engine running, not the parameter
                       'backend': engine.backend + engine_note(engine)})
    if live_view is not None:
        values['live view'] = live_view
    if input_problem:
        values['input'] = input_problem
    if final:
        message = f'stopped; {message}'
    hardware = engine.description if engine is not None else 'no model loaded'
    array = diagnostic_array(node, 'pipeline', LEVELS[level], message, hardware, values)
    array.status.append(attention_status(node, pipeline.attention.health(), hardware))
    return array


def _milliseconds(value: float | None) -> str:
    return 'nan' if value is None else f'{value:.2f}'
