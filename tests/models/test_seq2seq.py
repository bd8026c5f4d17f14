"""The encoder-decoder model: cached decoding equals teacher forcing, masks and ties hold."""

from __future__ import annotations

import pytest
import torch

from seqformer.errors import ConfigError
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig


def tiny(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    base = dict(src_vocab_size=11, tgt_vocab_size=13, d_model=16, heads=2, layers=2, ffn_dim=32,
                dropout=0.0, max_len=32)
    base.update(overrides)
    return Seq2Seq(Seq2SeqConfig(**base)).eval()


def padded_src() -> torch.Tensor:
    return torch.tensor([[5, 6, 7, 8, 9], [4, 5, 6, 0, 0], [10, 4, 0, 0, 0]])


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("block", ["transformer", "conformer"])
def test_cached_steps_equal_teacher_forcing(norm_first: bool, positional: str,
                                            block: str) -> None:
    model = tiny(norm_first=norm_first, positional=positional, encoder_block=block,
                 conv_kernel=3)
    src = padded_src()
    tgt_in = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 4], [1, 4, 4, 4]])
    memory, mask, _ = model.encode(src)
    full, _ = model.decode(tgt_in, memory, mask)
    state = model.start(src)
    for t in range(tgt_in.shape[1]):
        log_probs, state = model.step(tgt_in[:, t], state)
        torch.testing.assert_close(log_probs, full[:, t].log_softmax(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", ["transformer", "conformer"])
def test_padding_does_not_change_encoding(block: str) -> None:
    model = tiny(encoder_block=block, conv_kernel=3)
    alone, _, _ = model.encode(torch.tensor([[4, 5, 6]]))
    batched, _, _ = model.encode(padded_src())
    torch.testing.assert_close(batched[1, :3], alone[0], atol=1e-5, rtol=1e-5)


def test_tied_and_shared_embeddings() -> None:
    model = tiny(src_vocab_size=13, share_embeddings=True, tie_output=True)
    assert model.output.weight is model.tgt_embed.weight is model.src_embed.weight
    untied = tiny(tie_output=False)
    assert untied.output.weight is not untied.tgt_embed.weight
    with pytest.raises(ConfigError, match="share_embeddings"):
        tiny(share_embeddings=True)


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="heads"):
        Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, d_model=10, heads=3)


def test_same_seed_same_model_whatever_the_allocation_history() -> None:
    """Initialisation must not depend on object addresses (e.g. iterating over a set)."""
    def build(junk: int) -> list[torch.Tensor]:
        keep = [bytearray(64) for _ in range(junk)]  # shifts where the modules are allocated
        torch.manual_seed(3)
        model = Seq2Seq(Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=11, d_model=8, heads=2,
                                      layers=1, ffn_dim=8))
        del keep
        return [p.detach().clone() for p in model.parameters()]

    reference = build(0)
    for junk in (1, 3, 17, 101, 1001):
        assert all(torch.equal(a, b) for a, b in zip(reference, build(junk)))


def test_conformer_encoder_saves_and_says_what_it_cannot_do(tmp_path) -> None:
    model = tiny(encoder_block="conformer", conv_kernel=3)
    src = padded_src()
    memory, _, _ = model.encode(src)
    model.save(tmp_path / "m")
    again = Seq2Seq.load(tmp_path / "m")
    assert again.config.encoder_block == "conformer"
    torch.testing.assert_close(again.encode(src)[0], memory)
    with pytest.raises(ConfigError, match="attention maps need"):
        model.encode(src, need_weights=True)
    from seqformer.interop.hf_marian import config_to_hf

    with pytest.raises(ConfigError, match="encoder_block='conformer'"):
        config_to_hf(model.config)
    with pytest.raises(ConfigError, match="encoder_block"):
        tiny(encoder_block="lstm")
    with pytest.raises(ConfigError, match="odd"):
        tiny(encoder_block="conformer", conv_kernel=4)


def test_training_forward_compiles_as_one_graph_over_changing_batch_shapes() -> None:
    """`train.compile` meets a new (batch, length) every step: the forward must trace without
    graph breaks (no host reads of device values, no data-dependent branches), and settle on
    one dynamic graph instead of recompiling for every shape."""
    from torch._dynamo.utils import counters

    from seqformer.data.batching import collate_pairs

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=32, heads=4,
                                  layers=2, ffn_dim=64))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    for n, length in ((4, 5), (6, 7), (3, 9), (8, 4), (5, 11)):
        batch = collate_pairs([[5] * length] * (n - 1) + [[6] * (length - 2)],
                              [[7] * length] * n, list(range(n)))
        out = compiled(batch)
        out.loss.backward()
        assert out.n_tokens == n * (length + 1)
    assert counters["stats"]["unique_graphs"] <= 2  # the first shape, then one dynamic graph
