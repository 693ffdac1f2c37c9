"""benchmarks/pair_potentials.py runs and writes the records the issue names."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("pair_potentials", ROOT / "benchmarks" / "pair_potentials.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pair_potentials"] = module  # the classes it defines look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~11 s
def test_records_have_the_named_keys_and_openmm_times(tmp_path):
    bench = _module()
    path = tmp_path / "pair.json"
    assert bench.main(["--sizes", "400", "--potentials", "lj", "buckingham", "--modes", "forward", "reverse",
                       "--repeats", "1", "--seconds", "0.01", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    records = data["records"]
    assert {(r["potential"], r["mode"]) for r in records} == {
        (p, m) for p in ("lj", "buckingham") for m in ("forward", "reverse")}
    for r in records:
        assert r["engine"] == "diffmd" and r["n_atoms"] == 400 and r["seconds"] > 0
        lj = next(x for x in records if x["potential"] == "lj" and x["mode"] == r["mode"])
        assert abs(r["ratio_to_lj"] - r["seconds"] / lj["seconds"]) < 1e-12
        if r["mode"] == "forward":
            assert r["openmm_seconds"] > 0 and abs(r["ratio_to_openmm"] - r["seconds"] / r["openmm_seconds"]) < 1e-12
    assert data["settings"]["dtype"] == "float32"


def test_the_buckingham_of_the_benchmark_is_the_docs_one():
    """The benchmark times the user-defined potential exactly as docs/interactions.md writes it."""
    docs = (ROOT / "docs" / "interactions.md").read_text()
    source = (ROOT / "benchmarks" / "pair_potentials.py").read_text()
    start = docs.index("class Buckingham(md.PairwiseInteraction):")
    block = docs[start:docs.index("```", start)].strip().splitlines()
    for line in block:
        assert line.strip() in source, f"the benchmark's Buckingham differs from the docs at: {line.strip()}"
