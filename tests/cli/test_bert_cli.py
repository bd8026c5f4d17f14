"""The encoder (BERT) commands end to end on tiny recipes: pretrain, fill-mask, embed,
fine-tune every head, evaluate, and the errors a user can cause."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import error_of

from seqformer.cli import main
from seqformer.models.bert import BERTConfig, BERTModel, freeze_patterns
from seqformer.training.freezing import freeze_parameters

ANIMALS = ["cat", "dog", "mouse", "bird", "fox"]
VERBS = ["chases", "sees", "likes", "follows"]
TRAIN = "train: {{max_steps: {steps}, lr: 0.003, schedule: linear, warmup_steps: 2, " \
        "eval_every: {steps}, log_every: 5, progress: false, device: cpu{extra}}}"
TINY = "{d_model: 16, heads: 2, layers: 2, ffn_dim: 32, max_len: 32, dropout: 0.0}"


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine's 2 cores are shared: two torch threads contend and run ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sentence(rng: random.Random) -> str:
    return f"The {rng.choice(ANIMALS)} {rng.choice(VERBS)} the {rng.choice(ANIMALS)}."


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bert")
    rng = random.Random(0)
    paragraphs = ["\n".join(sentence(rng) for _ in range(3)) for _ in range(60)]
    (root / "text.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    recipe = root / "pre.yaml"
    recipe.write_text(f"""
name: tiny-bert
task: mlm
data: {{sources: [files], files: [{root / 'text.txt'}], valid_percent: 10, batch_size: 8}}
tokenizer: {{vocab_size: 60, min_frequency: 1}}
model: {TINY}
{TRAIN.format(steps=30, extra="")}
""")
    run = root / "pre"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    return run, root


def test_pretraining_run_and_fill_mask(pretrained, capsys) -> None:
    run, _ = pretrained
    for name in ("config.json", "recipe.yaml", "model.safetensors", "log.jsonl",
                 "tokenizer/tokenizer.json", "tokenizer/wordpiece.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "bert" and config["head"] == "mlm"
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert {"valid_loss", "valid_accuracy"} <= set(records[-1]["valid"])
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]
    capsys.readouterr()
    assert main(["fill-mask", "--model", str(run), "--top-k", "3",
                 "The [MASK] chases the dog."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "The [MASK] chases the dog." and len(lines) == 4
    probs = [float(line.split("\t")[1]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_fill_mask_without_mask_is_a_user_error(pretrained, capsys) -> None:
    run, _ = pretrained
    assert main(["fill-mask", "--model", str(run), "no blank here"]) == 2
    assert "no [MASK]" in capsys.readouterr().err


def test_embed_writes_npy_and_pooling_differs(pretrained, tmp_path) -> None:
    run, _ = pretrained
    texts = ["The cat sees the dog.", "A fox."]
    assert main(["embed", "--model", str(run), "--out", str(tmp_path / "m.npy"), *texts]) == 0
    assert main(["embed", "--model", str(run), "--pooling", "cls", "--out",
                 str(tmp_path / "c.npy"), *texts]) == 0
    mean, cls = np.load(tmp_path / "m.npy"), np.load(tmp_path / "c.npy")
    assert mean.shape == cls.shape == (2, 16) and mean.dtype == np.float32
    assert not np.allclose(mean, cls)


def test_embed_layers_and_token_features(pretrained, tmp_path, capsys) -> None:
    import torch

    from seqformer.tasks.encoder import EncoderRun

    run, _ = pretrained  # 2 layers: hidden states 0 (embeddings), 1, 2
    texts = ["The cat sees the dog.", "A fox."]
    encoder = EncoderRun.load(run)
    top = tmp_path / "top.npy"
    assert main(["embed", "--model", str(run), "--layers", "-1", "--out", str(top), *texts]) == 0
    assert np.allclose(np.load(top), encoder.embed(texts), atol=1e-6)  # the default's layer
    three = tmp_path / "three.npy"
    assert main(["embed", "--model", str(run), "--layers=-3,-2,-1", "--out", str(three),
                 *texts]) == 0
    blocks = np.load(three).reshape(2, 3, 16)  # concatenated: one block per layer
    assert np.allclose(blocks.sum(1), encoder.embed(texts, layers=[0, 1, 2], combine="sum"),
                       atol=1e-5)
    assert np.allclose(blocks[:, 1], encoder.embed(texts, layers=[1]), atol=1e-6)
    assert not np.allclose(blocks[:, 1], blocks[:, 2])
    tokens = tmp_path / "tok.npz"
    assert main(["embed", "--model", str(run), "--tokens", "--layers", "0,-1", "--out",
                 str(tokens), *texts]) == 0
    saved = np.load(tokens)
    rows = encoder.token_vectors(texts, [0, -1])
    n0, n1 = len(rows[0][0]), len(rows[1][0])
    assert list(saved["offsets"]) == [0, n0, n0 + n1] and saved["vectors"].shape == (n0 + n1, 32)
    assert saved["pieces"][0] == "[CLS]" and saved["pieces"][n0 - 1] == "[SEP]"
    # Layer 0 is the embedding output: the first 16 columns are the model's own embeddings.
    ids, types = encoder._encode(texts[:1])
    with torch.no_grad():
        embedded = encoder.model.bert.embeddings(ids, types)[0].numpy()
    assert np.allclose(saved["vectors"][:n0, :16], embedded, atol=1e-6)
    capsys.readouterr()
    assert main(["embed", "--model", str(run), "--layers", "3", "--out", str(top), "a"]) == 2
    assert "layer 3 does not exist" in capsys.readouterr().err
    assert main(["embed", "--model", str(run), "--layers", "x,y", "--out", str(top), "a"]) == 2
    assert "--layers 'x,y'" in capsys.readouterr().err


def write_classify(root: Path, name: str, n: int, seed: int, pair: bool = False) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        s = sentence(rng)
        label = "catty" if "cat" in s else "other"
        lines.append(f"{s}\t{sentence(rng)}\t{label}" if pair else f"{s}\t{label}")
    path = root / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("pair", [False, True])
def test_finetune_classify_from_pretrained_and_evaluate(pretrained, tmp_path, capsys,
                                                        pair) -> None:
    run, _ = pretrained
    train = write_classify(tmp_path, "train.tsv", 80, 1, pair)
    test = write_classify(tmp_path, "test.tsv", 20, 2, pair)
    recipe = tmp_path / "cls.yaml"
    recipe.write_text(f"""
