"""What the rendered objects must say: the properties the issue asks of the chart, checked on the
renders rather than trusted to the templates."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashsale.config import Settings
from flashsale.server import gunicorn_conf
from tests.chart import values_table
from tests.support import ROOT
from tests.support.chart import CHART, RELEASE, VALUES_SETS, Render, RenderFn, run_helm

WORKLOADS = ("Deployment", "CronJob", "Job", "Pod")
GUNICORN_GRACEFUL_TIMEOUT = 25  # seconds; the service's gunicorn graceful_timeout


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "Deployment": lambda o: o["spec"]["template"]["spec"],
        "CronJob": lambda o: o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        "Job": lambda o: o["spec"]["template"]["spec"],
        "Pod": lambda o: o["spec"],
    }[obj["kind"]](obj)


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"]["labels"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def workloads(rendered: Render) -> list[dict[str, Any]]:
    return [o for o in rendered.objects if o["kind"] in WORKLOADS]


def defaults(render: RenderFn) -> Render:
    return render()


def full(render: RenderFn) -> Render:
    return render([CHART / "ci" / "full-values.yaml"])


def identity(render: RenderFn) -> Render:
    return render([CHART / "ci" / "identity-values.yaml"])


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


# --- the web Deployment ---------------------------------------------------------------------------


def test_web_deployment_probes_and_graceful_rollout(render: RenderFn) -> None:
    deploy = defaults(render).one("Deployment", "web")
    spec = pod_spec(deploy)
    [web] = spec["containers"]
    assert web["command"] + web["args"] == ["flashsale", "serve"]
    # The probes have a port of their own (FLASHSALE_PROBE_PORT): a crowd on http cannot take
    # the connections they need.
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert web["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert web["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "probes", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert settings_of(defaults(render), web).probe_port == 8081
    without = pod_spec(render(sets=["probePort=0"]).one("Deployment", "web"))["containers"][0]
    assert without["livenessProbe"]["httpGet"]["port"] == "http"
    assert [p["name"] for p in without["ports"]] == ["http"]
    # A rolling update never goes below the wanted count and a leaving pod finishes its requests.
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    sleep = web["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) > 0
    assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + GUNICORN_GRACEFUL_TIMEOUT
    assert web["resources"]["requests"] and web["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", VALUES_SETS)
def test_every_pod_is_non_root_read_only_without_capabilities(render: RenderFn, name: str) -> None:
    for obj in workloads(render(VALUES_SETS[name])):
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, obj["metadata"]["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_writable_paths_are_empty_dirs_and_the_metrics_dir_is_one(render: RenderFn) -> None:
    rendered = defaults(render)
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        if obj["kind"] == "Pod":  # the helm test pod writes nothing
            continue
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert "emptyDir" in mounts["/tmp"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert "emptyDir" in mounts[env["PROMETHEUS_MULTIPROC_DIR"]], obj["metadata"]["name"]


def test_service_selects_web_pods_only(render: RenderFn) -> None:
    rendered = full(render)
    selector = rendered.one("Service")["spec"]["selector"]
    for obj in workloads(rendered):
        labels = pod_labels(obj)
        selected = all(labels.get(k) == v for k, v in selector.items())
        assert selected == (labels["app.kubernetes.io/component"] == "web"), obj["metadata"]["name"]
    deploy = rendered.one("Deployment", "web")
    assert deploy["spec"]["selector"]["matchLabels"] == selector
    service_port = rendered.one("Service")["spec"]["ports"][0]
    assert service_port["name"] == "http" and service_port["targetPort"] == "http"


def test_config_and_secret_reach_every_flashsale_container(render: RenderFn) -> None:
    rendered = defaults(render)
    configmap = rendered.one("ConfigMap")
    secret = rendered.named("Secret", configmap["metadata"]["name"])
    assert set(secret["stringData"]) == {"REDIS_URL", "DATABASE_URL"}
    assert configmap["data"]["FLASHSALE_ITEMS"] == "10000"
    assert configmap["data"]["PORT"] == "8080"
    for obj in workloads(rendered):
        if obj["kind"] in ("Pod", "Job"):  # helm test pod; the migration hook (see below)
            continue
        [container] = pod_spec(obj)["containers"]
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
        }
        assert refs == {
            "REDIS_URL": {"name": secret["metadata"]["name"], "key": "REDIS_URL"},
            "DATABASE_URL": {"name": secret["metadata"]["name"], "key": "DATABASE_URL"},
        }
        assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]


def test_config_changes_roll_the_web_pods(render: RenderFn) -> None:
    before = defaults(render).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    after = render(sets=["config.items=500"]).one("Deployment")["spec"]["template"]["metadata"]
    assert after["annotations"]["checksum/config"] != before["checksum/config"]


# --- the service's configuration -----------------------------------------------------------------

# Read by config.py but meaningless in a pod: `flashsale dev`'s state and servers, its bind host.
DEV_ONLY = {"FLASHSALE_STATE_DIR", "FLASHSALE_DEVSERVERS", "HOST"}
# Set from the release itself, not from values.
FROM_THE_RELEASE = {"FLASHSALE_RELEASE", "FLASHSALE_NAMESPACE"}
# Settings the chart's defaults deliberately set apart from config.py's own defaults.
CHART_OWN_DEFAULTS = {
    "redis_url",
    "database_url",
    "web_concurrency",
    "metrics_dir",
    "namespace",
    "probe_port",
}


def config_py_variables() -> set[str]:
    """The environment variables Settings.from_env reads: env.get("X") and _int(env, "X", ...)."""
    tree = ast.parse((ROOT / "service" / "flashsale" / "config.py").read_text())
    [from_env] = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "from_env"
    ]
    names = set()
    for call in ast.walk(from_env):
        if not isinstance(call, ast.Call) or not call.args:
            continue
        args = call.args
        if isinstance(call.func, ast.Attribute) and call.func.attr == "get":
            name = args[0]
        elif isinstance(call.func, ast.Name) and len(args) > 1:
            name = args[1]
        else:
            continue
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            names.add(name.value)
    return names


def flashsale_containers(rendered: Render) -> list[dict[str, Any]]:
    return [
        c
        for obj in workloads(rendered)
        for c in pod_spec(obj)["containers"]
        if c.get("command") == ["flashsale"]
    ]


def environment_of(rendered: Render, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment; Secrets made outside the chart are stood in for by
    placeholders ("from-<secret>-<key>")."""
    made = {s["metadata"]["name"] for s in rendered.of("Secret")}
    outside: dict[str, dict[str, str]] = {}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] not in made:
            outside.setdefault(ref["name"], {})[ref["key"]] = f"from-{ref['name']}-{ref['key']}"
    return rendered.environment(container, outside)


