"""Spoken words for audio classification: a corpus synthesised by espeak-ng, or the user's WAVs.

``speech-commands`` (a small, synthetic cousin of Google's Speech Commands) is a fixed list of
command words (:data:`WORDS`: yes no up down left right on off stop go) spoken by many voices
of Debian's ``espeak-ng`` program (``apt-get install espeak-ng``; nothing is downloaded). A voice
is an English accent (:data:`ACCENTS`: British, American, Scottish, RP, Lancaster, West
Midlands, Caribbean, New York) with a voice variant (:data:`VARIANTS`: ``m1``..``m7``,
``f1``..``f5``, which set pitch range and formants), e.g. ``espeak-ng -v en-us+f2``. Each voice
says each word ``renditions`` times, each rendition at another (speed ``-s``, pitch ``-p``)
pair drawn from :data:`SPEEDS` x :data:`PITCHES`.

**Split by voice variant**: ``test_variants`` variants (and ``valid_variants`` more) are held out
entirely -- in every accent -- so the test accuracy measures generalisation to a speaker the
model never heard. Which ones is a seeded shuffle of the males and of the females,
interleaved, so a held-out pair is one of each; :func:`split_variants` is a pure function of
``split_seed``.

Each clip is the trimmed word at 16 kHz, scaled to a random peak level, placed at a random
offset in a ``clip_seconds`` window (a time shift) and mixed with white background noise at a
random signal-to-noise ratio; all of it is a pure function of (``seed``, word, voice,
rendition), so the corpus is the same on every run and every machine with the same espeak-ng.

Synthesis runs ``espeak-ng --stdout`` (its streamed WAV header carries a bogus length,
1073739776 frames, so the header is parsed here and the data chunk read to the end), resamples
22,050 Hz to 16 kHz (FFT resampling) and caches each utterance as int16 ``.npy`` under
``$SEQFORMER_CACHE/speech`` (default ``~/.cache/seqformer``), keyed by the espeak-ng version:
about 20 s of synthesis the first time, a fraction of a second afterwards. Phoneme targets
(``espeak-ng -q -x``, :func:`phonemize_all`) are cached beside the audio, one JSON per voice.
``$SEQFORMER_ESPEAK`` (or the ``executable`` argument) names the program to run instead of
``espeak-ng`` on ``PATH``.

User data (``corpus: files``): a TSV of ``path.wav<TAB>label`` lines (paths relative to the
TSV), or a directory of ``LABEL/*.wav`` subdirectories (Speech Commands' layout). WAVs are
16-bit PCM read with the stdlib :mod:`wave` (stereo is averaged, any rate resampled).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqformer.errors import DataError

SAMPLE_RATE = 16000
ESPEAK_ENV = "SEQFORMER_ESPEAK"
INSTALL_HINT = "install it with: apt-get install espeak-ng"
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SPEEDS = (140, 170, 200)  # words per minute (espeak-ng's default is 175)
PITCHES = (35, 50, 65)  # 0-99 (default 50)
# Bump when synthesis or resampling changes, so stale caches are rebuilt, not reused.
_CACHE_FORMAT = 1
_WORD = re.compile(r"^[a-z][a-z' ]*$")


# --- espeak-ng ------------------------------------------------------------------------------


def find_espeak(executable: str | None = None) -> str:
    """The espeak-ng program to run: ``executable``, else ``$SEQFORMER_ESPEAK``, else
    ``espeak-ng`` on PATH; a one-line DataError naming the Debian package when missing."""
    name = executable or os.environ.get(ESPEAK_ENV) or "espeak-ng"
    found = shutil.which(name)
    if found is None:
        how = f" (${ESPEAK_ENV}={name})" if not executable and os.environ.get(ESPEAK_ENV) else ""
        raise DataError(f"espeak-ng not found{how}: the built-in speech corpora "
                        f"(speech-commands, spoken-words) are synthesised by it; {INSTALL_HINT}")
    return found


def espeak_version(program: str) -> str:
    """``espeak-ng --version``'s first line; part of the cache key."""
    try:
        done = subprocess.run([program, "--version"], capture_output=True, text=True,
                              timeout=30, check=False)
    except OSError as exc:
        raise DataError(f"{program}: cannot run ({exc}); {INSTALL_HINT}") from None
    return (done.stdout.strip().splitlines() or ["unknown"])[0]


