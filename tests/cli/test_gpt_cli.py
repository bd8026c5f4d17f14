"""The language-model commands end to end on a tiny recipe, and the bad inputs a user can give."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from test_cli import error_of

from seqformer.cli import main
from seqformer.errors import ConfigError
from seqformer.recipe import recipe_from_dict

WORDS = ["the", "lord", "said", "unto", "moses", "and", "it", "was", "so", "light", "day"]


def write_text(path: Path, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + ".\n"
                   for _ in range(lines))
    path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gpt")
    write_text(root / "a.txt", 120, 1)
    write_text(root / "b.txt", 60, 2)
    write_text(root / "held_out.txt", 20, 3)
    recipe = root / "tiny-lm.yaml"
    recipe.write_text(f"""
name: tiny-lm
task: lm
data: {{corpus: files, train: [{root / 'a.txt'}, {root / 'b.txt'}], valid_percent: 10,
        batch_size: 8}}
tokenizer: {{kind: char}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 32}}
train: {{max_steps: 60, lr: 0.005, schedule: cosine, warmup_steps: 10, eval_every: 30,
         save_every: 30, log_every: 10, progress: false, device: cpu}}
generate: {{prompt: "the ", max_new: 20, temperature: 1.0}}
""")
    run = root / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    return run, root


def test_train_writes_a_language_model_run(lm_run, capsys) -> None:
    run, _ = lm_run
    for name in ("config.json", "recipe.yaml", "model.safetensors", "log.jsonl",
                 "tokenizer/tokenizer.json", "last/trainer_state.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["family"] == "gpt"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    valid = [r["valid"] for r in records if "valid" in r]
    assert set(valid[-1]) == {"valid_loss", "valid_ppl", "valid_bpc"}
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 0.5  # it learned something in 60 steps
    vocab = json.loads((run / "config.json").read_text())["vocab_size"]
    assert valid[-1]["valid_loss"] < math.log(vocab) - 0.8  # well below a uniform guess
    assert valid[-1]["valid_ppl"] == pytest.approx(math.exp(valid[-1]["valid_loss"]))


def generated(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def test_generate_is_reproducible_by_seed_and_stops(lm_run, capsys) -> None:
    run, _ = lm_run
    args = ["generate", "--model", str(run), "--prompt", "the lord", "--max-new", "40",
            "--temperature", "1.0", "--top-k", "8", "--seed", "3"]
    first = generated(args, capsys)
    assert first.startswith("the lord") and len(first) > len("the lord") + 10
    assert generated(args, capsys) == first
    assert generated(args[:-1] + ["4"], capsys) != first
    three = generated(args + ["--num", "3"], capsys)
    assert three.count("--- sample") == 3 and generated(args + ["--num", "3"], capsys) == three
    samples = [s.strip("\n") for s in three.split("--- sample ")[1:]]
    assert len({s.split("---\n", 1)[1] for s in samples}) == 3  # three different texts
    stopped3 = generated(args + ["--num", "3", "--stop", " "], capsys)
    assert all(" " not in s.split("---\n", 1)[1][len("the lord"):]
               for s in stopped3.split("--- sample ")[1:])
    stopped = generated(args + ["--stop", " "], capsys)
    assert " " not in stopped[len("the lord"):].rstrip("\n")
    longer = args[:-1] + ["7", "--max-new", "120"]
    assert "\n" in generated(longer, capsys)[:-1]  # without a stop string: several lines
    one_line = generated(longer + ["--stop", "\\n"], capsys)  # "\n" typed as backslash-n
    assert one_line.endswith("\n") and "\n" not in one_line[:-1]


def test_generate_takes_the_decoding_controls(lm_run, capsys) -> None:
    run, _ = lm_run
    args = ["generate", "--model", str(run), "--prompt", "the ", "--max-new", "30",
            "--temperature", "1.0", "--seed", "2"]
    plain = generated(args, capsys)[len("the "):]
    assert "o" in plain and "e" in plain  # the words are full of them
    banned = generated(args + ["--bad-words", "o", "e"], capsys)[len("the "):]
    assert "o" not in banned and "e" not in banned
    unique = generated(args + ["--no-repeat-ngram", "1"], capsys)[len("the "):].rstrip("\n")
    assert len(set(unique)) == len(unique)
    assert "--bad-words" in error_of(args + ["--bad-words", "\u00e9"], capsys)


def test_generate_by_beam_search(lm_run, capsys) -> None:
    run, _ = lm_run
    args = ["generate", "--model", str(run), "--prompt", "the lord ", "--max-new", "12"]
    best = generated(args + ["--beam", "4"], capsys)
    assert best.startswith("the lord ") and generated(args + ["--beam", "4", "--seed", "5"],
                                                      capsys) == best  # no randomness
    lines = generated(args + ["--beam", "4", "--nbest", "3", "--alpha", "0.6"],
                      capsys).splitlines()
    scores = [float(line.rsplit("\t", 1)[1]) for line in lines]
    assert len(lines) == 3 and scores == sorted(scores, reverse=True)
    assert "--nbest" in error_of(args + ["--beam", "2", "--nbest", "3"], capsys)


def test_few_shot_prompt_file_and_greedy(lm_run, tmp_path, capsys) -> None:
    run, _ = lm_run
    prompt = tmp_path / "shots.txt"
    prompt.write_text("the lord said unto moses.\nit was so.\nand it ", encoding="utf-8")
    args = ["generate", "--model", str(run), "--prompt-file", str(prompt), "--temperature",
            "0", "--max-new", "15"]
    out = generated(args, capsys)
    assert out.startswith(prompt.read_text()) and generated(args + ["--seed", "9"], capsys) == out


def test_evaluate_prints_perplexity_and_bits_per_character(lm_run, capsys) -> None:
    from seqformer.tasks.lm import perplexity

    run, root = lm_run
    out = generated(["evaluate", "--model", str(run), "--text", str(root / "held_out.txt")],
                    capsys)
    assert "perplexity" in out and "bpc" in out
    expected = perplexity(run, (root / "held_out.txt").read_text())
    assert f"perplexity {expected['ppl']:.3f}" in out
    assert 1.0 < expected["ppl"] < 20.0  # a char model over ~15 symbols that learned a little


def test_evaluate_defaults_to_the_recipes_held_out_text(lm_run, tmp_path, capsys) -> None:
    import shutil

    import yaml

    from seqformer.recipe import recipe_from_dict as parse
    from seqformer.tasks.lm import load_texts, perplexity

    run, _ = lm_run
    out = generated(["evaluate", "--model", str(run)], capsys)
    recipe = parse(yaml.safe_load((run / "recipe.yaml").read_text()))
    _, held_out, fingerprint = load_texts(recipe)
    assert out.startswith(f"the recipe's held-out text ({fingerprint})")
    assert f"perplexity {perplexity(run, held_out)['ppl']:.3f}" in out

    copy = tmp_path / "run"  # the data changed since training: another split
    shutil.copytree(run, copy)
    tree = yaml.safe_load((copy / "recipe.yaml").read_text())
    tree["data"]["valid_percent"] = 20
    (copy / "recipe.yaml").write_text(yaml.safe_dump(tree))
    err = error_of(["evaluate", "--model", str(copy)], capsys)
    assert "the model was trained on split" in err and "--text" in err


def test_bad_inputs_are_one_line_errors(lm_run, tmp_path, capsys) -> None:
    run, root = lm_run
    model = ["--model", str(run)]
    assert "missing.txt" in error_of(["generate", *model, "--prompt-file",
                                      str(tmp_path / "missing.txt")], capsys)
    assert "--top-p" in error_of(["generate", *model, "--top-p", "1.5"], capsys)
    assert "--top-p" in error_of(["generate", *model, "--top-p", "0"], capsys)
    assert "--temperature" in error_of(["generate", *model, "--temperature", "-1"], capsys)
    assert "not a seqformer model" in error_of(["generate", "--model", str(root)], capsys)
    assert "no such text file" in error_of(["evaluate", *model, "--text",
                                            str(tmp_path / "nope.txt")], capsys)


def test_lm_recipe_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match="did you mean 'model.max_len'"):
        recipe_from_dict({"task": "lm", "model": {"max_length": 64}})
    with pytest.raises(ConfigError, match="tokenizer.kind"):
        recipe_from_dict({"task": "lm", "tokenizer": {"kind": "word"}})
    with pytest.raises(ConfigError, match="data.corpus"):
        recipe_from_dict({"task": "lm", "data": {"corpus": "cmudict"}})
    with pytest.raises(ConfigError, match="train.metric"):
        recipe_from_dict({"task": "lm", "train": {"metric": "bleu"}})
    with pytest.raises(ConfigError, match="task='gpt'"):
        recipe_from_dict({"task": "gpt"})
    for name in ("gpt-kjv-char", "gpt-bible-bpe"):  # the bundled recipes stay valid
        from seqformer.recipe import load_recipe

        assert load_recipe(name).task == "lm"
