"""Word vectors (word2vec's text format) as the first layer of a classifier trained from
scratch: Kim's (2014) CNN-static / CNN-non-static / CNN-multichannel, and the same for the
recurrent classifiers.

Why: a classifier trained on a few thousand labelled texts sees most words a handful of times;
vectors trained on much more unlabelled text (``seqformer word2vec``) bring what those words
mean. The fields below live in the model configs (``model.embeddings``,
``model.embeddings_mode``), so a recipe asks for them, and ``config.json`` records where the
vectors came from -- loading a trained model never reads the vectors file again (its weights
hold them).

Modes (Kim's names in brackets):

- ``tuned`` (non-static): the vectors initialise the embeddings, which then train;
- ``static``: they stay as given (no gradient);
- ``multichannel`` (CNN only): two embedding tables from the same vectors, one static and one
  tuned, whose channels every convolution reads.

Tokens the vectors do not have (WordPiece continuations ``##ing``, the specials, rare words) get
random vectors of the same variance as the pretrained ones, as Kim did; padding stays zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seqformer.errors import ConfigError

EMBEDDING_MODES = ("tuned", "static", "multichannel")


def check_embedding_fields(embeddings: str | None, mode: str, multichannel_ok: bool) -> None:
    """The config's two fields agree (a ConfigError naming the field otherwise)."""
    if mode not in EMBEDDING_MODES:
        raise ConfigError(f"model.embeddings_mode={mode!r}; use one of "
                          f"{', '.join(EMBEDDING_MODES)}")
    if mode == "multichannel" and not multichannel_ok:
        raise ConfigError("model.embeddings_mode: multichannel is Kim's CNN variant; a "
                          "recurrent classifier takes tuned or static")
    if mode != "tuned" and not embeddings:
        raise ConfigError(f"model.embeddings_mode: {mode} needs model.embeddings (a word2vec "
                          "text file, e.g. from seqformer word2vec)")


@torch.no_grad()
def copy_vectors(weight: Tensor, tokens: Sequence[str], vectors, seed: int = 0,
                 pad_id: int = 0) -> int:
    """Fill ``weight`` (vocab, dim) with the vector of each token the vectors know, random
    vectors of their variance for the rest; returns how many tokens were found."""
    if weight.shape[1] != vectors.dim:
        raise ConfigError(f"model.embed_dim={weight.shape[1]} but the word vectors have "
                          f"{vectors.dim} dimensions; set model.embed_dim: {vectors.dim}")
    table = torch.as_tensor(vectors.vectors, dtype=torch.float32)
    # U(-a, a) has variance a^2 / 3: a = sqrt(3) * std matches the pretrained vectors'.
    bound = float(3 ** 0.5 * table.std())
    generator = torch.Generator().manual_seed(seed)
    init = (torch.rand(weight.shape, generator=generator) * 2 - 1) * bound
    found = 0
    for i, token in enumerate(tokens):
        if token in vectors:
            init[i] = torch.as_tensor(vectors[token], dtype=torch.float32)
            found += 1
    init[pad_id] = 0.0
    weight.copy_(init.to(weight.device, weight.dtype))
    return found
