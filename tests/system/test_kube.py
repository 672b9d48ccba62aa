"""`flashsale kube` against a local HTTP server that speaks the Kubernetes API paths it uses.

The server (stdlib http.server in a thread) keeps Pods, CronJobs and Jobs in memory, filters lists
by label selector, checks the bearer token, accepts Job creation and plays the Job controller (a
created Job completes, or fails, when read). The commands run through the real CLI with a real
kubeconfig pointing at it; nothing in the `kubernetes` package or in flashsale is patched.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from flashsale import cli, kube
from tests.support.tools import require

TOKEN = "test-token"  # a fake server's fake token
RELEASE = "shop"
NS = "sales"


def _labels(component: str, release: str = RELEASE) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "flashsale",
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/part-of": "flashsale",
        "app.kubernetes.io/component": component,
    }


def _cronjob(name: str, component: str, schedule: str, release: str = RELEASE) -> dict[str, Any]:
    args = ["open-sale", "--next"] if component in ("opener", "preload") else ["sweep"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "labels": _labels(component, release),
        },
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "metadata": {"labels": _labels(component, release)},
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        "metadata": {"labels": _labels(component, release)},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": component,
                                    "image": "flashsale:0.1.0",
                                    "command": ["flashsale"],
                                    "args": args,
                                }
                            ],
                        },
                    },
                },
            },
        },
        "status": {"lastScheduleTime": "2030-01-01T10:00:00Z"},
    }


def _pod(name: str, component: str, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": _labels(component)},
        "spec": {"containers": [{"name": component, "image": "flashsale:0.1.0"}]},
        "status": {
            "phase": "Running" if component == "web" else "Succeeded",
            "startTime": "2030-01-01T09:00:00Z",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": component,
                    "ready": ready,
                    "restartCount": 1,
                    "image": "flashsale:0.1.0",
                    "imageID": "",
                }
            ],
        },
    }


def _job(name: str, component: str, state: str, start: str) -> dict[str, Any]:
    conditions = {
        "succeeded": [{"type": "Complete", "status": "True"}],
        "failed": [{"type": "Failed", "status": "True"}],
    }.get(state, [])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": _labels(component)},
        "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x"}]}}},
        "status": {
            "startTime": start,
            "conditions": conditions,
            "active": 1 if state == "running" else None,
        },
    }


@dataclass
class FakeCluster:
    """What the fake API server holds, and what it was asked."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    job_outcome: str = "succeeded"  # what a created Job turns into when it is read
    url: str = ""

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        return [
            o
            for o in self.objects.get(kind, [])
            if o["metadata"]["namespace"] == namespace
            and all(o["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]


LIST_PATHS = {
    "pods": re.compile(r"^/api/v1/namespaces/([^/]+)/pods$"),
    "cronjobs": re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/cronjobs$"),
    "jobs": re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs$"),
}
JOB_PATH = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)$")
KINDS = {"pods": "PodList", "cronjobs": "CronJobList", "jobs": "JobList"}


def _handler(cluster: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(
                code,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": reason,
                    "message": message,
                    "code": code,
                },
            )

        def _authorized(self) -> bool:
            if self.headers.get("Authorization", "").lower() == f"bearer {TOKEN}":
                return True
            self._status(401, "Unauthorized", "Unauthorized")
            return False

        def do_GET(self) -> None:
            url = urlparse(self.path)
            cluster.requests.append(("GET", self.path))
            if not self._authorized():
                return
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            for kind, pattern in LIST_PATHS.items():
                if m := pattern.match(url.path):
                    items = cluster.list(kind, m.group(1), selector)
                    api = "v1" if kind == "pods" else "batch/v1"
                    self._send(
                        200,
                        {
                            "kind": KINDS[kind],
                            "apiVersion": api,
                            "metadata": {"resourceVersion": "1"},
                            "items": items,
                        },
                    )
                    return
            if m := JOB_PATH.match(url.path):
                for job in cluster.objects.get("jobs", []):
                    if job["metadata"]["name"] == m.group(2):
                        if job in cluster.created:  # the Job controller, condensed
                            kind = "Complete" if cluster.job_outcome == "succeeded" else "Failed"
                            job["status"] = {"conditions": [{"type": kind, "status": "True"}]}
                        self._send(200, job)
                        return
            self._status(404, "NotFound", f"{url.path} not found")

        def do_POST(self) -> None:
            url = urlparse(self.path)
            cluster.requests.append(("POST", self.path))
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            m = LIST_PATHS["jobs"].match(url.path)
            if not m or body.get("kind") != "Job":
                self._status(404, "NotFound", f"{url.path} not found")
                return
            name = body["metadata"]["name"]
            if len(name) > 63 or any(
                j["metadata"]["name"] == name for j in cluster.objects.get("jobs", [])
            ):
                self._status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
                return
            body["metadata"].setdefault("namespace", m.group(1))
            body["metadata"]["uid"] = f"uid-{name}"
            body["status"] = {}
            cluster.objects.setdefault("jobs", []).append(body)
            cluster.created.append(body)
            self._send(201, body)

    return Handler


def _serve(cluster: FakeCluster, tls: ssl.SSLContext | None = None) -> Iterator[FakeCluster]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cluster))
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    cluster.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    try:
        yield cluster
    finally:
        server.shutdown()
        server.server_close()


