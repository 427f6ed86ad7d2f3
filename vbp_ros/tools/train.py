"""vbp-train: train a steering network as the paper did (SGD on the mean squared error of the
steering angle), watching VisualBackProp masks of fixed validation frames as it learns
(the paper's Figure 5).

Data: ``--data synthetic`` (default; training frames from ``--seed``, validation frames from
``--seed + 1``) or a set written by ``vbp-ingest``. Each epoch visits the training frames in an
order fixed by (seed, epoch), with augmentation (brightness and contrast; horizontal mirror with
the angle negated), so an interrupted run resumed with ``--resume`` continues exactly.

The learning rate decays from ``--lr`` to zero on a cosine over the run. The network learns
the angle divided by the training set's standard deviation (a well-scaled
regression target); that factor is folded into the last layer of every saved checkpoint, whose
output is in radians.

Written to ``--out``: ``model.safetensors`` (last epoch), ``best.safetensors`` (lowest
validation RMSE), ``state.safetensors`` (optimizer state for ``--resume``), ``history.json``,
``figure5/fraction_*.png`` (masks at 0.1, 0.5, 1, 4, 16 and 32 epochs, as far as the run goes)
and ``figure5_strip.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..models.checkpoint import ModelSpec, save_checkpoint
from ..models.loading import load_checkpoint
from ..models.networks import ARCHITECTURES
from ..explain.vbp import VisualBackProp
from ..pixels.overlay import red_overlay
from ..data.datasets import SteeringSet, npz_set, npz_spec, synthetic_set, synthetic_spec
from ..interface import one_line
from ..arguments import nonnegative_float, positive_float, positive_int

FIGURE5_EPOCHS = (0.1, 0.5, 1.0, 4.0, 16.0, 32.0)
FIGURE5_FRAMES = 4


def output_layer(model: nn.Module) -> nn.Linear:
    """The last fully connected layer (the output)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def radians_model(model: nn.Module, target_scale: float) -> nn.Module:
    """A copy whose output is in radians: the last layer divided by the target scale."""
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        layer = output_layer(folded)
        layer.weight.div_(target_scale)
        layer.bias.div_(target_scale)
    return folded


