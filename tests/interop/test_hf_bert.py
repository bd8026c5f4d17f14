"""Parity with Hugging Face BERT: same weights in, same hidden states and logits out."""

from __future__ import annotations

import pytest
import torch

from seqformer.errors import CheckpointError
from seqformer.interop.hf_bert import config_from_hf, hf_to_seqformer, seqformer_to_hf
from seqformer.models.bert import BERTConfig, BERTModel


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine's 2 cores are shared: two torch threads contend and run ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


transformers = pytest.importorskip("transformers")


def hf_config():
    return transformers.BertConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=48,
                                   max_position_embeddings=24, type_vocab_size=2)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 61, (3, 11), generator=g)
    ids[:, 0] = 1
    ids[1, 7:] = 0  # padding in the batch
    ids[2, 4:] = 0
    types = torch.zeros_like(ids)
    types[0, 6:] = 1
    types[1, 4:7] = 1
    return ids, types


def ours_from(hf_model, head: str, labels: int = 0) -> BERTModel:
    config = BERTConfig(**config_from_hf(hf_model.config))
    model = BERTModel(config, head, [f"l{i}" for i in range(labels)]).eval()
    state = hf_to_seqformer(hf_model.state_dict())
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    return model, missing


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    scale = max(1.0, float(b.abs().max()))
    assert float((a - b).abs().max()) <= tol * scale


@torch.no_grad()
def test_bert_model_hidden_states_match_with_padding():
    torch.manual_seed(0)
    hf = transformers.BertModel(hf_config()).eval()
    ours, missing = ours_from(hf, "classify", labels=2)
    assert set(missing) == {"head.classifier.weight", "head.classifier.bias"}
    ids, types = batch()
    ref = hf(input_ids=ids, token_type_ids=types, attention_mask=ids.ne(0).long(),
             output_hidden_states=True)
    hidden, states = ours.bert(ids, types, all_hidden=True)
    real = ids.ne(0)
    close(hidden[real], ref.last_hidden_state[real])
    for mine, theirs in zip(states, ref.hidden_states, strict=True):
        close(mine[real], theirs[real])
    close(ours.head.pooled(hidden), ref.pooler_output)


@torch.no_grad()
def test_masked_lm_logits_match():
    torch.manual_seed(1)
    hf = transformers.BertForMaskedLM(hf_config()).eval()
    ours, missing = ours_from(hf, "mlm")
    assert not missing
    ids, types = batch()
    ref = hf(input_ids=ids, token_type_ids=types, attention_mask=ids.ne(0).long()).logits
    real = ids.ne(0)
    close(ours.logits(ids, types)[real], ref[real], 1e-4)
    # The decoder stays tied to the word embeddings after loading.
    assert ours.head.decoder.weight.data_ptr() == ours.bert.embeddings.word.weight.data_ptr()


@torch.no_grad()
@pytest.mark.parametrize("cls_name,head", [("BertForSequenceClassification", "classify"),
                                           ("BertForTokenClassification", "tag"),
                                           ("BertForQuestionAnswering", "qa")])
def test_task_heads_match(cls_name, head):
    torch.manual_seed(2)
    config = hf_config()
    config.num_labels = 3 if head != "qa" else 2
    hf = getattr(transformers, cls_name)(config).eval()
    ours, missing = ours_from(hf, head, labels=3 if head != "qa" else 0)
    assert not missing
    ids, types = batch()
    out = hf(input_ids=ids, token_type_ids=types, attention_mask=ids.ne(0).long())
    mine = ours.logits(ids, types)
    if head == "classify":
        close(mine, out.logits, 1e-4)
    elif head == "tag":
        real = ids.ne(0)
        close(mine[real], out.logits[real], 1e-4)
    else:
        real = ids.ne(0)
        close(mine[..., 0][real], out.start_logits[real], 1e-4)
        close(mine[..., 1][real], out.end_logits[real], 1e-4)


def test_mapping_round_trips_both_ways():
    torch.manual_seed(3)
    hf = transformers.BertForMaskedLM(hf_config())
    hf_state = hf.state_dict()
    back = seqformer_to_hf(hf_to_seqformer(hf_state))
    expected = {k for k in hf_state if not k.endswith(("position_ids", "token_type_ids"))}
    assert set(back) == expected
    for key in expected:
        assert torch.equal(back[key], hf_state[key])
    ours = BERTModel(BERTConfig(**config_from_hf(hf.config)), "mlm")
    assert set(hf_to_seqformer(seqformer_to_hf(ours.state_dict()))) == set(ours.state_dict())


def test_unknown_weight_is_a_clear_error():
    with pytest.raises(CheckpointError, match="bert.encoder.layer.0.crossattention"):
        hf_to_seqformer({"bert.encoder.layer.0.crossattention.self.query.weight":
                         torch.zeros(2, 2)})


@torch.no_grad()
def test_layer_features_equal_transformers_hidden_states():
    """BERT's feature-based recipe on the reference model: concatenated / summed hidden
    states of chosen layers, as a user would build them from HF's ``hidden_states``."""
    torch.manual_seed(1)
    hf = transformers.BertModel(hf_config()).eval()
    ours, _ = ours_from(hf, "classify", labels=2)
    ids, types = batch()
    ref = hf(input_ids=ids, token_type_ids=types, attention_mask=ids.ne(0).long(),
             output_hidden_states=True).hidden_states  # embeddings, layer 1, layer 2
    real = ids.ne(0)
    concat = ours.token_states(ids, types, [-3, -1], "concat")
    close(concat[real], torch.cat([ref[0], ref[2]], dim=-1)[real])
    summed = ours.token_states(ids, types, [1, 2], "sum")
    close(summed[real], (ref[1] + ref[2])[real])
    pooled = ours.embed(ids, types, "mean", [0, 1, 2], "mean")
    keep = real.unsqueeze(-1).float()
    mean_ref = ((ref[0] + ref[1] + ref[2]) / 3 * keep).sum(1) / keep.sum(1)
    close(pooled, mean_ref)
