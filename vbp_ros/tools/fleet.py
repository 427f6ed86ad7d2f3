"""vbp-fleet: the steering network and its VisualBackProp mask over a fleet's recordings, on Ray.

INPUT is any mix of rosbag2 directories (MCAP or SQLite 3), .mcap, .db3 and ROS 1 .bag files,
and folders searched recursively for them. Reader tasks decode and preprocess the camera frames
(the engine's preprocessing), model actors run the engine in batches (the model is loaded once
per actor), and the driver writes into --out:

  frames.parquet   one row per processed camera frame: bag, topic, stamp_ns, log_time_ns,
                   index, angle (rad), mask statistics, and the recorded angle and error where
                   the bag has steering
  summary.json     bags found, read and failed (with the reason), frames per bag, frames/s,
                   wall time, Ray resources, the model's card
  report.html      per bag an angle-over-time plot and a ranked gallery of the frames most
                   worth a look (pictures in report_files/)
  parts/           one finished bag per Parquet part: what --resume continues from

With --compare OTHER_MODEL the same workers run a second model on every frame (each model's
own preprocessing of the same decoded frame) and the driver also writes:

  comparison.parquet  one row per frame: bag, topic, stamp_ns, log_time_ns, index, angle,
                   angle_other, angle_diff (other - this, rad), mask_similarity (Pearson, in
                   camera coordinates), disagreement, and both models' mask statistics (the
                   other's suffixed _other)
  report.html      gains a comparison section: distributions, the shares of frames where the
                   models disagree (--disagree-angle, --disagree-similarity), the 20 frames of
                   largest disagreement with both overlays, a timeline per bag

A bag that cannot be read is reported in summary.json and the run goes on. Exit status: 0 when
every bag was read, 1 when some failed or an input was neither a bag nor a folder, 2 when the
run could not start (no bag found, a model or device that cannot work).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ..models.checkpoint import CheckpointError, ModelSpec
from ..engine.backends.choice import resolve_device
from ..fleet.cluster import (BagOutcome, ClusterOptions, FleetJob, FleetRunner,
                             start_ray, stop_ray)
from ..data.fleet.discovery import find_bags
from ..data.fleet.reading import ReadOptions
from ..data.fleet.results import (COMPARISON, FLOAT_COLUMNS, FRAMES, REPORT, SUMMARY,
                                  ResultStore, ResultsError, bag_key, bag_table, fingerprint)
from ..explain.attention import DEFAULT_ROI, roi_problem
from ..models.loading import load_model
from ..fleet.comparison import (TOP_FRAMES, CompareJob, Disagreement, PairCandidate,
                                check_comparable)
from ..fleet.worker import CATEGORIES, SegmentResult, model_card
from ..render.plots import plot_angles, plot_comparison_distributions, plot_comparison_timeline
from ..render.report import (BagSection, ComparisonSection, GalleryItem, PairItem,
                             write_report, write_thumbnail)
from ..arguments import positive_int

PLOT = 'angles.png'
TIMELINE = 'comparison.png'  # a bag's comparison timeline, in its report_files folder
DISTRIBUTIONS = 'comparison.png'  # the run's, in report_files


class BagWriter:
    """Stores each finished bag (part, sidecar, thumbnails, plot) and keeps the run's tally."""

    def __init__(self, store: ResultStore, gallery: int, progress: tqdm,
                 compare: CompareJob | None = None) -> None:
        self.store, self.gallery, self.progress = store, gallery, progress
        self.compare = compare
        self.failed: dict[str, str] = {}
        self.read: dict[str, dict] = {}
        self.frames = 0
        self._counted: dict[str, int] = {}

    def on_segment(self, result: SegmentResult) -> None:
        """Progress: the segment's rows (and the bag's message count when new)."""
        if result.bag not in self._counted:
            self._counted[result.bag] = 0
            self.progress.total = (self.progress.total or 0) + result.messages
        self._counted[result.bag] += len(result.rows['index'])
        self.progress.update(len(result.rows['index']))

    def on_bag(self, outcome: BagOutcome) -> None:
        """Store a finished bag, or note why it failed."""
        if outcome.error is not None:
            self.failed[outcome.bag] = outcome.error
        else:
            self.read[outcome.bag] = self.store_bag(outcome.bag, outcome.results)
            self.frames += self.read[outcome.bag]['info']['frames']
        messages = self.read.get(outcome.bag, {}).get('info', {}).get('messages')
        if messages is not None:  # skipped and subsampled messages complete the bag
            self.progress.update(messages - self._counted.get(outcome.bag, 0))

    def store_bag(self, bag: str, results: list[SegmentResult]) -> dict:
        """Part, sidecar, thumbnails and plot of a bag; returns the sidecar."""
        info = results[-1].info
        columns = {name: np.concatenate([r.rows[name] for r in results])
                   for name in results[0].rows}
        folder = self.store.files / bag_key(bag)
        folder.mkdir(parents=True, exist_ok=True)
        gallery, written = [], set()
        for category in CATEGORIES:
            found = sorted((c for r in results for c in r.candidates if c.category == category),
                           key=lambda c: (-c.score, c.index))[:self.gallery]
            for rank, candidate in enumerate(found, start=1):
                image = folder / f'frame-{candidate.index}.jpg'
                if image not in written:  # replaces the picture of a run with other settings
                    write_thumbnail(image, candidate.overlay)
                    written.add(image)
                gallery.append({
                    'category': category, 'rank': rank, 'score': candidate.score,
                    'index': candidate.index, 'stamp_ns': candidate.stamp_ns,
                    'time_s': (candidate.log_ns - info.start_ns) / 1e9,
                    'angle': candidate.angle, 'recorded': candidate.recorded,
                    'image': str(image.relative_to(self.store.out))})
        sidecar = {'bag': bag, 'info': asdict(info), 'gallery': gallery}
        comparison = None
        if self.compare is not None:
            comparison = {name: np.concatenate([r.comparison.rows[name] for r in results])
                          for name in results[0].comparison.rows}
            sidecar['comparison'] = self.store_pairs(
                folder, info.start_ns, [c for r in results for c in r.comparison.candidates])
            sidecar['timeline'] = self.store_timeline(folder, bag, sidecar, columns, comparison)
        table = bag_table(bag, info.topic, columns, comparison)
        write_plot(self.store, bag, sidecar, table.select(['log_time_ns', 'angle',
                                                           'recorded_angle']).to_pydict(),
                   replace=True)
        self.store.write_bag(bag, table, sidecar)
        return sidecar

    def store_pairs(self, folder: Path, start_ns: int, candidates: list[PairCandidate]
                    ) -> list[dict]:
        """The bag's frames of largest disagreement, both overlays written; their entries."""
        found = sorted(candidates, key=lambda c: (-c.score, c.index))[:TOP_FRAMES]
        pairs = []
        for candidate in found:
            images = {}
            for key, suffix, jpeg in (('image', '', candidate.jpeg),
                                      ('image_other', '-other', candidate.jpeg_other)):
                path = folder / f'compare-{candidate.index}{suffix}.jpg'
                path.write_bytes(jpeg)
                images[key] = str(path.relative_to(self.store.out))
            pairs.append({'score': candidate.score, 'index': candidate.index,
                          'stamp_ns': candidate.stamp_ns,
                          'time_s': (candidate.log_ns - start_ns) / 1e9,
                          'angle': candidate.angle, 'angle_other': candidate.angle_other,
                          'mask_similarity': candidate.mask_similarity, **images})
        return pairs

    def store_timeline(self, folder: Path, bag: str, sidecar: dict, columns: dict,
                       comparison: dict) -> str:
        """The bag's comparison timeline, its frames of largest disagreement marked."""
        path = folder / TIMELINE
        start = sidecar['info']['start_ns']
        times = (np.asarray(columns['log_time_ns'], np.int64) - start) / 1e9
        marks = np.array(sorted(pair['time_s'] for pair in sidecar['comparison']))
        disagreement = self.compare.disagreement
        plot_comparison_timeline(path, times, comparison['angle_diff'],
                                 comparison['mask_similarity'], marks,
                                 (disagreement.angle_rad, disagreement.similarity),
                                 f'{Path(bag).name}: other model against this one')
        return str(path.relative_to(self.store.out))


