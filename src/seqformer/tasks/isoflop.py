"""``seqformer scale --flops C1,C2,...``: compute-optimal model size by IsoFLOP profiles.

Hoffmann et al. (2022, "Chinchilla", their approach 2) fixed a compute budget C, trained
models of several sizes with it -- a small model sees many tokens, a large one few, since
C = FLOPs per token x tokens -- and read off the size with the lowest loss: the bottom of a
parabola fitted to loss against log N. Repeating that for several budgets gives the
compute-optimal size and data as power laws of compute, ``N_opt ~ C^a`` and ``D_opt ~ C^b``
(they found a ~ b ~ 0.5: grow model and data together). This is the question a user with a
fixed budget has: which size to train, and on how many tokens.

Every (budget, size) pair is an ordinary run directory, ``OUT/C1e+13/4x128``. A budget's
minimum counts as found ("bracketed") only when the parabola opens upward with its vertex
inside the sizes tried; otherwise the best measured size stands in and the report says so --
the sizes should then be widened in the direction the losses still fall.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqformer.errors import ConfigError
from seqformer.metrics.power_law import PowerLaw, fit_power_law
from seqformer.recipe import LMRecipe
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
class IsoRun:
    flops_budget: float
    label: str
    non_embedding: int
    flops_per_token: float
    tokens: int
    flops: float  # spent: whole updates, so slightly above the budget
    valid_loss: float
    minutes: float
    run_dir: str


@dataclass
class Profile:
    """One budget: its runs, the parabola's optimum (or the best run) and whether it held."""

    flops_budget: float
    runs: list[IsoRun]
    parabola: list[float] | None  # loss = p[0] (ln N)^2 + p[1] ln N + p[2], near the best
    fit_range: list[float] | None  # the N of the neighbours it went through
    n_opt: float
    tokens_opt: float
    loss_opt: float
    bracketed: bool


@dataclass
class IsoFlopResult:
    recipe: str
    tokens_per_step: int
    profiles: list[Profile]
    law_n_opt: PowerLaw | None  # N_opt = (C / scale) ** -alpha: alpha < 0 means N grows with C
    law_d_opt: PowerLaw | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def budget_label(flops: float) -> str:
    return f"C{flops:.0e}"


def parse_budgets(text: str) -> list[float]:
    """``"1e13,3e13"`` -> ascending budgets; at least two, for the laws of compute."""
    budgets = []
    for item in (s.strip() for s in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"--flops: {item!r} is not a number of FLOPs such as 3e13") from None
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"--flops: {item!r}: a budget must be a positive number of FLOPs")
        budgets.append(value)
    if len({budget_label(b) for b in budgets}) != len(budgets):
        raise ConfigError(f"--flops: {text!r} lists a budget twice (to 1 significant digit)")
    return sorted(budgets)


def profile_optimum(runs: list[IsoRun]) -> Profile:
    """The parabola in ln N through the best run and its two neighbours in size: its vertex
    is the optimum when the best run is not the smallest or largest size tried (the three
    points then bend upward on both sides, so the vertex lies between the neighbours);
    otherwise the best run stands in and ``bracketed`` is False.

    Only the neighbours, not every size: far from the minimum an IsoFLOP curve is not a
    parabola (a model given too few tokens loses much faster than one given too few
    parameters), and a global fit lets those points drag the vertex away from the bottom.
    """
    order = sorted(runs, key=lambda r: r.non_embedding)
    at = min(range(len(order)), key=lambda i: order[i].valid_loss)
    best = order[at]
    parabola, fit_range, bracketed = None, None, False
    n_opt, loss_opt = float(best.non_embedding), best.valid_loss
    if 0 < at < len(order) - 1:
        near = order[at - 1: at + 2]
        fit_range = [float(near[0].non_embedding), float(near[-1].non_embedding)]
        log_n = np.log([r.non_embedding for r in near])
        a, b, c = (float(v) for v in np.polyfit(log_n, [r.valid_loss for r in near], 2))
        parabola, bracketed = [a, b, c], True
        vertex = -b / (2 * a)
        n_opt, loss_opt = math.exp(vertex), a * vertex**2 + b * vertex + c
    tokens_opt = float(best.tokens)
    if bracketed:  # the budget over the FLOPs per token at N_opt (smooth in N: log-log interp)
        per_token = float(np.exp(np.interp(math.log(n_opt),
                                           np.log([r.non_embedding for r in order]),
                                           np.log([r.flops_per_token for r in order]))))
        tokens_opt = runs[0].flops_budget / per_token
    return Profile(runs[0].flops_budget, runs, parabola, fit_range, n_opt, tokens_opt, loss_opt,
                   bracketed)