def augment(inputs: torch.Tensor, angles: torch.Tensor, rng: np.random.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contrast, brightness and mirroring (angle negated), per image."""
    count = len(angles)
    gain = torch.from_numpy(rng.uniform(0.75, 1.25, count).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.12, 0.12, count).astype(np.float32))
    inputs = ((inputs - 0.5) * gain.view(-1, 1, 1, 1) + 0.5 + bias.view(-1, 1, 1, 1)).clamp_(0, 1)
    mirror = torch.from_numpy(rng.random(count) < 0.5)
    inputs[mirror] = inputs[mirror].flip(-1)
    return inputs, torch.where(mirror, -angles, angles)


def evaluate_rmse(model: nn.Module, data: SteeringSet, spec: ModelSpec, target_scale: float,
                  batch_size: int = 64) -> float:
    """Validation RMSE in radians."""
    model.eval()
    errors = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            indices = slice(start, start + batch_size)
            predicted = model(data.inputs(indices, spec)).squeeze(1) / target_scale
            errors.append(predicted - torch.from_numpy(data.angles[indices]))
    return float(torch.cat(errors).square().mean().sqrt())


class Figure5:
    """VisualBackProp masks of fixed validation frames at fractional epochs."""

    def __init__(self, data: SteeringSet, spec: ModelSpec, folder: Path) -> None:
        self.inputs = data.inputs(slice(0, FIGURE5_FRAMES), spec)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def record(self, model: nn.Module, epochs: float) -> None:
        model.eval()
        with VisualBackProp(model) as vbp, torch.inference_mode():
            _, masks = vbp(self.inputs)
        tiles = [red_overlay(image[0].numpy(), mask[0].numpy())
                 for image, mask in zip(self.inputs, masks)]
        cv2.imwrite(str(self.folder / f'fraction_{epochs:g}.png'),
                    cv2.cvtColor(np.vstack(tiles), cv2.COLOR_RGB2BGR))

    def strip(self, target: Path) -> Path | None:
        """All recorded fractions side by side (columns), each labelled."""
        columns = []
        for epochs in FIGURE5_EPOCHS:
            path = self.folder / f'fraction_{epochs:g}.png'
            if path.exists():
                column = cv2.imread(str(path))
                label = np.zeros((24, column.shape[1], 3), np.uint8)
                cv2.putText(label, f'epoch {epochs:g}', (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                            (255, 255, 255), 1, cv2.LINE_AA)
                columns.append(np.vstack([label, column]))
        if not columns:
            return None
        cv2.imwrite(str(target), np.hstack(columns))
        return target


def load_data(args: argparse.Namespace, spec: ModelSpec) -> tuple[SteeringSet, SteeringSet]:
    """The training and validation sets the options name."""
    if args.data == 'synthetic':
        train = synthetic_set(args.seed, 0, args.train_frames, spec)
        validation = synthetic_set(args.seed + 1, 0, args.val_frames, spec)
        return train, validation
    full = npz_set(args.data, spec)
    order = np.random.default_rng(args.seed).permutation(len(full))
    held_out = max(1, int(len(full) * 0.1))
    pick = lambda idx: SteeringSet(full.pixels[idx], full.angles[idx])  # noqa: E731
    return pick(order[held_out:]), pick(order[:held_out])


def save_state(path: Path, optimizer: torch.optim.Optimizer, record: dict) -> None:
    """Momentum buffers (by parameter position) and the run record, for --resume."""
    parameters = optimizer.param_groups[0]['params']
    tensors = {f'{index}.momentum': optimizer.state[p]['momentum_buffer'].contiguous()
               for index, p in enumerate(parameters)
               if optimizer.state[p].get('momentum_buffer') is not None}
    save_file(tensors, str(path), metadata={'record': json.dumps(record)})


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the momentum buffers written by save_state; returns the run record."""
    with safe_open(str(path), framework='pt') as handle:
        record = json.loads(handle.metadata()['record'])
    tensors = load_file(str(path))
    for index, parameter in enumerate(optimizer.param_groups[0]['params']):
        if f'{index}.momentum' in tensors:
            optimizer.state[parameter]['momentum_buffer'] = tensors[f'{index}.momentum']
    return record


def refuse_another_run(recorded: dict, args: argparse.Namespace, out: Path) -> None:
    """ValueError where --resume names a network or data other than the run in ``out``
    (the other options may change: --epochs extends the run)."""
    for option in ('architecture', 'data'):
        if recorded.get(option) != getattr(args, option):
            raise ValueError(f'{out} holds a run with --{option} {recorded.get(option)}, not '
                             f'{getattr(args, option)}: resume it with that, or give another '
                             '--out')


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) the training the options describe; returns the run record."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = (synthetic_spec(args.architecture) if args.data == 'synthetic'
            else npz_spec(args.data, args.architecture))
    torch.manual_seed(args.seed)
    model = spec.build()
    train_set, validation = load_data(args, spec)
    target_scale = float(1.0 / max(train_set.angles.std(), 1e-6))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    record = {'epoch': 0, 'best_rmse': float('inf'), 'history': [], 'target_scale': target_scale,
              'arguments': {k: v for k, v in vars(args).items() if k != 'resume'}}
    if args.resume and (out / 'state.safetensors').exists():
        record = load_state(out / 'state.safetensors', optimizer)
        refuse_another_run(record['arguments'], args, out)
        resumed, _ = load_checkpoint(out / 'model.safetensors')
        target_scale = record['target_scale']
        model.load_state_dict(radians_model(resumed, 1.0 / target_scale).state_dict())
    elif args.resume:
        print(f'vbp-train: nothing to resume in {out} (no state.safetensors): a new run',
              file=sys.stderr)
    figure5 = Figure5(validation, spec, out / 'figure5')
    steps_per_epoch = -(-len(train_set) // args.batch_size)
    marks: dict[int, list[float]] = {}
    for fraction in FIGURE5_EPOCHS:
        if fraction <= args.epochs:
            marks.setdefault(max(1, math.ceil(fraction * steps_per_epoch)), []).append(fraction)
    checkpoint_spec = replace(spec, description=f'{spec.description}: vbp-train '
                              + command_line(record['arguments']))
    for epoch in range(record['epoch'], args.epochs):
        started = time.perf_counter()
        loss = run_epoch(model, optimizer, train_set, spec, target_scale, epoch, args,
                         lambda step: marks.get(epoch * steps_per_epoch + step, ()), figure5)
        rmse = evaluate_rmse(model, validation, spec, target_scale)
        if not (math.isfinite(loss) and math.isfinite(rmse)):
            raise ValueError(f'the training diverged in epoch {epoch + 1} (train loss {loss}, '
                             f'validation RMSE {rmse}); lower --lr. The files in {out} are '
                             'those of the epoch before')
        record['history'].append({'epoch': epoch + 1, 'train_loss': loss, 'val_rmse_rad': rmse,
                                  'seconds': time.perf_counter() - started})
        print(f'epoch {epoch + 1}/{args.epochs}: train loss {loss:.4f}, validation RMSE '
              f'{rmse:.5f} rad (angle std {validation.angles.std():.5f})', flush=True)
        exported = radians_model(model, target_scale)
        save_checkpoint(out / 'model.safetensors', exported, checkpoint_spec)
        if rmse < record['best_rmse']:
            record['best_rmse'] = rmse
            save_checkpoint(out / 'best.safetensors', exported, checkpoint_spec)
        record['epoch'] = epoch + 1
        save_state(out / 'state.safetensors', optimizer, record)
        (out / 'history.json').write_text(json.dumps(record, indent=2))
    figure5.strip(out / 'figure5_strip.png')
    return record


def run_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: SteeringSet,
              spec: ModelSpec, target_scale: float, epoch: int, args: argparse.Namespace,
              figure5_marks: Callable[[int], Sequence[float]], figure5: Figure5) -> float:
    """One pass over the training frames; returns the mean training loss."""
    order = np.random.default_rng([args.seed, epoch]).permutation(len(data))
    rng = np.random.default_rng([args.seed, epoch, 1])
    criterion = nn.MSELoss()
    total, batches = 0.0, 0
    steps = range(0, len(order), args.batch_size)
    for step, start in enumerate(tqdm(steps, desc=f'epoch {epoch + 1}', unit='batch',
                                      leave=False, disable=args.quiet), start=1):
        indices = np.sort(order[start:start + args.batch_size])
        inputs = data.inputs(indices, spec)
        targets = torch.from_numpy(data.angles[indices]) * target_scale
        if args.augment:
            inputs, targets = augment(inputs, targets, rng)
        set_learning_rate(optimizer, args, epoch + (step - 1) / len(steps))
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(inputs).squeeze(1), targets)
        loss.backward()
        optimizer.step()
        total, batches = total + loss.item(), batches + 1
        for fraction in figure5_marks(step):
            figure5.record(model, fraction)
    return total / max(batches, 1)


