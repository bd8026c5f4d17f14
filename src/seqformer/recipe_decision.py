"""The recipe of ``task: decision`` (a Decision Transformer on the built-in gridworld).

Sections: ``data`` (:class:`GridDataConfig`: the gridworld and the offline trajectories),
``model`` (:class:`~seqformer.models.decision.DecisionTransformerConfig` fields; ``state_dim``,
``act_dim`` and ``action`` come from the environment), ``train``
(:class:`~seqformer.training.trainer.TrainConfig`; metric ``valid_accuracy`` or
``valid_loss``) and ``rollout`` (:class:`RolloutConfig`: the online evaluation after training).
:func:`seqformer.recipe.recipe_from_dict` hands ``task: decision`` to
:func:`decision_recipe_from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqformer.config import check_metric, from_dict, located, to_dict
from seqformer.errors import ConfigError
from seqformer.models.decision import DecisionTransformerConfig
from seqformer.training.trainer import TrainConfig

DECISION_METRICS = {"valid_loss": "min", "valid_accuracy": "max"}
ENV_FIELDS = ("state_dim", "act_dim", "action")  # filled in from the environment


def _default_walls() -> list[list[int]]:
    return [[1, 1], [1, 2], [1, 3], [3, 1], [3, 2], [3, 3]]


@dataclass(frozen=True)
class GridDataConfig:
    """The gridworld (see :mod:`seqformer.data.trajectories`) and its offline data:
    ``episodes`` trajectories, a ``random_fraction`` of them by the random policy and the rest
    by experts with noise drawn from [0, ``max_noise``]; ``valid_percent`` of the trajectories
    are held out for validation (action accuracy and loss at every step)."""

    size: int = 5
    walls: list[list[int]] = field(default_factory=_default_walls)
    max_steps: int = 25
    goal_reward: float = 10.0
    episodes: int = 1000
    random_fraction: float = 0.5
    max_noise: float = 0.6
    valid_percent: float = 10.0
    batch_size: int = 64
    seed: int = 1

    def __post_init__(self) -> None:
        if self.episodes < 10:
            raise ConfigError(f"data.episodes must be >= 10, got {self.episodes}")
        if not 0.0 <= self.random_fraction <= 1.0:
            raise ConfigError(f"data.random_fraction must be in [0, 1], got "
                              f"{self.random_fraction}")
        if not 0.0 <= self.max_noise <= 1.0:
            raise ConfigError(f"data.max_noise must be in [0, 1], got {self.max_noise}")
        if not 0.0 < self.valid_percent < 100.0:
            raise ConfigError(f"data.valid_percent must be in (0, 100), got {self.valid_percent}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        self.env()  # the layout checks (walls inside, goal reachable, cap long enough)

    def env(self):
        from seqformer.data.trajectories import GridWorld

        return GridWorld(self.size, self.walls, self.max_steps, self.goal_reward)


@dataclass(frozen=True)
class RolloutConfig:
    """Online evaluation after training: ``episodes`` rollouts (actions sampled from the
    model, seeded) conditioned on ``high`` (null: the best return in the data), on each of
    ``targets`` and on ``low`` (null: the worst), next to the random and expert policies."""

    episodes: int = 100
    high: float | None = None
    targets: list[float] = field(default_factory=list)
    low: float | None = None
    greedy: bool = False
    seed: int = 1

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"rollout.episodes must be >= 1, got {self.episodes}")


@dataclass(frozen=True)
class DecisionRecipe:
    name: str = "dt"
    task: str = "decision"
    data: GridDataConfig = field(default_factory=GridDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_metric(self.train.metric, self.train.metric_mode, DECISION_METRICS, "decision")
        for key in ENV_FIELDS:
            if key in self.model:
                raise ConfigError(f"model.{key} comes from the environment; remove it")

    def model_config(self) -> DecisionTransformerConfig:
        from seqformer.data.trajectories import N_ACTIONS

        env = self.data.env()
        config = from_dict(DecisionTransformerConfig,
                           {**self.model, "state_dim": env.state_dim, "act_dim": N_ACTIONS,
                            "action": "discrete"}, "recipe", "model.")
        if config.max_ep_len < self.data.max_steps:
            raise ConfigError(f"model.max_ep_len={config.max_ep_len} is shorter than "
                              f"data.max_steps={self.data.max_steps}; raise it")
        return config

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def decision_recipe_from_dict(tree: dict[str, Any], where: str = "recipe") -> DecisionRecipe:
    """Build and fully validate a ``task: decision`` recipe; errors name ``where``."""
    from seqformer.data.trajectories import check_walls

    with located(where):
        data = tree.get("data") if isinstance(tree, dict) else None
        if isinstance(data, dict) and "walls" in data:
            # Before from_dict, whose list[list[int]] coercion would iterate a bare number
            # (a TypeError traceback) or report a bad entry without naming the field.
            check_walls(data["walls"])
        recipe = from_dict(DecisionRecipe, tree, where)
        recipe.model_config()
    return recipe
