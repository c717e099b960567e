"""A private Mosquitto for tests that depend on the base configuration's durability settings.

`derive_test_config` rewrites config/mosquitto/mosquitto.conf for a free local port and a
temporary persistence folder; `running_mosquitto` runs it for the length of a block.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import mosquitto_binary

BASE_CONF = Path(__file__).resolve().parent.parent / "config" / "mosquitto" / "mosquitto.conf"


# Directives that derive_test_config rewrites; the base file must set each at most once.
REWRITTEN_DIRECTIVES = ("listener", "persistence_location", "log_dest", "include_dir", "user")


def parse_mosquitto_conf(text: str) -> list[tuple[str, str]]:
    """(directive, arguments) per non-comment line, in order. Mosquitto has no inline comments."""
    directives = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, _, args = stripped.partition(" ")
            directives.append((name, args.strip()))
    return directives


def derive_test_config(
    base_text: str, *, port: int, data_dir: Path, include_dir: Path | None = None
) -> str:
    """The base config made runnable outside the container, on 127.0.0.1:`port`.

    Each line is kept except: `listener ...` -> `listener <port> 127.0.0.1`,
    `persistence_location ...` -> the temporary `data_dir`, `log_dest ...` -> `log_dest stderr`,
    `include_dir ...` -> `include_dir <include_dir>` or dropped, `user`/`pid_file` dropped;
    `user <current user>` is appended so a root test run does not switch to `mosquitto`,
    which could not write `data_dir`.
    """
    out = []
    for line in base_text.splitlines():
        stripped = line.strip()
        name = stripped.partition(" ")[0] if stripped and not stripped.startswith("#") else ""
        if name == "listener":
            out.append(f"listener {port} 127.0.0.1")
        elif name == "persistence_location":
            out.append(f"persistence_location {data_dir}/")
        elif name == "log_dest":
            out.append("log_dest stderr")
        elif name == "include_dir":
            if include_dir is not None:
                out.append(f"include_dir {include_dir}")
        elif name not in ("user", "pid_file"):
            out.append(line)
    out.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
    return "\n".join(out) + "\n"


@contextmanager
def running_mosquitto(conf_text: str, tmp_path: Path, port: int) -> Iterator[Path]:
    """Run mosquitto with `conf_text` until the block ends; yields the log file."""
    conf = tmp_path / "mosquitto-test.conf"
    conf.write_text(conf_text, encoding="utf-8")
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on {port}:\n{log_path.read_text()}")
                time.sleep(0.05)
        yield log_path
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