def known_voices(program: str) -> tuple[set[str], set[str]]:
    """(languages, variants) espeak-ng ``program`` has: ``--voices`` (each voice's language and
    its "other languages", e.g. ``en`` of ``en-gb``) and ``--voices=variant`` (``m1``, ...)."""
    def listing(*args: str) -> str:
        try:
            return subprocess.run([program, *args], capture_output=True, text=True, timeout=30,
                                  check=False).stdout
        except OSError as exc:
            raise DataError(f"{program}: cannot run ({exc}); {INSTALL_HINT}") from None

    languages: set[str] = set()
    for line in listing("--voices").splitlines()[1:]:
        parts = line.split()
        if len(parts) > 1:
            languages.add(parts[1])
        languages.update(re.findall(r"\(([^\s()]+) \d+\)", line))
    variants = set(re.findall(r"!v/(\S+)", listing("--voices=variant")))
    return languages, variants


def check_voices(program: str, voices: set[str]) -> None:
    """Every ``accent+variant`` must exist: espeak-ng falls back to a default voice for an
    unknown language with a variant, which would silently merge speakers."""
    languages, variants = known_voices(program)
    for voice in sorted(voices):
        accent, _, variant = voice.partition("+")
        if accent not in languages:
            raise DataError(f"espeak-ng has no voice language {accent!r} (in {voice!r}); see "
                            "espeak-ng --voices=en for the English ones")
        if variant and variant not in variants:
            raise DataError(f"espeak-ng has no voice variant {variant!r} (in {voice!r}); see "
                            "espeak-ng --voices=variant")


def parse_wav_bytes(data: bytes, where: str) -> tuple[np.ndarray, int]:
    """(int16 samples, mono, sample rate) of a RIFF/WAVE byte string.

    Chunk by chunk, not with :mod:`wave`: a WAV streamed to stdout (espeak-ng ``--stdout``)
    cannot know its length, so its RIFF and data sizes are placeholders; the data chunk is
    read to the end of the bytes instead."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError(f"{where}: not a RIFF/WAVE stream")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if chunk == b"fmt ":
            audio_format, channels, rate, _, _, bits = struct.unpack("<HHIIHH",
                                                                     data[body:body + 16])
            fmt = (audio_format, channels, rate, bits)
        elif chunk == b"data":
            if fmt is None:
                raise DataError(f"{where}: WAV data before its fmt chunk")
            audio_format, channels, rate, bits = fmt
            if audio_format != 1 or bits != 16:
                raise DataError(f"{where}: {bits}-bit format {audio_format} audio; expected "
                                "16-bit PCM")
            raw = data[body:]  # to the end: the size field may be a placeholder
            raw = raw[: len(raw) - len(raw) % (2 * channels)]
            samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
            return samples.mean(axis=1).astype(np.int16) if channels > 1 else samples[:, 0], rate
        pos = body + size + (size & 1)
    raise DataError(f"{where}: no audio data in the WAV stream")


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """float32 ``samples`` at ``target`` Hz: FFT resampling (keep or zero-pad the spectrum up
    to the new Nyquist), band-limited with no filter design, fine for whole short clips."""
    x = np.asarray(samples, dtype=np.float64)
    if rate == target or len(x) == 0:
        return x.astype(np.float32)
    n = len(x)
    m = max(1, int(round(n * target / rate)))
    spectrum = np.fft.rfft(x)
    keep = min(len(spectrum), m // 2 + 1)
    out = np.fft.irfft(spectrum[:keep], m) * (m / n)
    return out.astype(np.float32)


def synthesize(word: str, voice: str, speed: int = 175, pitch: int = 50,
               program: str | None = None) -> np.ndarray:
    """``word`` spoken by espeak-ng ``voice``: float32 in [-1, 1] at 16 kHz."""
    program = program or find_espeak()
    where = f"espeak-ng -v {voice} {word!r}"
    try:
        done = subprocess.run([program, "-v", voice, "-s", str(speed), "-p", str(pitch),
                               "--stdout", word], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{where}: failed ({exc}); {INSTALL_HINT}") from None
    message = done.stderr.decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0 or len(done.stdout) <= 44:
        raise DataError(f"{where}: no audio (exit code {done.returncode}"
                        f"{': ' + message[0] if message else ''}); check the voice name "
                        "(espeak-ng --voices=en)")
    samples, rate = parse_wav_bytes(done.stdout, where)
    if len(samples) == 0:
        raise DataError(f"{where}: no audio samples")
    return resample(samples.astype(np.float32) / 32768.0, rate)


# --- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One synthesis: ``word`` by ``voice`` (``accent+variant``) at ``speed`` and ``pitch``."""

    word: str
    voice: str
    rendition: int
    speed: int
    pitch: int

    @property
    def variant(self) -> str:
        return self.voice.rsplit("+", 1)[-1]

    @property
    def name(self) -> str:
        return f"{self.voice}/{self.word}/{self.rendition}"


