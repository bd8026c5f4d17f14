"""The training loop: it learns, resumes bit-identically, clips, stops early and survives Ctrl-C."""

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seqformer.errors import CheckpointError, ConfigError
from seqformer.training.checkpoint import read_weights
from seqformer.training.loss import label_smoothed_cross_entropy
from seqformer.training.trainer import TrainConfig, Trainer

# --- a tiny task with the same contracts as the real data streams and models -------------------


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor

    @property
    def n_tgt_tokens(self) -> int:
        return self.y.numel()

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.x.to(device), self.y.to(device))


class Stream:
    """Shuffled batches forever; its position (epoch, index) is its whole state."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epoch, self.index = 0, 0

    def __iter__(self):
        n_batches = len(self.x) // self.batch_size
        while True:
            order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.epoch))
            while self.index < n_batches:
                rows = order[self.index * self.batch_size : (self.index + 1) * self.batch_size]
                self.index += 1
                yield Batch(self.x[rows], self.y[rows])
            self.epoch, self.index = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]


class InterruptingStream(Stream):
    """Simulates Ctrl-C while fetching the `interrupt_at`-th batch (0-based)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, interrupt_at: int) -> None:
        super().__init__(x, y)
        self.interrupt_at = interrupt_at

    def __iter__(self):
        for served, batch in enumerate(super().__iter__()):
            if served == self.interrupt_at:
                raise KeyboardInterrupt
            yield batch


class Classifier(nn.Module):
    """2-layer MLP with dropout, so resuming is only exact if the RNG is restored."""

    def __init__(self, seed: int, dropout: float = 0.2) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))

    def forward(self, batch: Batch) -> SimpleNamespace:
        loss, nll, _ = label_smoothed_cross_entropy(
            self.net(batch.x), batch.y, smoothing=0.1, ignore_index=-100
        )
        return SimpleNamespace(loss=loss, nll=nll)


def make_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(42)
    x = torch.randn(n, 4, generator=generator)
    y = (x @ torch.randn(4, 3, generator=generator)).argmax(-1)
    return x, y


def config(**overrides) -> TrainConfig:
    settings = dict(
        max_steps=12,
        lr=1e-2,
        schedule="noam",
        warmup_steps=4,
        eval_every=4,
        save_every=3,
        log_every=3,
        device="cpu",
        progress=False,
        seed=7,
    )
    return TrainConfig(**{**settings, **overrides})


def random_subset_validate(model: nn.Module) -> dict[str, float]:
    """Draws from the global RNG on purpose: evaluating must not shift training."""
    x, y = make_data()
    rows = torch.randint(0, len(x), (32,))
    device = next(model.parameters()).device
    return {"valid_loss": model(Batch(x[rows], y[rows]).to(device)).loss.item()}


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def train_records(run_dir: Path) -> list[tuple]:
    """Training records without the wall-clock fields, which legitimately differ."""
    keep = ("step", "epoch", "loss", "nll", "lr", "grad_norm")
    return [tuple(r[k] for k in keep) for r in read_log(run_dir) if "valid" not in r]


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


# --- tests ------------------------------------------------------------------------------------


def test_tiny_classifier_learns_and_logs_the_documented_schema(tmp_path: Path) -> None:
    model = Classifier(seed=0, dropout=0.0)
    cfg = config(max_steps=200, schedule="constant", warmup_steps=10, log_every=10, lr=2e-2)
    summary = Trainer(model, cfg, Stream(*make_data()), tmp_path).train()

    log = read_log(tmp_path)
    assert set(log[0]) == {
        "step",
        "epoch",
        "loss",
        "nll",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "elapsed",
    }
    assert [r["step"] for r in log] == list(range(10, 201, 10))
    assert log[-1]["loss"] < 0.4 * log[0]["loss"]
    assert log[-1]["nll"] < log[-1]["loss"]  # label smoothing keeps the loss above the NLL
    assert log[-1]["epoch"] == (200 - 1) // (64 // 8)  # the stream advances epochs lazily
    assert summary["step"] == 200 and summary["stop_reason"] == "max_steps"
    assert summary["tokens_per_s"] > 0 and not summary["interrupted"]
    # Without a validate function the final weights are the model.
    assert_same_weights(model, _loaded(tmp_path / "model.safetensors"))


