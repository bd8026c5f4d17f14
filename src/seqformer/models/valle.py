"""VALL-E (Wang et al. 2023): text to speech as language modelling over neural-codec codes.

An EnCodec (``models/encodec.py``) turns speech into ``n_q`` parallel streams of codes, one per
residual codebook; codebook 1 carries most of the content and the later ones refine it. VALL-E
models them with two Transformers:

- the **AR** model, decoder-only, reads ``[text ; codebook-1 codes]`` -- the text with full
  (bidirectional) attention among its own positions, the codes causally, each seeing the whole
  text -- and predicts the next codebook-1 code (or the end). At inference the codes start
  with the *acoustic prompt* (a few seconds of the voice to imitate) and the text is the
  prompt's transcript followed by what to say, so the model *continues* the prompt's voice.
  Sampling is KV-cached: :meth:`VALLE.ar_start` runs the prefix once, :meth:`VALLE.ar_step`
  costs one position per code.
- the **NAR** model, non-causal, fills codebooks 2..n_q one stage at a time: for stage ``j``
  it sees the text, the prompt's codes of *all* codebooks (embedding summed over codebooks)
  and the target's codes of codebooks ``< j`` (summed), and predicts codebook ``j`` of every
  target frame at once. It never sees the target's codebook ``j`` or later.

Departures from the paper, all for a small CPU model: the NAR is told its stage by a learned
stage embedding added to every input position, not by adaptive LayerNorm (the simplification
the paper's open re-implementations often make); positions are sinusoidal with the token
embeddings scaled by sqrt(d_model) (the paper adds sinusoids with a learned scale), text and
audio each counted from 0; the two models are independent (no shared embeddings). Training
takes one NAR stage per batch, drawn by the data stream from (seed, batch position), so a
resumed run repeats it.

Code ids: AR inputs 0..K-1 are codes, K is the end-of-speech token (predicted, never input but
as padding), the AR head has K + 1 outputs. The NAR embeds codes 0..K-1 and K as padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.data.device import to_device
from seqformer.errors import ConfigError
from seqformer.models.common import SavedModel, init_gpt2
from seqformer.nn.attention import KVCache
from seqformer.nn.feedforward import ACTIVATIONS
from seqformer.nn.layers import EncoderLayer
from seqformer.nn.positional import SinusoidalPositionalEncoding

FAMILY = "valle"
IGNORE = -100


@dataclass(frozen=True)
class VALLEConfig:
    """Shape of both Transformers. ``vocab_size`` (text tokens) comes from the tokenizer and
    ``n_q`` / ``codebook_size`` from the codec; the rest from the recipe. ``max_text`` and
    ``max_frames`` bound the text and the code frames (prompt + target) of one example."""

    vocab_size: int = 0
    n_q: int = 4
    codebook_size: int = 256
    d_model: int = 256
    heads: int = 4
    ar_layers: int = 4
    nar_layers: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "gelu"
    norm_first: bool = True
    max_text: int = 256
    max_frames: int = 1024
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.heads <= 0 or self.d_model % self.heads:
            raise ConfigError(f"model.d_model={self.d_model} must be a positive multiple of "
                              f"model.heads={self.heads}")
        for name in ("ar_layers", "nar_layers", "ffn_dim", "max_text", "max_frames",
                     "codebook_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.n_q < 2:
            raise ConfigError(f"model.n_q={self.n_q}: VALL-E needs at least 2 codebooks (one "
                              "for the AR model, the rest for the NAR); code at a higher "
                              "bandwidth")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError("model.dropout and model.attention_dropout must be in [0, 1)")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation={self.activation!r}; use one of "
                              f"{', '.join(ACTIVATIONS)}")
        if self.vocab_size and not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"model.pad_id={self.pad_id} is outside the vocabulary of "
                              f"{self.vocab_size}")


@dataclass
class CodecBatch:
    """Training examples: ``text`` (B, Lt) padded with pad_id and its lengths; ``prompt`` and
    ``target`` codes (B, n_q, T) padded with any value and their frame counts; ``stage`` the
    NAR codebook (1..n_q-1, 0-based) this batch trains."""

    text: Tensor
    text_lengths: Tensor
    prompt: Tensor
    prompt_lengths: Tensor
    target: Tensor
    target_lengths: Tensor
    stage: int
    count_unit: ClassVar[str] = "frames"

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.target_lengths.sum())

    def to(self, device: torch.device | str) -> CodecBatch:
        text, text_lengths, prompt, prompt_lengths, target, target_lengths = (
            to_device(t, device) for t in (self.text, self.text_lengths, self.prompt,
                                           self.prompt_lengths, self.target,
                                           self.target_lengths))
        return CodecBatch(text, text_lengths, prompt, prompt_lengths, target, target_lengths,
                          self.stage)


@dataclass
class VALLEOutput:
    """``loss`` = AR cross-entropy + NAR cross-entropy (what is optimised); ``nll`` its
    detached value; the parts and their token accuracies for validation; ``n_tokens`` the AR
    predictions (target frames + end)."""

    loss: Tensor
    nll: Tensor
    ar_loss: Tensor
    nar_loss: Tensor
    ar_correct: int
    ar_count: int
    nar_correct: int
    nar_count: int
    n_tokens: int


@dataclass
class ARState:
    """What AR sampling carries between codes: one cache per layer and the next audio
    position (the text length is fixed once the prefix has run)."""

    caches: list[KVCache]
    audio_position: int
    logits: Tensor  # (batch, K + 1) of the next code


def prefix_lm_mask(text_lengths: Tensor, total: int) -> Tensor:
    """(B, 1, total, total) additive mask of ``[text ; audio]`` sequences: a text position
    sees every text position (and no audio); an audio position sees all the text and the
    audio up to itself. ``text_lengths`` (B,) say where each row's audio starts."""
    i = torch.arange(total, device=text_lengths.device).view(1, -1, 1)
    j = torch.arange(total, device=text_lengths.device).view(1, 1, -1)
    lt = text_lengths.view(-1, 1, 1)
    allowed = (j < lt) | ((i >= lt) & (j <= i))
    mask = torch.zeros(allowed.shape, device=text_lengths.device)
    return mask.masked_fill(~allowed, float("-inf")).unsqueeze(1)


