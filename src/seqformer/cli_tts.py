"""Command-line bodies of text to speech (``task: text-to-speech``, family ``speecht5-tts``):
``train``, ``evaluate`` and ``speak``.

cli.py dispatches here on the recipe's task and on config.json's family; the subcommand
``speak`` is registered by :func:`add_parsers`. Errors a user can cause are
:class:`~seqformer.errors.UserError`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seqformer.errors import UserError


def describe(metrics: dict[str, float]) -> str:
    parts = [f"MCD {metrics['mcd']:.2f} dB", f"length ratio {metrics['len_ratio']:.2f}"]
    if "asr_cer_generated" in metrics:
        parts.append(f"ASR CER on generated speech {metrics['asr_cer_generated']:.1f} "
                     f"(on the recordings {metrics['asr_cer_recorded']:.1f}, on the recordings "
                     f"through the vocoder {metrics['asr_cer_vocoded']:.1f})")
    return "  ".join(parts)


def train_tts(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """``seqformer train`` for ``task: text-to-speech``: train, print the best checkpoint's test
    scores and write a few test words as WAV files."""
    from seqformer.cli import _interrupted
    from seqformer.tasks.tts import train_tts

    summary, results = train_tts(recipe, out, resume=args.resume)
    if _interrupted(args, summary, out):
        return 130
    if results:
        print(f"test ({int(results['n'])} utterances of unseen words): {describe(results)}")
    if summary.get("samples"):
        print(f"examples (Griffin-Lim vocoder): {', '.join(summary['samples'])}")
    print(f"model saved in {out}; say something with: seqformer speak --model {out} 'hello'")
    return 0


def evaluate_tts(args: argparse.Namespace) -> int:
    """``seqformer evaluate --model RUN`` for a text-to-speech run: MCD and length ratio on
    ``--data FILE.tsv`` (path.wav<TAB>text) or the recipe's test split; with ``--asr RUN`` also
    the round trip through a speech-recognition run."""
    from seqformer.cli import _device, data_or_test_split
    from seqformer.data.spoken_words import read_transcripts
    from seqformer.tasks.tts import Synthesizer, round_trip

    if len(args.model) != 1:
        raise UserError("evaluate: give one --model for a text-to-speech run")
    synthesizer = Synthesizer.load(args.model[0], _device(args.device))
    data, where = data_or_test_split(args, synthesizer, read_transcripts,
                                     "one --data TSV of path.wav<TAB>text lines",
                                     "FILE.tsv (path.wav<TAB>text lines)")
    metrics = synthesizer.evaluate(data)
    if getattr(args, "asr", None):
        from seqformer.cli_speech import load_transcriber

        transcriber = load_transcriber(args.asr, _device(args.device))
        trip = round_trip(synthesizer, data, data.words(), transcriber,
                          getattr(args, "vocoder", None) or "griffin-lim")
        metrics.update({k: v for k, v in trip.items() if k != "n"})
    print(f"{where} ({len(data)} utterances): {describe(metrics)}")
    return 0


def read_texts(args: argparse.Namespace) -> list[str]:
    """The texts to say: arguments, else lines of --input, else lines of stdin."""
    if args.text:
        return list(args.text)
    if args.input:
        from seqformer.data.corpus import read_text

        lines = read_text(args.input, "input file", "--input").splitlines()
    else:
        lines = sys.stdin.read().splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise UserError("speak: nothing to say; give TEXT arguments, --input FILE or stdin")
    return texts


def cmd_speak(args: argparse.Namespace) -> int:
    """``seqformer speak --model RUN TEXT ...``: one WAV file per text."""
    from seqformer.cli import _device, _family
    from seqformer.tasks.tts import Synthesizer

    if _family(args.model) == "valle":  # a codec language model: cli_codec
        from seqformer.cli_codec import speak_valle

        return speak_valle(args)
    if args.prompt is not None:
        raise UserError("--prompt is for a VALL-E (task: codec-tts) run; this model's voice "
                        "is chosen with --voice")
    texts = read_texts(args)
    synthesizer = Synthesizer.load(args.model, _device(args.device))
    if args.max_frames is not None:
        if args.max_frames < 1:
            raise UserError(f"--max-frames must be >= 1, got {args.max_frames}")
    embedding = None
    if args.speaker is not None:
        import numpy as np

        try:
            embedding = np.load(args.speaker, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"--speaker {args.speaker}: not a readable .npy array ({exc})"
                            ) from None
    waves = synthesizer.speak(texts, voice=args.voice, vocoder=args.vocoder,
                              max_frames=args.max_frames, speaker_embedding=embedding)
    write_speech(texts, waves, Path(args.out), synthesizer.features.sampling_rate,
                 synthesizer.unknown)
    return 0


def write_speech(texts: list[str], waves: list[Any], out: Path, rate: int, unknown: int = 0
                 ) -> None:
    """What ``speak`` does with its waveforms, for every kind of TTS run: ``out`` is the file
    for one text ending in .wav, else a directory of NNN-text.wav files; one line per file
    (path, seconds, text) on stdout, and a warning for characters the model read as unk."""
    from seqformer.decoding.vocoder import save_wav
    from seqformer.tasks.tts import wav_name

    if unknown:
        print(f"warning: {unknown} character(s) unknown to the model were read as <unk>",
              file=sys.stderr)
    one_file = len(texts) == 1 and out.suffix.lower() == ".wav"
    if not one_file:
        out.mkdir(parents=True, exist_ok=True)
    for i, (text, wave) in enumerate(zip(texts, waves)):
        path = out if one_file else out / wav_name(i, text)
        save_wav(path, wave, rate)
        print(f"{path}\t{len(wave) / rate:.2f} s\t{text}")


def add_parsers(sub: Any) -> None:
    """Register ``speak``."""
    p = sub.add_parser("speak", help="text to speech: write WAV files with a text-to-speech run")
    p.add_argument("text", nargs="*", help="texts to say (default: lines of --input or stdin)")
    p.add_argument("--input", help="file with one text per line")
    p.add_argument("--model", required=True, help="run directory of a 'task: text-to-speech' "
                   "recipe (or an imported SpeechT5)")
    p.add_argument("--out", default="speech", help="WAV file for one text, else a directory "
                   "(default ./speech/)")
    p.add_argument("--voice", default=None, help="which of a multi-voice model's voices "
                   "(default: the first)")
    p.add_argument("--speaker", default=None, metavar="FILE.npy", help="an imported SpeechT5's "
                   "speaker embedding (e.g. a 512-value x-vector saved with numpy.save)")
    p.add_argument("--prompt", default=None, metavar="WAV", help="VALL-E runs: a few seconds "
                   "of the voice to imitate (16-bit PCM WAV)")
    p.add_argument("--prompt-text", default=None, help="VALL-E runs: what --prompt says "
                   "(default: from the run's own data when it is one of its utterances)")
    p.add_argument("--vocoder", default="griffin-lim", help="griffin-lim (default) or the "
                   "directory of a HiFi-GAN vocoder (seqformer or Hugging Face SpeechT5HifiGan)")
    p.add_argument("--max-frames", type=int, default=None, help="longest output in "
                   "spectrogram frames")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_speak)
