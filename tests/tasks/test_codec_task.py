"""task: codec and codec-tts pieces without the CLI: seeded crop batches (a pure function of
the position, so resume is exact), reconstruction scores, the prompted VALL-E stream (same
voice prompts, stage from the position), the code cache keyed by the codec, recipe refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqformer.errors import ConfigError
from seqformer.models.encodec import EncodecConfig
from seqformer.recipe import recipe_from_dict
from seqformer.tasks.codec import BatchEncodec, CodecRun, CropStream, reconstruction_scores
from seqformer.tasks.valle import (
    PromptedStream,
    Utterance,
    codec_key,
    encode_splits,
    fixed_pairs,
)

TINY_CODEC = dict(sampling_rate=16000, num_filters=4, hidden_size=8,
                  upsampling_ratios=(4, 4, 4), codebook_size=16, target_bandwidths=(0.5, 1.0),
                  num_lstm_layers=1, mel_scales=(6, 7), n_mels=16, kmeans_iters=2)


def waves(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.3 * np.sin(np.arange(800 + 300 * i) / (3 + i))
             + 0.01 * rng.standard_normal(800 + 300 * i)).astype(np.float32) for i in range(n)]


def test_crop_stream_is_a_function_of_position() -> None:
    stream = CropStream(waves(), 1000, 3, seed=7)
    it = iter(stream)
    batches = [next(it).wave for _ in range(4)]
    assert batches[0].shape == (3, 1, 1000)
    state = stream.state_dict()
    after = next(it).wave
    resumed = CropStream(waves(), 1000, 3, seed=7)
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed)).wave, after)
    assert torch.equal(CropStream(waves(), 1000, 3, 7).batch_at(2).wave, batches[2])
    assert not torch.equal(CropStream(waves(), 1000, 3, 8).batch_at(2).wave, batches[2])
    # a short utterance is zero-padded at the end, never stretched
    short = CropStream([np.ones(10, np.float32)], 50, 1, 0).batch_at(0).wave
    assert short[0, 0, :10].eq(1).all() and short[0, 0, 10:].eq(0).all()


def test_reconstruction_scores_and_run_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = BatchEncodec(EncodecConfig(**TINY_CODEC))
    model.train()
    model(torch.from_numpy(np.stack([w[:800] for w in waves()]))[:, None])  # k-means init
    scores = reconstruction_scores(model, waves(2), 1.0)
    assert set(scores) == {"valid_loss", "time_l1", "mel_loss", "commitment", "mel_l1", "mcd"}
    assert scores["mcd"] > 0 and scores["mel_l1"] > 0
    model.save(tmp_path / "codec", {"bandwidth": 1.0})
    run = CodecRun.load(tmp_path / "codec")
    assert run.bandwidth == 1.0 and run.recipe is None and run.test_split() is None
    codes = run.encode(waves(1)[0])
    assert codes.shape == (run.model.n_q(1.0), -(-800 // 64))
    assert run.decode(codes).shape == (codes.shape[1] * 64,)
    # the cache of codes is reused only for the same codec and split
    from seqformer.data.spoken_words import SpokenSet

    splits = {"train": SpokenSet(waves(2), ["a", "b"])}
    first = encode_splits(splits, run, "fp", tmp_path / "codes.pt")
    stamp = (tmp_path / "codes.pt").stat().st_mtime_ns
    again = encode_splits(splits, run, "fp", tmp_path / "codes.pt")
    assert (tmp_path / "codes.pt").stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(first["train"], again["train"]))
    assert codec_key(run, "fp") != codec_key(run, "other")


def items() -> list[Utterance]:
    out = []
    for i in range(12):
        voice = ["a", "b", "c"][i % 3]
        out.append(Utterance([4 + i % 5, 5], torch.full((3, 2 + i % 4), i), voice))
    return out


def test_prompted_stream_same_voice_and_exact_resume() -> None:
    stream = PromptedStream(items(), 4, seed=3, space=[9], pad_id=0, n_q=3)
    batches = [stream.batch_at(p) for p in range(6)]
    for b in batches:
        assert 1 <= b.stage < 3
        for row in range(b.text.shape[0]):
            prompt_id = int(b.prompt[row, 0, 0])
            target_id = int(b.target[row, 0, 0])
            assert prompt_id % 3 == target_id % 3 and prompt_id != target_id  # same voice
            # text = prompt ids + space + target ids
            n = int(b.text_lengths[row])
            assert b.text[row, :n].tolist() == [4 + prompt_id % 5, 5, 9, 4 + target_id % 5, 5]
    assert len({b.stage for b in batches}) == 2
    again = PromptedStream(items(), 4, seed=3, space=[9], pad_id=0, n_q=3)
    again.load_state_dict({"position": 5})
    b = next(iter(again))
    assert torch.equal(b.prompt, batches[5].prompt) and b.stage == batches[5].stage
    pairs = fixed_pairs(items(), 1)

    def names(ps: list) -> list[tuple[int, int]]:
        return [(int(p.codes[0, 0]), int(t.codes[0, 0])) for p, t in ps]

    assert names(pairs) == names(fixed_pairs(items(), 1)) != names(fixed_pairs(items(), 2))
    assert all(p.voice == t.voice and p is not t for p, t in pairs)


def test_recipe_refusals() -> None:
    base = {"task": "codec", "model": {"sampling_rate": 16000}}
    assert recipe_from_dict(base).task == "codec"
    with pytest.raises(ConfigError, match="16000"):
        recipe_from_dict({"task": "codec"})
    with pytest.raises(ConfigError, match="bandwidth"):
        recipe_from_dict({**base, "bandwidth": 2.0})
    with pytest.raises(ConfigError, match="metric"):
        recipe_from_dict({**base, "train": {"metric": "cer"}})
    with pytest.raises(ConfigError, match="from_run"):
        recipe_from_dict({"task": "codec-tts"})
    with pytest.raises(ConfigError, match="n_q"):  # derived from the codec
        recipe_from_dict({"task": "codec-tts", "codec": {"from_run": "x"},
                          "model": {"n_q": 4}})