@dataclass
class SpeechSet:
    """Labelled clips: float32 waveforms at 16 kHz, label names, and where each came from (an
    utterance name or a file) and who spoke it (a voice; "" for files)."""

    waveforms: list[np.ndarray]
    labels: list[str]
    sources: list[str] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int]) -> SpeechSet:
        pick = (lambda xs: [xs[i] for i in indices] if xs else [])  # noqa: E731
        return SpeechSet(pick(self.waveforms), pick(self.labels), pick(self.sources),
                         pick(self.speakers))


def check_words(words: tuple[str, ...] | list[str], where: str = "data.words") -> None:
    if len(words) < 2 or len(set(words)) != len(words):
        raise DataError(f"{where}: give at least two distinct words, got {list(words)}")
    for w in words:
        if not isinstance(w, str) or not _WORD.match(w):
            hint = ("; YAML reads unquoted yes/no/on/off as booleans, so quote them: "
                    "['yes', 'no']" if str(w) in ("True", "False") else "")
            raise DataError(f"{where}: {w!r} is not a lower-case word (letters, apostrophes, "
                            f"spaces){hint}")


def split_variants(variants: tuple[str, ...] | list[str], valid: int, test: int,
                   seed: int) -> dict[str, list[str]]:
    """Voice variants per split: males and females each shuffled by ``seed`` and interleaved
    (m, f, m, f, ...), test taking the first ``test``, valid the next ``valid``, train the
    rest. A pure function of its arguments."""
    if valid < 1 or test < 1 or valid + test >= len(variants):
        raise DataError(f"data: {len(variants)} voice variants cannot hold out {valid} for "
                        f"valid and {test} for test and still train on one")
    rng = random.Random(f"seqformer.speech.split:{seed}")
    groups: dict[str, list[str]] = {}
    for v in sorted(set(variants)):
        groups.setdefault(v[:1], []).append(v)
    for g in groups.values():
        rng.shuffle(g)
    order: list[str] = []
    queues = [groups[k] for k in sorted(groups)]
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return {"test": sorted(order[:test]), "valid": sorted(order[test:test + valid]),
            "train": sorted(order[test + valid:])}


