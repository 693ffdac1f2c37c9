"""gradient_growth measures the growth rate of gradients with the horizon."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffmd.diagnostics import gradient_growth, plot_gradient_growth


def test_growth_rate_of_a_known_exponential(tmp_path):
    # d/dθ of θ·exp(0.05 n) grows exactly like exp(0.05 n)
    result = gradient_growth(lambda theta, n: theta * jnp.exp(0.05 * n), 1.0, [10, 20, 40])
    assert result["growth_rate"] == pytest.approx(0.05, rel=1e-6)
    np.testing.assert_allclose(result["geometric_mean"], np.exp(0.05 * np.array([10, 20, 40])), rtol=1e-6)
    keyed = gradient_growth(lambda theta, n, key: theta * jnp.exp(0.02 * n) * (1 + jax.random.uniform(key)),
                            1.0, [5, 10], keys=jax.random.split(jax.random.PRNGKey(0), 3))
    assert keyed["norms"].shape == (2, 3)
    assert keyed["growth_rate"] == pytest.approx(0.02, rel=1e-6)
    assert plot_gradient_growth({"exp": result, "keyed": keyed}, tmp_path / "growth.png").exists()
