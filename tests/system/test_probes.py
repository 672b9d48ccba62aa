"""The probe port's thread (server/probes.py): the probes are answered while the worker's own
event loop cannot run at all. A process patched as a gevent worker is, serving its probe app as
a worker does, blocks its main thread in a loop that never yields; the probes must be answered
before that block ends. Through `flashsale serve`, the probe port is in test_admission.py."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

# The worker's main thread, blocked for BLOCK seconds: a probe served by its event loop would
# wait all that time, one served by the probe thread is answered at once.
BLOCK = 20.0
WORKER = """
from gevent import monkey

monkey.patch_all()

import socket
import sys
import time

from flashsale.server.probes import serve_probes

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
serve_probes([listener])
print(listener.getsockname()[1], flush=True)
seconds = float(sys.stdin.readline())
end = time.monotonic() + seconds
print("blocking", flush=True)
while time.monotonic() < end:  # never yields to the event loop
    pass
print("unblocked", flush=True)
"""


@pytest.fixture
def worker(service_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        env={**service_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_probes_are_answered_while_the_worker_loop_is_blocked(
    worker: subprocess.Popen,
) -> None:
    port = int(worker.stdout.readline())
    probes = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # the thread builds its app (and connects) before it serves
        try:
            requests.get(f"{probes}/healthz", timeout=5)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the probe thread never served"
            time.sleep(0.1)
    worker.stdin.write(f"{BLOCK}\n")
    worker.stdin.flush()
    assert worker.stdout.readline().strip() == "blocking"
    started = time.monotonic()
    answers = {path: requests.get(probes + path, timeout=BLOCK) for path in PATHS}
    answered = time.monotonic() - started

    assert {path: a.status_code for path, a in answers.items()} == dict.fromkeys(PATHS, 200)
    assert answers["/readyz"].json()["checks"] == {"redis": True, "postgres": True}
    assert "flashsale_checkouts_total" in answers["/metrics"].text
    assert worker.poll() is None  # still blocked: nothing above waited for the block to end
    assert answered < BLOCK / 2, answered
    refused = requests.post(f"{probes}/checkout?user_id=u&id=1", timeout=BLOCK)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"


PATHS = ("/healthz", "/readyz", "/metrics")
