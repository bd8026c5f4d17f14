"""``seqformer scale``: train one GPT recipe at several sizes and fit its scaling laws.

Kaplan et al. (2020) trained language models from thousands to billions of parameters and
found the loss falls as a power law in the non-embedding parameter count N and in the
training compute C. This is that experiment at the size of a laptop: every model sees the
same text, tokenizer, batch, schedule and number of tokens D; only ``layers`` x ``d_model``
changes (heads keep the recipe's head size, the feed-forward keeps its ratio to d_model).

What is reported (``OUT/scaling.md``, ``scaling.json``, ``scaling.png``):

- per size: parameters with and without embeddings (Kaplan's N leaves out the token and
  position tables), training compute C (the model's own FLOP estimate x tokens), the final
  validation loss and bits per character, minutes;
- ``L(N)``: the final losses fitted with ``(N_c / N)^alpha_N``, and with an irreducible
  floor (``E + ...``, Hoffmann et al. 2022) when there are four sizes or more;
- ``L(C)``: the compute frontier -- of every evaluation of every run, the points no cheaper
  point beats -- fitted the same way.

Two caveats the report repeats because they change how to read it. With one D for all sizes
the largest models are the least trained for their size, so L(N) flattens once D (not N) is
what limits the loss; Kaplan's law is for models trained to convergence. And the frontier
reads the runs' intermediate evaluations, which under a decaying schedule (cosine) are worse
than a run planned to stop there would be (Hoffmann et al.), so the frontier is a
conservative one.

Each size is an ordinary run directory (``OUT/4x128``) that ``generate`` and ``evaluate``
accept. An interrupted sweep continues where it stopped when run again with the same
arguments: finished sizes are kept, an unfinished one resumes from its last checkpoint. Sizes
may be added to a sweep the same way (the runs already there are reused).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seqformer.errors import ConfigError, UserError
from seqformer.metrics.power_law import (
    PowerLaw,
    fit_power_law,
    fit_power_law_with_floor,
    pareto_frontier,
)
from seqformer.recipe import LMRecipe, recipe_from_dict
from seqformer.training.checkpoint import atomic_write_text, committed_directory

PLAN_NAME = "plan.json"
DEFAULT_SIZES = "1x32,2x48,2x64,3x96,4x128"
DEFAULT_EVALS = 8
DEFAULT_TOKENS = 1_000_000


@dataclass(frozen=True)
class Size:
    """``layers`` x ``d_model`` with ``heads`` attention heads (label ``4x128``)."""

    layers: int
    d_model: int
    heads: int

    @property
    def label(self) -> str:
        return f"{self.layers}x{self.d_model}"


def parse_sizes(text: str, head_dim: int, least: int = 2) -> list[Size]:
    """``"2x64,4x128"`` or ``"4x128x8"`` (an explicit head count) -> sizes, smallest first.

    Without a head count a size gets ``d_model // head_dim`` heads (at least one), so the
    head size stays the recipe's; it must then divide d_model.
    """
    sizes = []
    for item in (s.strip() for s in text.split(",")):
        match = re.fullmatch(r"(\d+)x(\d+)(?:x(\d+))?", item)
        if not match:
            raise ConfigError(f"--sizes: {item!r} is not LAYERSxD_MODEL (e.g. 4x128) or "
                              f"LAYERSxD_MODELxHEADS (e.g. 4x128x4)")
        layers, d_model = int(match[1]), int(match[2])
        heads = int(match[3]) if match[3] else max(1, d_model // head_dim)
        if layers < 1 or d_model < 1 or heads < 1:
            raise ConfigError(f"--sizes: {item!r} needs layers, d_model and heads >= 1")
        if d_model % heads:
            raise ConfigError(f"--sizes: {item!r}: d_model {d_model} is not divisible by "
                              f"{heads} heads; give the heads as {layers}x{d_model}xHEADS")
        sizes.append(Size(layers, d_model, heads))
    labels = [s.label for s in sizes]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--sizes: {text!r} lists a size twice")
    if len(sizes) < least:
        raise ConfigError("--sizes: give at least two sizes (a law needs two points)")
    return sizes


@dataclass
class SizeResult:
    label: str
    layers: int
    d_model: int
    heads: int
    params: int
    non_embedding: int  # Kaplan's N: without the token and position tables
    tokens: int
    flops: float  # training compute: FLOPs per token (6N + attention) x tokens
    valid_loss: float
    valid_bpc: float
    minutes: float  # training time, from the run's log (resumes included, evaluation too)
    run_dir: str
    curve: list[tuple[float, float]]  # (compute, validation loss) at every evaluation


@dataclass
class ScalingResult:
    recipe: str
    tokens: int
    tokens_per_step: int
    steps: int
    sizes: list[SizeResult]
    law_n: PowerLaw | None
    law_n_floor: PowerLaw | None
    law_c: PowerLaw | None
    frontier: list[tuple[float, float]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _model_field(recipe: LMRecipe, name: str) -> int:
    """A shape field of the recipe's model section, or GPTConfig's default for it."""
    from seqformer.models.gpt import GPTConfig

    return int(recipe.model.get(name, getattr(GPTConfig, name)))


def tokens_per_step(recipe: LMRecipe) -> int:
    """Tokens in one update, as :func:`seqformer.tasks.lm.train` will batch them."""
    from seqformer.tasks.lm import accumulation

    block = _model_field(recipe, "max_len")
    return accumulation(recipe, block) * recipe.data.batch_size * block


def head_dim(recipe: LMRecipe) -> int:
    return max(1, _model_field(recipe, "d_model") // _model_field(recipe, "heads"))


def size_recipe(recipe: LMRecipe, size: Size, steps: int, evals: int,
                max_minutes: float) -> LMRecipe:
    """The recipe at one size: same everything but the shape, and a schedule over ``steps``."""
    tree = recipe.to_dict()
    tree.pop("fingerprints", None)
    model = tree.setdefault("model", {})
    ffn_ratio = _model_field(recipe, "ffn_dim") / _model_field(recipe, "d_model")
    model.update(layers=size.layers, d_model=size.d_model, heads=size.heads,
                 ffn_dim=max(1, round(ffn_ratio * size.d_model)))
    every = max(1, steps // evals)
    train = tree.setdefault("train", {})
    warmup = int(train.get("warmup_steps", 0))
    train.update(max_steps=steps, eval_every=every, save_every=every, max_minutes=max_minutes,
                 anneal="steps", metric="valid_loss", metric_mode="min", patience=0,
                 warmup_steps=min(warmup, max(steps // 10, 0)))
    tree["name"] = f"{recipe.name}-{size.label}"
    built = recipe_from_dict(tree, f"{recipe.name} at size {size.label}")
    assert isinstance(built, LMRecipe)
    return built


def plan_settings(recipe: LMRecipe, tokens: int, evals: int, max_minutes: float,
                  mode: str) -> dict[str, Any]:
    """What every run of a sweep shares; a sweep continued or extended must match it."""
    base = recipe.to_dict()
    base.pop("fingerprints", None)
    return {"mode": mode, "recipe": base, "tokens": tokens, "evals": evals,
            "max_minutes": max_minutes}


def claim(out: Path, settings: dict[str, Any], sizes: list[Size],
          budgets: list[str] | None = None) -> None:
    """Write OUT/plan.json, or check an existing one is this sweep's.

    Re-running the same command continues a sweep; more sizes (or budgets) may be added, and
    runs already there are reused -- they are seeded, so retraining would only repeat them.
    Other settings would mix two sweeps in one table, and a size label whose head count
    changed would reuse the wrong run: both are refused.
    """
    path = out / PLAN_NAME
    heads = {s.label: s.heads for s in sizes}
    plan: dict[str, Any] = {"settings": settings, "heads": heads, "budgets": budgets or []}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            same = old["settings"] == settings
            clash = [label for label, h in heads.items() if old["heads"].get(label, h) != h]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise UserError(f"{path}: unreadable; choose another --out") from None
        if not same:
            raise UserError(f"{out} holds a scaling sweep with other settings (recipe, "
                            f"tokens, evals or mode); choose another --out or repeat its "
                            f"command")
        if clash:
            raise UserError(f"{out}: size {clash[0]} was trained with {old['heads'][clash[0]]} "
                            f"heads there; give {clash[0]}x{old['heads'][clash[0]]} or "
                            f"another --out")
        plan["heads"] = {**old["heads"], **heads}
        plan["budgets"] = sorted(set(old["budgets"]) | set(plan["budgets"]))
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a scaling sweep; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(plan, indent=1) + "\n")


def _non_embedding(model) -> int:
    """Kaplan's N: every parameter but the token and (learned) position tables."""
    n = model.num_parameters() - model.embed.weight.numel()
    table = getattr(model.pos, "embedding", None)
    return n - (table.weight.numel() if table is not None else 0)


