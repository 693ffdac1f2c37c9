"""examples/lj_sigma.py and its studies (scripts/lj_sigma_*.py): a fast end-to-end run, and (slow)
the acceptance of the learned σ and the studies' findings."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lj_sigma.py"
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def lj_sigma():
    spec = importlib.util.spec_from_file_location("lj_sigma_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_short_run_writes_summary_and_plots(lj_sigma, tmp_path, capsys):
    out = tmp_path / "lj"
    summary = lj_sigma.main(["--epochs", "2", "--steps", "40", "--starts", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    epoch_lines = [line for line in printed.splitlines() if line.startswith("Epoch ")]
    assert len(epoch_lines) == 2
    assert epoch_lines[0].startswith("Epoch  1 | σ  0.535 | Mean min sep expected  0.600 | Mean min sep end")
    assert "| Loss " in epoch_lines[0] and "| Grad " in epoch_lines[0]

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["sigma"] == pytest.approx(summary["sigma"])
    assert np.isfinite(on_disk["sigma"])
    h = on_disk["history"]
    assert on_disk["sigma"] == pytest.approx(np.mean(h["sigma"][-5:]))
    assert len(h["sigma"]) == 2 and h["sigma"][0] == pytest.approx(0.60 / 2 ** (1 / 6))
    # plain SGD on the mean of the per-start gradients, each clipped: σ₂ = σ₁ − lr · grad₁
    settings = on_disk["settings"]
    assert settings["learning_rate"] == 2e-2 and settings["n_starts"] == 2
    assert h["sigma"][1] == pytest.approx(h["sigma"][0] - settings["learning_rate"] * h["grad"][0])
    assert len(h["grad_per_start"][0]) == 2
    clip = settings["clip"]
    assert h["grad"][0] == pytest.approx(np.mean(np.clip(h["grad_per_start"][0], -clip, clip)))
    for name in ("rdf.png", "training.png"):
        path = out / name
        assert path.exists() and path.stat().st_size > 1000, name


def test_epochs_do_not_recompile(lj_sigma):
    coords, velocities = lj_sigma.random_starts(lj_sigma.jax.random.PRNGKey(0), 1)
    before = lj_sigma.gradients._cache_size()  # (other tests may have compiled other shapes)
    for sigma in (0.535, 0.5, 0.49):  # train() passes σ as a Python float
        lj_sigma.gradients(sigma, coords, velocities, 5)
    assert lj_sigma.gradients._cache_size() == before + 1


@pytest.mark.slow  # ~5 s: one more compilation
def test_study_trains_as_the_example(lj_sigma):
    """scripts/lj_sigma_study.py with its default settings reproduces the example's numbers, and its
    own loss (used for other force caps; here vmapped) agrees up to rounding."""
    import lj_sigma_study as study

    example = lj_sigma.train(0, n_epochs=2, n_starts=2, n_steps=20, verbose=False)
    studied = study.train(study.Config(n_steps=20, n_epochs=2, starts=2), 0, verbose=False)
    for name in ("sigma", "grad", "mms_end"):
        np.testing.assert_allclose(studied["history"][name], example["history"][name], rtol=1e-12)
    vmapped = study.train(study.Config(n_steps=20, n_epochs=2, starts=2, batch="vmap"), 0, verbose=False)
    for name in ("sigma", "grad", "mms_end"):
        np.testing.assert_allclose(vmapped["history"][name], example["history"][name], rtol=1e-6)


@pytest.mark.slow
def test_default_run_learns_sigma(lj_sigma, tmp_path):
    """The README's run: σ averaged over the last 5 epochs lands in [0.43, 0.48]."""
    summary = lj_sigma.main(["--out", str(tmp_path / "lj")])
    assert 0.43 <= summary["sigma"] <= 0.48, summary["sigma"]
    assert len(summary["history"]["sigma"]) == 20
    for name in ("rdf.png", "training.png"):
        assert (tmp_path / "lj" / name).stat().st_size > 1000


@pytest.mark.slow
def test_other_seeds_learn_sigma(lj_sigma, tmp_path):
    """At least 5 of seeds 1..6 land in [0.43, 0.48] as well."""
    report = lj_sigma.main(["--seeds", "1", "2", "3", "4", "5", "6", "--out", str(tmp_path / "seeds")])
    assert report["n_in_window"] >= 5, report["seeds"]
    assert json.loads((tmp_path / "seeds" / "seeds.json").read_text())["n_seeds"] == 6


@pytest.mark.slow
def test_study_scripts_run(tmp_path):
    """Each study runs with small settings and writes its files."""
    import lj_sigma_ablation
    import lj_sigma_crossing
    import lj_sigma_gradients
    import lj_sigma_study

    small = ["--steps", "20", "--epochs", "2"]
    report = lj_sigma_study.main(["--seeds", "0", "1", "--starts", "2", "--out", str(tmp_path / "s.json"), *small])
    assert report["n_seeds"] == 2 and (tmp_path / "s.json").exists()
    results = lj_sigma_ablation.main(["--sets", "none", "cap+starts2", "--seeds", "0", "--out",
                                      str(tmp_path / "ablation" / "ablation.json"), *small])
    assert set(results) == {"none", "cap+starts2"}
    assert (tmp_path / "ablation" / "ablation.md").exists()
    r = lj_sigma_gradients.main(["--n", "4", "--starts", "2", "--out", str(tmp_path / "g"), *small])
    assert len(r["grads"]) == 4 and 0.0 <= r["wrong_sign_fraction"] <= 1.0
    assert (tmp_path / "g" / "gradients.png").exists() and (tmp_path / "g" / "gradients.json").exists()
    r = lj_sigma_crossing.main(["--n", "2", "--sigmas", "0.44", "0.46", "--out", str(tmp_path / "c"), *small])
    assert len(r["mms_end_mean"]) == 2
    assert (tmp_path / "c" / "crossing.png").exists() and (tmp_path / "c" / "crossing.json").exists()


@pytest.mark.slow
def test_single_start_gradients_are_noisy_and_the_crossing_is_near_0_45(tmp_path):
    """The measurements behind the example's departures (64 starts each, ~30 s)."""
    import lj_sigma_crossing
    import lj_sigma_gradients

    grads = lj_sigma_gradients.main(["--out", str(tmp_path / "g")])
    assert grads["n_nonfinite"] == 0
    assert grads["wrong_sign_fraction"] > 0.1 and grads["grad_max_abs"] > 10  # chaos
    assert grads["grad_mean_clipped_2"] > 0  # the clipped mean points the right way
    crossing = lj_sigma_crossing.main(["--out", str(tmp_path / "c")])
    assert 0.44 <= crossing["sigma_crossing"] <= 0.46
