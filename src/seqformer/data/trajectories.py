"""Offline RL data made by code: a small deterministic gridworld, trajectories of a mix of
random and noisy-expert policies, returns-to-go, and K-step training windows.

The grid is ``size`` x ``size``; the agent starts in the top-left corner and the goal is the
bottom-right one; ``walls`` are blocked cells. Actions 0-3 move up / down / left / right; a move
into a wall or off the grid stays put. Every step costs -1 and reaching the goal adds
``goal_reward`` and ends the episode; ``max_steps`` caps an episode. The state is the one-hot
cell (``size * size`` numbers). The expert follows a shortest path (breadth-first search from
the goal); a noisy expert takes a random action with probability ``noise``.

Everything is a pure function of its seed: the same recipe gives the same data.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from seqformer.errors import ConfigError
from seqformer.models.decision import DecisionBatch

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right
N_ACTIONS = len(MOVES)


WALLS_EXAMPLE = "[[1, 1], [1, 2]]"


def check_walls(walls: object, size: int | None = None) -> list[tuple[int, int]]:
    """``data.walls`` as (row, col) pairs, or a one-line ConfigError naming the entry and the
    fix. Recipes (YAML, ``--set``) can hold anything here -- a number, a string, a short pair
    -- so the shape is checked before anything iterates it; with ``size``, every cell must
    also lie inside the grid. Integral floats (``1.0``) count as integers; booleans do not."""
    if not isinstance(walls, list | tuple):
        raise ConfigError(f"data.walls must be a list of [row, col] cells such as "
                          f"{WALLS_EXAMPLE} ([] for none), got {walls!r}")
    cells = []
    for i, wall in enumerate(walls):
        ok = isinstance(wall, list | tuple) and len(wall) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
            for v in wall)
        if not ok:
            raise ConfigError(f"data.walls[{i}] = {wall!r} is not a [row, col] pair of "
                              f"integers; write each wall like [1, 2], e.g. walls: "
                              f"{WALLS_EXAMPLE}")
        row, col = int(wall[0]), int(wall[1])
        if size is not None and not (0 <= row < size and 0 <= col < size):
            raise ConfigError(f"data.walls[{i}] = [{row}, {col}] is outside the {size}x{size} "
                              f"grid; rows and columns run from 0 to {size - 1}")
        cells.append((row, col))
    return cells


class GridWorld:
    """The environment: ``reset() -> state``, ``step(action) -> (state, reward, done)``; also
    batched helpers on cell indices for vectorised rollouts."""

    def __init__(self, size: int = 5, walls: list[list[int]] | tuple = (),
                 max_steps: int = 25, goal_reward: float = 10.0) -> None:
        if size < 2:
            raise ConfigError(f"data.size must be >= 2, got {size}")
        if max_steps < 1:
            raise ConfigError(f"data.max_steps must be >= 1, got {max_steps}")
        self.size, self.max_steps, self.goal_reward = size, max_steps, float(goal_reward)
        self.start, self.goal = 0, size * size - 1
        self.walls = set()
        for i, (row, col) in enumerate(check_walls(walls, size)):
            cell = row * size + col
            if cell in (self.start, self.goal):
                raise ConfigError(f"data.walls[{i}] = [{row}, {col}] covers the start [0, 0] or "
                                  f"the goal [{size - 1}, {size - 1}]; remove it")
            self.walls.add(cell)
        # next_cell[cell, action]; walls and edges keep the agent in place.
        n = size * size
        self.next_cell = np.zeros((n, N_ACTIONS), dtype=np.int64)
        for cell in range(n):
            r, c = divmod(cell, size)
            for a, (dr, dc) in enumerate(MOVES):
                rr, cc = r + dr, c + dc
                target = rr * size + cc
                inside = 0 <= rr < size and 0 <= cc < size and target not in self.walls
                self.next_cell[cell, a] = target if inside else cell
        self.distance = self._distances()
        if self.distance[self.start] < 0:
            raise ConfigError("data.walls block every path from the start to the goal")
        if self.distance[self.start] >= max_steps:
            raise ConfigError(f"data.max_steps={max_steps} is too short: the shortest path "
                              f"takes {self.distance[self.start]} steps")
        self.state = self.start
        self.t = 0

    @property
    def state_dim(self) -> int:
        return self.size * self.size

    @property
    def best_return(self) -> float:
        """The expert's (optimal) return."""
        return self.goal_reward - float(self.distance[self.start])

    def _distances(self) -> np.ndarray:
        """Steps from each cell to the goal (-1: unreachable), by BFS over reverse moves."""
        dist = np.full(self.size * self.size, -1, dtype=np.int64)
        dist[self.goal] = 0
        queue = deque([self.goal])
        while queue:
            cell = queue.popleft()
            for prev in range(self.size * self.size):
                if dist[prev] < 0 and prev not in self.walls and cell in self.next_cell[prev]:
                    dist[prev] = dist[cell] + 1
                    queue.append(prev)
        return dist

    def expert_actions(self, cell: int) -> list[int]:
        """Every action that moves ``cell`` one step closer to the goal."""
        d = self.distance[cell]
        return [a for a in range(N_ACTIONS) if self.distance[self.next_cell[cell, a]] == d - 1]

    def one_hot(self, cells: np.ndarray | int) -> np.ndarray:
        return np.eye(self.state_dim, dtype=np.float32)[cells]

    def reset(self) -> np.ndarray:
        self.state, self.t = self.start, 0
        return self.one_hot(self.state)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        self.state = int(self.next_cell[self.state, action])
        self.t += 1
        at_goal = self.state == self.goal
        reward = -1.0 + (self.goal_reward if at_goal else 0.0)
        return self.one_hot(self.state), reward, at_goal or self.t >= self.max_steps


