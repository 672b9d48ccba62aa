"""The offline checks CI runs on the chart: helm lint --strict, helm template for the defaults and
every values file, kubernetes-validate --strict of each render for two Kubernetes versions, yamllint
of the values files and the renders, and the schema refusing bad values."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.chart import (
    CHART,
    KUBE_VERSIONS,
    VALUES_SETS,
    RenderFn,
    run_helm,
    template_args,
)

YAMLLINT_CONFIG = Path(__file__).with_name("yamllint.yaml")
# Kinds that are not part of Kubernetes itself, so kubernetes-validate has no schema for them;
# their shape is asserted in test_chart_objects.py instead.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _console_script(name: str) -> str:
    """A tool of the test environment: beside this Python first, then PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed (it is in the test extra of pyproject.toml)"
    return found


@pytest.mark.parametrize("name", VALUES_SETS)
def test_helm_lint_strict(helm: str, name: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VALUES_SETS[name]:
        args += ["-f", str(path)]
    out = run_helm(helm, *args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUES_SETS)
def test_render_is_valid_kubernetes(
    render: RenderFn, tmp_path: Path, name: str, kube_version: str
) -> None:
    rendered = render(VALUES_SETS[name], kube_version=kube_version)
    assert rendered.objects, "the render is empty"
    path = tmp_path / "render.yaml"
    path.write_text(rendered.text)
    proc = subprocess.run(
        [_console_script("kubernetes-validate"), "--strict", "-k", kube_version, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    unknown = set(re.findall(r"Couldn't find schema for kind (\S+)", output))
    assert unknown <= CRD_KINDS, f"no schema for {unknown - CRD_KINDS}: {output}"
    passed = len(re.findall(r"passed for resource", output))
    assert passed == len([o for o in rendered.objects if o["kind"] not in CRD_KINDS]), output


def test_yamllint_values_renders_and_dev_files(render: RenderFn, tmp_path: Path) -> None:
    files = [
        CHART / "Chart.yaml",
        *sorted(CHART.glob("values*.yaml")),
        *sorted((CHART / "ci").glob("*.yaml")),
        *sorted((ROOT / "k8s-dev").glob("*.yaml")),
        ROOT / "skaffold.yaml",
    ]
    for name, values in VALUES_SETS.items():
        out = tmp_path / (name.replace("/", "-") + ".render.yaml")
        out.write_text(render(values).text)
        files.append(out)
    proc = subprocess.run(
        [_console_script("yamllint"), "--strict", "-c", str(YAMLLINT_CONFIG), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (["config.items=0"], "/config/items"),
        (["config.logLevel=LOUD"], "/config/logLevel"),
        (["config.redisShards=0"], "/config/redisShards"),
        (["config.sweepInterval=0.01"], "/config/sweepInterval"),
        (["config.sweeper=sometimes"], "/config/sweeper"),
        (["config.publicUrl=flashsale.example.com"], "/config/publicUrl"),
        (["config.clientIpHeader=X Forwarded For"], "/config/clientIpHeader"),
        (["auth.mode=oauth"], "/auth/mode"),
        (["auth.header="], "/auth/header"),
        (["waitingRoom.admitRate=0"], "/waitingRoom/admitRate"),
        (["waitingRoom.existingSecret=Not_A_Name"], "/waitingRoom/existingSecret"),
        (["cronJobs.opener.concurrencyPolicy=Sometimes"], "/cronJobs/opener/concurrencyPolicy"),
        (["cronJobs.preload.schedule=59"], "/cronJobs/preload/schedule"),
        (["cronJobs.sweeper.schedule=every minute"], "/cronJobs/sweeper/schedule"),
        (["cronJobs.sweeper.startingDeadlineSeconds=5"], "/sweeper/startingDeadlineSeconds"),
        (["cronJobs.preload.resources.requests.cpu=lots"], "/cronJobs/preload/resources"),
        (["cronJobs.housekeeping.enabled=true"], "housekeeping"),
        (["resources.limits.memory=much"], "/resources/limits/memory"),
        (["extraEnv[0].value=x"], "/extraEnv/0"),
        (["connections.redisUrl="], "/connections/redisUrl"),
        (["connections.databaseUrl=mysql://x/y"], "/connections/databaseUrl"),
        (["ingres.enabled=true"], "ingres"),
        (["image.digest=latest"], "/image/digest"),
        (["metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
    ],
)
def test_schema_refuses_bad_values(helm: str, sets: list[str], complaint: str) -> None:
    proc = run_helm(helm, *template_args(sets=sets), check=False)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert "schema" in proc.stderr and complaint in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (["auth.mode=jwt"], "auth.mode=jwt needs auth.jwt.key"),
        (["waitingRoom.enabled=true"], "waitingRoom.enabled needs waitingRoom.passKey"),
    ],
)
def test_a_needed_secret_given_neither_way_fails_the_render_saying_what_to_set(
    helm: str, sets: list[str], complaint: str
) -> None:
    proc = run_helm(helm, *template_args(sets=sets), check=False)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert complaint in proc.stderr, proc.stderr


def test_schema_takes_a_sentinel_url(render: RenderFn) -> None:
    """REDIS_URL may name Sentinels (redis+sentinel://), as the service supports."""
    url = "redis+sentinel://sentinel-0:26379/mymaster"
    secret = render(sets=[f"connections.redisUrl={url}"]).named("Secret", "flashsale")
    assert secret["stringData"]["REDIS_URL"] == url


def test_existing_secret_needs_no_urls(render: RenderFn) -> None:
    rendered = render(
        sets=[
            "connections.existingSecret=mine",
            "connections.redisUrl=",
            "connections.databaseUrl=",
        ]
    )
    assert rendered.of("Secret") == []


def test_kube_version_below_the_charts_floor_is_refused(helm: str) -> None:
    proc = run_helm(helm, *template_args(kube_version="1.26.0"), check=False)
    assert proc.returncode != 0
    assert "kubeVersion" in proc.stderr or "incompatible" in proc.stderr.lower(), proc.stderr
