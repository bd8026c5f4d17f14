"""``seqformer transduce`` decoding controls: each flag runs and shows its effect; bad values
are one-line errors with exit code 2."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from test_cli import error_of

from seqformer.cli import main

ALPHABET = "abcdefgh"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny reverse-the-letters model (source chars -> target words), trained in seconds."""
    root = tmp_path_factory.mktemp("flags")
    rng = random.Random(5)
    words = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(2, 6))) for _ in range(400)]
    (root / "train.tsv").write_text("".join(f"{w}\t{' '.join(reversed(w))}\n" for w in words))
    recipe = root / "tiny.yaml"
    recipe.write_text(f"""
data: {{train: {root / 'train.tsv'}, batch_tokens: 400, valid_decode: 10}}
tokenizer: {{source: char, target: word}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 16}}
train: {{max_steps: 30, lr: 0.003, warmup_steps: 10, eval_every: 30, save_every: 30,
         metric: wer, progress: false, device: cpu}}
""")
    assert main(["train", str(recipe), "--out", str(root / "run")]) == 0
    return root / "run"


def transduce(run: Path, capsys, *args: str) -> list[list[str]]:
    capsys.readouterr()
    assert main(["transduce", "--model", str(run), *args]) == 0
    lines = capsys.readouterr().out.split("\n")[:-1]  # keep empty outputs: one line each
    return [line.split() for line in lines]


def test_decoding_flags_run_and_take_effect(run: Path, capsys) -> None:
    inputs = ["abcab", "hgf", "aaaa", "bcd"]
    for beam in ("1", "3"):
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--min-length", "7"):
            assert len(out) >= 7
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--no-repeat-ngram", "1"):
            assert len(out) == len(set(out))
        # Unconstrained, this model says "h h h ..." and "b" for these inputs.
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--bad-words", "b", "h h"):
            assert "b" not in out and "h h" not in " ".join(out)
        for out in transduce(run, capsys, *inputs, "--beam", beam, "--prefix", "h g"):
            assert out[:2] == ["h", "g"]
        assert len(transduce(run, capsys, *inputs, "--beam", beam, "--repetition-penalty",
                             "1.5", "--penalty", "plain", "--alpha", "1")) == len(inputs)


def test_bad_flag_values_are_one_line_errors(run: Path, capsys) -> None:
    base = ["transduce", "--model", str(run), "abc"]
    assert "--min-length must be >= 0" in error_of(base + ["--min-length", "-1"], capsys)
    assert "--no-repeat-ngram must be >= 0" in error_of(base + ["--no-repeat-ngram", "-2"],
                                                        capsys)
    assert "--repetition-penalty must be > 0" in error_of(
        base + ["--repetition-penalty", "0"], capsys)
    assert "unknown to the target vocabulary" in error_of(base + ["--bad-words", "zz"], capsys)
    assert "--prefix" in error_of(base + ["--prefix", "q"], capsys)
    assert "no room below --max-length" in error_of(
        base + ["--min-length", "5", "--max-length", "5"], capsys)
    assert "1 <= --nbest <= --beam" in error_of(base + ["--nbest", "3", "--beam", "2"], capsys)


def test_an_ensemble_of_a_run_with_itself_decodes_like_the_run(run: Path, capsys,
                                                               tmp_path: Path) -> None:
    inputs = ["abcab", "hgf", "aaaa", "bcd", "hhgfe"]
    for beam in ("1", "4"):
        alone = transduce(run, capsys, *inputs, "--beam", beam)
        for rule in ("logprob", "prob"):
            assert transduce(run, capsys, *inputs, "--beam", beam, "--model", str(run),
                             "--combine", rule) == alone
    # Members with other tokenizers cannot be averaged token by token.
    import shutil

    from seqformer.data.tokenizer import load_tokenizer

    other = tmp_path / "other"
    shutil.copytree(run, other)
    vocab = other / "tokenizer" / "target" / "tokenizer.json"
    before = load_tokenizer(vocab.parent).fingerprint
    vocab.write_text(vocab.read_text().replace('"h"', '"H"'))
    recipe = other / "recipe.yaml"  # a consistent run of its own, just not run's twin
    recipe.write_text(recipe.read_text().replace(before,
                                                 load_tokenizer(vocab.parent).fingerprint))
    assert "same tokenizers" in error_of(
        ["transduce", "--model", str(run), "--model", str(other), "abc"], capsys)
    assert "takes one --model" in error_of(
        ["attention", "--model", str(run), "--model", str(run), "abc", "--out",
         str(tmp_path / "a.png")], capsys)


