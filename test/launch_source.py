"""Reading launch/drive.launch.py as source: its calls by name and their keyword arguments
(test_package.py and test_drive_launch.py)."""

from __future__ import annotations

import ast
from pathlib import Path


def launch_calls(path: Path) -> dict[str, list[ast.Call]]:
    """The calls of plain names in the Python file ``path``, by name."""
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.setdefault(node.func.id, []).append(node)
    return calls


def keyword(call: ast.Call, name: str) -> object:
    """The keyword argument ``name`` of ``call``: its value where a literal, else its node."""
    value = next(k.value for k in call.keywords if k.arg == name)
    return ast.literal_eval(value) if isinstance(value, ast.Constant) else value
