"""Gumbel-softmax product quantizer: wav2vec 2.0's targets (Baevski et al., 2020).

A frame's feature vector is turned into ``groups`` choices, one codeword out of ``per_group``
in each group's codebook, and the chosen codewords are concatenated. Product quantization gives
``per_group ** groups`` distinct targets from only ``groups * per_group`` stored vectors.

The choice has to be differentiable for the codebooks and the projection to learn, so
training samples it with the straight-through Gumbel-softmax (Jang et al., 2017): the forward
pass uses a hard one-hot, the backward pass the gradient of a softmax at temperature ``tau``,
which the pretraining task anneals from 2 to 0.5. Evaluation takes the argmax instead.

``perplexity`` measures how many codewords are in use: per group, exp of the entropy of the
codeword distribution averaged over the scored frames (the softmax probabilities in training,
the hard choices in evaluation), summed over groups. It is at most ``groups * per_group``; the
diversity loss ``(G*V - perplexity) / (G*V)`` pushes towards using the whole codebook. The layout
and arithmetic are Hugging Face's ``Wav2Vec2GumbelVectorQuantizer``.
:meth:`GumbelQuantizer.code_ids` gives the argmax codeword indices themselves (W2v-BERT's
targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def codebook_perplexity(probs: Tensor, mask: Tensor | None = None) -> Tensor:
    """``probs`` (frames, groups, per_group) -> sum over groups of exp(entropy of the mean
    distribution over frames), counting only frames where ``mask`` (frames,) is True."""
    if mask is None:
        marginal = probs.mean(dim=0)
    else:
        keep = mask.reshape(-1, 1, 1).to(probs.dtype)
        marginal = (probs * keep).sum(dim=0) / mask.sum().clamp(min=1)
    return torch.exp(-torch.xlogy(marginal, marginal).sum(dim=-1)).sum()


class GumbelQuantizer(nn.Module):
    """(batch, time, in_dim) features -> (batch, time, codevector_dim) codewords and the
    perplexity; ``temperature`` is set from outside (the task anneals it per step)."""

    def __init__(self, in_dim: int, groups: int, per_group: int, codevector_dim: int) -> None:
        super().__init__()
        if codevector_dim % groups:
            raise ValueError(f"codevector_dim={codevector_dim} must be divisible by "
                             f"groups={groups} (each group holds an equal slice)")
        self.groups, self.per_group = groups, per_group
        self.codevectors = nn.Parameter(torch.empty(1, groups * per_group,
                                                    codevector_dim // groups))
        self.weight_proj = nn.Linear(in_dim, groups * per_group)
        self.temperature = 2.0
        # Wide logits at the start (N(0, 1) projection) so the first choices spread over the
        # codebook; codewords uniform in [0, 1) -- HF's and fairseq's init.
        nn.init.normal_(self.weight_proj.weight, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        nn.init.uniform_(self.codevectors)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``mask`` (batch, time) bool picks the frames the perplexity counts (all if None)."""
        batch, time, _ = x.shape
        logits = self.weight_proj(x).view(batch * time * self.groups, self.per_group)
        if self.training:
            one_hot = F.gumbel_softmax(logits.float(), tau=self.temperature,
                                       hard=True).type_as(logits)
            soft = torch.softmax(logits.view(batch * time, self.groups, -1).float(), dim=-1)
            perplexity = codebook_perplexity(soft, mask)
        else:
            one_hot = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
            perplexity = codebook_perplexity(one_hot.view(batch * time, self.groups, -1), mask)
        # Each one-hot row picks its codeword; concatenating the groups gives the target.
        picked = one_hot.view(batch * time, -1, 1) * self.codevectors
        codevectors = picked.view(batch * time, self.groups, self.per_group, -1).sum(-2)
        return codevectors.view(batch, time, -1), perplexity

    @torch.no_grad()
    def code_ids(self, x: Tensor) -> Tensor:
        """(batch, time, groups) long: each group's argmax codeword for each frame -- the
        choice evaluation makes, without the Gumbel noise; no gradient (W2v-BERT's
        masked-prediction targets)."""
        batch, time, _ = x.shape
        return self.weight_proj(x).view(batch, time, self.groups, self.per_group).argmax(-1)
