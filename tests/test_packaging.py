"""The data folders (adapters/, fhir/, config/) are found in the source tree and in a wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from dho.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json
from dho.settings import Settings
from dho.ingest.pipeline import ReferenceData
s = Settings()
ref = ReferenceData.load(s)
print(json.dumps({
    "adapters_dir": str(s.adapters_dir), "fhir_dir": str(s.fhir_dir),
    "config_dir": str(s.config_dir), "adapters": sorted(ref.adapters.adapters),
    "types": sorted(ref.types.types), "package": __import__("dho").__file__,
}))
"""


def test_editable_install_uses_the_source_tree() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.adapters_dir == ROOT / "adapters"
    assert settings.fhir_dir == ROOT / "fhir"
    assert settings.config_dir == ROOT / "config"


def test_installed_wheel_carries_and_finds_its_data(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = list(wheels.glob("dho-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "dho/_data/adapters/dho-json.yaml",
        "dho/_data/adapters/adapter.schema.json",
        "dho/_data/fhir/measurement-types.yaml",
        "dho/_data/config/plans/general.yaml",
        "dho/_data/config/demo/registry.json",
        "dho/_data/config/mosquitto/mosquitto.conf",
        "dho/db/migrations/env.py",
    ):
        assert required in names, required
    assert not any(n.startswith(("fhir/", "adapters/")) for n in names)

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHO_")}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found = json.loads(out.stdout)
    data = site / "dho" / "_data"
    assert found["package"].startswith(str(site))
    assert found["adapters_dir"] == str(data / "adapters")
    assert found["fhir_dir"] == str(data / "fhir")
    assert found["config_dir"] == str(data / "config")
    assert "dho-json" in found["adapters"]
    assert "blood-pressure" in found["types"]
