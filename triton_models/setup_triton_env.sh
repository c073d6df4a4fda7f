#!/usr/bin/env bash
# Create or refresh the Triton Inference Server environment `.venv-triton` (repo root).
#
# tritonserver comes from the PyPI wheel `nvidia-pytriton` (binary + Python backend); the
# Python backend needs numpy<2, hence a virtual environment of its own, separate from `.venv`.
# Idempotent: does nothing when `.venv-triton` exists and was built from the same spec.
#
# Usage: bash triton_models/setup_triton_env.sh        (PYTHON=/path/to/python3 to choose)
#        bash triton_models/setup_triton_env.sh --force (rebuild)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRITON_VENV:-$ROOT/.venv-triton}"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$(readlink -f "$ROOT/.venv/bin/python")"
  else
    PYTHON="$(command -v python3)"
  fi
fi

# The spec: change it and every machine rebuilds on its next call.
REQUIREMENTS=(
  "nvidia-pytriton==0.7.0"
  "onnxruntime>=1.17,<2"
  "numpy>=1.24,<2"
)
PY_VERSION="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
SPEC="py=$PY_VERSION ${REQUIREMENTS[*]} layout=2"
STAMP="$VENV/.gateway-triton-spec"

STUB_GLOB=("$VENV"/lib/python*/site-packages/pytriton/tritonserver/backends/python/triton_python_backend_stub)
if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC" \
      && -x "$VENV/bin/python" && -x "${STUB_GLOB[0]}" ]]; then
  echo "triton env up to date: $VENV"
  exit 0
fi

echo "building triton env in $VENV (python $PY_VERSION)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" -c "import numpy, onnxruntime, pytriton" # fail here if the install failed

# Put the Python backend stub that matches this interpreter next to libtriton_python.so
# (pytriton does the same at run time in a temporary copy; we do it once here).
PKG="$("$VENV/bin/python" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)')"
STUB_SRC="$PKG/tritonserver/python_backend_stubs/$PY_VERSION/triton_python_backend_stub"
if [[ ! -f "$STUB_SRC" ]]; then
  echo "no Python backend stub for python $PY_VERSION in nvidia-pytriton ($STUB_SRC)" >&2
  exit 1
fi
cp "$STUB_SRC" "$PKG/tritonserver/backends/python/triton_python_backend_stub"
chmod +x "$PKG/tritonserver/backends/python/triton_python_backend_stub" "$PKG/tritonserver/bin/tritonserver"

# Smoke test: the binary starts and prints its version.
LIBS="$(dirname "$PKG")/nvidia_pytriton.libs"
HELP="$(LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}" "$PKG/tritonserver/bin/tritonserver" --help 2>&1 || true)"
if [[ "$HELP" != *"Usage: tritonserver"* ]]; then
  echo "tritonserver does not run (LD_LIBRARY_PATH=$LIBS)" >&2
  exit 1
fi
echo "$SPEC" > "$STAMP"
echo "triton env ready: $VENV"