class _Stack(nn.Module):
    """Text + code embeddings, separate sinusoidal positions, N shared-block layers, final
    norm: the body of both the AR and the NAR model."""

    def __init__(self, c: VALLEConfig, layers: int) -> None:
        super().__init__()
        self.text_embed = nn.Embedding(c.vocab_size, c.d_model)
        self.text_pos = SinusoidalPositionalEncoding(c.d_model, c.max_text)
        self.audio_pos = SinusoidalPositionalEncoding(c.d_model, c.max_frames + 1)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.heads, c.ffn_dim, c.dropout, c.attention_dropout,
                         c.activation, c.norm_first) for _ in range(layers))
        self.norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self.scale = math.sqrt(c.d_model)

    def run(self, x: Tensor, attn_mask: Tensor | None = None,
            padding_mask: Tensor | None = None, caches: list[KVCache] | None = None) -> Tensor:
        x = self.dropout(x)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, padding_mask=padding_mask, attn_mask=attn_mask,
                         cache=None if caches is None else caches[i])
        return self.norm(x)


def _layout(text_lengths: Tensor, audio_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Index helpers of rows ``[text ; audio]`` packed without gaps and padded at the end:
    (is_text (B, L), position within its part (B, L), is_real (B, L), L)."""
    total = int((text_lengths + audio_lengths).max())
    t = torch.arange(total, device=text_lengths.device).view(1, -1)
    lt = text_lengths.view(-1, 1)
    is_text = t < lt
    position = torch.where(is_text, t, t - lt)
    is_real = t < lt + audio_lengths.view(-1, 1)
    return is_text, position, is_real, total


def _pack(prompt: Tensor, prompt_lengths: Tensor, target: Tensor, target_lengths: Tensor,
          fill: int) -> Tensor:
    """(B, ..., Tp + Tt): each row's prompt codes then its target codes, without the padding
    between them, ``fill`` after (``prompt`` (B, ..., Tp) and ``target`` (B, ..., Tt))."""
    width = prompt.shape[-1] + target.shape[-1]
    t = torch.arange(width, device=prompt.device).view(1, -1)
    in_prompt = t < prompt_lengths.view(-1, 1)
    lead = [1] * (prompt.dim() - 2)
    shape = prompt.shape[:-1] + (width,)
    from_prompt = prompt.gather(-1, t.clamp(max=prompt.shape[-1] - 1).expand(
        prompt.shape[0], -1).view(prompt.shape[0], *lead, width).expand(shape))
    t_index = (t - prompt_lengths.view(-1, 1)).clamp(0, target.shape[-1] - 1)
    from_target = target.gather(-1, t_index.view(target.shape[0], *lead, width).expand(shape))
    out = torch.where(in_prompt.view(prompt.shape[0], *lead, width), from_prompt, from_target)
    real = t < (prompt_lengths + target_lengths).view(-1, 1)
    return out.masked_fill(~real.view(prompt.shape[0], *lead, width), fill)


def _gather_rows(values: Tensor, starts: Tensor, total: int, fill: int) -> Tensor:
    """(B, ..., L) rows of ``values`` (B, ..., T) shifted right by ``starts`` (B,), the rest
    ``fill``: puts each row's codes after its text."""
    t = torch.arange(total, device=values.device)
    index = t.view(1, -1) - starts.view(-1, 1)  # (B, L)
    valid = (index >= 0) & (index < values.shape[-1])
    index = index.clamp(0, values.shape[-1] - 1)
    shape = values.shape[:-1] + (total,)
    gathered = values.gather(-1, index.view(index.shape[0], *([1] * (values.dim() - 2)), total)
                             .expand(shape))
    return gathered.masked_fill(~valid.view(valid.shape[0], *([1] * (values.dim() - 2)),
                                            total), fill)


class VALLE(SavedModel, nn.Module):
    """The AR and NAR Transformers; see the module docstring."""

    family: ClassVar[str] = FAMILY
    description: ClassVar[str] = "a VALL-E codec language model"
    config_class: ClassVar[type] = VALLEConfig
    settings_key: ClassVar[str] = "codec"

    def __init__(self, config: VALLEConfig) -> None:
        super().__init__()
        if config.vocab_size < 1:
            raise ConfigError("VALLEConfig needs vocab_size from the tokenizer")
        self.config = c = config
        k = c.codebook_size
        self.eos = k
        self.ar = _Stack(c, c.ar_layers)
        self.ar_code_embed = nn.Embedding(k + 1, c.d_model)  # codes + end (padding input)
        self.ar_head = nn.Linear(c.d_model, k + 1)
        self.nar = _Stack(c, c.nar_layers)
        self.nar_code_embed = nn.ModuleList(nn.Embedding(k + 1, c.d_model) for _ in range(c.n_q))
        self.stage_embed = nn.Embedding(c.n_q, c.d_model)
        self.nar_heads = nn.ModuleList(nn.Linear(c.d_model, k) for _ in range(c.n_q - 1))
        init_gpt2(self.ar, c.ar_layers)
        init_gpt2(self.nar, c.nar_layers)
        for module in (self.ar_code_embed, self.ar_head, self.nar_code_embed, self.stage_embed,
                       self.nar_heads):
            init_gpt2(module, max(c.ar_layers, c.nar_layers))

    # -- AR ---------------------------------------------------------------------------------
    def _check_lengths(self, text_lengths: Tensor, audio_lengths: Tensor) -> None:
        c = self.config
        if int(text_lengths.max()) > c.max_text:
            raise ValueError(f"text of {int(text_lengths.max())} tokens exceeds "
                             f"model.max_text={c.max_text}")
        if int(audio_lengths.max()) > c.max_frames:
            raise ValueError(f"{int(audio_lengths.max())} code frames exceed "
                             f"model.max_frames={c.max_frames}")

    def ar_logits(self, text: Tensor, text_lengths: Tensor, codes: Tensor,
                  code_lengths: Tensor) -> Tensor:
        """(B, L, K + 1) next-code logits of every position of ``[text ; codes]`` rows
        (``codes`` (B, T) codebook-1 codes), packed without gaps, padded at the end."""
        self._check_lengths(text_lengths, code_lengths)
        is_text, position, _, total = _layout(text_lengths, code_lengths)
        s = self.ar
        text_ids = F.pad(text, (0, max(0, total - text.shape[1])), value=self.config.pad_id)
        audio_ids = _gather_rows(codes.clamp(0, self.eos), text_lengths, total, self.eos)
        x = torch.where(is_text.unsqueeze(-1), s.text_embed(text_ids[:, :total]),
                        self.ar_code_embed(audio_ids)) * s.scale
        pos = torch.where(is_text.unsqueeze(-1), s.text_pos.table[position.clamp(
            max=self.config.max_text - 1)], s.audio_pos.table[position.clamp(
                max=self.config.max_frames)])
        hidden = s.run(x + pos, attn_mask=prefix_lm_mask(text_lengths, total))
        return self.ar_head(hidden)

    @torch.inference_mode()
    def ar_start(self, text: Tensor, prompt: Tensor) -> ARState:
        """Run ``[text ; prompt]`` (one unpadded row each: text (1, Lt), prompt codebook-1
        codes (1, Tp)) once, filling the caches."""
        lt, tp = text.shape[1], prompt.shape[1]
        self._check_lengths(torch.tensor([lt]), torch.tensor([tp]))
        s = self.ar
        x = torch.cat([s.text_embed(text) * s.scale + s.text_pos(lt),
                       self.ar_code_embed(prompt) * s.scale + s.audio_pos(tp)], dim=1)
        caches = [KVCache() for _ in s.layers]
        mask = prefix_lm_mask(torch.tensor([lt], device=text.device), lt + tp)
        hidden = s.run(x, attn_mask=mask, caches=caches)
        return ARState(caches, tp, self.ar_head(hidden[:, -1]).float())

    @torch.inference_mode()
    def ar_step(self, code: Tensor, state: ARState) -> ARState:
        """Append one codebook-1 code per row (B,); the logits of the next one."""
        if state.audio_position + 1 > self.config.max_frames:
            raise ValueError(f"more than model.max_frames={self.config.max_frames} frames")
        s = self.ar
        x = self.ar_code_embed(code.view(-1, 1)) * s.scale + s.audio_pos(1, state.audio_position)
        hidden = s.run(x, caches=state.caches)  # one query: it may see every cached key
        state.audio_position += 1
        state.logits = self.ar_head(hidden[:, -1]).float()
        return state

    # -- NAR --------------------------------------------------------------------------------
    def nar_logits(self, text: Tensor, text_lengths: Tensor, prompt: Tensor,
                   prompt_lengths: Tensor, target: Tensor, target_lengths: Tensor,
                   stage: int) -> Tensor:
        """(B, L, K) logits of codebook ``stage`` (0-based, >= 1) at every position of
        ``[text ; prompt ; target]`` rows (only the target's are meaningful). The target's
        codebooks >= ``stage`` are never read."""
        c = self.config
        if not 1 <= stage < c.n_q:
            raise ValueError(f"NAR stage {stage} must be in 1..{c.n_q - 1}")
        self._check_lengths(text_lengths, prompt_lengths + target_lengths)
        audio_lengths = prompt_lengths + target_lengths
        is_text, position, is_real, total = _layout(text_lengths, audio_lengths)
        s = self.nar
        k = c.codebook_size
        # Each row's codes: the prompt's (all codebooks), then the target's first `stage`.
        audio = _pack(prompt.clamp(0, k - 1), prompt_lengths, target.clamp(0, k - 1),
                      target_lengths, k)
        t = torch.arange(audio.shape[-1], device=text.device).view(1, 1, -1)
        q = torch.arange(c.n_q, device=text.device).view(1, -1, 1)
        used = (t < prompt_lengths.view(-1, 1, 1)) | (q < stage)  # what may be read
        audio = audio.masked_fill(~used, k)  # index k: a padding row, never a code
        summed = sum(self.nar_code_embed[q](audio[:, q]) for q in range(c.n_q))
        summed = _gather_rows(summed.transpose(1, 2), text_lengths, total, 0).transpose(1, 2)
        text_ids = F.pad(text, (0, max(0, total - text.shape[1])), value=c.pad_id)
        x = torch.where(is_text.unsqueeze(-1), s.text_embed(text_ids[:, :total]), summed)
        pos = torch.where(is_text.unsqueeze(-1), s.text_pos.table[position.clamp(
            max=c.max_text - 1)], s.audio_pos.table[position.clamp(max=c.max_frames)])
        x = x * s.scale + pos + self.stage_embed.weight[stage]
        hidden = s.run(x, padding_mask=~is_real)
        return self.nar_heads[stage - 1](hidden)

    # -- training ---------------------------------------------------------------------------
    def forward(self, batch: CodecBatch) -> VALLEOutput:
        """AR cross-entropy over the codebook-1 codes of prompt and target (each row is one
        continuous utterance pair, as VALL-E trains on whole utterances) and the end token,
        plus NAR cross-entropy of codebook ``batch.stage`` over the target frames."""
        b = batch
        k = self.config.codebook_size
        audio_lengths = b.prompt_lengths + b.target_lengths
        codes = _pack(b.prompt[:, 0], b.prompt_lengths, b.target[:, 0], b.target_lengths, k)
        logits = self.ar_logits(b.text, b.text_lengths, codes, audio_lengths)
        total = logits.shape[1]
        # position p predicts the token at p + 1: audio position a (0-based) comes from
        # p = Lt + a - 1; the end token from p = Lt + La - 1
        with_end = torch.cat([codes, codes.new_full((codes.shape[0], 1), k)], dim=-1)
        with_end = with_end.scatter(-1, audio_lengths.view(-1, 1), k)
        targets = _gather_rows(with_end, b.text_lengths - 1, total, IGNORE)
        real = torch.arange(total, device=b.text.device).view(1, -1) < (
            b.text_lengths + audio_lengths).view(-1, 1)
        targets = targets.masked_fill(~real, IGNORE)
        ar_loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE)
        ar_mask = targets != IGNORE
        ar_correct = int(((logits.argmax(-1) == targets) & ar_mask).sum())

        nar = self.nar_logits(b.text, b.text_lengths, b.prompt, b.prompt_lengths, b.target,
                              b.target_lengths, b.stage)
        nar_targets = _gather_rows(b.target[:, b.stage], b.text_lengths + b.prompt_lengths,
                                   nar.shape[1], IGNORE)
        in_target = torch.arange(nar.shape[1], device=b.text.device).view(1, -1) < (
            b.text_lengths + audio_lengths).view(-1, 1)
        nar_targets = nar_targets.masked_fill(~in_target, IGNORE)
        nar_loss = F.cross_entropy(nar.float().transpose(1, 2), nar_targets, ignore_index=IGNORE)
        nar_mask = nar_targets != IGNORE
        nar_correct = int(((nar.argmax(-1) == nar_targets) & nar_mask).sum())
        loss = ar_loss + nar_loss
        return VALLEOutput(loss, loss.detach(), ar_loss.detach(), nar_loss.detach(), ar_correct,
                           int(ar_mask.sum()), nar_correct, int(nar_mask.sum()),
                           int(ar_mask.sum()))

    # -- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, text: Tensor, prompt: Tensor, max_frames: int,
                 temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, min_frames: int = 1) -> Tensor:
        """Codes (n_q, T) of the speech continuing ``prompt`` (n_q, T_p) codes to say the end
        of ``text`` (Lt,) token ids (the prompt's transcript then the new text). The AR model
        samples codebook 1 (``temperature`` 0: greedy; ``top_k``) until the end token, at
        least ``min_frames`` and at most ``max_frames`` frames; the NAR then fills codebooks
        2..n_q greedily, one stage each."""
        from seqformer.decoding.sampling import make_processors, sample_next

        c = self.config
        if text.dim() != 1 or text.numel() < 1:
            raise ValueError(f"text must be (length >= 1,), got {tuple(text.shape)}")
        if prompt.dim() != 2 or prompt.shape[0] != c.n_q or prompt.shape[1] < 1:
            raise ValueError(f"prompt must be codes ({c.n_q}, frames >= 1), got "
                             f"{tuple(prompt.shape)}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        max_frames = min(max_frames, c.max_frames - prompt.shape[1])
        if max_frames < 1:
            raise ValueError(f"the prompt's {prompt.shape[1]} frames leave no room under "
                             f"model.max_frames={c.max_frames}; use a shorter prompt")
        processors = make_processors(temperature) if temperature > 0 else []
        if temperature > 0 and top_k:
            processors = make_processors(temperature, top_k)
        state = self.ar_start(text.view(1, -1), prompt[:1])
        out: list[int] = []
        history = prompt[:1].clone()
        while len(out) < max_frames:
            logits = state.logits
            if len(out) < min_frames:
                logits = logits.clone()
                logits[:, self.eos] = float("-inf")
            if temperature > 0:
                code = sample_next(logits, history, processors, generator)
            else:
                code = logits.argmax(-1)
            if int(code) == self.eos:
                break
            out.append(int(code))
            history = torch.cat([history, code.view(1, 1)], dim=1)
            if len(out) < max_frames:
                state = self.ar_step(code, state)
        return self.nar_fill(text, prompt, torch.tensor(out, dtype=torch.long,
                                                         device=text.device))

    @torch.inference_mode()
    def nar_fill(self, text: Tensor, prompt: Tensor, first: Tensor) -> Tensor:
        """Codes (n_q, T) from codebook 1 ``first`` (T,): each later codebook greedily from
        the NAR given those before it."""
        c = self.config
        frames = first.numel()
        codes = torch.zeros(c.n_q, frames, dtype=torch.long, device=text.device)
        if frames == 0:
            return codes
        codes[0] = first
        one = torch.ones(1, dtype=torch.long, device=text.device)
        for stage in range(1, c.n_q):
            logits = self.nar_logits(text.view(1, -1), one * text.numel(), prompt.unsqueeze(0),
                                     one * prompt.shape[1], codes.unsqueeze(0), one * frames,
                                     stage)
            start = text.numel() + prompt.shape[1]
            codes[stage] = logits[0, start:start + frames].argmax(-1)
        return codes
