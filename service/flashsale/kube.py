"""`flashsale kube`: operator commands for a release of the Helm chart on a cluster.

- `flashsale kube status`: the release's pods, CronJobs and recent Jobs; exits 1 when no web pod
  is ready.
- `flashsale kube open-now`: run the opener CronJob now, as `kubectl create job --from=cronjob/...`
  does (opens the current sale and pre-loads the next; idempotent). `--wait` waits for the outcome.
- `flashsale kube sweep-now`: the same for the sweeper CronJob.

Objects are found by the chart's labels (`app.kubernetes.io/instance=<release>`,
`app.kubernetes.io/part-of=flashsale`, `app.kubernetes.io/component=<opener|sweeper|web|...>`),
so nameOverride / fullnameOverride do not matter. The API client comes from the pod's
ServiceAccount when run inside a cluster (the chart's `rbac.create` grants what these commands
need), else from the kubeconfig (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`). The `kubernetes`
package is imported only inside the handlers, so `flashsale --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from flashsale.config import Settings

PART_OF = "app.kubernetes.io/part-of=flashsale"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_RELEASE = "flashsale"


class KubeError(Exception):
    """A problem worth one line to the operator (no such CronJob, API refused, no config)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `flashsale kube <status|open-now|sweep-now>` to the CLI's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-n",
        "--namespace",
        help="namespace of the release (default: $FLASHSALE_NAMESPACE, the pod's own namespace "
        "in a cluster, the kubeconfig context's namespace, else 'default')",
    )
    common.add_argument(
        "--release",
        help=f"Helm release name (default: $FLASHSALE_RELEASE, else {DEFAULT_RELEASE!r})",
    )
    common.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument("--context", help="kubeconfig context (default: the current one)")

    kube = sub.add_parser(
        "kube", help="operate a release on Kubernetes (status, run the opener now)"
    )
    ksub = kube.add_subparsers(dest="kube_command", required=True, metavar="KUBE_COMMAND")

    status = ksub.add_parser(
        "status", parents=[common], help="the release's pods, CronJobs and recent Jobs"
    )
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    status.add_argument("--jobs", type=int, default=10, help="how many recent Jobs to list")
    status.set_defaults(handler=status_command)

    for name, component, what in (
        (
            "open-now",
            "opener",
            "run the opener CronJob now (open the current sale, pre-load the next)",
        ),
        ("sweep-now", "sweeper", "run the sweeper CronJob now (expired reservations, outboxes)"),
    ):
        p = ksub.add_parser(name, parents=[common], help=what)
        p.add_argument("--wait", action="store_true", help="wait for the Job to succeed or fail")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (300)")
        p.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
        p.set_defaults(handler=partial(trigger_command, component=component))


# --- connection -------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the commands act: an API client, a namespace and a release."""

    api: Any  # kubernetes.client.ApiClient
    namespace: str
    release: str

    def selector(self, component: str | None = None) -> str:
        parts = [f"app.kubernetes.io/instance={self.release}", PART_OF]
        if component:
            parts.append(f"app.kubernetes.io/component={component}")
        return ",".join(parts)


