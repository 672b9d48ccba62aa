"""The values table of helm/flashsale/README.md, made from values.yaml and its `# --` comments.

    python -m tests.chart.values_table           # print the table
    python -m tests.chart.values_table --write   # rewrite it in the README, between the markers

A key's description is the `# -- text` comment (and the `# ...` lines right after it) above the
key. A described mapping none of whose keys has a description of its own (resources,
securityContext...) is one row; other mappings are walked down to their leaves.
test_chart_objects.py checks that the README holds exactly this table.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "flashsale"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
TYPES = {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}


def descriptions(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        if m := re.match(r"^\s*# ?(.*)$", line):
            comment = m.group(1)
            if comment.startswith("-- "):
                pending = [comment[3:]]
            elif pending:
                pending.append(comment)
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):", line)
        if not m:
            if not line.strip():
                pending = []
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if pending:
            found[".".join(k for _, k in stack)] = " ".join(pending)
        pending = []
    return found


def rows(values: dict[str, Any], desc: dict[str, str], prefix: str = "") -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        nested = isinstance(value, dict) and value
        if nested and path in desc and not any(d.startswith(path + ".") for d in desc):
            out.append((path, "object", json.dumps(value), desc[path]))
        elif nested:
            if path in desc:
                out.append((path, "object", "", desc[path] + " (see below)"))
            out += rows(value, desc, path)
        else:
            kind = TYPES.get(type(value), "null")
            out.append((path, kind, json.dumps(value), desc.get(path, "")))
    return out


def table(values_file: Path = CHART / "values.yaml") -> str:
    text = values_file.read_text()
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, kind, default, description in rows(yaml.safe_load(text), descriptions(text)):
        escaped = default.replace("|", "\\|")
        shown = f"`{escaped}`" if default else ""
        lines.append(f"| `{path}` | {kind} | {shown} | {description} |")
    return "\n".join(lines) + "\n"


def readme_table(readme: Path = CHART / "README.md") -> str:
    text = readme.read_text()
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(readme: Path = CHART / "README.md", values_file: Path = CHART / "values.yaml") -> None:
    text = readme.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{table(values_file)}{END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.stdout.write(table())
