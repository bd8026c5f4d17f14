"""EnCodec (Défossez et al. 2022): a neural audio codec, waveform <-> discrete codes.

A SEANet convolutional encoder (``models/encodec_seanet.py``) turns a waveform into one latent
vector per ``hop = prod(upsampling_ratios)`` samples; a residual vector quantizer
(``nn/rvq.py``) codes each latent frame as ``n_q`` integers, one per codebook, each codebook
refining what the previous ones left; the mirrored decoder turns the summed codewords back into
a waveform. The bitrate is frames/s x n_q x log2(codebook_size): the 24 kHz model (75 frames/s,
1024-entry codebooks) gives 1.5 / 3 / 6 / 12 / 24 kbps with 2 / 4 / 8 / 16 / 32 codebooks.
VALL-E models the codes of the 6 kbps setting.

API (B = batch, C = audio_channels):

- :meth:`Encodec.encode` ``(wave (B, C, samples), bandwidth=None) -> EncodedAudio(codes (B, n_q,
  frames) long, scale (B, chunks) or None)``; ``bandwidth`` must be one of
  ``target_bandwidths`` (None: the smallest, as Hugging Face does); frames = ceil(samples /
  hop) for an unchunked model;
- :meth:`Encodec.decode` ``(codes, scale=None, length=None) -> wave (B, C, samples')``, cut to
  ``length`` samples when given (the encoder pads the input up to whole frames, so samples' =
  frames x hop for an unchunked model);
- :meth:`Encodec.forward` ``(wave, bandwidth=None) -> EncodecOutput`` for training: the
  reconstruction, the codes, and the losses -- time-domain L1, multi-scale mel L1 + L2
  (:func:`mel_reconstruction_loss`) and the RVQ commitment loss, weighted by the config. In
  training a bandwidth is drawn per batch from ``target_bandwidths`` when none is given (the
  paper's quantizer dropout), so one model learns every bitrate. The paper's adversarial and
  feature-matching losses (multi-scale STFT discriminator) and its loss balancer are *not*
  included: the model trains as a plain auto-encoder, which reconstructs but sounds duller.

The 48 kHz model's two settings. ``normalize`` divides the input by its RMS (over channels and
time, + 1e-8) before encoding and returns that scale with the codes; decoding multiplies it
back. ``chunk_length_s`` / ``overlap`` encode the waveform in windows of ``chunk_length``
samples every ``chunk_stride`` samples, each coded (and normalised: one scale per chunk) on its
own, and decoding cross-fades the decoded windows linearly where they overlap (HF's
``_linear_overlap_add``). The codes stay one sequence: the chunks' codes concatenated in time,
every chunk ``chunk_frames`` frames but the last, which has what is left (HF pads it and
returns ``last_frame_pad_length`` instead); :meth:`Encodec.decode` splits them again. Training
(:meth:`Encodec.forward`) codes its segments whole: chunking is an inference device for long
signals, and training segments are chunk-sized anyway (1 s in the paper).

Inference equals Hugging Face's ``EncodecModel`` (``interop/hf_encodec.py``; same codes, audio
within float rounding), with the state-dict names of the encoder and decoder unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.errors import ConfigError
from seqformer.models.common import SavedModel
from seqformer.models.encodec_seanet import SEANetDecoder, SEANetEncoder
from seqformer.nn.rvq import ResidualVectorQuantizer, codebooks_for_bandwidth

FAMILY = "encodec"
NORM_TYPES = ("weight_norm", "time_group_norm")
PAD_MODES = ("reflect", "constant", "replicate", "circular")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class EncodecConfig:
    """Hugging Face ``EncodecConfig``'s fields (same names and meaning; ``hidden_size`` is the
    latent width, which the codebooks share) and the training settings HF lacks. The
    defaults are a small CPU-sized 24 kHz model (HF's 24 kHz model: num_filters 32, hidden_size
    128, ratios 8, 5, 4, 2, codebook_size 1024, bandwidths 1.5 ... 24).

    Training: ``ema_decay``, ``ema_epsilon`` (Laplace smoothing), ``kmeans_init`` /
    ``kmeans_iters``, ``dead_code_threshold`` (the codebooks, ``nn/rvq.py``); the loss weights
    ``time_weight`` (L1 on samples; the paper's lambda_t 0.1), ``mel_weight`` (lambda_f 1),
    ``commitment_weight`` (lambda_w 1); the mel loss's ``mel_scales`` (windows of 2^i samples,
    hop 2^i / 4; the paper uses i = 5..11) and ``n_mels``."""

    audio_channels: int = 1
    sampling_rate: int = 24000
    num_filters: int = 8
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    hidden_size: int = 32
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    norm_type: str = "weight_norm"
    use_conv_shortcut: bool = True
    codebook_size: int = 1024
    codebook_dim: int | None = None
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    normalize: bool = False
    chunk_length_s: float | None = None
    overlap: float | None = None
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 50
    dead_code_threshold: float = 2.0
    time_weight: float = 0.1
    mel_weight: float = 1.0
    commitment_weight: float = 1.0
    mel_scales: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11)
    n_mels: int = 64

    def __post_init__(self) -> None:
        self._check_shape()
        self._check_codec()
        self._check_training()

    def _check_shape(self) -> None:
        for name in ("audio_channels", "sampling_rate", "num_filters", "num_residual_layers",
                     "hidden_size", "kernel_size", "last_kernel_size", "residual_kernel_size",
                     "dilation_growth_rate", "compress", "num_lstm_layers", "codebook_size",
                     "kmeans_iters", "n_mels"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"model.{name} must be a positive integer, got "
                                  f"{getattr(self, name)!r}")
        if self.audio_channels > 2:
            raise ConfigError(f"model.audio_channels must be 1 or 2, got {self.audio_channels}")
        if not self.upsampling_ratios or not all(_positive_int(r)
                                                 for r in self.upsampling_ratios):
            raise ConfigError(f"model.upsampling_ratios must be positive integers, got "
                              f"{list(self.upsampling_ratios)}")
        if self.num_filters % self.compress:
            raise ConfigError(f"model.num_filters={self.num_filters} must be a multiple of "
                              f"model.compress={self.compress} (the residual branch width)")
        if self.norm_type not in NORM_TYPES:
            raise ConfigError(f"model.norm_type={self.norm_type!r}; use one of "
                              f"{', '.join(NORM_TYPES)}")
        if self.pad_mode not in PAD_MODES:
            raise ConfigError(f"model.pad_mode={self.pad_mode!r}; use one of "
                              f"{', '.join(PAD_MODES)}")
        if not 0.0 <= self.trim_right_ratio <= 1.0 or (
                not self.use_causal_conv and self.trim_right_ratio != 1.0):
            raise ConfigError(f"model.trim_right_ratio={self.trim_right_ratio} must be in "
                              "[0, 1], and 1 unless model.use_causal_conv")

    def _check_codec(self) -> None:
        if self.codebook_size & (self.codebook_size - 1):
            raise ConfigError(f"model.codebook_size={self.codebook_size} must be a power of 2 "
                              "(a code is a whole number of bits)")
        if self.codebook_dim is not None and self.codebook_dim != self.hidden_size:
            raise ConfigError(f"model.codebook_dim={self.codebook_dim} must equal "
                              f"model.hidden_size={self.hidden_size} (the codebooks quantize the "
                              "latent directly) or be null")
        bands = self.target_bandwidths
        if not bands or any(not b > 0 for b in bands) or list(bands) != sorted(bands):
            raise ConfigError(f"model.target_bandwidths must be increasing positive kbps, got "
                              f"{list(bands)}")
        if self.num_quantizers < 1:
            raise ConfigError(f"model.target_bandwidths: {bands[-1]} kbps is less than one "
                              f"codebook costs ({self.bandwidth_per_codebook} kbps at "
                              f"{self.frame_rate} frames/s); raise it")
        if self.chunk_length_s is None:
            return
        if not self.chunk_length_s > 0 or self.overlap is None or not 0 <= self.overlap < 1:
            raise ConfigError(f"model.chunk_length_s={self.chunk_length_s} needs "
                              f"chunk_length_s > 0 and model.overlap in [0, 1), got overlap="
                              f"{self.overlap}")
        if self.chunk_length < 1:
            raise ConfigError(f"model.chunk_length_s={self.chunk_length_s} is less than one "
                              f"sample at {self.sampling_rate} Hz")

    def _check_training(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0 or not self.ema_epsilon > 0:
            raise ConfigError("model.ema_decay must be in [0, 1) and model.ema_epsilon > 0")
        for name in ("dead_code_threshold", "time_weight", "mel_weight", "commitment_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if not self.mel_scales or not all(_positive_int(s) and s >= 2 for s in self.mel_scales):
            raise ConfigError(f"model.mel_scales must be integers >= 2 (windows of 2^i "
                              f"samples), got {list(self.mel_scales)}")

    @property
    def hop_length(self) -> int:
        """Samples per latent frame."""
        return math.prod(self.upsampling_ratios)

    @property
    def chunk_length(self) -> int | None:
        """Samples per chunk (None: unchunked); HF's arithmetic, so the same count."""
        if self.chunk_length_s is None:
            return None
        return int(self.chunk_length_s * self.sampling_rate)

    @property
    def chunk_stride(self) -> int | None:
        """Samples between chunk starts (None: unchunked)."""
        if self.chunk_length is None or self.overlap is None:
            return None
        return max(1, int((1.0 - self.overlap) * self.chunk_length))

    @property
    def chunk_frames(self) -> int | None:
        """Frames of a whole chunk (None: unchunked)."""
        return None if self.chunk_length is None else math.ceil(self.chunk_length
                                                                 / self.hop_length)

    @property
    def frame_rate(self) -> int:
        """Frames per second, rounded up (HF's rule, used for the bitrate)."""
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def bandwidth_per_codebook(self) -> float:
        """kbps one codebook costs."""
        return self.frame_rate * math.log2(self.codebook_size) / 1000

    @property
    def num_quantizers(self) -> int:
        """Codebooks: as many as the largest target bandwidth pays for (HF's rule)."""
        bits = self.frame_rate * math.ceil(math.log2(self.codebook_size))
        return int(1000 * self.target_bandwidths[-1] // bits)

    def codebooks_for(self, bandwidth: float) -> int:
        """Codebooks used at ``bandwidth`` kbps."""
        return codebooks_for_bandwidth(bandwidth, self.frame_rate, self.codebook_size,
                                       self.num_quantizers)


@dataclass
class EncodedAudio:
    """``codes`` (B, n_q, frames) long; ``scale`` (B, chunks) -- (B, 1) unchunked -- when the
    model normalises its input (pass it back to :meth:`Encodec.decode`), else None."""

    codes: Tensor
    scale: Tensor | None = None


@dataclass
class EncodecOutput:
    """What :meth:`Encodec.forward` returns: the reconstruction (B, C, samples), the codes and
    the losses (``loss`` is their weighted sum)."""

    audio: Tensor
    codes: Tensor
    loss: Tensor
    time_loss: Tensor
    mel_loss: Tensor
    commitment_loss: Tensor


class MelSpectrogram(nn.Module):
    """Log mel spectrogram at one scale, as audiocraft's EnCodec loss computes it: magnitude of
    the normalised STFT (Hann window of ``n_fft`` samples, hop n_fft / 4, centred), Slaney mel
    filters up to Nyquist (``data/logmel.py``'s), log10 with a floor of 1e-5 -- the log weighs
    quiet and loud bands alike, where raw magnitudes let the loudest partial dominate."""

    def __init__(self, n_fft: int, n_mels: int, sample_rate: int) -> None:
        super().__init__()
        from seqformer.data.logmel import mel_filters

        self.n_fft, self.hop = n_fft, max(1, n_fft // 4)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filters(n_mels, n_fft, sample_rate, 0.0,
                                                    sample_rate / 2).float(), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        """(N, samples) -> (N, frames, n_mels)."""
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode="constant", normalized=True, return_complex=True)
        return torch.log10(spec.abs().transpose(1, 2) @ self.filters + 1e-5)


