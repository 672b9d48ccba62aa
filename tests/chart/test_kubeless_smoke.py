"""Kube-less smoke test: what the manifests run, run here.

The chart is rendered with connection URLs that name the in-cluster Services (flashsale-redis,
flashsale-postgresql) on the ports of this session's real Redis and PostgreSQL. Then, like a kubelet
would, the test takes each container's command, args and environment from the rendered objects
(env values, secretKeyRef / configMapKeyRef, envFrom ConfigMaps and Secrets), turns the emptyDir
mounts into temporary directories and the Service host names into the servers' real hosts, and runs
the containers as local processes in the order a release runs them:

  migration hook Job (twice: pre-install, then pre-upgrade) -> opener and preload CronJobs ->
  web Deployment (probes, a checkout and a purchase, /metrics) -> sweeper CronJob ->
  the helm test pod -> SIGTERM to the web pod, which must drain within its grace period.

No Kubernetes API is involved; what it proves is that the commands and environment in the
manifests make a working service. Scheduling, probes by a kubelet, Service routing and hooks
ordering by Helm need a real cluster (k8s-dev/stack.sh e2e).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from flashsale.dev.servers import free_port
from tests.support.chart import Render, RenderFn

SERVICE_HOSTS = {"redis": "flashsale-redis", "postgresql": "flashsale-postgresql"}
ITEMS = 50


def _with_host(url: str, host: str) -> tuple[str, str | None]:
    """(url with its host replaced, the original host); URLs without a host stay as they are."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url, None
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), parts.hostname


