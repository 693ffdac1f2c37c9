"""Full acceptance runs of the examples (`-m slow`): triatomic angle, neural-network bond, protein in water."""

import json
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import nn_bond  # noqa: E402
import nn_bond_seeds  # noqa: E402
import triatomic_angle  # noqa: E402

pytestmark = pytest.mark.slow


def test_triatomic_angle_learns_the_angle(tmp_path):
    triatomic_angle.main(["--seed", "0", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["epochs"]) == 20
    assert 88.0 <= summary["theta_deg"] <= 93.0
    assert 87.0 <= summary["sign_change_deg"] <= 93.0
    assert len(summary["scan"]["theta_deg"]) == 60 and summary["scan"]["theta_deg"][-1] == 180.0
    for name in ("gradient_vs_theta.png", "molecules.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_triatomic_gradients_are_exact(tmp_path):
    """scripts/triatomic_gradient_check.py: reverse = forward = finite difference at 100°; the exact
    gradient changes sign near 90.2° (the learning rate's and the target's justification)."""
    sys.path.insert(0, str(EXAMPLES.parent / "scripts"))
    import triatomic_gradient_check

    result = triatomic_gradient_check.main(["--out", str(tmp_path)])
    check = result["gradient_check"]
    assert check["rel_diff_fd"] < 1e-6 and check["rel_diff_forward"] < 1e-9
    assert 0.40 < check["reverse"] < 0.47
    assert 87.0 <= result["sign_change_bisect_deg"] <= 93.0
    assert (tmp_path / "gradient_check.json").exists()


def test_nn_bond_default_seed_reaches_the_target(tmp_path):
    nn_bond.main(["--seed", "0", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["epochs"]) == 20
    assert abs(summary["mean_distance"] - 1.0) <= 0.05


def test_nn_bond_seed_distribution(tmp_path):
    """Measured: 18 of seeds 0–19 within 0.05 (misses are Adam overshoot, see nn_bond's docstring)."""
    result = nn_bond_seeds.main(["--seeds", "20", "--out", str(tmp_path)])
    stats = result["stats"]
    assert stats["n_seeds"] == 20
    assert stats["n_passed"] >= 16
    assert 0.9 <= stats["mean_distance_min"] and stats["mean_distance_max"] <= 1.1
    assert stats["mean_distance_at_double_steps_median"] > 1.2  # a calibrated push, not a bond length


def test_protein_in_water_quick_run(tmp_path):
    """~3 minutes: villin minimised (diffmd.minimize), run under LangevinMiddle with bonds to H and
    water rigid, and d Rg / d(charge) through 50 steps agreeing with a central difference."""
    import protein_in_water

    summary = protein_in_water.main(["--quick", "--out", str(tmp_path)])
    assert summary["minimised_kj_mol"][1] < summary["minimised_kj_mol"][0]
    assert (tmp_path / "energies.png").exists() and (tmp_path / "temperature.png").exists()
    assert summary["d_rg_d_charge_ala_ca"] == pytest.approx(summary["d_rg_d_charge_central_difference"], rel=5e-2)