name: tiny-cls
task: classify
init_from: {run}
freeze: embeddings
data: {{corpus: files, train: {train}, test: {test}, batch_size: 16}}
train: {{epochs: 2, lr: 0.003, progress: false, device: cpu, metric: valid_accuracy,
         metric_mode: max}}
""")
    out = tmp_path / "cls"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert set(metrics) == {"test_loss", "test_accuracy", "test_macro_f1"}
    # The encoder really came from the pretrained run (embeddings were frozen).
    pre = BERTModel.load(run)
    fine = BERTModel.load(out)
    assert torch.equal(pre.bert.embeddings.word.weight, fine.bert.embeddings.word.weight)
    assert not torch.equal(pre.bert.encoder.layers[1].ffn.linear1.weight,
                           fine.bert.encoder.layers[1].ffn.linear1.weight)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(test)]) == 0
    shown = capsys.readouterr().out
    assert f"accuracy {metrics['test_accuracy']:.4f}" in shown
    # classify: the same texts (pairs with their tab) get the labels evaluate scored.
    rows = [line.rsplit("\t", 1) for line in test.read_text().splitlines()]
    assert main(["classify", "--model", str(out), *(text for text, _ in rows)]) == 0
    printed = capsys.readouterr().out.splitlines()
    labels = [line.rsplit("\t", 2)[1] for line in printed]
    assert len(labels) == len(rows) and set(labels) <= {"catty", "other"}
    hits = sum(a == gold for a, (_, gold) in zip(labels, rows))
    assert hits / len(rows) == pytest.approx(metrics["test_accuracy"])


def test_missing_init_from_is_a_clear_error(tmp_path, capsys) -> None:
    train = write_classify(tmp_path, "train.tsv", 10, 1)
    recipe = tmp_path / "cls.yaml"
    recipe.write_text(f"""
task: classify
init_from: {tmp_path / 'no-such-run'}
data: {{corpus: files, train: {train}}}
""")
    message = error_of(["train", str(recipe), "--out", str(tmp_path / "o")], capsys)
    assert "init_from" in message and "no-such-run" in message


def test_bad_recipe_fields_fail_before_reading_data(tmp_path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: classify\nfreeze: top:2\ndata: {corpus: files, train: x.tsv}\n")
    assert "freeze" in error_of(["train", str(recipe)], capsys)
    recipe.write_text("task: mlm\nmodel: {d_modle: 8}\n")
    assert "d_model" in error_of(["train", str(recipe)], capsys)


def test_tag_and_qa_heads_train_from_scratch(tmp_path, capsys) -> None:
    rng = random.Random(3)
    conll = []
    for _ in range(40):
        words = [rng.choice(["the", "a"]), rng.choice(ANIMALS), rng.choice(VERBS), "Paris"]
        tags = ["O", "B-ANI", "O", "B-LOC"]
        conll.append("\n".join(f"{w}\t{t}" for w, t in zip(words, tags)))
    (tmp_path / "tags.conll").write_text("\n\n".join(conll) + "\n", encoding="utf-8")
    qa = []
    for _ in range(40):
        animal = rng.choice(ANIMALS)
        context = f"Yesterday the {animal} {rng.choice(VERBS)} a bird."
        qa.append(json.dumps({"question": "Who was it?", "context": context, "answers": [
            {"text": animal, "answer_start": context.index(animal)}]}))
    (tmp_path / "qa.jsonl").write_text("\n".join(qa) + "\n", encoding="utf-8")
    for task, data, metric in (("tag", "tags.conll", "valid_f1"), ("qa", "qa.jsonl", "valid_f1")):
        recipe = tmp_path / f"{task}.yaml"
        recipe.write_text(f"""
