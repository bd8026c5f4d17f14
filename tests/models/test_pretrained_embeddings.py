"""Kim's CNN-static / non-static / multichannel (and the RNN's static / tuned) embeddings from
word vectors: what is copied, what stays frozen, what a saved model keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqformer.errors import ConfigError
from seqformer.models.bert import EncoderBatch
from seqformer.models.cnn import CNNClassifier, CNNClassifierConfig
from seqformer.models.pretrained_embeddings import copy_vectors
from seqformer.models.rnn_classifier import RNNClassifier, RNNClassifierConfig

TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "cat", "dog", "##s", "sat", "mat"]


class Vectors:
    """The duck type copy_vectors reads (seqformer.models.word2vec.WordVectors)."""

    def __init__(self, words: list[str], dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.words, self.dim = words, dim
        self.vectors = rng.normal(0, 0.3, (len(words), dim)).astype(np.float32)
        self.index = {w: i for i, w in enumerate(words)}

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.index[word]]


def test_known_tokens_get_their_vectors_the_rest_random_of_the_same_scale() -> None:
    vectors = Vectors(["cat", "dog", "sat", "the", "a"], dim=300)
    weight = torch.zeros(len(TOKENS), 300)
    assert copy_vectors(weight, TOKENS, vectors) == 3
    for word in ("cat", "dog", "sat"):
        assert torch.allclose(weight[TOKENS.index(word)], torch.from_numpy(vectors[word]))
    assert not weight[0].any()  # padding stays zero
    unknown = weight[[1, 2, 3, 4, 7, 9]]
    assert abs(float(unknown.std()) - float(vectors.vectors.std())) < 0.05
    with pytest.raises(ConfigError, match="embed_dim: 300"):
        copy_vectors(torch.zeros(len(TOKENS), 16), TOKENS, vectors)


def cnn(mode: str) -> CNNClassifier:
    torch.manual_seed(0)
    return CNNClassifier(CNNClassifierConfig(vocab_size=len(TOKENS), embed_dim=8, channels=4,
                                             kernel_sizes=[2], dropout=0.0,
                                             embeddings="v.txt", embeddings_mode=mode))


def train_step(model) -> None:
    ids = torch.tensor([[5, 8, 9, 0], [6, 7, 8, 9]])
    batch = EncoderBatch(ids, torch.zeros_like(ids), labels=torch.tensor([0, 1]))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(batch).loss.backward()
    opt.step()


@pytest.mark.parametrize("mode", ["tuned", "static", "multichannel"])
def test_cnn_modes_freeze_what_kim_froze(mode: str, tmp_path) -> None:
    model = cnn(mode)
    vectors = Vectors(["cat", "dog", "sat", "mat"], dim=8)
    assert model.init_embeddings(TOKENS, vectors) == 4
    start = model.embed.weight.detach().clone()
    conv = [p.detach().clone() for p in model.features.parameters()]
    train_step(model)
    changed = not torch.equal(model.embed.weight, start)
    assert changed == (mode != "static")
    assert any(not torch.equal(a, b) for a, b in zip(conv, model.features.parameters(),
                                                       strict=True))
    if mode == "multichannel":
        assert torch.equal(model.embed_static.weight, start)  # the static channel
        assert model.features.convs[0].in_channels == 16  # both channels feed every filter
    else:
        assert model.embed_static is None
    model.save(tmp_path / "m")
    again = CNNClassifier.load(tmp_path / "m")
    ids = torch.tensor([[5, 6, 8, 9]])
    assert torch.equal(again.logits(ids), model.eval().logits(ids))


def test_rnn_static_and_tuned() -> None:
    vectors = Vectors(["cat", "dog"], dim=8)
    for mode, frozen in (("static", True), ("tuned", False)):
        torch.manual_seed(0)
        model = RNNClassifier(RNNClassifierConfig(vocab_size=len(TOKENS), embed_dim=8,
                                                  hidden_size=4, dropout=0.0,
                                                  embeddings="v.txt", embeddings_mode=mode))
        model.init_embeddings(TOKENS, vectors)
        start = model.embed.weight.detach().clone()
        train_step(model)
        assert torch.equal(model.embed.weight, start) == frozen


def test_mode_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="needs model.embeddings"):
        CNNClassifierConfig(vocab_size=10, embeddings_mode="static")
    with pytest.raises(ConfigError, match="multichannel is Kim's CNN"):
        RNNClassifierConfig(vocab_size=10, embeddings="v.txt", embeddings_mode="multichannel")
    with pytest.raises(ConfigError, match="embeddings_mode='frozen'"):
        CNNClassifierConfig(vocab_size=10, embeddings="v.txt", embeddings_mode="frozen")