def settings_of(rendered: Render, container: dict[str, Any]) -> Settings:
    """What config.py makes of the container's environment."""
    return Settings.from_env(environment_of(rendered, container))


def test_every_setting_of_config_py_that_a_pod_uses_is_set_by_the_chart(render: RenderFn) -> None:
    wanted = config_py_variables() - DEV_ONLY
    assert {"FLASHSALE_ITEMS", "FLASHSALE_JWT_KEY", "WEB_CONCURRENCY"} <= wanted  # the parse works
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]+", v) for v in wanted), wanted
    rendered = identity(render)  # the secret ones appear only when their feature is on
    for container in flashsale_containers(rendered):
        set_here = set(environment_of(rendered, container))
        assert wanted - set_here == set(), container["name"]
    # ...and each is a value of values.yaml with a `# --` description naming it.
    text = "\n".join(values_table.descriptions((CHART / "values.yaml").read_text()).values())
    undocumented = {v for v in wanted - FROM_THE_RELEASE if not re.search(rf"\b{v}\b", text)}
    assert undocumented == set()


@pytest.mark.parametrize("name", VALUES_SETS)
def test_every_pods_environment_is_one_the_service_accepts(render: RenderFn, name: str) -> None:
    rendered = render(VALUES_SETS[name])
    containers = flashsale_containers(rendered)
    assert containers
    for container in containers:
        settings_of(rendered, container)  # raises ConfigError on anything config.py refuses


def test_the_charts_defaults_are_the_services_defaults(render: RenderFn) -> None:
    """values.yaml says what config.py would do anyway, but where the chart chooses otherwise."""
    rendered = defaults(render)
    for container in flashsale_containers(rendered):
        settings = settings_of(rendered, container)
        differ = {
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(settings, f.name) != getattr(Settings(), f.name)
        }
        assert differ == CHART_OWN_DEFAULTS, container["name"]


