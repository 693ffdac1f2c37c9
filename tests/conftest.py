"""Test configuration: float64 available everywhere (float32 tests ask for it explicitly)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
