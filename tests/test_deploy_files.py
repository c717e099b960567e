"""Deployment files: docker-compose.yml, config/example.env, Dockerfile, Mosquitto base config.

The compose and env-file checks keep the deployment in step with `dho.settings.Settings`
(which forbids unknown DHO_ variables at start). The Mosquitto checks start a real broker
from config/mosquitto/mosquitto.conf, rewritten for a free local port (derive_test_config).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from dho.settings import Settings
from tests.conftest import free_port, mosquitto_binary
from tests.mosquitto import (
    REWRITTEN_DIRECTIVES,
    derive_test_config,
    parse_mosquitto_conf,
    running_mosquitto,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXAMPLE_ENV = ROOT / "config" / "example.env"
MOSQUITTO_CONF = ROOT / "config" / "mosquitto" / "mosquitto.conf"
MOSQUITTO_CONF_D = ROOT / "config" / "mosquitto" / "conf.d"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SETTINGS_FIELDS = frozenset(Settings.model_fields)
# Services that run the dho image and so get their environment checked against Settings.
DHO_IMAGE_SERVICES = ("dho", "migrate")
# Environment variables other than DHO_* that may be set on those services.
NON_DHO_ALLOWED = frozenset({"TZ", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})


# --- helpers: env files and compose -----------------------------------------------------------

_ENV_LINE = re.compile(
    r"^\s*(?P<comment>#\s*)?(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$"
)


def read_env_file(path: Path, *, include_commented: bool) -> list[tuple[str, str]]:
    """(key, value) of every KEY=value line; with include_commented also `# KEY=value` lines."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ENV_LINE.match(line)
        if match and (include_commented or not match["comment"]):
            entries.append((match["key"], match["value"].strip()))
    return entries


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def service_environment(service: dict[str, Any]) -> dict[str, str | None]:
    """`environment:` as a mapping, whether written as a mapping or as a KEY=value list."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): None if v is None else str(v) for k, v in env.items()}
    result: dict[str, str | None] = {}
    for item in env:
        key, sep, value = str(item).partition("=")
        result[key] = value if sep else None
    return result


def service_env_files(service: dict[str, Any]) -> list[Path]:
    """The service's env_file entries (string, list of strings or of {path: ...})."""
    raw = service.get("env_file") or []
    items = [raw] if isinstance(raw, str | dict) else list(raw)
    paths = [item["path"] if isinstance(item, dict) else item for item in items]
    return [(COMPOSE_FILE.parent / p).resolve() for p in paths]


