"""Fixtures of the chart tests: a real `helm` binary and the chart rendered for every values set.

helm comes from $HELM, .tools/bin (scripts/get-helm.sh puts it there) or PATH. Without it the chart
tests skip on a developer's machine and FAIL in CI (CI is set): `require` in
tests/support/tools.py. What the chart tests share besides fixtures is in tests/support/chart.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from tests.support.chart import Render, RenderFn, run_helm, template_args
from tests.support.tools import require


@pytest.fixture(scope="session")
def helm() -> str:
    return require("helm")


@pytest.fixture(scope="session")
def render(helm: str) -> RenderFn:
    """render(values=[paths], sets=["a.b=c"], kube_version=None) -> Render, cached per arguments."""
    cache: dict[tuple, Render] = {}

    def _render(
        values: Sequence[Path] = (), sets: Sequence[str] = (), kube_version: str | None = None
    ) -> Render:
        key = (tuple(values), tuple(sets), kube_version)
        if key not in cache:
            text = run_helm(helm, *template_args(values, sets, kube_version)).stdout
            objects = [o for o in yaml.safe_load_all(text) if o]
            cache[key] = Render(text, objects)
        return cache[key]

    return _render