def utterances(words: tuple[str, ...] | list[str], accents: tuple[str, ...] | list[str],
               variants: tuple[str, ...] | list[str], renditions: int) -> list[Utterance]:
    """Every (word, voice, rendition); rendition r of a (word, voice) takes the r-th of a
    seeded permutation of SPEEDS x PITCHES, so renditions differ and never depend on order."""
    if not 1 <= renditions <= len(SPEEDS) * len(PITCHES):
        raise DataError(f"data.renditions must be in [1, {len(SPEEDS) * len(PITCHES)}], got "
                        f"{renditions}")
    combos = [(s, p) for s in SPEEDS for p in PITCHES]
    out = []
    for accent in accents:
        for variant in variants:
            voice = f"{accent}+{variant}"
            for word in words:
                order = list(combos)
                random.Random(f"seqformer.speech.prosody:{voice}:{word}").shuffle(order)
                out.extend(Utterance(word, voice, r, *order[r]) for r in range(renditions))
    return out


def cache_dir() -> Path:
    """``$SEQFORMER_CACHE`` or ``~/.cache/seqformer`` (the Bible reader's cache root)."""
    from seqformer.data.bible import cache_dir as root

    return root() / "speech"


def _cache_path(root: Path, u: Utterance) -> Path:
    return root / u.voice / f"{u.word.replace(' ', '_')}-s{u.speed}-p{u.pitch}.npy"