def _populate(cluster: FakeCluster) -> FakeCluster:
    cluster.objects = {
        "cronjobs": [
            _cronjob("shop-flashsale-opener", "opener", "0 * * * *"),
            _cronjob("shop-flashsale-preload", "preload", "59 * * * *"),
            _cronjob("shop-flashsale-sweeper", "sweeper", "* * * * *"),
            _cronjob("other-flashsale-opener", "opener", "0 * * * *", release="other"),
        ],
        "pods": [
            _pod("shop-flashsale-7d9-a", "web", ready=True),
            _pod("shop-flashsale-7d9-b", "web", ready=False),
            _pod("shop-flashsale-sweeper-29000000-x", "sweeper", ready=False),
        ],
        "jobs": [
            _job("shop-flashsale-sweeper-29000000", "sweeper", "succeeded", "2030-01-01T10:00:00Z"),
            _job("shop-flashsale-opener-28999999", "opener", "failed", "2030-01-01T09:00:00Z"),
        ],
    }
    return cluster


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    yield from _serve(_populate(FakeCluster()))


def _write_kubeconfig(path: Path, server: str, namespace: str = NS, token: str = TOKEN) -> Path:
    path.write_text(
        json.dumps(
            {  # JSON is YAML
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "operator", "namespace": namespace},
                    }
                ],
                "current-context": "fake",
            }
        )
    )
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KUBECONFIG points at the fake cluster (as in an operator's shell); no in-cluster env."""
    path = _write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
    monkeypatch.setenv("KUBECONFIG", str(path))
    for name in ("KUBERNETES_SERVICE_HOST", "FLASHSALE_NAMESPACE", "FLASHSALE_RELEASE"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_open_now_creates_a_job_from_the_opener_cronjob_like_kubectl(
    kubeconfig: Path, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["kube", "open-now", "--release", RELEASE]) == 0

    [job] = cluster.created
    opener = cluster.objects["cronjobs"][0]
    meta = job["metadata"]
    assert meta["namespace"] == NS  # from the kubeconfig context
    assert meta["name"].startswith("shop-flashsale-opener-now-") and len(meta["name"]) <= 63
    assert meta["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert meta["labels"] == opener["spec"]["jobTemplate"]["metadata"]["labels"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": "shop-flashsale-opener",
            "uid": "uid-shop-flashsale-opener",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["spec"] == opener["spec"]["jobTemplate"]["spec"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == ["flashsale", "open-sale", "--next"]
    assert f"job/{meta['name']} created in namespace {NS}" in capsys.readouterr().out
    selectors = [
        parse_qs(urlparse(path).query).get("labelSelector") for _, path in cluster.requests
    ]
    assert [
        "app.kubernetes.io/instance=shop,app.kubernetes.io/part-of=flashsale,"
        "app.kubernetes.io/component=opener"
    ] in selectors


def test_sweep_now_uses_the_sweeper_and_wait_reports_success(
    kubeconfig: Path, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(["kube", "sweep-now", "--release", RELEASE, "--wait", "--interval", "0.05"]) == 0
    )
    [job] = cluster.created
    assert job["metadata"]["ownerReferences"][0]["name"] == "shop-flashsale-sweeper"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["sweep"]
    assert capsys.readouterr().out.strip().endswith("succeeded")


def test_wait_exits_non_zero_when_the_job_fails(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.job_outcome = "failed"
    assert cli.main(["kube", "open-now", "--release", RELEASE, "--wait", "--interval", "0.05"]) == 1


def test_open_now_without_such_a_release_says_so(
    kubeconfig: Path, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["kube", "open-now", "--release", "nope"]) == 1
    assert cluster.created == []
    assert "no opener CronJob for release 'nope' in namespace 'sales'" in capsys.readouterr().err


def test_namespace_and_release_from_flags_and_environment(
    kubeconfig: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The objects live in "sales"; the kubeconfig context's "default" is overridden by the flag.
    _write_kubeconfig(kubeconfig, cluster.url, namespace="default")
    monkeypatch.setenv("FLASHSALE_RELEASE", "other")
    assert cli.main(["kube", "open-now", "-n", NS]) == 0
    assert cluster.created[0]["metadata"]["ownerReferences"][0]["name"] == "other-flashsale-opener"
    monkeypatch.setenv("FLASHSALE_NAMESPACE", NS)
    assert cli.main(["kube", "open-now", "--release", RELEASE]) == 0
    assert cluster.created[1]["metadata"]["ownerReferences"][0]["name"] == "shop-flashsale-opener"


def test_status_lists_pods_cronjobs_and_jobs(
    kubeconfig: Path, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["kube", "status", "--release", RELEASE, "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["namespace"], report["release"]) == (NS, RELEASE)
    assert (report["web_ready"], report["web_pods"]) == (1, 2)
    assert [c["name"] for c in report["cronjobs"]] == [
        "shop-flashsale-opener",
        "shop-flashsale-preload",
        "shop-flashsale-sweeper",
    ]
    assert report["cronjobs"][0]["last_schedule"] == "2030-01-01T10:00:00Z"
    assert [(j["name"], j["state"]) for j in report["jobs"]] == [
        ("shop-flashsale-sweeper-29000000", "succeeded"),
        ("shop-flashsale-opener-28999999", "failed"),
    ]

    assert cli.main(["kube", "status", "--release", RELEASE]) == 0
    text = capsys.readouterr().out
    assert "release shop in namespace sales: 1/2 web pods ready" in text
    assert re.search(r"shop-flashsale-sweeper\s+\* \* \* \* \*\s+Etc/UTC\s+False", text)


def test_status_fails_when_no_web_pod_is_ready(
    kubeconfig: Path, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    for pod in cluster.objects["pods"]:
        pod["status"]["conditions"][0]["status"] = "False"
    assert cli.main(["kube", "status", "--release", RELEASE]) == 1
    assert "0/2 web pods ready" in capsys.readouterr().out


def test_a_refused_token_is_reported(
    kubeconfig: Path, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_kubeconfig(kubeconfig, cluster.url, token="wrong")
    assert cli.main(["kube", "status", "--release", RELEASE]) == 1
    assert "the API answered 401 Unauthorized" in capsys.readouterr().err


def test_no_kubeconfig_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli.main(["kube", "status"]) == 1
    assert "no usable Kubernetes configuration" in capsys.readouterr().err


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[FakeCluster, Path]]:
    """The fake API over HTTPS with a self-signed certificate, as a pod's in-cluster API is."""
    openssl = require("openssl")
    cert, key = tmp_path / "ca.crt", tmp_path / "tls.key"
    made = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, f"openssl could not make a test certificate: {made.stderr!r}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for served in _serve(_populate(FakeCluster()), tls=context):
        yield served, cert


def test_in_cluster_config_uses_the_service_account(
    tls_cluster: tuple[FakeCluster, Path], tmp_path: Path
) -> None:
    cluster, cert = tls_cluster
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text(TOKEN)
    (sa_dir / "ca.crt").write_bytes(cert.read_bytes())
    (sa_dir / "namespace").write_text(NS + "\n")
    port = cluster.url.rsplit(":", 1)[1]
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "FLASHSALE_RELEASE": RELEASE,
    }
    args = _parse(["kube", "status"])

    target = kube.connect(args, environ=env, sa_dir=sa_dir)
    try:
        assert (target.namespace, target.release) == (NS, RELEASE)
        report = kube.collect_status(target)
    finally:
        target.api.close()
    assert report["web_pods"] == 2
    assert all(path.startswith("/api") for _, path in cluster.requests)


def _parse(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    kube.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_help_does_not_import_the_kubernetes_package() -> None:
    code = (
        "import argparse, sys\n"
        "from flashsale import kube\n"
        "p = argparse.ArgumentParser()\n"
        "kube.register(p.add_subparsers())\n"
        "p.format_help()\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported at registration'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
