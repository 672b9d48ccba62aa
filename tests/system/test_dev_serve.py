"""`flashsale dev` and `flashsale serve` as a person starts them: where they listen (dev on
loopback, serve on every interface), what dev's banner says (its stores, an audit line that runs
as pasted, a psql line), and that every line they log, gunicorn's own included, is one JSON
object (gunicorn's access line is in tests/unit/test_dev_serve.py)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from flashsale.dev.servers import free_port
from tests.support import ROOT
from tests.support.processes import serving, wait_ready

LISTEN = "0A"  # a socket's state in /proc/net/tcp


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses with a socket listening on `port`, from the kernel's own table."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if fields[3] == LISTEN and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object; fails on the first line that is not one."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict), f"line {number} is not a JSON object: {line!r}"
        entries.append(entry)
    return entries


def gunicorn_messages(entries: list[dict[str, Any]]) -> str:
    return "\n".join(e["message"] for e in entries if e.get("logger") == "gunicorn.error")


def test_serve_listens_on_every_interface_and_logs_only_json(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in service_env.items() if k != "HOST"} | {"LOG_LEVEL": "INFO"}
    with serving(env, tmp_path, workers=1) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        assert listening_on(port) == {"0.0.0.0"}
        assert requests.get(f"{base}/sale/status", timeout=5).status_code in (200, 503)
    entries = json_lines((tmp_path / f"serve-{port}.log").read_text())
    said = gunicorn_messages(entries)
    for expected in ("Starting gunicorn", "Booting worker", "Worker exiting", "Shutting down"):
        assert expected in said, said
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    # The app logs each request itself; gunicorn's access line would repeat it.
    assert not [entry for entry in entries if entry["logger"] == "gunicorn.access"]


def test_dev_listens_on_loopback_and_its_banner_lines_work(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in service_env.items() if k != "HOST"}
    env.update(
        PORT=str(port),
        LOG_LEVEL="INFO",
        WEB_CONCURRENCY="1",
        FLASHSALE_STATE_DIR=str(tmp_path / "state"),
    )
    out, err = tmp_path / "dev.out", tmp_path / "dev.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        dev = subprocess.Popen(
            [sys.executable, "-m", "flashsale", "dev"],
            env=env,
            cwd=ROOT,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", dev, timeout=90)
        banner = _wait_for_banner(out, dev)
        assert listening_on(port) == {"127.0.0.1"}

        assert f"flashsale dev is up at http://127.0.0.1:{port}" in banner
        assert env["REDIS_URL"] in banner and env["DATABASE_URL"] in banner
        (audit,) = [line.strip() for line in banner.splitlines() if line.endswith(" audit")]
        assert audit.startswith(
            f"REDIS_URL={shlex.quote(env['REDIS_URL'])} "
            f"DATABASE_URL={shlex.quote(env['DATABASE_URL'])} "
        )
        # As pasted into a shell of the directory dev runs in: it audits dev's open sale.
        pasted = subprocess.run(
            ["bash", "-c", audit],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        (psql,) = [line.strip() for line in banner.splitlines() if line.strip().startswith("psql ")]
        assert shlex.split(psql)[1] == env["DATABASE_URL"]
        assert "FROM checkout_attempts" in psql
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)  # Ctrl-C: dev stops gunicorn gracefully
        status = dev.wait(timeout=60)
    assert status == 0, err.read_text()
    said = gunicorn_messages(json_lines(err.read_text()))
    for expected in ("Starting gunicorn", "Booting worker", "Worker exiting", "Shutting down"):
        assert expected in said, said


def _wait_for_banner(path: Path, proc: subprocess.Popen, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        if " audit\n" in text and "psql " in text:
            return text
        assert proc.poll() is None, f"dev exited with {proc.returncode}: {text}"
        time.sleep(0.1)
    raise AssertionError(f"no banner within {timeout} s: {path.read_text()!r}")