def mel_reconstruction_loss(pred: Tensor, target: Tensor, mels: nn.ModuleList) -> Tensor:
    """EnCodec's frequency-domain loss: over the (log) mel scales, mean |S(pred) - S(target)|
    plus mean squared difference, averaged over scales; a scale whose window exceeds the
    signal is skipped (it would be mostly padding)."""
    pred, target = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    losses = []
    for mel in mels:
        if mel.n_fft <= pred.shape[-1]:
            a, b = mel(pred), mel(target)
            losses.append(F.l1_loss(a, b) + F.mse_loss(a, b))
    return torch.stack(losses).mean() if losses else pred.new_zeros(())


def linear_overlap_add(frames: list[Tensor], stride: int) -> Tensor:
    """Decoded chunks (..., length_i) starting every ``stride`` samples -> one signal: each
    chunk weighted by a triangle peaking at its centre, the sum divided by the summed weights,
    so a lone chunk passes unchanged and two overlapping ones cross-fade linearly (EnCodec's
    and HF's ``_linear_overlap_add``)."""
    length = frames[0].shape[-1]
    total = stride * (len(frames) - 1) + frames[-1].shape[-1]
    ramp = torch.linspace(0, 1, length + 2, device=frames[0].device,
                          dtype=frames[0].dtype)[1:-1]
    weight = 0.5 - (ramp - 0.5).abs()
    out = frames[0].new_zeros(*frames[0].shape[:-1], total)
    weights = frames[0].new_zeros(total)
    for i, frame in enumerate(frames):
        span = frame.shape[-1]
        out[..., i * stride:i * stride + span] += weight[:span] * frame
        weights[i * stride:i * stride + span] += weight[:span]
    return out / weights


