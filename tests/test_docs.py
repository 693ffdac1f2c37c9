"""The code in the docs runs: every ```python block of a page, in order, in one namespace."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
# losses.md trains for ~30 s: run with the slow checks (`-m slow`)
PAGES = [pytest.param("losses.md", marks=pytest.mark.slow), "parallel.md", "interactions.md", "forcefields.md",
         "../README.md"]


@pytest.mark.parametrize("page", PAGES)
def test_doc_code_runs(page):
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page} has no python blocks"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{page}", "exec"), namespace)
