"""The language-model task: exact resume through the block stream, MFU in the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqformer.recipe import recipe_from_dict
from seqformer.tasks import lm
from seqformer.training.checkpoint import read_weights

TEXT = "".join(f"{w} went to {v} on day {i % 7}.\n" for i, (w, v) in enumerate(
    [("abel", "ur"), ("cain", "nod"), ("seth", "eden")] * 40))


def recipe(path: Path, data: dict | None = None, **train):
    (path / "text.txt").write_text(TEXT, encoding="utf-8")
    settings = {"max_steps": 12, "lr": 0.003, "schedule": "constant", "warmup_steps": 3,
                "eval_every": 6, "save_every": 6, "log_every": 3, "progress": False,
                "device": "cpu", **train}
    return recipe_from_dict({
        "task": "lm",
        "data": {"corpus": "files", "train": [str(path / "text.txt")], "batch_size": 4,
                 **(data or {})},
        "model": {"d_model": 16, "heads": 2, "layers": 1, "ffn_dim": 32, "dropout": 0.1,
                  "max_len": 16},
        "train": settings})


def test_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    # A constant schedule, so stopping at max_steps=6 does not change the first six lrs.
    # Dropout is on: the resumed RNG state matters too.
    lm.train(recipe(tmp_path), tmp_path / "straight")
    lm.train(recipe(tmp_path, max_steps=6), tmp_path / "split")
    lm.train(recipe(tmp_path), tmp_path / "split", resume=True)
    a = read_weights(tmp_path / "straight" / "last" / "model.safetensors")
    b = read_weights(tmp_path / "split" / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_mfu_is_logged_and_accumulation_reaches_the_token_target(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("SEQFORMER_PEAK_FLOPS", "1e12")
    lm.train(recipe(tmp_path, {"tokens_per_step": 200}, max_steps=3), tmp_path / "run")
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["extra"]["config"]["accumulate"] == 3  # 200 / (4 blocks x 16) rounded
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    model = lm.LanguageModel.load(tmp_path / "run").model
    expected = model.flops_per_token() * record["tokens_per_s"] / 1e12
    assert record["mfu"] == pytest.approx(expected, rel=1e-6)
