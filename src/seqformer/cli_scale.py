"""``seqformer scale RECIPE --sizes 1x32,2x64,4x128 --tokens N``: one GPT recipe trained at
several sizes on the same tokens, and the power laws of its loss
(:mod:`seqformer.tasks.scaling`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqformer.errors import ConfigError
from seqformer.tasks.scaling import DEFAULT_EVALS, DEFAULT_SIZES, DEFAULT_TOKENS


def _count(text: str) -> int:
    """``2000000``, ``2e6`` or ``2M``: token budgets are easier to type in short forms."""
    value = text.strip().lower()
    scale = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}.get(value[-1:], 1.0)
    if scale != 1.0:
        value = value[:-1]
    try:
        number = float(value) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count such as 2000000, 2e6 or "
                                         f"2M") from None
    if not number >= 1 or number != int(number):
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of tokens >= 1")
    return int(number)


def cmd_scale(args: argparse.Namespace) -> int:
    from seqformer.recipe import LMRecipe, load_recipe
    from seqformer.tasks.scaling import head_dim, parse_sizes, report_lines, run_scaling

    recipe = load_recipe(args.recipe, args.set)
    if not isinstance(recipe, LMRecipe):
        raise ConfigError(f"{args.recipe}: scale needs a language-model recipe (task: lm, "
                          f"e.g. gpt-kjv-char), not task: {recipe.task}")
    if args.data:
        return data_sweep(args, recipe)
    sizes = parse_sizes(args.sizes or DEFAULT_SIZES, head_dim(recipe))
    # Each kind of sweep has its own default home: one directory holds one kind.
    out = Path(args.out or f"runs/{'isoflop' if args.flops else 'scale'}-{recipe.name}")
    if args.flops:
        from seqformer.tasks import isoflop

        if args.tokens is not None:
            raise ConfigError("--flops sets each run's tokens (budget / FLOPs per token); "
                              "drop --tokens")
        iso = isoflop.run_isoflop(recipe, sizes, isoflop.parse_budgets(args.flops), out,
                                  max_minutes=args.max_minutes)
        print("\n".join(isoflop.report_lines(iso)))
        print(f"table in {out / 'isoflop.md'}, numbers in {out / 'isoflop.json'}, plot in "
              f"{out / 'isoflop.png'}; each run is a directory under {out}/C*/")
        return 0
    result = run_scaling(recipe, sizes, args.tokens or DEFAULT_TOKENS, out, evals=args.evals,
                         max_minutes=args.max_minutes)
    print("\n".join(report_lines(result)))
    print(f"table in {out / 'scaling.md'}, numbers in {out / 'scaling.json'}, plot in "
          f"{out / 'scaling.png'}; each size is a run directory under {out}")
    return 0


def data_sweep(args: argparse.Namespace, recipe: Any) -> int:
    """``--data``: one size (``--sizes`` names it; default the recipe's own) on each dataset
    size; see :mod:`seqformer.tasks.data_scaling`."""
    from seqformer.tasks import data_scaling
    from seqformer.tasks.scaling import Size, _model_field, head_dim, parse_sizes

    if args.flops:
        raise ConfigError("--data and --flops are two kinds of sweep; give one")
    if args.sizes:
        found = parse_sizes(args.sizes, head_dim(recipe), least=1)
        if len(found) != 1:
            raise ConfigError("--data trains one model size on each dataset size; give one "
                              f"--sizes (e.g. 4x128), not {len(found)}")
        size = found[0]
    else:
        size = Size(_model_field(recipe, "layers"), _model_field(recipe, "d_model"),
                    _model_field(recipe, "heads"))
    try:
        counts = [_count(v) for v in args.data.split(",")]
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"--data: {e}") from None
    data = data_scaling.parse_data_sizes(counts)
    out = Path(args.out or f"runs/data-scale-{recipe.name}")
    result = data_scaling.run_data_scaling(recipe, size, data, args.tokens or DEFAULT_TOKENS,
                                           out, evals=args.evals, max_minutes=args.max_minutes)
    print("\n".join(data_scaling.report_lines(result)))
    print(f"table in {out / 'data_scaling.md'}, numbers in {out / 'data_scaling.json'}, plot "
          f"in {out / 'data_scaling.png'}; each dataset size is a run directory under {out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``scale``."""
    p = sub.add_parser("scale", help="train a GPT recipe at several sizes on the same tokens "
                       "and fit its scaling laws (loss against parameters and compute)")
    p.add_argument("recipe", help="language-model recipe (task: lm), e.g. gpt-kjv-char")
    p.add_argument("--sizes", default=None,
                   help=f"comma-separated LAYERSxD_MODEL[xHEADS] (default {DEFAULT_SIZES}; "
                   "with --data one size, default the recipe's); without HEADS the recipe's "
                   "head size is kept")
    p.add_argument("--tokens", type=_count, default=None,
                   help="training tokens for every size, e.g. 2e6 or 2M (default 1M)")
    p.add_argument("--flops", metavar="C1,C2,...",
                   help="IsoFLOP profiles instead (Chinchilla): at each compute budget every "
                   "size trains on budget / (its FLOPs per token) tokens, and the best size "
                   "per budget gives N_opt and D_opt as laws of compute")
    p.add_argument("--data", metavar="D1,D2,...",
                   help="dataset sizes instead (Kaplan's L(D)): one model size trained for "
                   "--tokens on the first D tokens of the training text each, e.g. "
                   "100k,300k,1M; the early-stopped losses give the law")
    p.add_argument("--evals", type=int, default=DEFAULT_EVALS,
                   help=f"validation points per run, for the compute curves (default "
                   f"{DEFAULT_EVALS})")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="cap on each size's training time (default none: every size gets "
                   "all its tokens)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field for every size, e.g. --set train.lr=0.002")
    p.add_argument("--out", help="output directory (default runs/scale-<recipe name>, with "
                   "--flops runs/isoflop-<recipe name>)")
    p.set_defaults(func=cmd_scale)