class Encodec(SavedModel, nn.Module):
    """SEANet encoder -> RVQ -> SEANet decoder; see the module docstring."""

    family: ClassVar[str] = FAMILY
    description: ClassVar[str] = "an EnCodec audio codec"
    config_class: ClassVar[type] = EncodecConfig
    settings_key: ClassVar[str] = "audio"

    def __init__(self, config: EncodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config)
        self.decoder = SEANetDecoder(config)
        self.quantizer = ResidualVectorQuantizer(
            config.hidden_size, config.codebook_size, config.num_quantizers, config.ema_decay,
            config.ema_epsilon, config.kmeans_init, config.kmeans_iters,
            config.dead_code_threshold)
        self.mels = nn.ModuleList(MelSpectrogram(2 ** s, config.n_mels, config.sampling_rate)
                                  for s in config.mel_scales)

    def _check_wave(self, wave: Tensor) -> None:
        if wave.dim() != 3 or wave.shape[1] != self.config.audio_channels:
            raise ValueError(f"expected a waveform (batch, {self.config.audio_channels}, "
                             f"samples), got shape {tuple(wave.shape)}")

    def n_q(self, bandwidth: float | None) -> int:
        """Codebooks used at ``bandwidth`` kbps, one of ``target_bandwidths`` (None: the
        smallest); another value is a ConfigError."""
        bands = self.config.target_bandwidths
        if bandwidth is None:
            bandwidth = bands[0]
        if bandwidth not in bands:
            raise ConfigError(f"bandwidth {bandwidth} kbps: this model codes at "
                              f"{', '.join(str(b) for b in bands)} kbps")
        return self.config.codebooks_for(bandwidth)

    def _normalise(self, wave: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.config.normalize:
            return wave, None
        mono = wave.sum(1, keepdim=True) / wave.shape[1]
        scale = mono.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8
        return wave / scale, scale.view(-1, 1)

    def embed(self, wave: Tensor) -> Tensor:
        """The encoder's latent (B, hidden_size, frames) of an (already normalised) wave."""
        self._check_wave(wave)
        return self.encoder(wave)

    @torch.no_grad()
    def encode(self, wave: Tensor, bandwidth: float | None = None) -> EncodedAudio:
        """(B, C, samples) -> codes (B, n_q, frames) and the input's scale (one per chunk).
        Without autograd: codes are integers, nothing flows back through them (training goes
        through :meth:`forward`), and encoding a corpus should not hold activations."""
        n_q = self.n_q(bandwidth)
        self._check_wave(wave)
        samples = wave.shape[-1]
        if samples < 1:
            raise ValueError("cannot encode a waveform of 0 samples")
        window = self.config.chunk_length or samples
        codes, scales = [], []
        for start in range(0, samples, self.config.chunk_stride or samples):
            normalised, scale = self._normalise(wave[..., start:start + window])
            codes.append(self.quantizer.encode(self.encoder(normalised), n_q))
            scales.append(scale)
        scale = None if scales[0] is None else torch.cat(scales, dim=1)
        return EncodedAudio(torch.cat(codes, dim=-1), scale)

    def _decode_chunk(self, codes: Tensor, scale: Tensor | None) -> Tensor:
        wave = self.decoder(self.quantizer.decode(codes))
        return wave if scale is None else wave * scale.reshape(-1, 1, 1)

    def decode(self, codes: Tensor, scale: Tensor | None = None,
               length: int | None = None) -> Tensor:
        """(B, n_q, frames) codes (and the scales :meth:`encode` gave) -> (B, C, samples),
        cut to ``length`` samples."""
        if (codes.dim() != 3 or not 1 <= codes.shape[1] <= self.config.num_quantizers
                or codes.shape[-1] < 1):
            raise ValueError(f"expected codes (batch, n_q <= {self.config.num_quantizers}, "
                             f"frames), got shape {tuple(codes.shape)}")
        chunks = codes.split(self.config.chunk_frames or codes.shape[-1], dim=-1)
        if scale is not None and scale.shape != (codes.shape[0], len(chunks)):
            raise ValueError(f"expected scale (batch, chunks) = {(codes.shape[0], len(chunks))}"
                             f" for these codes, got {tuple(scale.shape)}")
        waves = [self._decode_chunk(chunk, None if scale is None else scale[:, i])
                 for i, chunk in enumerate(chunks)]
        wave = waves[0] if len(waves) == 1 else linear_overlap_add(waves,
                                                                   self.config.chunk_stride)
        return wave if length is None else wave[..., :length]

    def forward(self, wave: Tensor, bandwidth: float | None = None) -> EncodecOutput:
        """Encode, quantize (straight-through in training), decode and score the
        reconstruction; see the module docstring for the losses and the bandwidth draw."""
        self._check_wave(wave)
        if bandwidth is None and self.training:
            bands = self.config.target_bandwidths  # torch's RNG: seeded with the run
            bandwidth = bands[int(torch.randint(len(bands), ()))]
        n_q = self.n_q(bandwidth)
        normalised, scale = self._normalise(wave)
        quantized = self.quantizer(self.encoder(normalised), n_q)
        audio = self.decoder(quantized.quantized)[..., :wave.shape[-1]]
        if scale is not None:
            audio = audio * scale.view(-1, 1, 1)
        c = self.config
        time_loss = F.l1_loss(audio, wave)
        mel_loss = mel_reconstruction_loss(audio, wave, self.mels)
        loss = (c.time_weight * time_loss + c.mel_weight * mel_loss
                + c.commitment_weight * quantized.commitment_loss)
        return EncodecOutput(audio, quantized.codes, loss, time_loss, mel_loss,
                             quantized.commitment_loss)


def load_encodec(directory: str | Path, map_location: str = "cpu") -> Encodec:
    """The ``family: encodec`` model saved in ``directory`` (eval mode)."""
    return Encodec.load(directory, map_location)