class Kubelet:
    """Runs the rendered containers as local processes."""

    def __init__(self, rendered: Render, hosts: dict[str, str], workdir: Path) -> None:
        self.rendered = rendered
        self.hosts = hosts  # in-cluster host name -> where it really is
        self.workdir = workdir
        self.bin = Path(sys.executable).parent

    def _mounts(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Path]:
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {}
        for mount in container.get("volumeMounts", []):
            assert "emptyDir" in volumes[mount["name"]], f"only emptyDirs run here: {mount}"
            local = self.workdir / f"{container['name']}-{mount['name']}-{time.monotonic_ns()}"
            local.mkdir(parents=True)
            mounts[mount["mountPath"]] = local
        return mounts

    def _localize(self, value: str, mounts: dict[str, Path]) -> str:
        for path, local in mounts.items():
            if value == path or value.startswith(path + "/"):
                return str(local) + value[len(path) :]
        if "://" in value:
            host = urlsplit(value).hostname
            if host in self.hosts:
                return _with_host(value, self.hosts[host])[0]
        return value

    def process_args(
        self, pod: dict[str, Any], container: dict[str, Any]
    ) -> tuple[list[str], dict[str, str]]:
        mounts = self._mounts(pod, container)
        environment = self.rendered.environment(container)
        env = {k: self._localize(v, mounts) for k, v in environment.items()}
        base = {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "LANG": "C.UTF-8"}
        if "/tmp" in mounts:
            base["TMPDIR"] = str(mounts["/tmp"])
        argv = [
            self._localize(a, mounts)
            for a in container.get("command", []) + container.get("args", [])
        ]
        programs = {"flashsale": self.bin / "flashsale", "python": Path(sys.executable)}
        assert argv[0] in programs, f"the image's {argv[0]!r} has no local stand-in here"
        program = programs[argv[0]]
        assert program.exists(), f"{program} is not installed"
        return [str(program), *argv[1:]], {**base, **env}

    # --- running ---

    def run(self, pod: dict[str, Any], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        [container] = pod["containers"]
        argv, env = self.process_args(pod, container)
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert proc.returncode == 0, (
            f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
        return proc

    def start(self, pod: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
        [container] = pod["containers"]
        argv, env = self.process_args(pod, container)
        with log.open("wb") as out:
            return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] == "Pod":
        return obj["spec"]
    return obj["spec"]["template"]["spec"]


def _wait_for(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the web container exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {timeout}s:\n{log.read_text()[-3000:]}")


def test_what_the_manifests_run_works(
    render: RenderFn, redis_url: str, database_url: str, tmp_path: Path
) -> None:
    redis_in_cluster, redis_host = _with_host(redis_url, SERVICE_HOSTS["redis"])
    pg_in_cluster, pg_host = _with_host(database_url, SERVICE_HOSTS["postgresql"])
    hosts = {SERVICE_HOSTS["redis"]: redis_host, SERVICE_HOSTS["postgresql"]: pg_host}
    port = free_port()
    rendered = render(
        sets=[
            f"connections.redisUrl={redis_in_cluster}",
            f"connections.databaseUrl={pg_in_cluster}",
            f"containerPort={port}",
            f"config.items={ITEMS}",
            "config.webConcurrency=2",
            "config.checkoutTtl=5",
        ]
    )
    secret = next(s for s in rendered.of("Secret") if "annotations" not in s["metadata"])
    assert secret["stringData"]["REDIS_URL"] == redis_in_cluster  # the manifests name Services
    kubelet = Kubelet(rendered, {k: v for k, v in hosts.items() if v}, tmp_path)

    # 1. The migration hook, as at pre-install and again at pre-upgrade (idempotent).
    migrate = _pod(rendered.one("Job", "migrate"))
    kubelet.run(migrate)
    kubelet.run(migrate)

    # 2. The opener and its early run open the current sale and pre-load the next.
    kubelet.run(_pod(rendered.one("CronJob", "opener")))
    kubelet.run(_pod(rendered.one("CronJob", "preload")))

    # 3. The web Deployment: its probes answer, and a sale can be bought from.
    deployment = rendered.one("Deployment", "web")
    web_pod = _pod(deployment)
    [web] = web_pod["containers"]
    assert web["ports"][0]["containerPort"] == port
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "web.log"
    proc = kubelet.start(web_pod, log)
    try:
        _wait_for(base + web["startupProbe"]["httpGet"]["path"], proc, log)
        _wait_for(base + web["livenessProbe"]["httpGet"]["path"], proc, log)
        _wait_for(base + web["readinessProbe"]["httpGet"]["path"], proc, log)

        status = requests.get(f"{base}/sale/status", timeout=5)
        assert status.status_code == 200, status.text
        assert status.json()["total_items"] == ITEMS  # the ConfigMap's FLASHSALE_ITEMS arrived
        items = requests.get(f"{base}/sale/items", params={"limit": 1}, timeout=5).json()["items"]
        checkout = requests.post(
            f"{base}/checkout", params={"user_id": "kube-less", "id": items[0]["id"]}, timeout=5
        )
        assert checkout.status_code == 200, checkout.text
        purchase = requests.post(
            f"{base}/purchase", params={"code": checkout.json()["code"]}, timeout=5
        )
        assert purchase.status_code == 200, purchase.text
        metrics = requests.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert 'flashsale_checkouts_total{outcome="ok"}' in metrics.text

        # 4. The sweeper runs beside the serving pods.
        kubelet.run(_pod(rendered.one("CronJob", "sweeper")))

        # 5. `helm test`: its pod asks the Service's /readyz (Service name -> here, port -> pod's).
        test_pod = copy.deepcopy(_pod(rendered.one("Pod", "test")))  # the render is shared
        service = rendered.one("Service")
        url = test_pod["containers"][0]["args"][-1]
        service_base = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
        assert url.startswith(service_base + "/")
        test_pod["containers"][0]["args"][-1] = base + url[len(service_base) :]
        assert "200" in kubelet.run(test_pod, timeout=60).stdout

        # 6. Termination: after the preStop sleep the kubelet sends SIGTERM; the pod must be gone
        #    (gracefully: exit 0) before the rest of its grace period runs out.
        pre_stop = int(web["lifecycle"]["preStop"]["exec"]["command"][1])
        budget = web_pod["terminationGracePeriodSeconds"] - pre_stop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=budget) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
