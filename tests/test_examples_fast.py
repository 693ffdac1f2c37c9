"""Fast checks of the triatomic-angle, neural-network-bond and LJ-ensemble examples (a few epochs each).

The full acceptance runs (20 epochs, thresholds) are in test_examples_slow.py (`-m slow`).
"""

import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import lj_sigma_ensemble  # noqa: E402
import nn_bond  # noqa: E402
import nn_bond_seeds  # noqa: E402
import triatomic_angle  # noqa: E402


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow  # ~8-15 s; the slow example runs cover them
def test_triatomic_angle_runs_and_writes_outputs(tmp_path, capsys):
    summary = triatomic_angle.main(["--seed", "0", "--out", str(tmp_path), "--epochs", "2", "--scan-step", "30"])
    printed = capsys.readouterr().out
    epochs = re.findall(r"^Epoch +(\d+) \| θ +[\d.]+° \| Final dist [\d.]+ \| Loss [\d.]+ \| Grad +-?[\d.]+$",
                        printed, flags=re.M)
    assert epochs == ["1", "2"]
    written = _summary(tmp_path)
    assert written["theta_deg"] == pytest.approx(summary["theta_deg"])
    assert len(written["epochs"]) == 2
    # two plain gradient-descent steps from 110° with exact gradients ≈ 0.39 per radian
    assert 107.0 < written["theta_deg"] < 109.5
    assert written["scan"]["theta_deg"] == [30.0, 60.0, 90.0, 120.0, 150.0, 180.0]
    assert 90.0 < written["sign_change_deg"] < 120.0
    for name in ("gradient_vs_theta.png", "loss_curve.png", "molecules.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_triatomic_loss_gradient_matches_finite_difference():
    theta = jnp.deg2rad(jnp.float64(105.0))  # typed as the example's own calls: its compiled function is reused
    (value, dist), grad = triatomic_angle.value_and_grad(theta)
    h = 1e-5
    # the loss's values from the same compiled function (the example's `loss`, jitted with its gradient)
    loss = lambda t: triatomic_angle.value_and_grad(t)[0][0]  # noqa: E731
    fd = (loss(theta + h) - loss(theta - h)) / (2 * h)
    assert float(dist) > 1.0 and float(value) == pytest.approx(float(dist) - 1.0)
    assert float(grad) == pytest.approx(float(fd), rel=1e-6)


def test_triatomic_sign_change_interpolation():
    thetas = np.array([87.0, 90.0, 93.0])
    grads = np.array([-0.5, -0.5, 0.5])
    assert triatomic_angle.sign_changes(thetas, grads) == [91.5]
    assert triatomic_angle.sign_changes(thetas, -grads) == []  # + to − is not a minimum


@pytest.mark.slow  # ~8-15 s; the slow example runs cover them
def test_nn_bond_runs_and_writes_outputs(tmp_path, capsys):
    summary = nn_bond.main(["--seed", "0", "--out", str(tmp_path), "--epochs", "2"])
    printed = capsys.readouterr().out
    epochs = re.findall(r"^Epoch +(\d+) \| Dist end +[\d.]+ \| Loss +[\d.]+$", printed, flags=re.M)
    assert epochs == ["1", "2"]
    written = _summary(tmp_path)
    assert written["mean_distance"] == pytest.approx(summary["mean_distance"])
    assert written["dtype"] == "float32"
    assert len(written["epochs"]) == 2
    assert 0.5 < written["mean_distance"] < 1.5
    for name in ("atoms.png", "loss_curve.png", "network.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.slow  # ~6-9 s; the default suite keeps its 7-minute budget
def test_nn_bond_seeds_writes_distribution(tmp_path):
    result = nn_bond_seeds.main(["--seeds", "2", "--epochs", "1", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "seeds.json").read_text())
    assert [row["seed"] for row in written["seeds"]] == [0, 1]
    assert written["stats"]["n_seeds"] == 2
    assert result["stats"]["mean_distance_min"] <= result["stats"]["mean_distance_max"]
    row = written["seeds"][0]
    assert row["mean_distance_at_double_steps"] > 0 and len(row["network_output_0.4_to_1.2"]) == 2
    assert (tmp_path / "summary.json").exists()


def test_nn_bond_network_is_flux_initialised():
    model = nn_bond.flux_chain(jax.random.PRNGKey(3))
    first, second = model.layers
    assert first.weight.shape == (5, 1) and second.weight.shape == (1, 5)
    for layer in (first, second):  # Glorot uniform with fan_in + fan_out = 6: U(−1, 1); zero biases
        assert layer.weight.dtype == jnp.float32
        assert np.all(np.abs(np.asarray(layer.weight)) <= 1.0)
        assert np.all(np.asarray(layer.bias) == 0.0)
    other = nn_bond.flux_chain(jax.random.PRNGKey(4))
    assert not np.allclose(np.asarray(first.weight), np.asarray(other.layers[0].weight))
    # the MLP is Chain(Dense(1, 5, relu), Dense(5, 1, tanh))
    r = jnp.array([0.7], jnp.float32)
    hidden = jax.nn.relu(first.weight @ r + first.bias)
    assert float(model(r)[0]) == pytest.approx(float(jnp.tanh(second.weight @ hidden + second.bias)[0]), rel=1e-6)


def test_nn_bond_force_is_the_references():
    """Force on i = model(|ab|)·ab/|ab| with ab = vector(c_i, c_j); on j the opposite; others zero."""
    import equinox as eqx

    import diffmd as md

    model = nn_bond.flux_chain(jax.random.PRNGKey(1))
    system = nn_bond.make_system(model)
    forces = np.asarray(eqx.filter_jit(md.forces)(system))  # (the model holds functions: filter_jit)
    c = np.asarray(nn_bond.coords)
    ab = c[2] - c[0]
    dist = np.linalg.norm(ab)
    expected = float(model(jnp.array([dist], jnp.float32))[0]) * ab / dist
    np.testing.assert_allclose(forces[0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(forces[2], -expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(forces[1], 0.0, atol=1e-7)


@pytest.mark.slow  # ~10 s; the default suite keeps the 7-minute budget
def test_lj_sigma_ensemble_runs_and_writes_outputs(tmp_path):
    """Two SGD epochs on 4 vmapped replicas: σ moves by lr × the (per-replica clipped) gradient."""
    summary = lj_sigma_ensemble.main(["--epochs", "2", "--steps", "30", "--replicas", "4", "--curve-replicas", "2",
                                      "--out", str(tmp_path)])
    written = _summary(tmp_path)
    h = written["history"]
    assert [r["epoch"] for r in h] == [1, 2]
    assert h[0]["sigma"] == pytest.approx(0.60 / 2 ** (1 / 6))
    # |dσ| = lr · |grad| (one parameter: the gradient norm is |dloss/dσ|), at most lr · clip
    assert abs(h[1]["sigma"] - h[0]["sigma"]) == pytest.approx(2e-2 * h[0]["grad_norm"], rel=1e-6)
    assert h[0]["grad_norm"] <= 2.0 + 1e-9
    assert written["sigma"] == pytest.approx(summary["sigma"])
    assert len(written["curve"]["mms_end_mean"]) == len(written["curve"]["sigmas"]) == 6
    assert (tmp_path / "ensemble.png").stat().st_size > 1000