def test_identity_waiting_room_and_shards_reach_the_service(render: RenderFn) -> None:
    rendered = identity(render)
    [web] = pod_spec(rendered.one("Deployment", "web"))["containers"]
    settings = settings_of(rendered, web)
    assert settings.auth == "jwt"
    assert settings.jwt_key.startswith("-----BEGIN PUBLIC KEY-----\n")  # a PEM keeps its lines
    assert (settings.jwt_audience, settings.jwt_issuer) == ("flashsale", "https://id.example.com/")
    assert settings.waiting_room is True
    assert settings.pass_key == "from-shop-flashsale-pass-pass-key"
    assert (settings.admit_rate, settings.queue_opens_before, settings.pass_ttl) == (250, 600, 300)
    assert (settings.redis_cluster, settings.redis_shards) == (True, 4)
    assert settings.public_url == "https://flashsale.example.com"
    assert (settings.max_inflight, settings.access_log) == (200, False)


def test_jwt_and_pass_keys_come_from_secrets_never_from_the_configmap(render: RenderFn) -> None:
    rendered = identity(render)
    configmap = rendered.one("ConfigMap")["data"]
    assert not {"FLASHSALE_JWT_KEY", "FLASHSALE_PASS_KEY"} & set(configmap)
    own = rendered.named("Secret", rendered.one("Deployment")["metadata"]["name"])
    assert "FLASHSALE_JWT_KEY" in own["stringData"]  # given inline: the chart's own Secret
    assert "FLASHSALE_PASS_KEY" not in own["stringData"]  # from the existing Secret
    for container in flashsale_containers(rendered):
        refs = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
        assert "secretKeyRef" in refs["FLASHSALE_JWT_KEY"]
        assert refs["FLASHSALE_PASS_KEY"]["secretKeyRef"] == {
            "name": "shop-flashsale-pass",
            "key": "pass-key",
        }
    # The other way round: the JWT key from an existing Secret, the pass key given inline.
    swapped = render(
        [CHART / "ci" / "identity-values.yaml"],
        sets=[
            "auth.jwt.existingSecret=shop-jwt",
            "auth.jwt.existingSecretKey=public.pem",
            "waitingRoom.existingSecret=",
            "waitingRoom.passKey=0123456789abcdef",
        ],
    )
    own = swapped.named("Secret", swapped.one("Deployment")["metadata"]["name"])["stringData"]
    assert own["FLASHSALE_PASS_KEY"] == "0123456789abcdef" and "FLASHSALE_JWT_KEY" not in own
    [web] = pod_spec(swapped.one("Deployment"))["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in web["env"] if "valueFrom" in e}
    assert refs["FLASHSALE_JWT_KEY"] == {"name": "shop-jwt", "key": "public.pem"}
    # With identity and the waiting room off, neither key reaches a pod at all.
    for container in flashsale_containers(defaults(render)):
        names = {e["name"] for e in container["env"]}
        assert not {"FLASHSALE_JWT_KEY", "FLASHSALE_PASS_KEY"} & names


def test_switches_render_as_on_and_off(render: RenderFn) -> None:
    rendered = render(sets=["config.sweeper=false", "config.redisCluster=true"])
    data = rendered.one("ConfigMap")["data"]
    assert (data["FLASHSALE_SWEEPER"], data["FLASHSALE_REDIS_CLUSTER"]) == ("off", "on")
    [web] = pod_spec(rendered.one("Deployment"))["containers"]
    settings = settings_of(rendered, web)
    assert (settings.sweeper, settings.redis_cluster) == (False, True)


def test_large_integers_render_as_integers(render: RenderFn, tmp_path: Path) -> None:
    """A values file's 1000000 is a float to Helm, printed 1e+06 unless the chart says int."""
    big = tmp_path / "big-values.yaml"
    big.write_text("config:\n  items: 1000000\n  pgStatementTimeoutMs: 3600000\n")
    data = render([big]).one("ConfigMap")["data"]
    assert (data["FLASHSALE_ITEMS"], data["FLASHSALE_PG_STATEMENT_TIMEOUT_MS"]) == (
        "1000000",
        "3600000",
    )


# --- CronJobs and the migration hook ---------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "schedule", "args"),
    [
        ("opener", "0 * * * *", ["open-sale", "--next"]),
        ("preload", "59 * * * *", ["open-sale", "--next"]),
        ("sweeper", "* * * * *", ["sweep"]),
    ],
)
def test_cronjobs(render: RenderFn, component: str, schedule: str, args: list[str]) -> None:
    cronjob = defaults(render).one("CronJob", component)
    spec = cronjob["spec"]
    assert spec["schedule"] == schedule
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    pod = pod_spec(cronjob)
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["command"] + container["args"] == ["flashsale", *args]
    assert len(cronjob["metadata"]["name"]) <= 52  # the Jobs it makes get an 11-character suffix


