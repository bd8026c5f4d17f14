"""Pickle-free checkpoints: atomic writes, tied weights, clear errors, exact training state."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from seqformer.errors import CheckpointError
from seqformer.training.checkpoint import (
    atomic_write,
    commit_directory,
    committed_directory,
    load_training_state,
    load_weights,
    read_weights,
    save_training_state,
    save_weights,
)
from seqformer.training.schedules import make_scheduler


class TiedLM(nn.Module):
    """Embedding and output projection share one matrix, as in Vaswani et al. section 3.4."""

    def __init__(self, vocab: int = 11, dim: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.embed(x))) * self.scale)


def mlp(seed: int, hidden: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 2))


def only_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- atomic writes --------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, failure: BaseException
) -> None:
    target = tmp_path / "model.safetensors"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"old complete file"))

    def half_write(tmp: Path) -> None:
        tmp.write_bytes(b"new but trunc")
        raise failure

    with pytest.raises(type(failure)):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"old complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_atomic_write_replaces_and_creates_parent(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "x.txt"
    atomic_write(target, lambda tmp: tmp.write_text("one"))
    atomic_write(target, lambda tmp: tmp.write_text("two"))
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]


def test_commit_directory_swaps_and_survives_a_crash_between_renames(tmp_path: Path) -> None:
    final = tmp_path / "last"
    for content in ("first", "second"):
        scratch = tmp_path / "last.partial"
        scratch.mkdir()
        (scratch / "f").write_text(content)
        commit_directory(scratch, final)
    assert (final / "f").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]

    final.rename(tmp_path / "last.old")  # what a crash after the first rename leaves
    assert committed_directory(final) == tmp_path / "last.old"
    assert committed_directory(tmp_path / "nothing") is None


# --- weights ----------------------------------------------------------------------------------


def test_weights_round_trip_exactly(tmp_path: Path) -> None:
    source, target = mlp(0), mlp(1)
    save_weights(source, tmp_path / "w.safetensors")
    load_weights(target, tmp_path / "w.safetensors")
    for (key, a), (_, b) in zip(
        source.state_dict().items(), target.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key


def test_tied_weights_are_stored_once_and_stay_tied_on_load(tmp_path: Path) -> None:
    path = tmp_path / "tied.safetensors"
    torch.manual_seed(0)
    source = TiedLM()
    save_weights(source, path)
    with safe_open(str(path), framework="pt") as f:
        stored = set(f.keys())
    assert ("embed.weight" in stored) != ("out.weight" in stored)  # exactly one copy

    torch.manual_seed(1)
    target = TiedLM()
    load_weights(target, path)  # strict: must accept the alias key
    assert target.out.weight is target.embed.weight
    assert torch.equal(target.embed.weight, source.embed.weight)
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(target(x), source(x))
    assert set(read_weights(path)) == set(source.state_dict())


def test_overlapping_views_and_non_contiguous_tensors_are_saved_as_copies(tmp_path: Path) -> None:
    fused = torch.arange(12.0).view(3, 4)
    state = {"q": fused[:1], "k": fused[1:], "t": fused.t(), "same": fused}
    save_weights(state, tmp_path / "views.safetensors")
    loaded = read_weights(tmp_path / "views.safetensors")
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key


def test_load_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        load_weights(mlp(0), tmp_path / "absent.safetensors")
    assert "absent.safetensors" in only_line(error)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_load_corrupt_file_raises_checkpoint_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(mlp(0), path)
    data = path.read_bytes()
    path.write_bytes(b"\x07not safetensors" * 20 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_weights(mlp(0), path)
    assert str(path) in only_line(error)


def test_load_wrong_shape_names_the_key_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(mlp(0, hidden=8), path)
    with pytest.raises(CheckpointError) as error:
        load_weights(mlp(0, hidden=5), path)
    message = only_line(error)
    assert str(path) in message and "'0.weight'" in message and "(8, 4)" in message
    assert "config" in message


def test_load_missing_or_unexpected_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    state = mlp(0).state_dict()
    save_weights({k: v for k, v in state.items() if k != "3.bias"}, path)
    with pytest.raises(CheckpointError, match="'3.bias' is missing"):
        load_weights(mlp(0), path)
    save_weights({**state, "extra.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="'extra.weight'"):
        load_weights(mlp(0), path)


# --- training state ---------------------------------------------------------------------------


def make_training(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    model = mlp(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    scheduler = make_scheduler(optimizer, "noam", 3, 100)
    return model, optimizer, scheduler


def run_steps(model: nn.Module, optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(5, 4)  # consumes the global RNG, like dropout does
        model(x).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def test_training_state_restore_continues_bit_identically(tmp_path: Path) -> None:
    torch.manual_seed(123)
    model, optimizer, scheduler = make_training(0)
    run_steps(model, optimizer, scheduler, 4)
    save_weights(model, tmp_path / "model.safetensors")
    save_training_state(tmp_path, optimizer, scheduler, step=4, extra={"note": "hi"})
    expected_random = (random.random(), np.random.rand())
    run_steps(model, optimizer, scheduler, 4)

    torch.manual_seed(999)  # the restore must override whatever state the RNGs are in
    random.seed(999)
    resumed, optimizer2, scheduler2 = make_training(1)
    load_weights(resumed, tmp_path / "model.safetensors")
    step, extra = load_training_state(tmp_path, optimizer2, scheduler2)
    assert (step, extra) == (4, {"note": "hi"})
    assert (random.random(), np.random.rand()) == expected_random
    run_steps(resumed, optimizer2, scheduler2, 4)

    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert scheduler2.state_dict() == scheduler.state_dict()


def test_training_state_files_are_pickle_free_and_complete(tmp_path: Path) -> None:
    model, optimizer, scheduler = make_training(0)
    run_steps(model, optimizer, scheduler, 1)
    save_training_state(tmp_path, optimizer, scheduler, step=1, extra={})
    record = json.loads((tmp_path / "trainer_state.json").read_text())
    assert record["step"] == 1 and len(record["tensors_sha256"]) == 64
    assert record["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.98]
    with safe_open(str(tmp_path / "trainer_state.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("rng.torch").dtype == torch.uint8
    assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step"} <= keys
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trainer_state.json",
        "trainer_state.safetensors",
    ]


def test_tensor_file_not_matching_the_json_is_rejected(tmp_path: Path) -> None:
    model, optimizer, scheduler = make_training(0)
    run_steps(model, optimizer, scheduler, 1)
    save_training_state(tmp_path, optimizer, scheduler, step=1, extra={})
    old_tensors = (tmp_path / "trainer_state.safetensors").read_bytes()
    run_steps(model, optimizer, scheduler, 1)
    save_training_state(tmp_path, optimizer, scheduler, step=2, extra={})
    (tmp_path / "trainer_state.safetensors").write_bytes(old_tensors)
    with pytest.raises(CheckpointError, match="does not match") as error:
        load_training_state(tmp_path, *make_training(0)[1:])
    assert str(tmp_path) in only_line(error)


def test_missing_or_mismatched_training_state_raises(tmp_path: Path) -> None:
    _, optimizer, scheduler = make_training(0)
    with pytest.raises(CheckpointError, match="trainer_state.json"):
        load_training_state(tmp_path / "nope", optimizer, scheduler)

    model, optimizer, scheduler = make_training(0)
    run_steps(model, optimizer, scheduler, 1)
    save_training_state(tmp_path, optimizer, scheduler, step=1, extra={})
    other = nn.Linear(3, 3, bias=False)
    other_optimizer = torch.optim.AdamW(other.parameters())
    with pytest.raises(CheckpointError, match="same model config"):
        load_training_state(
            tmp_path, other_optimizer, make_scheduler(other_optimizer, "noam", 3, 9)
        )
