"""The heads on the wav2vec 2.0 backbone: pretraining, CTC and classification.

Import them from ``seqformer.models.wav2vec2``, which re-exports them. Each model keeps the
backbone as ``.wav2vec2`` (HF's attribute name, so ``wav2vec2.*`` weights move between a
pretraining run and a fine-tuning model: :meth:`load_backbone`) and returns
:class:`~seqformer.models.wav2vec2.Wav2Vec2Output` whose ``loss`` is a mean, as the Trainer
wants.

Pretraining objectives (``config.objective``), all scored on the masked frames (every valid
frame when the batch has no ``mask_time``):

- ``contrastive`` (wav2vec 2.0, HF ``Wav2Vec2ForPreTraining``): the unmasked normalised conv
  features are quantized (``nn/quantizer.py``) and projected (``project_q``), the encoder output
  projected (``project_hid``); a masked frame must pick its own quantized vector among itself
  and K distractors (``batch.negatives``) by cosine similarity / ``logit_temperature``; a
  distractor equal to the positive scores -inf. HF returns the sum over masked frames of the
  cross-entropy plus ``diversity_weight`` x the diversity loss ``(G*V - perplexity) / (G*V)``
  times the masked-frame count; ours is that divided by the count (a mean per masked frame),
  so ``ours * n_tokens == HF``.
- ``units`` (HuBERT, fairseq): cosine(``final_proj(h)``, each of ``num_units`` learned unit
  embeddings) / ``logit_temperature``, cross-entropy against the frame's cluster id
  (``batch.units``, -100 ignored), mean over masked frames. HF has no such head.
- ``reconstruct`` (Mockingjay-style): Linear(d_model, target_dim) on masked frames, mean L1
  to ``batch.targets``.
- ``w2v-bert`` (Chung et al., 2021): both of the above ideas in one pass, no alternation. The
  lower ``split_layer`` encoder layers are the contrastive module: ``contrastive``'s loss and
  diversity term, computed on their output instead of the top layer's. The layers above are
  the masked-prediction module: ``mlm_head`` (Linear(d_model, G*V)) on the top output predicts,
  for every masked frame and codebook group, the quantizer's argmax codeword
  (:meth:`~seqformer.nn.quantizer.GumbelQuantizer.code_ids`, no gradient into the targets);
  a cross-entropy per group, averaged. Loss = contrastive + ``diversity_weight`` x diversity
  + ``mlm_weight`` x that cross-entropy; ``logits`` are the code logits (B, T, G, V). With
  ``contrastive_layers == layers`` and ``mlm_weight`` 0 it is ``contrastive`` exactly.

With the unit front end (``frontend: units``) and ``units`` without ``batch.units``, the
targets are the input's own unit ids (:meth:`Wav2Vec2Model.unit_ids`, computed once and fed to
the backbone too): DiscreteBERT's masked language model over speech units -- a masked frame's
unit is replaced by the mask embedding, and the model must name it from the context. The
contrastive objectives are refused there: they quantise the conv features, which a unit front
end does not have.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqformer.errors import ConfigError
from seqformer.models.common import SavedClassifier, SavedModel, check_label_names
from seqformer.models.wav2vec2 import (
    CONTRASTIVE_OBJECTIVES,
    FAMILY_CLASSIFY,
    FAMILY_CTC,
    FAMILY_PRETRAIN,
    Wav2Vec2Config,
    Wav2Vec2Model,
    Wav2Vec2Output,
    WaveBatch,
    load_backbone,
)
from seqformer.nn.quantizer import GumbelQuantizer


def _value(t: Tensor) -> Tensor:
    """A metric for the log, left on the device: a float() here would make every training
    step wait for the GPU; validation reads it."""
    return t.detach()


def _normal(linear: nn.Linear) -> nn.Linear:
    """HF's Linear init for heads: N(0, 0.02), zero bias."""
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return linear


class _Head:
    """What every head model shares: the backbone and reading one from another run."""

    wav2vec2: Wav2Vec2Model

    def load_backbone(self, directory: str | Path) -> Self:
        """This model with the backbone of the run in ``directory`` (see
        :func:`~seqformer.models.wav2vec2.load_backbone`)."""
        load_backbone(self, directory)  # type: ignore[arg-type]
        return self