def train_run(recipe: LMRecipe, run_dir: Path) -> tuple[Any, list[dict[str, Any]]]:
    """Train (or finish, or just reopen) one run of a sweep -> its model and evaluations.

    A run with a checkpoint resumes (a finished one returns at once); a directory without
    one was stopped before its first save and starts over.
    """
    from seqformer.tasks import lm
    from seqformer.viz.curves import read_log

    resume = committed_directory(run_dir / "last") is not None
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    if lm.train(recipe, run_dir, resume=resume)["interrupted"]:
        raise KeyboardInterrupt
    return lm.LanguageModel.load(run_dir).model, read_log(run_dir)[1]


def run_scaling(recipe: LMRecipe, sizes: list[Size], tokens: int, out_dir: str | Path,
                evals: int = DEFAULT_EVALS, max_minutes: float = 0.0) -> ScalingResult:
    """Train every size for ``tokens`` tokens (rounded up to whole updates), then fit."""
    from seqformer.tasks.rundir import log

    if tokens < 1:
        raise ConfigError(f"--tokens must be >= 1, got {tokens}")
    if evals < 1:
        raise ConfigError(f"--evals must be >= 1, got {evals}")
    if recipe.init_from:
        raise ConfigError("scale trains every size from scratch; drop init_from")
    out = Path(out_dir)
    per_step = tokens_per_step(recipe)
    steps = math.ceil(tokens / per_step)
    claim(out, plan_settings(recipe, tokens, evals, max_minutes, "tokens"), sizes)
    results: list[SizeResult] = []
    for number, size in enumerate(sizes, 1):
        log(f"scale: size {number}/{len(sizes)}: {size.label} ({size.heads} head"
            f"{'s' if size.heads > 1 else ''}), {steps} steps of {per_step:,} tokens")
        run_dir = out / size.label
        model, evaluations = train_run(size_recipe(recipe, size, steps, evals, max_minutes),
                                       run_dir)
        per_token = model.flops_per_token()
        curve = [(per_token * r["step"] * per_step, r["valid"]["valid_loss"])
                 for r in evaluations if r["step"] > 0]
        last = evaluations[-1]
        trained = last["step"] * per_step
        results.append(SizeResult(size.label, size.layers, size.d_model, size.heads,
                                  model.num_parameters(), _non_embedding(model), trained,
                                  per_token * trained, last["valid"]["valid_loss"],
                                  last["valid"]["valid_bpc"], round(last["elapsed"] / 60, 2),
                                  str(run_dir), curve))
    result = fit(recipe.name, tokens, per_step, steps, results)
    write_report(result, out)
    return result


