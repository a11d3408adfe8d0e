#!/usr/bin/env bash
# The container image, built and run on a machine with no Docker engine and no registry (docs/image.md).
#
#   tools/image.sh build       bases from Debian's packages (mmdebstrap, cached by their inputs), the
#                              Dockerfile on top (buildah, layer cache), then the image id and size and an
#                              OCI archive in .cache/image/. Warm, it reuses everything and takes seconds.
#   tools/image.sh run [-e NAME=VALUE]... [-v HOST:PATH]... [--entrypoint CMD] [--] [ARGS...]
#                              runs the built image's entrypoint the way a kubelet would with the chart's
#                              securityContext: its own mount and PID namespaces, the image's user (65532)
#                              with no capabilities and no_new_privs, the root filesystem read-only, a tmpfs
#                              on /tmp, the image's Env and WorkingDir. -v bind-mounts a host file read-only
#                              as a Secret volume (mode 0444); PATH must be under /tmp or exist in the image.
#   tools/image.sh id          the built image's id (fails if it was never built)
#
# Needs root, buildah and mmdebstrap (`make system-packages`). Everything but the OCI archive lives in
# ${XDG_CACHE_HOME:-~/.cache}/qbo-operator/image, next to the Kubernetes binaries: `make clean` keeps it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/qbo-operator/image"
archive_dir="$root/.cache/image"
image="localhost/qbo-operator:dev"
suite=bookworm
runtime_packages="python3"
build_packages="python3,python3-venv"
buildah_cmd=(buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver vfs)

say() { echo "[image $(date +%H:%M:%S)] $*" >&2; }
die() { echo "tools/image.sh: $*" >&2; exit 1; }
bah() { "${buildah_cmd[@]}" "$@"; }

need_tools() {
  [ "$(id -u)" = 0 ] || die "needs root (buildah with the vfs driver and chroot isolation, mmdebstrap, mounts)"
  local t
  for t in buildah mmdebstrap unshare setpriv; do
    command -v "$t" >/dev/null || die "$t is missing: run \`make system-packages\`"
  done
}

# The Debian repositories apt uses on this machine (deb.debian.org here), as one-line sources.
mirrors() {
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(ORIGIN)' 'Identifier: Packages' \
    | awk -v s="$suite" '$4 == "Debian" && ($2 == s || $2 ~ "^" s "-(updates|security)$") { print "deb " $1 " " $2 " " $3 }' \
    | sort -u
}

