"""What the scaling tests share: a tiny language-model recipe over a repetitive text."""

from __future__ import annotations

from pathlib import Path

import yaml

TEXT = "".join(f"{w} went to {v} on day {i % 7}.\n" for i, (w, v) in enumerate(
    [("abel", "ur"), ("cain", "nod"), ("seth", "eden")] * 40))


def write_recipe(tmp_path: Path) -> Path:
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    tree = {"name": "tiny-lm", "task": "lm",
            "data": {"corpus": "files", "train": [str(tmp_path / "text.txt")], "batch_size": 4},
            "model": {"d_model": 16, "heads": 2, "layers": 1, "ffn_dim": 32, "dropout": 0.0,
                      "max_len": 16},
            "train": {"max_steps": 1000, "lr": 0.01, "schedule": "cosine", "warmup_steps": 50,
                      "eval_every": 500, "progress": False, "device": "cpu"}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path
