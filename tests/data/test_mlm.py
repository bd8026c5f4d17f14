from __future__ import annotations

import pytest
import torch

from seqformer.data.mlm import (
    MLMStream,
    build_pair_examples,
    collate,
    mask_tokens,
    pair_example,
    split_sentences,
)
from seqformer.models.bert import CLS_ID, IGNORE, MASK_ID, PAD_ID, SEP_ID


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine's 2 cores are shared: two torch threads contend and run ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


VOCAB = 1000


def big_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (64, 200), generator=g)
    ids[:, 0] = CLS_ID
    ids[:, 100] = SEP_ID
    ids[:, 150] = SEP_ID
    ids[::2, 151:] = PAD_ID
    return ids


def test_mask_rates_and_specials():
    ids = big_batch()
    inputs, labels = mask_tokens(ids, VOCAB, torch.Generator().manual_seed(1))
    candidates = ids >= 5
    selected = labels != IGNORE
    rate = selected.sum() / candidates.sum()
    assert abs(float(rate) - 0.15) < 0.01
    # Specials and padding never selected and never changed.
    assert not selected[~candidates].any()
    assert torch.equal(inputs[~candidates], ids[~candidates])
    # Labels hold the original ids where selected, -100 elsewhere.
    assert torch.equal(labels[selected], ids[selected])
    assert (labels[~selected] == IGNORE).all()
    # Unselected tokens are untouched.
    assert torch.equal(inputs[~selected], ids[~selected])
    n = float(selected.sum())
    masked = float((inputs[selected] == MASK_ID).sum()) / n
    kept = float((inputs[selected] == ids[selected]).sum()) / n
    randomised = 1.0 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(randomised - 0.1) < 0.02
    # Random replacements are ordinary tokens, never specials.
    swapped = selected & (inputs != MASK_ID) & (inputs != ids)
    assert (inputs[swapped] >= 5).all()


def test_stream_fresh_mask_each_epoch_and_exact_resume():
    examples = [pair_example(list(range(5, 5 + n)), list(range(20, 20 + n))) for n in
                range(3, 13)]
    stream = MLMStream(examples, batch_size=10, vocab_size=VOCAB, seed=3)
    batches = [b for _, b in zip(range(3), stream)]
    # One batch per epoch: same examples, different masks.
    assert not torch.equal(batches[0].labels, batches[1].labels)
    resumed = MLMStream(examples, batch_size=10, vocab_size=VOCAB, seed=3)
    resumed.load_state_dict({"position": 2})
    again = next(iter(resumed))
    assert torch.equal(again.input_ids, batches[2].input_ids)
    assert torch.equal(again.labels, batches[2].labels)


def test_pair_examples_layout_and_budget():
    docs = [[[10] * 4, [11] * 5, [12] * 6], [[13] * 40]]
    examples = build_pair_examples(docs, max_len=16, seed=0)
    for ids, types in examples:
        assert len(ids) <= 16 and len(ids) == len(types)
        assert ids[0] == CLS_ID and ids[-1] == SEP_ID
        first_sep = ids.index(SEP_ID)
        assert set(types[: first_sep + 1]) == {0}
        assert set(types[first_sep + 1:]) <= {1}
    kept = [t for ids, _ in examples for t in ids if t >= 5]
    assert sorted(kept) == sorted([10] * 4 + [11] * 5 + [12] * 6 + [13] * 40)
    ids, types = collate(examples)
    assert ids.shape == types.shape and (ids[:, 0] == CLS_ID).all()


def test_split_sentences():
    assert split_sentences("Hi there.  How are you? Fine!") == ["Hi there.", "How are you?",
                                                                "Fine!"]


def test_wordpiece_training_gives_the_same_vocabulary_in_every_process(tmp_path) -> None:
    """HF's WordPieceTrainer breaks frequency ties by hash order, which differs per process;
    ours must not: train in two fresh interpreters and compare."""
    import subprocess
    import sys

    texts = ["the cat sat on the mat", "a dog ran in the park", "cats and dogs ran",
             "the unaffable cat is chasing the mouse"] * 20
    script = ("import sys, json\nfrom seqformer.data.wordpiece import train_wordpiece\n"
              "tok = train_wordpiece(json.load(open(sys.argv[1])), 80, 1)\n"
              "print(tok.fingerprint, tok.vocab_size)\n")
    (tmp_path / "texts.json").write_text(__import__("json").dumps(texts))
    runs = [subprocess.run([sys.executable, "-c", script, str(tmp_path / "texts.json")],
                           capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].strip()
