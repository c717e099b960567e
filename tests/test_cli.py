"""The `dho` command as an operator uses it: migrate, import the registry twice, add a gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import DEMO_BUNDLE


def _dho(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHO_")}
    env["DHO_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"
    env["DHO_ALLOW_SYNTHETIC_IDS"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "dho", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_registry_import_is_idempotent_and_gateway_keys_are_shown_once(tmp_path: Path) -> None:
    assert _dho(["db", "upgrade"], tmp_path).returncode == 0
    first = _dho(["registry", "import", str(DEMO_BUNDLE)], tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Patient: 5 created, 0 updated, 0 unchanged" in first.stdout
    again = _dho(["registry", "import", str(DEMO_BUNDLE)], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Patient: 0 created, 0 updated, 5 unchanged" in again.stdout
    assert all(" 0 created, 0 updated," in line for line in again.stdout.strip().splitlines())

    listed = _dho(["registry", "organizations"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    [bodo] = [line for line in listed.stdout.splitlines() if "Bodø kommune" in line]
    org = bodo.split()[0]
    assert "municipality 1804" in bodo
    created = _dho(["gateways", "create", "tablet-fleet", "--organization", org], tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("dhogw_") and len(key) > 40
    twice = _dho(["gateways", "create", "tablet-fleet", "--organization", org], tmp_path)
    assert twice.returncode != 0 and "already exists" in twice.stderr
    unknown = _dho(["gateways", "create", "other", "--organization", "nope"], tmp_path)
    assert unknown.returncode != 0 and "unknown organisation" in unknown.stderr


@pytest.mark.parametrize(
    "bad", ["not json", '{"resourceType": "Bundle", "type": "document", "entry": []}']
)
def test_registry_import_refuses_bad_files_clearly(tmp_path: Path, bad: str) -> None:
    assert _dho(["db", "upgrade"], tmp_path).returncode == 0
    path = tmp_path / "bad.json"
    path.write_text(bad, encoding="utf-8")
    result = _dho(["registry", "import", str(path)], tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr
