"""Training an EnCodec on speech (``task: codec``, family ``encodec``).

The codec learns from the spoken-words training split's *audio* only (``data/spoken_words.py``;
transcripts unread): each batch is ``batch_size`` random ``segment_ms`` crops (an utterance
shorter than that is zero-padded at the end), utterances and offsets drawn from a generator
seeded by (seed, batch position), so a batch is a pure function of the stream's one-int state
and ``--resume`` repeats exactly the batches an uninterrupted run would have seen. The
bandwidth of each batch (EnCodec's quantizer dropout) is drawn inside the model from torch's
RNG, which the Trainer seeds and restores.

Scores. The losses the codec is trained on (time L1, multi-scale log-mel, commitment) at the
recipe's ``bandwidth``, plus what a listener is closer to: the L1 distance (log10 units)
between the SpeechT5 log-mel spectrograms (``data/tts_mel.py``) of input and reconstruction,
and their MCD (``metrics/mcd.py``; DTW changes nothing here, the two are frame-aligned, but it
is the same figure the TTS tasks report, so the codec's MCD is the floor a codec TTS can
reach). :class:`CodecRun` is the inference side (``evaluate``, corpus encoding for VALL-E).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml

from seqformer.data.device import to_device
from seqformer.data.mlm import PositionStream
from seqformer.data.spoken_words import SpokenSet, load_spoken_words
from seqformer.data.tts_mel import TTSMel
from seqformer.errors import CheckpointError, DataError
from seqformer.metrics.mcd import mcd_dtw
from seqformer.models.encodec import Encodec
from seqformer.recipe_codec import CodecRecipe, codec_recipe_from_dict
from seqformer.tasks.rundir import check_same_split, log, write_run_metadata
from seqformer.training.trainer import Trainer


@dataclass
class WaveCropBatch:
    """(B, 1, samples) crops; counted in samples for the Trainer's throughput."""

    wave: torch.Tensor
    count_unit: ClassVar[str] = "samples"

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.wave.numel())

    def to(self, device: torch.device | str) -> WaveCropBatch:
        return WaveCropBatch(to_device(self.wave, device))


class BatchEncodec(Encodec):
    """An :class:`Encodec` whose ``forward`` also takes a :class:`WaveCropBatch` (the Trainer
    calls ``model(batch)``); same weights and names, saved as family ``encodec``."""

    def forward(self, wave: Any, bandwidth: float | None = None) -> Any:
        return super().forward(wave.wave if isinstance(wave, WaveCropBatch) else wave,
                               bandwidth)


