"""Few-shot evaluation: the prompts are GPT-3's, accuracy follows what the demonstrations
show, the query's own pair is never among them, and the command runs end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from seqformer.cli import main
from seqformer.data.corpus import Pair
from seqformer.errors import ConfigError
from seqformer.tasks.fewshot import answer, evaluate_fewshot, fewshot_prompt

SEP = " -> "  # evaluate_fewshot's default separator
LETTERS = "abcdefghijkl"


def cipher_task(seed: int, n: int) -> list[Pair]:
    """(letter, image) pairs of one random permutation of 12 letters: a task learnable only
    from the demonstrations."""
    rng = random.Random(seed)
    images = list(LETTERS)
    rng.shuffle(images)
    mapping = dict(zip(LETTERS, images, strict=True))
    return [Pair(a, mapping[a]) for a in (rng.choice(LETTERS) for _ in range(n))]


class PromptReader:
    """A perfect in-context learner: maps the query with the letters its prompt's
    demonstrations show, and fails where they show too little."""

    tokenizer = SimpleNamespace(encode=lambda text: list(text))

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, prompt: str, max_new: int, temperature: float) -> str:
        self.prompts.append(prompt)
        *demos, query = prompt.split("\n")
        mapping = dict(line.split(SEP) for line in demos)
        return " " + mapping.get(query.removesuffix(SEP.rstrip()), "?") + "\nnext line"


def test_accuracy_follows_the_demonstrations_and_never_sees_the_answer() -> None:
    reader = PromptReader()
    results = evaluate_fewshot(reader, cipher_task(2, 300), [0, 1, 4, 16], n=60, seed=1)
    accuracy = [r.accuracy for r in results]
    assert [r.shots for r in results] == [0, 1, 4, 16] and all(r.n == 60 for r in results)
    # Right exactly when a demonstration shows the query's letter: never at k = 0, about
    # 1 - (11/12)^16 = 75% of the time at k = 16; nested demonstrations make it monotone.
    assert accuracy[0] == 0.0 and accuracy == sorted(accuracy) and 55 < accuracy[-1] < 95
    # k = 4's demonstrations are the first four of k = 16's for the same query.
    four, sixteen = reader.prompts[120], reader.prompts[180]
    assert sixteen.split("\n")[:4] == four.split("\n")[:4]
    # With every input distinct, even a perfect reader never scores: the query's own pair is
    # never among its demonstrations.
    unique = [Pair(f"w{i}", f"v{i}") for i in range(40)]
    assert [r.accuracy for r in evaluate_fewshot(PromptReader(), unique, [0, 8, 39], n=40)
            ] == [0.0] * 3
    assert fewshot_prompt([Pair("ab", "cd")], "ba", SEP) == "ab -> cd\nba ->"
    assert answer(" dc \nab -> cd") == "dc"
    with pytest.raises(ConfigError, match="at least 9 pairs"):
        evaluate_fewshot(reader, unique[:5], [8])
    with pytest.raises(ConfigError, match=">= 0"):
        evaluate_fewshot(reader, unique, [-1])


def test_fewshot_command_end_to_end(tmp_path: Path, capsys) -> None:
    text = tmp_path / "text.txt"
    text.write_text("".join(f"{p.source}{SEP}{p.target}\n" for p in cipher_task(0, 400)))
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(f"""name: tiny-lm
task: lm
data: {{corpus: files, train: [{text}], batch_size: 4}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 64}}
train: {{max_steps: 30, lr: 0.01, eval_every: 30, progress: false, device: cpu}}
""")
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    task = tmp_path / "task.tsv"
    task.write_text("".join(f"{p.source}\t{p.target}\n" for p in cipher_task(0, 30)))
    out = tmp_path / "fewshot.json"
    capsys.readouterr()
    assert main(["fewshot", "--model", str(run), "--data", str(task), "--shots", "2,0",
                 "--n", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{task}: exact-match accuracy" in printed and " -> " in printed
    saved = json.loads(out.read_text())
    assert [r["shots"] for r in saved["results"]] == [0, 2]
    assert all(r["n"] == 6 and 0 <= r["accuracy"] <= 100 for r in saved["results"])
    # The model was trained on this very cipher: two demonstrations are plenty.
    assert saved["results"][1]["accuracy"] >= saved["results"][0]["accuracy"]
    assert main(["fewshot", "--model", str(run), "--data", str(task), "--shots", "one"]) == 2
    assert "--shots 'one'" in capsys.readouterr().err
    assert main(["fewshot", "--model", str(run), "--data", str(task), "--shots", "30"]) == 2
    assert "need at least 31 pairs" in capsys.readouterr().err
