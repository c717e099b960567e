"""Every test the clinical safety file names as proof of a control exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAFETY = ROOT / "docs" / "clinical-safety.md"
TOKEN = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_named_test_exists() -> None:
    """A test name stands after its file, as `file::name` or as `name` later in the cell."""
    named = 0
    current: Path | None = None
    for match in TOKEN.finditer(SAFETY.read_text(encoding="utf-8")):
        file, qualified, bare = match.groups()
        if file is not None:
            current = ROOT / file
            assert current.is_file(), f"{file} does not exist"
        name = qualified or bare
        if name is None:
            continue
        assert current is not None, f"{name} is named before any test file"
        assert name in _tests_in(current), f"{current.relative_to(ROOT)} has no {name}"
        named += 1
    assert named > 20


def test_no_hazard_is_left_open_without_saying_so() -> None:
    rows = [
        line for line in SAFETY.read_text(encoding="utf-8").splitlines() if line.startswith("| H")
    ]
    assert len(rows) >= 15
    for row in rows:
        status = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert status.startswith(("controlled", "partly", "**open**")), row[:60]
