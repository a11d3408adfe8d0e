#!/usr/bin/env bash
# Builds the kstatus checker (main.go over the pinned sigs.k8s.io/cli-utils) into a cache outside the
# work tree, keyed by its sources, the same way tools/build.sh builds the control plane (kept apart so
# that adding it did not change the control plane's cache key). Prints the binary's path on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh" | sha256sum | cut -c1-12)"
bin="${XDG_CACHE_HOME:-$HOME/.cache}/qbo-operator/kstatus-${key}/kstatus"
if [[ -x "$bin" ]]; then
  echo "$bin"; exit 0
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
echo "[build $(date +%H:%M:%S)] building kstatus (sigs.k8s.io/cli-utils $(awk '$1=="sigs.k8s.io/cli-utils"{print $2}' "$here/go.mod"))" >&2
mkdir -p "$(dirname "$bin")"
(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$bin.partial" .)
mv "$bin.partial" "$bin"
echo "$bin"