# Each CronJob's own settings and where the render puts them.
CRONJOB_KNOBS = {
    "schedule": ("*/7 * * * *", ("spec", "schedule")),
    "timeZone": ("Europe/Zurich", ("spec", "timeZone")),
    "concurrencyPolicy": ("Replace", ("spec", "concurrencyPolicy")),
    "startingDeadlineSeconds": (123, ("spec", "startingDeadlineSeconds")),
    "successfulJobsHistoryLimit": (7, ("spec", "successfulJobsHistoryLimit")),
    "failedJobsHistoryLimit": (8, ("spec", "failedJobsHistoryLimit")),
    "suspend": (True, ("spec", "suspend")),
    "backoffLimit": (5, ("spec", "jobTemplate", "spec", "backoffLimit")),
    "activeDeadlineSeconds": (99, ("spec", "jobTemplate", "spec", "activeDeadlineSeconds")),
}


def _at(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@pytest.mark.parametrize("component", ["opener", "preload", "sweeper"])
def test_each_cronjob_owns_all_of_its_settings(render: RenderFn, component: str) -> None:
    """Every knob of cronJobs.<component> reaches that CronJob, and only that one."""
    sets = [f"cronJobs.{component}.{knob}={value}" for knob, (value, _) in CRONJOB_KNOBS.items()]
    sets.append(f"cronJobs.{component}.resources.requests.cpu=321m")
    rendered = render(sets=sets)
    others = {"opener", "preload", "sweeper"} - {component}
    before = defaults(render)
    for knob, (value, path) in CRONJOB_KNOBS.items():
        assert _at(rendered.one("CronJob", component), path) == value, knob
        for other in others:
            assert _at(rendered.one("CronJob", other), path) == _at(
                before.one("CronJob", other), path
            ), (knob, other)
    [container] = pod_spec(rendered.one("CronJob", component))["containers"]
    assert container["resources"]["requests"]["cpu"] == "321m"
    for other in others:
        [container] = pod_spec(rendered.one("CronJob", other))["containers"]
        assert container["resources"]["requests"]["cpu"] != "321m"


def test_cronjobs_switch_off_one_by_one(render: RenderFn) -> None:
    rendered = render(sets=["cronJobs.preload.enabled=false"])
    labels = [o["metadata"]["labels"] for o in rendered.of("CronJob")]
    components = {label["app.kubernetes.io/component"] for label in labels}
    assert components == {"opener", "sweeper"}


def test_migration_is_a_pre_install_and_pre_upgrade_hook_that_needs_nothing_of_the_release(
    render: RenderFn,
) -> None:
    rendered = defaults(render)
    job = rendered.one("Job", "migrate")
    hook_secret = rendered.one("Secret", "migrate")
    for obj in (job, hook_secret):
        assert obj["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        policy = obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        assert "before-hook-creation" in policy
    weights = [int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in (hook_secret, job)]
    assert weights[0] < weights[1]  # the Secret exists before the Job starts
    spec = pod_spec(job)
    [container] = spec["containers"]
    assert container["command"] + container["args"] == ["flashsale", "migrate"]
    # At pre-install the release's ConfigMap, Secret and ServiceAccount do not exist yet.
    assert "envFrom" not in container
    assert "serviceAccountName" not in spec
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs == {hook_secret["metadata"]["name"]}
    [main_secret] = [s for s in rendered.of("Secret") if "annotations" not in s["metadata"]]
    assert hook_secret["stringData"] == main_secret["stringData"]
    # ...but it runs with the same settings the ConfigMap gives everyone else.
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert rendered.one("ConfigMap")["data"].items() <= env.items()


def test_migration_hook_gets_the_secrets_the_configuration_needs(render: RenderFn) -> None:
    """The hook runs the release's whole configuration, so it gets the JWT key too: from its own
    copy of the chart's Secret when given inline, from the existing Secret otherwise."""
    rendered = identity(render)
    hook_secret = rendered.one("Secret", "migrate")
    [main_secret] = [s for s in rendered.of("Secret") if "annotations" not in s["metadata"]]
    assert hook_secret["stringData"] == main_secret["stringData"]
    [container] = pod_spec(rendered.one("Job", "migrate"))["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    hook = hook_secret["metadata"]["name"]
    assert refs["FLASHSALE_JWT_KEY"] == {"name": hook, "key": "FLASHSALE_JWT_KEY"}
    assert refs["FLASHSALE_PASS_KEY"] == {"name": "shop-flashsale-pass", "key": "pass-key"}


def test_existing_secret_is_used_everywhere_and_no_secret_is_made(render: RenderFn) -> None:
    rendered = render([CHART / "ci" / "existing-secret-values.yaml"])
    assert rendered.of("Secret") == []
    for obj in workloads(rendered):
        for container in pod_spec(obj)["containers"]:
            for env in container.get("env", []):
                if "valueFrom" in env:
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == "shop-flashsale-connections"
                    assert ref["key"] in ("redis-url", "database-url")
    assert rendered.of("PodDisruptionBudget") == []  # one pod: a PDB would block node drains
    assert rendered.of("ServiceAccount") == []
    assert pod_spec(rendered.one("Job", "migrate"))["serviceAccountName"] == "shop-migrations"
    assert pod_spec(rendered.one("Deployment"))["serviceAccountName"] == "shop-workloads"


# --- optional objects ---------------------------------------------------------------------------


def test_optional_objects_are_off_by_default(render: RenderFn) -> None:
    kinds = {o["kind"] for o in defaults(render).objects}
    for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "Role"):
        assert kind not in kinds


def test_ci_values_files_between_them_render_every_template(render: RenderFn) -> None:
    templates = {str(p.relative_to(CHART)) for p in (CHART / "templates").rglob("*.yaml")}
    rendered_sources: set[str] = set()
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        rendered_sources |= set(
            re.findall(r"^# Source: flashsale/(\S+)$", render([path]).text, re.M)
        )
    assert templates - rendered_sources == set(), "templates no ci/*-values.yaml switches on"


def test_hpa_owns_the_replica_count(render: RenderFn) -> None:
    rendered = full(render)
    hpa = rendered.one("HorizontalPodAutoscaler")
    deploy = rendered.one("Deployment")
    assert "replicas" not in deploy["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deploy["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]


def test_servicemonitor_scrapes_metrics_on_the_http_port_of_the_service(render: RenderFn) -> None:
    rendered = full(render)
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}


def test_ingress_routes_to_the_service(render: RenderFn) -> None:
    rendered = full(render)
    ingress = rendered.one("Ingress")
    service = rendered.one("Service")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends and all(
        b == {"name": service["metadata"]["name"], "port": {"name": "http"}} for b in backends
    )
    assert "host" not in ingress["spec"]["rules"][1]  # an empty host matches every host


def test_prod_trusts_the_client_address_header_only_behind_its_ingress(render: RenderFn) -> None:
    """values-prod.yaml sets X-Forwarded-For as the client address together with an ingress-nginx
    Ingress that limits connections and requests per client, and a NetworkPolicy that admits
    nothing but the ingress controller's (and monitoring's) namespace to the pods."""
    rendered = render([CHART / "values-prod.yaml"])
    assert rendered.one("ConfigMap")["data"]["FLASHSALE_CLIENT_IP_HEADER"] == "X-Forwarded-For"
    ingress = rendered.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-request-buffering", "limit-connections", "limit-rps"):
        assert f"nginx.ingress.kubernetes.io/{name}" in annotations, name
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    sources = rendered.one("NetworkPolicy")["spec"]["ingress"][0]["from"]
    namespaces = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources
    }
    assert namespaces == {"ingress-nginx", "monitoring"}


