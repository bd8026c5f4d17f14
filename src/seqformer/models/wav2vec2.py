"""A wav2vec 2.0 / HuBERT / W2v-Conformer speech encoder on raw 16 kHz waveforms.

The backbone (:class:`Wav2Vec2Model`) is Hugging Face's ``Wav2Vec2Model`` (Baevski et al.,
2020), ``HubertModel`` (Hsu et al., 2021) and ``Wav2Vec2ConformerModel`` (relative positions)
in one class, so their checkpoints map one to one (``interop/hf_wav2vec2.py``):

- feature encoder: a stack of strided Conv1d + GELU over the waveform (default 7 layers,
  strides 5 x 2^6 = 320 samples = 20 ms per frame, receptive field 400 samples). wav2vec2-base
  normalises only the first conv's output, with a GroupNorm of one group per channel
  (``feat_extract_norm: group``); the large models put a LayerNorm after every conv
  (``layer``);
- feature projection: LayerNorm (HuBERT may drop it: ``feat_proj_layer_norm``) and a Linear to
  ``d_model``; the normalised conv features are ``extract_features``, what the quantizer of the
  contrastive objective reads;
- time masking: frames in ``mask_time`` are replaced by one learned vector (``masked_spec_embed``)
  after the projection, before the encoder -- the model must infer them from context;
- encoder: a grouped convolution over time (kernel ``pos_conv_kernel``, weight-normalised,
  GELU) added as relative position information, then the shared ``nn.layers.Encoder``, post-LN
  (wav2vec2-base: LayerNorm before the first layer) or pre-LN (``norm_first``, HF's
  ``do_stable_layer_norm``: LayerNorm after the last); or ``encoder_block: conformer``: the
  shared ``nn/conformer.py`` blocks (Transformer-XL relative positions, depthwise convolution
  of ``depthwise_kernel`` frames) and a final LayerNorm, without the positional convolution
  (HF's W2v-Conformer builds one but never calls it).

Padding. A batch is zero-padded after each utterance's ``lengths``; the valid frames of each
utterance equal what it gives alone (``tests/models/test_wav2vec2.py``). The strided convs have
no padding, so a valid frame only reads valid samples; padded frames are zeroed before the
positional convolution (as HF does); self-attention masks them; the Conformer's depthwise
convolution sees zeros there. One departure from HF: with ``feat_extract_norm: group`` HF's
GroupNorm averages over the padded samples too, so a padded utterance encodes differently
from the same one alone (HF's docs say not to batch wav2vec2-base with padding); ours takes
the first layer's statistics over each utterance's valid frames only. On unpadded batches the
two agree exactly.

Unit front end (``frontend: units``, DiscreteBERT: Baevski, Auli & Mohamed 2019). Instead of
the conv feature encoder, the waveform is cut into the same 20 ms frames (400-sample windows
every 320, ``data/units.py``), each frame's MFCC (or log-mel) vector is standardised and
replaced by the id of its nearest k-means centroid, and the id by a learned embedding of
``conv_dim[-1]`` values, which the usual feature projection maps to ``d_model``. The centroids
and the standardisation live in the model as buffers (``feature_extractor.centroids`` /
``mean`` / ``std``), fitted by the task that trains it, so every downstream user -- the
masked-unit pretraining, CTC fine-tuning, transcription, save/load -- takes raw waveforms as
before. Why discrete input: a masked continuous frame can be guessed from its neighbours by
interpolation (speech is locally smooth); a masked unit id cannot, so the encoder has to model
context. The quantisation has no gradient; the embedding learns.

Intermediate layers. :meth:`Wav2Vec2Model.hidden_states` returns every layer's output (HF's
``output_hidden_states``), or stops after the first n layers: W2v-BERT's contrastive loss
reads a middle layer, and HuBERT's later iterations cluster one.

The heads (``models/wav2vec2_heads.py``, re-exported here): :class:`Wav2Vec2ForPreTraining`
(contrastive, HuBERT units, reconstruction or W2v-BERT), :class:`Wav2Vec2ForCTC` and
:class:`Wav2Vec2ForClassification`; each keeps the backbone as ``.wav2vec2``, and
:func:`load_backbone` starts a fine-tuning model from a pretraining run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from seqformer.data.device import to_device
from seqformer.data.units import FEATURE_KINDS, HOP, WINDOW, KMeans, feature_dim, unit_features
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.common import SavedModel
from seqformer.nn.conformer import ConformerEncoder, RelativeSelfAttention, relative_sinusoids
from seqformer.nn.feedforward import ACTIVATIONS
from seqformer.nn.layers import Encoder

FAMILY_ENCODER = "wav2vec2"  # the bare backbone (HF Wav2Vec2Model / HubertModel / ...Conformer)
FAMILY_PRETRAIN = "wav2vec2-pretrain"
FAMILY_CTC = "wav2vec2-ctc"
FAMILY_CLASSIFY = "wav2vec2-classify"
FAMILIES = (FAMILY_ENCODER, FAMILY_PRETRAIN, FAMILY_CTC, FAMILY_CLASSIFY)
OBJECTIVES = ("contrastive", "units", "reconstruct", "w2v-bert")
FRONTENDS = ("conv", "units")
# The objectives with a Gumbel quantizer, contrastive distractors and a temperature schedule.
CONTRASTIVE_OBJECTIVES = ("contrastive", "w2v-bert")

# The fields that decide the backbone's weights and computation: a fine-tuning model must
# share them with the pretraining run it starts from (load_backbone checks).
BACKBONE_FIELDS = ("conv_dim", "conv_kernel", "conv_stride", "feat_extract_norm", "conv_bias",
                   "feat_proj_layer_norm", "d_model", "heads", "layers", "ffn_dim", "activation",
                   "norm_first", "pos_conv_kernel", "pos_conv_groups", "encoder_block",
                   "depthwise_kernel", "frontend", "units_k", "units_features", "units_n_mfcc",
                   "units_n_mels")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Wav2Vec2Config:
    """Shape of the model. wav2vec2-base is conv_dim 512 x 7, d_model 768, 12 heads, 12 layers,
    ffn 3072, pos_conv_kernel 128 in 16 groups, post-LN, group norm; the defaults here are a
    small CPU-sized model. ``vocab_size`` (CTC, blank = pad = 0) and ``num_labels``
    (classification) come from the data; ``objective`` picks the pretraining head (HuBERT
    imports set ``units``, which is also how export tells a HuBERT from a wav2vec2).
    ``mask_time_prob`` / ``mask_time_length`` are read by the data side and stored here so a
    run remembers them. ``gumbel_temperature`` = (start, floor, decay per step).
    ``contrastive_layers`` and ``mlm_weight`` are W2v-BERT's (``objective: w2v-bert``): the
    lower layers that form its contrastive module (None: half of ``layers``, at least one) and
    the weight of its masked-prediction loss.

    ``frontend`` ``units`` (DiscreteBERT) replaces the conv feature encoder by ``units_k``
    k-means units of ``units_features`` frames (``mfcc``: ``units_n_mfcc`` cepstra + deltas +
    delta-deltas of ``units_n_mels`` bands; ``log-mel``: the ``units_n_mels`` bands), embedded
    in ``conv_dim[-1]`` values; the other conv fields are then unused and the frames are
    400-sample windows every 320, the default conv layout's."""

    conv_dim: tuple[int, ...] = (64, 64, 64, 64, 64, 64, 64)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    feat_extract_norm: str = "group"
    conv_bias: bool = False
    feat_proj_layer_norm: bool = True
    d_model: int = 128
    heads: int = 4
    layers: int = 4
    ffn_dim: int = 512
    activation: str = "gelu"
    norm_first: bool = False
    pos_conv_kernel: int = 32
    pos_conv_groups: int = 8
    encoder_block: str = "transformer"
    depthwise_kernel: int = 31
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    objective: str = "contrastive"
    codevector_groups: int = 2
    codevectors_per_group: int = 64
    codevector_dim: int = 128
    proj_codevector_dim: int = 64
    num_negatives: int = 20
    logit_temperature: float = 0.1
    diversity_weight: float = 0.1
    contrastive_layers: int | None = None
    mlm_weight: float = 1.0
    gumbel_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)
    num_units: int = 0
    unit_dim: int = 64
    target_dim: int = 0
    mask_time_prob: float = 0.65
    mask_time_length: int = 10
    vocab_size: int = 0
    num_labels: int = 0
    classifier_proj_size: int = 64
    ctc_reduction: str = "mean"
    frontend: str = "conv"
    units_k: int = 0
    units_features: str = "mfcc"
    units_n_mfcc: int = 13
    units_n_mels: int = 40

    def __post_init__(self) -> None:
        convs = (self.conv_dim, self.conv_kernel, self.conv_stride)
        if not self.conv_dim or len({len(x) for x in convs}) != 1:
            raise ConfigError(f"model.conv_dim, conv_kernel and conv_stride need one entry per "
                              f"conv layer each, got {len(self.conv_dim)}, "
                              f"{len(self.conv_kernel)} and {len(self.conv_stride)}")
        if not all(_positive_int(v) for conv in convs for v in conv):
            raise ConfigError("model.conv_dim, conv_kernel and conv_stride must hold positive "
                              "integers")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ConfigError(f"model.feat_extract_norm must be 'group' or 'layer', got "
                              f"{self.feat_extract_norm!r}")
        for name in ("d_model", "heads", "layers", "ffn_dim", "pos_conv_kernel",
                     "pos_conv_groups", "codevector_groups", "codevectors_per_group",
                     "codevector_dim", "proj_codevector_dim", "num_negatives", "unit_dim",
                     "mask_time_length", "classifier_proj_size"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"model.{name} must be a positive integer, got "
                                  f"{getattr(self, name)!r}")
        for name in ("num_units", "target_dim", "vocab_size", "num_labels", "units_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"model.{name} must be an integer >= 0, got {value!r}")
        if self.d_model % self.heads:
            raise ConfigError(f"model.d_model={self.d_model} must be a multiple of "
                              f"model.heads={self.heads}")
        if self.d_model % self.pos_conv_groups:
            raise ConfigError(f"model.d_model={self.d_model} must be a multiple of "
                              f"model.pos_conv_groups={self.pos_conv_groups}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation={self.activation!r}; use one of "
                              f"{', '.join(ACTIVATIONS)}")
        if self.encoder_block not in ("transformer", "conformer"):
            raise ConfigError(f"model.encoder_block must be 'transformer' or 'conformer', got "
                              f"{self.encoder_block!r}")
        if not _positive_int(self.depthwise_kernel) or self.depthwise_kernel % 2 == 0:
            raise ConfigError(f"model.depthwise_kernel must be an odd positive integer (a "
                              f"centred window), got {self.depthwise_kernel!r}")
        for name in ("dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout",
                     "final_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"model.objective={self.objective!r}; use one of "
                              f"{', '.join(OBJECTIVES)}")
        if self.codevector_dim % self.codevector_groups:
            raise ConfigError(f"model.codevector_dim={self.codevector_dim} must be a multiple "
                              f"of model.codevector_groups={self.codevector_groups}")
        if self.logit_temperature <= 0 or self.diversity_weight < 0:
            raise ConfigError("model.logit_temperature must be > 0 and model.diversity_weight "
                              ">= 0")
        if self.contrastive_layers is not None and (
                not _positive_int(self.contrastive_layers)
                or self.contrastive_layers > self.layers):
            raise ConfigError(f"model.contrastive_layers must be in [1, model.layers="
                              f"{self.layers}], got {self.contrastive_layers!r}")
        if not self.mlm_weight >= 0:
            raise ConfigError(f"model.mlm_weight must be >= 0, got {self.mlm_weight}")
        start, floor, decay = (self.gumbel_temperature if len(self.gumbel_temperature) == 3
                               else (0.0, 0.0, 0.0))
        if not 0 < floor <= start or not 0 < decay <= 1:
            raise ConfigError(f"model.gumbel_temperature must be [start, floor, decay] with "
                              f"0 < floor <= start and 0 < decay <= 1, got "
                              f"{list(self.gumbel_temperature)}")
        if not 0.0 <= self.mask_time_prob <= 1.0:
            raise ConfigError(f"model.mask_time_prob must be in [0, 1], got "
                              f"{self.mask_time_prob}")
        if self.ctc_reduction not in ("mean", "sum"):
            raise ConfigError(f"model.ctc_reduction must be 'mean' or 'sum', got "
                              f"{self.ctc_reduction!r}")
        self._check_frontend()

    def _check_frontend(self) -> None:
        """The unit front end's fields, each inconsistency one line."""
        if self.frontend not in FRONTENDS:
            raise ConfigError(f"model.frontend must be 'conv' or 'units', got "
                              f"{self.frontend!r}")
        if self.units_features not in FEATURE_KINDS:
            raise ConfigError(f"model.units_features must be one of "
                              f"{', '.join(FEATURE_KINDS)}, got {self.units_features!r}")
        if not _positive_int(self.units_n_mels):
            raise ConfigError(f"model.units_n_mels must be a positive integer, got "
                              f"{self.units_n_mels!r}")
        if not _positive_int(self.units_n_mfcc) or self.units_n_mfcc > self.units_n_mels:
            raise ConfigError(f"model.units_n_mfcc must be in [1, model.units_n_mels="
                              f"{self.units_n_mels}], got {self.units_n_mfcc!r}")
        if self.frontend == "units" and self.units_k < 2:
            raise ConfigError(f"model.frontend=units needs model.units_k >= 2 (the k-means "
                              f"units the waveform's frames become), got {self.units_k}")
        if self.frontend == "conv" and self.units_k:
            raise ConfigError(f"model.units_k={self.units_k} sizes a unit front end, but "
                              "model.frontend is conv; set model.frontend=units or drop units_k")

    @property
    def feature_dim(self) -> int:
        """Values per frame the unit front end quantises (39 for MFCC + deltas)."""
        return feature_dim(self.units_features, self.units_n_mfcc, self.units_n_mels)

    @property
    def split_layer(self) -> int:
        """W2v-BERT's contrastive module: the encoder layers below this count (the rest are
        its masked-prediction module)."""
        if self.contrastive_layers is not None:
            return self.contrastive_layers
        return max(1, self.layers // 2)

    @property
    def receptive_field(self) -> int:
        """Samples one frame reads: the shortest utterance that gives a frame (400 default)."""
        if self.frontend == "units":
            return WINDOW
        field, jump = 1, 1
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            field += (kernel - 1) * jump
            jump *= stride
        return field

    @property
    def samples_per_frame(self) -> int:
        return HOP if self.frontend == "units" else math.prod(self.conv_stride)


def frame_lengths(config: Wav2Vec2Config, samples: Tensor) -> Tensor:
    """Frames the feature encoder makes of ``samples`` samples (HF
    ``_get_feat_extract_output_lengths``): (L - kernel) // stride + 1 per conv layer; <= 0 for
    an utterance shorter than the receptive field. With the unit front end: (L - 400) // 320 +
    1, the same count as the default conv layout."""
    if config.frontend == "units":
        return torch.div(samples - WINDOW, HOP, rounding_mode="floor") + 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        samples = torch.div(samples - kernel, stride, rounding_mode="floor") + 1
    return samples


@dataclass
class WaveBatch:
    """``waves`` (B, S) float, zero-padded after ``lengths`` (B,) samples, each utterance
    already normalised to zero mean and unit variance over its own samples. The rest is per
    head: ``mask_time`` (B, T) frames to mask; ``negatives`` (B, T, K) distractor indices into
    the flattened B*T frames (HF's ``sampled_negative_indices``); ``units`` (B, T) cluster ids
    (-100 ignored); ``targets`` (B, T, target_dim); ``labels`` (B,); ``text`` (B, L) CTC targets
    padded with 0 and ``text_lengths`` (B,). T is the frame count of the padded batch."""

    waves: Tensor
    lengths: Tensor
    mask_time: Tensor | None = None
    negatives: Tensor | None = None
    units: Tensor | None = None
    targets: Tensor | None = None
    labels: Tensor | None = None
    text: Tensor | None = None
    text_lengths: Tensor | None = None
    # What n_tgt_tokens counts, for the Trainer's throughput (clips/s, not tok/s).
    count_unit: ClassVar[str] = "clips"

    def to(self, device: torch.device | str) -> WaveBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return to_device(t, device)

        return WaveBatch(move(self.waves), move(self.lengths), move(self.mask_time),
                         move(self.negatives), move(self.units), move(self.targets),
                         move(self.labels), move(self.text), move(self.text_lengths))

    @property
    def n_tgt_tokens(self) -> int:
        """Clips in the batch (the Trainer's throughput is clips per second here)."""
        return int(self.waves.shape[0])

    def __len__(self) -> int:
        return int(self.waves.shape[0])


@dataclass
class Wav2Vec2Output:
    """``loss`` is a mean over ``n_tokens`` (masked frames, clips or target characters);
    ``frame_mask`` (B, T) is True at valid frames; ``metrics`` are plain floats for logging.

    Both are kept on the device (``target_count``, ``metric_values``) and converted when read:
    the conversion waits for the GPU, which validation can afford and a training step cannot.
    """

    loss: Tensor | None
    logits: Tensor | None
    hidden: Tensor
    frame_mask: Tensor
    target_count: Tensor | int
    metric_values: dict[str, Tensor | float] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.target_count)

    @property
    def metrics(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.metric_values.items()}


# -- feature encoder -------------------------------------------------------------------------------

def masked_instance_norm(x: Tensor, norm: nn.GroupNorm, valid: Tensor) -> Tensor:
    """``norm`` (one group per channel) of ``x`` (B, C, L) with each row's mean and variance
    taken over its ``valid`` (B, L) positions only, so padding does not change them."""
    keep = valid.unsqueeze(1).to(x.dtype)
    count = keep.sum(-1, keepdim=True).clamp(min=1)
    mean = (x * keep).sum(-1, keepdim=True) / count
    var = ((x - mean).square() * keep).sum(-1, keepdim=True) / count
    y = (x - mean) * torch.rsqrt(var + norm.eps)
    return y * norm.weight.view(1, -1, 1) + norm.bias.view(1, -1, 1)


class ConvLayer(nn.Module):
    """Conv1d (no padding) -> optional norm ("group": per-channel GroupNorm over time,
    "layer": LayerNorm over channels per frame) -> GELU; HF's ``conv_layers.N``."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool,
                 norm: str | None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        self.layer_norm: nn.Module | None = (
            nn.GroupNorm(out_dim, out_dim) if norm == "group"
            else nn.LayerNorm(out_dim) if norm == "layer" else None)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.layer_norm(x) if valid is None else masked_instance_norm(
                x, self.layer_norm, valid)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    """Waveform (B, S) -> conv features (B, C, T)."""

    def __init__(self, c: Wav2Vec2Config) -> None:
        super().__init__()
        dims = (1, *c.conv_dim)
        self.conv_layers = nn.ModuleList(
            ConvLayer(dims[i], dims[i + 1], c.conv_kernel[i], c.conv_stride[i], c.conv_bias,
                      "layer" if c.feat_extract_norm == "layer"
                      else "group" if i == 0 else None)
            for i in range(len(c.conv_dim)))
        self.kernel0, self.stride0 = c.conv_kernel[0], c.conv_stride[0]

    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths`` (samples per row) only when some row is padded: the first layer's
        GroupNorm then takes its statistics over each row's valid frames."""
        valid = None
        if lengths is not None:
            frames = (waves.shape[1] - self.kernel0) // self.stride0 + 1
            real = torch.div(lengths - self.kernel0, self.stride0, rounding_mode="floor") + 1
            valid = torch.arange(frames, device=waves.device).unsqueeze(0) < real.unsqueeze(1)
        x = waves.unsqueeze(1)
        for i, layer in enumerate(self.conv_layers):
            x = layer(x, valid if i == 0 else None)
        return x


class UnitFrontEnd(nn.Module):
    """Waveform (B, S) -> k-means unit ids (B, T) -> embeddings (B, T, C): DiscreteBERT's
    input (``frontend: units``).

    Each utterance's frames are computed from its own ``lengths`` samples only, by
    ``data/units.py``'s :func:`~seqformer.data.units.unit_features` on the CPU in float64, then
    standardised with the ``mean`` / ``std`` buffers and labelled by
    :meth:`~seqformer.data.units.KMeans.assign` with the ``centroids`` buffer: the very
    functions the task fits the k-means with, so the model's ids are the task's, and padding
    cannot change them. Padded frames get id 0 (the backbone zeroes them anyway). ``std`` is
    zero until :meth:`set_units` fills the buffers, which is how an unfitted front end is
    told apart (a fitted std is floored at 1e-5)."""

    def __init__(self, c: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = c
        dim = c.feature_dim
        self.register_buffer("centroids", torch.zeros(c.units_k, dim))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.zeros(dim))
        self.embedding = nn.Embedding(c.units_k, c.conv_dim[-1])

    @property
    def fitted(self) -> bool:
        return bool(self.std.gt(0).all())

    @torch.no_grad()
    def set_units(self, centroids: Tensor, mean: Tensor, std: Tensor) -> None:
        """Install fitted k-means ``centroids`` (units_k, D) and the feature standardisation
        (D,) the centroids live in (what ``tasks/speech_ssl.fit_units`` returns)."""
        shapes = {"centroids": (tuple(centroids.shape), tuple(self.centroids.shape)),
                  "mean": (tuple(mean.shape), tuple(self.mean.shape)),
                  "std": (tuple(std.shape), tuple(self.std.shape))}
        for name, (got, want) in shapes.items():
            if got != want:
                raise ConfigError(f"unit front end: {name} has shape {got}, the model wants "
                                  f"{want} (model.units_k x the {self.config.units_features} "
                                  f"feature size)")
        if not bool(std.gt(0).all()):
            raise ConfigError("unit front end: the feature std must be > 0 everywhere")
        self.centroids.copy_(centroids)
        self.mean.copy_(mean)
        self.std.copy_(std)

    @torch.no_grad()
    def ids(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) long unit id of every frame (0 past each utterance's frames), T the frame
        count of the padded batch."""
        if not self.fitted:
            # A ConfigError (one line, exit 2): a task that cannot fit the units was given a
            # unit front end without init_from (audio-classify from scratch, say).
            raise ConfigError("model.frontend=units: the unit front end has no k-means units "
                              "yet; task speech-pretrain or speech-ctc fits them, or start "
                              "from a run that has them (init_from)")
        c = self.config
        total = int(frame_lengths(c, torch.tensor([waves.shape[1]]))[0])
        frames = frame_lengths(c, lengths.cpu()).tolist()
        out = torch.zeros(waves.shape[0], total, dtype=torch.long)
        kmeans = KMeans(self.centroids.detach().float().cpu())
        mean, std = self.mean.float().cpu(), self.std.float().cpu()
        rows = waves.detach().cpu()
        for b, length in enumerate(lengths.tolist()):
            feats = unit_features(rows[b, : int(length)], c.units_features, c.units_n_mfcc,
                                  c.units_n_mels)
            assert feats.shape[0] == frames[b]
            out[b, : frames[b]] = kmeans.assign((feats - mean) / std)
        return out.to(waves.device)

    def forward(self, waves: Tensor, lengths: Tensor, ids: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """(embeddings (B, T, C), ids (B, T)); ``ids`` already computed by :meth:`ids` (the
        pretraining head needs them as targets too) are used as given."""
        if ids is None:
            ids = self.ids(waves, lengths)
        total = int(frame_lengths(self.config, torch.tensor([waves.shape[1]]))[0])
        if tuple(ids.shape) != (waves.shape[0], total):
            raise ValueError(f"unit ids {tuple(ids.shape)} do not match the "
                             f"{(waves.shape[0], total)} frames of the batch")
        return self.embedding(ids.to(waves.device)), ids


class FeatureProjection(nn.Module):
    """LayerNorm (optional) -> Linear to d_model -> dropout; returns the projection and the
    (normalised) features the quantizer reads."""

    def __init__(self, c: Wav2Vec2Config) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(c.conv_dim[-1]) if c.feat_proj_layer_norm else None
        self.projection = nn.Linear(c.conv_dim[-1], c.d_model)
        self.dropout = nn.Dropout(c.feat_proj_dropout)
        bound = 1 / math.sqrt(c.conv_dim[-1])  # HF's init: U(-1/sqrt(in), 1/sqrt(in))
        nn.init.uniform_(self.projection.weight, -bound, bound)
        nn.init.uniform_(self.projection.bias, -bound, bound)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        if self.layer_norm is not None:
            features = self.layer_norm(features)
        return self.dropout(self.projection(features)), features


class PositionalConv(nn.Module):
    """Grouped Conv1d over time ("same" length), weight-normalised over the kernel axis
    (``dim=2``, as fairseq and HF), then GELU: wav2vec 2.0's relative position signal."""

    def __init__(self, d_model: int, kernel: int, groups: int) -> None:
        super().__init__()
        conv = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=groups)
        # fairseq's init, before the parametrisation: g then starts as ||v|| per tap.
        nn.init.normal_(conv.weight, std=2 * math.sqrt(1 / (kernel * d_model)))
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2)
        self.trim = kernel % 2 == 0  # an even kernel makes one frame too many

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


