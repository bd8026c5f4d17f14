"""The Decision Transformer task: gridworld data, learning to act by target return, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.cli import main
from seqformer.data.trajectories import GridWorld, Trajectory, WindowStream, returns_to_go, window
from seqformer.errors import ConfigError
from seqformer.recipe import load_recipe, recipe_from_dict
from seqformer.recipe_decision import DecisionRecipe
from seqformer.tasks import decision

TINY = ["data.episodes=300", "data.batch_size=32", "model.d_model=32", "model.heads=2",
        "model.layers=1", "model.ffn_dim=64", "model.context=5", "model.dropout=0.0",
        "model.attention_dropout=0.0", "train.max_steps=150", "train.eval_every=75",
        "train.save_every=75", "train.warmup_steps=10", "train.lr=0.003",
        "train.progress=false", "rollout.episodes=100"]


def test_returns_to_go() -> None:
    np.testing.assert_allclose(returns_to_go(np.array([-1.0, -1.0, 9.0])), [7.0, 8.0, 9.0])
    np.testing.assert_allclose(returns_to_go(np.array([-1.0])), [-1.0])
    env = GridWorld(3, [], 5)
    traj = Trajectory(np.array([0, 1, 2, 5]), np.array([3, 3, 1, 1]),
                      np.array([-1, -1, -1, 9], dtype=np.float32), "expert")
    assert traj.total == 6.0
    states, actions, rtg, steps, mask = window(traj, 1, 4, env)  # steps 0-1, padded first
    assert mask.tolist() == [False, False, True, True]
    assert actions.tolist() == [-1, -1, 3, 3] and steps.tolist() == [0, 0, 0, 1]
    assert rtg.tolist() == [0.0, 0.0, 6.0, 7.0]
    assert states[2].argmax() == 0 and states[3].argmax() == 1 and not states[:2].any()


def test_gridworld_rules() -> None:
    env = GridWorld(5, [[1, 1], [1, 2], [1, 3], [3, 1], [3, 2], [3, 3]], 25)
    assert env.best_return == 2.0  # 8 steps: -8 + 10
    env.reset()
    _, reward, done = env.step(0)  # up into the edge: stays
    assert env.state == 0 and reward == -1.0 and not done
    with pytest.raises(ConfigError, match="block every path"):
        GridWorld(3, [[0, 1], [1, 0], [1, 1]], 10)
    # Malformed walls from a recipe are one-line config errors, not tracebacks.
    for walls in (3, [3], [[1, "a"]], [[1, 2, 3]], [[9, 9]], [[True, 1]]):
        with pytest.raises(ConfigError, match="data.walls"):
            GridWorld(5, walls, 25)


def test_window_stream_is_a_function_of_seed_and_position() -> None:
    recipe = load_recipe("dt-gridworld", TINY)
    train, _, _ = decision.load_trajectories(recipe.data)
    env = recipe.data.env()
    a = WindowStream(train, env, 5, 8, seed=3)
    next(iter(a))
    second = next(iter(a))
    b = WindowStream(train, env, 5, 8, seed=3)
    b.load_state_dict({"position": 1})
    assert torch.equal(next(iter(b)).states, second.states)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, DecisionRecipe]:
    out = tmp_path_factory.mktemp("dt") / "run"
    recipe = load_recipe("dt-gridworld", TINY)
    torch.set_num_threads(1)
    summary = decision.train(recipe, out)
    assert summary["step"] == 150
    return out, recipe


def test_high_target_return_beats_random_policy(tiny_run) -> None:
    out, recipe = tiny_run
    agent = decision.DecisionAgent.load(out)
    rows = dict(decision.evaluate_online(agent, recipe))
    high, low = rows["DT, target 2"], rows["DT, target -25"]
    rand = rows["random policy"]
    assert rand.success_rate < 0.2
    assert high.success_rate >= 0.7 and high.success_rate >= rand.success_rate + 0.5
    assert high.mean_return > low.mean_return + 10  # asking for more gets more
    # Same seed, same episodes.
    again = agent.rollout(2.0, 100, seed=recipe.rollout.seed)
    assert again.returns == high.returns


def test_cli_end_to_end(tmp_path: Path, capsys) -> None:
    args = ["train", "dt-gridworld", "--out", str(tmp_path / "run")]
    for item in TINY + ["train.max_steps=20", "train.eval_every=10", "rollout.episodes=10"]:
        args += ["--set", item]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "DT, target 2" in printed and "random policy" in printed
    assert (tmp_path / "run" / "rollouts.txt").is_file()
    assert '"family": "decision"' in (tmp_path / "run" / "config.json").read_text()
    assert main(["evaluate", "--model", str(tmp_path / "run")]) == 0
    assert "DT, target -25" in capsys.readouterr().out


@pytest.mark.parametrize("override, message", [
    ("model.action=continuous", "comes from the environment"),
    ("data.sizee=4", "did you mean 'data.size'"),
    ("train.metric=bleu", "for task: decision"),
    ("data.walls=[[0,0]]", "covers the start"),
])
def test_bad_recipe_field_is_a_one_line_error(tmp_path: Path, capsys, override: str,
                                              message: str) -> None:
    assert main(["train", "dt-gridworld", "--out", str(tmp_path / "r"), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("walls, message", [
    ("5", "data.walls must be a list of [row, col] cells such as [[1, 1], [1, 2]]"),
    ('"x"', "data.walls must be a list of [row, col] cells"),
    ("null", "data.walls must be a list of [row, col] cells"),
    ("[1, 2]", "data.walls[0] = 1 is not a [row, col] pair of integers; write each wall like"),
    ("[[1]]", "data.walls[0] = [1] is not a [row, col] pair of integers"),
    ('[[1, "a"]]', "data.walls[0] = [1, 'a'] is not a [row, col] pair of integers"),
    ("[[1, 1], [2.5, 0]]", "data.walls[1] = [2.5, 0] is not a [row, col] pair"),
    ("[[99, 99]]", "data.walls[0] = [99, 99] is outside the 5x5 grid; rows and columns run "
                   "from 0 to 4"),
    ("[[0, 0]]", "data.walls[0] = [0, 0] covers the start [0, 0] or the goal [4, 4]; remove it"),
])
@pytest.mark.parametrize("source", ["--set", "file"])
def test_malformed_walls_are_one_line_errors(tmp_path: Path, capsys, walls: str, message: str,
                                             source: str) -> None:
    if source == "--set":
        args = ["dt-gridworld", "--set", f"data.walls={walls}"]
    else:
        recipe = tmp_path / "dt.yaml"
        recipe.write_text(f"task: decision\ndata:\n  walls: {walls}\n", encoding="utf-8")
        args = [str(recipe)]
    assert main(["train", *args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_integral_float_walls_still_work() -> None:
    recipe = recipe_from_dict({"task": "decision", "data": {"walls": [[1.0, 2]]}})
    assert recipe.data.walls == [[1, 2]] and recipe.data.env().walls == {7}


def test_recipe_dispatch() -> None:
    recipe = recipe_from_dict({"task": "decision", "model": {"layers": 1}})
    assert isinstance(recipe, DecisionRecipe)
    assert recipe.model_config().state_dim == 25 and recipe.model_config().act_dim == 4
