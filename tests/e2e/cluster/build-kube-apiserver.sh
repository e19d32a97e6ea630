#!/usr/bin/env bash
# Builds a real kube-apiserver from Debian's own `kubernetes` source package, once per machine.
# The binary is cached under $KUBE_APISERVER_CACHE (default ~/.cache/iceberg-offload), keyed by
# the source package version, so only the first run on a machine pays the 4-5 minute build.
set -euo pipefail

cache_root="${KUBE_APISERVER_CACHE:-$HOME/.cache/iceberg-offload}"
version="1.20.5+really1.20.2-1.1+deb12u1"
out="$cache_root/kube-apiserver-$version"

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in golang-1.19-go golang-1.19-src rsync golang-github-modern-go-reflect2-dev dpkg-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/sources.list.d" "$work/src"
# A private apt configuration with a deb-src line for the machine's own mirror and suite:
# /etc/apt stays untouched.
mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
echo "deb-src [trusted=yes] $mirror bookworm main" > "$work/apt/sources.list"
aptopts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/sources.list.d"
         -o "Dir::State::Lists=$work/apt/lists" -o "APT::Get::AllowUnauthenticated=true")
apt-get "${aptopts[@]}" update -qq >&2
(cd "$work/src" && apt-get "${aptopts[@]}" source --download-only "kubernetes=$version" >&2 \
   && dpkg-source --no-check -x ./*.dsc tree >&2)

tree="$work/src/tree"
# reflect2 1.0.1 crashes Go >= 1.18 the first time a custom resource is created; Debian's 1.0.2 does not.
rm -rf "$tree/vendor/github.com/modern-go/reflect2"
rsync -a /usr/share/gocode/src/github.com/modern-go/reflect2/ "$tree/vendor/github.com/modern-go/reflect2/"

export PATH="/usr/lib/go-1.19/bin:$PATH" GOPROXY=off CGO_ENABLED=0 GOFLAGS=-mod=vendor
(cd "$tree" && make WHAT=cmd/kube-apiserver >&2)
mkdir -p "$cache_root"
cp "$tree/_output/local/go/bin/kube-apiserver" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