def write_plot(store: ResultStore, bag: str, sidecar: dict, columns: dict,
               replace: bool = False) -> str:
    """The bag's angle plot in report_files, made when missing or, with ``replace``, anew (the
    bag's rows were just computed); returns its path in the folder."""
    path = store.files / bag_key(bag) / PLOT
    if replace or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        start = sidecar['info']['start_ns']
        times = (np.asarray(columns['log_time_ns'], np.int64) - start) / 1e9
        marks = np.array(sorted({item['time_s'] for item in sidecar['gallery']}))
        plot_angles(path, times, np.asarray(columns['angle'], np.float64),
                    np.asarray(columns['recorded_angle'], np.float64), marks, Path(bag).name)
    return str(path.relative_to(store.out))


def section(store: ResultStore, sidecar: dict) -> BagSection:
    """The report section of a finished bag."""
    info, bag = sidecar['info'], sidecar['bag']
    plot = write_plot(store, bag, sidecar, store.read_bag(
        bag, ['log_time_ns', 'angle', 'recorded_angle']).to_pydict())
    counts = {'camera messages': info['messages'], 'frames processed': info['frames'],
              'subsampled': info['subsampled'], 'skipped': sum(info['skipped'].values()),
              'steering': (f'{info["steering_topic"]} ({info["steering_samples"]} samples)'
                           if info['steering_topic'] else 'none')}
    counts.update({f'skipped: {reason}': count for reason, count in info['skipped'].items()})
    if info.get('repaired'):  # (sidecars of earlier versions lack it)
        counts['cut short'] = (f'not closed: the {info["frames"]} frames before the cut were '
                               f'read, {info["bytes_left_out"]} bytes after it left out')
    items = [GalleryItem(**{key: item[key] for key in GalleryItem.__dataclass_fields__})
             for item in sidecar['gallery']]
    return BagSection(bag, info['topic'], counts, plot, items, sidecar.get('timeline'))