task: {task}
data: {{corpus: files, train: {tmp_path / data}, test: {tmp_path / data}, batch_size: 8}}
tokenizer: {{vocab_size: 80, min_frequency: 1}}
model: {TINY}
train: {{epochs: 4, lr: 0.005, progress: false, device: cpu, metric: {metric},
         metric_mode: max}}
""")
        out = tmp_path / task
        assert main(["train", str(recipe), "--out", str(out)]) == 0
        metrics = json.loads((out / "test_metrics.json").read_text())
        assert 0.0 <= metrics["test_f1"] <= (100.0 if task == "qa" else 1.0)
        assert "from scratch" in capsys.readouterr().err
        assert main(["evaluate", "--model", str(out), "--data", str(tmp_path / data)]) == 0
        shown = capsys.readouterr().out
        assert f"f1 {metrics['test_f1']:.4f}" in shown
        if task == "qa":
            assert "exact" in shown


def test_a_recurrent_tagger_trains_and_evaluates(tmp_path, capsys) -> None:
    """``task: tag`` with ``model.kind: lstm``: the many-to-many BiLSTM tagger baseline."""
    rng = random.Random(4)
    conll = []
    for _ in range(60):
        words = [rng.choice(["the", "a"]), rng.choice(ANIMALS), rng.choice(VERBS), "Paris"]
        conll.append("\n".join(f"{w}\t{t}" for w, t in zip(words, ["O", "B-ANI", "O", "B-LOC"])))
    data = tmp_path / "tags.conll"
    data.write_text("\n\n".join(conll) + "\n", encoding="utf-8")
    recipe = tmp_path / "tag.yaml"
    recipe.write_text(f"""
task: tag
data: {{corpus: files, train: {data}, test: {data}, batch_size: 8}}
tokenizer: {{vocab_size: 80, min_frequency: 1}}
model: {{kind: lstm, embed_dim: 16, hidden_size: 16, dropout: 0.0}}
train: {{epochs: 6, lr: 0.01, progress: false, device: cpu, metric: valid_f1,
         metric_mode: max}}
""")
    out = tmp_path / "tagger"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    assert "recurrent tagger trained from scratch" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["task"] == "tag"
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["test_f1"] >= 0.9  # the pattern is fixed: the tagger must find it
    assert main(["evaluate", "--model", str(out), "--data", str(data)]) == 0
    assert f"f1 {metrics['test_f1']:.4f}" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("kind: lstm", "kind: cnn"))
    assert main(["train", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "use it with task: classify and" in capsys.readouterr().err


def test_freeze_presets_freeze_exactly_what_they_name() -> None:
    config = BERTConfig(vocab_size=20, d_model=8, heads=2, layers=3, ffn_dim=16, max_len=8)

    def frozen(preset: str) -> set[str]:
        model = BERTModel(config, "classify", ["a", "b"])
        freeze_parameters(model, freeze_patterns(preset, config.layers))
        return {n for n, p in model.named_parameters() if not p.requires_grad}

    names = {n for n, _ in BERTModel(config, "classify", ["a", "b"]).named_parameters()}
    embeddings = {n for n in names if n.startswith("bert.embeddings.")}
    layer = {i: {n for n in names if n.startswith(f"bert.encoder.layers.{i}.")} for i in range(3)}
    assert frozen("none") == set()
    assert frozen("embeddings") == embeddings
    assert frozen("bottom:2") == embeddings | layer[0] | layer[1]
    assert frozen("all-but-head") == {n for n in names if n.startswith("bert.")}
    assert not any(n.startswith("head.") for n in frozen("all-but-head"))


def test_distil_trains_a_half_depth_student(pretrained, tmp_path) -> None:
    run, root = pretrained
    recipe = tmp_path / "distil.yaml"
    recipe.write_text(f"""
task: distil
teacher: {run}
data: {{sources: [files], files: [{root / 'text.txt'}], valid_percent: 10, batch_size: 8}}
{TRAIN.format(steps=6, extra="")}
""")
    out = tmp_path / "student"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    student, teacher = BERTModel.load(out), BERTModel.load(run)
    assert student.config.layers == teacher.config.layers // 2
    assert (out / "tokenizer" / "wordpiece.json").read_text() == \
        (run / "tokenizer" / "wordpiece.json").read_text()
    assert main(["fill-mask", "--model", str(out), "The [MASK] sees the fox."]) == 0


@pytest.mark.parametrize("name", ["bert-pretrain", "fortune-classify", "distil", "fortune-cnn",
                                  "fortune-lstm", "fortune-cnn-w2v"])
def test_bundled_encoder_recipes_validate(name) -> None:
    from seqformer.recipe import load_recipe
    from seqformer.recipe_encoder import DistilRecipe, FinetuneRecipe, MLMRecipe

    recipe = load_recipe(name)
    expected = {"bert-pretrain": MLMRecipe, "fortune-classify": FinetuneRecipe,
                "distil": DistilRecipe, "fortune-cnn": FinetuneRecipe,
                "fortune-lstm": FinetuneRecipe, "fortune-cnn-w2v": FinetuneRecipe}[name]
    assert isinstance(recipe, expected)
