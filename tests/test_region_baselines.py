"""The region-rate task's baselines and explained variance, on hand-made batches (no
training): every number below is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from traxon.tasks import Batch, RegionRates


def batch(y: list[list[float]], mask: list[float]) -> Batch:
    """A batch of one sequence: ``y`` ``(T, R)`` rates, ``mask`` ``(T,)``."""
    ys = np.asarray(y, np.float32)[:, None, :]
    return Batch(
        x=np.zeros((ys.shape[0], 1, 1), np.float32),
        y=ys,
        mask=np.asarray(mask, np.float32)[:, None],
        label=np.zeros(1, np.int32),
    )


def test_baselines_and_explained_variance_on_a_hand_made_batch() -> None:
    task = RegionRates(n_regions=2, n_in=1, n_steps=3, window=1)
    # Training means over the masked steps (the last row is masked out): region 0 -> 10,
    # region 1 -> 30; their mean, the constant predictor, is 20.
    train = batch([[8.0, 28.0], [12.0, 32.0], [1000.0, 1000.0]], [1.0, 1.0, 0.0])
    test = batch([[10.0, 40.0], [20.0, 30.0], [-5.0, 0.0]], [1.0, 1.0, 0.0])
    base = task.baselines(test, train, scale=10.0)
    # constant 20: errors (-1, 2) and (0, 1) in units of 10 Hz -> (1 + 4 + 0 + 1) / 4.
    assert base["constant"] == pytest.approx(1.5)
    # region means (10, 30): errors (0, 1) and (1, 0) -> (0 + 1 + 1 + 0) / 4.
    assert base["region_mean"] == pytest.approx(0.5)
    # Several training batches pool their masked steps.
    other = batch([[10.0, 30.0], [10.0, 30.0], [0.0, 0.0]], [1.0, 1.0, 0.0])
    assert task.baselines(test, [train, other])["region_mean"] == pytest.approx(0.5)
    assert task.baselines(test, train, scale=5.0)["region_mean"] == pytest.approx(2.0)
    assert RegionRates.score(test.y, test) == 0.0
    assert RegionRates.score(np.array([10.0, 30.0]), test) == pytest.approx(0.5)
    assert RegionRates.explained_variance(0.125, base["region_mean"]) == pytest.approx(0.75)
    assert RegionRates.explained_variance(1.0, 0.5) == pytest.approx(-1.0)


def test_baselines_refuse_empty_or_mismatched_training_data() -> None:
    task = RegionRates(n_regions=2, n_in=1, n_steps=3, window=1)
    test = batch([[1.0, 2.0]] * 3, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no masked steps"):
        task.baselines(test, batch([[1.0, 2.0]] * 3, [0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="at least one batch"):
        task.baselines(test, [])
    with pytest.raises(ValueError, match=r"R=2"):
        task.baselines(test, batch([[1.0, 2.0, 3.0]] * 3, [1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="region_mean_loss"):
        RegionRates.explained_variance(0.1, 0.0)


def test_burn_in_leaves_the_first_steps_unscored() -> None:
    task = RegionRates(n_regions=2, n_in=4, n_steps=200, window=50, burn_in=100)
    assert task.sample(0, 2).mask[:, 0].nonzero()[0].tolist() == [149, 199]
    assert RegionRates(n_regions=2, n_in=4, n_steps=200, window=50).mask(1).sum() == 4.0
    with pytest.raises(ValueError, match="burn_in"):
        RegionRates(n_regions=2, n_in=4, n_steps=200, window=50, burn_in=151)
