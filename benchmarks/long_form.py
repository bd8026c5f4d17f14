"""Long-form transcription on real (synthetic-voice) speech: the recipe's test utterances strung
together with pauses, transcribed through ``tasks.long_form`` and scored against the same
utterances transcribed one by one.

    python benchmarks/long_form.py --model runs/ctc-hubert-unfrozen --words 5 --gap 0.5

Any speech-to-text run with a recipe (Whisper-shaped or CTC) works. Recordings of ``--words``
consecutive test utterances, ``--gap`` seconds of silence between them (plus noise at
``--snr`` dB if given, so the pauses are not digital silence), are split at their pauses
(``segment=True``). Reported: how many recordings were cut into exactly as many pieces as they
hold words, CER/WER of the joined transcripts against the joined references, and the same for
the utterances transcribed alone -- equal when the pieces are the utterances.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import emit, hardware

from seqformer.cli_speech import load_transcriber
from seqformer.tasks.long_form import joined, transcribe_segments
from seqformer.tasks.speech import scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--words", type=int, default=5, help="utterances per recording")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between utterances")
    parser.add_argument("--snr", type=float, default=None,
                        help="add white noise at this SNR (dB) to the whole recording")
    parser.add_argument("--min-silence", type=float, default=0.3)
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    transcriber = load_transcriber(args.model, "cpu")
    test = transcriber.test_split()
    if test is None:
        raise SystemExit(f"{args.model}: no recipe test split to string together")
    waves, texts = list(test.waveforms), list(test.texts)
    rng = np.random.default_rng(0)
    gap = np.zeros(int(args.gap * 16000), dtype=np.float32)
    recordings, references, groups = [], [], []
    for start in range(0, len(waves) - args.words + 1, args.words):
        group = list(range(start, start + args.words))
        parts = [gap] + [x for i in group for x in (waves[i], gap)]
        wave = np.concatenate(parts).astype(np.float32)
        if args.snr is not None:
            rms = float(np.sqrt(np.mean(np.concatenate([waves[i] for i in group]) ** 2)))
            wave = wave + rng.standard_normal(len(wave)).astype(np.float32) * rms * 10 ** (
                -args.snr / 20)
        recordings.append(wave)
        references.append(" ".join(texts[i] for i in group))
        groups.append(group)

    t0 = time.perf_counter()
    pieces = transcribe_segments(transcriber, recordings, segment=True,
                                 min_silence=args.min_silence, beam=args.beam)
    long_s = time.perf_counter() - t0
    long_texts = [joined(row) for row in pieces]
    t0 = time.perf_counter()
    alone = transcriber.transcribe([waves[i] for g in groups for i in g], beam=args.beam)
    alone_s = time.perf_counter() - t0
    alone_joined = [" ".join(alone[k * args.words:(k + 1) * args.words])
                    for k in range(len(groups))]
    long_scores = scores(long_texts, references)
    alone_scores = scores(alone_joined, references)
    exact = sum(len(row) == args.words for row in pieces)
    print(f"{len(recordings)} recordings of {args.words} utterances, gap {args.gap} s"
          f"{'' if args.snr is None else f', noise at {args.snr} dB SNR'}")
    print(f"  cut into exactly {args.words} pieces: {exact} / {len(recordings)}")
    print(f"  long-form: CER {long_scores['cer']:.2f} WER {long_scores['wer']:.2f} "
          f"({long_s:.1f} s)")
    print(f"  one by one: CER {alone_scores['cer']:.2f} WER {alone_scores['wer']:.2f} "
          f"({alone_s:.1f} s)")
    print(f"  same transcript: {sum(a == b for a, b in zip(long_texts, alone_joined))} / "
          f"{len(recordings)}")
    emit({"benchmark": "long_form", "hardware": hardware(), "model": args.model,
          "words": args.words, "gap": args.gap, "snr": args.snr, "recordings": len(recordings),
          "exact_pieces": exact, "long_cer": long_scores["cer"], "long_wer": long_scores["wer"],
          "alone_cer": alone_scores["cer"], "alone_wer": alone_scores["wer"]}, args.json)


if __name__ == "__main__":
    main()