def _loaded(path: Path) -> nn.Module:
    model = Classifier(seed=99)
    model.load_state_dict(read_weights(path))
    return model


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path, accumulate: int) -> None:
    straight = Classifier(seed=0)
    cfg = config(accumulate=accumulate)
    Trainer(straight, cfg, Stream(*make_data()), tmp_path / "a", random_subset_validate).train()

    first_half = config(accumulate=accumulate, max_steps=6)
    Trainer(
        Classifier(0), first_half, Stream(*make_data()), tmp_path / "b", random_subset_validate
    ).train()
    resumed = Classifier(seed=123)  # different init: the weights must come from the checkpoint
    stream = Stream(*make_data())
    summary = Trainer(resumed, cfg, stream, tmp_path / "b", random_subset_validate).train(
        resume=True
    )

    assert summary["step"] == 12
    assert_same_weights(straight, resumed)
    assert train_records(tmp_path / "a") == train_records(tmp_path / "b")
    position = stream.state_dict()
    assert position["epoch"] * 8 + position["index"] == 12 * accumulate  # batches consumed


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_finishes_identically(tmp_path: Path) -> None:
    straight = Classifier(seed=0)
    cfg = config(log_every=1)
    Trainer(straight, cfg, Stream(*make_data()), tmp_path / "a").train()

    run = tmp_path / "b"
    interrupting = InterruptingStream(*make_data(), interrupt_at=4)  # during step 5
    summary = Trainer(Classifier(0), cfg, interrupting, run).train()
    assert summary["interrupted"] and summary["stop_reason"] == "interrupted"
    assert summary["step"] == 4
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 3
    assert sorted(p.name for p in run.iterdir()) == ["last", "log.jsonl"]
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4]

    resumed = Classifier(seed=5)
    Trainer(resumed, cfg, Stream(*make_data()), run).train(resume=True)
    assert_same_weights(straight, resumed)
    assert [r["step"] for r in read_log(run)] == list(range(1, 13))  # step 4 not repeated
    assert train_records(tmp_path / "a") == train_records(run)


class Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)

    def forward(self, batch: Batch) -> SimpleNamespace:
        return SimpleNamespace(loss=(self.linear(batch.x).squeeze(-1) - batch.y).pow(2).mean())


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_grad_clipping_caps_the_applied_gradient_and_logs_the_raw_norm(
    tmp_path: Path, grad_clip: float
) -> None:
    x = torch.randn(8, 4)
    y = torch.full((8,), 100.0)  # far from the init: a huge gradient
    reference = Regression()
    reference(Batch(x, y)).loss.backward()
    raw_grad = torch.cat([p.grad.flatten() for p in reference.parameters()])
    raw_norm = raw_grad.norm().item()
    assert raw_norm > 10

    model = Regression()
    cfg = config(max_steps=1, grad_clip=grad_clip, log_every=1, schedule="constant", warmup_steps=0)
    trainer = Trainer(model, cfg, Stream(x, y), tmp_path)
    trainer.train()

    assert read_log(tmp_path)[0]["grad_norm"] == pytest.approx(raw_norm, rel=1e-5)
    # After one AdamW step exp_avg = (1 - beta1) * applied gradient.
    applied = torch.cat(
        [trainer.optimizer.state[p]["exp_avg"].flatten() for p in model.parameters()]
    ) / (1 - cfg.betas[0])
    expected_norm = min(raw_norm, grad_clip) if grad_clip else raw_norm
    assert applied.norm().item() == pytest.approx(expected_norm, rel=1e-5)
    assert torch.allclose(applied / applied.norm(), raw_grad / raw_norm, atol=1e-6)


