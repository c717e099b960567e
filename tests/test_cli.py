"""The `dho` command as an operator uses it: migrate, import the registry twice, add a gateway."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import DEMO_BUNDLE, ROOT


def _dho(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHO_")}
    env["DHO_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"
    env["DHO_ALLOW_SYNTHETIC_IDS"] = "true"
    env.update(extra)
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


def test_adapters_check_passes_and_try_shows_what_a_payload_becomes(tmp_path: Path) -> None:
    checked = _dho(["adapters", "check"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all as expected" in checked.stdout
    listed = _dho(["adapters", "list"], tmp_path)
    assert {"dho-json", "open-mhealth", "withings"} <= {
        line.split()[0] for line in listed.stdout.splitlines()
    }
    example = ROOT / "adapters" / "examples" / "withings" / "getmeas.json"
    tried = _dho(["adapters", "try", "withings", str(example)], tmp_path)
    assert tried.returncode == 0, tried.stderr
    shown = json.loads(tried.stdout)
    first = shown["items"][0]
    assert first["components"] == {"systolic": "142 mm[Hg]", "diastolic": "88 mm[Hg]"}
    assert first["observation"]["resourceType"] == "Observation"
    assert not (tmp_path / "cli.sqlite3").exists()  # trying stores nothing
    unknown = _dho(["adapters", "try", "no-such", str(example)], tmp_path)
    assert unknown.returncode != 0 and "no adapter named 'no-such'" in unknown.stderr


def test_a_broken_adapter_fails_the_check_and_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    shutil.copytree(ROOT / "adapters", folder)
    (folder / "vendor-x.yaml").write_text("name: vendor-x\nformat: json\n", encoding="utf-8")
    checked = _dho(["adapters", "check"], tmp_path, DHO_ADAPTERS_DIR=str(folder))
    assert checked.returncode == 1
    assert "FAIL vendor-x: vendor-x.yaml: schema error" in checked.stderr


def test_quarantine_and_replay_commands(tmp_path: Path) -> None:
    assert _dho(["db", "upgrade"], tmp_path).returncode == 0
    assert _dho(["registry", "import", str(DEMO_BUNDLE)], tmp_path).returncode == 0
    listed = _dho(["registry", "organizations"], tmp_path)
    org = listed.stdout.split()[0]
    assert _dho(["gateways", "create", "hub", "--organization", org], tmp_path).returncode == 0
    asyncio.run(_store_unknown_device(tmp_path))

    rows = _dho(["quarantine", "list", "--reason", "unknown-device"], tmp_path)
    assert rows.returncode == 0, rows.stderr
    row_id = rows.stdout.split()[0]
    assert "AA-BB-CC-DD-EE-FF-00-42" in rows.stdout
    shown = json.loads(_dho(["quarantine", "show", row_id], tmp_path).stdout)
    assert shown["reason"] == "unknown-device" and "AA-BB" in shown["payload"]
    redriven = _dho(["quarantine", "redrive", row_id, "--by", "ola"], tmp_path)
    assert redriven.returncode == 0 and "0 re-driven, 1 still open" in redriven.stdout
    discarded = _dho(
        ["quarantine", "discard", row_id, "--reason", "test device", "--by", "ola"], tmp_path
    )
    assert discarded.stdout.strip() == "1 row(s) discarded"
    assert _dho(["quarantine", "list"], tmp_path).stdout == ""
    replayed = _dho(["replay", "--since", "2020-01-01", "--dry-run"], tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("1 messages replayed; items: 1 quarantined")


async def _store_unknown_device(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from dho.db.engine import create_engine, session_factory
    from dho.ingest.pipeline import Pipeline, ReferenceData
    from tests.conftest import base_settings
    from tests.support import raw_message, reading

    settings = base_settings(
        tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"
    )
    engine = create_engine(settings)
    try:
        pipeline = Pipeline(settings, session_factory(engine), ReferenceData.load(settings))
        when = datetime.now(UTC) - timedelta(minutes=5)
        body = reading("AA-BB-CC-DD-EE-FF-00-42", "heart-rate", when, 70, "/min")
        [result] = await pipeline.process([raw_message(body, gateway="hub")])
        assert result.items[0].reason == "unknown-device"
    finally:
        await engine.dispose()
