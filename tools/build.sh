#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm from the pinned
# wrapper modules in tools/ into a cache outside the work tree (envtest's KUBEBUILDER_ASSETS
# layout), keyed by the go.sum hashes. Prints the folder on stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks $b" >&2; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi
k8s_version="$(awk '$1=="k8s.io/kubernetes"{print $2}' "$here/k8s/go.mod")"
helm_version="$(awk '$1=="helm.sh/helm/v3"{print $2}' "$here/helm/go.mod")"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$here/etcd/go.mod")"
key="$(cat "$here"/k8s/go.sum "$here"/etcd/go.sum "$here"/helm/go.sum "$here/build.sh" | sha256sum | cut -c1-12)"
bin="${XDG_CACHE_HOME:-$HOME/.cache}/qbo-operator/k8s-${k8s_version}-${key}"
if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/kubectl" \
      && -x "$bin/etcd" && -x "$bin/helm" ]]; then
  echo "$bin"; exit 0
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
mkdir -p "$bin.partial"
minor="$(echo "$k8s_version" | cut -d. -f2)"
date_now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
x=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  x="$x -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date_now"
done
step() { echo "[build $(date +%H:%M:%S)] $*" >&2; }
started=$SECONDS
step "downloading modules (cold: a few minutes)"
(cd "$here/k8s" && go mod download) && (cd "$here/etcd" && go mod download) && (cd "$here/helm" && go mod download)
for cmd in kube-apiserver kube-controller-manager kubectl; do
  step "building $cmd $k8s_version (cold: several minutes each)"
  (cd "$here/k8s" && go build -trimpath -ldflags "-s -w $x" -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done
step "building etcd $etcd_version"
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" go.etcd.io/etcd/server/v3)
step "building helm $helm_version"
(cd "$here/helm" && go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  -o "$bin.partial/helm" helm.sh/helm/v3/cmd/helm)
rm -rf "$bin" && mv "$bin.partial" "$bin"
step "done in $((SECONDS - started))s: $bin"
echo "$bin"