def bad_env_keys(keys: list[str] | set[str], *, check_non_dho: bool = True) -> list[str]:
    problems = []
    for key in sorted(set(keys)):
        if key.startswith("DHO_"):
            if key[len("DHO_") :].lower() not in SETTINGS_FIELDS:
                problems.append(f"{key}: no field {key[4:].lower()!r} in dho.settings.Settings")
        elif check_non_dho and key not in NON_DHO_ALLOWED:
            problems.append(f"{key}: not a DHO_ setting and not in NON_DHO_ALLOWED")
    return problems


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings built from exactly `env` (no ambient DHO_ variables, no .env file)."""
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            if key.upper().startswith("DHO_"):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of the service's volumes (short or long syntax)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = str(volume.get("source", ""))
        else:
            source, _, rest = str(volume).partition(":")
            mounts[rest.split(":")[0]] = source
    return mounts


# --- helpers: Mosquitto config ----------------------------------------------------------------


def mqtt_connack_code(port: int, client_id: str = "dho-deploy-test") -> int:
    """CONNECT anonymously (MQTT 3.1.1, clean session) and return the CONNACK return code."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    assert len(body) < 128  # one-byte remaining length
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x10" + bytes([len(body)]) + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError(f"broker closed the connection after {connack!r}")
            connack += chunk
        if connack[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    assert connack[:2] == b"\x20\x02", connack
    return connack[3]


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_services_images_and_healthchecks() -> None:
    services = load_compose()["services"]
    for name in ("dho", "postgres", "mosquitto", "migrate"):
        assert name in services, f"service {name} missing"
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert str(services["mosquitto"]["image"]).startswith("eclipse-mosquitto:2")
    for name in ("dho", "postgres", "mosquitto"):
        test = (services[name].get("healthcheck") or {}).get("test")
        assert test, f"service {name} has no healthcheck"
    assert "/readyz" in " ".join(services["dho"]["healthcheck"]["test"])
    assert "build" in services["dho"]
    assert services["dho"].get("restart") == "unless-stopped"


def test_compose_dependencies_and_migration_step() -> None:
    services = load_compose()["services"]
    depends = services["dho"]["depends_on"]
    assert isinstance(depends, dict), "dho depends_on must use the long form with conditions"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["mosquitto"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    migrate = services["migrate"]
    command = migrate["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[-2:] == ["db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"


def test_compose_volumes_match_mosquitto_conf() -> None:
    compose = load_compose()
    services, named = compose["services"], set(compose.get("volumes") or {})
    postgres = volume_mounts(services["postgres"])
    assert postgres.get("/var/lib/postgresql/data") in named, "postgres data needs a named volume"

    mosquitto = volume_mounts(services["mosquitto"])
    directives = dict(parse_mosquitto_conf(MOSQUITTO_CONF.read_text(encoding="utf-8")))
    data_dir = directives["persistence_location"].rstrip("/")
    assert mosquitto.get(data_dir) in named, f"{data_dir} (persistence_location) needs a volume"
    assert (ROOT / mosquitto["/mosquitto/config/mosquitto.conf"]).resolve() == MOSQUITTO_CONF
    conf_d_source = mosquitto.get(directives["include_dir"])
    assert conf_d_source, "include_dir of mosquitto.conf must be mounted"
    assert (ROOT / conf_d_source).resolve() == MOSQUITTO_CONF_D


@pytest.mark.parametrize("name", DHO_IMAGE_SERVICES)
def test_compose_dho_environment_is_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = load_compose()["services"][name]
    env = service_environment(service)
    for env_file in service_env_files(service):
        if env_file.is_file():  # files outside the repo checkout (e.g. an absent .env) are skipped
            env.update(read_env_file(env_file, include_commented=False))
    problems = bad_env_keys(set(env))
    assert not problems, "\n".join(problems)

    settings = settings_from_env(monkeypatch, {k: v for k, v in env.items() if v is not None})
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.mqtt_host == "mosquitto"
    assert settings.mqtt_embedded is False
    assert settings.auto_migrate is False
    if name == "dho":
        assert settings.http_host == "0.0.0.0"
        assert settings.mqtt_client_id == "dho-1"
        assert settings.mqtt_shared_group == "dho"
        assert f":{settings.http_port}" in " ".join(map(str, service["ports"]))


# --- config/example.env -----------------------------------------------------------------------


def test_example_env_keys_are_settings() -> None:
    entries = read_env_file(EXAMPLE_ENV, include_commented=True)
    active = {key for key, _ in read_env_file(EXAMPLE_ENV, include_commented=False)}
    problems = bad_env_keys({k for k, _ in entries}, check_non_dho=False) + bad_env_keys(active)
    assert not problems, "\n".join(problems)


def test_example_env_documents_every_setting() -> None:
    documented = {k[4:].lower() for k, _ in read_env_file(EXAMPLE_ENV, include_commented=True)}
    missing = sorted(SETTINGS_FIELDS - documented)
    assert not missing, f"config/example.env does not mention DHO_ {missing}"


def test_example_env_values_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = []
    for key, value in read_env_file(EXAMPLE_ENV, include_commented=True):
        field = key[4:].lower()
        if not key.startswith("DHO_") or field not in SETTINGS_FIELDS:
            continue  # reported by test_example_env_keys_are_settings
        if field.endswith("_dir") and not Path(value).is_dir():
            continue  # example paths of the target machine
        try:
            settings_from_env(monkeypatch, {key: value})
        except ValueError as exc:  # pydantic.ValidationError
            problems.append(f"{key}={value}: {exc}")
    assert not problems, "\n".join(problems)


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_basics() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "python:3.11-slim" in text
    assert re.search(r"^EXPOSE 8080\b", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "must run as non-root"
    assert "/healthz" in text.partition("HEALTHCHECK")[2]
    entry = "\n".join(re.findall(r"^(?:ENTRYPOINT|CMD)\s.*$", text, re.MULTILINE))
    assert "upgrade" not in entry, "migrations are an explicit step, not part of start"
    env_keys = re.findall(r"\b(DHO_[A-Z0-9_]+)=", text)
    assert "DHO_HTTP_HOST" in env_keys
    problems = bad_env_keys(env_keys)
    assert not problems, "\n".join(problems)
    ignored = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored and ".venv" in ignored


# --- Mosquitto --------------------------------------------------------------------------------


def test_mosquitto_base_conf_values() -> None:
    directives = parse_mosquitto_conf(MOSQUITTO_CONF.read_text(encoding="utf-8"))
    names = [name for name, _ in directives]
    duplicates = sorted({n for n in names if names.count(n) > 1 and n in REWRITTEN_DIRECTIVES})
    assert not duplicates, f"set at most once (derive_test_config rewrites them): {duplicates}"
    conf = dict(directives)
    assert conf["persistence"] == "true"
    assert 0 < int(conf["autosave_interval"]) <= 60
    assert conf.get("autosave_on_changes", "false") == "false"
    assert int(conf["max_queued_messages"]) >= 100_000
    queued_bytes = int(conf.get("max_queued_bytes", "0"))
    assert queued_bytes == 0 or queued_bytes >= 64 * 2**20
    assert 100 <= int(conf["max_inflight_messages"]) <= 65_535  # sent as a uint16 Receive Maximum
    assert re.fullmatch(r"[1-9][0-9]*[hdwmy]", conf["persistent_client_expiration"])
    assert conf["listener"] == "1883"
    assert conf["log_dest"] == "stdout"
    assert names[-1] == "include_dir", "include_dir must be the last directive"
    assert conf["include_dir"] == "/mosquitto/config/conf.d"


def test_mosquitto_starts_from_base_conf(tmp_path: Path) -> None:
    mosquitto_binary()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    conf = derive_test_config(
        MOSQUITTO_CONF.read_text(encoding="utf-8"), port=port, data_dir=data_dir
    )
    with running_mosquitto(conf, tmp_path, port):
        assert mqtt_connack_code(port) == 0  # anonymous clients accepted in the base config
    assert (data_dir / "mosquitto.db").is_file(), "persistence did not write mosquitto.db"


def test_mosquitto_conf_d_fragment_overrides_base(tmp_path: Path) -> None:
    mosquitto_binary()
    data_dir, conf_d = tmp_path / "data", tmp_path / "conf.d"
    data_dir.mkdir()
    shutil.copytree(MOSQUITTO_CONF_D, conf_d, ignore=shutil.ignore_patterns("*.conf"))
    (conf_d / "20-auth.conf").write_text("allow_anonymous false\n", encoding="utf-8")
    port = free_port()
    conf = derive_test_config(
        MOSQUITTO_CONF.read_text(encoding="utf-8"), port=port, data_dir=data_dir, include_dir=conf_d
    )
    with running_mosquitto(conf, tmp_path, port) as log:
        assert mqtt_connack_code(port) == 5, log.read_text()  # 5 = not authorised