# -- backbone --------------------------------------------------------------------------------------

class Wav2Vec2Model(nn.Module, SavedModel):
    """Feature encoder -> projection -> time masking -> (positional conv +) encoder.

    Also the bare encoder of an imported HF ``Wav2Vec2Model`` / ``HubertModel`` /
    ``Wav2Vec2ConformerModel`` (``family: wav2vec2``), which :func:`load_backbone` reads like a
    pretraining run."""

    family = FAMILY_ENCODER
    description = "a wav2vec 2.0 encoder"
    config_class = Wav2Vec2Config
    settings_key = "features"

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = c = config
        self.feature_extractor: FeatureEncoder | UnitFrontEnd = (
            UnitFrontEnd(c) if c.frontend == "units" else FeatureEncoder(c))
        self.feature_projection = FeatureProjection(c)
        self.masked_spec_embed = nn.Parameter(torch.empty(c.d_model).uniform_())
        self.dropout = nn.Dropout(c.dropout)
        self.pos_conv: PositionalConv | None = None
        self.encoder: nn.Module
        if c.encoder_block == "conformer":
            self.encoder = ConformerEncoder(c.layers, c.d_model, c.heads, c.ffn_dim,
                                            c.depthwise_kernel, c.dropout, c.activation)
            for layer in self.encoder.layers:
                layer.attn.dropout = c.attention_dropout
                layer.ffn1.dropout = nn.Dropout(c.activation_dropout)
                layer.ffn2.dropout = nn.Dropout(c.activation_dropout)
        else:
            self.pos_conv = PositionalConv(c.d_model, c.pos_conv_kernel, c.pos_conv_groups)
            self.encoder = Encoder(c.layers, c.d_model, c.heads, c.ffn_dim, c.dropout,
                                   c.attention_dropout, c.activation, norm_first=c.norm_first)
            self.encoder.norm = nn.Identity()  # ``layer_norm`` below, placed per norm_first
            for layer in self.encoder.layers:
                layer.ffn.dropout = nn.Dropout(c.activation_dropout)
        # Before the first layer (post-LN) or after the last (pre-LN, Conformer).
        self.layer_norm = nn.LayerNorm(c.d_model)
        init_like_hf(self)

    def forward(self, waves: Tensor, lengths: Tensor | None = None,
                mask_time: Tensor | None = None, unit_ids: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """``waves`` (B, S) -> last hidden (B, T, D), extract_features (B, T, C) and the valid
        frames (B, T) bool. ``mask_time`` (B, T) frames get the mask embedding. ``unit_ids``
        (unit front end only): the frames' ids from :meth:`unit_ids`, when the caller has
        them already."""
        hidden, extract_features, frame_mask, pad = self._inputs(waves, lengths, mask_time,
                                                                 unit_ids)
        states = self._encode(hidden, pad, self.config.layers, keep=False)
        return states[-1], extract_features, frame_mask

    def hidden_states(self, waves: Tensor, lengths: Tensor | None = None,
                      mask_time: Tensor | None = None, upto: int | None = None,
                      unit_ids: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        """Every layer's output, HF's ``output_hidden_states``: ``states[0]`` is the encoder's
        input (after the positional convolution, and the LayerNorm of a post-LN model),
        ``states[n]`` the output of layer n; ``states[layers]`` is :meth:`forward`'s last
        hidden (with the final LayerNorm of a pre-LN or Conformer model, which the lower
        layers' outputs do not get; transformers 4.x reports the same, 5.x the last layer
        before that norm). ``upto`` stops after that many layers (``upto + 1``
        states), so layer n's features cost n layers. Also returns extract_features and the
        valid frames, as :meth:`forward`."""
        layers = self.config.layers if upto is None else upto
        if not 0 <= layers <= self.config.layers:
            raise ValueError(f"upto must be in [0, {self.config.layers}], got {upto}")
        hidden, extract_features, frame_mask, pad = self._inputs(waves, lengths, mask_time,
                                                                 unit_ids)
        return self._encode(hidden, pad, layers, keep=True), extract_features, frame_mask

    def set_units(self, centroids: Tensor, mean: Tensor, std: Tensor) -> None:
        """Install the unit front end's fitted k-means (see :meth:`UnitFrontEnd.set_units`)."""
        self._unit_front_end().set_units(centroids, mean, std)

    def unit_ids(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T) long k-means unit of every frame (unit front end only; 0 on padding):
        DiscreteBERT's input, and its masked-prediction targets."""
        waves, lengths = self._checked(waves, lengths)
        return self._unit_front_end().ids(waves, lengths)

    def _unit_front_end(self) -> UnitFrontEnd:
        if not isinstance(self.feature_extractor, UnitFrontEnd):
            raise ValueError("unit ids need model.frontend=units; this model reads the "
                             "waveform with the conv feature encoder")
        return self.feature_extractor

    def _checked(self, waves: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """``waves`` (B, S) and its ``lengths`` (every row full when None), refused in one line
        when an utterance is too short for a single frame."""
        if waves.dim() != 2:
            raise ValueError(f"expected waves (batch, samples), got {tuple(waves.shape)}")
        samples = waves.shape[1]
        if lengths is None:
            lengths = torch.full((waves.shape[0],), samples, device=waves.device)
        lengths = lengths.to(waves.device)
        if bool(frame_lengths(self.config, lengths).lt(1).any()):
            raise ValueError(f"an utterance of {int(lengths.min())} samples is shorter than "
                             f"the model's receptive field ({self.config.receptive_field} "
                             "samples)")
        return waves, lengths

    def _inputs(self, waves: Tensor, lengths: Tensor | None, mask_time: Tensor | None,
                unit_ids: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The projected (and masked) frames, extract_features, the valid frames and the
        padding mask (None when no row is padded)."""
        c = self.config
        waves, lengths = self._checked(waves, lengths)
        samples = waves.shape[1]
        frames = frame_lengths(c, lengths)
        padded = bool(lengths.lt(samples).any())
        if isinstance(self.feature_extractor, UnitFrontEnd):
            features, _ = self.feature_extractor(waves, lengths, unit_ids)
        elif unit_ids is not None:
            raise ValueError("unit_ids are the unit front end's (model.frontend=units)")
        else:
            features = self.feature_extractor(waves, lengths if padded else None).transpose(1, 2)
        frame_mask = (torch.arange(features.shape[1], device=waves.device).unsqueeze(0)
                      < frames.unsqueeze(1))
        hidden, extract_features = self.feature_projection(features)
        if mask_time is None and self.training:
            # In the graph every step (a zero gradient when nothing is masked): DDP wants
            # every parameter to get a gradient.
            mask_time = torch.zeros_like(frame_mask)
        if mask_time is not None:
            if mask_time.shape != frame_mask.shape:
                raise ValueError(f"mask_time {tuple(mask_time.shape)} does not match the "
                                 f"{tuple(frame_mask.shape)} frames of the batch")
            hidden = torch.where(mask_time.bool().unsqueeze(-1),
                                 self.masked_spec_embed.to(hidden.dtype), hidden)
        pad = ~frame_mask if padded else None
        if pad is not None:
            hidden = hidden.masked_fill(pad.unsqueeze(-1), 0.0)
        return hidden, extract_features, frame_mask, pad

    def _encode(self, hidden: Tensor, pad: Tensor | None, layers: int, keep: bool
                ) -> list[Tensor]:
        """The encoder's first ``layers`` layers on the projected frames: the input and every
        layer's output when ``keep``, else the last only. The layers are run one by one here
        (what ``Encoder`` / ``ConformerEncoder.forward`` do, in the same order), so a caller
        can stop early or read a middle layer."""
        c = self.config
        final = layers == c.layers
        if self.pos_conv is None:  # Conformer: relative positions inside attention
            x = self.dropout(hidden)
            positions = (relative_sinusoids(x.shape[1], x.shape[2], x.device).to(x.dtype)
                         if self.encoder.relative else None)
            states = [x]
            for layer in self.encoder.layers[:layers]:
                x = layer(x, pad, positions)
                if keep:
                    states.append(x)
                else:
                    states[0] = x
            if final:
                states[-1] = self.layer_norm(states[-1])
            return states
        hidden = hidden + self.pos_conv(hidden)
        if not c.norm_first:
            hidden = self.layer_norm(hidden)
        x = self.dropout(hidden)
        states = [x]
        for layer in self.encoder.layers[:layers]:
            x, _ = layer(x, pad)
            if keep:
                states.append(x)
            else:
                states[0] = x
        if final:
            states[-1] = self.encoder.norm(states[-1])  # Identity: our layer_norm instead
            if c.norm_first:
                states[-1] = self.layer_norm(states[-1])
        return states


def init_like_hf(model: nn.Module) -> None:
    """HF's ``_init_weights`` for the backbone and plain heads, so training from scratch
    behaves like theirs: Linear N(0, 0.02) with zero bias, Kaiming-normal convs (bias
    U(+-sqrt(groups / fan_in))), Xavier-uniform Conformer position biases. Modules that set
    their own init (the feature projection, the weight-normalised positional conv, the
    heads) are skipped, as HF's special cases are."""
    skip: set[int] = set()
    for module in model.modules():
        if isinstance(module, FeatureProjection | PositionalConv):
            skip.update(id(m) for m in module.modules())
    for module in model.modules():
        if id(module) in skip or parametrize.is_parametrized(module):
            continue
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                bound = math.sqrt(module.groups / (module.in_channels * module.kernel_size[0]))
                nn.init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, RelativeSelfAttention):
            nn.init.xavier_uniform_(module.pos_bias_u)
            nn.init.xavier_uniform_(module.pos_bias_v)


# -- directories -----------------------------------------------------------------------------------

def read_wav2vec2_config(directory: str | Path, family: str | None = None) -> dict[str, Any]:
    """``config.json`` of a wav2vec2-family model (``family`` if given, else any of them)
    without the ``family`` field; a CheckpointError for another model."""
    from seqformer.models.seq2seq import read_model_config

    config = read_model_config(directory)
    found = config.pop("family", None)
    wanted = (family,) if family else FAMILIES
    if found not in wanted:
        raise CheckpointError(f"{directory}: a {found or 'unknown'} model, not a "
                              f"{' / '.join(wanted)} model")
    return config


def _family_of(directory: str | Path) -> str:
    from seqformer.models.seq2seq import read_model_config

    read_wav2vec2_config(directory)  # refuses other families
    return str(read_model_config(directory)["family"])


def backbone_config(directory: str | Path, **changes: Any) -> Wav2Vec2Config:
    """The config of the wav2vec2-family run in ``directory`` with ``changes`` applied: the
    starting point of a fine-tuning model that :func:`load_backbone` fills from that run
    (``backbone_config(run, vocab_size=32, mask_time_prob=0.05)``)."""
    import dataclasses

    from seqformer.config import from_dict

    data = read_wav2vec2_config(directory)
    data.pop("features", None)
    data.pop("labels", None)
    config = from_dict(Wav2Vec2Config, data, f"{directory}/config.json")
    return dataclasses.replace(config, **changes)


def load_backbone(model: nn.Module, directory: str | Path) -> nn.Module:
    """Copy the backbone (``wav2vec2.*``) of the run in ``directory`` -- a pretraining run, a
    fine-tuned model or an imported bare encoder -- into ``model`` (any head model, or a bare
    :class:`Wav2Vec2Model`); its head keeps its own init. Refused in one line when the two
    backbones differ in a field or a weight's shape."""
    from seqformer.training.checkpoint import check_state, read_weights

    directory = Path(directory)
    family = _family_of(directory)
    source = backbone_config(directory)
    target = model if isinstance(model, Wav2Vec2Model) else model.wav2vec2
    for name in BACKBONE_FIELDS:
        theirs, ours = getattr(source, name), getattr(target.config, name)
        if theirs != ours:
            raise CheckpointError(f"{directory / 'config.json'}: model.{name}={theirs!r} but "
                                  f"the model being initialised has {ours!r}; build it with the "
                                  "run's backbone fields (backbone_config)")
    path = directory / "model.safetensors"
    state = read_weights(path)
    if family != FAMILY_ENCODER:
        state = {k[len("wav2vec2."):]: v for k, v in state.items() if k.startswith("wav2vec2.")}
    check_state(state, target.state_dict(), path)
    target.load_state_dict(state, strict=True)
    return model


def load_wav2vec2(directory: str | Path, map_location: str = "cpu") -> nn.Module:
    """The model in ``directory``, of the class its ``family`` names (eval mode)."""
    family = _family_of(directory)
    classes = {FAMILY_ENCODER: Wav2Vec2Model, FAMILY_PRETRAIN: Wav2Vec2ForPreTraining,
               FAMILY_CTC: Wav2Vec2ForCTC, FAMILY_CLASSIFY: Wav2Vec2ForClassification}
    return classes[family].load(directory, map_location)


# The heads live in their own module (size); importing them here keeps one public module.
from seqformer.models.wav2vec2_heads import (  # noqa: E402
    Wav2Vec2ForClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
)

__all__ = [
    "BACKBONE_FIELDS", "CONTRASTIVE_OBJECTIVES", "FAMILIES", "FAMILY_CLASSIFY", "FAMILY_CTC",
    "FAMILY_ENCODER", "FAMILY_PRETRAIN", "OBJECTIVES", "WaveBatch", "Wav2Vec2Config",
    "Wav2Vec2ForCTC", "Wav2Vec2ForClassification", "Wav2Vec2ForPreTraining", "Wav2Vec2Model",
    "Wav2Vec2Output", "backbone_config", "frame_lengths", "load_backbone", "load_wav2vec2",
    "read_wav2vec2_config",
]
