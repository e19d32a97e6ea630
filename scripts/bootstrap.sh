#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine, idempotently:
# system packages (Java for Spark, the SQLite JDBC driver for the local Iceberg catalog,
# etcd for the Kubernetes API tests) and the Python environment from uv.lock.
#   scripts/bootstrap.sh            Python environment + runtime system packages
#   scripts/bootstrap.sh --e2e      also what the Kubernetes API tests need
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(default-jre-headless libxerial-sqlite-jdbc-java)
if [ "${1:-}" = "--e2e" ]; then
  packages+=(etcd-server openssl prometheus)
fi
missing=()
for pkg in "${packages[@]}"; do
  if [ "$pkg" = default-jre-headless ] && command -v java >/dev/null 2>&1; then continue; fi
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing system packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install -q "uv==0.9.30" >&2
fi
uv sync --frozen --all-extras -q
