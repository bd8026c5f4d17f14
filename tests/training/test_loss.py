"""label_smoothed_cross_entropy must be exactly PyTorch's cross-entropy, plus safe edge cases."""

import pytest
import torch
import torch.nn.functional as F

from seqformer.training.loss import label_smoothed_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_matches_torch_cross_entropy_with_padding(smoothing: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    target = torch.randint(1, 11, (3, 5))
    target[0, 3:] = 0  # padding
    target[2, 1:] = 0

    loss, nll, n_tokens = label_smoothed_cross_entropy(logits, target, smoothing, ignore_index=0)

    expected = F.cross_entropy(
        logits.view(-1, 11), target.view(-1), label_smoothing=smoothing, ignore_index=0
    )
    expected_nll = F.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=0)
    assert torch.allclose(loss, expected, atol=1e-6, rtol=0)
    assert torch.allclose(nll, expected_nll, atol=1e-6, rtol=0)
    assert n_tokens.item() == 15 - 2 - 4


def test_gradient_matches_torch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 7, requires_grad=True)
    target = torch.tensor([3, 0, 5, 1])
    label_smoothed_cross_entropy(logits, target, 0.1)[0].backward()
    ours = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, target, label_smoothing=0.1, ignore_index=0).backward()
    assert torch.allclose(ours, logits.grad, atol=1e-7)


def test_smoothing_raises_loss_above_nll_for_confident_predictions() -> None:
    logits = torch.tensor([[10.0, -10.0, -10.0]])
    target = torch.tensor([0])
    loss, nll, _ = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=-100)
    assert loss > nll + 1.0


def test_all_padding_gives_zero_loss_not_nan() -> None:
    logits = torch.randn(2, 3, 5, requires_grad=True)
    target = torch.zeros(2, 3, dtype=torch.long)
    loss, nll, n_tokens = label_smoothed_cross_entropy(logits, target, 0.1)
    loss.backward()
    assert loss.item() == 0.0 and nll.item() == 0.0 and n_tokens.item() == 0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_nll_is_detached_and_loss_is_not() -> None:
    logits = torch.randn(2, 5, requires_grad=True)
    loss, nll, _ = label_smoothed_cross_entropy(logits, torch.tensor([1, 2]), 0.1)
    assert loss.requires_grad and not nll.requires_grad


def test_rejects_invalid_smoothing() -> None:
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothed_cross_entropy(torch.randn(2, 3), torch.tensor([1, 2]), 1.0)
