"""``seqformer scale --data D1,D2,...``: the loss as a power law of the dataset size, L(D).

Kaplan et al. (2020) trained one large model on subsets of WebText2 and stopped each run where
its test loss was lowest (early stopping: past it, the model memorises the small set), finding
``L(D) = (D_c / D)^alpha_D`` with alpha_D = 0.095 -- the third law besides L(N) and L(C). Here:
one model size, the same number of training tokens for every run (so a small set is repeated
for many epochs), the first D tokens of the training text (``data.train_tokens``: the tokenizer
still learns from all of it and the validation text is the same, so the losses compare), and
the lowest validation loss of each run as its early-stopped loss.

Each dataset size is an ordinary run directory, ``OUT/D100000``; a sweep continues, or takes
more sizes, when run again (as ``--sizes`` and ``--flops`` sweeps do).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seqformer.errors import ConfigError
from seqformer.metrics.power_law import PowerLaw, fit_power_law
from seqformer.recipe import LMRecipe, recipe_from_dict
from seqformer.tasks.scaling import (
    Size,
    _non_embedding,
    claim,
    plan_settings,
    size_recipe,
    tokens_per_step,
    train_run,
    write_outputs,
)


@dataclass
class DataRun:
    data_tokens: int  # D: distinct training tokens
    epochs: float  # how many times the run saw them
    best_loss: float  # the early-stopped loss: lowest validation loss of the run
    best_step: int
    final_loss: float
    minutes: float
    run_dir: str
    curve: list[tuple[int, float]]  # (step, validation loss)


@dataclass
class DataScalingResult:
    recipe: str
    size: str
    non_embedding: int
    tokens: int  # trained tokens of every run
    steps: int
    runs: list[DataRun]
    law_d: PowerLaw | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_data_sizes(values: list[int]) -> list[int]:
    """Dataset sizes in tokens (already parsed counts), ascending; two or more, distinct."""
    if len(values) < 2:
        raise ConfigError("--data: give at least two dataset sizes (a law needs two points)")
    if len(set(values)) != len(values):
        raise ConfigError("--data lists a dataset size twice")
    return sorted(values)


def data_recipe(recipe: LMRecipe, size: Size, data_tokens: int, steps: int, evals: int,
                max_minutes: float) -> LMRecipe:
    """The recipe at ``size``, trained on the first ``data_tokens`` tokens for ``steps``."""
    tree = size_recipe(recipe, size, steps, evals, max_minutes).to_dict()
    tree.setdefault("data", {})["train_tokens"] = data_tokens
    tree["name"] = f"{recipe.name}-D{data_tokens}"
    built = recipe_from_dict(tree, f"{recipe.name} on {data_tokens:,} tokens")
    assert isinstance(built, LMRecipe)
    return built


def run_data_scaling(recipe: LMRecipe, size: Size, data_sizes: list[int], tokens: int,
                     out_dir: str | Path, evals: int, max_minutes: float = 0.0
                     ) -> DataScalingResult:
    """Train ``size`` on each dataset size for ``tokens`` tokens, then fit L(D)."""
    from seqformer.tasks.rundir import log

    if tokens < 1 or evals < 1:
        raise ConfigError(f"--tokens and --evals must be >= 1, got {tokens} and {evals}")
    if recipe.init_from:
        raise ConfigError("scale trains every run from scratch; drop init_from")
    out = Path(out_dir)
    per_step = tokens_per_step(recipe)
    steps = math.ceil(tokens / per_step)
    claim(out, plan_settings(recipe, tokens, evals, max_minutes, f"data {size.label}"), [size],
          [f"D{d}" for d in data_sizes])
    runs: list[DataRun] = []
    non_embedding = 0
    for number, d in enumerate(data_sizes, 1):
        log(f"scale: dataset {number}/{len(data_sizes)}: {d:,} tokens, size {size.label}, "
            f"{steps} steps of {per_step:,} tokens ({steps * per_step / d:.1f} epochs)")
        run_dir = out / f"D{d}"
        model, evaluations = train_run(data_recipe(recipe, size, d, steps, evals, max_minutes),
                                       run_dir)
        non_embedding = _non_embedding(model)
        curve = [(int(r["step"]), float(r["valid"]["valid_loss"])) for r in evaluations]
        best_step, best = min(curve, key=lambda p: p[1])
        last = evaluations[-1]
        runs.append(DataRun(d, round(last["step"] * per_step / d, 2), best, best_step,
                            curve[-1][1], round(last["elapsed"] / 60, 2), str(run_dir), curve))
    law = fit_power_law([float(r.data_tokens) for r in runs], [r.best_loss for r in runs])
    result = DataScalingResult(recipe.name, size.label, non_embedding, steps * per_step, steps,
                               runs, law)
    write_outputs(out, "data_scaling", report_lines(result), result.to_json(),
                  lambda path: plot(result, path))
    return result


def report_lines(result: DataScalingResult) -> list[str]:
    lines = [f"Data scaling of `{result.recipe}` at size {result.size} (N = "
             f"{result.non_embedding:,} non-embedding parameters): every run trained on "
             f"{result.tokens:,} tokens ({result.steps} updates) drawn from its first D tokens.",
             "", "| D (tokens) | epochs | early-stopped loss | at step | final loss | minutes |",
             "|---|---|---|---|---|---|"]
    for r in result.runs:
        lines.append(f"| {r.data_tokens:,} | {r.epochs:g} | {r.best_loss:.4f} | {r.best_step} "
                     f"| {r.final_loss:.4f} | {r.minutes:.2f} |")
    lines.append("")
    if result.law_d is not None:
        lines.append(f"- dataset size: {result.law_d.describe('D')}")
    lines += ["", "Kaplan et al. (2020), for comparison: alpha_D = 0.095 (word-piece tokens of "
              "WebText2, a 1.5e9-parameter model, early stopping). A run whose best loss comes "
              "in the last tenth of its steps was not stopped by its data: within these tokens "
              "its D did not limit it, so the law there measures the token budget, not the "
              "data; give more --tokens."]
    late = [f"{r.data_tokens:,}" for r in result.runs if r.best_step >= 0.9 * result.steps]
    if late:
        lines.append(f"Best in the last tenth of the steps here: D = {', '.join(late)}.")
    return lines


def plot(result: DataScalingResult, path: Path) -> Path:
    """Left: early-stopped loss against D with the law (log-log). Right: each run's
    validation curve against steps -- where it turns up, the data ran out."""
    from seqformer.viz.attention import _pyplot, save_png

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    d = [r.data_tokens for r in result.runs]
    left.plot(d, [r.best_loss for r in result.runs], "o", color="black",
              label="early-stopped loss")
    if result.law_d is not None:
        grid = [min(d) * (max(d) / min(d)) ** (i / 50) for i in range(51)]
        left.plot(grid, [result.law_d(x) for x in grid], "-",
                  label=f"power law: alpha_D {result.law_d.alpha:.3f}")
    left.set(xscale="log", yscale="log", xlabel="dataset size D (tokens)",
             ylabel="validation loss (nats/token)", title=f"loss against data ({result.size})")
    left.legend(fontsize=8)
    for r in result.runs:
        right.plot([s for s, _ in r.curve], [v for _, v in r.curve], "-",
                   label=f"D {r.data_tokens:,}")
    right.set(xlabel="step", ylabel="validation loss (nats/token)",
              title="validation loss during training")
    right.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