@pytest.mark.parametrize(("metric_mode", "sign"), [("min", 1.0), ("max", -1.0)])
def test_early_stopping_after_patience_evaluations_without_improvement(
    tmp_path: Path, metric_mode: str, sign: float
) -> None:
    calls: list[int] = []

    def getting_worse(model: nn.Module) -> dict[str, float]:
        calls.append(1)
        return {"score": sign * len(calls)}

    saves: list[dict] = []

    def on_save(run_dir: Path) -> None:
        assert run_dir == tmp_path
        saves.append({k: v.clone() for k, v in model.state_dict().items()})

    model = Classifier(seed=0)
    cfg = config(max_steps=100, eval_every=2, patience=2, metric="score", metric_mode=metric_mode)
    summary = Trainer(model, cfg, Stream(*make_data()), tmp_path, getting_worse, on_save).train()

    assert summary["stop_reason"] == "early_stopping" and summary["step"] == 6
    assert summary["best"] == sign * 1.0 and summary["metric"] == "score"
    assert [r["step"] for r in read_log(tmp_path) if "valid" in r] == [2, 4, 6]
    assert len(saves) == 1  # only the first evaluation improved
    best = read_weights(tmp_path / "model.safetensors")
    assert all(torch.equal(best[k], v) for k, v in saves[0].items())
    assert not all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    assert json.loads((tmp_path / "last" / "trainer_state.json").read_text())["step"] == 6

    # The patience counter is part of the resumable state: resuming stops straight away.
    again = Trainer(Classifier(0), cfg, Stream(*make_data()), tmp_path, getting_worse, on_save)
    assert again.train(resume=True)["stop_reason"] == "early_stopping"
    assert len(calls) == 3 and again.best == sign * 1.0


def test_time_budget_stops_cleanly_with_evaluation_and_checkpoint(tmp_path: Path) -> None:
    cfg = config(max_steps=1000, max_minutes=1e-9)
    summary = Trainer(
        Classifier(0), cfg, Stream(*make_data()), tmp_path, random_subset_validate
    ).train()
    assert summary["stop_reason"] == "time_budget" and summary["step"] == 1
    assert [r["step"] for r in read_log(tmp_path) if "valid" in r] == [1]
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "last" / "trainer_state.json").read_text())["step"] == 1


class Clocked(Classifier):
    """Each forward pass takes one second of a fake clock, so time budgets are exact."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(0)
        self.clock = clock

    def forward(self, batch: Batch) -> SimpleNamespace:
        self.clock[0] += 1.0
        return super().forward(batch)


def test_anneal_time_decays_over_the_budget_and_stops_at_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import math

    import seqformer.training.trainer as trainer_module

    clock = [100.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    cfg = config(max_steps=1000, schedule="cosine", warmup_steps=2, anneal="time",
                 max_minutes=10 / 60, log_every=1, save_every=0)
    summary = Trainer(Clocked(clock), cfg, Stream(*make_data()), tmp_path).train()
    assert summary["stop_reason"] == "time_budget" and summary["step"] == 10
    used = [r["lr"] for r in read_log(tmp_path) if "valid" not in r]
    # update k runs after k - 1 seconds: warmup for the first, then the cosine of the clock.
    want = [cfg.lr / 2] + [cfg.lr * 0.5 * (1 + math.cos(math.pi * (k - 1) / 10))
                           for k in range(2, 11)]
    assert used == pytest.approx(want)


def test_anneal_time_needs_a_budget_and_a_schedule_with_an_end() -> None:
    with pytest.raises(ConfigError, match="train.anneal .*unless train.max_minutes is set"):
        config(schedule="cosine", anneal="time")
    with pytest.raises(ConfigError, match="train.anneal .*needs schedule cosine or linear"):
        config(schedule="noam", anneal="time", max_minutes=5)
    with pytest.raises(ConfigError, match="train.anneal must be 'steps'"):
        config(anneal="clock")


def test_resume_without_checkpoint_and_fresh_start_over_a_run_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume.*drop --resume"):
        Trainer(Classifier(0), config(), Stream(*make_data()), tmp_path).train(resume=True)
    Trainer(Classifier(0), config(max_steps=3), Stream(*make_data()), tmp_path).train()
    with pytest.raises(CheckpointError, match="already holds a training run; pass --resume"):
        Trainer(Classifier(0), config(), Stream(*make_data()), tmp_path).train()


def test_unknown_metric_names_the_field_and_the_choices(tmp_path: Path) -> None:
    cfg = config(metric="bleu")
    trainer = Trainer(Classifier(0), cfg, Stream(*make_data()), tmp_path, random_subset_validate)
    with pytest.raises(ConfigError, match=r"train.metric is 'bleu'.*\['valid_loss'\]"):
        trainer.train()


def test_weight_decay_only_on_matrices(tmp_path: Path) -> None:
    model = Classifier(0)
    trainer = Trainer(model, config(weight_decay=0.1), Stream(*make_data()), tmp_path)
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.net[0].weight), id(model.net[3].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.net[0].bias), id(model.net[3].bias)}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", -1.0),
        ("max_steps", 0),
        ("accumulate", 0),
        ("schedule", "exponential"),
        ("metric_mode", "best"),
        ("amp", "fp8"),
        ("betas", (0.9, 1.5)),
        ("grad_clip", -1.0),
        ("device", "toaster"),
        ("warmup_steps", 0),  # noam needs warmup
        ("compile", "fast"),
        ("compile", 1),
    ],
)
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"train.{field} "):
        TrainConfig(**{field: value})


def test_config_accepts_compile_modes() -> None:
    assert TrainConfig(compile="reduce-overhead").compile == "reduce-overhead"
    assert TrainConfig(compile=True).compile is True


def test_config_accepts_yaml_style_betas_list() -> None:
    assert TrainConfig(betas=[0.9, 0.99]).betas == (0.9, 0.99)


def test_divergence_is_reported_as_a_user_error(tmp_path: Path) -> None:
    class Exploding(Regression):
        def forward(self, batch: Batch) -> SimpleNamespace:
            return SimpleNamespace(loss=super().forward(batch).loss * float("nan"))

    x, y = make_data()
    trainer = Trainer(Exploding(), config(log_every=1), Stream(x, y.float()), tmp_path)
    with pytest.raises(ConfigError, match="diverged at step 1.*train.lr"):
        trainer.train()


class ImageStream(Stream):
    """The tiny task as images: ViT's ImageBatch, whose n_tgt_tokens counts images."""

    def __iter__(self):
        from seqformer.models.vit import ImageBatch

        for batch in super().__iter__():
            yield ImageBatch(batch.x.reshape(-1, 1, 2, 2), batch.y)


