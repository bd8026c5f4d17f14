"""Residual vector quantization (RVQ): EnCodec's and SoundStream's discrete bottleneck.

A :class:`VectorQuantizer` holds one codebook of ``codebook_size`` vectors and replaces each
frame of a (batch, dim, time) latent by its nearest codeword (squared Euclidean distance), so
a frame becomes one integer. One codebook of practical size is a coarse approximation, so the
:class:`ResidualVectorQuantizer` chains ``num_quantizers`` of them: codebook ``i`` quantizes
what codebooks ``0..i-1`` left over (the residual), and the latent is the *sum* of the chosen
codewords. Dropping the last codebooks gives a coarser code at a lower bitrate, which is how
one EnCodec model serves several bandwidths (:func:`codebooks_for_bandwidth`).

Training follows EnCodec / SoundStream (van den Oord et al. 2017's VQ-VAE with EMA updates):

- the codebooks are not learned by gradient descent but as an exponential moving average
  (``decay``) of the vectors assigned to each code: ``cluster_size`` counts them, ``embed_avg``
  sums them, ``embed = embed_avg / cluster_size``, the counts Laplace-smoothed (``epsilon``) so
  a rarely used code does not divide by ~0;
- the encoder gets its gradient through the non-differentiable lookup with the straight-through
  estimator (the quantized output is ``x + (q - x).detach()``), and a commitment loss
  ``mse(x, q.detach())`` keeps the encoder's output near the codewords it is assigned;
- a code whose EMA count falls below ``dead_code_threshold`` is dead (no frame picks it) and is
  replaced by a random frame of the current batch, so the codebook keeps spanning the data;
- a codebook that starts uninitialised (``kmeans_init``) is set by k-means on the first batch it
  sees in training (or by :meth:`ResidualVectorQuantizer.initialise`), seeded by a generator.

The EMA statistics are buffers updated in place by each process on its own batch; under DDP
(``broadcast_buffers``, the default) every forward starts from rank 0's copy, so the codebooks
follow rank 0's batches only; all-reducing the counts and sums across processes is not done
here.

Two departures from audiocraft's code, both to make what it intends actually happen: a
replaced dead code also resets its EMA statistics (audiocraft overwrites ``embed`` only, and
the EMA step right after undoes the replacement), and k-means initialisation stores the cluster
*sums* in ``embed_avg`` (audiocraft stores the means, so the first EMA step divides means by
counts). Inference (nearest neighbour, lookup, residual order) is Hugging Face's
``EncodecResidualVectorQuantizer`` bit for bit; the buffers have its names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def codebooks_for_bandwidth(bandwidth: float, frame_rate: float, codebook_size: int,
                            num_quantizers: int) -> int:
    """How many codebooks fit in ``bandwidth`` kbps: each frame costs log2(codebook_size) bits
    per codebook, ``frame_rate`` frames a second (EnCodec's rule: floor, at least one, and at
    most the ``num_quantizers`` there are)."""
    bits_per_codebook = math.log2(codebook_size) * frame_rate
    return min(num_quantizers, max(1, math.floor(bandwidth * 1000 / bits_per_codebook)))


def nearest_codes(x: Tensor, embed: Tensor) -> Tensor:
    """(N, D) vectors, (K, D) codewords -> (N,) index of the nearest codeword. The expansion
    |x|^2 - 2 x.e + |e|^2 and the argmax of its negation are Hugging Face's, term for term, so
    near-ties resolve to the same code."""
    codewords = embed.t()
    dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ codewords
             + codewords.pow(2).sum(0, keepdim=True))
    return dist.max(dim=-1).indices


def sample_rows(x: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """``count`` rows of ``x`` (N, D) drawn at random: without replacement when there are
    enough, else with."""
    n = x.shape[0]
    if n >= count:
        index = torch.randperm(n, generator=generator, device="cpu")[:count]
    else:
        index = torch.randint(0, n, (count,), generator=generator, device="cpu")
    return x[index.to(x.device)]


def kmeans(x: Tensor, clusters: int, iterations: int,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on (N, D) ``x`` from ``clusters`` random rows -> (means (K, D), counts
    (K,)) of the last assignment; an empty cluster keeps its previous centre."""
    means = sample_rows(x, clusters, generator)
    counts = torch.zeros(clusters, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        assign = nearest_codes(x, means)
        counts = torch.bincount(assign, minlength=clusters).to(x.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, x)
        empty = counts == 0
        means = torch.where(empty[:, None], means, sums / counts.clamp(min=1)[:, None])
    return means, counts


class VectorQuantizer(nn.Module):
    """One codebook over (batch, dim, time) latents; see the module docstring for training."""

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.99,
                 epsilon: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 50,
                 dead_code_threshold: float = 2.0) -> None:
        super().__init__()
        self.codebook_size, self.decay, self.epsilon = codebook_size, decay, epsilon
        self.kmeans_iters, self.dead_code_threshold = kmeans_iters, dead_code_threshold
        embed = torch.zeros(codebook_size, dim)
        if not kmeans_init:  # audiocraft's uniform init: usable before any data is seen
            nn.init.kaiming_uniform_(embed)
        # HF's names and layout (inited is a float flag), so checkpoints map one to one.
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    def encode(self, x: Tensor) -> Tensor:
        """(B, D, T) -> (B, T) code indices."""
        b, d, t = x.shape
        return nearest_codes(x.permute(0, 2, 1).reshape(-1, d), self.embed).view(b, t)

    def decode(self, codes: Tensor) -> Tensor:
        """(B, T) code indices -> (B, D, T) codewords."""
        return F.embedding(codes, self.embed).permute(0, 2, 1)

    @torch.no_grad()
    def kmeans_init_(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codebook to k-means clusters of (B, D, T) ``x``; ``embed_avg`` gets the
        cluster sums so the EMA continues from consistent statistics."""
        flat = x.detach().permute(0, 2, 1).reshape(-1, x.shape[1]).float()
        means, counts = kmeans(flat, self.codebook_size, self.kmeans_iters, generator)
        self.embed.copy_(means)
        self.embed_avg.copy_(means * counts[:, None])
        self.cluster_size.copy_(counts)
        self.inited.fill_(1.0)

    @torch.no_grad()
    def ema_update_(self, x: Tensor, codes: Tensor) -> None:
        """One EMA step towards the batch's assignment ((N, D) vectors, (N,) codes), then the
        dead-code replacement."""
        onehot = F.one_hot(codes, self.codebook_size).to(x.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(onehot.t() @ x, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = ((self.cluster_size + self.epsilon)
                    / (total + self.codebook_size * self.epsilon) * total)
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        self.replace_dead_codes_(x)

    @torch.no_grad()
    def replace_dead_codes_(self, x: Tensor) -> None:
        """Codes used less than ``dead_code_threshold`` times (EMA count) become random batch
        vectors, with the EMA statistics of a code used exactly ``threshold`` times there."""
        dead = self.cluster_size < self.dead_code_threshold
        if not dead.any():
            return
        samples = sample_rows(x, self.codebook_size)
        self.embed.copy_(torch.where(dead[:, None], samples, self.embed))
        self.embed_avg.copy_(torch.where(dead[:, None], samples * self.dead_code_threshold,
                                         self.embed_avg))
        self.cluster_size.masked_fill_(dead, self.dead_code_threshold)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, D, T) -> (quantized (B, D, T), codes (B, T), commitment loss ()). In training
        the quantized output passes the gradient straight through to ``x`` and the codebook
        takes its EMA step (after the lookup: the output uses the codebook the codes index)."""
        if self.training and not bool(self.inited.item()):
            self.kmeans_init_(x)
        codes = self.encode(x)
        quantized = self.decode(codes)
        if not self.training:
            return quantized, codes, F.mse_loss(x, quantized)
        commitment = F.mse_loss(x, quantized.detach())
        self.ema_update_(x.detach().permute(0, 2, 1).reshape(-1, x.shape[1]), codes.reshape(-1))
        return x + (quantized - x).detach(), codes, commitment


@dataclass
class RVQOutput:
    """``quantized`` (B, D, T) (straight-through in training), ``codes`` (B, n_q, T) and the
    commitment loss averaged over the codebooks used."""

    quantized: Tensor
    codes: Tensor
    commitment_loss: Tensor


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` :class:`VectorQuantizer` s, each quantizing the previous residual.
    ``n_q`` (None: all) picks how many are used, coarsest first."""

    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, decay: float = 0.99,
                 epsilon: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 50,
                 dead_code_threshold: float = 2.0) -> None:
        super().__init__()
        self.codebook_size, self.num_quantizers = codebook_size, num_quantizers
        self.layers = nn.ModuleList(
            VectorQuantizer(dim, codebook_size, decay, epsilon, kmeans_init, kmeans_iters,
                            dead_code_threshold) for _ in range(num_quantizers))

    def _count(self, n_q: int | None) -> int:
        n_q = self.num_quantizers if n_q is None else n_q
        if not 1 <= n_q <= self.num_quantizers:
            raise ValueError(f"n_q={n_q}: this quantizer has {self.num_quantizers} codebooks")
        return n_q

    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """(B, D, T) -> codes (B, n_q, T)."""
        residual, codes = x, []
        for layer in self.layers[:self._count(n_q)]:
            index = layer.encode(residual)
            residual = residual - layer.decode(index)
            codes.append(index)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """(B, n_q, T) codes -> (B, D, T): the sum of each codebook's codewords."""
        quantized = torch.full((), 0.0, device=codes.device)
        for i in range(self._count(codes.shape[1])):
            quantized = quantized + self.layers[i].decode(codes[:, i])
        return quantized

    @torch.no_grad()
    def initialise(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """k-means every codebook in turn on the residual its predecessors leave of (B, D, T)
        ``x``: afterwards each extra codebook can only lower the total squared error on ``x``
        (each cluster's mean is closer to its members, in sum, than zero is)."""
        residual = x.detach()
        for layer in self.layers:
            layer.kmeans_init_(residual, generator)
            residual = residual - layer.decode(layer.encode(residual))

    def forward(self, x: Tensor, n_q: int | None = None) -> RVQOutput:
        """Quantize with the first ``n_q`` codebooks. Each codebook sees the residual of the
        *detached* earlier codewords, and in training the summed output is straight-through
        as a whole (``x + (sum - x).detach()``): the encoder's gradient is the decoder's,
        unchanged, however many codebooks were used (EnCodec issue #25)."""
        residual = x
        quantized = torch.zeros_like(x)
        codes, losses = [], []
        for layer in self.layers[:self._count(n_q)]:
            q, index, loss = layer(residual)
            q = q.detach()
            residual = residual - q
            quantized = quantized + q
            codes.append(index)
            losses.append(loss)
        if self.training:
            quantized = x + (quantized - x).detach()
        return RVQOutput(quantized, torch.stack(codes, dim=1), torch.stack(losses).mean())