def fit_isoflop(name: str, per_step: int, runs: list[IsoRun]) -> IsoFlopResult:
    budgets = sorted({r.flops_budget for r in runs})
    profiles = [profile_optimum([r for r in runs if r.flops_budget == c]) for c in budgets]
    law_n = law_d = None
    found = [p for p in profiles if p.bracketed]  # a best-size-tried is a bound, not an optimum
    if len(found) >= 2:
        c = [p.flops_budget for p in found]
        law_n = fit_power_law(c, [p.n_opt for p in found])
        law_d = fit_power_law(c, [p.tokens_opt for p in found])
    return IsoFlopResult(name, per_step, profiles, law_n, law_d)


def run_isoflop(recipe: LMRecipe, sizes: list[Size], budgets: list[float], out_dir: str | Path,
                max_minutes: float = 0.0) -> IsoFlopResult:
    """Train every size at every budget (tokens = budget / the size's FLOPs per token)."""
    from seqformer.models.gpt import GPT
    from seqformer.tasks import lm
    from seqformer.tasks.rundir import log

    if recipe.init_from:
        raise ConfigError("scale trains every size from scratch; drop init_from")
    if len(sizes) < 3:
        raise ConfigError("--flops: give at least three sizes (a parabola needs three points)")
    out = Path(out_dir)
    per_step = tokens_per_step(recipe)
    claim(out, plan_settings(recipe, 0, 1, max_minutes, "flops"), sizes,
          [budget_label(b) for b in budgets])
    # The vocabulary (so each size's FLOPs per token) comes from the tokenizer the runs build.
    train_text, _, _ = lm.load_texts(recipe)
    vocab = lm.build_tokenizer(recipe, train_text).vocab_size
    per_token = {s.label: GPT(size_recipe(recipe, s, 1, 1, 0.0).model_config(vocab))
                 .flops_per_token() for s in sizes}
    runs: list[IsoRun] = []
    total = len(budgets) * len(sizes)
    for i, budget in enumerate(budgets):
        for j, size in enumerate(sizes):
            steps = max(1, round(budget / per_token[size.label] / per_step))
            run_dir = out / budget_label(budget) / size.label
            log(f"scale: run {i * len(sizes) + j + 1}/{total}: budget {budget:.2g} FLOPs, "
                f"size {size.label}, {steps} steps of {per_step:,} tokens")
            model, evaluations = train_run(size_recipe(recipe, size, steps, 1, max_minutes),
                                           run_dir)
            last = evaluations[-1]
            tokens = last["step"] * per_step
            runs.append(IsoRun(budget, size.label, _non_embedding(model), per_token[size.label],
                               tokens, per_token[size.label] * tokens,
                               last["valid"]["valid_loss"],
                               round(last["elapsed"] / 60, 2), str(run_dir)))
    result = fit_isoflop(recipe.name, per_step, runs)
    write_report(result, out)
    return result


