"""Residual vector quantization: nearest-neighbour codes, the residual chain, the
straight-through gradient, EMA codebook updates, dead-code replacement, k-means init and the
bandwidth rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import EncodecConfig as HFEncodecConfig

from seqformer.nn.rvq import (
    ResidualVectorQuantizer,
    VectorQuantizer,
    codebooks_for_bandwidth,
    nearest_codes,
)


def clustered(batch: int = 4, dim: int = 6, time: int = 50, seed: int = 0) -> torch.Tensor:
    """(batch, dim, time) latents around 8 random centres, so codebooks have structure to
    find, plus noise at every scale so each residual stage still has something to code."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, dim, generator=g) * 3
    pick = torch.randint(0, 8, (batch * time,), generator=g)
    x = centres[pick] + torch.randn(batch * time, dim, generator=g)
    return x.view(batch, time, dim).permute(0, 2, 1).contiguous()


def test_nearest_codes_is_the_argmin_distance() -> None:
    g = torch.Generator().manual_seed(1)
    x, embed = torch.randn(200, 5, generator=g), torch.randn(16, 5, generator=g)
    assert torch.equal(nearest_codes(x, embed), torch.cdist(x, embed).argmin(-1))


def test_encode_decode_round_trip_and_residual_chain() -> None:
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(6, 16, 3, kmeans_init=False).eval()
    x = clustered()
    codes = rvq.encode(x)
    assert codes.shape == (4, 3, 50) and codes.dtype == torch.long
    # codebook i codes what the first i left: decoding i + 1 codes adds one codeword
    first = rvq.layers[0]
    assert torch.equal(codes[:, 0], first.encode(x))
    assert torch.equal(codes[:, 1], rvq.layers[1].encode(x - first.decode(codes[:, 0])))
    out = rvq(x)
    assert torch.equal(out.codes, codes)
    assert torch.allclose(out.quantized, rvq.decode(codes))
    assert torch.equal(rvq.encode(x, 2), codes[:, :2])
    with pytest.raises(ValueError, match="3 codebooks"):
        rvq.encode(x, 4)


def test_more_codebooks_never_increase_the_error_of_fitted_codebooks() -> None:
    """After k-means on the residuals, each extra codebook lowers the total squared error on
    the data it was fitted to (a cluster mean is nearer its members, in sum, than zero)."""
    x = clustered()
    rvq = ResidualVectorQuantizer(6, 8, 6, kmeans_iters=10)
    rvq.initialise(x, torch.Generator().manual_seed(0))
    errors = [(x - rvq.decode(rvq.encode(x, n))).pow(2).sum().item() for n in range(1, 7)]
    assert x.pow(2).sum().item() > errors[0]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 0.5 * errors[0]  # and the later ones are not idle


def test_kmeans_init_is_seeded() -> None:
    x = clustered()
    books = []
    for _ in range(2):
        rvq = ResidualVectorQuantizer(6, 8, 2, kmeans_iters=5)
        rvq.initialise(x, torch.Generator().manual_seed(3))
        books.append(torch.cat([layer.embed for layer in rvq.layers]))
    assert torch.equal(books[0], books[1])
    assert bool(rvq.layers[1].inited)


def test_straight_through_gradient_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    encoder = nn.Conv1d(3, 6, 1)
    rvq = ResidualVectorQuantizer(6, 8, 3, kmeans_iters=5).train()
    latent = encoder(torch.randn(2, 3, 40))
    latent.retain_grad()
    weights = torch.randn_like(latent)
    out = rvq(latent)
    (out.quantized * weights).sum().backward()
    # the decoder's gradient passes through the lookup unchanged, whatever n_q
    assert torch.equal(latent.grad, weights)
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    # the commitment loss pulls the encoder towards its codewords: it has a gradient too
    encoder.zero_grad()
    latent = encoder(torch.randn(2, 3, 40))
    rvq(latent).commitment_loss.backward()
    assert encoder.weight.grad.abs().sum() > 0


def test_ema_moves_used_codes_towards_their_vectors() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 8, decay=0.8, kmeans_init=False, dead_code_threshold=0.0).train()
    vq.cluster_size.fill_(5.0)
    vq.embed_avg.copy_(vq.embed * 5.0)  # consistent statistics: embed = avg / count
    x = clustered(time=30)
    before = vq.embed.clone()
    codes = vq.encode(x).reshape(-1)
    flat = x.permute(0, 2, 1).reshape(-1, 6)
    vq(x)
    used = codes.unique()
    assert len(used) >= 2
    for code in used.tolist():
        target = flat[codes == code].mean(0)
        assert (vq.embed[code] - target).norm() < (before[code] - target).norm()
    unused = torch.ones(8, dtype=torch.bool)
    unused[used] = False
    # an unused code decays in count only; its vector stays (up to the smoothing)
    assert torch.allclose(vq.embed[unused], before[unused], rtol=1e-3)


def test_dead_codes_are_replaced_by_batch_vectors() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 8, kmeans_init=False, dead_code_threshold=2.0).train()
    x = clustered(time=30)
    flat = x.permute(0, 2, 1).reshape(-1, 6)
    with torch.no_grad():
        vq.embed.copy_(flat[:8])
        vq.embed[4:] += 1000.0  # codes 4..7 are never picked
        vq.embed_avg.copy_(vq.embed * 10)
        vq.cluster_size.fill_(10.0)
        vq.cluster_size[4:] = 0.0  # and already counted as unused
    vq(x)
    for code in range(4, 8):  # each is now exactly a vector of the batch
        assert (flat - vq.embed[code]).abs().amax(-1).min() == 0
    assert vq.cluster_size[4:].eq(2.0).all()
    assert vq.embed[:4].abs().max() < 100  # live codes were not replaced


def test_uninitialised_codebook_is_kmeans_initialised_on_first_training_batch() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 8, kmeans_iters=10).train()
    assert not bool(vq.inited) and vq.embed.abs().sum() == 0
    x = clustered()
    vq(x)
    assert bool(vq.inited)
    err = (x - vq.eval()(x)[0]).pow(2).mean()
    assert err < 0.3 * x.var(dim=(0, 2)).sum() / 6


def test_bandwidth_to_codebooks_as_encodec() -> None:
    hf = HFEncodecConfig()  # the 24 kHz model: 75 frames/s, 1024 codes, 32 codebooks
    assert hf.num_quantizers == 32
    got = [codebooks_for_bandwidth(b, hf.frame_rate, 1024, 32) for b in hf.target_bandwidths]
    assert got == [2, 4, 8, 16, 32]
    assert codebooks_for_bandwidth(0.1, 75, 1024, 32) == 1  # at least one
    assert codebooks_for_bandwidth(100.0, 75, 1024, 32) == 32  # at most what there is
    assert codebooks_for_bandwidth(6.0, 75, 1024, 32) == math.floor(6000 / 750)