class CropStream(PositionStream):
    """Endless batches of random fixed-length crops of ``waveforms``; batch ``n`` is a pure
    function of (seed, n), so the state is the position (the Trainer's stream contract). An
    "epoch" is as many batches as it takes to draw ``len(waveforms)`` crops."""

    def __init__(self, waveforms: Sequence[np.ndarray], segment: int, batch_size: int,
                 seed: int) -> None:
        if not waveforms:
            raise DataError("no training audio; check the recipe's data section")
        self.waveforms, self.segment = list(waveforms), segment
        self.batch_size, self.seed = batch_size, seed
        self.per_epoch = max(1, -(-len(self.waveforms) // batch_size))
        self.position = 0

    def batch_at(self, position: int) -> WaveCropBatch:
        rng = random.Random(f"seqformer.codec.crops:{self.seed}:{position}")
        out = np.zeros((self.batch_size, 1, self.segment), np.float32)
        for row in range(self.batch_size):
            wave = self.waveforms[rng.randrange(len(self.waveforms))]
            start = rng.randrange(max(1, len(wave) - self.segment + 1))
            piece = wave[start:start + self.segment]
            out[row, 0, :len(piece)] = piece
        return WaveCropBatch(torch.from_numpy(out))



def load_codec_splits(recipe: CodecRecipe) -> tuple[dict[str, SpokenSet], str]:
    """The spoken-words splits of the recipe (synthesised or from the cache) and their
    fingerprint."""
    d = recipe.data
    splits, fingerprint = load_spoken_words(d.max_words, d.min_letters, d.max_letters, d.accents,
                                            d.voices_per_word, d.valid_variants,
                                            d.test_variants, d.split_seed, d.espeak, log)
    return dict(splits), fingerprint


@torch.no_grad()
def reconstruction_scores(model: Encodec, waveforms: Sequence[np.ndarray], bandwidth: float,
                          features: TTSMel | None = None) -> dict[str, float]:
    """Mean losses and spectrogram distances of each waveform coded whole at ``bandwidth``
    (eval mode: codes from the nearest codewords, no quantizer dropout)."""
    if not waveforms:
        raise DataError("nothing to evaluate: no utterances")
    features = features or TTSMel()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    for samples in waveforms:
        wave = torch.as_tensor(np.asarray(samples, np.float32), device=device).view(1, 1, -1)
        out = model(wave, bandwidth)
        real, coded = features(samples), features(out.audio.reshape(-1).cpu())
        scores = {"valid_loss": float(out.loss), "time_l1": float(out.time_loss),
                  "mel_loss": float(out.mel_loss), "commitment": float(out.commitment_loss),
                  "mel_l1": float((real - coded).abs().mean()), "mcd": mcd_dtw(coded, real)}
        for key, value in scores.items():
            sums[key] = sums.get(key, 0.0) + value
    model.train(was_training)
    return {key: value / len(waveforms) for key, value in sums.items()}


def train_codec(recipe: CodecRecipe, out_dir: str | Path, resume: bool = False
                ) -> tuple[dict, dict[str, float]]:
    """Train into ``out_dir``; returns the trainer summary and the best checkpoint's test
    scores, also written to ``test_metrics.json``."""
    from seqformer.tasks.encoder import check_resumable

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    config = recipe.model_config()
    splits, split_fp = load_codec_splits(recipe)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    torch.manual_seed(recipe.train.seed)
    model = BatchEncodec(config)
    segment = recipe.data.segment_ms * config.sampling_rate // 1000
    stream = CropStream(train.waveforms, segment, recipe.data.batch_size, recipe.train.seed)
    bandwidth = recipe.score_bandwidth
    seconds = sum(len(w) for w in train.waveforms) / config.sampling_rate
    log(f"data: {len(train)} train utterances ({seconds / 60:.1f} min of audio) / {len(valid)} "
        f"valid / {len(test)} test (split {split_fp}); crops of {segment} samples")
    log(f"model: EnCodec {model.num_parameters() / 1e6:.2f}M parameters, hop "
        f"{config.hop_length} ({config.frame_rate} frames/s), {config.num_quantizers} "
        f"codebooks of {config.codebook_size}, bandwidths {list(config.target_bandwidths)} "
        f"kbps (scored at {bandwidth}: {config.codebooks_for(bandwidth)} codebooks)")
    n_valid = recipe.data.valid_utterances or len(valid)
    valid_waves = valid.waveforms[:n_valid]
    features = TTSMel()

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split_fp},
                           model.config_json({"bandwidth": bandwidth}))

    save_run(out)
    trainer = Trainer(model, recipe.train, stream, out,
                      validate=lambda m: reconstruction_scores(m, valid_waves, bandwidth,
                                                               features),
                      on_save=save_run)
    summary = trainer.train(resume=resume)
    results: dict[str, float] = {}
    if not summary.get("interrupted"):
        best = CodecRun.load(out, str(trainer.device))
        results = {**best.evaluate(test), "n": float(len(test))}
        (out / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n",
                                               encoding="utf-8")
    return summary, results


class CodecRun:
    """A trained EnCodec with its recipe: ``encode`` / ``decode`` waveforms at the run's
    bandwidth, ``evaluate`` recordings, ``test_split``."""

    def __init__(self, model: Encodec, bandwidth: float, recipe: CodecRecipe | None,
                 run_dir: Path) -> None:
        self.model, self.bandwidth = model.eval(), bandwidth
        self.recipe, self.run_dir = recipe, run_dir

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> CodecRun:
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir}: no config.json; give the directory of a "
                                  "'task: codec' run (seqformer train encodec-spoken-words)")
        model = Encodec.load(run_dir, device)
        settings = Encodec.read_config(run_dir).get("audio") or {}
        bandwidth = settings.get("bandwidth") or model.config.target_bandwidths[-1]
        recipe = None
        path = run_dir / "recipe.yaml"
        if path.is_file():
            recipe = codec_recipe_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")),
                                            str(path))
            if not isinstance(recipe, CodecRecipe):
                recipe = None
        return cls(model, float(bandwidth), recipe, run_dir)

    @property
    def sampling_rate(self) -> int:
        return self.model.config.sampling_rate

    @torch.no_grad()
    def encode(self, samples: np.ndarray, bandwidth: float | None = None) -> torch.Tensor:
        """Codes (n_q, frames) of one mono waveform."""
        device = next(self.model.parameters()).device
        wave = torch.as_tensor(np.asarray(samples, np.float32), device=device).view(1, 1, -1)
        return self.model.encode(wave, bandwidth or self.bandwidth).codes[0].cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """Mono float waveform of codes (n_q, frames)."""
        device = next(self.model.parameters()).device
        wave = self.model.decode(codes.unsqueeze(0).to(device))
        return wave.reshape(-1).float().cpu().numpy()

    def evaluate(self, data: SpokenSet) -> dict[str, float]:
        return reconstruction_scores(self.model, data.waveforms, self.bandwidth)

    def test_split(self) -> SpokenSet | None:
        if self.recipe is None:
            return None
        splits, fingerprint = load_codec_splits(self.recipe)
        check_same_split(self.recipe, fingerprint, self.run_dir / "recipe.yaml",
                         "give --data FILE.tsv instead")
        return splits["test"]
