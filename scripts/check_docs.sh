#!/usr/bin/env bash
# The documentation in CI (run by .ci/run after the default test suite):
#   1. install the docs tools into .venv (`scripts/setup.sh docs`: the `docs` extra),
#   2. build the site with `mkdocs build --strict` (any warning fails: broken links or anchors,
#      a page missing from the nav, a docstring mkdocstrings cannot read),
#   3. run the docs pages marked slow in tests/test_docs.py (the default suite runs the others),
#      so that together every ```python block of docs/ and README.md is executed.
# Usage: bash scripts/check_docs.sh (after `bash scripts/setup.sh test`, which the slow pages need)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh docs

site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
start=$SECONDS
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site"
echo "check_docs.sh: mkdocs build --strict passed ($((SECONDS - start)) s)"

# The slow pages, spread over the two workers page by page (--dist load).
.venv/bin/python -m pytest -q -m slow --dist load tests/test_docs.py
