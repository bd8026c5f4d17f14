"""A SpeechT5-shaped text-to-speech model (Ao et al., 2022), Hugging Face's
``SpeechT5ForTextToSpeech`` layout, so its checkpoints map one to one
(``interop/hf_speecht5.py``).

- text encoder: token embedding + scaled sinusoids (``models/speecht5_nets.py``), a LayerNorm,
  then post-LN layers whose self-attention adds relative position keys (SpeechT5's only
  position signal inside the encoder besides the prenet's sinusoids);
- speech decoder: the previous mel frame through the prenet (Linear + ReLU + always-on
  dropout, scaled sinusoids, optional speaker embedding), then the shared post-LN
  ``nn.layers.Decoder`` (causal self-attention, cross-attention, FFN; no final norm);
- postnet: ``reduction_factor`` mel frames and stop logits per decoder step, and a residual
  Conv1d + BatchNorm stack over the whole spectrogram.

The decoder runs once per ``reduction_factor`` frames and is fed the *last* frame of the
previous group (zeros at the start), as SpeechT5 does. :meth:`SpeechT5TTS.forward` builds those
inputs and the stop labels from ``mel_lengths`` itself, so a batch is just the padded targets;
the loss is HF's ``SpeechT5SpectrogramLoss``: L1 of the spectrogram before and after the
postnet on real frames, BCE (positive weight 5) of the stop logits on real frames with the stop
label on each utterance's last frame, and, when ``guided_attention_loss`` is on, the guided
attention loss (Tachibana et al., 2017) on the first heads of every cross-attention layer.

Generation (:meth:`SpeechT5TTS.generate`) is HF's ``generate_speech`` stop rule with two
differences that only make it per-utterance: the length limits come from each utterance's own
encoder length (HF uses the padded length of the batch), and the decoder keeps per-layer KV
caches (cross-attention keys/values projected once), so each step runs the prenet and decoder
on one frame instead of the whole prefix; utterances that have stopped leave the batch.
``tests/models/test_speecht5.py`` checks it against a full recompute,
``tests/interop/test_hf_speecht5.py`` against HF.

Departures from HF: the prenet dropout keeps units with probability ``1 - p`` (HF keeps them
with probability ``p``, the same at SpeechT5's p = 0.5; see ``consistent_dropout``), and it can
draw from a ``torch.Generator`` so an inference is repeatable. In a padded training batch
every postnet convolution reads zeros after each utterance's last decoder step, as at the end
of that utterance alone (HF's reads the predictions at the padded steps), so an utterance
gives the same outputs and loss terms alone or batched -- and the same as HF's forward on it
alone; HF's batched forward differs from both only on the last few frames of its shorter
utterances. In training the postnet's BatchNorms take their statistics (and running
averages) from real frames only (HF's include the padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.data.device import to_device
from seqformer.errors import ConfigError
from seqformer.models.common import SavedModel, check_block_fields
from seqformer.models.seq2seq import BOS_ID, EOS_ID, PAD_ID
from seqformer.models.speecht5_nets import (
    RelativeEncoder,
    ScaledPositions,
    SpeechDecoderPostnet,
    SpeechDecoderPrenet,
)
from seqformer.nn.attention import KVCache
from seqformer.nn.layers import Decoder, LayerCache

FAMILY = "speecht5-tts"
STOP_POS_WEIGHT = 5.0  # SpeechT5SpectrogramLoss: one stop frame per utterance against many


@dataclass(frozen=True)
class SpeechT5TTSConfig:
    """Shape of the model. ``vocab_size`` comes from the tokenizer; ``pad_id`` / ``bos_id`` /
    ``eos_id`` are seqformer's 0/1/2 for trained models, the checkpoint's own for imported ones
    (microsoft/speecht5_tts: pad 1, bos 0, eos 2). microsoft/speecht5_tts is d_model 768, 12
    heads, 12 + 6 layers, ffn 3072, speaker_embedding_dim 512 (x-vectors).

    ``dropout`` is HF's hidden_dropout (residual branches, encoder input, FFN output);
    ``activation_dropout`` sits inside the FFN; ``positional_dropout`` after the scaled
    sinusoids of both prenets. ``prenet_dropout`` is the always-on decoder prenet dropout.
    ``max_speech_positions`` bounds decoder *steps* (frames / reduction_factor)."""

    vocab_size: int = 0
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    d_model: int = 256
    heads: int = 4
    ffn_dim: int = 1024
    encoder_layers: int = 4
    decoder_layers: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    positional_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5
    encoder_max_relative_position: int = 160
    max_text_positions: int = 450
    max_speech_positions: int = 4000
    num_mel_bins: int = 80
    reduction_factor: int = 2
    prenet_layers: int = 2
    prenet_units: int = 256
    prenet_dropout: float = 0.5
    speaker_embedding_dim: int = 0
    postnet_layers: int = 5
    postnet_units: int = 256
    postnet_kernel: int = 5
    postnet_dropout: float = 0.5
    guided_attention_loss: bool = True
    guided_attention_heads: int = 2
    guided_attention_sigma: float = 0.4
    guided_attention_scale: float = 10.0

    def __post_init__(self) -> None:
        for name in ("encoder_layers", "decoder_layers", "encoder_max_relative_position",
                     "max_text_positions", "max_speech_positions", "num_mel_bins",
                     "reduction_factor", "prenet_layers", "prenet_units", "postnet_layers",
                     "postnet_units", "postnet_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.postnet_layers < 2:
            raise ConfigError("model.postnet_layers must be >= 2 (mels -> units -> mels)")
        if self.postnet_kernel % 2 == 0:
            raise ConfigError(f"model.postnet_kernel={self.postnet_kernel} must be odd (a "
                              "centred window keeps the length)")
        if self.speaker_embedding_dim < 0:
            raise ConfigError("model.speaker_embedding_dim must be >= 0 (0: no speakers)")
        for name in ("activation_dropout", "positional_dropout", "prenet_dropout",
                     "postnet_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1)")
        if not 1 <= self.guided_attention_heads <= self.heads:
            raise ConfigError(f"model.guided_attention_heads must be in 1..heads={self.heads}")
        check_block_fields(self)
        if self.d_model % 2:
            raise ConfigError(f"model.d_model={self.d_model} must be even (sinusoidal "
                              "positions pair sines and cosines)")

    # What check_block_fields reads; derived, so not in config.json.
    @property
    def layers(self) -> int:
        return min(self.encoder_layers, self.decoder_layers)

    @property
    def max_len(self) -> int:
        return self.max_text_positions

    @property
    def positional(self) -> str:
        return "sinusoidal"


@dataclass
class TTSBatch:
    """``input_ids`` (batch, src) padded with the model's pad id; ``mel`` (batch, frames,
    num_mel_bins) targets, anything after ``mel_lengths`` (batch,) frames is ignored;
    ``speaker`` (batch, speaker_embedding_dim) or None."""

    input_ids: Tensor
    mel: Tensor
    mel_lengths: Tensor
    speaker: Tensor | None = None
    count_unit: ClassVar[str] = "frames"  # what n_tgt_tokens counts (not a field: shards)

    def to(self, device: torch.device | str) -> TTSBatch:
        return TTSBatch(to_device(self.input_ids, device), to_device(self.mel, device),
                        to_device(self.mel_lengths, device), to_device(self.speaker, device))

    @property
    def n_tgt_tokens(self) -> int:
        """Real target frames: what the trainer reports per second and weights shards by."""
        return int(self.mel_lengths.sum())

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class TTSOutput:
    loss: Tensor  # l1 + bce (+ attention): what the optimizer sees
    l1: Tensor  # L1 before the postnet + L1 after it, means over real (frame, bin) entries
    bce: Tensor  # stop BCE (pos_weight 5), mean over real frames
    attention: Tensor | None  # guided attention loss (scaled), when the config has it on
    mel_before: Tensor  # (batch, frames rounded up to reduction_factor, num_mel_bins)
    mel_after: Tensor
    stop_logits: Tensor  # (batch, frames rounded up)
    n_frames: int  # real frames in the batch

    @property
    def n_tokens(self) -> int:
        return self.n_frames


@dataclass
class Synthesis:
    """One generated utterance: the spectrogram after and before the postnet (frames,
    num_mel_bins) and the stop probability summed over each step's frames (steps,)."""

    mel: Tensor
    mel_before: Tensor
    stop_probs: Tensor