class Wav2Vec2ForPreTraining(nn.Module, SavedModel, _Head):
    """Backbone + the head of ``config.objective`` (see the module docstring)."""

    family = FAMILY_PRETRAIN
    description = "a wav2vec 2.0 pretraining model"
    config_class = Wav2Vec2Config
    settings_key = "features"

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = c = config
        if c.frontend == "units" and c.objective in CONTRASTIVE_OBJECTIVES:
            raise ConfigError(f"model.frontend=units: objective {c.objective} quantises the "
                              "conv features, which a unit front end does not have; use "
                              "objective units (DiscreteBERT) or reconstruct")
        self.wav2vec2 = Wav2Vec2Model(c)
        self.quantizer: GumbelQuantizer | None = None
        if c.objective in CONTRASTIVE_OBJECTIVES:
            self.quantizer = GumbelQuantizer(c.conv_dim[-1], c.codevector_groups,
                                             c.codevectors_per_group, c.codevector_dim)
            # torch's default Linear init, as HF resets these two.
            self.project_hid = nn.Linear(c.d_model, c.proj_codevector_dim)
            self.project_q = nn.Linear(c.codevector_dim, c.proj_codevector_dim)
            self.set_gumbel_temperature(0)
            if c.objective == "w2v-bert":
                self.mlm_head = _normal(nn.Linear(
                    c.d_model, c.codevector_groups * c.codevectors_per_group))
        elif c.objective == "units":
            if c.num_units < 2:
                raise ConfigError(f"model.objective=units needs model.num_units >= 2 (the "
                                  f"cluster count), got {c.num_units}")
            self.final_proj = nn.Linear(c.d_model, c.unit_dim)  # fairseq: default init
            self.label_embeddings = nn.Parameter(torch.empty(c.num_units, c.unit_dim))
            nn.init.uniform_(self.label_embeddings)
        else:
            if c.target_dim < 1:
                raise ConfigError(f"model.objective=reconstruct needs model.target_dim >= 1 "
                                  f"(features per frame), got {c.target_dim}")
            self.reconstruct = _normal(nn.Linear(c.d_model, c.target_dim))

    def set_gumbel_temperature(self, step: int) -> None:
        """The quantizer's temperature at optimizer step ``step``: start x decay^step, never
        below the floor (fairseq's schedule); nothing for the other objectives."""
        start, floor, decay = self.config.gumbel_temperature
        if self.quantizer is not None:
            self.quantizer.temperature = max(start * decay ** step, floor)

    def forward(self, batch: WaveBatch) -> Wav2Vec2Output:
        objective = self.config.objective
        if objective == "w2v-bert":
            return self._w2v_bert(batch)
        targets = batch.units
        own = None  # DiscreteBERT: the input's units are the targets
        if objective == "units" and targets is None and self.config.frontend == "units":
            own = targets = self.wav2vec2.unit_ids(batch.waves, batch.lengths)
        hidden, extract, valid = self.wav2vec2(batch.waves, batch.lengths, batch.mask_time,
                                               unit_ids=own)
        scored = valid if batch.mask_time is None else batch.mask_time.bool() & valid
        if objective == "contrastive":
            return self._contrastive(batch, hidden, extract, valid, scored)
        if objective == "units":
            return self._units(targets, hidden, valid, scored)
        return self._reconstruct(batch, hidden, valid, scored)

    def _contrastive(self, batch: WaveBatch, hidden: Tensor, extract: Tensor, valid: Tensor,
                     scored: Tensor) -> Wav2Vec2Output:
        logits, contrastive, diversity, metrics = self._contrastive_terms(
            batch, hidden, extract, scored)
        loss = contrastive + self.config.diversity_weight * diversity
        return Wav2Vec2Output(loss, logits, hidden, valid, scored.sum(), metrics)

    def _contrastive_terms(self, batch: WaveBatch, hidden: Tensor, extract: Tensor,
                           scored: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
        """(logits (B, T, 1 + K), contrastive loss, diversity loss, metrics) of ``hidden``
        against the quantized ``extract`` features of the ``scored`` frames."""
        c = self.config
        if batch.negatives is None:
            raise ValueError(f"objective {c.objective} needs batch.negatives (B, T, K) "
                             "distractor indices; see data/masking.py")
        predicted = self.project_hid(hidden)
        quantized, perplexity = self.quantizer(extract, scored)
        quantized = self.project_q(quantized)
        b, t, dim = quantized.shape
        k = batch.negatives.shape[-1]
        negatives = quantized.reshape(b * t, dim)[batch.negatives.reshape(-1)].view(b, t, k, dim)
        candidates = torch.cat([quantized.unsqueeze(2), negatives], dim=2)  # positive first
        logits = torch.cosine_similarity(predicted.float().unsqueeze(2), candidates.float(),
                                         dim=-1) / c.logit_temperature
        # A distractor that quantized to the positive's codeword cannot be told apart from
        # it; it is left out rather than counted as an error.
        same = (negatives == quantized.unsqueeze(2)).all(-1)
        logits = torch.cat([logits[..., :1], logits[..., 1:].masked_fill(same, -math.inf)], -1)
        picked = logits[scored]
        n = picked.shape[0]
        contrastive = F.cross_entropy(picked, picked.new_zeros(n, dtype=torch.long),
                                      reduction="sum") / max(n, 1)
        codes = c.codevector_groups * c.codevectors_per_group
        diversity = (codes - perplexity) / codes
        accuracy = picked.argmax(-1).eq(0).float().mean() if n else picked.new_zeros(())
        metrics = {"contrastive_loss": _value(contrastive), "diversity_loss": _value(diversity),
                   "perplexity": _value(perplexity), "accuracy": _value(accuracy)}
        return logits, contrastive, diversity, metrics

    def _w2v_bert(self, batch: WaveBatch) -> Wav2Vec2Output:
        c = self.config
        states, extract, valid = self.wav2vec2.hidden_states(batch.waves, batch.lengths,
                                                             batch.mask_time)
        scored = valid if batch.mask_time is None else batch.mask_time.bool() & valid
        hidden = states[-1]
        _, contrastive, diversity, metrics = self._contrastive_terms(
            batch, states[c.split_layer], extract, scored)
        assert self.quantizer is not None
        targets = self.quantizer.code_ids(extract)  # (B, T, G), detached
        b, t, groups = targets.shape
        logits = self.mlm_head(hidden).view(b, t, groups, c.codevectors_per_group)
        picked, target = logits[scored].float(), targets[scored]  # (n, G, V), (n, G)
        n = int(target.shape[0])
        # One cross-entropy per group, averaged: every group scores the same n frames.
        mlm = F.cross_entropy(picked.reshape(n * groups, -1), target.reshape(-1),
                              reduction="sum") / max(n * groups, 1)
        loss = contrastive + c.diversity_weight * diversity + c.mlm_weight * mlm
        code_accuracy = (picked.argmax(-1).eq(target).float().mean() if n
                         else mlm.new_zeros(()))
        metrics.update({"mlm_loss": _value(mlm), "code_accuracy": _value(code_accuracy)})
        return Wav2Vec2Output(loss, logits, hidden, valid, n, metrics)

    def unit_logits(self, hidden: Tensor) -> Tensor:
        """(B, T, num_units): cosine of each projected frame with each unit embedding /
        temperature (a normalised matmul, not a broadcast, to keep memory at B*T*units)."""
        proj = F.normalize(self.final_proj(hidden).float(), dim=-1, eps=1e-8)
        units = F.normalize(self.label_embeddings.float(), dim=-1, eps=1e-8)
        return proj @ units.t() / self.config.logit_temperature

    def _units(self, units: Tensor | None, hidden: Tensor, valid: Tensor,
               scored: Tensor) -> Wav2Vec2Output:
        if units is None:
            raise ValueError("objective units needs batch.units (B, T) cluster ids")
        logits = self.unit_logits(hidden)
        scored = scored & units.ne(-100)
        picked, target = logits[scored], units[scored]
        n = int(target.numel())
        loss = F.cross_entropy(picked, target, reduction="sum") / max(n, 1)
        accuracy = picked.argmax(-1).eq(target).float().mean() if n else loss.new_zeros(())
        return Wav2Vec2Output(loss, logits, hidden, valid, n,
                              {"accuracy": _value(accuracy)})

    def _reconstruct(self, batch: WaveBatch, hidden: Tensor, valid: Tensor,
                     scored: Tensor) -> Wav2Vec2Output:
        if batch.targets is None:
            raise ValueError("objective reconstruct needs batch.targets (B, T, target_dim)")
        predicted = self.reconstruct(hidden)
        n = scored.sum()
        if n:
            loss = F.l1_loss(predicted[scored].float(), batch.targets[scored].float())
        else:
            loss = predicted.sum() * 0.0
        return Wav2Vec2Output(loss, predicted, hidden, valid, n, {"l1": _value(loss)})


class Wav2Vec2ForCTC(nn.Module, SavedModel, _Head):
    """Backbone -> dropout -> Linear to ``vocab_size`` per frame; CTC loss with blank 0 (HF
    ``Wav2Vec2ForCTC``: ``ctc_reduction`` "mean" divides each utterance's loss by its target
    length and averages, "sum" adds; impossible alignments give 0, ``zero_infinity``)."""

    family = FAMILY_CTC
    description = "a wav2vec 2.0 CTC model"
    config_class = Wav2Vec2Config
    settings_key = "features"

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise ConfigError(f"Wav2Vec2ForCTC needs model.vocab_size >= 2 (blank = 0 and the "
                              f"characters), got {config.vocab_size}")
        self.config = c = config
        self.wav2vec2 = Wav2Vec2Model(c)
        self.dropout = nn.Dropout(c.final_dropout)
        self.lm_head = _normal(nn.Linear(c.d_model, c.vocab_size))

    def logits(self, waves: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T, vocab) logits and the valid frames (B, T)."""
        hidden, _, valid = self.wav2vec2(waves, lengths)
        return self.lm_head(self.dropout(hidden)), valid

    def forward(self, batch: WaveBatch) -> Wav2Vec2Output:
        hidden, _, valid = self.wav2vec2(batch.waves, batch.lengths, batch.mask_time)
        logits = self.lm_head(self.dropout(hidden))
        if batch.text is None:
            return Wav2Vec2Output(None, logits, hidden, valid, 0)
        text = batch.text
        target_lengths = (text.ne(0).sum(1) if batch.text_lengths is None
                          else batch.text_lengths.to(text.device))
        positions = torch.arange(text.shape[1], device=text.device)
        targets = text[positions.unsqueeze(0) < target_lengths.unsqueeze(1)]
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC wants other layouts
            loss = F.ctc_loss(log_probs, targets, valid.sum(1), target_lengths, blank=0,
                              reduction=self.config.ctc_reduction, zero_infinity=True)
        return Wav2Vec2Output(loss, logits, hidden, valid, target_lengths.sum())


class Wav2Vec2ForClassification(nn.Module, SavedClassifier, _Head):
    """Backbone -> Linear ``projector`` per frame -> mean over the valid frames -> Linear
    ``classifier`` (HF ``Wav2Vec2ForSequenceClassification``); label names in config.json."""

    family = FAMILY_CLASSIFY
    description = "a wav2vec 2.0 classifier"
    config_class = Wav2Vec2Config
    settings_key = "features"

    def __init__(self, config: Wav2Vec2Config, labels: list[str] | None = None) -> None:
        super().__init__()
        if config.num_labels < 2:
            raise ConfigError(f"Wav2Vec2ForClassification needs model.num_labels >= 2, got "
                              f"{config.num_labels}")
        self.config = c = config
        self.labels = check_label_names(labels, c.num_labels)
        self.wav2vec2 = Wav2Vec2Model(c)
        self.projector = _normal(nn.Linear(c.d_model, c.classifier_proj_size))
        self.classifier = _normal(nn.Linear(c.classifier_proj_size, c.num_labels))

    def head(self, hidden: Tensor, valid: Tensor) -> Tensor:
        projected = self.projector(hidden)
        keep = valid.unsqueeze(-1).to(projected.dtype)
        return self.classifier((projected * keep).sum(1) / keep.sum(1))

    def logits(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, num_labels) for waves (B, S) padded after ``lengths`` samples."""
        hidden, _, valid = self.wav2vec2(waves, lengths)
        return self.head(hidden, valid)

    def forward(self, batch: WaveBatch) -> Wav2Vec2Output:
        hidden, _, valid = self.wav2vec2(batch.waves, batch.lengths, batch.mask_time)
        logits = self.head(hidden, valid)
        loss, metrics = None, {}
        if batch.labels is not None:
            loss = F.cross_entropy(logits.float(), batch.labels)
            metrics["accuracy"] = _value(logits.argmax(-1).eq(batch.labels).float().mean())
        return Wav2Vec2Output(loss, logits, hidden, valid, len(batch), metrics)