def test_documented_upstream_keepalive_is_shorter_than_the_pods() -> None:
    """An ingress must close an idle upstream connection before the pod does, or it may send a
    request on a connection the pod is closing."""
    prod = (CHART / "values-prod.yaml").read_text()
    [upstream] = re.findall(r'upstream-keepalive-timeout: "(\d+)"', prod)
    pod = gunicorn_conf.keepalive
    assert int(upstream) < pod
    assert f"gunicorn: {pod} s" in prod


def test_networkpolicy_admits_only_the_http_port_and_allows_dns_when_egress_is_restricted(
    render: RenderFn,
) -> None:
    policy = full(render).one("NetworkPolicy")["spec"]
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert {"port": 53, "protocol": "UDP"} in policy["egress"][0]["ports"]
    open_egress = render(sets=["networkPolicy.enabled=true"]).one("NetworkPolicy")["spec"]
    assert open_egress["policyTypes"] == ["Ingress"] and "from" not in open_egress["ingress"][0]


def test_rbac_lets_the_service_account_run_flashsale_kube(render: RenderFn) -> None:
    rendered = full(render)
    role, binding = rendered.one("Role"), rendered.one("RoleBinding")
    rules = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert {"list"} <= rules[("", "pods")]
    assert {"list"} <= rules[("batch", "cronjobs")]
    assert {"create", "get", "list"} <= rules[("batch", "jobs")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "flashsale-ops", "namespace": "shop"}
    ]
    assert pod_spec(rendered.one("Deployment"))["automountServiceAccountToken"] is True


