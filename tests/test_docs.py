"""The code in the docs runs: every ```python block of every page, in order, in one namespace.

Pages are found automatically: every Markdown file under docs/ (recursively) and README.md.
Per page, its ```python blocks are executed in order in one fresh namespace (a page reads as
one session). Other fences:

* ```py — fragments that cannot run on one machine (several hosts, a cluster's addresses):
  compiled, not executed. A ```py block that embeds a file with pymdownx.snippets
  (`--8<-- "examples/lj_sigma.py"`) is checked for the file instead (the file has its own tests).
* ```bash / ```sh / ```console — shell commands, not run; every script they name
  (examples/…, scripts/…, benchmarks/…) must exist. Flags are not checked.

Pages whose code takes longer than ~5 s are listed in SLOW with their measured time and run
with the slow checks (`pytest -m slow tests/test_docs.py`, which scripts/check_docs.sh runs in
CI together with `mkdocs build --strict`), so default + slow execute every block.
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Pages over ~5 s → the seconds their blocks took (one process, pages in order, compiled pair
# kernels already built, on the shared 2-core development machine). The default suite runs the
# rest: docs/ase.md 3.0, docs/gradients.md 4.6, docs/index.md 3.8, docs/interactions.md 4.3,
# docs/pictures.md 2.8, README.md 1.4 (after index.md, whose example is the same program).
SLOW = {
    "docs/losses.md": 22,
    "docs/tutorials/real_molecules.md": 15,
    "docs/tutorials/lj_sigma.md": 15,
    "docs/parallel.md": 9,
    "docs/tutorials/triatomic_angle.md": 8,
    "docs/tutorials/performance.md": 8,
    "docs/forcefields.md": 7,
    "docs/tutorials/gradient_modes.md": 7,
    "docs/tutorials/losses.md": 6,
    "docs/tutorials/nn_bond.md": 5.5,
}

PYTHON = {"python", "python3"}
FRAGMENT = {"py"}
SHELL = {"bash", "sh", "shell", "console"}
SNIPPET = re.compile(r'^\s*-{1,}8<-{1,}\s+"([^"]+)"\s*$')
SCRIPT = re.compile(r"(?<![\w/.-])((?:examples|scripts|benchmarks)/[\w/.-]+\.(?:py|sh))")
FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*\{?\.?(?P<lang>[\w+-]*)(?P<rest>.*)$")


def pages() -> list[str]:
    found = sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md"))
    return found + ["README.md"]


def fences(text: str) -> list[tuple[str, str, int]]:
    """(language, code dedented, first line number) of every fenced block, nested ones too
    (a fence indented in a list item or an admonition)."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["lang"].lower()
        close = re.compile(rf"^[ \t]{{0,{len(indent)}}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body, j = [], i + 1
        while j < len(lines) and not close.match(lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"unclosed ``` fence opened on line {i + 1}")
        out.append((lang, textwrap.dedent("\n".join(body)) + "\n", i + 2))
        i = j + 1
    return out


def page_params():
    out = []
    for page in pages():
        if page in SLOW:
            out.append(pytest.param(page, marks=pytest.mark.slow, id=page))
        else:
            out.append(pytest.param(page, id=page))
    return out


@pytest.fixture
def clean_jax(tmp_path, monkeypatch):
    """Each page runs in a scratch directory, and a page that turns on float64 (or anything
    else in jax.config) does not leak it into the next page or test."""
    import jax

    x64 = jax.config.jax_enable_x64
    monkeypatch.chdir(tmp_path)
    yield
    jax.config.update("jax_enable_x64", x64)
    import sys
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.mark.parametrize("page", page_params())
def test_doc_code_runs(page, clean_jax):
    blocks = fences((ROOT / page).read_text())
    namespace: dict = {"__name__": "__main__"}
    start = time.perf_counter()
    for lang, code, line in blocks:
        if lang in PYTHON:
            # the file name and line numbers of a traceback point into the page
            exec(compile("\n" * (line - 1) + code, str(ROOT / page), "exec"), namespace)
    seconds = time.perf_counter() - start
    print(f"{page}: {seconds:.1f} s")


@pytest.mark.parametrize("page", pages())
def test_doc_fragments_and_commands(page):
    """```py fragments compile (or embed a file that exists); shell blocks name scripts that exist."""
    for lang, code, line in fences((ROOT / page).read_text()):
        where = f"{page}:{line}"
        if lang in FRAGMENT or lang in PYTHON:
            snippets = [m.group(1) for m in map(SNIPPET.match, code.splitlines()) if m]
            for path in snippets:
                assert (ROOT / path).is_file(), f"{where}: embeds {path}, which does not exist"
            if lang in FRAGMENT and not snippets:
                compile(code, where, "exec")
            assert not (snippets and lang in PYTHON), f"{where}: embed a file in a ```py block, not ```python"
        elif lang in SHELL:
            for path in SCRIPT.findall(code):
                assert (ROOT / path).is_file(), f"{where}: names {path}, which does not exist"


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav lists (read with a regex: PyYAML is a docs-only dependency)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s*-\s*(?:[^\n:]+:\s*)?\"?([\w./-]+\.md)\"?\s*$", nav, flags=re.M)


def test_docs_found_and_nav_complete():
    found = pages()
    n_python = sum(lang in PYTHON for page in found for lang, _, _ in fences((ROOT / page).read_text()))
    assert n_python > 0, "no ```python blocks found in docs/ or README.md"
    listed = nav_pages()
    assert "index.md" in listed and len(listed) > 10, listed
    missing = [p for p in listed if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml's nav lists pages that do not exist: {missing}"
    assert set(SLOW) <= set(found), f"SLOW names pages that do not exist: {set(SLOW) - set(found)}"
