"""Command-line bodies of the neural-codec family: ``task: codec`` (train an EnCodec on speech,
family ``encodec``) and ``task: codec-tts`` (a VALL-E codec language model on its codes, family
``valle``): ``train``, ``evaluate`` and, for VALL-E runs, ``speak``.

cli.py dispatches here on the recipe's task and on config.json's family; cli_tts.py hands
``speak`` here for family ``valle``. Errors a user can cause are one-line
:class:`~seqformer.errors.UserError` / DataError / CheckpointError (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def describe_codec(metrics: dict[str, float]) -> str:
    return (f"mel L1 {metrics['mel_l1']:.3f}  MCD {metrics['mcd']:.2f} dB  (losses: time L1 "
            f"{metrics['time_l1']:.4f}, multi-scale mel {metrics['mel_loss']:.3f}, commitment "
            f"{metrics['commitment']:.4f})")


def describe_valle(metrics: dict[str, float]) -> str:
    return (f"MCD {metrics['mcd']:.2f} dB  length ratio {metrics['len_ratio']:.2f}  (the codec "
            f"alone, coding the recordings: MCD {metrics['codec_mcd']:.2f} dB)")


def train_codec(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """``seqformer train`` for ``task: codec`` and ``task: codec-tts``."""
    from seqformer.cli import _interrupted

    if recipe.task == "codec":
        from seqformer.tasks.codec import train_codec as train

        summary, results = train(recipe, out, resume=args.resume)
        if _interrupted(args, summary, out):
            return 130
        if results:
            print(f"test ({int(results['n'])} utterances of unseen words and voices, "
                  f"{recipe.score_bandwidth} kbps): {describe_codec(results)}")
        print(f"codec saved in {out}; score it with: seqformer evaluate --model {out}")
        return 0
    from seqformer.tasks.valle import train_valle

    summary, results = train_valle(recipe, out, resume=args.resume)
    if _interrupted(args, summary, out):
        return 130
    if results:
        print(f"test ({int(results['n'])} utterances of unseen words, prompted by another word "
              f"of the same voice): {describe_valle(results)}")
        paths = results.get("samples") or []
        if paths:
            print(f"examples: {', '.join(str(p) for p in paths)}")
    print(f"model saved in {out}; say something with: seqformer speak --model {out} 'hello'")
    return 0


def evaluate_codec(args: argparse.Namespace) -> int:
    """``seqformer evaluate --model RUN`` for an EnCodec or VALL-E run: on ``--data
    FILE.tsv`` (path.wav<TAB>text) or the recipe's test split."""
    from seqformer.cli import _device, _family, data_or_test_split
    from seqformer.data.spoken_words import read_transcripts

    if len(args.model) != 1:
        raise UserError("evaluate: give one --model for a codec or VALL-E run")
    run_dir = args.model[0]
    if _family(run_dir) == "encodec":
        from seqformer.tasks.codec import CodecRun

        run = CodecRun.load(run_dir, _device(args.device))
        data, where = data_or_test_split(args, run, read_transcripts,
                                         "one --data TSV of path.wav<TAB>text lines",
                                         "FILE.tsv (path.wav<TAB>text lines)")
        metrics = run.evaluate(data)
        print(f"{where} ({len(data)} utterances, {run.bandwidth} kbps): "
              f"{describe_codec(metrics)}")
        return 0
    from seqformer.tasks.valle import CodecSpeaker

    speaker = CodecSpeaker.load(run_dir, _device(args.device))
    data, where = data_or_test_split(args, speaker, read_transcripts,
                                     "one --data TSV of path.wav<TAB>text lines",
                                     "FILE.tsv (path.wav<TAB>text lines)")
    metrics = speaker.evaluate(data)
    line = describe_valle(metrics)
    if getattr(args, "asr", None):
        from seqformer.cli_speech import load_transcriber

        trip = speaker.round_trip(data, load_transcriber(args.asr, _device(args.device)))
        line += (f"  ASR CER on generated speech {trip['asr_cer_generated']:.1f} (on the "
                 f"recordings {trip['asr_cer_recorded']:.1f})")
    print(f"{where} ({int(metrics['n'])} utterances): {line}")
    return 0


def speak_valle(args: argparse.Namespace) -> int:
    """``seqformer speak --model VALLE_RUN [--prompt WAV --prompt-text TEXT] TEXT ...``: one
    WAV per text, in the prompt's voice (default: a training utterance of the run's first
    voice)."""
    from seqformer.cli import _device
    from seqformer.cli_tts import read_texts, write_speech
    from seqformer.tasks.valle import CodecSpeaker

    if args.voice is not None:
        raise UserError("--voice is for SpeechT5 runs; a VALL-E run takes the voice of "
                        "--prompt WAV (with --prompt-text)")
    if args.vocoder not in (None, "griffin-lim"):
        raise UserError("--vocoder: a VALL-E run makes audio with its own codec; leave "
                        "--vocoder out")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}")
    texts = read_texts(args)
    speaker = CodecSpeaker.load(args.model, _device(args.device))
    prompt = speaker.prompt_from_wav(args.prompt, args.prompt_text) if args.prompt else None
    if prompt is None and args.prompt_text is not None:
        raise UserError("--prompt-text says what --prompt WAV says; give --prompt too")
    waves = speaker.speak(texts, prompt, max_frames=args.max_frames)
    write_speech(texts, waves, Path(args.out), speaker.sampling_rate, speaker.unknown)
    return 0
