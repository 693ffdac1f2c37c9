"""examples/lj_sigma.py: a fast end-to-end run, and (slow) the acceptance of the learned σ."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lj_sigma.py"


@pytest.fixture(scope="module")
def lj_sigma():
    spec = importlib.util.spec_from_file_location("lj_sigma_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def test_short_run_writes_summary_and_plots(lj_sigma, tmp_path, capsys):
    out = tmp_path / "lj"
    summary = lj_sigma.main(["--epochs", "2", "--steps", "40", "--starts", "2", "--measure-starts", "2",
                             "--scan-starts", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    epoch_lines = [line for line in printed.splitlines() if line.startswith("Epoch ")]
    assert len(epoch_lines) == 2
    assert epoch_lines[0].startswith("Epoch  1 | σ  0.535 | Mean min sep expected  0.600 | Mean min sep end")
    assert "| Loss " in epoch_lines[0] and "| Grad " in epoch_lines[0]

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["sigma"] == pytest.approx(summary["sigma"])
    assert np.isfinite(on_disk["sigma"])
    assert on_disk["sigma"] == pytest.approx(np.mean(on_disk["history"]["sigma"][-5:]))
    assert len(on_disk["history"]["sigma"]) == 2
    assert on_disk["history"]["sigma"][0] == pytest.approx(0.60 / 2 ** (1 / 6))
    # plain SGD: σ₂ = σ₁ − lr · grad₁
    h = on_disk["history"]
    lr = on_disk["config"]["learning_rate"]
    assert lr == 2e-2
    assert h["sigma"][1] == pytest.approx(h["sigma"][0] - lr * h["grad"][0])
    assert len(h["grad_per_start"][0]) == 2
    clip = on_disk["config"]["clip_per_start"]
    assert h["grad"][0] == pytest.approx(np.mean(np.clip(h["grad_per_start"][0], -clip, clip)))
    assert on_disk["stabilisers"] == ["force_cap=100", f"clip_per_start={clip:g}", "starts=2"]
    assert 0.0 <= on_disk["wrong_sign_fraction_at_0.46"] <= 1.0
    assert "sigma_crossing_many_starts" in on_disk
    for name in ("rdf.png", "training.png", "crossing.png"):
        path = out / name
        assert path.exists() and path.stat().st_size > 1000, name


def test_epochs_do_not_recompile(lj_sigma):
    cfg = lj_sigma.Config(n_steps=5, starts=1)
    epoch_fn = lj_sigma.make_epoch_fn(cfg)
    coords, velocities = lj_sigma.random_starts(lj_sigma.jax.random.PRNGKey(0), 1)
    for sigma in (lj_sigma.SIGMA_START, 0.5, np.float32(0.49)):
        epoch_fn(sigma, coords, velocities)
    assert epoch_fn.grad_fn._cache_size() == 1


@pytest.mark.slow
def test_default_run_learns_sigma(lj_sigma, tmp_path):
    """The README's run: σ averaged over the last 5 epochs lands in [0.43, 0.48]."""
    summary = lj_sigma.main(["--out", str(tmp_path / "lj")])
    assert 0.43 <= summary["sigma"] <= 0.48, summary["sigma"]
    assert summary["wrong_sign_fraction_at_0.46"] > 0.1  # single-start gradients are noisy
    assert 0.44 <= summary["sigma_crossing_many_starts"] <= 0.46


@pytest.mark.slow
def test_other_seeds_learn_sigma(lj_sigma, tmp_path):
    """At least 5 of seeds 1..6 land in [0.43, 0.48] as well."""
    report = lj_sigma.main(["--seeds", "1", "2", "3", "4", "5", "6", "--out", str(tmp_path / "seeds")])
    assert report["n_in_window"] >= 5, report["seeds"]
