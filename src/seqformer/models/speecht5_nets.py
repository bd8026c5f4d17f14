"""The pieces of a SpeechT5 text-to-speech model that seqformer's shared blocks do not have.

Each mirrors one Hugging Face SpeechT5 module, so checkpoints map one to one
(``interop/hf_speecht5.py``):

- :class:`ScaledPositions`: Vaswani's interleaved sinusoids times one learned scalar ``alpha``
  (Li et al. 2019, "Neural Speech Synthesis with Transformer Network", section 3.2): text
  embeddings and mel frames live on different scales, so each side learns how loud its
  positions should be.
- :class:`RelativeBiasAttention` / :class:`RelativeEncoder`: SpeechT5's text encoder. Shaw et
  al.'s relative position *keys*: one learned vector per clipped distance ``i - j`` (shared by
  the heads, ``head_dim`` wide), dotted with the scaled query and added to the scores, so
  score(i, j) = q_i . (k_j + r_{i-j}) / sqrt(head_dim). Post-LN layers, after a LayerNorm of
  the input.
- :class:`SpeechDecoderPrenet`: mel frame -> Linear + ReLU + dropout (x layers) -> Linear ->
  scaled positions -> optional speaker embedding (L2-normalised, concatenated, projected,
  ReLU). The dropout is *always on*, also at inference (Tacotron 2, section 2.2: it is how
  the autoregressive decoder gets output variation, and the model was trained with it, so
  turning it off gives inputs it never saw); one mask per (time, unit) is shared by the
  batch, as in SpeechT5.
- :class:`SpeechDecoderPostnet`: ``feat_out`` (reduction_factor frames per decoder step),
  ``prob_out`` (one stop logit per frame) and a residual stack of Conv1d + BatchNorm (+ tanh
  except the last) refining the whole spectrogram.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.nn.attention import MultiHeadAttention, build_attention_mask
from seqformer.nn.feedforward import FeedForward
from seqformer.nn.norm import Residual


def interleaved_sinusoids(length: int, dim: int) -> Tensor:
    """(length, dim): sin on even features, cos on odd ones (Vaswani et al.; SpeechT5's
    table, computed in float32 the same way so imported weights see the same numbers)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table


class ScaledPositions(nn.Module):
    """``x + alpha * table[offset : offset + T]`` then dropout; ``alpha`` starts at 1."""

    def __init__(self, dim: int, max_len: int, dropout: float) -> None:
        super().__init__()
        # Not persistent: rebuilt on construction, as in HF (its checkpoints do not carry it).
        self.register_buffer("table", interleaved_sinusoids(max_len, dim), persistent=False)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        length = x.shape[1]
        if offset + length > self.max_len:
            raise ValueError(f"{offset + length} positions exceed the {self.max_len} this "
                             "model has (model.max_text_positions / max_speech_positions)")
        table = self.table[offset: offset + length].to(x.dtype)
        return self.dropout(x + self.alpha * table)


