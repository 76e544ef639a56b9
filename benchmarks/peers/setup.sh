#!/usr/bin/env bash
# Idempotent installer for the peer benchmarks (run as root; re-running is cheap).
#   - Debian packages: etcd-server etcd-client golang-go golang-etcd-server-dev (apt-get update only if needed)
#   - builds etcdbench (etcdbench.go beside this file) into OUT_DIR from Debian's Go sources (no module proxy)
#   - pip-installs pysyncobj==0.3.17 into the project venv (VENV, default: <repo>/.venv)
# usage: setup.sh OUT_DIR            -> prints OUT_DIR/etcdbench
set -euo pipefail
out=${1:?usage: setup.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${VENV:-$root/.venv}

pkgs="etcd-server etcd-client golang-go golang-etcd-server-dev"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq $missing >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
  fi
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
# Rebuild only when the source is newer than the binary.
if [ ! -x "$out/etcdbench" ] || [ "$here/etcdbench.go" -nt "$out/etcdbench" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/etcdbench.go" "$tmp/main.go"
  (cd "$tmp" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$tmp/cache" go build -o "$out/etcdbench" main.go)
fi

if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("pysyncobj") != "0.3.17")' 2>/dev/null; then
  "$venv/bin/python" -m pip install -q "pysyncobj==0.3.17"
fi
echo "$out/etcdbench"