def connect(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    sa_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Target:
    """In-cluster config inside a pod (unless --kubeconfig/--context are given), else kubeconfig."""
    from kubernetes import client, config

    env = os.environ if environ is None else environ  # the Kubernetes client's own variables
    settings = Settings.from_env(dict(env))
    namespace = args.namespace or settings.namespace
    release = args.release or settings.release or DEFAULT_RELEASE
    in_cluster = (
        not args.kubeconfig and not args.context and bool(env.get("KUBERNETES_SERVICE_HOST"))
    )
    try:
        if in_cluster:
            cfg = client.Configuration()
            config.incluster_config.InClusterConfigLoader(
                token_filename=str(sa_dir / "token"),
                cert_filename=str(sa_dir / "ca.crt"),
                environ=env,
            ).load_and_set(cfg)
            ns_file = sa_dir / "namespace"
            if not namespace and ns_file.exists():
                namespace = ns_file.read_text().strip()
            api = client.ApiClient(cfg)
        else:
            kubeconfig = args.kubeconfig or env.get("KUBECONFIG") or None
            api = config.new_client_from_config(config_file=kubeconfig, context=args.context)
            if not namespace:
                contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
                chosen = next((c for c in contexts if c["name"] == args.context), active)
                namespace = (chosen or {}).get("context", {}).get("namespace", "")
    except config.ConfigException as exc:
        raise KubeError(f"no usable Kubernetes configuration: {exc}") from None
    return Target(api=api, namespace=namespace or "default", release=release)


def _run(args: argparse.Namespace, body: Callable[[Target], int]) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        target = connect(args)
        try:
            return body(target)
        finally:
            target.api.close()
    except ApiException as exc:
        print(
            f"flashsale kube: the API answered {exc.status} {exc.reason}: {_api_message(exc)}",
            file=sys.stderr,
        )
        return 1
    except KubeError as exc:
        print(f"flashsale kube: {exc}", file=sys.stderr)
        return 1


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message", "") if exc.body else ""
    except (ValueError, AttributeError):
        return str(exc.body)[:200]


# --- open-now / sweep-now ---------------------------------------------------------------------


def trigger_command(args: argparse.Namespace, component: str) -> int:
    return _run(args, partial(_trigger, args=args, component=component))


def _trigger(target: Target, args: argparse.Namespace, component: str) -> int:
    job = trigger_cronjob(target, component)
    name = job["metadata"]["name"]
    print(f"job/{name} created in namespace {target.namespace} from the {component} CronJob")
    if not args.wait:
        return 0
    outcome = wait_for_job(target, name, timeout=args.timeout, interval=args.interval)
    print(f"job/{name} {outcome}")
    return 0 if outcome == "succeeded" else 1


def trigger_cronjob(target: Target, component: str, now: float | None = None) -> dict[str, Any]:
    """Create a Job from the release's CronJob of a component, like `kubectl create job --from`."""
    from kubernetes import client

    batch = client.BatchV1Api(target.api)
    found = batch.list_namespaced_cron_job(
        target.namespace, label_selector=target.selector(component)
    ).items
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise KubeError(
            f"{what} {component} CronJob for release {target.release!r} in namespace "
            f"{target.namespace!r} (selector {target.selector(component)})"
        )
    cronjob = found[0]
    template = target.api.sanitize_for_serialization(cronjob.spec.job_template)
    meta = template.get("metadata") or {}
    stamp = format(int(time.time() if now is None else now), "x")
    suffix = f"-now-{stamp}"
    name = cronjob.metadata.name[: 63 - len(suffix)].rstrip("-") + suffix
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": meta.get("labels") or {},
            "annotations": {
                **(meta.get("annotations") or {}),
                "cronjob.kubernetes.io/instantiate": "manual",
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob.metadata.name,
                    "uid": cronjob.metadata.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    created = batch.create_namespaced_job(target.namespace, body)
    return target.api.sanitize_for_serialization(created)


def wait_for_job(target: Target, name: str, timeout: float, interval: float = 2.0) -> str:
    """'succeeded', 'failed' or 'timed out' once the Job says so (or the time is up)."""
    from kubernetes import client

    batch = client.BatchV1Api(target.api)
    deadline = time.monotonic() + timeout
    while True:
        status = batch.read_namespaced_job(name, target.namespace).status
        conditions = {c.type: c.status for c in (status.conditions or [])}
        if conditions.get("Complete") == "True" or (status.succeeded or 0) > 0:
            return "succeeded"
        if conditions.get("Failed") == "True":
            return "failed"
        if time.monotonic() >= deadline:
            return "timed out"
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


# --- status -----------------------------------------------------------------------------------


def status_command(args: argparse.Namespace) -> int:
    return _run(args, partial(_status, args=args))


def _status(target: Target, args: argparse.Namespace) -> int:
    report = collect_status(target, jobs=args.jobs)
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(format_status(report))
    return 0 if report["web_ready"] > 0 else 1


def collect_status(target: Target, jobs: int = 10) -> dict[str, Any]:
    from kubernetes import client

    core, batch = client.CoreV1Api(target.api), client.BatchV1Api(target.api)
    selector = target.selector()
    pods = [
        _pod_row(p)
        for p in core.list_namespaced_pod(target.namespace, label_selector=selector).items
    ]
    cronjobs = [
        _cronjob_row(c)
        for c in batch.list_namespaced_cron_job(target.namespace, label_selector=selector).items
    ]
    job_items = batch.list_namespaced_job(target.namespace, label_selector=selector).items
    job_items.sort(
        key=lambda j: j.status.start_time or datetime.min.replace(tzinfo=UTC), reverse=True
    )
    web = [p for p in pods if p["component"] == "web"]
    return {
        "namespace": target.namespace,
        "release": target.release,
        "web_ready": sum(1 for p in web if p["ready"]),
        "web_pods": len(web),
        "pods": pods,
        "cronjobs": sorted(cronjobs, key=lambda c: c["name"]),
        "jobs": [_job_row(j) for j in job_items[:jobs]],
    }


def _component(obj: Any) -> str:
    return (obj.metadata.labels or {}).get("app.kubernetes.io/component", "")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _pod_row(pod: Any) -> dict[str, Any]:
    statuses = pod.status.container_statuses or []
    ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    return {
        "name": pod.metadata.name,
        "component": _component(pod),
        "phase": pod.status.phase,
        "ready": ready,
        "containers_ready": f"{sum(1 for c in statuses if c.ready)}/{len(statuses)}",
        "restarts": sum(c.restart_count or 0 for c in statuses),
        "started": _iso(pod.status.start_time),
    }


def _cronjob_row(cj: Any) -> dict[str, Any]:
    return {
        "name": cj.metadata.name,
        "component": _component(cj),
        "schedule": cj.spec.schedule,
        "time_zone": cj.spec.time_zone,
        "suspend": bool(cj.spec.suspend),
        "active": len(cj.status.active or []) if cj.status else 0,
        "last_schedule": _iso(cj.status.last_schedule_time) if cj.status else None,
        "last_success": _iso(cj.status.last_successful_time) if cj.status else None,
    }


def _job_row(job: Any) -> dict[str, Any]:
    s = job.status
    conditions = {c.type: c.status for c in (s.conditions or [])}
    if conditions.get("Complete") == "True":
        state = "succeeded"
    elif conditions.get("Failed") == "True":
        state = "failed"
    else:
        state = "running" if (s.active or 0) else "pending"
    return {
        "name": job.metadata.name,
        "component": _component(job),
        "state": state,
        "started": _iso(s.start_time),
        "completed": _iso(s.completion_time),
    }


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [[h for h, _ in columns]] + [
        ["-" if r.get(k) in (None, "") else str(r[k]) for _, k in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def format_status(report: dict[str, Any]) -> str:
    parts = [
        f"release {report['release']} in namespace {report['namespace']}: "
        f"{report['web_ready']}/{report['web_pods']} web pods ready",
        "",
        "PODS",
        _table(
            report["pods"],
            [
                ("NAME", "name"),
                ("COMPONENT", "component"),
                ("PHASE", "phase"),
                ("READY", "containers_ready"),
                ("RESTARTS", "restarts"),
                ("STARTED", "started"),
            ],
        ),
        "",
        "CRONJOBS",
        _table(
            report["cronjobs"],
            [
                ("NAME", "name"),
                ("SCHEDULE", "schedule"),
                ("TZ", "time_zone"),
                ("SUSPEND", "suspend"),
                ("ACTIVE", "active"),
                ("LAST SCHEDULE", "last_schedule"),
                ("LAST SUCCESS", "last_success"),
            ],
        ),
        "",
        "JOBS",
        _table(
            report["jobs"],
            [
                ("NAME", "name"),
                ("COMPONENT", "component"),
                ("STATE", "state"),
                ("STARTED", "started"),
                ("COMPLETED", "completed"),
            ],
        ),
    ]
    return "\n".join(parts)