def test_helm_test_pod_checks_readyz_through_the_service(render: RenderFn) -> None:
    rendered = defaults(render)
    pod = rendered.one("Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    service = rendered.one("Service")
    url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz"
    assert container["args"][-1] == url


def test_names_fit_and_follow_the_release(render: RenderFn) -> None:
    for name, values in VALUES_SETS.items():
        for obj in render(values).objects:
            assert len(obj["metadata"]["name"]) <= 63, (name, obj["metadata"]["name"])
    assert defaults(render).one("Deployment")["metadata"]["name"] == RELEASE  # contains "flashsale"


def test_every_rendered_command_is_a_flashsale_subcommand(render: RenderFn) -> None:
    """What the manifests run parses with the real CLI (no drift between chart and CLI)."""
    commands = {
        tuple(c["args"])
        for obj in workloads(defaults(render))
        for c in pod_spec(obj)["containers"]
        if c.get("command") == ["flashsale"]
    }
    assert commands == {("serve",), ("migrate",), ("open-sale", "--next"), ("sweep",)}
    for args in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "flashsale", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"flashsale {' '.join(args)}: {proc.stderr}"


def test_notes_render_for_install(helm: str) -> None:
    proc = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", "shop", "--dry-run=client")
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "flashsale kube open-now --release flashsale -n shop" in notes
    assert "WARNING: connections point at the dev stack" in notes
    prod = run_helm(
        helm,
        "install",
        RELEASE,
        str(CHART),
        "-n",
        "shop",
        "--dry-run=client",
        "-f",
        str(CHART / "values-prod.yaml"),
    ).stdout.split("NOTES:", 1)[1]
    assert "https://flashsale.example.com/" in prod and "WARNING" not in prod


def test_notes_say_expired_reservations_are_free_at_once_and_warn_when_nothing_sweeps(
    helm: str,
) -> None:
    def notes(*sets: str) -> str:
        args = ["install", RELEASE, str(CHART), "-n", "shop", "--dry-run=client"]
        for item in sets:
            args += ["--set", item]
        return run_helm(helm, *args).stdout.split("NOTES:", 1)[1]

    default = notes()
    assert "free to the next checkout at once" in default
    assert "only when" not in default and "sweeper" not in default.lower()
    assert "WARNING: neither" not in notes("cronJobs.sweeper.enabled=false")
    assert "WARNING: neither" not in notes("config.sweeper=false")
    assert "WARNING: neither" in notes("config.sweeper=false", "cronJobs.sweeper.enabled=false")


def test_named_templates_hold_no_object_bodies() -> None:
    """Objects live in their own templates; _helpers.tpl holds names and labels only."""
    for path in (CHART / "templates").glob("_*.tpl"):
        assert not re.search(r"^\s*(apiVersion|kind):", path.read_text(), re.M), path.name
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    defined = set(re.findall(r'define "flashsale\.(\w+)"', helpers))
    assert all(re.search(r"(?i)name|label|chart|image", d) for d in defined), defined


# --- documentation and the files around the chart ------------------------------------------------


def test_readme_values_table_is_current() -> None:
    assert values_table.readme_table() == values_table.table(), (
        "the chart README's values table is stale: python -m tests.chart.values_table --write"
    )
    documented = re.findall(r"^\| `([^`]+)` \|", values_table.readme_table(), re.M)
    undescribed = [row for row in values_table.readme_table().splitlines() if row.endswith("|  |")]
    assert len(documented) > 50 and undescribed == [], "every value has a # -- description"


def test_dev_stack_secret_matches_the_charts_default_connections() -> None:
    dev = yaml.safe_load((ROOT / "k8s-dev" / "secret.yaml").read_text())["stringData"]
    conn = values()["connections"]
    assert (dev["REDIS_URL"], dev["DATABASE_URL"]) == (conn["redisUrl"], conn["databaseUrl"])
    assert (
        f"postgresql://{dev['POSTGRES_USER']}:{dev['POSTGRES_PASSWORD']}@flashsale-postgresql:5432/"
        f"{dev['POSTGRES_DB']}" == dev["DATABASE_URL"]
    )
    kustomization = yaml.safe_load((ROOT / "k8s-dev" / "kustomization.yaml").read_text())
    services = {
        doc["metadata"]["name"]
        for res in kustomization["resources"]
        for doc in yaml.safe_load_all((ROOT / "k8s-dev" / res).read_text())
        if doc and doc["kind"] == "Service"
    }
    assert services == {"flashsale-redis", "flashsale-postgresql"}


def test_dev_redis_persists_with_aof() -> None:
    docs = list(yaml.safe_load_all((ROOT / "k8s-dev" / "redis.yaml").read_text()))
    [sts] = [d for d in docs if d["kind"] == "StatefulSet"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert sts["spec"]["volumeClaimTemplates"]


def test_kind_config_maps_the_ingress_ports() -> None:
    config = yaml.safe_load((ROOT / "k8s-dev" / "kind-cluster.yaml").read_text())
    [node] = config["nodes"]
    assert {(m["containerPort"], m["hostPort"]) for m in node["extraPortMappings"]} == {
        (80, 80),
        (443, 443),
    }
    assert "ingress-ready=true" in node["kubeadmConfigPatches"][0]


def test_skaffold_builds_the_image_and_deploys_the_chart_with_dev_values() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    [artifact] = config["build"]["artifacts"]
    assert artifact["docker"]["dockerfile"] == "Dockerfile"
    [release] = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"] / "Chart.yaml").exists()
    assert release["valuesFiles"] == ["helm/flashsale/values-dev.yaml"]
    image = artifact["image"]
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{image}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{image}}}}}",
    }
    [forward] = config["portForward"]
    assert (forward["resourceType"], forward["resourceName"]) == ("service", release["name"])


