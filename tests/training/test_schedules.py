"""Schedules peak at the configured lr after warmup and decay as documented."""

import math

import pytest
import torch

from seqformer.errors import ConfigError
from seqformer.training.schedules import SCHEDULES, make_scheduler

LR = 1e-3


def lrs(name: str, warmup: int, total: int, min_lr_ratio: float = 0.0) -> list[float]:
    """The lr used by updates 1..total, stepping like the trainer does."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = make_scheduler(optimizer, name, warmup, total, min_lr_ratio=min_lr_ratio)
    used = []
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return used


@pytest.mark.parametrize("name", SCHEDULES)
def test_warmup_rises_linearly_to_the_configured_lr(name: str) -> None:
    used = lrs(name, warmup=10, total=50)
    assert used[0] == pytest.approx(LR / 10)
    assert used[9] == pytest.approx(LR)  # update number 10 == warmup_steps
    assert max(used) == pytest.approx(LR)
    assert all(a < b for a, b in zip(used[:9], used[1:10], strict=True))


@pytest.mark.parametrize("name", ["noam", "inverse_sqrt"])
def test_noam_decays_as_inverse_sqrt(name: str) -> None:
    used = lrs(name, warmup=16, total=200)
    for n in (16, 64, 100, 200):
        assert used[n - 1] == pytest.approx(LR * math.sqrt(16 / n))
    assert all(a > b for a, b in zip(used[15:], used[16:], strict=False))


def test_noam_is_vaswanis_formula_normalised() -> None:
    d_model, warmup = 512, 40
    used = lrs("noam", warmup, 300)
    vaswani = [d_model**-0.5 * min(n**-0.5, n * warmup**-1.5) for n in range(1, 301)]
    peak = max(vaswani)
    for ours, theirs in zip(used, vaswani, strict=True):
        assert ours == pytest.approx(LR * theirs / peak)


def test_cosine_decays_monotonically_to_min_lr() -> None:
    used = lrs("cosine", warmup=5, total=65, min_lr_ratio=0.1)
    decay = used[4:]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert used[-1] == pytest.approx(0.1 * LR)
    halfway = 5 + (65 - 5) // 2  # update number at half the decay phase
    assert used[halfway - 1] == pytest.approx(LR * (0.1 + 0.9 * 0.5))


def test_cosine_stays_at_min_after_total_steps() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = make_scheduler(optimizer, "cosine", 2, 10, min_lr_ratio=0.2)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * LR)


def test_linear_decays_to_zero_and_constant_stays_flat() -> None:
    linear = lrs("linear", warmup=4, total=20)
    assert all(a > b for a, b in zip(linear[3:], linear[4:], strict=False))
    assert linear[-1] == pytest.approx(0.0)
    constant = lrs("constant", warmup=4, total=20)
    assert constant[3:] == pytest.approx([LR] * 17)


def test_zero_warmup_starts_at_peak() -> None:
    assert lrs("cosine", warmup=0, total=10)[0] == pytest.approx(LR)
    assert lrs("constant", warmup=0, total=3) == pytest.approx([LR] * 3)


def test_unknown_name_lists_valid_names() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError, match="noam, inverse_sqrt, cosine, linear, constant"):
        make_scheduler(optimizer, "exponential", 10, 100)


@pytest.mark.parametrize(
    ("name", "warmup", "total", "ratio", "field"),
    [
        ("noam", 0, 100, 0.0, "warmup_steps"),
        ("cosine", -1, 100, 0.0, "warmup_steps"),
        ("cosine", 1, 0, 0.0, "max_steps"),
        ("cosine", 1, 10, 1.5, "min_lr_ratio"),
    ],
)
def test_invalid_settings_name_the_field(
    name: str, warmup: int, total: int, ratio: float, field: str
) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError, match=field):
        make_scheduler(optimizer, name, warmup, total, min_lr_ratio=ratio)


def test_state_dict_is_plain_data_for_json() -> None:
    import json

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = make_scheduler(optimizer, "noam", 10, 100, d_model=512)
    optimizer.step()
    scheduler.step()
    assert json.loads(json.dumps(scheduler.state_dict()))["last_epoch"] == 1


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_progress_function_replaces_the_step_count_after_warmup(name: str) -> None:
    """With ``progress`` the decay follows it (a time budget), not max_steps; warmup still
    counts steps."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    spent = [0.0]
    scheduler = make_scheduler(optimizer, name, 2, 1_000_000, progress=lambda: spent[0])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR / 2)  # warmup, whatever spent
    for fraction in (0.0, 0.25, 0.5, 1.0, 3.0):
        spent[0] = fraction
        optimizer.step()
        scheduler.step()
        f = min(fraction, 1.0)
        want = 0.5 * (1 + math.cos(math.pi * f)) if name == "cosine" else 1 - f
        assert optimizer.param_groups[0]["lr"] == pytest.approx(LR * want)


def test_progress_needs_a_schedule_with_an_end() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    with pytest.raises(ConfigError, match="cannot follow the time budget"):
        make_scheduler(optimizer, "noam", 10, 100, progress=lambda: 0.0)
