"""``model.kind: cnn`` in a classify recipe: Kim's CNN trains, evaluates and reports like BERT."""

from __future__ import annotations

import json
from pathlib import Path

from test_bert_cli import write_classify
from test_cli import error_of

from seqformer.cli import main


def test_cnn_classifier_trains_and_evaluates_from_a_recipe(tmp_path: Path, capsys) -> None:
    train = write_classify(tmp_path, "train.tsv", 160, 1)
    test = write_classify(tmp_path, "test.tsv", 40, 2)
    recipe = tmp_path / "cnn.yaml"
    recipe.write_text(f"""
name: tiny-cnn
task: classify
model: {{kind: cnn, embed_dim: 32, channels: 16, kernel_sizes: [2, 3], dropout: 0.1}}
tokenizer: {{vocab_size: 200, min_frequency: 1}}
data: {{corpus: files, train: {train}, test: {test}, batch_size: 16}}
train: {{epochs: 6, lr: 0.01, progress: false, device: cpu, metric: valid_accuracy,
         metric_mode: max}}
""")
    out = tmp_path / "cnn"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["family"] == "cnn"
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9  # "cat" in the sentence decides the label
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(test)]) == 0
    assert "accuracy" in capsys.readouterr().out
    # `seqformer classify` labels the user's own texts, as evaluate scored them.
    texts = [line.rsplit("\t", 1) for line in test.read_text().splitlines()]
    assert main(["classify", "--model", str(out), "--top-k", "2",
                 *(t for t, _ in texts)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == [t for t, _ in texts]
    assert all({r[1], r[3]} == {"catty", "other"} for r in rows)
    assert all(float(r[2]) >= float(r[4]) and abs(float(r[2]) + float(r[4]) - 1) < 1e-3
               for r in rows)
    hits = sum(r[1] == label for r, (_, label) in zip(rows, texts))
    assert hits / len(rows) == metrics["test_accuracy"]
    assert "CNN classifier" in error_of(["embed", "--model", str(out), "a cat",
                                         "--out", str(tmp_path / "e.npy")], capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("name: tiny-cnn", "name: x\nfreeze: embeddings"))
    assert "CNN classifier has none" in error_of(["train", str(bad), "--out",
                                                  str(tmp_path / "b")], capsys)
    typo = tmp_path / "typo.yaml"
    typo.write_text(recipe.read_text().replace("channels: 16", "chanels: 16"))
    assert "did you mean 'model.channels'" in error_of(["train", str(typo)], capsys)


def test_recurrent_classifier_trains_evaluates_and_classifies(tmp_path: Path, capsys) -> None:
    """``model.kind: lstm`` (or rnn / gru): the recurrent baseline through the same recipe,
    trainer, evaluate and classify as the CNN."""
    train = write_classify(tmp_path, "train.tsv", 160, 1)
    test = write_classify(tmp_path, "test.tsv", 40, 2)
    recipe = tmp_path / "lstm.yaml"
    recipe.write_text(f"""
name: tiny-lstm
task: classify
model: {{kind: lstm, embed_dim: 32, hidden_size: 16, pooling: max, dropout: 0.1}}
tokenizer: {{vocab_size: 200, min_frequency: 1}}
data: {{corpus: files, train: {train}, test: {test}, batch_size: 16}}
train: {{epochs: 6, lr: 0.01, progress: false, device: cpu, metric: valid_accuracy,
         metric_mode: max}}
""")
    out = tmp_path / "lstm"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "rnn-classify" and config["cell"] == "lstm"
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9  # "cat" in the sentence decides the label
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(test)]) == 0
    assert f"accuracy {metrics['test_accuracy']:.4f}" in capsys.readouterr().out
    assert main(["classify", "--model", str(out), "a cat sat", "a dog sat"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert "recurrent classifier" in error_of(["embed", "--model", str(out), "a cat",
                                               "--out", str(tmp_path / "e.npy")], capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("name: tiny-lstm", "name: x\nfreeze: embeddings"))
    assert "LSTM classifier has none" in error_of(["train", str(bad), "--out",
                                                   str(tmp_path / "b")], capsys)
    bad.write_text(recipe.read_text().replace("kind: lstm", "kind: lstn"))
    assert "rnn / lstm / gru" in error_of(["train", str(bad), "--out", str(tmp_path / "b")],
                                          capsys)
    bad.write_text(recipe.read_text().replace("pooling: max", "pooling: first"))
    assert "model.pooling" in error_of(["train", str(bad), "--out", str(tmp_path / "b")],
                                       capsys)


def test_kims_multichannel_cnn_from_word2vec_vectors(tmp_path: Path, capsys) -> None:
    """``seqformer word2vec`` on the training texts, then ``model.embeddings`` (Kim's
    multichannel CNN): the static channel of the trained model still holds the vectors."""
    from safetensors.torch import load_file

    from seqformer.models.word2vec import WordVectors

    train = write_classify(tmp_path, "train.tsv", 160, 1)
    test = write_classify(tmp_path, "test.tsv", 40, 2)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(line.rsplit("\t", 1)[0]
                               for line in train.read_text().splitlines()) + "\n")
    vectors_path = tmp_path / "vectors.txt"
    assert main(["word2vec", str(texts), "--out", str(vectors_path), "--dim", "16",
                 "--epochs", "2", "--min-count", "1", "--no-progress"]) == 0
    vectors = WordVectors.load(vectors_path)
    recipe = tmp_path / "cnn.yaml"
    recipe.write_text(f"""
name: kim
task: classify
model: {{kind: cnn, embed_dim: 16, channels: 8, kernel_sizes: [2, 3], dropout: 0.1,
         embeddings: {vectors_path}, embeddings_mode: multichannel}}
tokenizer: {{vocab_size: 200, min_frequency: 1}}
data: {{corpus: files, train: {train}, test: {test}, batch_size: 16}}
train: {{epochs: 6, lr: 0.01, progress: false, device: cpu, metric: valid_accuracy,
         metric_mode: max}}
""")
    out = tmp_path / "kim"
    capsys.readouterr()
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "tokens have a vector in" in err and "embeddings_mode multichannel" in err
    assert json.loads((out / "test_metrics.json").read_text())["test_accuracy"] >= 0.9
    weights = load_file(out / "model.safetensors")
    tokens = json.loads((out / "tokenizer" / "wordpiece.json").read_text())["model"]["vocab"]
    found = [(w, i) for w, i in tokens.items() if w in vectors]
    assert len(found) >= 5
    for word, i in found:  # the static channel is exactly the vectors, after training
        assert weights["embed_static.weight"][i].tolist() == vectors[word].tolist()
    assert not all(weights["embed.weight"][i].tolist() == vectors[w].tolist()
                   for w, i in found)  # the tuned channel moved
    typo = tmp_path / "static.yaml"
    typo.write_text(recipe.read_text().replace(f"embeddings: {vectors_path}, ", ""))
    assert "needs model.embeddings" in error_of(["train", str(typo), "--out",
                                                 str(tmp_path / "s")], capsys)
