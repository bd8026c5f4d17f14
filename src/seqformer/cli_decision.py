"""Bodies of ``seqformer train`` (``task: decision``: train, then roll the model out) and
``seqformer evaluate`` (family ``decision``: the rollout table of a run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from seqformer.cli import _device, _interrupted, is_main_process


def train_decision(args: argparse.Namespace, recipe, out: Path) -> int:
    """Train a Decision Transformer, then print the online rollout table (model at a high and
    a low target return, random and expert policies) and write it to ``rollouts.txt``."""
    from seqformer.tasks import decision

    summary = decision.train(recipe, out, resume=args.resume)
    if _interrupted(args, summary, out):
        return 130
    if not is_main_process():
        return 0
    agent = decision.DecisionAgent.load(out, _device(recipe.train.device))
    table = decision.format_rollouts(decision.evaluate_online(agent, recipe))
    (out / "rollouts.txt").write_text(table + "\n", encoding="utf-8")
    print(f"online rollouts ({recipe.rollout.episodes} episodes each):\n{table}")
    print(f"model saved in {out}")
    return 0


def evaluate_decision(args: argparse.Namespace) -> int:
    """The online rollout table of a run, with the rollout settings of its recipe."""
    from seqformer.errors import UserError
    from seqformer.recipe_decision import decision_recipe_from_dict
    from seqformer.tasks import decision

    if len(args.model) > 1:
        raise UserError("evaluate takes one --model for a Decision Transformer")
    import yaml

    run = Path(args.model[0])
    agent = decision.DecisionAgent.load(run, _device(args.device))
    recipe = decision_recipe_from_dict(yaml.safe_load((run / "recipe.yaml").read_text("utf-8")),
                                       str(run / "recipe.yaml"))
    table = decision.format_rollouts(decision.evaluate_online(agent, recipe))
    print(f"online rollouts ({recipe.rollout.episodes} episodes each):\n{table}")
    return 0
