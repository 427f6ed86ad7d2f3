"""vbp-fleet's output folder: one Parquet part and one JSON sidecar per finished bag, merged
into frames.parquet (and, for a run with ``--compare``, comparison.parquet) at the end of a run.

A bag is finished when its part exists: the sidecar (bag info, gallery) is written first and
the part is renamed into place last, both atomically, so a run killed at any moment leaves only
finished bags and temporary files, and ``--resume`` continues without duplicating a row. A part
records the fingerprint of the settings that made it (model, topic, subsampling, horizon,
pairing, the compared model); a resumed run redoes the bags whose fingerprint differs. A
compared bag's part holds the comparison's columns after the frames' (one commit for both
files' rows), and each merge selects its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...explain.attention import STATISTICS
from ...interface import json_text

PARTS = 'parts'
FRAMES, SUMMARY, REPORT = 'frames.parquet', 'summary.json', 'report.html'
COMPARISON = 'comparison.parquet'
OTHER = '_other'  # suffix of the compared model's columns (angle_other, its statistics)
REPORT_FILES = 'report_files'
FINGERPRINT_KEY = b'vbp_fleet.fingerprint'
STRING_COLUMNS = ('bag', 'topic')
INT_COLUMNS = ('stamp_ns', 'log_time_ns', 'index')
FLOAT_COLUMNS = ('angle', *STATISTICS, 'recorded_angle', 'error')
SCHEMA = pa.schema([(name, pa.string()) for name in STRING_COLUMNS]
                   + [(name, pa.int64()) for name in INT_COLUMNS]
                   + [(name, pa.float64()) for name in FLOAT_COLUMNS])
COMPARISON_KEY = (*STRING_COLUMNS, 'stamp_ns', 'log_time_ns', 'index', 'angle')


class ResultsError(ValueError):
    """An output folder that cannot be used as asked."""


def fingerprint(settings: dict) -> str:
    """A short hash of the settings that decide a bag's rows."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bag_key(bag: str) -> str:
    """A file-name-safe key of a bag path: its name and a hash of the full path."""
    name = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in Path(bag).name)[:48]
    return f'{name}-{hashlib.sha1(bag.encode()).hexdigest()[:10]}'


def bag_table(bag: str, topic: str, columns: dict[str, np.ndarray],
              comparison: dict[str, np.ndarray] | None = None) -> pa.Table:
    """The rows of one bag as a table of :data:`SCHEMA`, followed by the comparison's
    columns (float64) when given."""
    count = len(columns['index'])
    arrays = [pa.array([bag] * count, pa.string()), pa.array([topic] * count, pa.string())]
    arrays += [pa.array(np.asarray(columns[name], np.int64)) for name in INT_COLUMNS]
    arrays += [pa.array(np.asarray(columns[name], np.float64)) for name in FLOAT_COLUMNS]
    table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    for name, values in (comparison or {}).items():
        table = table.append_column(pa.field(name, pa.float64()),
                                    pa.array(np.asarray(values, np.float64)))
    return table


def comparison_columns(names: list[str]) -> list[str]:
    """The columns of comparison.parquet among a part's: the frame's key and angle, the
    comparison's own (angle_other, angle_diff, mask_similarity...), then the statistics of this
    model and those of the other (the frames' statistic columns that have an ``_other``
    twin)."""
    added = [name for name in names if name not in SCHEMA.names]
    twins = [name for name in added if name.endswith(OTHER)
             and name.removesuffix(OTHER) in SCHEMA.names
             and name.removesuffix(OTHER) not in COMPARISON_KEY]
    own = [name for name in added if name not in twins]
    return [*COMPARISON_KEY, *own, *(name.removesuffix(OTHER) for name in twins), *twins]


