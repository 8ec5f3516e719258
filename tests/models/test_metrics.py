import pytest
import torch

from src.models.metrics import ToleranceAccuracy, WeightedMean


def test_hand_computed_cases():
    metric = ToleranceAccuracy(tolerance=0.04)
    preds = torch.tensor([0.10, 0.50, 0.20, 0.90])
    target = torch.tensor([0.13, 0.45, 0.20, 0.80])
    # errors 0.03 (ok), 0.05 (wrong), 0 (ok), 0.10 (wrong)
    assert metric(preds, target).item() == pytest.approx(0.5)


def test_boundary_counts_as_correct():
    metric = ToleranceAccuracy(tolerance=0.25)
    assert metric(torch.tensor([0.25, -0.25, 0.5]), torch.zeros(3)).item() == pytest.approx(2 / 3)


def test_accumulates_over_batches_like_one_pass():
    generator = torch.Generator().manual_seed(0)
    preds = torch.rand(103, 1, generator=generator)
    target = torch.rand(103, 1, generator=generator)
    whole = ToleranceAccuracy(0.1)
    whole.update(preds, target)
    batched = ToleranceAccuracy(0.1)
    for p, t in zip(preds.split(10), target.split(10), strict=True):
        batched.update(p, t)
    expected = ((preds - target).abs() <= 0.1).float().mean()
    assert whole.compute() == pytest.approx(expected.item())
    assert batched.compute() == pytest.approx(expected.item())
    assert batched.total.item() == 103


def test_refuses_non_positive_tolerance_and_shape_mismatch():
    with pytest.raises(ValueError, match="tolerance"):
        ToleranceAccuracy(0.0)
    with pytest.raises(ValueError, match="differ"):
        ToleranceAccuracy(0.1).update(torch.zeros(3, 1), torch.zeros(3))


def test_the_weighted_mean_weighs_each_batch_by_its_samples():
    # Batches of 3 and 1 samples: the epoch's loss is the mean over its 4 samples.
    metric = WeightedMean()
    metric.update(torch.tensor(1.0), weight=3)
    metric.update(torch.tensor(5.0), weight=1)
    assert metric.compute().item() == pytest.approx(2.0)
