"""Knowledge distillation of a BERT encoder into a shallower student (DistilBERT; Sanh et al.,
2019).

The student has half the teacher's layers and starts from every other teacher layer (0, 2,
4, ...) plus the teacher's embeddings and MLM head, so it begins close to the teacher's
function. Its loss on a masked-LM batch is

    alpha_kl * T^2 * KL(teacher_T || student_T)   soft targets: temperature-T softmaxes
  + alpha_mlm * CE(student, masked tokens)          the ordinary hard-label MLM loss
  + alpha_cos * (1 - cos(h_student, h_teacher))     final hidden states, non-padding tokens

(T^2 keeps the soft term's gradient scale independent of T, as in Hinton et al., 2015). The
teacher is frozen and kept out of the module tree, so checkpoints hold only the student and
load as a plain :class:`~seqformer.models.bert.BERTModel`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from seqformer.errors import ConfigError
from seqformer.models.bert import IGNORE, BERTModel, EncoderBatch, EncoderOutput, encoder_loss


def student_layer_map(teacher_layers: int) -> list[int]:
    """Teacher layer copied into each student layer: every other one, from the bottom."""
    if teacher_layers < 2:
        raise ConfigError(f"the teacher has {teacher_layers} layer(s); distillation halves "
                          "the depth, so it needs at least 2")
    return list(range(0, teacher_layers, 2))[: teacher_layers // 2]


def make_student(teacher: BERTModel, **overrides) -> BERTModel:
    """A half-depth copy of ``teacher`` initialised from its embeddings, every other layer and
    its head; ``overrides`` may change dropouts."""
    layers = student_layer_map(teacher.config.layers)
    config = dataclasses.replace(teacher.config, layers=len(layers), **overrides)
    student = BERTModel(config, teacher.head_kind, teacher.labels)
    state = teacher.state_dict()
    mapped = {}
    for key, value in state.items():
        if key.startswith("bert.encoder.layers."):
            index, rest = key[len("bert.encoder.layers."):].split(".", 1)
            if int(index) in layers:
                mapped[f"bert.encoder.layers.{layers.index(int(index))}.{rest}"] = value
        else:
            mapped[key] = value
    student.load_state_dict(mapped)
    return student


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, student_hidden: Tensor,
                      teacher_hidden: Tensor, keep: Tensor, temperature: float = 2.0
                      ) -> tuple[Tensor, Tensor]:
    """(T^2-scaled KL of the softened distributions, mean cosine distance over ``keep``).

    Both are exactly zero when the student equals the teacher.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * t * t
    cos = F.cosine_similarity(student_hidden[keep].float(), teacher_hidden[keep].float(), dim=-1)
    return kl, (1.0 - cos).mean() if cos.numel() else cos.new_zeros(())


class DistillingBERT(BERTModel):
    """A student ``BERTModel`` whose ``forward`` adds the distillation terms."""

    def __init__(self, student: BERTModel, teacher: BERTModel, temperature: float = 2.0,
                 alpha_kl: float = 1.0, alpha_mlm: float = 1.0, alpha_cos: float = 1.0) -> None:
        super().__init__(student.config, student.head_kind, student.labels)
        self.load_state_dict(student.state_dict())
        if teacher.config.d_model != student.config.d_model:
            raise ConfigError("the cosine loss needs the student's d_model to equal the "
                              "teacher's")
        # Not a submodule: no gradients, not in state_dict, not moved by the Trainer's .to().
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))
        self.temperature, self.alphas = temperature, (alpha_kl, alpha_mlm, alpha_cos)

    def forward(self, batch: EncoderBatch) -> EncoderOutput:
        device = self.bert.embeddings.word.weight.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        hidden = self.bert(batch.input_ids, batch.token_type_ids)
        with torch.no_grad():
            teacher_hidden = self.teacher.bert(batch.input_ids, batch.token_type_ids)
        scored = batch.labels.ne(IGNORE)
        logits = self.head(hidden[scored])
        with torch.no_grad():
            teacher_logits = self.teacher.head(teacher_hidden[scored])
        hard = encoder_loss("mlm", logits, batch.labels[scored])
        kl, cos = distillation_loss(logits, teacher_logits, hidden, teacher_hidden,
                                    batch.input_ids.ne(0), self.temperature)
        a_kl, a_mlm, a_cos = self.alphas
        loss = a_kl * kl + a_mlm * hard + a_cos * cos
        return EncoderOutput(loss, hard.detach(), logits, hidden, batch.n_tgt_tokens)
