"""The Helm chart as the tests see it: where it is, the values sets CI renders, `helm` run the
way the tests run it, and one render's objects (`Render`), read as the kubelet reads them."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import ROOT

CHART = ROOT / "helm" / "flashsale"
RELEASE = "flashsale"
NAMESPACE = "shop"
# The Kubernetes versions the renders are validated against: an older supported one and a new one.
KUBE_VERSIONS = ("1.30", "1.34")
# Every values set CI renders: the defaults, each chart-testing file, the production and dev files.
VALUES_SETS: dict[str, list[Path]] = {
    "defaults": [],
    **{f"ci/{p.name}": [p] for p in sorted((CHART / "ci").glob("*-values.yaml"))},
    "values-prod.yaml": [CHART / "values-prod.yaml"],
    "values-dev.yaml": [CHART / "values-dev.yaml"],
}


@dataclass
class Render:
    """One `helm template` output: the text and its objects."""

    text: str
    objects: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [
            o
            for o in self.of(kind)
            if component is None
            or o["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        assert found, f"no {kind} named {name} in the render"
        return found[0]

    def data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's data, or a Secret's data and stringData, as the kubelet reads them."""
        obj = self.named(kind, name)
        if kind == "ConfigMap":
            return dict(obj.get("data") or {})
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return {**data, **(obj.get("stringData") or {})}

    def environment(
        self, container: dict[str, Any], outside: dict[str, dict[str, str]] | None = None
    ) -> dict[str, str]:
        """The container's environment as the kubelet builds it: envFrom, then env (env wins),
        references resolved against the render. `outside` stands in for Secrets made outside
        the chart ({name: {key: value}}); a reference to anything else fails the test."""
        outside = outside or {}

        def lookup(kind: str, name: str) -> dict[str, str]:
            if kind == "Secret" and name in outside:
                return outside[name]
            return self.data(kind, name)

        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    prefix = source.get("prefix", "")
                    found = lookup(kind, source[key]["name"])
                    env.update({prefix + k: v for k, v in found.items()})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            ref = var["valueFrom"]
            kind, key = (
                ("Secret", "secretKeyRef")
                if "secretKeyRef" in ref
                else ("ConfigMap", "configMapKeyRef")
            )
            env[var["name"]] = lookup(kind, ref[key]["name"])[ref[key]["key"]]
        return env


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    if check and proc.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def template_args(
    values: Sequence[Path] = (), sets: Sequence[str] = (), kube_version: str | None = None
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


RenderFn = Callable[..., Render]