class ResultStore:
    """The output folder of a run whose settings have the fingerprint ``settings_hash``."""

    def __init__(self, out: Path, settings_hash: str) -> None:
        self.out, self.settings_hash = Path(out), settings_hash
        self.parts = self.out / PARTS
        self.files = self.out / REPORT_FILES

    def has_results(self) -> bool:
        """Whether the folder holds results of an earlier run."""
        return any((self.out / name).exists() for name in (PARTS, FRAMES, SUMMARY, REPORT))

    def prepare(self, resume: bool) -> None:
        """Create the folder; without ``resume`` remove earlier results; always remove the
        temporary files of a killed run."""
        if not resume:
            for name in (PARTS, REPORT_FILES):
                shutil.rmtree(self.out / name, ignore_errors=True)
            for name in (FRAMES, COMPARISON, SUMMARY, REPORT):
                (self.out / name).unlink(missing_ok=True)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.files.mkdir(parents=True, exist_ok=True)
        for leftover in self.parts.glob('*.tmp'):
            leftover.unlink()

    def part(self, bag: str) -> Path:
        """The Parquet part of a bag."""
        return self.parts / f'{bag_key(bag)}.parquet'

    def sidecar(self, bag: str) -> Path:
        """The JSON sidecar of a bag."""
        return self.parts / f'{bag_key(bag)}.json'

    def finished(self, bag: str) -> dict | None:
        """The sidecar of a bag finished with this run's settings, else None."""
        part, sidecar = self.part(bag), self.sidecar(bag)
        if not (part.is_file() and sidecar.is_file()):
            return None
        metadata = pq.read_schema(part).metadata or {}
        if metadata.get(FINGERPRINT_KEY, b'').decode() != self.settings_hash:
            return None
        return json.loads(sidecar.read_text())

    def write_bag(self, bag: str, table: pa.Table, sidecar: dict) -> None:
        """Store a finished bag: sidecar first, the part last (the commit)."""
        # Read back by --resume only: Python's JSON keeps a NaN (a frame without a recorded
        # angle) as NaN, where the files for people (json_text) write null.
        _replace(self.sidecar(bag), json.dumps(sidecar, indent=1).encode())
        temporary = self.part(bag).with_suffix('.parquet.tmp')
        table = table.replace_schema_metadata({FINGERPRINT_KEY: self.settings_hash.encode()})
        pq.write_table(table, temporary)
        os.replace(temporary, self.part(bag))

    def read_bag(self, bag: str, columns: Iterable[str] | None = None) -> pa.Table:
        """The rows of a finished bag."""
        return pq.read_table(self.part(bag), columns=list(columns) if columns else None)

    def merge(self, bags: Iterable[str]) -> int:
        """Write frames.parquet from the parts of ``bags`` (in that order); returns its rows."""
        temporary = self.out / (FRAMES + '.tmp')
        rows = 0
        with pq.ParquetWriter(temporary, SCHEMA) as writer:
            for bag in bags:
                table = self.read_bag(bag, SCHEMA.names).replace_schema_metadata(None)
                writer.write_table(table)
                rows += table.num_rows
        os.replace(temporary, self.out / FRAMES)
        return rows

    def merge_comparison(self, bags: Iterable[str]) -> int:
        """Write comparison.parquet from the parts of ``bags`` (in that order, all of a run
        with ``--compare``), a bag at a time; returns its rows."""
        temporary = self.out / (COMPARISON + '.tmp')
        writer, rows = None, 0
        try:
            for bag in bags:
                table = self.read_bag(bag).replace_schema_metadata(None)
                table = table.select(comparison_columns(table.column_names))
                writer = writer or pq.ParquetWriter(temporary, table.schema)
                writer.write_table(table)
                rows += table.num_rows
            if writer is None:
                pq.write_table(pa.schema([SCHEMA.field(name) for name in COMPARISON_KEY])
                               .empty_table(), temporary)
        finally:
            if writer is not None:
                writer.close()
        os.replace(temporary, self.out / COMPARISON)
        return rows

    def write_json(self, name: str, document: dict) -> None:
        """A JSON file of the folder, replaced atomically."""
        _replace(self.out / name, (json_text(document) + '\n').encode())


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + '.tmp')
    temporary.write_bytes(data)
    os.replace(temporary, path)