def _load_npy(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # absent or torn: synthesise again


def _save_npy(path: Path, samples: np.ndarray) -> None:
    """Atomically, so a killed run or a parallel reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, samples)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def synthesize_all(items: list[Utterance], executable: str | None = None,
                   log: object = None) -> list[np.ndarray]:
    """float32 16 kHz audio of every utterance, from the cache or espeak-ng (4 at a time:
    each call is mostly process start-up). espeak-ng is looked up first, so a cache never
    hides a missing program."""
    program = find_espeak(executable)
    check_voices(program, {u.voice for u in items})
    key = hashlib.sha1(f"{espeak_version(program)}|{_CACHE_FORMAT}".encode()).hexdigest()[:12]
    root = cache_dir() / key
    audio: list[np.ndarray | None] = [_load_npy(_cache_path(root, u)) for u in items]
    missing = [i for i, a in enumerate(audio) if a is None]
    if missing and callable(log):
        log(f"synthesising {len(missing)} of {len(items)} utterances with espeak-ng "
            f"(cached in {root})")

    def make(i: int) -> np.ndarray:
        u = items[i]
        samples = synthesize(u.word, u.voice, u.speed, u.pitch, program)
        pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
        _save_npy(_cache_path(root, u), pcm)
        return pcm

    with ThreadPoolExecutor(max_workers=4) as pool:
        for i, pcm in zip(missing, pool.map(make, missing)):
            audio[i] = pcm
    return [np.asarray(a, dtype=np.float32) / 32768.0 for a in audio]


# Bump when the phoneme extraction or clean-up changes.
_PHONEME_FORMAT = 1


def phonemes(words: list[str], voice: str, program: str) -> list[str]:
    """espeak-ng's phoneme mnemonics (``-q -x -v voice``) of each word, with its stress marks,
    surrounding whitespace stripped. One call for all words: each is fed as a sentence of its
    own (``word.``) on ``--stdin``, which makes espeak-ng print one line per word -- the same
    string as a call for that word alone. If the line count does not match (it always has on
    espeak-ng 1.51), each word is asked for separately."""
    if not words:
        return []
    where = f"espeak-ng -q -x -v {voice}"

    def call(args: list[str], text: str | None) -> str:
        try:
            done = subprocess.run([program, "-q", "-x", "-v", voice, *args], input=text,
                                  capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"{where}: failed ({exc}); {INSTALL_HINT}") from None
        if done.returncode != 0:
            raise DataError(f"{where}: exit code {done.returncode}; check the voice name "
                            "(espeak-ng --voices=en)")
        return done.stdout

    lines = [line.strip() for line in
             call(["--stdin"], "".join(f"{w}.\n" for w in words)).splitlines() if line.strip()]
    if len(lines) != len(words):
        lines = [" ".join(call([w], None).split()) for w in words]
    for w, line in zip(words, lines):
        if not line:
            raise DataError(f"{where} {w!r}: no phonemes")
    return lines


def phonemize_all(items: list[tuple[str, str]], executable: str | None = None,
                  log: object = None) -> list[str]:
    """The espeak-ng phonemes of every (word, voice), from the cache (one JSON per voice under
    the audio cache, keyed by the espeak-ng version and the target kind) or one espeak-ng call
    per voice (4 at a time)."""
    program = find_espeak(executable)
    check_voices(program, {v for _, v in items})
    key = hashlib.sha1(f"{espeak_version(program)}|phonemes|{_PHONEME_FORMAT}".encode()
                       ).hexdigest()[:12]
    root = cache_dir() / key / "phonemes"
    by_voice: dict[str, set[str]] = {}
    for word, voice in items:
        by_voice.setdefault(voice, set()).add(word)
    tables: dict[str, dict[str, str]] = {}
    todo: list[tuple[str, list[str]]] = []
    for voice, words in sorted(by_voice.items()):
        try:
            table = json.loads((root / f"{voice}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            table = {}
        tables[voice] = table if isinstance(table, dict) else {}
        missing = sorted(words - set(tables[voice]))
        if missing:
            todo.append((voice, missing))
    if todo and callable(log):
        log(f"phonemes of {sum(len(m) for _, m in todo)} (word, voice) pairs from espeak-ng "
            f"-x (cached in {root})")

    def make(job: tuple[str, list[str]]) -> None:
        voice, missing = job
        tables[voice].update(zip(missing, phonemes(missing, voice, program)))
        path = root / f"{voice}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(tables[voice], f, sort_keys=True, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(make, todo))
    return [tables[voice][word] for word, voice in items]


def trim(samples: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """The span between the first and last sample above ``threshold`` of the peak."""
    loud = np.flatnonzero(np.abs(samples) > threshold * max(float(np.abs(samples).max()), 1e-9))
    return samples[loud[0]:loud[-1] + 1] if len(loud) else samples


def make_clip(word: np.ndarray, rng: np.random.Generator, seconds: float,
              snr_db: tuple[float, float], shift: bool) -> np.ndarray:
    """The trimmed word at a random peak level (0.25-0.9), at a random offset (``shift``)
    or centred in a ``seconds`` window, plus white noise at an SNR drawn from ``snr_db``."""
    length = int(round(seconds * SAMPLE_RATE))
    word = trim(word)
    word = word / max(float(np.abs(word).max()), 1e-9) * rng.uniform(0.25, 0.9)
    if len(word) > length:  # keep the middle: the onset and tail are the quiet parts
        start = (len(word) - length) // 2
        word = word[start:start + length]
    offset = int(rng.integers(0, length - len(word) + 1)) if shift else (length - len(word)) // 2
    clip = np.zeros(length, dtype=np.float64)
    clip[offset:offset + len(word)] = word
    rms = float(np.sqrt(np.mean(word.astype(np.float64) ** 2)))
    snr = rng.uniform(*snr_db)
    clip += rng.standard_normal(length) * rms * 10 ** (-snr / 20)
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def clip_rng(seed: int, u: Utterance) -> np.random.Generator:
    """The augmentation randomness of one clip: a function of (seed, utterance) only."""
    digest = hashlib.sha256(f"seqformer.speech.clip:{seed}:{u.name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def speech_commands_splits(words: tuple[str, ...] | list[str] = WORDS,
                           accents: tuple[str, ...] | list[str] = ACCENTS,
                           variants: tuple[str, ...] | list[str] = VARIANTS,
                           renditions: int = 1, valid_variants: int = 2, test_variants: int = 2,
                           split_seed: int = 0, seed: int = 0, clip_seconds: float = 1.0,
                           snr_db: tuple[float, float] = (10.0, 30.0), shift: bool = True,
                           executable: str | None = None, log: object = None
                           ) -> dict[str, SpeechSet]:
    """train / valid / test clips of the synthetic speech-commands corpus, split by voice
    variant (see the module docstring)."""
    check_words(words)
    groups = split_variants(variants, valid_variants, test_variants, split_seed)
    items = utterances(words, accents, variants, renditions)
    audio = synthesize_all(items, executable, log)
    splits = {name: SpeechSet([], []) for name in ("train", "valid", "test")}
    where = {v: name for name, vs in groups.items() for v in vs}
    for u, samples in zip(items, audio):
        s = splits[where[u.variant]]
        s.waveforms.append(make_clip(samples, clip_rng(seed, u), clip_seconds, snr_db, shift))
        s.labels.append(u.word)
        s.sources.append(u.name)
        s.speakers.append(u.voice)
    return splits


# --- the user's WAV files -------------------------------------------------------------------


def read_wav(path: str | Path, where: str | None = None) -> np.ndarray:
    """A 16-bit PCM WAV file as float32 mono at 16 kHz; one-line DataErrors saying what is
    wrong (``where`` prefixes them, e.g. ``list.tsv:3``)."""
    path = Path(path)
    at = f"{where}: {path}" if where else str(path)
    if not path.is_file():
        raise DataError(f"{at}: no such WAV file")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError, RuntimeError, ValueError, struct.error) as exc:
        raise DataError(f"{at}: not a readable WAV file ({exc}); give 16-bit PCM WAV") from None
    if width != 2:
        raise DataError(f"{at}: {8 * width}-bit samples; give 16-bit PCM WAV")
    samples = np.frombuffer(raw[: len(raw) - len(raw) % (2 * channels)], dtype="<i2")
    if len(samples) == 0:
        raise DataError(f"{at}: no audio samples")
    mono = samples.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768.0
    return resample(mono, rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """float samples in [-1, 1] as a 16-bit mono PCM WAV (for exporting clips and tests)."""
    pcm = np.clip(np.round(np.asarray(samples) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def read_clip_list(path: str | Path, field_name: str = "data.train",
                   column: str = "label") -> SpeechSet:
    """Labelled clips from a TSV of ``path.wav<TAB>label`` lines (relative paths are relative
    to the TSV; blank lines are skipped) or a directory of ``LABEL/*.wav``. ``column`` names
    the second column in messages ("transcript" for speech to text)."""
    path = Path(path)
    entries: list[tuple[Path, str, str]] = []  # (wav, label, where)
    if path.is_dir():
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            entries.extend((wav, sub.name, str(wav)) for wav in sorted(sub.glob("*.wav")))
    elif path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable ({exc}); give a UTF-8 TSV") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r").split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise DataError(f"{path}:{number}: expected 'path.wav<TAB>{column}', got "
                                f"{line[:60]!r}")
            wav = Path(parts[0].strip())
            entries.append((wav if wav.is_absolute() else path.parent / wav, parts[1].strip(),
                            f"{path}:{number}"))
    else:
        raise DataError(f"{field_name}: {path}: no such file or directory; give a TSV of "
                        f"'path.wav<TAB>{column}' lines or a directory of LABEL/*.wav")
    if not entries:
        raise DataError(f"{path}: no clips; give 'path.wav<TAB>{column}' lines or LABEL/*.wav "
                        "files")
    waveforms = [read_wav(wav, where if where != str(wav) else None)
                 for wav, _, where in entries]
    return SpeechSet(waveforms, [label for _, label, _ in entries],
                     [str(wav) for wav, _, _ in entries], [""] * len(entries))


def holdout(data: SpeechSet, fraction: float, seed: int) -> tuple[SpeechSet, SpeechSet]:
    """(rest, held out): a seeded ``fraction`` of the clips, at least one, for a files corpus
    without its own valid set."""
    if len(data) < 2:
        raise DataError(f"{len(data)} clip(s) cannot be split into train and valid; give "
                        "data.valid")
    order = list(range(len(data)))
    random.Random(f"seqformer.speech.holdout:{seed}").shuffle(order)
    n = min(len(data) - 1, max(1, int(round(fraction * len(data)))))
    return data.subset(sorted(order[n:])), data.subset(sorted(order[:n]))
