"""What a drive produced: what vbp-drive saw over DDS, and what the bag holds (ROS-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.bags import BAG_READ_ERRORS, open_bag
from ..data.sessions import image_stamps, topic_namespace
from ..engine.monitor import percentiles
from ..interface import CAMERA_NODE, STEERING_TOPIC, VBP_NODE


@dataclass
class Observations:
    """What the drive's monitor saw over DDS: camera frame stamps (ns), steering angles,
    pipeline latencies (ms) and the node's latest /diagnostics values."""

    camera_stamps: list[int] = field(default_factory=list)
    angles: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    vbp_status: dict[str, str] = field(default_factory=dict)


def drive_summary(seen: Observations, bag: Path | None, codes: dict[str, int | None],
                  log_dir: Path, final: dict[str, dict[str, str]] | None = None,
                  camera_topic: str | None = None) -> dict:
    """The summary.json document: what was published, processed and recorded, by the
    processes' own final counts (``final``: their last /diagnostics values by node name) and
    by the bag (``camera_topic``: the recorded camera, as resolved; None when the camera is
    not recorded); what vbp-drive saw over DDS itself is kept apart (best effort: it may miss
    camera frames)."""
    final = final or {}
    camera, node = final.get(CAMERA_NODE, {}), final.get(VBP_NODE, {})
    summary = {
        'camera frames published': _count(camera, 'frames published'),
        'vbp_node': {key: int(value) for key, value in node.items()
                     if key.startswith(('frames', 'dropped', 'deadline misses'))},
        'final counts received': {name: values.get('final') == 'true'
                                  for name, values in final.items()},
        'seen by vbp-drive': {'camera frames': len(seen.camera_stamps),
                              'steering angles': seen.angles},
        'pipeline latency ms': percentiles(seen.latencies_ms),
        'latency samples': len(seen.latencies_ms),
        'exit codes': codes,
        'logs': str(log_dir),
    }
    if bag is not None and bag.exists():
        summary['bag'] = str(bag)
        try:
            summary['recorded'] = recorded(bag, set(seen.camera_stamps))
        except BAG_READ_ERRORS as error:
            summary['recorded'] = {'error': str(error)}
        if camera_topic is not None and 'messages' in summary['recorded']:
            summary['camera frames recorded'] = {
                'topic': camera_topic,
                'frames': summary['recorded']['messages'].get(camera_topic, 0)}
    return summary


def _count(values: dict[str, str], key: str) -> int | None:
    return int(values[key]) if key in values else None


def drive_problems(summary: dict) -> list[str]:
    """What went wrong in a drive, one sentence each (empty: nothing): a process that did not
    exit with code 0 (a recorder that lost messages exits with 1), final counts that did not
    arrive, a bag that cannot be read or does not hold what vbp_node published."""
    problems = [f'{name} exited with code {code}' for name, code in summary['exit codes'].items()
                if code not in (0, None)]
    problems += [f'the final counts of {name} did not arrive (it was killed?)'
                 for name, received in summary['final counts received'].items()
                 if not received and summary['exit codes'].get(name, 1) in (0, None)]
    recorded_ = summary.get('recorded')
    if recorded_ is None:
        return problems
    if 'error' in recorded_:
        return problems + [f'the bag cannot be read: {recorded_["error"]}']
    processed = summary['vbp_node'].get('frames processed')
    messages = recorded_['messages']
    for topic, count in sorted(messages.items()):
        if topic_namespace(topic, STEERING_TOPIC) is not None and processed is not None \
                and count != processed:
            problems.append(f'the bag holds {count} messages of {topic}, vbp_node published '
                            f'{processed}')
    if not messages:
        problems.append('the bag holds no messages')
    camera = summary.get('camera frames recorded')
    if camera is not None and not camera['frames'] and summary['camera frames published']:
        problems.append(f"the bag holds none of the {summary['camera frames published']} "
                        f"camera frames published on {camera['topic']}: vbp-review and "
                        'vbp-fleet need them')
    return problems


def recorded(bag: Path, camera_stamps: set[int]) -> dict:
    """Messages per topic in the bag, and how many image stamps are camera frame stamps."""
    with open_bag(bag) as reader:
        counts = {connection.topic: connection.msgcount for connection in reader.connections}
        stamped = {topic: sum(stamp in camera_stamps for stamp in stamps)
                   for topic, stamps in image_stamps(reader).items()}
        left_out = reader.repair.unreadable if reader.repair is not None else 0
    return {'messages': counts, 'images with a camera frame stamp': stamped,
            'MB': round(sum(f.stat().st_size for f in bag.iterdir()) / 1e6, 1),
            'complete': left_out == 0 and (bag / 'metadata.yaml').exists()}


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    latency = summary['pipeline latency ms']
    node = summary['vbp_node']
    received, processed = node.get('frames received'), node.get('frames processed')
    lines = [f'camera published {_text(summary["camera frames published"])} frames; vbp_node '
             f'received {_text(received)}, processed {_text(processed)}']
    drops = {key: value for key, value in node.items()
             if key.startswith(('dropped', 'deadline misses')) and value}
    if drops:
        lines.append('  not processed or late: ' + ', '.join(
            f'{key} {value}' for key, value in drops.items()))
    camera = summary.get('camera frames recorded')
    if camera is not None:
        lines.append(f"the bag holds {camera['frames']} of the "
                     f"{_text(summary['camera frames published'])} camera frames published "
                     f"({camera['topic']})")
    if latency:
        lines.append(f"pipeline latency p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} "
                     f"ms, max {latency['max']:.1f} ms over {summary['latency samples']} frames")
    recorded_ = summary.get('recorded', {})
    if 'messages' in recorded_:
        complete = '' if recorded_['complete'] else ', INCOMPLETE'
        lines.append(f"recorded into {summary['bag']} ({recorded_['MB']} MB{complete}):")
        for topic, count in sorted(recorded_['messages'].items()):
            stamped = recorded_['images with a camera frame stamp'].get(topic)
            note = f' ({stamped} with a camera frame stamp)' if stamped is not None else ''
            lines.append(f'  {topic}: {count}{note}')
    live = summary.get('live view client')
    if live is not None:
        lines.append('live view client received (messages a second): ' + ', '.join(
            f'{topic} {rate:.1f}' for topic, rate in live['messages a second'].items()))
    lines.append(f"logs and summary.json: {summary['logs']}")
    return '\n'.join(lines)


def _text(count: int | None) -> str:
    return '?' if count is None else str(count)
