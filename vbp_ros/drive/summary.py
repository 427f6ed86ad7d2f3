"""What a drive produced: what vbp-drive saw over DDS, and what the bag holds (ROS-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.bags import open_bag
from ..data.sessions import image_stamps
from ..engine.monitor import percentiles


@dataclass
class Observations:
    """What the drive's monitor saw over DDS: camera frame stamps (ns), steering angles,
    pipeline latencies (ms) and the node's latest /diagnostics values."""

    camera_stamps: list[int] = field(default_factory=list)
    angles: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    vbp_status: dict[str, str] = field(default_factory=dict)


def drive_summary(seen: Observations, bag: Path | None, codes: dict[str, int | None],
                  log_dir: Path) -> dict:
    """The summary.json document: what was published, processed and recorded."""
    status = seen.vbp_status
    summary = {
        'camera frames seen': len(seen.camera_stamps),
        'steering angles seen': seen.angles,
        'vbp_node at its last diagnostics': {key: status[key] for key in status
                                             if key.startswith(('frames', 'dropped'))},
        'pipeline latency ms': percentiles(seen.latencies_ms),
        'latency samples': len(seen.latencies_ms),
        'exit codes': codes,
        'logs': str(log_dir),
    }
    if bag is not None and bag.exists():
        summary['bag'] = str(bag)
        summary['recorded'] = recorded(bag, set(seen.camera_stamps))
    return summary


def recorded(bag: Path, camera_stamps: set[int]) -> dict:
    """Messages per topic in the bag, and how many image stamps are camera frame stamps."""
    with open_bag(bag) as reader:
        counts = {connection.topic: connection.msgcount for connection in reader.connections}
        stamped = {topic: sum(stamp in camera_stamps for stamp in stamps)
                   for topic, stamps in image_stamps(reader).items()}
    return {'messages': counts, 'images with a camera frame stamp': stamped,
            'MB': round(sum(f.stat().st_size for f in bag.iterdir()) / 1e6, 1)}


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    latency = summary['pipeline latency ms']
    seen, processed = summary['camera frames seen'], summary['steering angles seen']
    lines = [f'camera frames seen {seen}, processed (steering angles seen) {processed}, not '
             f'processed {seen - processed} (superseded, stale or invalid: see vbp_node.log '
             'and /diagnostics)']
    if latency:
        lines.append(f"pipeline latency p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} "
                     f"ms, max {latency['max']:.1f} ms over {summary['latency samples']} frames")
    if 'recorded' in summary:
        recorded_ = summary['recorded']
        lines.append(f"recorded into {summary['bag']} ({recorded_['MB']} MB):")
        for topic, count in sorted(recorded_['messages'].items()):
            stamped = recorded_['images with a camera frame stamp'].get(topic)
            note = f' ({stamped} with a camera frame stamp)' if stamped is not None else ''
            lines.append(f'  {topic}: {count}{note}')
    lines.append(f"logs and summary.json: {summary['logs']}")
    return '\n'.join(lines)
