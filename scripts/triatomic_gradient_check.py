"""Are examples/triatomic_angle.py's gradients exact, and where exactly does the gradient change sign?

1. dLoss/dθ at θ = 100° by reverse mode (the example's `value_and_grad`), forward mode
   (`jax.jvp` through `simulate(grad_mode="forward")`) and a central finite difference (float64;
   the loss is smooth there, the distance being 1.08). This is the measurement behind the
   example's learning rate: the reference printed gradients of 3.1–6.5, the exact ones are ≈ 0.4.
2. The θ where the exact gradient changes sign, by bisection (the example's scan interpolates
   linearly between grid points 3° apart, across the kink of |d − 1|).

    .venv/bin/python scripts/triatomic_gradient_check.py --out results/triatomic_gradient_check

Writes OUT/gradient_check.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import diffmd as md  # noqa: E402
import triatomic_angle as ex  # noqa: E402  (also turns on float64)
from diffmd.io import write_json  # noqa: E402


def loss_forward_mode(theta):
    """The example's loss, simulated with grad_mode="forward" (for jax.jvp)."""
    c = md.simulate(ex.simulation(theta), ex.integrator, ex.n_steps, grad_mode="forward").coords
    dist_end = 0.5 * (jnp.linalg.norm(md.vector(c[0], c[2], ex.boundary)) + jnp.linalg.norm(md.vector(c[3], c[5], ex.boundary)))
    return jnp.abs(dist_end - ex.dist_true)


def gradient_check(theta_deg: float = 100.0, h: float = 1e-5) -> dict:
    theta = jnp.deg2rad(jnp.float64(theta_deg))
    reverse = float(ex.value_and_grad(theta)[1])
    forward = float(jax.jvp(jax.jit(loss_forward_mode), (theta,), (jnp.float64(1.0),))[1])
    loss = lambda t: float(ex.value_and_grad(t)[0][0])  # noqa: E731
    central = (loss(theta + h) - loss(theta - h)) / (2 * h)
    return {"theta_deg": theta_deg, "h_rad": h, "reverse": reverse, "forward": forward, "central_fd": central,
            "rel_diff_fd": abs(reverse - central) / abs(central), "rel_diff_forward": abs(reverse - forward) / abs(forward)}


def bisect_sign_change(lo_deg: float = 87.0, hi_deg: float = 93.0, iterations: int = 30) -> float:
    """Bisection on the sign of the exact gradient between lo (negative) and hi (positive)."""
    for _ in range(iterations):
        mid = 0.5 * (lo_deg + hi_deg)
        grad = float(ex.value_and_grad(jnp.deg2rad(jnp.float64(mid)))[1])
        lo_deg, hi_deg = (mid, hi_deg) if grad < 0 else (lo_deg, mid)
    return 0.5 * (lo_deg + hi_deg)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--theta", type=float, default=100.0, help="θ (degrees) of the gradient check")
    p.add_argument("--iterations", type=int, default=30, help="bisection steps")
    p.add_argument("--out", type=Path, default=Path("results/triatomic_gradient_check"))
    args = p.parse_args(argv)
    check = gradient_check(args.theta)
    print(f"Gradient at θ = {args.theta:g}° (float64): reverse {check['reverse']:.9f} | forward (jvp) "
          f"{check['forward']:.9f} | central FD (h = {check['h_rad']:g} rad) {check['central_fd']:.9f} | "
          f"rel. diff. FD {check['rel_diff_fd']:.1e}, forward {check['rel_diff_forward']:.1e}")
    bisected = bisect_sign_change(iterations=args.iterations)
    print(f"The exact gradient changes sign at θ = {bisected:.3f}° (bisection)")
    result = {"gradient_check": check, "sign_change_bisect_deg": bisected}
    write_json(args.out / "gradient_check.json", result)
    return result


if __name__ == "__main__":
    main()
