"""vbp-fleet's report.html: one page without scripts or outside resources; its pictures (JPEG
thumbnails, PNG plots) lie beside it and are linked by relative paths. A run with ``--compare``
gets a comparison section after the overview: the distributions, the shares of frames where
the models disagree, and the frames of largest disagreement with both models' overlays side by
side, each linked to its bag's timeline."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .pictures import angle_text, thumbnail

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
section.bag { border-top: 2px solid #888; margin-top: 1.5em; }
div.gallery, div.pairs { display: flex; flex-wrap: wrap; gap: 0.6em; }
figure { margin: 0; width: 322px; font-size: 0.8em; }
figure img { width: 320px; border: 1px solid #444; }
figure.pair { width: 648px; }
img.plot { max-width: 100%; }
.failed { color: #a00; }
"""


@dataclass(frozen=True)
class GalleryItem:
    """A thumbnail of the gallery: category, rank (1 = most worth a look), picture (path
    relative to the page), time in the bag, frame number, angles and score."""

    category: str
    rank: int
    image: str
    time_s: float
    index: int
    stamp_ns: int
    angle: float
    recorded: float
    score: float


@dataclass(frozen=True)
class BagSection:
    """One bag of the report."""

    bag: str
    topic: str
    counts: dict[str, object]
    plot: str
    gallery: list[GalleryItem]
    timeline: str | None = None  # the comparison's plot of the bag (--compare)


@dataclass(frozen=True)
class PairItem:
    """A frame of large disagreement: its bag and rank, the two overlays (paths relative to
    the page), time in the bag, frame number, stamp, both angles, similarity and score."""

    bag: str
    rank: int
    image: str
    image_other: str
    time_s: float
    index: int
    stamp_ns: int
    angle: float
    angle_other: float
    mask_similarity: float
    score: float


@dataclass(frozen=True)
class ComparisonSection:
    """The comparison of two models: their names, figures (label, value), the
    distributions' plot and the frames of largest disagreement."""

    model: str
    other: str
    figures: list[tuple[str, object]]
    plot: str
    pairs: list[PairItem]


def write_thumbnail(path: Path, rgb: np.ndarray, width: int = 320) -> None:
    """A JPEG thumbnail of an RGB picture, ``width`` pixels wide at most."""
    picture = thumbnail(rgb, min(width, rgb.shape[1]))
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')


def _table(rows: list[tuple[str, object]]) -> str:
    return '<table>' + ''.join(f'<tr><th>{html.escape(str(key))}</th>'
                               f'<td>{html.escape(str(value))}</td></tr>'
                               for key, value in rows) + '</table>'


def _figure(item: GalleryItem, label: str) -> str:
    recorded = '' if np.isnan(item.recorded) else f', recorded {angle_text(item.recorded)}'
    caption = (f'#{item.rank} {label} {item.score:.3g}<br>t = {item.time_s:.3f} s in the bag '
               f'(frame {item.index}, stamp {item.stamp_ns})<br>network '
               f'{angle_text(item.angle)}{recorded}')
    return (f'<figure><img src="{html.escape(item.image)}" alt="frame {item.index}">'
            f'<figcaption>{caption}</figcaption></figure>')


def _anchor(bag: str, sections: list[BagSection]) -> str:
    return next(f'bag-{number}' for number, section in enumerate(sections, start=1)
                if section.bag == bag)


def _pair(item: PairItem, anchor: str) -> str:
    caption = (f'#{item.rank} disagreement {item.score:.3g}: this '
               f'{angle_text(item.angle)}, other {angle_text(item.angle_other)}, mask '
               f'similarity {item.mask_similarity:.3f}<br>'
               f'<a href="#{anchor}">{html.escape(Path(item.bag).name)}</a>, t = '
               f'{item.time_s:.3f} s in the bag (frame {item.index}, stamp {item.stamp_ns})')
    return (f'<figure class="pair"><img src="{html.escape(item.image)}" alt="frame '
            f'{item.index}, this model"> <img src="{html.escape(item.image_other)}" '
            f'alt="frame {item.index}, other model"><figcaption>{caption}</figcaption>'
            '</figure>')


def _comparison(comparison: ComparisonSection, sections: list[BagSection]) -> str:
    pairs = ''.join(_pair(item, _anchor(item.bag, sections)) for item in comparison.pairs)
    return (f'<section class="comparison"><h2>Comparison: {html.escape(comparison.model)} '
            f'(this) and {html.escape(comparison.other)} (other)</h2>'
            f'{_table(comparison.figures)}<img class="plot" '
            f'src="{html.escape(comparison.plot)}" alt="distributions">'
            f'<h3>The {len(comparison.pairs)} frames of largest disagreement (left this '
            'model, right the other; each bag\'s timeline marks its own)</h3>'
            f'<div class="pairs">{pairs}</div></section>')


def _section(section: BagSection, number: int, categories: dict[str, str]) -> str:
    parts = [f'<section class="bag" id="bag-{number}"><h2>{html.escape(section.bag)}</h2>',
             _table([('camera topic', section.topic), *section.counts.items()]),
             f'<img class="plot" src="{html.escape(section.plot)}" alt="steering angle">']
    if section.timeline:
        parts.append(f'<img class="plot" src="{html.escape(section.timeline)}" '
                     'alt="comparison timeline">')
    for category, title in categories.items():
        items = [item for item in section.gallery if item.category == category]
        if items:
            label = category.replace('_', ' ')
            parts.append(f'<h3>{html.escape(title)}</h3><div class="gallery">'
                         + ''.join(_figure(item, label) for item in items) + '</div>')
    return '\n'.join(parts) + '</section>'


def write_report(path: Path, title: str, overview: list[tuple[str, object]],
                 failed: list[tuple[str, str]], sections: list[BagSection],
                 categories: dict[str, str], comparison: ComparisonSection | None = None
                 ) -> None:
    """Write the page: overview table, failed bags with reasons, the comparison when given,
    then per bag its counts, its angle plot (and comparison timeline) and its gallery (one
    row of thumbnails per category of ``categories``)."""
    failures = ''
    if failed:
        failures = ('<h2 class="failed">Bags that failed</h2>'
                    + _table([(bag, reason) for bag, reason in failed]))
    if comparison is not None:
        failures += _comparison(comparison, sections)
    body = '\n'.join(_section(section, number, categories)
                     for number, section in enumerate(sections, start=1))
    path.write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'
        f'<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>'
        f'<h1>{html.escape(title)}</h1>{_table(overview)}{failures}\n{body}</body></html>\n',
        encoding='utf-8')