@dataclass
class Trajectory:
    cells: np.ndarray  # (T,) the cell before each action
    actions: np.ndarray  # (T,)
    rewards: np.ndarray  # (T,)
    policy: str  # "random" or "expert"

    @property
    def total(self) -> float:
        return float(self.rewards.sum())

    @property
    def returns_to_go(self) -> np.ndarray:
        return returns_to_go(self.rewards)


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """R_t = r_t + r_{t+1} + ... + r_T (undiscounted), for every step t."""
    return np.cumsum(np.asarray(rewards, dtype=np.float64)[::-1])[::-1].astype(np.float32)


def run_episode(env: GridWorld, rng: np.random.Generator, noise: float) -> Trajectory:
    """One episode of the expert that acts at random with probability ``noise`` (1 = random)."""
    cells, actions, rewards = [], [], []
    env.reset()
    done = False
    while not done:
        cell = env.state
        if rng.random() < noise:
            action = int(rng.integers(N_ACTIONS))
        else:
            options = env.expert_actions(cell)
            action = options[int(rng.integers(len(options)))]
        _, reward, done = env.step(action)
        cells.append(cell)
        actions.append(action)
        rewards.append(reward)
    return Trajectory(np.array(cells), np.array(actions), np.array(rewards, dtype=np.float32),
                      "random" if noise >= 1.0 else "expert")


def make_trajectories(env: GridWorld, episodes: int, random_fraction: float,
                      max_noise: float, seed: int) -> list[Trajectory]:
    """``episodes`` trajectories: a ``random_fraction`` of them by the uniform random policy,
    the rest by noisy experts whose noise is drawn uniformly from [0, ``max_noise``]."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        noise = 1.0 if i < round(episodes * random_fraction) else float(rng.uniform(0, max_noise))
        out.append(run_episode(env, rng, noise))
    order = rng.permutation(len(out))  # random and expert interleaved for the split
    return [out[i] for i in order]


def window(traj: Trajectory, end: int, context: int, env: GridWorld
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The K = ``context`` steps ending at step ``end`` (inclusive), padded at the start:
    (states, actions, returns_to_go, timesteps, mask)."""
    start = max(0, end + 1 - context)
    n, pad = end + 1 - start, context - (end + 1 - start)
    states = np.zeros((context, env.state_dim), dtype=np.float32)
    states[pad:] = env.one_hot(traj.cells[start:end + 1])
    actions = np.full(context, -1, dtype=np.int64)
    actions[pad:] = traj.actions[start:end + 1]
    rtg = np.zeros(context, dtype=np.float32)
    rtg[pad:] = traj.returns_to_go[start:end + 1]
    steps = np.zeros(context, dtype=np.int64)
    steps[pad:] = np.arange(start, start + n)
    mask = np.zeros(context, dtype=bool)
    mask[pad:] = True
    return states, actions, rtg, steps, mask


def collate(rows: list[tuple]) -> DecisionBatch:
    return DecisionBatch(*(torch.from_numpy(np.stack(col)) for col in zip(*rows)))


class WindowStream:
    """Training batches forever: ``batch_size`` windows, each at a step drawn uniformly from
    all steps of all trajectories. Batch n is a pure function of (seed, n), so the resume
    state is one int."""

    def __init__(self, trajectories: list[Trajectory], env: GridWorld, context: int,
                 batch_size: int, seed: int) -> None:
        self.trajectories, self.env, self.context = trajectories, env, context
        self.batch_size, self.seed = batch_size, seed
        self.index = [(i, t) for i, tr in enumerate(trajectories) for t in range(len(tr.actions))]
        self.position = 0

    @property
    def epoch(self) -> int:
        return self.position * self.batch_size // max(len(self.index), 1)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])

    def __iter__(self):
        while True:
            rng = np.random.default_rng([self.seed, self.position])
            self.position += 1
            picks = rng.integers(len(self.index), size=self.batch_size)
            yield collate([window(self.trajectories[self.index[p][0]], self.index[p][1],
                                  self.context, self.env) for p in picks])


def eval_batches(trajectories: list[Trajectory], env: GridWorld, context: int,
                 batch_size: int = 256) -> list[DecisionBatch]:
    """Every step of ``trajectories`` once, as the last step of its window."""
    rows = [window(tr, t, context, env) for tr in trajectories for t in range(len(tr.actions))]
    return [collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