@dataclass
class TTSState:
    """What generation carries between steps: the encoder output, its padding mask and one
    cache per decoder layer (cross-attention keys/values filled once by :meth:`start`)."""

    memory: Tensor
    memory_padding_mask: Tensor | None
    caches: list[LayerCache]
    step: int = 0

    def select(self, indices: Tensor) -> TTSState:
        """The rows ``indices`` (finished utterances leave the batch during generation)."""
        mask = self.memory_padding_mask
        return TTSState(self.memory.index_select(0, indices),
                        None if mask is None else mask.index_select(0, indices),
                        [cache.select(indices) for cache in self.caches], self.step)


class SpeechT5TTS(nn.Module, SavedModel):
    """Text ids -> mel spectrogram (see the module docstring). Saved with ``family:
    speecht5-tts``; config.json's ``features`` block (the mel settings a vocoder must match)
    is written by the task and ignored here."""

    family = FAMILY
    description = "a SpeechT5 text-to-speech model"
    config_class = SpeechT5TTSConfig
    settings_key = "features"

    def __init__(self, config: SpeechT5TTSConfig) -> None:
        super().__init__()
        c = self.config = config
        if c.vocab_size <= max(c.pad_id, c.bos_id, c.eos_id):
            raise ConfigError("SpeechT5TTSConfig needs vocab_size from the tokenizer (larger "
                              "than every special id)")
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.text_positions = ScaledPositions(c.d_model, c.max_text_positions,
                                              c.positional_dropout)
        self.encoder = RelativeEncoder(c.encoder_layers, c.d_model, c.heads, c.ffn_dim,
                                       c.encoder_max_relative_position, c.dropout,
                                       c.attention_dropout, c.activation_dropout, c.activation,
                                       c.layer_norm_eps)
        self.prenet = SpeechDecoderPrenet(c.num_mel_bins, c.prenet_layers, c.prenet_units,
                                          c.prenet_dropout, c.d_model, c.max_speech_positions,
                                          c.positional_dropout, c.speaker_embedding_dim)
        self.decoder = Decoder(c.decoder_layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                               c.attention_dropout, c.activation, norm_first=False)
        for layer in self.decoder.layers:
            layer.ffn.dropout = nn.Dropout(c.activation_dropout)
        self.postnet = SpeechDecoderPostnet(c.d_model, c.num_mel_bins, c.reduction_factor,
                                            c.postnet_layers, c.postnet_units, c.postnet_kernel,
                                            c.postnet_dropout)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = c.layer_norm_eps
        self._init_weights()
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id

    def _init_weights(self) -> None:
        """SpeechT5's init: N(0, 0.02) Linear and Embedding weights (pad row zero), zero
        biases, Kaiming-normal convolutions; modules in a fixed order, so seed -> model."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight)

    # -- encoder --------------------------------------------------------------------------------
    def encode(self, input_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        """``input_ids`` (batch, src) padded with ``pad_id`` -> memory (batch, src, d_model)
        and its padding mask (True at padding; None when nothing is padded)."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids (batch, src), got {tuple(input_ids.shape)}")
        mask = input_ids.eq(self.pad_id)
        if bool(mask.all(dim=1).any()):
            raise ValueError("an input has no tokens (every id is pad_id); give each text at "
                             "least one token")
        mask = mask if bool(mask.any()) else None
        x = self.text_positions(self.embed_tokens(input_ids))
        return self.encoder(x, mask), mask

    # -- teacher-forced decoder -----------------------------------------------------------------
    def decoder_inputs(self, mel: Tensor, mel_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's inputs (batch, steps, num_mel_bins): the last frame of each previous
        group of ``reduction_factor`` frames, zeros first and at padding (HF's
        ``shift_spectrograms_right``); and the real-frame mask (batch, steps * r) of ``mel``
        padded up to a whole number of steps."""
        r = self.config.reduction_factor
        frames = mel.shape[1]
        steps = -(-frames // r)
        if steps * r != frames:
            mel = F.pad(mel, (0, 0, 0, steps * r - frames))
        real = torch.arange(steps * r, device=mel.device)[None, :] < mel_lengths[:, None]
        mel = mel.masked_fill(~real[:, :, None], 0.0)
        last = mel[:, r - 1:: r]
        return F.pad(last[:, :-1], (0, 0, 1, 0)), real

    def decode(self, frames: Tensor, memory: Tensor, memory_padding_mask: Tensor | None,
               speaker: Tensor | None = None, generator: torch.Generator | None = None,
               need_weights: bool = False, steps: Tensor | None = None
               ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """All steps at once from the decoder inputs ``frames`` (batch, steps, num_mel_bins)
        -> (mel before the postnet, mel after it, stop logits, cross-attention weights of each
        layer when ``need_weights``).

        ``steps`` (batch,) counts each utterance's real decoder steps: every postnet
        convolution then reads zeros after them, as after a generated utterance, never the
        predictions at padded steps (HF's forward reads those, so there a padded item differs
        from the same item alone)."""
        x = self.prenet(frames, speaker, 0, generator)
        h, weights = self.decoder(x, memory, memory_padding_mask, need_weights=need_weights)
        before, stop = self.postnet.frames(h), self.postnet.stop_logits(h)
        padding = None
        if steps is not None:
            r = self.config.reduction_factor
            frame_steps = torch.arange(before.shape[1], device=before.device) // r
            padding = frame_steps[None, :] >= steps[:, None]
        after = self.postnet.refine(before, padding)
        return before, after, stop, [w[1] for w in weights] if need_weights else []

    def forward(self, batch: TTSBatch) -> TTSOutput:
        c = self.config
        memory, mask = self.encode(batch.input_ids)
        inputs, real = self.decoder_inputs(batch.mel, batch.mel_lengths)
        guided = c.guided_attention_loss  # HF adds it to every loss with labels, eval too
        steps = -(-batch.mel_lengths // c.reduction_factor)
        before, after, stop, cross = self.decode(inputs, memory, mask, batch.speaker,
                                                 need_weights=guided, steps=steps)
        target = F.pad(batch.mel, (0, 0, 0, real.shape[1] - batch.mel.shape[1]))
        l1, bce, n_frames = spectrogram_loss(before.float(), after.float(), stop.float(),
                                             target.float(), real)
        loss = l1 + bce
        attention = None
        if guided:
            memory_real = batch.input_ids.ne(self.pad_id)
            attention = self.guided_attention(cross, memory_real, real)
            loss = loss + attention
        return TTSOutput(loss, l1, bce, attention, before, after, stop, n_frames)

    def guided_attention(self, cross: list[Tensor], memory_real: Tensor, real: Tensor
                         ) -> Tensor:
        """Tachibana et al.'s penalty on attention far from the diagonal, on the first
        ``guided_attention_heads`` heads of every layer (HF's SpeechT5 version: a step is real
        when its last frame is, positions normalised by each utterance's lengths)."""
        c = self.config
        attn = torch.cat([w[:, : c.guided_attention_heads] for w in cross], dim=1).float()
        step_real = real[:, c.reduction_factor - 1:: c.reduction_factor]
        out_len = step_real.sum(-1).clamp(min=1).float()
        in_len = memory_real.sum(-1).clamp(min=1).float()
        t = torch.arange(step_real.shape[1], device=attn.device)[None, :] / out_len[:, None]
        s = torch.arange(memory_real.shape[1], device=attn.device)[None, :] / in_len[:, None]
        weight = 1.0 - torch.exp(-(s[:, None, :] - t[:, :, None]) ** 2
                                 / (2 * c.guided_attention_sigma ** 2))
        both = step_real[:, :, None] & memory_real[:, None, :]
        weight = weight.masked_fill(~both, 0.0)
        mask = both[:, None].expand_as(attn)
        return c.guided_attention_scale * (weight[:, None] * attn).masked_select(mask).mean()

    # -- generation -----------------------------------------------------------------------------
    def start(self, input_ids: Tensor) -> TTSState:
        """Encode once and project every cross-attention's keys/values once."""
        memory, mask = self.encode(input_ids)
        caches = []
        for layer in self.decoder.layers:
            key, value = layer.cross_attn.project_kv(memory)
            caches.append(LayerCache(KVCache(), KVCache(key, value, static=True)))
        return TTSState(memory, mask, caches)

    def step(self, frame: Tensor, state: TTSState, speaker: Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, TTSState]:
        """One decoder step from the previous frame (batch, num_mel_bins) -> the next
        ``reduction_factor`` frames (batch, r, num_mel_bins) before the postnet and their stop
        logits (batch, r). Only the new position is computed; the prefix lives in the caches."""
        x = self.prenet(frame[:, None], speaker, state.step, generator)
        h, _ = self.decoder(x, state.memory, state.memory_padding_mask, state.caches)
        state.step += 1
        return self.postnet.frames(h), self.postnet.stop_logits(h), state

    @torch.no_grad()
    def synthesize(self, input_ids: Tensor, speaker: Tensor | None = None,
                   threshold: float = 0.5, min_len_ratio: float = 0.0,
                   max_len_ratio: float = 20.0, max_frames: int | None = None,
                   generator: torch.Generator | None = None) -> list[Synthesis]:
        """:meth:`generate` with the pre-postnet frames and stop probabilities kept."""
        c, r = self.config, self.config.reduction_factor
        batch = input_ids.shape[0]
        if speaker is not None and speaker.shape[0] == 1 and batch > 1:
            speaker = speaker.expand(batch, -1)
        state = self.start(input_ids)
        lengths = input_ids.ne(self.pad_id).sum(-1).tolist()
        max_steps = [int(n * max_len_ratio / r) for n in lengths]
        min_steps = [int(n * min_len_ratio / r) for n in lengths]
        cap = c.max_speech_positions
        if max_frames is not None:
            cap = min(cap, max(1, max_frames // r))
        frame = state.memory.new_zeros(batch, c.num_mel_bins)
        frames_of: list[list[Tensor]] = [[] for _ in range(batch)]
        probs_of: list[list[Tensor]] = [[] for _ in range(batch)]
        active = list(range(batch))  # the utterance of each row still generating
        step = 0
        while active:
            step += 1
            frames, stop, state = self.step(frame, state, speaker, generator)
            probs = torch.sigmoid(stop).sum(-1)
            met = probs.ge(threshold).tolist()
            keep = []
            for row, i in enumerate(active):
                frames_of[i].append(frames[row])
                probs_of[i].append(probs[row])
                # HF's order: nothing stops before min_steps, even past max_steps; the
                # position table (cap) ends generation regardless.
                if not (step >= cap or (step >= min_steps[i] and (
                        met[row] or step >= max_steps[i]))):
                    keep.append(row)
            if len(keep) < len(active) and keep:
                # Finished utterances leave the batch: no decoder work on them from here.
                index = torch.tensor(keep, device=frames.device)
                state = state.select(index)
                speaker = None if speaker is None else speaker.index_select(0, index)
                frames = frames.index_select(0, index)
            active = [active[row] for row in keep]
            frame = frames[:, -1]
        out = []
        for i in range(batch):
            before = torch.cat(frames_of[i])
            out.append(Synthesis(self.postnet.refine(before[None])[0], before,
                                 torch.stack(probs_of[i])))
        return out

    @torch.no_grad()
    def generate(self, input_ids: Tensor, speaker: Tensor | None = None,
                 threshold: float = 0.5, min_len_ratio: float = 0.0,
                 max_len_ratio: float = 20.0, max_frames: int | None = None,
                 generator: torch.Generator | None = None) -> list[Tensor]:
        """One (frames, num_mel_bins) post-net spectrogram per row of ``input_ids`` (padded
        with ``pad_id``). An utterance stops at the first step whose stop probabilities,
        summed over its ``reduction_factor`` frames, reach ``threshold``, but not before
        ``int(n * min_len_ratio / r)`` steps and at the latest after ``int(n * max_len_ratio /
        r)`` (n: its token count), ``max_frames // r`` and ``max_speech_positions``. The prenet
        dropout stays on (pass ``generator`` to repeat a result); ``speaker`` is (batch or 1,
        speaker_embedding_dim)."""
        return [s.mel for s in self.synthesize(input_ids, speaker, threshold, min_len_ratio,
                                               max_len_ratio, max_frames, generator)]


def spectrogram_loss(before: Tensor, after: Tensor, stop_logits: Tensor, target: Tensor,
                     real: Tensor) -> tuple[Tensor, Tensor, int]:
    """HF's SpeechT5SpectrogramLoss without the attention term: (L1 before + L1 after, stop
    BCE, real frame count). ``real`` (batch, frames) marks real frames; the stop label is 1 on
    each utterance's last real frame."""
    n_frames = int(real.sum())
    weight = real[:, :, None].to(before.dtype)
    entries = n_frames * before.shape[-1]
    l1 = (((after - target).abs() * weight).sum() + ((before - target).abs() * weight).sum())
    l1 = l1 / max(entries, 1)
    next_real = F.pad(real[:, 1:], (0, 1), value=False)
    labels = (real & ~next_real).to(stop_logits.dtype)
    bce = F.binary_cross_entropy_with_logits(
        stop_logits[real], labels[real],
        pos_weight=torch.tensor(STOP_POS_WEIGHT, device=stop_logits.device))
    return l1, bce, n_frames


def load_speecht5(directory: str | Path, map_location: str = "cpu") -> SpeechT5TTS:
    """A saved model directory (``SpeechT5TTS.save``) with ``family: speecht5-tts``."""
    return SpeechT5TTS.load(directory, map_location)
