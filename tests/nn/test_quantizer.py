"""The Gumbel product quantizer equals Hugging Face's Wav2Vec2GumbelVectorQuantizer with copied
weights (argmax in eval; the same Gumbel draw in training), passes gradients straight through,
its code ids are the argmax choices, and its perplexity counts the codewords in use."""

from __future__ import annotations

import pytest
import torch

from seqformer.nn.quantizer import GumbelQuantizer, codebook_perplexity

transformers = pytest.importorskip("transformers")
from transformers.models.wav2vec2 import modeling_wav2vec2 as hf  # noqa: E402

IN, GROUPS, PER_GROUP, DIM = 12, 2, 5, 8


def pair() -> tuple[GumbelQuantizer, torch.nn.Module]:
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(conv_dim=(IN,), conv_kernel=(3,), conv_stride=(1,),
                                         num_codevector_groups=GROUPS,
                                         num_codevectors_per_group=PER_GROUP,
                                         codevector_dim=DIM)
    theirs = hf.Wav2Vec2GumbelVectorQuantizer(config)
    ours = GumbelQuantizer(IN, GROUPS, PER_GROUP, DIM)
    theirs.load_state_dict(ours.state_dict())  # same names: codevectors, weight_proj
    return ours, theirs


@pytest.mark.parametrize("train", [False, True])
def test_equals_hugging_face(train: bool) -> None:
    ours, theirs = pair()
    ours.train(train), theirs.train(train)
    ours.temperature = theirs.temperature = 0.7
    x = torch.randn(3, 11, IN, generator=torch.Generator().manual_seed(1))
    mask = torch.rand(3, 11, generator=torch.Generator().manual_seed(2)) < 0.5
    for m in (None, mask):
        with torch.no_grad():
            torch.manual_seed(5)
            expected, expected_ppl = theirs(x, m)
            torch.manual_seed(5)
            got, ppl = ours(x, m)
        assert float((got - expected).abs().max()) <= 1e-6
        assert abs(float(ppl) - float(expected_ppl)) <= 1e-5


def test_training_passes_gradients_straight_through() -> None:
    ours, _ = pair()
    ours.train()
    x = torch.randn(2, 7, IN, requires_grad=True)
    codes, ppl = ours(x)
    (codes.square().sum() - ppl).backward()
    assert x.grad.abs().sum() > 0
    assert ours.weight_proj.weight.grad.abs().sum() > 0 and ours.codevectors.grad.abs().sum() > 0
    # Each group's slice of the output is exactly one codeword of that group.
    book = ours.codevectors[0].view(GROUPS, PER_GROUP, -1)
    for g in range(GROUPS):
        part = codes.detach()[..., g * DIM // GROUPS:(g + 1) * DIM // GROUPS].reshape(-1, 1, 4)
        assert (part - book[g].detach()).abs().sum(-1).min(-1).values.max() < 1e-6


def test_code_ids_are_the_codewords_evaluation_picks() -> None:
    ours, _ = pair()
    x = torch.randn(2, 7, IN, generator=torch.Generator().manual_seed(3), requires_grad=True)
    ids = ours.code_ids(x)
    assert ids.shape == (2, 7, GROUPS) and ids.dtype == torch.long and not ids.requires_grad
    ours.train()  # the Gumbel noise of training does not move them
    assert torch.equal(ours.code_ids(x), ids)
    ours.eval()
    codes, _ = ours(x)
    book = ours.codevectors[0].view(GROUPS, PER_GROUP, -1)
    expected = torch.cat([book[g][ids[..., g]] for g in range(GROUPS)], dim=-1)
    assert torch.equal(codes, expected)


def test_perplexity_counts_the_codewords_in_use() -> None:
    uniform = torch.eye(PER_GROUP).repeat(1, GROUPS).view(PER_GROUP, GROUPS, PER_GROUP)
    assert float(codebook_perplexity(uniform)) == pytest.approx(GROUPS * PER_GROUP)
    one = torch.zeros(6, GROUPS, PER_GROUP)
    one[..., 0] = 1
    assert float(codebook_perplexity(one)) == pytest.approx(GROUPS)
    # The mask leaves frames out: only the first frame (one codeword per group) counts.
    mask = torch.tensor([True, False, False, False, False])
    assert float(codebook_perplexity(uniform, mask)) == pytest.approx(GROUPS)


def test_codevector_dim_must_split_into_groups() -> None:
    with pytest.raises(ValueError, match="divisible"):
        GumbelQuantizer(IN, 3, PER_GROUP, 8)
