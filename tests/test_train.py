"""train(): optimisation, history, clipping, the NaN guard, and checkpoint/resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffmd.train import TrainingError, clip_gradient, train


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


def test_clip_gradient_clips_each_replica_on_its_own():
    """Per-replica clipping inside autodiff equals clipping explicit per-replica gradients."""
    scales = jnp.array([0.5, -3.0, 10.0, 1.5])

    def per_replica(p, s):
        return s * jnp.sin(p) + p**2

    def clipped_mean(p):
        copies = jnp.broadcast_to(p, scales.shape)
        return jnp.mean(jax.vmap(lambda c, s: per_replica(clip_gradient(c, 2.0 / len(scales)), s))(copies, scales))

    p = jnp.float32(0.3)
    explicit = jnp.mean(jnp.clip(jax.vmap(jax.grad(per_replica), (None, 0))(p, scales), -2.0, 2.0))
    np.testing.assert_allclose(jax.grad(clipped_mean)(p), explicit, rtol=1e-6)
    assert clipped_mean(p) == pytest.approx(float(jnp.mean(jax.vmap(per_replica, (None, 0))(p, scales))))
    # unclipped gradient differs: the check can fail
    assert abs(float(jax.grad(lambda q: jnp.mean(jax.vmap(per_replica, (None, 0))(q, scales)))(p)) - float(explicit)) > 0.1
    # a pytree: the norm over all its leaves is bounded
    g = jax.grad(lambda t: jnp.sum(clip_gradient(t, 1.0)["a"] * 3.0) + 4.0 * clip_gradient(t, 1.0)["b"])(
        {"a": jnp.ones(2), "b": jnp.float32(1.0)})
    norm = np.sqrt(np.sum(np.asarray(g["a"]) ** 2) + float(g["b"]) ** 2)
    assert norm <= 2.0 + 1e-5  # each of the two uses is clipped to 1
