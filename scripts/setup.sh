#!/usr/bin/env bash
# Create .venv with the best available Python and install diffmd.
#
#   bash scripts/setup.sh          what the examples need (the core: jax, equinox, optax,
#                                  matplotlib, and the ziglang C++ toolchain for the kernels)
#   bash scripts/setup.sh test     the test command's extras too (openmm, mdtraj, ase, jax-md,
#                                  pytest): the references the tests compare with
#   bash scripts/setup.sh docs     the docs site's tools (mkdocs-material, mkdocstrings)
#
# Interpreter choice: Python 3.12 (tested; gets jax 0.12) > 3.13 > any python3 >= 3.10.
# Python 3.11's newest jax is 0.10.2, which miscompiles on CPU (jax-ml/jax#39103); the
# dependency pin excludes it, so 3.11 falls back to jax 0.10.1 with a warning.
# Override with PYTHON=/path/to/python. Re-running is cheap: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") target="." ;;
  test) target=".[test]" ;;
  docs) target=".[docs]" ;;
  all) target=".[test,docs]" ;;
  *) echo "setup.sh: unknown argument '$1' (expected nothing, test, docs or all)" >&2; exit 2 ;;
esac

works() { "$@" -c 'import sys, venv; assert sys.version_info >= (3, 10)' >/dev/null 2>&1; }

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local root v candidate
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for v in 3.12 3.13; do
    for candidate in "$root"/versions/"$v"*/bin/python"$v" "$(command -v python$v 2>/dev/null || true)"; do
      if [ -n "$candidate" ] && [ -x "$candidate" ] && works "$candidate"; then echo "$candidate"; return; fi
    done
  done
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null && works "$candidate"; then command -v "$candidate"; return; fi
  done
  echo "setup.sh: no Python >= 3.10 found; set PYTHON=/path/to/python" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  echo "setup.sh: creating .venv with $py ($("$py" --version 2>&1))"
  "$py" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
fi

minor=$(.venv/bin/python -c 'import sys; print(sys.version_info[1])')
constraints=()
if [ "$minor" -ge 12 ]; then
  constraints=(-c scripts/tested-versions.txt)  # the versions CI tests with
else
  echo "setup.sh: warning: Python 3.$minor gets an older jax than the tested 0.12; prefer 3.12" >&2
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${constraints[@]}" -e "$target" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python - <<'PY'
import platform, diffmd, jax
print(f"setup.sh: diffmd {diffmd.__version__}, jax {jax.__version__}, python {platform.python_version()}")
PY
# Compile the C++ pair kernels now (once per machine, cached) rather than at first use; if it
# fails, diffmd falls back to the pure-JAX kernels and the tests report the build failure.
.venv/bin/python -m diffmd._native || echo "setup.sh: warning: compiled kernels not built" >&2