def report_lines(result: IsoFlopResult) -> list[str]:
    lines = [f"IsoFLOP profiles of `{result.recipe}` ({result.tokens_per_step:,} tokens per "
             f"update): each budget trains every size on budget / (its FLOPs per token) "
             f"tokens.", "",
             "| budget (FLOPs) | size | N (non-embedding) | tokens | spent / budget | "
             "valid loss | minutes |", "|---|---|---|---|---|---|---|"]
    for p in result.profiles:
        for r in p.runs:
            lines.append(f"| {p.flops_budget:.2g} | {r.label} | {r.non_embedding:,} | "
                         f"{r.tokens:,} | {r.flops / p.flops_budget:.2f} | "
                         f"{r.valid_loss:.4f} | {r.minutes:.2f} |")
    lines += ["", "| budget (FLOPs) | N_opt | D_opt (tokens) | loss there | minimum |",
              "|---|---|---|---|---|"]
    for p in result.profiles:
        found = "inside the sizes" if p.bracketed else "not bracketed: best size tried"
        lines.append(f"| {p.flops_budget:.2g} | {p.n_opt:,.0f} | {p.tokens_opt:,.0f} | "
                     f"{p.loss_opt:.4f} | {found} |")
    lines.append("")
    for law, name in ((result.law_n_opt, "N_opt"), (result.law_d_opt, "D_opt")):
        if law is not None:
            k, a = law.as_product()
            lines.append(f"- {name} = {k:.3g} x C^{a:.3f}  (R^2 {law.r2:.3f} in log space, "
                         f"{law.points} bracketed budgets)")
    if result.law_n_opt is None:
        lines.append("- no law of compute: fewer than two budgets have their minimum inside "
                     "the sizes tried")
    lines.append("")
    lines.append("Hoffmann et al. (2022), for comparison: N_opt ~ C^0.49 and D_opt ~ C^0.51 "
                 "(grow model and data together). An unbracketed budget means the best size "
                 "lies beyond the sizes tried: add sizes on the side where the loss still falls. "
                 "Runs spend whole updates, so a budget below a few updates of a size is "
                 "overspent (the spent / budget column): raise the smallest budget if so.")
    return lines


def write_report(result: IsoFlopResult, out: Path) -> None:
    write_outputs(out, "isoflop", report_lines(result), result.to_json(),
                  lambda path: plot(result, path))


def plot(result: IsoFlopResult, path: Path) -> Path:
    """Left: loss against N for each budget with its parabola and optimum. Right: N_opt and
    D_opt against C, log-log, with their power laws."""
    from seqformer.viz.attention import _pyplot, save_png

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for p in result.profiles:
        n = [r.non_embedding for r in p.runs]
        (dots,) = left.plot(n, [r.valid_loss for r in p.runs], "o",
                            label=f"C = {p.flops_budget:.2g}")
        if p.parabola is not None and p.fit_range is not None:  # only where it was fitted
            grid = np.linspace(math.log(p.fit_range[0]), math.log(p.fit_range[1]), 60)
            left.plot(np.exp(grid), np.polyval(p.parabola, grid), "-", color=dots.get_color(),
                      alpha=0.6)
        left.plot([p.n_opt], [p.loss_opt], "*" if p.bracketed else "x", color=dots.get_color(),
                  markersize=11)
    from matplotlib.ticker import NullFormatter

    left.set(xscale="log", xlabel="non-embedding parameters N", ylabel="validation loss",
             title="IsoFLOP profiles (star: optimum)")
    left.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
    left.legend(fontsize=8)
    found = [p for p in result.profiles if p.bracketed]
    c = [p.flops_budget for p in found]
    for values, law, marker, what in (
            ([p.n_opt for p in found], result.law_n_opt, "o", "N_opt (parameters)"),
            ([p.tokens_opt for p in found], result.law_d_opt, "s", "D_opt (tokens)")):
        (dots,) = right.plot(c, values, marker, label=what)
        if law is not None:
            k, a = law.as_product()
            right.plot(c, [k * x**a for x in c], "--", color=dots.get_color(),
                       label=f"C^{a:.2f}")
    right.set(xlabel="compute budget C (FLOPs)",
              title="compute-optimal size and data (bracketed budgets)")
    if found:
        right.set(xscale="log", yscale="log")
        right.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
    else:
        right.text(0.5, 0.5, "no budget has its minimum\ninside the sizes tried",
                   ha="center", va="center", transform=right.transAxes)
    right.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