class RelativeBiasAttention(MultiHeadAttention):
    """Self-attention whose scores get ``q_i . r_{i-j} / sqrt(head_dim)`` added, ``r`` from
    :class:`RelativeEncoder`'s shared table (see the module docstring)."""

    def forward(self, x: Tensor, relative: Tensor,  # type: ignore[override]
                key_padding_mask: Tensor | None = None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        """``x`` (batch, time, dim), ``relative`` (time, time, head_dim) -> output and, if
        asked, the weights (batch, heads, time, time)."""
        batch, time, _ = x.shape
        q, k, v = (self._split(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        scale = 1.0 / math.sqrt(self.head_dim)
        bias = torch.einsum("bhid,ijd->bhij", q, relative.to(q.dtype)) * scale
        mask = build_attention_mask(batch, time, time, key_padding_mask, None, False, x.device)
        if mask is not None:
            bias = bias + mask.to(bias.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = (q @ k.transpose(-2, -1) * scale + bias).softmax(dim=-1)
            out = F.dropout(weights, dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(batch, time, self.d_model)), weights


class RelativeEncoderLayer(nn.Module):
    """Post-LN: ``norm(x + drop(attn(x)))`` then ``norm(x + ffn(x))``; the parameter names of
    ``nn.layers.EncoderLayer`` (self_attn, attn_block, ffn, ffn_block)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float,
                 attention_dropout: float, activation_dropout: float, activation: str,
                 eps: float) -> None:
        super().__init__()
        self.self_attn = RelativeBiasAttention(dim, heads, attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, activation_dropout, activation)
        self.attn_block = Residual(dim, dropout, False, eps)
        self.ffn_block = Residual(dim, dropout, False, eps)

    def forward(self, x: Tensor, relative: Tensor, padding_mask: Tensor | None) -> Tensor:
        x = self.attn_block(x, lambda h: self.self_attn(h, relative, padding_mask)[0])
        return self.ffn_block(x, self.ffn)


class RelativeEncoder(nn.Module):
    """LayerNorm + dropout of the input, then post-LN layers sharing one relative table of
    ``2 * max_relative`` distances (clipped to [-max_relative, max_relative - 1])."""

    def __init__(self, layers: int, dim: int, heads: int, ffn_dim: int, max_relative: int,
                 dropout: float, attention_dropout: float, activation_dropout: float,
                 activation: str, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.relative = nn.Embedding(2 * max_relative, dim // heads)
        self.max_relative = max_relative
        self.layers = nn.ModuleList(
            RelativeEncoderLayer(dim, heads, ffn_dim, dropout, attention_dropout,
                                 activation_dropout, activation, eps)
            for _ in range(layers))

    def relative_keys(self, time: int) -> Tensor:
        """(time, time, head_dim): the vector of distance i - j at [i, j]."""
        pos = torch.arange(time, device=self.relative.weight.device)
        distance = (pos[:, None] - pos[None, :]).clamp(-self.max_relative, self.max_relative - 1)
        return self.relative(distance + self.max_relative)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        x = self.dropout(self.norm(x))
        relative = self.relative_keys(x.shape[1])
        for layer in self.layers:
            x = layer(x, relative, padding_mask)
        return x


def consistent_dropout(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Dropout of ``x`` (batch, time, units) that is on in eval mode too, with one keep-mask
    per (time, unit) shared by every item of the batch (SpeechT5's "consistent" dropout), so
    an utterance sees the same mask alone or in a batch for the same generator state.

    The mask keeps each unit with probability ``1 - p`` and scales by ``1 / (1 - p)``. Hugging
    Face draws ``bernoulli(p)`` and keeps the ones, which is the same at SpeechT5's p = 0.5
    (then the two consume the generator identically) but keeps only a fraction p otherwise --
    at p = 0 it zeroes the prenet, making the decoder blind to its previous frame."""
    if p <= 0.0:
        return x
    device = x.device if generator is None else generator.device
    keep = torch.empty(x.shape[1:], device=device).bernoulli_(1.0 - p, generator=generator)
    return x * keep.to(device=x.device, dtype=x.dtype) * (1.0 / (1.0 - p))


class SpeechDecoderPrenet(nn.Module):
    """Previous mel frames (batch, time, num_mel_bins) -> decoder inputs (batch, time, dim)."""

    def __init__(self, num_mel_bins: int, layers: int, units: int, dropout: float, dim: int,
                 max_positions: int, positional_dropout: float, speaker_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(num_mel_bins if i == 0 else units, units)
                                    for i in range(layers))
        self.final = nn.Linear(units, dim)
        self.positions = ScaledPositions(dim, max_positions, positional_dropout)
        # Always present (HF's layout has it even without speakers); used when a speaker
        # embedding is given.
        self.speaker_proj = nn.Linear(speaker_dim + dim, dim)
        self.dropout, self.speaker_dim = dropout, speaker_dim

    def forward(self, frames: Tensor, speaker: Tensor | None = None, offset: int = 0,
                generator: torch.Generator | None = None) -> Tensor:
        """``offset``: the position of the first frame (incremental decoding feeds one)."""
        x = frames
        for layer in self.layers:
            x = consistent_dropout(F.relu(layer(x)), self.dropout, generator)
        x = self.positions(self.final(x), offset)
        if speaker is not None:
            if speaker.dim() != 2 or speaker.shape[1] != self.speaker_dim or not self.speaker_dim:
                raise ValueError(f"speaker embeddings must be (batch, {self.speaker_dim}), got "
                                 f"{tuple(speaker.shape)} (model.speaker_embedding_dim="
                                 f"{self.speaker_dim})")
            s = F.normalize(speaker.to(x.dtype), dim=-1).unsqueeze(1).expand(-1, x.shape[1], -1)
            x = F.relu(self.speaker_proj(torch.cat([x, s], dim=-1)))
        return x


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics (and running averages) come from real frames
    only: padding would otherwise pull every channel's statistics towards whatever padded
    frames hold, and inference would then normalise with statistics of padding. Without a
    mask, or in eval mode, it is ``nn.BatchNorm1d`` (same parameters and buffers)."""

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """``x`` (batch, channels, frames); ``keep`` (batch, 1, frames), 1 at real frames."""
        if keep is None or not self.training or not self.track_running_stats:
            return super().forward(x)
        n = keep.sum().clamp(min=2.0)
        mean = (x * keep).sum(dim=(0, 2)) / n
        var = (((x - mean[None, :, None]) * keep) ** 2).sum(dim=(0, 2)) / n
        with torch.no_grad():
            assert self.running_mean is not None and self.running_var is not None
            momentum = 0.1 if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
            unbiased = var.detach() * n / (n - 1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var + self.eps)
        out = (x - mean[None, :, None]) * scale[None, :, None]
        if self.affine:
            out = out * self.weight[None, :, None] + self.bias[None, :, None]
        return out


class PostnetLayer(nn.Module):
    """Conv1d (no bias: BatchNorm follows) -> BatchNorm -> tanh (not on the last) -> dropout."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, last: bool,
                 dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels_out, kernel, padding=(kernel - 1) // 2,
                              bias=False)
        self.norm = MaskedBatchNorm1d(channels_out)
        self.last = last
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """``keep`` (batch, 1, frames): 1 at real frames, whose input alone the conv reads."""
        x = self.norm(self.conv(x if keep is None else x * keep), keep)
        return self.dropout(x if self.last else torch.tanh(x))


class SpeechDecoderPostnet(nn.Module):
    """Decoder states -> (mel before the postnet, mel after it, stop logits)."""

    def __init__(self, dim: int, num_mel_bins: int, reduction_factor: int, layers: int,
                 units: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.feat_out = nn.Linear(dim, num_mel_bins * reduction_factor)
        self.prob_out = nn.Linear(dim, reduction_factor)
        self.layers = nn.ModuleList(
            PostnetLayer(num_mel_bins if i == 0 else units,
                         num_mel_bins if i == layers - 1 else units, kernel, i == layers - 1,
                         dropout)
            for i in range(layers))
        self.num_mel_bins = num_mel_bins

    def frames(self, h: Tensor) -> Tensor:
        """(batch, steps, dim) -> (batch, steps * reduction_factor, num_mel_bins)."""
        return self.feat_out(h).view(h.shape[0], -1, self.num_mel_bins)

    def stop_logits(self, h: Tensor) -> Tensor:
        """(batch, steps, dim) -> (batch, steps * reduction_factor)."""
        return self.prob_out(h).view(h.shape[0], -1)

    def refine(self, mel: Tensor, padding: Tensor | None = None) -> Tensor:
        """The residual conv stack over a whole (batch, frames, num_mel_bins) spectrogram.
        ``padding`` (batch, frames) True past an utterance's end: every convolution then reads
        zeros there, exactly the zero padding it reads at the end of that utterance alone
        (masking only the input would not do: BatchNorm's shift makes padding non-zero), and
        in training BatchNorm takes its statistics from the real frames only."""
        x = mel.transpose(1, 2)
        keep = None if padding is None else (~padding)[:, None, :].to(x.dtype)
        for layer in self.layers:
            x = layer(x, keep)
        return mel + x.transpose(1, 2)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        before = self.frames(h)
        return before, self.refine(before), self.stop_logits(h)
