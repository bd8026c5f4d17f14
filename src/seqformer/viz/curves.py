"""Training curves from a run's ``log.jsonl``: losses, learning rate and the validation metric.

The trainer writes one JSON object per log step (``loss``, ``lr``, ...) and one per evaluation
(``valid: {...}``); this module only reads that file, so it works on a run still in progress.
"""

from __future__ import annotations

import json
from pathlib import Path

from seqformer.errors import DataError


def read_log(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of a run directory."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: not found; pass a run directory written by 'seqformer train'")
    train, valid = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{number}: not a JSON line; the log is corrupt") from None
        (valid if "valid" in record else train).append(record)
    if not train and not valid:
        raise DataError(f"{path}: no records yet; train for at least one log step")
    return train, valid


def recipe_metric(run_dir: str | Path) -> str | None:
    """The metric the run selected checkpoints by, when it is not a loss (those are plotted)."""
    import yaml

    path = Path(run_dir) / "recipe.yaml"
    try:
        metric = (yaml.safe_load(path.read_text(encoding="utf-8")) or {})["train"]["metric"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    return None if str(metric).startswith("valid_") else str(metric)


def plot_curves(run_dir: str | Path, metric: str | None = None, dpi: int = 100):
    """A 2x2 figure: training loss and validation loss, learning rate, validation metric,
    gradient norm; ``metric`` defaults to the first non-loss validation metric."""
    from seqformer.viz.attention import _pyplot

    plt = _pyplot()
    train, valid = read_log(run_dir)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=dpi)
    (ax_loss, ax_lr), (ax_metric, ax_grad) = axes
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [r["loss"] for r in train], label="train loss")
    if valid and "valid_loss" in valid[0]["valid"]:
        ax_loss.plot([r["step"] for r in valid], [r["valid"]["valid_loss"] for r in valid],
                     "o-", label="valid loss")
    ax_loss.set_title("loss")
    ax_loss.legend()
    ax_lr.plot(steps, [r["lr"] for r in train])
    ax_lr.set_title("learning rate")
    ax_grad.plot(steps, [r["grad_norm"] for r in train])
    ax_grad.set_title("gradient norm (before clipping)")
    names = [k for k in (valid[0]["valid"] if valid else {}) if not k.startswith("valid_")]
    metric = metric or recipe_metric(run_dir) or (names[0] if names else None)
    if metric and valid:
        if metric not in valid[0]["valid"]:
            raise DataError(f"--metric {metric}: the log has {', '.join(valid[0]['valid'])}")
        ax_metric.plot([r["step"] for r in valid], [r["valid"][metric] for r in valid], "o-")
        ax_metric.set_title(f"validation {metric}")
    else:
        ax_metric.set_title("no validation metric logged")
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(str(Path(run_dir)))
    fig.tight_layout()
    return fig