def fit(name: str, tokens: int, per_step: int, steps: int,
        sizes: list[SizeResult]) -> ScalingResult:
    """The laws of a finished sweep (None where there are too few distinct points)."""
    n = [float(s.non_embedding) for s in sizes]
    loss = [s.valid_loss for s in sizes]
    law_n = fit_power_law(n, loss) if len(set(n)) >= 2 else None
    law_n_floor = fit_power_law_with_floor(n, loss) if len(set(n)) >= 4 else None
    frontier = pareto_frontier([p for s in sizes for p in s.curve])
    law_c = (fit_power_law([c for c, _ in frontier], [v for _, v in frontier])
             if len(frontier) >= 2 else None)
    return ScalingResult(name, tokens, per_step, steps, sizes, law_n, law_n_floor, law_c,
                         frontier)


def report_lines(result: ScalingResult) -> list[str]:
    """The markdown report: the table, the laws, and how to read them."""
    lines = [f"Scaling sweep of `{result.recipe}`: every size trained on {result.tokens:,} "
             f"tokens ({result.steps} updates of {result.tokens_per_step:,}).", "",
             "| size | heads | params | N (non-embedding) | compute (FLOPs) | valid loss | "
             "bits/char | minutes |", "|---|---|---|---|---|---|---|---|"]
    for s in result.sizes:
        lines.append(f"| {s.label} | {s.heads} | {s.params:,} | {s.non_embedding:,} | "
                     f"{s.flops:.3g} | {s.valid_loss:.4f} | {s.valid_bpc:.4f} | {s.minutes:.2f} |")
    lines.append("")
    for law, name, what in ((result.law_n, "N", "model size"),
                            (result.law_n_floor, "N", "with an irreducible floor"),
                            (result.law_c, "C", "compute frontier")):
        if law is not None:
            lines.append(f"- {what}: {law.describe(name)}"
                         + (" -- no bend found: floor 0" if name == "N" and law is
                            result.law_n_floor and not law.floor else ""))
    lines += ["", "Kaplan et al. (2020), for comparison: alpha_N = 0.076 and alpha_C = 0.050 "
              "(word-piece tokens of WebText2, 768 to 1.5e9 parameters trained to convergence). "
              "Here every size sees the same tokens, so where the largest sizes fall short of "
              "the line, the data (not N) limits them; the compute frontier is read off "
              "intermediate evaluations of decaying schedules, so it is a conservative one."]
    if result.law_n is not None and result.law_n.alpha <= 0:
        lines.append("The loss did not fall with N: the sizes are too close, or the budget "
                     "too short for the larger ones to pass the smaller.")
    return lines


