from __future__ import annotations

import pytest
import torch

from seqformer.data.mlm import mask_tokens
from seqformer.errors import ConfigError
from seqformer.models.bert import BERTConfig, BERTModel, EncoderBatch
from seqformer.models.distil import (
    DistillingBERT,
    distillation_loss,
    make_student,
    student_layer_map,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine's 2 cores are shared: two torch threads contend and run ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def teacher(layers: int = 4) -> BERTModel:
    torch.manual_seed(0)
    return BERTModel(BERTConfig(vocab_size=40, d_model=16, heads=2, layers=layers, ffn_dim=32,
                                max_len=16, dropout=0.0, attention_dropout=0.0), "mlm").eval()


def batch() -> EncoderBatch:
    ids = torch.randint(5, 40, (4, 10), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1] = 1, 2
    ids[2, 6:] = 0
    inputs, labels = mask_tokens(ids, 40, torch.Generator().manual_seed(2), 0.5)
    return EncoderBatch(inputs, torch.zeros_like(ids), labels)


def test_student_starts_from_every_other_teacher_layer():
    t = teacher(4)
    s = make_student(t)
    assert student_layer_map(4) == [0, 2] and s.config.layers == 2
    for mine, theirs in ((0, 0), (1, 2)):
        assert torch.equal(s.bert.encoder.layers[mine].ffn.linear1.weight,
                           t.bert.encoder.layers[theirs].ffn.linear1.weight)
    assert torch.equal(s.head.transform.weight, t.head.transform.weight)
    with pytest.raises(ConfigError):
        student_layer_map(1)


def test_distillation_terms_are_zero_when_student_equals_teacher():
    t = teacher(2)
    b = batch()
    with torch.no_grad():
        hidden = t.bert(b.input_ids)
        logits = t.logits(b.input_ids)
    kl, cos = distillation_loss(logits, logits.clone(), hidden, hidden.clone(),
                                b.input_ids.ne(0))
    assert float(kl) == pytest.approx(0.0, abs=1e-6) and float(cos) == pytest.approx(0.0,
                                                                                     abs=1e-6)
    # The full distillation loss of a student identical to its teacher is its hard loss alone.
    same = DistillingBERT(t, t, alpha_kl=1.0, alpha_mlm=0.0, alpha_cos=1.0).eval()
    assert float(same(b).loss.detach()) == pytest.approx(0.0, abs=1e-5)
    # And a different student is penalised.
    student = make_student(teacher(4))
    with torch.no_grad():
        for param in student.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
    half = DistillingBERT(student, teacher(4), alpha_mlm=0.0).eval()
    assert float(half(b).loss.detach()) > 1e-2


def test_student_checkpoint_holds_only_the_student(tmp_path):
    t = teacher(4)
    d = DistillingBERT(make_student(t), t)
    assert set(d.state_dict()) == set(make_student(t).state_dict())
    d.save(tmp_path)
    assert BERTModel.load(tmp_path).config.layers == 2
