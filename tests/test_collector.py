"""The garbage collector as a service process runs it (dho.collector)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from dho import runtime
from tests.conftest import base_settings

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import gc
from dho import collector
collector.tune(12345)
frozen = gc.get_freeze_count()
later = [[n] for n in range(1000)]
collector.tune(23456)
print(gc.get_threshold()[0], frozen > 0, gc.get_freeze_count() == frozen)
"""


def test_tune_freezes_once_per_process_and_sets_the_first_threshold() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["23456", "True", "True"]


async def test_the_service_runs_with_the_configured_threshold(tmp_path: Path) -> None:
    before = gc.get_threshold()
    settings = base_settings(
        tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'gc.sqlite3'}", gc_threshold=4321
    )
    rt = await runtime.start(settings)
    try:
        assert gc.get_threshold() == (4321, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        await runtime.stop(rt)
        gc.set_threshold(*before)
