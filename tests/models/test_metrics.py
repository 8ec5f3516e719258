import pytest
import torch

from src.models.metrics import (
    BitsPerSymbol,
    KeySetAccuracy,
    KeyStepAccuracy,
    ProbabilityErrorAccuracy,
    SequencesPredicted,
    SetStepAccuracy,
    StepAccuracy,
    ToleranceAccuracy,
    WeightedMean,
    next_sets_predicted,
)


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


def test_the_strict_tolerance_refuses_the_boundary():
    metric = ToleranceAccuracy(tolerance=0.25, inclusive=False)
    assert metric(torch.tensor([0.25, 0.1, 0.5]), torch.zeros(3)).item() == pytest.approx(1 / 3)


def logits_of(classes: list[list[int]], num_classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float() * 5


def test_step_accuracy_counts_only_the_masked_steps():
    logits = logits_of([[0, 1, 2], [2, 2, 0]])
    target = torch.tensor([[0, 0, 2], [2, 1, 1]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # Counted: (0 ok), (1 vs 0 wrong), (2 ok): 2 of 3. Unmasked, 3 of 6.
    assert StepAccuracy()(logits, target, mask).item() == pytest.approx(2 / 3)
    assert StepAccuracy()(logits, target).item() == pytest.approx(3 / 6)
    assert KeyStepAccuracy()(logits, target, key_mask=~mask).item() == pytest.approx(1 / 3)


def test_the_next_symbol_sets_must_be_the_most_active_units():
    # Possible sets {0, 1} and {2}.
    target = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    right = torch.tensor([[[2.0, 0.5, 0.1], [0.0, -1.0, 3.0]]])
    wrong = torch.tensor([[[2.0, 0.1, 0.5], [0.0, -1.0, 3.0]]])  # unit 2 above possible unit 1
    assert next_sets_predicted(right, target).tolist() == [[True, True]]
    assert next_sets_predicted(wrong, target).tolist() == [[False, True]]
    mask = torch.tensor([[True, True]])
    assert SequencesPredicted()(right, target, mask).item() == 1.0
    assert SequencesPredicted()(wrong, target, mask).item() == 0.0
    assert SetStepAccuracy()(wrong, target, mask).item() == pytest.approx(0.5)
    # The wrong step masked away (padding): the string is right.
    assert SequencesPredicted()(wrong, target, torch.tensor([[False, True]])).item() == 1.0
    assert KeySetAccuracy()(wrong, target, key_mask=torch.tensor([[False, True]])).item() == 1.0


def test_the_probability_error_rule_needs_every_output_within_the_threshold():
    # Softmax of these logits: [0.8, 0.1, 0.1] (correct), and [0.6, 0.2, 0.2] (0.4 off: wrong).
    confident = torch.log(torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2]]))
    metric = ProbabilityErrorAccuracy(0.3)
    assert metric(confident, torch.tensor([0, 0])).item() == pytest.approx(0.5)


def test_bits_per_symbol_is_the_masked_cross_entropy_in_bits():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75]]]))
    target = torch.tensor([[0, 0]])
    metric = BitsPerSymbol()
    assert metric(logits, target, torch.tensor([[True, False]])).item() == pytest.approx(1.0)
    assert BitsPerSymbol()(logits, target).item() == pytest.approx((1.0 + 2.0) / 2)
