"""The Decision Transformer task: learn actions from offline gridworld trajectories, then act.

Training: the recipe's gridworld -> offline trajectories (random and noisy-expert policies) ->
held-out trajectories for validation (action accuracy and cross-entropy at every step, the step
being the last of its K-step window, as when acting) -> :class:`WindowStream` -> the shared
Trainer. Acting: :class:`DecisionAgent` loads a run and rolls episodes out in the gridworld,
conditioned on a target return that is lowered by each reward received -- asking for a high
return should get a high return, asking for a low one a low one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from seqformer.data.trajectories import (
    N_ACTIONS,
    GridWorld,
    Trajectory,
    WindowStream,
    eval_batches,
    make_trajectories,
)
from seqformer.errors import CheckpointError
from seqformer.models.decision import DecisionTransformer, config_json
from seqformer.recipe_decision import DecisionRecipe, GridDataConfig, decision_recipe_from_dict
from seqformer.tasks.rundir import log, write_run_metadata
from seqformer.training.trainer import Trainer


# -- data -----------------------------------------------------------------------------------------
def load_trajectories(data: GridDataConfig) -> tuple[list[Trajectory], list[Trajectory], str]:
    """Training and validation trajectories (split by trajectory) and a fingerprint."""
    env = data.env()
    trajectories = make_trajectories(env, data.episodes, data.random_fraction, data.max_noise,
                                     data.seed)
    n_valid = max(1, round(len(trajectories) * data.valid_percent / 100))
    train, valid = trajectories[n_valid:], trajectories[:n_valid]
    digest = hashlib.sha256()
    for tr in trajectories:
        digest.update(tr.actions.tobytes() + tr.cells.tobytes())
    return train, valid, digest.hexdigest()[:16]


def policy_stats(trajectories: list[Trajectory], policy: str | None = None) -> dict[str, float]:
    """Mean return and success rate of ``trajectories`` (of one ``policy`` if given)."""
    rows = [t for t in trajectories if policy is None or t.policy == policy]
    if not rows:
        return {"return": float("nan"), "success": float("nan"), "episodes": 0.0}
    return {"return": float(np.mean([t.total for t in rows])),
            "success": float(np.mean([t.rewards[-1] > 0 for t in rows])),
            "episodes": float(len(rows))}


@torch.inference_mode()
def action_metrics(model: DecisionTransformer, batches) -> dict[str, float]:
    """Accuracy and mean cross-entropy of the action predicted at the last step of each
    window (every step of the held-out trajectories once)."""
    device = next(model.parameters()).device
    correct = total = 0
    nll = 0.0
    for batch in batches:
        b = batch.to(device)
        logits = model.predict(b.states, b.actions, b.returns_to_go, b.timesteps, b.mask)[:, -1]
        target = b.actions[:, -1]
        nll += float(F.cross_entropy(logits.float(), target, reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
        total += len(target)
    return {"valid_loss": nll / max(total, 1), "valid_accuracy": correct / max(total, 1)}


# -- acting ---------------------------------------------------------------------------------------
@dataclass
class RolloutResult:
    target: float | None  # None for the reference policies
    returns: list[float]
    successes: list[bool]

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes))


class DecisionAgent:
    """A trained Decision Transformer in its gridworld: ``rollout(target_return, ...)``."""

    def __init__(self, model: DecisionTransformer, env: GridWorld) -> None:
        c = model.config
        if (c.action, c.state_dim, c.act_dim) != ("discrete", env.state_dim, N_ACTIONS):
            # An imported model with a recipe.yaml put beside it would otherwise fail deep in
            # a matrix product.
            raise CheckpointError(
                f"this model ({c.action} actions, state_dim {c.state_dim}, act_dim {c.act_dim}) "
                f"cannot act in the recipe's {env.size}x{env.size} gridworld (discrete actions, "
                f"state_dim {env.state_dim}, act_dim {N_ACTIONS}); use it from Python "
                "(DecisionTransformer.load(DIR).predict)")
        self.model, self.env = model.eval(), env
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> DecisionAgent:
        run_dir = Path(run_dir)
        recipe_path = run_dir / "recipe.yaml"
        if not recipe_path.is_file():
            raise CheckpointError(f"{run_dir}: no recipe.yaml; evaluate rolls out only runs of "
                                  "'task: decision' in their gridworld (an imported model is "
                                  "used from Python: DecisionTransformer.load(DIR).predict)")
        recipe = decision_recipe_from_dict(yaml.safe_load(recipe_path.read_text("utf-8")),
                                           str(recipe_path))
        return cls(DecisionTransformer.load(run_dir, device), recipe.data.env())

    @torch.inference_mode()
    def rollout(self, target_return: float, episodes: int = 1, seed: int = 1,
                greedy: bool = False) -> RolloutResult:
        """``episodes`` episodes at once (one batched forward pass per step), each starting
        from ``target_return``; actions are sampled from the model (seeded) or, with
        ``greedy``, its most likely ones."""
        env, c = self.env, self.model.config
        generator = torch.Generator().manual_seed(seed)
        n, horizon = episodes, env.max_steps
        cells = np.full((n, horizon + 1), env.start, dtype=np.int64)
        actions = torch.full((n, horizon), -1, dtype=torch.long)
        rtg = torch.zeros(n, horizon)
        rtg[:, 0] = target_return
        totals = np.zeros(n)
        done = np.zeros(n, dtype=bool)
        success = np.zeros(n, dtype=bool)
        for t in range(horizon):
            lo = max(0, t + 1 - c.context)
            states = torch.from_numpy(env.one_hot(cells[:, lo:t + 1]))
            steps = torch.arange(lo, t + 1).expand(n, -1)
            logits = self.model.act(states.to(self.device), actions[:, lo:t + 1].to(self.device),
                                    rtg[:, lo:t + 1].to(self.device), steps.to(self.device))
            if greedy:
                chosen = logits.argmax(-1).cpu()
            else:
                chosen = torch.multinomial(logits.float().softmax(-1).cpu(), 1,
                                           generator=generator)[:, 0]
            actions[:, t] = chosen
            nxt = env.next_cell[cells[:, t], chosen.numpy()]
            at_goal = nxt == env.goal
            reward = np.where(at_goal, env.goal_reward - 1.0, -1.0)
            active = ~done
            totals[active] += reward[active]
            success |= active & at_goal
            done |= at_goal
            cells[:, t + 1] = nxt  # finished episodes move on unscored
            if t + 1 < horizon:
                rtg[:, t + 1] = rtg[:, t] - torch.from_numpy(reward).float()
            if done.all():
                break
        return RolloutResult(target_return, totals.tolist(), success.tolist())


def reference_policy(env: GridWorld, noise: float, episodes: int, seed: int) -> RolloutResult:
    """Online returns of the random (``noise`` 1) or expert (``noise`` 0) policy."""
    from seqformer.data.trajectories import run_episode

    rng = np.random.default_rng(seed)
    runs = [run_episode(env, rng, noise) for _ in range(episodes)]
    return RolloutResult(None, [t.total for t in runs], [bool(t.rewards[-1] > 0) for t in runs])


def evaluate_online(agent: DecisionAgent, recipe: DecisionRecipe,
                    trajectories: list[Trajectory] | None = None
                    ) -> list[tuple[str, RolloutResult]]:
    """The rollout table: the model at a high target return, at ``rollout.targets`` and at a
    low one, then the random and the expert policies. ``high`` / ``low`` left null in the
    recipe are the best / worst return of the data (``trajectories``; rebuilt from the recipe
    when not given)."""
    r = recipe.rollout
    high, low = r.high, r.low
    if high is None or low is None:
        if trajectories is None:
            train, valid, _ = load_trajectories(recipe.data)
            trajectories = train + valid
        totals = [t.total for t in trajectories]
        high = max(totals) if high is None else high
        low = min(totals) if low is None else low
    rows = [(f"DT, target {target:g}", agent.rollout(target, r.episodes, r.seed, r.greedy))
            for target in (high, *r.targets, low)]
    rows.append(("random policy", reference_policy(agent.env, 1.0, r.episodes, r.seed)))
    rows.append(("expert policy", reference_policy(agent.env, 0.0, r.episodes, r.seed)))
    return rows


def format_rollouts(rows: list[tuple[str, RolloutResult]]) -> str:
    lines = [f"{'policy':<22} {'mean return':>11} {'success':>8}"]
    for name, result in rows:
        lines.append(f"{name:<22} {result.mean_return:>11.2f} {result.success_rate:>8.0%}")
    return "\n".join(lines)


# -- training -------------------------------------------------------------------------------------
def train(recipe: DecisionRecipe, out_dir: str | Path, resume: bool = False) -> dict:
    """Train ``recipe`` into ``out_dir``; returns the trainer's summary."""
    from seqformer.tasks.lm import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    t0 = time.time()
    train_set, valid_set, fingerprint = load_trajectories(recipe.data)
    env = recipe.data.env()
    config = recipe.model_config()
    log(f"data: {len(train_set)} train / {len(valid_set)} valid trajectories "
        f"({sum(len(t.actions) for t in train_set):,} steps, split {fingerprint}) in "
        f"{time.time() - t0:.1f}s; random policy mean return "
        f"{policy_stats(train_set, 'random')['return']:.2f}, noisy experts "
        f"{policy_stats(train_set, 'expert')['return']:.2f}; optimal {env.best_return:g}")
    torch.manual_seed(recipe.train.seed)
    model = DecisionTransformer(config)
    log(f"model: {model.num_parameters() / 1e3:.1f}k parameters, {config.layers} layers, "
        f"d_model {config.d_model}, context {config.context} steps; {N_ACTIONS} actions")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": fingerprint}, config_json(config))

    save_run(out)
    valid_batches = eval_batches(valid_set, env, config.context)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        return action_metrics(m, valid_batches)

    stream = WindowStream(train_set, env, config.context, recipe.data.batch_size,
                          recipe.train.seed)
    trainer = Trainer(model, recipe.train, stream, out, validate=validate, on_save=save_run)
    return trainer.train(resume=resume)