def test_evaluate_takes_the_decoding_controls(run: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "test.tsv"
    data.write_text("abc\tc b a\nhgf\tf g h\n")
    out = tmp_path / "hyp.tsv"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--min-length", "6",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "TER " in printed.out and "CER " in printed.out
    assert "BLEU signature: nrefs:1|case:mixed|eff:no|tok:13a" in printed.out
    assert "looks tokenized" not in printed.err
    tokenized = tmp_path / "tok.tsv"
    tokenized.write_text("abc\tc , b .\nhgf\tf g 's h .\n")
    assert main(["evaluate", "--model", str(run), "--data", str(tokenized), "--out",
                 str(tmp_path / "h2.tsv")]) == 0
    assert "looks tokenized" in capsys.readouterr().err
    hyps = [line.split("\t")[1].split() for line in out.read_text().splitlines()]
    assert len(hyps) == 2 and all(len(h) >= 6 for h in hyps)


def test_out_of_memory_in_a_batch_splits_it_and_changes_no_output(run: Path,
                                                                  monkeypatch) -> None:
    import torch

    from seqformer.tasks.transduction import Transducer

    transducer = Transducer.load(run)
    inputs = ["abcab", "hgf", "aaaa", "bcd", "hhgfe", "ab", "gfedcba", "ccc"]
    expected = [t.texts for t in transducer.transduce(inputs, beam=3, nbest=2)]
    step = transducer.model.step
    widths: list[int] = []

    def small_memory_step(tokens, state, *a, **k):
        widths.append(tokens.shape[0])
        if tokens.shape[0] > 6:  # at most two sentences x beam 3 fit
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return step(tokens, state, *a, **k)

    monkeypatch.setattr(transducer.model, "step", small_memory_step)
    assert [t.texts for t in transducer.transduce(inputs, beam=3, nbest=2)] == expected
    assert max(widths) > 6 and widths[-1] <= 6


def test_int8_decoding_replaces_the_linear_layers_and_keeps_the_outputs(run: Path,
                                                                         capsys) -> None:
    from torch import nn

    from seqformer.tasks.transduction import Transducer

    quantized = Transducer.load(run, int8=True).model
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    inputs = ["abcab", "hgf", "aaaa", "bcd", "hhgfe", "ab", "gfedcba", "ccc", "dhea", "bbgh"]
    full = transduce(run, capsys, *inputs, "--beam", "3")
    int8 = transduce(run, capsys, *inputs, "--beam", "3", "--int8")
    assert sum(a == b for a, b in zip(full, int8)) >= 8  # a few near-ties may flip
    plain = Transducer.load(run).model
    src = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a, _ = plain.step(torch.tensor([plain.bos_id]), plain.start(src))
        b, _ = quantized.step(torch.tensor([plain.bos_id]), quantized.start(src))
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_static_decoding_gives_the_dynamic_outputs_in_a_few_replayed_shapes(run: Path,
                                                                            capsys) -> None:
    from seqformer.tasks.transduction import Transducer

    rng = random.Random(9)
    inputs = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12)))
              for _ in range(60)]
    dynamic, static = Transducer.load(run), Transducer.load(run, static=True)
    for t in (dynamic, static):  # several batches per width, a partial one in each
        t.decode = dataclasses.replace(t.decode, batch_tokens=400)
    for beam, nbest in ((1, 1), (3, 2)):
        # An explicit bound: by default a static batch may grow to its rounded width's bound.
        ref = dynamic.transduce(inputs, beam=beam, nbest=nbest, max_length=10)
        ours = static.transduce(inputs, beam=beam, nbest=nbest, max_length=10)
        assert [t.texts for t in ours] == [t.texts for t in ref]
        for a, b in zip(ours, ref, strict=True):
            assert [h.score for h in a.hypotheses] == pytest.approx(
                [h.score for h in b.hypotheses], abs=1e-4)
    shapes = set(static._static._pool)
    assert {key[1] for key in shapes} <= {8, 16}  # source widths rounded to multiples of 8
    assert len(shapes) <= 12
    # The same file again needs no new shape: on a GPU every step replays a captured graph.
    static.transduce(inputs, beam=3, nbest=2, max_length=10)
    static.transduce(inputs[::-1], beam=1, max_length=10)
    assert set(static._static._pool) == shapes
    # Through the CLI, unbounded: one output per input, as many as without --static.
    assert len(transduce(run, capsys, *inputs[:5], "--static", "--beam", "2")) == 5


def test_static_ensembles_decode_like_dynamic_ones(run: Path, capsys, tmp_path: Path) -> None:
    inputs = ["abcab", "hgf", "aaaa", "bcd", "hhgfe", "gfedcbah"]
    for beam in ("1", "3"):
        args = [*inputs, "--beam", beam, "--max-length", "9", "--model", str(run)]
        assert transduce(run, capsys, *args, "--static") == transduce(run, capsys, *args)
    from seqformer.decoding.static import StaticDecoding
    from seqformer.tasks.transduction import Transducer

    both = Transducer.load_ensemble([run, run], static=True)
    both.transduce(inputs, max_length=9)
    assert [type(m) for m in both._static.decoders] == [StaticDecoding, StaticDecoding]
    assert all(m._pool for m in both._static.decoders)  # each member decoded fixed-shape
    assert "drop --static" in error_of(
        ["attention", "--model", str(run), "--static", "abc", "--out",
         str(tmp_path / "a.png")], capsys)
