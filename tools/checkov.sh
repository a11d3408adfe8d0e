#!/usr/bin/env bash
# Runs checkov (a Kubernetes manifest scanner) from its own virtualenv: it pins many packages that
# conflict with ours, so it is never installed into .venv nor listed in pyproject.toml.
#   tools/checkov.sh --install-only     create the venv if needed and exit
#   tools/checkov.sh [checkov args...]  run checkov, e.g. -d rendered/ --framework kubernetes
# CHECKOV_VENV (default .cache/checkov-venv) and CHECKOV_VERSION override the location and the pin.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${CHECKOV_VENV:-$root/.cache/checkov-venv}"
version="${CHECKOV_VERSION:-3.3.30}"
python="${PYTHON:-python3}"
stamp="$venv/.checkov-$version"

if [[ ! -f "$stamp" ]]; then
  echo "==> installing checkov $version into $venv (first run: a few minutes)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$version" >&2
  "$venv/bin/checkov" --version >/dev/null
  touch "$stamp"  # written last: a half-finished install is redone on the next run
fi
if [[ "${1:-}" == "--install-only" ]]; then
  exit 0
fi
exec "$venv/bin/checkov" "$@"
