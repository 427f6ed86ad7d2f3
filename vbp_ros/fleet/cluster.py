"""vbp-fleet on Ray: reader tasks stream a bag's segments, model actors (each loads the model
once) turn them into rows, and the driver hands every segment to the least busy actor and
gathers each bag's results.

Work flows as Ray objects: a reader task is a streaming generator of
:class:`~vbp_ros.data.fleet.reading.Segment` objects, and the driver passes each object's
reference straight to an actor, so frames never pass through the driver. The driver asks a
reader for its next segment only while some actor has fewer than ``QUEUE_PER_WORKER`` segments
queued, and a reader runs at most ``READ_AHEAD`` segments ahead: memory stays bounded however
large the fleet. A segment carries the frame before it, so the actors need no order among
themselves and a bag's segments spread over all of them.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..models.checkpoint import ModelSpec
from ..data.fleet.reading import BagReadError, ReadOptions, Segment, read_segments
from .comparison import CompareJob, Comparison
from .worker import SegmentResult, SegmentWorker

QUEUE_PER_WORKER = 2
READ_AHEAD = 4
WAIT_S = 1.0


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide to run.

    Attributes:
        address: a Ray cluster ('auto', 'ray://host:10001', 'host:6379'); None starts Ray on
            this machine.
        workers: model actors.
        threads: torch threads per actor (None: this machine's cores / workers locally, 1 on
            a cluster); on a cluster each actor reserves that many CPUs (and a GPU for a
            CUDA device).
        readers: bags read at once (None: 2 x workers, at least 2).
        object_store_mb: object store of a local Ray (None: Ray's default).
    """

    address: str | None = None
    workers: int = 1
    threads: int | None = None
    readers: int | None = None
    object_store_mb: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 1 or (self.threads or 1) < 1 or (self.readers or 1) < 1:
            raise ValueError('workers, threads and readers must be at least 1')

    @property
    def reader_count(self) -> int:
        """Concurrent reader tasks."""
        return self.readers or max(2, 2 * self.workers)

    @property
    def thread_count(self) -> int:
        """Torch threads per model actor."""
        if self.threads:
            return self.threads
        return 1 if self.address else max(1, (os.cpu_count() or 1) // self.workers)


@dataclass(frozen=True)
class FleetJob:
    """What every actor and reader is told: model, device, batch, reading, gallery size, and
    the model to compare with (None: none)."""

    model: str | None
    spec: ModelSpec
    device: str = 'cpu'
    batch: int = 8
    read: ReadOptions = ReadOptions()
    gallery: int = 4
    compare: CompareJob | None = None


@dataclass
class BagOutcome:
    """A bag's results in segment order, or why it failed."""

    bag: str
    results: list[SegmentResult] = field(default_factory=list)
    error: str | None = None


@dataclass
class _BagState:
    results: list[SegmentResult] = field(default_factory=list)
    reading: bool = True
    in_flight: int = 0
    error: str | None = None


def start_ray(options: ClusterOptions) -> dict:
    """Connect to the cluster at ``options.address`` or start a local Ray sized for the run
    (one logical CPU per actor and per reader, workers at the driver's priority, no dashboard,
    no usage statistics); returns the cluster's resources."""
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    import ray

    if options.address:
        ray.init(address=options.address, logging_level='WARNING')
    else:
        # Ray starts its workers at nice 15; here they are the job the user ran, and on a
        # shared machine nice 15 lost them most of their CPU to everyone else's processes.
        os.environ.setdefault('RAY_worker_niceness', '0')
        store = options.object_store_mb << 20 if options.object_store_mb else None
        ray.init(num_cpus=options.workers + options.reader_count, object_store_memory=store,
                 include_dashboard=False, logging_level='WARNING')
    return {name: float(value) for name, value in ray.cluster_resources().items()
            if not name.startswith('node:')}


def stop_ray() -> None:
    """Disconnect from (or stop the local) Ray."""
    import ray

    ray.shutdown()


def _read_bag(bag: str, spec: ModelSpec, options: ReadOptions,
              compared: ModelSpec | None) -> Iterator[Segment]:
    yield from read_segments(bag, spec, options, compared)


class _Actor:
    """The Ray actor around :class:`SegmentWorker`."""

    def __init__(self, model: str | None, device: str, batch: int, threads: int,
                 gallery: int, compare: CompareJob | None) -> None:
        comparison = compare and Comparison.load(compare, device, batch, threads)
        self.worker = SegmentWorker.load(model, device, batch, threads, gallery, comparison)

    def process(self, segment: Segment) -> SegmentResult:
        return self.worker.process(segment)


def error_text(error: BaseException) -> str:
    """The original exception of a (possibly chained) Ray task error, as one line: a bag that
    cannot be read as asked by its message alone, which says why."""
    from ray.exceptions import RayTaskError

    while isinstance(error, RayTaskError) and error.cause is not None:
        error = error.cause
    if isinstance(error, RayTaskError):
        return str(error).strip().splitlines()[-1]
    if isinstance(error, BagReadError):
        return str(error)
    return f'{type(error).__name__}: {error}'


class FleetRunner:
    """Model actors of one run on a started Ray; :meth:`run` processes bags."""

    def __init__(self, job: FleetJob, options: ClusterOptions) -> None:
        import ray

        self.job, self.options = job, options
        threads = options.thread_count
        actor = ray.remote(_Actor).options(num_cpus=threads if options.address else 1,
                                           num_gpus=1 if job.device.startswith('cuda') else 0,
                                           max_restarts=1, max_task_retries=1)
        self.actors = [actor.remote(job.model, job.device, job.batch, threads, job.gallery,
                                    job.compare) for _ in range(options.workers)]
        self.reader = ray.remote(_read_bag).options(
            num_returns='streaming', num_cpus=1,
            _generator_backpressure_num_objects=READ_AHEAD)

    def ready(self) -> float:
        """Wait until every actor has loaded the model (:meth:`run` need not: readers start at
        once, and segments queue for the actors); returns the seconds waited."""
        import ray

        start = time.perf_counter()
        ray.get([actor.__ray_ready__.remote() for actor in self.actors])
        return time.perf_counter() - start

    def run(self, bags: list[str], on_bag: Callable[[BagOutcome], None],
            on_segment: Callable[[SegmentResult], None] = lambda result: None) -> None:
        """Process ``bags``; ``on_bag`` gets each bag's outcome as soon as it is complete,
        ``on_segment`` each segment's result (for progress)."""
        import ray

        queue = deque(bags)
        readers: dict[object, str] = {}
        in_flight: dict[object, tuple[int, str]] = {}
        load = [0] * len(self.actors)
        states: dict[str, _BagState] = {}
        while queue or readers or in_flight:
            while queue and len(readers) < self.options.reader_count:
                bag = queue.popleft()
                compared = self.job.compare and self.job.compare.spec
                readers[self.reader.remote(bag, self.job.spec, self.job.read, compared)] = bag
                states[bag] = _BagState()
            room = min(load) < QUEUE_PER_WORKER
            waitables = list(in_flight) + (list(readers) if room else [])
            ready, _ = ray.wait(waitables, num_returns=1, timeout=WAIT_S, fetch_local=False)
            for item in ready:
                if item in readers:
                    bag = readers[item]
                    try:
                        segment = next(item)
                    except StopIteration:
                        del readers[item]
                        states[bag].reading = False
                    else:
                        worker = load.index(min(load))
                        load[worker] += 1
                        states[bag].in_flight += 1
                        in_flight[self.actors[worker].process.remote(segment)] = (worker, bag)
                else:
                    worker, bag = in_flight.pop(item)
                    load[worker] -= 1
                    state = states[bag]
                    state.in_flight -= 1
                    try:
                        result = ray.get(item)
                    except Exception as error:  # noqa: BLE001 (any failure fails the bag)
                        state.error = state.error or error_text(error)
                    else:
                        state.results.append(result)
                        on_segment(result)
                if not states[bag].reading and not states[bag].in_flight:
                    on_bag(self._outcome(bag, states.pop(bag)))

    @staticmethod
    def _outcome(bag: str, state: _BagState) -> BagOutcome:
        results = sorted(state.results, key=lambda result: result.number)
        if state.error is None and (not results or results[-1].info is None
                                    or len(results) != results[-1].info.segments):
            state.error = 'the reader stopped before the end of the bag'
        if state.error is not None:
            return BagOutcome(bag, error=state.error)
        return BagOutcome(bag, results)
