"""The documentation a newcomer reads: every relative link of README.md, MODEL.md and docs/*.md
leads to a file that exists (and to a heading of it, where the link names one), and
docs/node.md's parameter table lists exactly vbp_node's parameters with their defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vbp_ros.ros.parameters import PARAMETERS

ROOT = Path(__file__).parents[1]
DOCUMENTS = [ROOT / 'README.md', ROOT / 'MODEL.md', *sorted((ROOT / 'docs').glob('*.md'))]
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^```.*?^```', re.M | re.S)
PARAMETER_TABLE_HEADER = '| name | default | meaning |'


def prose(path: Path) -> str:
    """The file's text without its fenced code blocks."""
    return FENCE.sub('', path.read_text())


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    for heading in re.findall(r'^#{1,6} (.+)$', prose(path), re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f'{slug}-{count}'] = 1
    return set(seen)


def relative_links(path: Path) -> list[str]:
    """The links of a Markdown file that point into the repository."""
    return [target for target in LINK.findall(prose(path))
            if not re.match(r'[a-z][a-z0-9+.-]*:', target)]


@pytest.mark.parametrize('document', DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    """A link to a missing file or heading is a dead end for the reader."""
    broken = []
    for target in relative_links(document):
        file_part, _, anchor = target.partition('#')
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(f'{target}: no file {linked}')
        elif anchor and (linked.suffix != '.md' or anchor not in anchors(linked)):
            broken.append(f'{target}: no heading #{anchor} in {linked.name}')
    assert not broken, f'{document.name}: ' + '; '.join(broken)


def test_the_docs_are_reachable_from_the_readme() -> None:
    """Every guide in docs/ is linked from the README, so a newcomer can find it."""
    linked = {(ROOT / target.partition('#')[0]).resolve()
              for target in relative_links(ROOT / 'README.md')}
    guides = set((ROOT / 'docs').glob('*.md'))
    assert guides <= linked, sorted(str(path.name) for path in guides - linked)


def test_the_readme_keeps_the_two_commands() -> None:
    """CI runs the README's test command (.ci/run): both commands stay in "Two commands"."""
    readme = (ROOT / 'README.md').read_text()
    section = readme[readme.index('## Two commands'):]
    section = section[:section.index('\n## ', 1)]
    assert 'make drive' in section and 'make test' in section
    assert len(readme.splitlines()) <= 300


def documented_default(value: object) -> str:
    """A parameter's default as docs/node.md writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, list):
        return '[' + ', '.join(map(str, value)) + ']'
    return str(value) if value != '' else '""'


def parameter_table() -> dict[str, str]:
    """docs/node.md's parameter table: name -> default, both without their backticks."""
    text = (ROOT / 'docs' / 'node.md').read_text()
    table = text[text.index(PARAMETER_TABLE_HEADER):].split('\n\n')[0].splitlines()[2:]
    rows = {}
    for row in table:
        name, default = (cell.strip().strip('`') for cell in row.strip('|').split('|')[:2])
        rows[name] = default
    return rows


def test_the_node_guide_lists_every_parameter_with_its_default() -> None:
    """docs/node.md's table is what users read: it names every declared parameter, with the
    default the node declares, and nothing that is not a parameter."""
    table = parameter_table()
    assert sorted(table) == sorted(PARAMETERS)
    wrong = {name: (table[name], documented_default(default))
             for name, (default, _) in PARAMETERS.items()
             if table[name] != documented_default(default)}
    assert not wrong, f'documented, declared: {wrong}'
