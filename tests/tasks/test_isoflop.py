"""IsoFLOP profiles: the parabola's optimum, when it counts as found, the laws of compute,
and a tiny sweep through ``seqformer scale --flops``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scaling_helpers import write_recipe

from seqformer.cli import main
from seqformer.errors import ConfigError
from seqformer.tasks.isoflop import IsoRun, fit_isoflop, parse_budgets, profile_optimum


def runs_at(budget: float, n_opt: float, sizes: list[float], depth: float = 0.05) -> list[IsoRun]:
    """Losses exactly on a parabola in ln N with its bottom at ``n_opt``; FLOPs per token 6N."""
    return [IsoRun(budget, f"s{i}", int(n), 6.0 * n, int(budget / (6.0 * n)), budget,
                   2.0 + depth * (math.log(n) - math.log(n_opt)) ** 2, 0.0, "")
            for i, n in enumerate(sizes)]


def test_parabola_bottom_inside_the_sizes_is_the_optimum() -> None:
    p = profile_optimum(runs_at(1e12, 3e4, [1e3, 1e4, 1e5, 1e6]))
    assert p.bracketed
    assert p.n_opt == pytest.approx(3e4, rel=1e-3)
    assert p.loss_opt == pytest.approx(2.0, abs=1e-6)
    assert p.tokens_opt == pytest.approx(1e12 / (6.0 * 3e4), rel=1e-3)


def test_a_minimum_beyond_the_sizes_is_not_claimed() -> None:
    p = profile_optimum(runs_at(1e12, 1e7, [1e3, 1e4, 1e5]))  # still falling at 1e5
    assert not p.bracketed
    assert p.n_opt == 1e5  # the best run tried stands in
    assert p.tokens_opt == int(1e12 / 6e5)


def test_optima_growing_as_root_compute_give_exponents_of_one_half() -> None:
    runs = []
    for budget in (1e12, 1e13, 1e14, 1e15):
        runs += runs_at(budget, 0.01 * math.sqrt(budget), [10 ** (k / 2) for k in range(4, 15)])
    result = fit_isoflop("t", 64, runs)
    assert all(p.bracketed for p in result.profiles)
    k, a = result.law_n_opt.as_product()
    assert a == pytest.approx(0.5, abs=1e-3) and k == pytest.approx(0.01, rel=1e-2)
    assert result.law_d_opt.as_product()[1] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("text, words", [("1e9,x", "not a number"), ("1e9,-3", "positive"),
                                         ("1e9,1.01e9", "twice")])
def test_bad_budgets_are_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_budgets(text)


def test_isoflop_sweep_end_to_end(tmp_path: Path, capsys) -> None:
    recipe = write_recipe(tmp_path)
    out = tmp_path / "iso"
    args = ["scale", str(recipe), "--sizes", "1x8,1x16,2x16", "--flops", "2e7,6e7",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| 2e+07 | 1x8 |" in printed and "| 6e+07 | 2x16 |" in printed
    result = json.loads((out / "isoflop.json").read_text())
    assert [p["flops_budget"] for p in result["profiles"]] == [2e7, 6e7]
    for profile in result["profiles"]:
        assert [r["label"] for r in profile["runs"]] == ["1x8", "1x16", "2x16"]
        for r in profile["runs"]:  # tokens follow the budget: whole updates of 64 tokens
            assert r["tokens"] % 64 == 0
            assert abs(r["tokens"] * r["flops_per_token"] - profile["flops_budget"]) <= (
                32 * r["flops_per_token"])
            assert Path(r["run_dir"]).parent.name == f"C{profile['flops_budget']:.0e}"
    small = result["profiles"][0]["runs"]
    assert small[0]["tokens"] > small[1]["tokens"] > small[2]["tokens"]
    assert (out / "isoflop.png").stat().st_size > 0

    # Extending the sweep by a size and a budget reuses the runs already there.
    first_log = (out / "C2e+07" / "1x16" / "log.jsonl").read_text()
    wider = ["scale", str(recipe), "--sizes", "1x8,1x16,2x16,1x24x2", "--flops", "2e7,6e7,1e8",
             "--out", str(out)]
    assert main(wider) == 0
    assert (out / "C2e+07" / "1x16" / "log.jsonl").read_text() == first_log
    grown = json.loads((out / "isoflop.json").read_text())
    assert [len(p["runs"]) for p in grown["profiles"]] == [4, 4, 4]
    assert grown["profiles"][0]["runs"][:3] == result["profiles"][0]["runs"]
    assert json.loads((out / "plan.json").read_text())["heads"]["1x24"] == 2
    capsys.readouterr()
    assert main(wider[:3] + ["1x8,1x16x4,2x16"] + wider[4:]) == 2  # 1x16 had 2 heads there
    assert "1x16 was trained with 2 heads" in capsys.readouterr().err
    assert main(args[:-2] + ["--tokens", "100", "--out", str(tmp_path / "o")]) == 2
    assert main(["scale", str(recipe), "--sizes", "1x8,1x16", "--flops", "2e7",
                 "--out", str(tmp_path / "two")]) == 2
    assert "three sizes" in capsys.readouterr().err
