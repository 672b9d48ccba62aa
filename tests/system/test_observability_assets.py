"""The monitoring assets match the service: the alert rules are well formed, load in promtool and
fire when they should, and every metric an alert or a dashboard query names is one the app
really exposes on /metrics; the ServiceMonitor scrapes the port and path that serve /metrics.

The chart is rendered with the real `helm`, promtool is Debian's `prometheus` package's: without
them these tests skip on a developer's machine and FAIL in CI (CI is set); see
tests/support/tools.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flashsale.sale.keeper import SaleKeeper
from tests.support.chart import CHART
from tests.support.tools import require

VALUES = CHART / "ci" / "observability-values.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
# Series the alerts read from outside the service: Prometheus' own `up` and kube-state-metrics.
EXTERNAL = {"up", "kube_deployment_status_replicas_available"}
# PromQL words that look like metric names but are not.
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside {...} or by/on/without (...)), strings, ranges or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function call
        if match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def test_metric_names_reads_promql_as_meant() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{route=~"/x|y", le!="1"}[5m])))'
        ' > 0.5 and on (job) max(b) == 0 or absent(up{job="flashsale"} == 1)'
        ' / sum(rate(c_total{namespace="$namespace"}[$__rate_interval]))'
    )
    assert metric_names(expr) == {"a_bucket", "b", "up", "c_total"}


# --- what the service exposes ----------------------------------------------------------------


@pytest.fixture
def exposed(keeper: SaleKeeper, client: falcon.testing.TestClient) -> set[str]:
    """Every sample name /metrics shows once a sale is open and has seen a checkout/purchase."""
    keeper.open_sale(keeper.clock())
    code = client.simulate_post("/checkout", params={"user_id": "u1", "id": "1"}).json["code"]
    assert client.simulate_post("/purchase", params={"code": code}).status_code == 200
    keeper.sweep()  # the sweeper's and sweeper's counters
    response = client.simulate_get("/metrics")
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.text):
        names.update(sample.name for sample in family.samples)
    # The contract's metrics and this service's own, with the histogram's series.
    assert {
        "flashsale_checkouts_total",
        "flashsale_purchases_total",
        "flashsale_request_duration_seconds_bucket",
        "flashsale_request_duration_seconds_count",
        "flashsale_sale_items",
        "flashsale_outbox_backlog",
        "flashsale_sale_open_seconds",
        "flashsale_sale_open",
        "flashsale_period_elapsed_seconds",
        "flashsale_redis_up",
        "flashsale_sweeper_reclaimed_total",
        "flashsale_outbox_drained_total",
    } <= names, sorted(names)
    return names


# --- the chart's render ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    helm = require("helm")
    proc = subprocess.run(
        [helm, "template", "flashsale", str(CHART), "--namespace", "shop", "-f", str(VALUES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [o for o in yaml.safe_load_all(proc.stdout) if o]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def rule_groups(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return one(rendered, "PrometheusRule")["spec"]["groups"]


def test_alert_rules_pass_promtool(rule_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = require("promtool")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
    alerts_fire_when_they_should(promtool, rule_groups, tmp_path)


def test_alert_rules_are_the_expected_ones(rule_groups: list[dict[str, Any]]) -> None:
    alerts = [rule for group in rule_groups for rule in group["rules"]]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    expected = {
        "FlashsaleSaleNotOpen",  # sale not opened within N seconds of the period start
        "FlashsaleOutboxBacklogGrowing",
        "FlashsaleHighErrorRatio",  # 5xx ratio
        "FlashsaleHighLatencyP99",
        "FlashsaleNoReadyPods",
        "FlashsaleShedding",
    }
    assert expected <= set(names)
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert DURATION.match(rule["for"]), rule
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        expr = rule["expr"]
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), rule
        # Release-scoped: each flashsale series carries the release's namespace and service.
        for selector in re.findall(r"flashsale_\w+\{([^}]*)\}", expr):
            assert 'namespace="shop"' in selector and 'service="flashsale"' in selector, rule
    # The threshold from the values file reached the rule.
    sale_not_open = next(r for r in alerts if r["alert"] == "FlashsaleSaleNotOpen")
    assert "> 90" in sale_not_open["expr"]


# promtool unit tests of the alert conditions (series as the ServiceMonitor labels them, one
# sample per 15 s). Annotations are left out of this copy: what is tested is expr, for, labels.
SERIES = 'namespace="shop", service="flashsale", pod="web-1"'


def requests_series(status: str, values: str, route: str = "/checkout") -> dict[str, str]:
    """flashsale_request_duration_seconds_count of one route and status, as an input series."""
    labels = f'{SERIES}, route="{route}", status="{status}"'
    return {"series": f"flashsale_request_duration_seconds_count{{{labels}}}", "values": values}


RULE_TESTS = [
    {  # the period began, no sale opened: fires once past the grace (90 s) + for (30 s)
        "interval": "15s",
        "input_series": [
            {"series": f"flashsale_period_elapsed_seconds{{{SERIES}}}", "values": "0+15x40"},
            {"series": f"flashsale_sale_open{{{SERIES}}}", "values": "0x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "FlashsaleSaleNotOpen", "exp_alerts": []},
            {
                "eval_time": "3m",
                "alertname": "FlashsaleSaleNotOpen",
                "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
            },
        ],
    },
    {  # the sale is open: silent
        "interval": "15s",
        "input_series": [
            {"series": f"flashsale_period_elapsed_seconds{{{SERIES}}}", "values": "0+15x40"},
            {"series": f"flashsale_sale_open{{{SERIES}}}", "values": "1x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "FlashsaleSaleNotOpen", "exp_alerts": []},
        ],
    },
    {  # a growing backlog fires after 10 minutes; a large but flat one does not
        "interval": "15s",
        "input_series": [
            {"series": f"flashsale_outbox_backlog{{{SERIES}}}", "values": "0+100x80"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "FlashsaleOutboxBacklogGrowing", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "FlashsaleOutboxBacklogGrowing",
                "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
            },
        ],
    },
    {
        "interval": "15s",
        "input_series": [{"series": f"flashsale_outbox_backlog{{{SERIES}}}", "values": "5000x80"}],
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "FlashsaleOutboxBacklogGrowing", "exp_alerts": []},
        ],
    },
    {  # 10 of 110 answers per interval are 503: above 5 % for 5 minutes
        "interval": "15s",
        "input_series": [
            requests_series("200", "0+100x60"),
            requests_series("503", "0+10x60"),
        ],
        "alert_rule_test": [
            {
                "eval_time": "12m",
                "alertname": "FlashsaleHighErrorRatio",
                "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
            },
        ],
    },
    {  # the same 503s, all of them shed: a decision, not an error (FlashsaleShedding's)
        "interval": "15s",
        "input_series": [
            requests_series("200", "0+100x60"),
            requests_series("503", "0+10x60"),
            {"series": f'flashsale_shed_total{{{SERIES}, route="/checkout"}}', "values": "0+10x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "12m", "alertname": "FlashsaleHighErrorRatio", "exp_alerts": []},
        ],
    },
    {  # 10 of 110 requests per interval shed for 15 minutes; probes are not in the ratio
        "interval": "15s",
        "input_series": [
            requests_series("200", "0+100x60"),
            requests_series("503", "0+10x60"),
            requests_series("200", "0+1000x60", route="/healthz"),
            {"series": f'flashsale_shed_total{{{SERIES}, route="/checkout"}}', "values": "0+10x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "6m", "alertname": "FlashsaleShedding", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "FlashsaleShedding",
                "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
            },
        ],
    },
    {  # a burst of shedding that ends within the 10 minutes does not fire
        "interval": "15s",
        "input_series": [
            requests_series("200", "0+100x80"),
            {
                "series": f'flashsale_shed_total{{{SERIES}, route="/checkout"}}',
                "values": "0+50x8 400x72",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "FlashsaleShedding", "exp_alerts": []},
        ],
    },
    {  # no available replica
        "interval": "15s",
        "input_series": [
            {
                "series": 'kube_deployment_status_replicas_available{namespace="shop", '
                'deployment="flashsale"}',
                "values": "2x4 0x20",
            }
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "FlashsaleNoReadyPods", "exp_alerts": []},
            {
                "eval_time": "5m",
                "alertname": "FlashsaleNoReadyPods",
                "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
            },
        ],
    },
]


def alerts_fire_when_they_should(
    promtool: str, rule_groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    bare = [
        {
            **group,
            "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]],
        }
        for group in rule_groups
    ]
    (tmp_path / "bare-rules.yaml").write_text(yaml.safe_dump({"groups": bare}))
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump(
            {"rule_files": ["bare-rules.yaml"], "evaluation_interval": "15s", "tests": RULE_TESTS}
        )
    )
    proc = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_name_only_existing_metrics(
    rule_groups: list[dict[str, Any]], exposed: set[str]
) -> None:
    named = set()
    for group in rule_groups:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names, rule
            assert names <= exposed | EXTERNAL, (rule["alert"], names - exposed - EXTERNAL)
            named |= names
    assert {"flashsale_sale_open", "flashsale_outbox_backlog"} <= named


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            queries.append(re.fullmatch(r"label_values\((.*),\s*\w+\)", query).group(1))
    return queries


def test_dashboard_names_only_existing_metrics(exposed: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    named = set()
    for query in queries:
        names = metric_names(query)
        assert names, query
        assert names <= exposed, (query, names - exposed)
        named |= names
    # The panels the issue asks for: burn-down, outcomes, latency percentiles, backlog.
    assert {
        "flashsale_sale_items",
        "flashsale_checkouts_total",
        "flashsale_request_duration_seconds_bucket",
        "flashsale_outbox_backlog",
    } <= named
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for word in ("burn-down", "checkout outcomes", "latency percentiles", "backlog"):
        assert word in titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_configmap_carries_the_dashboard_for_the_sidecar(
    rendered: list[dict[str, Any]],
) -> None:
    configmap = one(rendered, "ConfigMap", "flashsale-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Shop"}
    assert json.loads(configmap["data"]["flashsale.json"]) == json.loads(DASHBOARD.read_text())


def test_servicemonitor_scrapes_the_metrics_endpoint(
    rendered: list[dict[str, Any]], client: falcon.testing.TestClient
) -> None:
    monitor = one(rendered, "ServiceMonitor")
    service = one(rendered, "Service")
    deployment = one(rendered, "Deployment")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    target = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])[
        "targetPort"
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert target in {p["name"] for p in container["ports"]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    response = client.simulate_get(endpoint["path"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")  # the text format