def comparison_section(store: ResultStore, compare: CompareJob, finished: dict[str, dict],
                       done: list[str], names: tuple[str, str]
                       ) -> tuple[ComparisonSection, dict]:
    """The report's comparison (from comparison.parquet and the bags' sidecars) and its
    figures for summary.json."""
    table = pq.read_table(store.out / COMPARISON)  # without a bag read: no such columns
    angle_diff, similarity = (table[name].to_numpy(zero_copy_only=False)
                              if name in table.column_names else np.zeros(0)
                              for name in ('angle_diff', 'mask_similarity'))
    disagreement = compare.disagreement
    plot = store.files / DISTRIBUTIONS
    plot_comparison_distributions(plot, angle_diff, similarity,
                                  (disagreement.angle_rad, disagreement.similarity))
    order = {bag: number for number, bag in enumerate(done)}
    found = sorted(((bag, pair) for bag in done for pair in finished[bag]['comparison']),
                   key=lambda item: (-item[1]['score'], order[item[0]], item[1]['index']))
    pairs = [PairItem(bag=bag, rank=rank, **{key: pair[key] for key in (
        'image', 'image_other', 'time_s', 'index', 'stamp_ns', 'angle', 'angle_other',
        'mask_similarity', 'score')}) for rank, (bag, pair) in enumerate(found[:TOP_FRAMES], 1)]
    shares = disagreement.shares(angle_diff, similarity)
    figures = {'frames': len(angle_diff), 'angle_threshold_rad': disagreement.angle_rad,
               'similarity_threshold': disagreement.similarity, 'shares': shares,
               'median_abs_angle_diff_rad': float(np.nanmedian(np.abs(angle_diff)))
               if len(angle_diff) else None,
               'median_mask_similarity': float(np.nanmedian(similarity))
               if np.isfinite(similarity).any() else None,
               'top': [{'bag': p.bag, 'index': p.index, 'score': p.score} for p in pairs]}
    shown = [
        ('frames compared', len(angle_diff)),
        (f'disagree on the angle (|other - this| > {disagreement.angle_rad:g} rad = '
         f'{np.degrees(disagreement.angle_rad):.1f} deg)', f'{shares["angle"]:.1%}'),
        (f'disagree on the mask (similarity < {disagreement.similarity:g})',
         f'{shares["mask"]:.1%}'),
        ('disagree on either', f'{shares["either"]:.1%}'),
        ('median |angle other - this| (deg)',
         f'{np.degrees(figures["median_abs_angle_diff_rad"] or np.nan):.2f}'),
        ('median mask similarity', f'{figures["median_mask_similarity"] or np.nan:.3f}')]
    return ComparisonSection(*names, shown, str(plot.relative_to(store.out)), pairs), figures