def _final_stage(dockerfile: str) -> str:
    return re.split(r"^FROM .*$", dockerfile, flags=re.M)[-1]


def test_dockerfile_final_stage_is_small_non_root_and_serves() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2, "multi-stage"
    final = _final_stage(dockerfile)
    assert "COPY --from=builder" in final
    assert not re.search(r"\b(gcc|build-essential|pip install|apt-get install)\b", final)
    [user] = re.findall(r"^USER (\S+)$", final, re.M)
    uid = int(user.split(":")[0])
    assert uid != 0
    assert values()["podSecurityContext"]["runAsUser"] == uid
    assert re.search(r'^ENTRYPOINT \["flashsale"\]$', final, re.M)
    assert re.search(r'^CMD \["serve"\]$', final, re.M)
    env = dict(re.findall(r"(PROMETHEUS_MULTIPROC_DIR)=(\S+)", final))
    assert env["PROMETHEUS_MULTIPROC_DIR"] == values()["metrics"]["multiprocDir"]


def test_dockerignore_lets_in_what_the_build_copies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", "an allowlist: nothing enters the build context unless named"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        src.rstrip("/")
        for args in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M)
        for src in args.split()
    }
    assert copied <= allowed
    # hatchling reads the README named by pyproject.toml to build the package
    assert {"pyproject.toml", "README.md", "service", "migrations"} <= allowed


def test_scripts_are_valid_bash() -> None:
    for script in (ROOT / "scripts" / "get-helm.sh", ROOT / "k8s-dev" / "stack.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_values_schema_is_json_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(values()) <= set(schema["properties"])