def command_line(arguments: dict) -> str:
    """The vbp-train options that reproduce a run."""
    options = [f'--{name.replace("_", "-")} {value}' for name, value in arguments.items()
               if not isinstance(value, bool)]
    if not arguments['augment']:
        options.append('--no-augment')
    return ' '.join(options)


def set_learning_rate(optimizer: torch.optim.Optimizer, args: argparse.Namespace,
                      epochs_done: float) -> None:
    """Cosine decay from --lr to zero over the run (a function of progress, so a resumed run
    continues on the same schedule)."""
    rate = 0.5 * args.lr * (1.0 + math.cos(math.pi * epochs_done / args.epochs))
    for group in optimizer.param_groups:
        group['lr'] = rate


def main(argv: list[str] | None = None) -> int:
    """Entry point: trains and writes the run folder; exit code 0."""
    parser = argparse.ArgumentParser(prog='vbp-train', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='runs/train', help='output folder (%(default)s)')
    parser.add_argument('--data', default='synthetic', help="'synthetic' or a vbp-ingest .npz")
    parser.add_argument('--architecture', default='authors', choices=sorted(ARCHITECTURES),
                        help='network (default %(default)s); the input size is its own')
    parser.add_argument('--epochs', type=positive_int, default=8)
    parser.add_argument('--batch-size', type=positive_int, default=32)
    parser.add_argument('--lr', type=positive_float, default=0.01)
    parser.add_argument('--momentum', type=nonnegative_float, default=0.9)
    parser.add_argument('--weight-decay', type=nonnegative_float, default=1e-5)
    parser.add_argument('--train-frames', type=positive_int, default=16000)
    parser.add_argument('--val-frames', type=positive_int, default=1000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-augment', dest='augment', action='store_false')
    parser.add_argument('--resume', action='store_true', help='continue the run in --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    try:
        record = train(args)
    except (OSError, ValueError) as error:  # data, --out, or a diverged run
        print(f'vbp-train: {one_line(error)}', file=sys.stderr)
        return 1
    print(f'best validation RMSE {record["best_rmse"]:.5f} rad; wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
