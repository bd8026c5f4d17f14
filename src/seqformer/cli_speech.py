"""Bodies of the speech-to-text commands; ``cli.py`` only dispatches to them.

``train`` with ``task: speech-to-text`` (Whisper), ``speech-pretrain`` and ``speech-ctc``
(wav2vec 2.0 family), ``evaluate`` of a ``family: whisper`` or ``wav2vec2-ctc`` run and
``transcribe`` (registered here by :func:`add_parsers`), which take either kind of run. Errors
a user can cause are :class:`~seqformer.errors.UserError`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def train_speech(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """Train a Whisper; print test CER/WER of the best checkpoint, greedy and beam."""
    from seqformer.cli import _interrupted
    from seqformer.tasks.speech import describe, train_speech

    summary, results = train_speech(recipe, out, resume=args.resume)
    if _interrupted(args, summary, out):
        return 130
    for name, metrics in results.items():
        print(f"test ({int(metrics['n'])} utterances, unseen words and voices), {name}: "
              f"{describe(metrics)}")
    print(f"model saved in {out}")
    return 0


def train_ssl(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """Pretrain a speech encoder (print the best validation metrics) or train a CTC model
    (print test CER/WER, greedy and beam)."""
    from seqformer.cli import _interrupted
    from seqformer.recipe_ssl import PretrainRecipe
    from seqformer.tasks.speech import describe

    if isinstance(recipe, PretrainRecipe):
        from seqformer.tasks.speech_ssl import train_pretrain

        summary, best = train_pretrain(recipe, out, resume=args.resume)
        if _interrupted(args, summary, out):
            return 130
        print("best checkpoint on the validation audio: " + "  ".join(
            f"{k.removeprefix('valid_')} {v:.4f}" for k, v in best.items()))
        print(f"pretrained encoder saved in {out}; fine-tune it with a 'task: speech-ctc' "
              f"recipe and init_from: {out}")
        return 0
    from seqformer.tasks.speech_ctc import train_ctc

    summary, results = train_ctc(recipe, out, resume=args.resume)
    if _interrupted(args, summary, out):
        return 130
    for name, metrics in results.items():
        print(f"test ({int(metrics['n'])} utterances), {name}: {describe(metrics)}")
    print(f"model saved in {out}")
    return 0


def load_transcriber(run_dir: str, device: str) -> Any:
    """The inference side of a speech-to-text run of either family: a Whisper (encoder-
    decoder) or a wav2vec 2.0-shaped CTC model."""
    from seqformer.cli import _family

    if _family(run_dir) == "wav2vec2-ctc":
        from seqformer.tasks.speech_ctc import CTCTranscriber

        return CTCTranscriber.load(run_dir, device)
    from seqformer.tasks.speech import Transcriber

    return Transcriber.load(run_dir, device)


def evaluate_speech(args: argparse.Namespace) -> int:
    """CER/WER of a Whisper run on ``--data FILE.tsv`` (path.wav<TAB>transcript) or on its
    recipe's test split."""
    from seqformer.cli import _device, data_or_test_split
    from seqformer.tasks.speech import describe

    if len(args.model) != 1:
        raise UserError("evaluate: give one --model for a speech-to-text model")
    transcriber = load_transcriber(args.model[0], _device(args.device))
    # Clips are read as the model levels audio (an imported one hears them raw, as in HF).
    data, where = data_or_test_split(args, transcriber, transcriber.read_transcripts,
                                     "one --data TSV of path.wav<TAB>transcript lines",
                                     "FILE.tsv (path.wav<TAB>transcript lines)")
    metrics = transcriber.evaluate(data, beam=args.beam, alpha=args.alpha)
    beam = args.beam or transcriber.decode.beam
    print(f"{where} ({len(data)} utterances, {'greedy' if beam <= 1 else f'beam {beam}'}): "
          f"{describe(metrics)}")
    lines = [f"{s}\t{h}\t{t}" for s, h, t in
             zip(data.sources, transcriber.last_hypotheses, data.texts)]
    out = Path(args.out) if args.out else Path(args.model[0]) / "eval.hyp.tsv"
    out.write_text("source\thypothesis\treference\n" + "\n".join(lines) + "\n",
                   encoding="utf-8")
    print(f"hypotheses written to {out}")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from seqformer.cli import _device

    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    transcriber = load_transcriber(args.model, _device(args.device))
    steer = {k: v for k, v in (("language", args.language), ("task", args.task)) if v}
    if steer:
        from seqformer.tasks.speech import Transcriber

        if not isinstance(transcriber, Transcriber):
            raise UserError(f"--{next(iter(steer))} is for an imported multilingual Whisper; "
                            f"{args.model} is a CTC model")
    if args.min_silence <= 0:
        raise UserError(f"--min-silence must be > 0 seconds, got {args.min_silence}")
    from seqformer.tasks.long_form import joined, transcribe_segments

    # Recordings longer than the model's window are split at pauses (--segment: all of them).
    pieces = transcribe_segments(transcriber, args.wav, args.segment, args.min_silence,
                                 beam=args.beam, alpha=args.alpha, max_length=args.max_length,
                                 **steer)
    named = len(args.wav) > 1 or args.show_source
    for path, row in zip(args.wav, pieces, strict=True):
        if args.timestamps:
            for piece in row:
                line = f"{piece.start:.2f}-{piece.end:.2f}\t{piece.text}"
                print(f"{path}\t{line}" if named else line)
            continue
        text = joined(row)
        print(f"{path}\t{text}" if named else text)
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``transcribe``."""
    p = sub.add_parser("transcribe", help="speech to text: transcribe WAV files with a "
                       "speech-to-text run")
    p.add_argument("wav", nargs="+", help="16-bit PCM WAV files (any rate; mono or averaged)")
    p.add_argument("--model", required=True, help="run directory of a 'task: speech-to-text' "
                   "or 'speech-ctc' recipe (or an imported Whisper, or wav2vec2 / HuBERT CTC "
                   "model with its vocab.json)")
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default "
                   "from the recipe)")
    p.add_argument("--alpha", type=float, default=None, help="length penalty alpha")
    p.add_argument("--max-length", type=int, default=None, help="maximum output tokens")
    p.add_argument("--show-source", action="store_true", help="print path<TAB>text even for "
                   "one file")
    p.add_argument("--language", default=None, help="imported multilingual Whisper: language "
                   "code or name (en, fr, english); default: the checkpoint's, else detected")
    p.add_argument("--task", choices=["transcribe", "translate"], default=None,
                   help="imported multilingual Whisper: transcribe (default) or translate to "
                   "English")
    p.add_argument("--segment", action="store_true", help="split every recording at its "
                   "pauses and transcribe the pieces (recordings longer than the model's "
                   "window are always split)")
    p.add_argument("--min-silence", type=float, default=0.3, help="seconds of quiet that "
                   "count as a pause to split at (default 0.3)")
    p.add_argument("--timestamps", action="store_true", help="print each piece as "
                   "start-end<TAB>text (seconds) instead of one line per recording")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_transcribe)
