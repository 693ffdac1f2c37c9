"""train(): optimisation, history, clipping, the NaN guard, and checkpoint/resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffmd.train import TrainingError, train


def _loss(params, key):
    noisy = params["w"] + 0.01 * jax.random.normal(key, params["w"].shape)
    return jnp.sum((noisy - 2.0) ** 2), {"mean": jnp.mean(noisy)}


def test_train_converges_and_records_history():
    result = train(_loss, {"w": jnp.zeros(3)}, optax.adam(0.1), 60, key=jax.random.PRNGKey(0), has_aux=True,
                   progress=False)
    assert np.allclose(result.params["w"], 2.0, atol=0.1)
    assert [r["epoch"] for r in result.history] == list(range(1, 61))
    assert result.history[-1]["loss"] < 0.1 * result.history[0]["loss"]
    assert "mean" in result.history[0] and "grad_norm" in result.history[0]


def test_resume_gives_the_same_numbers_as_an_uninterrupted_run(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    full = train(_loss, {"w": jnp.zeros(3), "scale": 1.0}, optax.adam(0.1), 20, key=jax.random.PRNGKey(1),
                 has_aux=True, progress=False)
    part = train(_loss, {"w": jnp.zeros(3), "scale": 1.0}, optax.adam(0.1), 8, key=jax.random.PRNGKey(1),
                 has_aux=True, progress=False, checkpoint=checkpoint)
    assert len(part.history) == 8 and checkpoint.exists()
    resumed = train(_loss, {"w": jnp.zeros(3), "scale": 1.0}, optax.adam(0.1), 20, key=jax.random.PRNGKey(1),
                    has_aux=True, progress=False, checkpoint=checkpoint)
    np.testing.assert_array_equal(resumed.params["w"], full.params["w"])
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]


def test_clipping_limits_the_step():
    result = train(lambda p: 1e6 * jnp.sum(p["w"] ** 2), {"w": jnp.ones(2)}, optax.sgd(1.0), 1,
                   clip_norm=0.5, progress=False)
    assert np.linalg.norm(np.asarray(result.params["w"]) - 1.0) == pytest.approx(0.5, rel=1e-5)


def test_nan_guard_names_the_epoch_and_keeps_good_parameters(tmp_path):
    def loss(params):
        return jnp.where(params["w"][0] < 0.5, jnp.sum(params["w"] ** 2), jnp.nan)

    checkpoint = tmp_path / "nan.ckpt"
    with pytest.raises(TrainingError, match=r"epoch 3: non-finite loss"):
        train(loss, {"w": jnp.full(2, 0.1)}, optax.sgd(-1.0), 10, progress=False, checkpoint=checkpoint)
    # the checkpoint holds the last good epoch (2), whose parameters are finite
    resumed = train(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.full(2, 0.1)}, optax.sgd(0.0), 2,
                    progress=False, checkpoint=checkpoint)
    assert len(resumed.history) == 2 and np.all(np.isfinite(resumed.params["w"]))