# One base image, made once per distinct set of inputs: minbase plus the packages, no docs/man/locales
# (copyright files stay), apt lists and caches removed. Prints the image name.
base() {
  local kind="$1" packages="$2" sources key name tar
  sources="$(mirrors)"
  [ -n "$sources" ] || die "apt here has no Debian $suite repository to build the base from"
  local opts=(--variant=minbase --include="$packages" --format=tar
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/info/*')
  key="$(printf '%s\n' 1 "$suite" "${opts[@]}" "$sources" | sha256sum | cut -c1-16)"
  name="localhost/qbo-operator-base:$kind-$key"
  tar="$cache/base-$kind-$key.tar"
  if bah inspect --type image "$name" >/dev/null 2>&1; then
    echo "$name"
    return
  fi
  if [ ! -s "$tar" ]; then
    say "base $kind: mmdebstrap $suite with $packages (cold: about a minute)"
    mkdir -p "$cache"
    local srcs=()
    mapfile -t srcs <<<"$sources"
    mmdebstrap --quiet "${opts[@]}" "$suite" "$tar.part" "${srcs[@]}" >&2
    mv "$tar.part" "$tar"
  fi
  say "base $kind: importing $(du -h "$tar" | cut -f1) as $name"
  local ctr
  ctr="$(bah from --quiet scratch)"
  bah add --quiet "$ctr" "$tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$ctr"
  bah commit --quiet --rm "$ctr" "$name" >/dev/null
  echo "$name"
}

# A digest of everything the build reads: the Dockerfile, .dockerignore and the files it lets into the
# context (its `!` lines, minus its other patterns), and the arguments given (bases, build args).
inputs_key() {
  local includes=() excludes=() line
  while IFS= read -r line; do
    case "$line" in
      '' | '#'* | '*') ;;
      '!'*) includes+=("${line#!}") ;;
      *) excludes+=(! -path "${line//\*\*/*}" ! -path "${line//\*\*/*}/*") ;;
    esac
  done <"$root/.dockerignore"
  (
    cd "$root"
    find "${includes[@]%/}" -type f "${excludes[@]}" -print0 | sort -z | xargs -0 sha256sum
    sha256sum Dockerfile .dockerignore
    printf '%s\n' "$@"
  ) | sha256sum | cut -c1-32
}

build() {
  need_tools
  local started runtime_base build_base version id size
  started=$(date +%s)
  mkdir -p "$cache" "$archive_dir"
  # The two bases are independent: make them side by side (on a cold machine this is most of the time).
  base runtime "$runtime_packages" >"$cache/.base-runtime" &
  local pid_runtime=$!
  base build "$build_packages" >"$cache/.base-build" &
  wait "$pid_runtime" && wait $! || die "building the base images failed"
  runtime_base="$(cat "$cache/.base-runtime")"
  build_base="$(cat "$cache/.base-build")"
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)"
  # The CA bundle this machine's pip trusts (PIP_CERT, else pip's config), when it has one: mounted for the
  # build's RUN steps only, so pip in the build stage reaches PyPI the way pip here does.
  local ca="${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}" ca_args=()
  if [ -n "$ca" ] && [ -s "$ca" ]; then
    ca_args=(--volume "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
  fi
  local key last
  key="$(inputs_key "$runtime_base" "$build_base" "$version" "${ca_args[@]}")"
  last="$(cat "$cache/last-build" 2>/dev/null || true)"
  if [ "${last%% *}" = "$key" ] && [ "$(image_id 2>/dev/null)" = "${last#* }" ]; then
    say "$image is up to date (same Dockerfile, context and bases as its build)"
  else
    say "buildah build $image (cold: wheels from PyPI, a minute or two; warm: cached layers)"
    # Progress: each Dockerfile step and whether it came from the cache; the whole output in build.log.
    bah build --layers --isolation chroot --pull=never --network host "${ca_args[@]}" \
      --build-arg BASE_IMAGE="$runtime_base" --build-arg BUILD_IMAGE="$build_base" \
      --build-arg VERSION="$version" -t "$image" -f "$root/Dockerfile" "$root" 2>&1 \
      | tee "$cache/build.log" | grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?(STEP [0-9]+/[0-9]+: |--> Using cache)' \
      | while IFS= read -r line; do say "  ${line:0:110}"; done \
      || die "buildah build failed: see $cache/build.log"
    echo "$key $(image_id)" >"$cache/last-build"
  fi
  id="$(image_id)"
  size="$(bah images --noheading --format '{{.Size}}' "$image" | head -1)"
  local archive="$archive_dir/qbo-operator.oci.tar"
  if [ "$(cat "$archive.id" 2>/dev/null)" != "$id" ]; then
    say "OCI archive $archive"
    rm -f "$archive" "$archive.id"
    bah push --quiet "$image" "oci-archive:$archive:qbo-operator:dev" >/dev/null
    echo "$id" >"$archive.id"
  fi
  # The layer cache (untagged intermediate images) is what makes a warm build fast, but vfs stores every
  # layer whole: past QBO_IMAGE_CACHE_GB it is dropped, and the next build redoes all but the bases.
  if [ "$(du -s --block-size=1G "$cache/storage" | cut -f1)" -gt "${QBO_IMAGE_CACHE_GB:-12}" ]; then
    say "layer cache over ${QBO_IMAGE_CACHE_GB:-12} GB: pruning untagged images"
    bah rmi --prune >/dev/null
  fi
  say "done in $(($(date +%s) - started))s"
  echo "image: $image"
  echo "id: $id"
  echo "size: $size"
  echo "archive: $archive ($(du -h "$archive" | cut -f1))"
}

image_id() {
  bah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || die "no image yet: run \`make image\`"
}

# The image's root filesystem: one working container per image id, never written to by a run.
rootfs() {
  local id ctr
  id="$(image_id)"
  ctr="qbo-operator-rootfs-${id:0:12}"
  if ! bah inspect --type container "$ctr" >/dev/null 2>&1; then
    bah containers --quiet --filter name=qbo-operator-rootfs- | xargs -r "${buildah_cmd[@]}" rm >/dev/null
    bah from --quiet --pull=never --name "$ctr" "$image" >/dev/null
  fi
  bah mount "$ctr"
}

run() {
  need_tools
  local envs=() vols=() entrypoint=()
  while [ $# -gt 0 ]; do
    case "$1" in
      -e) envs+=("$2"); shift 2 ;;
      -v) vols+=("$2"); shift 2 ;;
      --entrypoint) entrypoint=("$2"); shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  local fs user workdir
  fs="$(rootfs)"
  # Where the container's root is assembled: each run mounts on it in its own mount namespace.
  mkdir -p "$cache/mnt"
  mapfile -t image_env < <(bah inspect --type image --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
  local args=("$@")
  if [ ${#entrypoint[@]} -eq 0 ]; then
    # The image's ENTRYPOINT, and its CMD when no arguments are given (a Pod without `args`).
    mapfile -t entrypoint < <(bah inspect --type image \
      --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$image" | sed '/^$/d')
    [ ${#args[@]} -gt 0 ] || mapfile -t args < <(bah inspect --type image \
      --format '{{range .OCIv1.Config.Cmd}}{{println .}}{{end}}' "$image" | sed '/^$/d')
  fi
  user="$(bah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")"
  workdir="$(bah inspect --type image --format '{{.OCIv1.Config.WorkingDir}}' "$image")"
  [[ "$user" =~ ^[0-9]+:[0-9]+$ ]] || die "the image's USER must be numeric uid:gid, not '$user'"
  # The mounts happen in a private mount namespace (gone with the process); the entrypoint is PID 1 of
  # its own PID namespace, as in a pod, and --kill-child ends it if this script is killed.
  exec unshare --mount --pid --fork --kill-child --propagation private -- \
    bash -c "$(declare -f setup_root); setup_root \"\$@\"" setup_root \
    "$fs" "$cache/mnt" "$user" "${workdir:-/}" "${#vols[@]}" "${vols[@]}" "${#image_env[@]}" "${image_env[@]}" \
    "${#envs[@]}" "${envs[@]}" "${entrypoint[@]}" "${args[@]}"
}

# Runs inside the new namespaces, as root: builds the container's view of the filesystem, then drops to
# the image's user in a chroot and execs the command.
setup_root() {
  set -euo pipefail
  local fs="$1" new="$2" user="$3" workdir="$4"; shift 4
  local vols=("${@:2:$1}"); shift $(($1 + 1))
  local image_env=("${@:2:$1}"); shift $(($1 + 1))
  local envs=("${@:2:$1}"); shift $(($1 + 1))
  mount --bind "$fs" "$new"
  mount -t tmpfs -o nosuid,nodev,mode=1777,size=256m tmpfs "$new/tmp"
  mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
  mount -t tmpfs -o nosuid,mode=755,size=64k tmpfs "$new/dev"
  local d
  for d in null zero full random urandom tty; do
    touch "$new/dev/$d"
    mount --bind "/dev/$d" "$new/dev/$d"
  done
  ln -s /proc/self/fd "$new/dev/fd"
  mkdir -p "$new/dev/shm" && mount -t tmpfs -o nosuid,nodev,noexec,size=64m tmpfs "$new/dev/shm"
  mount -o remount,bind,ro,nosuid,nodev "$new/dev"
  chown "$user" "$new/tmp"
  # A file volume as the kubelet writes a Secret's: root's, mode 0444, on a read-only mount.
  local vol src dst
  for vol in "${vols[@]}"; do
    src="${vol%%:*}" dst="${vol#*:}"
    case "$dst" in
      /tmp/*) mkdir -p "$(dirname "$new$dst")"; install -m 0444 "$src" "$new$dst"; src="$new$dst" ;;
      *) [ -e "$new$dst" ] || { echo "tools/image.sh: $dst is not under /tmp and not in the image" >&2; exit 2; } ;;
    esac
    mount --bind "$src" "$new$dst"
    mount -o remount,bind,ro "$new$dst"
  done
  # Last: the image's own files read-only, as readOnlyRootFilesystem does.
  mount -o remount,bind,ro,nosuid,nodev "$new"
  exec env -i "${image_env[@]}" "${envs[@]}" /usr/bin/setpriv --clear-groups --no-new-privs \
    /usr/bin/unshare --root="$new" --wd="$workdir" --setgid="${user#*:}" --setuid="${user%%:*}" -- "$@"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  run) shift; run "$@" ;;
  id) need_tools; image_id ;;
  *) echo "usage: tools/image.sh build | run [-e NAME=VALUE]... [-v HOST:PATH]... [--entrypoint CMD] [--] [ARGS...] | id" >&2; exit 2 ;;
esac