def write_outputs(out: Path, stem: str, lines: list[str], numbers: dict[str, Any],
                  draw: Callable[[Path], Path]) -> None:
    """``STEM.md`` (the report), ``STEM.json`` (the numbers) and ``STEM.png`` in ``out``:
    what both kinds of sweep leave behind."""
    atomic_write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    atomic_write_text(out / f"{stem}.json", json.dumps(numbers, indent=1) + "\n")
    draw(out / f"{stem}.png")


def write_report(result: ScalingResult, out: Path) -> None:
    write_outputs(out, "scaling", report_lines(result), result.to_json(),
                  lambda path: plot(result, path))


def plot(result: ScalingResult, path: Path) -> Path:
    """Left: final loss against N with the fitted laws. Right: every run's validation loss
    against compute, the frontier and its law. Both log-log, where a power law is a line."""
    from seqformer.viz.attention import _pyplot, save_png

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    n = [s.non_embedding for s in result.sizes]
    left.plot(n, [s.valid_loss for s in result.sizes], "o", color="black", label="final loss")
    for s in result.sizes:
        left.annotate(s.label, (s.non_embedding, s.valid_loss), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    grid = [min(n) * (max(n) / min(n)) ** (i / 50) for i in range(51)]
    for law, style, what in ((result.law_n, "-", "power law"),
                             (result.law_n_floor, "--", "with floor")):
        if law is not None and (law is result.law_n or law.floor):
            left.plot(grid, [law(x) for x in grid], style,
                      label=f"{what}: alpha {law.alpha:.3f}"
                      + (f", E {law.floor:.3f}" if law.floor else ""))
    left.set(xscale="log", yscale="log", xlabel="non-embedding parameters N",
             ylabel="validation loss (nats/token)", title="loss against model size")
    left.legend(fontsize=8)
    for s in result.sizes:
        if s.curve:
            right.plot([c for c, _ in s.curve], [v for _, v in s.curve], "-", alpha=0.7,
                       label=s.label)
    if result.frontier:
        right.plot([c for c, _ in result.frontier], [v for _, v in result.frontier], "k.",
                   label="frontier")
    if result.law_c is not None:
        c = [p[0] for p in result.frontier]
        line = [min(c) * (max(c) / min(c)) ** (i / 50) for i in range(51)]
        right.plot(line, [result.law_c(x) for x in line], "k--",
                   label=f"alpha_C {result.law_c.alpha:.3f}")
    right.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)",
              ylabel="validation loss (nats/token)", title="loss against compute")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_png(fig, path)