def test_image_batches_report_images_per_second_not_tokens(tmp_path: Path, capsys) -> None:
    from seqformer.models.vit import ViT, ViTConfig

    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=2, patch_size=1, d_model=8, heads=2, layers=1, ffn_dim=16,
                          num_labels=3))
    summary = Trainer(model, config(max_steps=6, progress=True), ImageStream(*make_data()),
                      tmp_path).train()
    records = [r for r in read_log(tmp_path) if "valid" not in r]
    # The old key stays for the tools that read it; the new one says what was counted.
    assert all(r["images_per_s"] == r["tokens_per_s"] > 0 for r in records)
    assert summary["images_per_s"] == summary["tokens_per_s"] > 0
    err = capsys.readouterr().err
    assert "images_s=" in err and "images/s |" in err  # progress bar and final line
    assert "tok_s" not in err and "tok/s" not in err


def test_token_batches_keep_tok_per_second(tmp_path: Path, capsys) -> None:
    summary = Trainer(Classifier(seed=0), config(max_steps=6, progress=True),
                      Stream(*make_data()), tmp_path).train()
    assert "images_per_s" not in summary and summary["tokens_per_s"] > 0
    err = capsys.readouterr().err
    assert "tok_s=" in err and "tok/s |" in err


def test_profile_steps_writes_a_report_of_the_trainers_phases(tmp_path: Path, capsys) -> None:
    """train.profile_steps profiles real trainer steps: the report must see each phase the loop
    marks, and the profiled run must train exactly like an unprofiled one."""
    import json

    plain_dir, profiled_dir = tmp_path / "plain", tmp_path / "profiled"
    plain = Trainer(Classifier(0), config(), Stream(*make_data()), plain_dir)
    plain.train()
    profiled = Trainer(Classifier(0), config(profile_steps=3, profile_from=4,
                                             profile_trace=True),
                       Stream(*make_data()), profiled_dir)
    profiled.train()
    report = json.loads((profiled_dir / "profile.json").read_text())
    text = (profiled_dir / "profile.txt").read_text()
    assert "profile.txt" in capsys.readouterr().err
    assert report["profiled_steps"] == 3 and report["first_step"] == 4
    for phase in ("data", "forward", "backward", "optimizer"):
        assert phase in text
    assert json.loads((profiled_dir / "profile_trace.json").read_text())["traceEvents"]
    assert not (plain_dir / "profile.txt").exists()
    for a, b in zip(plain.model.parameters(), profiled.model.parameters(), strict=True):
        assert torch.equal(a, b)
