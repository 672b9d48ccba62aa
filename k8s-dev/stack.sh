#!/usr/bin/env bash
# The flashsale dev stack on kind (default) or minikube, and the end-to-end check of the chart.
#
#   k8s-dev/stack.sh up        cluster (kind: k8s-dev/kind-cluster.yaml) + ingress-nginx + Redis/PostgreSQL
#   k8s-dev/stack.sh image     build the image and load it into the cluster
#   k8s-dev/stack.sh install   helm upgrade --install the chart with values-dev.yaml (--wait)
#   k8s-dev/stack.sh e2e       all of the above, then prove it on the cluster (see e2e below)
#   k8s-dev/stack.sh down      uninstall the release and the dev dependencies (keeps the cluster)
#   k8s-dev/stack.sh destroy   delete the kind cluster / minikube profile
#
# Environment: CLUSTER=kind|minikube, NAMESPACE (flashsale), RELEASE (flashsale), IMAGE (flashsale:dev),
# INGRESS=nginx|none. Needs docker, kubectl, helm (scripts/get-helm.sh) and kind or minikube.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER:-kind}"
NAME="${CLUSTER_NAME:-flashsale}"
NAMESPACE="${NAMESPACE:-flashsale}"
RELEASE="${RELEASE:-flashsale}"
IMAGE="${IMAGE:-flashsale:dev}"
INGRESS="${INGRESS:-nginx}"
INGRESS_NGINX_VERSION="${INGRESS_NGINX_VERSION:-controller-v1.11.3}"
PATH="$root/.tools/bin:$PATH"

log() { printf '\n==> %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null || { echo "stack.sh: '$1' is needed${2:+ ($2)}" >&2; exit 1; }; }
k() { kubectl -n "$NAMESPACE" "$@"; }

cluster_up() {
  case "$CLUSTER" in
    kind)
      need kind
      kind get clusters 2>/dev/null | grep -qx "$NAME" ||
        kind create cluster --name "$NAME" --config "$root/k8s-dev/kind-cluster.yaml"
      kubectl config use-context "kind-$NAME" >/dev/null
      if [[ "$INGRESS" == nginx ]]; then
        log "ingress-nginx ($INGRESS_NGINX_VERSION)"
        kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml"
        kubectl -n ingress-nginx rollout status deploy/ingress-nginx-controller --timeout=300s
      fi
      ;;
    minikube)
      need minikube
      minikube -p "$NAME" status >/dev/null 2>&1 || minikube start -p "$NAME"
      kubectl config use-context "$NAME" >/dev/null
      [[ "$INGRESS" == nginx ]] && minikube -p "$NAME" addons enable ingress
      ;;
    *) echo "stack.sh: CLUSTER must be kind or minikube" >&2; exit 2 ;;
  esac
}

deps_up() {
  log "Redis and PostgreSQL in namespace $NAMESPACE"
  kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
  k apply -k "$root/k8s-dev"
  k rollout status statefulset/flashsale-redis --timeout=300s
  k rollout status statefulset/flashsale-postgresql --timeout=300s
}

image() {
  need docker
  log "image $IMAGE"
  docker build -t "$IMAGE" "$root"
  case "$CLUSTER" in
    kind) kind load docker-image "$IMAGE" --name "$NAME" ;;
    minikube) minikube -p "$NAME" image load "$IMAGE" ;;
  esac
}

install() {
  need helm "scripts/get-helm.sh"
  log "helm upgrade --install $RELEASE"
  helm upgrade --install "$RELEASE" "$root/helm/flashsale" -n "$NAMESPACE" \
    -f "$root/helm/flashsale/values-dev.yaml" \
    --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
    --wait --timeout 5m
}

# Run a CronJob once now and wait for its Job.
run_cronjob() {
  local cj="$1" job
  job="$cj-e2e-$(date +%s)"
  k create job "$job" --from="cronjob/$cj"
  k wait --for=condition=complete "job/$job" --timeout=180s || { k logs "job/$job" || true; return 1; }
  k logs "job/$job" | tail -n 5
}

e2e() {
  cluster_up
  deps_up
  image
  install   # the pre-install hook migrated the schema, or this failed
  local fullname
  fullname="$(k get deploy -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=web" -o jsonpath='{.items[0].metadata.name}')"
  log "helm test (/readyz through the Service)"
  helm test "$RELEASE" -n "$NAMESPACE" --logs
  log "opener and sweeper, run now from their CronJobs"
  run_cronjob "$fullname-opener"
  run_cronjob "$fullname-sweeper"
  log "the sale through the ingress / a port-forward"
  local url="http://127.0.0.1"
  if [[ "$INGRESS" != nginx || "$CLUSTER" != kind ]]; then
    k port-forward "svc/$fullname" 18080:80 >/dev/null 2>&1 &
    trap 'kill $! 2>/dev/null || true' EXIT
    sleep 3
    url="http://127.0.0.1:18080"
  fi
  curl -fsS "$url/sale/status"; echo
  curl -fsS "$url/sale/items?limit=1"; echo
  curl -fsS "$url/metrics" | grep -m1 '^flashsale_' >/dev/null
  log "a rolling restart drops no request (readiness, preStop sleep, graceful drain)"
  k scale "deploy/$fullname" --replicas=2
  k rollout status "deploy/$fullname" --timeout=300s
  local probe_log
  probe_log="$(mktemp)"
  ( end=$((SECONDS + 120))
    while ((SECONDS < end)); do
      curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 "$url/healthz" >>"$probe_log"
      sleep 0.1
    done ) &
  local prober=$!
  k rollout restart "deploy/$fullname"
  k rollout status "deploy/$fullname" --timeout=300s
  kill "$prober" 2>/dev/null || true
  wait "$prober" 2>/dev/null || true
  local total bad
  total="$(wc -l <"$probe_log")"
  bad="$(grep -cv '^200$' "$probe_log" || true)"
  echo "requests during the rollout: $total, not 200: $bad"
  [[ "$total" -gt 0 && "$bad" -eq 0 ]]
  helm test "$RELEASE" -n "$NAMESPACE"
  log "e2e passed"
}

down() {
  helm uninstall "$RELEASE" -n "$NAMESPACE" --wait || true
  k delete -k "$root/k8s-dev" --ignore-not-found
  k delete pvc -l app.kubernetes.io/part-of=flashsale-dev --ignore-not-found
}

destroy() {
  case "$CLUSTER" in
    kind) kind delete cluster --name "$NAME" ;;
    minikube) minikube delete -p "$NAME" ;;
  esac
}

need kubectl
case "${1:-}" in
  up) cluster_up; deps_up ;;
  image) image ;;
  install) install ;;
  e2e) e2e ;;
  down) down ;;
  destroy) destroy ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