def settings_of(args: argparse.Namespace, card: dict, compared: dict | None) -> dict:
    """What decides a bag's rows (the fingerprint of a part); ``compared``: the compared
    model's card, None without --compare (and the fingerprint of a run before it)."""
    settings = {'model': card['sha256'], 'spec': card['spec'], 'topic': args.topic,
                'steering_topic': args.steering_topic, 'every': args.every,
                'horizon_row': args.horizon_row,
                'steering_tolerance_ms': args.steering_tolerance_ms,
                # parts of other statistics (columns, region of interest) or of another
                # gallery rule are redone
                'columns': FLOAT_COLUMNS, 'roi': list(args.attention_roi),
                'gallery': CATEGORIES}
    if compared is not None:
        settings['compare'] = {'model': compared['sha256'], 'spec': compared['spec'],
                               'disagree_angle': args.disagree_angle,
                               'disagree_similarity': args.disagree_similarity}
    return settings


def compare_job(args: argparse.Namespace, spec: ModelSpec) -> CompareJob | None:
    """The compared model of --compare (None without), checked against the run's model
    before anything starts."""
    if args.compare is None:
        if args.compare_card:
            raise ValueError('--compare-card needs --compare OTHER_MODEL')
        return None
    _, other = load_model(args.compare, args.compare_card)
    check_comparable(spec, other, str(args.model or 'the bundled model'), args.compare)
    return CompareJob(args.compare, args.compare_card, other,
                      Disagreement(args.disagree_angle, args.disagree_similarity))


