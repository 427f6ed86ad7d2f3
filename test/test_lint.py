"""Linters, as ros2/examples run them: flake8 (99-character lines) over the package, the launch
files, setup.py and the tests; a pep257 docstring check of the package's public modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[1]
SOURCES = ['vbp_ros', 'launch', 'setup.py']
# pep257 as ament_pep257 checks it (missing method, magic-method and __init__ docstrings are
# not errors), except the summary-line rules: the house style lets a summary sentence run over
# several lines (D205, D209, D400, D401) and name a type or command first (D402, D403).
DOCSTRING_IGNORES = 'D102,D105,D107,D205,D209,D400,D401,D402,D403'


def flake8(*arguments: str) -> str:
    result = subprocess.run([sys.executable, '-m', 'flake8', '--max-line-length', '99',
                             *arguments], cwd=REPOSITORY, capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


def test_flake8_over_package_launch_files_and_tests() -> None:
    report = flake8('--extend-ignore', 'D', *SOURCES, 'test')
    assert report == '', f'flake8 found:\n{report}'


def test_pep257_docstrings_of_public_modules() -> None:
    report = flake8('--select', 'D', '--docstring-convention', 'pep257',
                    '--extend-ignore', DOCSTRING_IGNORES, *SOURCES)
    assert report == '', f'pydocstyle found:\n{report}'