def run(args: argparse.Namespace, started: float) -> int:
    """The whole run; returns the exit status."""
    if not args.address:  # the actors run here: a device that is not here would never start
        resolve_device(args.device)
    found = find_bags(args.inputs)
    if not found.bags:
        missing = f' ({", ".join(found.missing)}: neither a bag nor a folder)' \
            if found.missing else ''
        raise ValueError(f'no bags in {" ".join(map(str, args.inputs))}{missing}: a bag is a '
                         'rosbag2 directory, .mcap, .db3 or ROS 1 .bag file')
    _, spec = load_model(args.model)
    card = model_card(args.model, spec)
    compare = compare_job(args, spec)
    compared = compare and model_card(compare.model, compare.spec)
    store = ResultStore(Path(args.out), fingerprint(settings_of(args, card, compared)))
    if store.has_results() and not (args.resume or args.force):
        raise ResultsError(f'{args.out} holds results of an earlier run: pass --resume to '
                           'continue it or --force to start over')
    store.prepare(args.resume)
    bags = [str(bag) for bag in found.bags]
    earlier = {bag: sidecar for bag in bags if (sidecar := store.finished(bag)) is not None}
    todo = [bag for bag in bags if bag not in earlier]
    read = ReadOptions(args.topic, args.steering_topic, args.every,
                       max(args.batch * max(1, round(args.segment / args.batch)), 2),
                       args.horizon_row, round(args.steering_tolerance_ms * 1e6),
                       tuple(args.attention_roi))
    job = FleetJob(args.model, spec, args.device, args.batch, read, args.gallery, compare)
    cluster = ClusterOptions(args.address, args.workers, args.threads, args.readers,
                             args.object_store_mb)
    progress = tqdm(desc='vbp-fleet', unit='frame', disable=args.no_progress, mininterval=1.0)
    writer = BagWriter(store, args.gallery, progress, compare)
    ray_info = {'address': args.address or 'local', 'workers': args.workers,
                'threads_per_worker': cluster.thread_count, 'readers': cluster.reader_count}
    processing_s = 0.0
    if todo:
        ray_start = time.perf_counter()
        ray_info['resources'] = start_ray(cluster)
        ray_info['start_s'] = time.perf_counter() - ray_start
        try:
            if job.device.startswith('cuda') and ray_info['resources'].get('GPU', 0) < 1:
                where = args.address or 'this machine'
                raise ValueError(f'--device {job.device}: the Ray cluster at {where} has no '
                                 'GPU, and its actors would wait for one forever')
            processing = time.perf_counter()  # actors load the model while readers start
            FleetRunner(job, cluster).run(todo, writer.on_bag, writer.on_segment)
            processing_s = time.perf_counter() - processing
        finally:
            stop_ray()
    progress.close()
    finished = {**earlier, **writer.read}
    done = [bag for bag in bags if bag in finished]
    rows = store.merge(done)
    report_comparison = None
    if compare is None:
        (store.out / COMPARISON).unlink(missing_ok=True)  # of an earlier run
    else:
        store.merge_comparison(done)
        report_comparison, compared['figures'] = comparison_section(
            store, compare, finished, done, (card['path'], compared['path']))
    summary = {
        'inputs': args.inputs, 'inputs_not_found': found.missing,
        'bags_found': len(bags), 'bags_read': len(done), 'bags_read_this_run': len(writer.read),
        'bags_resumed': sorted(earlier), 'bags_failed': [
            {'bag': bag, 'reason': reason} for bag, reason in sorted(writer.failed.items())],
        'frames': rows, 'frames_this_run': writer.frames,
        'frames_per_bag': {bag: {key: finished[bag]['info'].get(key) for key in (
            'topic', 'messages', 'frames', 'subsampled', 'skipped', 'skip_examples',
            'steering_topic', 'steering_samples', 'repaired', 'bytes_left_out')}
            for bag in done},
        'bags_cut_short': [{'bag': bag, 'frames_recovered': finished[bag]['info']['frames'],
                            'bytes_left_out': finished[bag]['info']['bytes_left_out']}
                           for bag in done if finished[bag]['info'].get('repaired')],
        'processing_s': processing_s,
        'frames_per_s': writer.frames / processing_s if processing_s else None,
        'wall_s': time.perf_counter() - started, 'ray': ray_info, 'model': card,
        'batch': args.batch, 'device': args.device, 'every': args.every,
        'horizon_row': args.horizon_row, 'compared': compared,
        'files': [FRAMES, *([COMPARISON] if compare else []), SUMMARY, REPORT],
    }
    write_report(store.out / REPORT, f'vbp-fleet: {len(done)} of {len(bags)} bags', [
        ('bags found / read / failed', f'{len(bags)} / {len(done)} / {len(writer.failed)}'),
        ('bags cut short (read up to the cut)', len(summary['bags_cut_short'])),
        ('frames', rows), ('model', f'{card["path"]} ({card["spec"]["architecture"]})'),
        ('frames/s (this run)', f'{summary["frames_per_s"] or 0:.1f}'),
        ('wall time (s)', f'{summary["wall_s"]:.1f}')],
        sorted(writer.failed.items()), [section(store, finished[bag]) for bag in done],
        CATEGORIES, report_comparison)
    summary['wall_s'] = time.perf_counter() - started
    store.write_json(SUMMARY, summary)
    cut = summary['bags_cut_short']
    print(f'vbp-fleet: {len(done)} of {len(bags)} bags read ({len(earlier)} from an earlier '
          f'run), {len(writer.failed)} failed, {len(cut)} cut short '
          f'({sum(bag["bytes_left_out"] for bag in cut)} bytes left out); {rows} frames; '
          f'{summary["frames_per_s"] or 0:.1f} frames/s; wall {summary["wall_s"]:.1f} s; '
          f'wrote {store.out}/')
    if compare is not None:
        shares = compared['figures']['shares']
        print(f'vbp-fleet: compared with {compare.model}: {shares["either"]:.1%} of the frames '
              f'disagree (on the angle {shares["angle"]:.1%}, on the mask {shares["mask"]:.1%});'
              f' {COMPARISON}')
    for name in found.missing:
        print(f'vbp-fleet: warning: {name} is neither a bag nor a folder', file=sys.stderr)
    for bag in cut:
        print(f'vbp-fleet: warning: {bag["bag"]} was not closed (recorder killed?): '
              f'{bag["frames_recovered"]} frames read up to its cut, {bag["bytes_left_out"]} '
              'bytes after it left out', file=sys.stderr)
    for bag, reason in sorted(writer.failed.items()):
        print(f'vbp-fleet: failed: {bag}: {reason}', file=sys.stderr)
    return 1 if writer.failed or found.missing else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog='vbp-fleet', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='bags or folders of bags')
    parser.add_argument('--out', required=True, metavar='DIR', help='output folder')
    parser.add_argument('--model', help='checkpoint (default: the bundled model)')
    parser.add_argument('--compare', metavar='OTHER_MODEL',
                        help='a second model (any format vbp_node takes) to run on every frame '
                        'beside --model: writes comparison.parquet and a comparison section '
                        'in the report')
    parser.add_argument('--compare-card', metavar='CARD',
                        help="the compared model's card (default: the one beside it)")
    parser.add_argument('--disagree-angle', type=float, default=0.05, metavar='RAD',
                        help='the models disagree on a frame whose angles differ by more than '
                        'this (radians; default: %(default)s, 2.9 deg)')
    parser.add_argument('--disagree-similarity', type=float, default=0.5, metavar='R',
                        help='... or whose masks\' similarity (Pearson correlation) is below '
                        'this (default: %(default)s)')
    parser.add_argument('--topic', help='camera topic (default: the Image or CompressedImage '
                        'topic with the most messages, per bag)')
    parser.add_argument('--steering-topic', metavar='TOPIC',
                        help='recorded steering: a std_msgs Float32/Float64 topic (paired by '
                        'log time) or a SteeringReport topic (default: Udacity\'s '
                        '/vehicle/steering_report where a bag has it)')
    parser.add_argument('--steering-tolerance-ms', type=float, default=100.0, metavar='MS',
                        help='largest gap between a frame and its steering sample '
                        '(default: %(default)s)')
    parser.add_argument('--horizon-row', type=float, metavar='ROW',
                        help='camera frame row of the horizon, for the above_horizon share '
                        '(default: unknown, the column is NaN)')
    parser.add_argument('--attention-roi', type=float, nargs='+', default=list(DEFAULT_ROI),
                        metavar='X Y', help='region of interest of the roi_mass column: x, y '
                        'pairs of a polygon in normalized camera coordinates, as vbp_node\'s '
                        'attention_roi (default: the road ahead of the bundled model\'s camera, '
                        f'{" ".join(map(str, DEFAULT_ROI))})')
    parser.add_argument('--address', help='Ray cluster address (default: start Ray here)')
    parser.add_argument('--workers', type=positive_int, default=1,
                        help='model actors (default: %(default)s)')
    parser.add_argument('--threads', type=positive_int, help='torch threads per model actor '
                        '(default: cores / workers here, 1 on a cluster)')
    parser.add_argument('--readers', type=positive_int,
                        help='bags read at once (default: 2 x workers)')
    parser.add_argument('--batch', type=positive_int, default=8,
                        help='frames per forward pass (default: %(default)s)')
    parser.add_argument('--segment', type=positive_int, default=64, metavar='N',
                        help='frames a reader sends to an actor at once, rounded to whole '
                        'batches (default: %(default)s)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N, on the actors '
                        '(default: %(default)s)')
    parser.add_argument('--every', type=positive_int, default=1, metavar='N',
                        help='process every Nth camera frame (default: %(default)s)')
    parser.add_argument('--gallery', type=positive_int, default=4, metavar='N',
                        help='frames per gallery category and bag (default: %(default)s)')
    parser.add_argument('--resume', action='store_true',
                        help='keep the bags already finished in DIR with the same settings')
    parser.add_argument('--force', action='store_true',
                        help='start over in a DIR that holds results')
    parser.add_argument('--object-store-mb', type=positive_int, metavar='MB',
                        help='object store of a local Ray (default: Ray\'s)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    problem = roi_problem(args.attention_roi)
    if problem:
        parser.error(f'--attention-roi: {problem}')
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point (exit status in the module docstring)."""
    started = time.perf_counter()
    args = parse_args(argv)
    try:
        return run(args, started)
    except (CheckpointError, ResultsError, OSError, ValueError) as error:
        print(f'vbp-fleet: error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
