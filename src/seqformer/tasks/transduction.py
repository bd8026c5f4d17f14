"""Sequence transduction: source text in, target text out (G2P, translation, your TSV).

The task owns everything the trainer must not know: reading the corpus, training and saving
the tokenizers, dropping over-long pairs, batching, the validation metric and the run
directory layout. :class:`Transducer` is the inference side: load a run directory, turn text
into hypotheses, score them.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from seqformer.data.batching import BatchStream, collate_pairs, token_budget_batches
from seqformer.data.corpus import Pair, read_aligned, read_tsv
from seqformer.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from seqformer.decoding.ensemble import Ensemble
from seqformer.decoding.memory import decode_cost, split_on_oom
from seqformer.decoding.processors import (
    BadWords,
    ForcedPrefix,
    MinLength,
    NoRepeatNGram,
    Processor,
    RepetitionPenalty,
)
from seqformer.decoding.search import Hypothesis, beam_search, greedy_search
from seqformer.decoding.static import StaticDecoding, bucket_rows, bucket_width, fixed_shape
from seqformer.errors import CheckpointError, ConfigError, DataError
from seqformer.interop.finetune import ModelIdStream, load_init, with_model_ids
from seqformer.metrics import bleu, char_error_rate, chrf, error_rates, rouge, ter
from seqformer.models.registry import build_seq2seq, load_seq2seq, seq2seq_config_json
from seqformer.models.seq2seq import Seq2Seq
from seqformer.recipe import DecodeConfig, Recipe, recipe_from_dict
from seqformer.tasks.rundir import (
    check_same_split,
    log,
    read_run_recipe,
    write_run_metadata,
)
from seqformer.training.distributed import is_main_process
from seqformer.training.trainer import Trainer


# -- data -----------------------------------------------------------------------------------------
def read_pairs(paths: list[str]) -> list[Pair]:
    return read_tsv(paths[0]) if len(paths) == 1 else read_aligned(paths[0], paths[1])


def _hash_percent(text: str) -> float:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 10000 / 100.0


def load_splits(recipe: Recipe) -> tuple[dict[str, list[Pair]], str]:
    """The recipe's train/valid/test pairs and a fingerprint of the split, stored with the model
    so results from different runs can be compared on equal terms."""
    data = recipe.data
    if data.corpus == "cmudict":
        from seqformer.data.g2p import load_cmudict_splits

        splits = load_cmudict_splits(stress=data.stress)
    elif data.corpus == "bible":
        from seqformer.data.bible import bible_pairs, split_pairs

        triples, stats = bible_pairs(data.source_module, data.target_module)
        log(f"bible: {stats['aligned']} aligned verses, {stats['dropped_empty']} dropped "
            "(empty on one side)")
        parts = split_pairs([key for key, _, _ in triples])
        splits = {name: [Pair(triples[i][1], triples[i][2], where=triples[i][0])
                         for i in parts[name]] for name in ("train", "valid", "test")}
    else:
        train = read_pairs(data.train)
        if data.valid:
            valid = read_pairs(data.valid)
        else:  # hold out a deterministic slice of train, by source, so no source is in both
            valid = [p for p in train if _hash_percent(p.source) < data.valid_percent]
            train = [p for p in train if _hash_percent(p.source) >= data.valid_percent]
            if not valid or not train:
                raise DataError(f"{data.train[0]}: too few examples to hold out "
                                f"{data.valid_percent}% for validation; give data.valid")
        splits = {"train": train, "valid": valid,
                  "test": read_pairs(data.test) if data.test else []}
    if data.max_examples:
        splits["train"] = sorted(splits["train"], key=lambda p: _hash_percent(p.source + p.target)
                                 )[: data.max_examples]
    digest = hashlib.sha256()
    for name in ("train", "valid", "test"):
        for p in splits[name]:
            digest.update(f"{name}\t{p.source}\t{p.target}\n".encode())
    return splits, digest.hexdigest()[:16]


def build_tokenizers(recipe: Recipe, train: list[Pair]) -> tuple[Tokenizer, Tokenizer]:
    tok = recipe.tokenizer
    if tok.shared:
        texts = [p.source for p in train] + [p.target for p in train]
        shared = train_tokenizer(tok.source, texts, tok.vocab_size, tok.min_frequency)
        return shared, shared
    src = train_tokenizer(tok.source, (p.source for p in train), tok.vocab_size,
                          tok.min_frequency)
    tgt = train_tokenizer(tok.target, (p.target for p in train), tok.vocab_size,
                          tok.min_frequency)
    return src, tgt


def encode_pairs(pairs: list[Pair], src_tok: Tokenizer, tgt_tok: Tokenizer, max_src: int,
                 max_tgt: int, name: str) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Token ids of the pairs that fit; over-long pairs are dropped and reported, never silently."""
    src_ids, tgt_ids, kept = [], [], []
    for i, p in enumerate(pairs):
        s, t = src_tok.encode(p.source), tgt_tok.encode(p.target)
        if 0 < len(s) <= max_src and 0 < len(t) <= max_tgt:
            src_ids.append(s)
            tgt_ids.append(t)
            kept.append(i)
    dropped = len(pairs) - len(kept)
    if dropped:
        log(f"{name}: dropped {dropped} of {len(pairs)} pairs longer than "
            f"{max_src}/{max_tgt} tokens (data.max_source_len / data.max_target_len)")
    if not kept:
        raise DataError(f"{name}: no usable pairs; check the data or raise "
                        "data.max_source_len / data.max_target_len")
    return src_ids, tgt_ids, kept


# -- metrics --------------------------------------------------------------------------------------
def score(hypotheses: list[str], references: list[tuple[str, ...]]) -> dict[str, float]:
    """Every metric the task reports; cheap enough to compute them all each time."""
    rates = error_rates(hypotheses, references)
    refs = [list(r) for r in references]
    return {"per": rates["per"], "wer": rates["wer"], "exact": 100.0 - rates["wer"],
            "cer": char_error_rate(hypotheses, refs), "ter": ter(hypotheses, refs),
            "bleu": bleu(hypotheses, refs), "chrf": chrf(hypotheses, refs),
            **rouge(hypotheses, refs)}


# -- the inference side ---------------------------------------------------------------------------
@dataclass
class Transduction:
    source: str
    hypotheses: list[Hypothesis]
    texts: list[str]


class Transducer:
    """A trained model with its tokenizers: text in, text out."""

    def __init__(self, model: Seq2Seq, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 decode: DecodeConfig | None = None, static: bool = False) -> None:
        """``static``: decode through fixed-shape caches (:mod:`seqformer.decoding.static`),
        each batch rounded up to one of a few shapes, the step compiled into a CUDA graph on a
        GPU. It pays on a GPU, where a small model's step is bounded by kernel launches."""
        self.model, self.src_tok, self.tgt_tok = model, src_tok, tgt_tok
        self.decode = decode or DecodeConfig()
        self.device = next(model.parameters()).device
        self.static = static
        self._static: StaticDecoding | Ensemble | None = None  # built on first use
        if static:
            members = model.members if isinstance(model, Ensemble) else [model]
            if not all(isinstance(m, Seq2Seq) for m in members):
                raise ConfigError("--static decodes Transformer models, not the recurrent "
                                  "baselines; drop --static")
            if self.device.type != "cuda":
                log("warning: --static pays on a GPU (one CUDA graph per step); on "
                    f"{self.device.type} it decodes uncompiled and is no faster")

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", int8: bool = False,
             static: bool = False) -> Transducer:
        """``int8``: dynamic int8 Linear layers for faster CPU decoding (see
        :mod:`seqformer.decoding.quantize`); ``static``: see :class:`Transducer`."""
        run_dir = Path(run_dir)
        model = load_seq2seq(run_dir, map_location=device)
        src_tok = load_tokenizer(run_dir / "tokenizer" / "source")
        tgt_tok = load_tokenizer(run_dir / "tokenizer" / "target")
        if (src_tok.vocab_size, tgt_tok.vocab_size) != (model.config.src_vocab_size,
                                                        model.config.tgt_vocab_size):
            raise CheckpointError(f"{run_dir}: tokenizer vocabularies do not match the model "
                                  "(a tokenizer was replaced?); re-train or restore the run")
        decode = DecodeConfig()
        recipe_path = run_dir / "recipe.yaml"
        if recipe_path.is_file():
            recipe = recipe_from_dict(yaml.safe_load(recipe_path.read_text()), str(recipe_path))
            decode = recipe.decode
            # The weights were trained against these exact vocabularies: a swapped tokenizer
            # of the same size would decode silently wrong, so compare fingerprints.
            for side, tok in (("source", src_tok), ("target", tgt_tok)):
                expected = recipe.fingerprints.get(f"{side}_tokenizer")
                if expected and expected != tok.fingerprint:
                    raise CheckpointError(
                        f"{run_dir / 'tokenizer' / side}: fingerprint {tok.fingerprint} differs "
                        f"from the {expected} the model was trained with; restore the run's "
                        "own tokenizer")
        if int8:
            from seqformer.decoding.quantize import quantize_int8

            model = quantize_int8(model)
        return cls(model, src_tok, tgt_tok, decode, static)

    @classmethod
    def load_ensemble(cls, run_dirs: Sequence[str | Path], device: str = "cpu",
                      combine: str = "logprob", int8: bool = False,
                      static: bool = False) -> Transducer:
        """One Transducer over several runs whose per-step distributions are combined.

        The members must share both tokenizers exactly (same fingerprints): averaging
        distributions over different vocabularies would silently mix unrelated tokens. The
        first run's recipe supplies the decoding defaults.
        """
        members = [cls.load(d, device, int8, static and len(run_dirs) == 1) for d in run_dirs]
        if len(members) == 1:
            return members[0]
        first = members[0]
        for run_dir, m in zip(run_dirs[1:], members[1:]):
            for side in ("src_tok", "tgt_tok"):
                if getattr(m, side).fingerprint != getattr(first, side).fingerprint:
                    which = "source" if side == "src_tok" else "target"
                    raise CheckpointError(
                        f"{run_dir}: its {which} tokenizer differs from {run_dirs[0]}'s; "
                        "an ensemble needs models trained with the same tokenizers")
        model = Ensemble([m.model for m in members], combine)
        return cls(model, first.src_tok, first.tgt_tok, first.decode, static)

    def encode_sources(self, sources: Sequence[str], where: Sequence[str] | None = None
                       ) -> list[list[int]]:
        ids, unknown = [], 0
        limit = self.model.config.max_len
        too_long = []
        for i, text in enumerate(sources):
            if not text.strip():
                raise DataError(f"{where[i] if where else f'input {i + 1}'}: empty input; "
                                "remove the blank line")
            row = self.src_tok.encode(text)
            unknown += sum(1 for t in row if t == self.src_tok.unk_id)
            if len(row) > limit:
                too_long.append(where[i] if where else f"input {i + 1}")
            ids.append(row)
        if too_long:
            shown = ", ".join(too_long[:5]) + (" ..." if len(too_long) > 5 else "")
            raise DataError(f"{len(too_long)} input(s) longer than the model's maximum of {limit}"
                            f" tokens ({shown}); split them into shorter pieces")
        if unknown:
            log(f"warning: {unknown} source symbol(s) unknown to the tokenizer were mapped "
                "to <unk>")
        return ids

    def _target_ids(self, text: str, what: str) -> list[int]:
        ids = self.tgt_tok.encode(text)
        if not ids:
            raise ConfigError(f"{what} {text!r} has no target tokens; give non-empty text")
        if self.tgt_tok.unk_id in ids:
            raise ConfigError(f"{what} {text!r} has symbols unknown to the target vocabulary, "
                              "so the model can never produce it; fix or drop it")
        return ids

    def processors(self, min_length: int = 0, no_repeat_ngram: int = 0,
                   repetition_penalty: float | None = None, bad_words: Sequence[str] = (),
                   prefix: str | None = None, max_length: int | None = None
                   ) -> list[Processor]:
        """The logits processors for these decoding controls; 0 / None / empty mean "off".

        Text (``bad_words``, ``prefix``) is tokenized with the target tokenizer. Bad values are
        a :class:`ConfigError` naming the CLI flag, since they usually come from one.
        """
        if min_length < 0:
            raise ConfigError(f"--min-length must be >= 0, got {min_length}")
        if max_length is not None and max_length < 1:
            raise ConfigError(f"--max-length must be >= 1, got {max_length}")
        if max_length is not None and min_length >= max_length:
            raise ConfigError(f"--min-length {min_length} leaves no room below --max-length "
                              f"{max_length} (which counts eos); lower one or raise the other")
        if no_repeat_ngram < 0:
            raise ConfigError(f"--no-repeat-ngram must be >= 0 (0 = off), got {no_repeat_ngram}")
        if repetition_penalty is not None and not repetition_penalty > 0:
            raise ConfigError(f"--repetition-penalty must be > 0 (1 = off, > 1 discourages "
                              f"repeats), got {repetition_penalty}")
        processors: list[Processor] = []
        if prefix:
            processors.append(ForcedPrefix(self._target_ids(prefix, "--prefix")))
        if min_length:
            processors.append(MinLength(min_length, self.model.eos_id))
        if bad_words:
            processors.append(BadWords([self._target_ids(w, "--bad-words") for w in bad_words]))
        if no_repeat_ngram:
            processors.append(NoRepeatNGram(no_repeat_ngram))
        if repetition_penalty is not None and repetition_penalty != 1.0:
            processors.append(RepetitionPenalty(repetition_penalty))
        return processors

    def transduce(self, sources: Sequence[str], beam: int | None = None,
                  alpha: float | None = None, nbest: int | None = None,
                  max_length: int | None = None, where: Sequence[str] | None = None,
                  progress: bool = False, penalty: str | None = None,
                  min_length: int | None = None, no_repeat_ngram: int | None = None,
                  repetition_penalty: float | None = None, bad_words: Sequence[str] = (),
                  prefix: str | None = None) -> list[Transduction]:
        """Decode ``sources`` in length-bucketed batches; results come back in input order.

        ``penalty`` is the length-penalty formula ('gnmt' or 'plain', see
        :func:`~seqformer.decoding.search.beam_search`); the remaining keywords are the decoding
        controls of :meth:`processors`. Every keyword left unset (None) takes the run's recipe
        ``decode`` section; ``bad_words`` add to the recipe's.
        """
        d = self.decode
        beam = beam or d.beam
        alpha = d.alpha if alpha is None else alpha
        nbest = nbest or d.nbest
        max_length = max_length or d.max_length
        min_length = d.min_length if min_length is None else min_length
        no_repeat_ngram = d.no_repeat_ngram if no_repeat_ngram is None else no_repeat_ngram
        if repetition_penalty is None:
            repetition_penalty = d.repetition_penalty
        bad_words = list(d.bad_words) + [w for w in bad_words if w not in d.bad_words]
        penalty = penalty or self.decode.penalty
        if penalty not in ("gnmt", "plain"):
            raise ConfigError(f"--penalty {penalty!r}: use 'gnmt' or 'plain'")
        if beam < 1 or not 1 <= nbest <= beam:
            raise ConfigError(f"need --beam >= 1 and 1 <= --nbest <= --beam, got beam {beam}, "
                              f"nbest {nbest}")
        processors = self.processors(min_length, no_repeat_ngram, repetition_penalty,
                                     bad_words, prefix, max_length)
        ids = self.encode_sources(sources, where)
        # Decoding holds batch x beam hypotheses, each with its source and its output so far:
        # the budget counts exactly that, so one long batch cannot exhaust memory.
        model_max = self.model.config.max_len
        static = self._static_decoding() if self.static else None
        # Static shapes are costed at their rounded width: that is what they will hold.
        widths = [bucket_width(len(r), model_max) if static else len(r) for r in ids]
        costs = [decode_cost(w, 1, max_length, model_max) for w in widths]
        budget = max(1, self.decode.batch_tokens // beam)
        batches = token_budget_batches(costs, budget, shuffle=False, seed=0)
        results: list[Transduction | None] = [None] * len(ids)
        self.model.eval()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(ids), desc="decoding", unit="sent", file=sys.stderr)

        def run(indices: Sequence[int]) -> list[list[Hypothesis]]:
            batch = collate_pairs([ids[i] for i in indices], None, list(indices))
            # An imported vocabulary (Marian) pads with its own id; 0 is a real token there.
            src = with_model_ids(batch, self.model, ids, None).src.to(self.device)
            model, length = self.model, max_length
            if static is not None:
                # One of a few shapes (and output lengths), so the step's graph is replayed.
                width = bucket_width(src.shape[1], model_max)
                cap = max(1, budget // decode_cost(width, 1, max_length, model_max))
                length = max_length or max(1, min(model_max - 1, 2 * width + 10))
                src = fixed_shape(src, getattr(self.model, "pad_id", 0), width,
                                  bucket_rows(len(indices), cap))
                model = static
            if beam == 1 and nbest == 1:
                hyps = [[h] for h in greedy_search(model, src, length, processors)]
            else:
                hyps = beam_search(model, src, beam, length, alpha, penalty, nbest,
                                   processors=processors)
            return hyps[:len(indices)]  # fixed_shape's filler rows are dropped

        def on_split(n: int) -> None:
            log(f"warning: out of memory decoding {n} inputs at once; splitting the batch")

        for indices in batches:
            hyps = split_on_oom(run, indices, on_split)
            for i, h in zip(indices, hyps):
                results[i] = Transduction(sources[i], h, [self.tgt_tok.decode(x.tokens)
                                                          for x in h])
            if bar:
                bar.update(len(indices))
        if bar:
            bar.close()
        return results  # type: ignore[return-value]

    def _static_decoding(self) -> StaticDecoding | Ensemble:
        """The fixed-shape decoder, made once: it holds the captured graphs and buffers."""
        if self._static is None:
            def fixed(m: Seq2Seq) -> StaticDecoding:
                return StaticDecoding(m, compile=self.device.type == "cuda")

            model = self.model
            self._static = (Ensemble([fixed(m) for m in model.members], model.combine)
                            if isinstance(model, Ensemble) else fixed(model))
        return self._static

    def evaluate(self, pairs: list[Pair], **decode_args) -> tuple[dict[str, float], list[str]]:
        """Metrics of the 1-best outputs against every acceptable reference of each source.

        The lines returned are ``source<TAB>hypothesis`` in the order of
        :func:`group_references`.
        """
        sources, references = group_references(pairs)
        outs = self.transduce(sources, **decode_args)
        hyps = [o.texts[0] for o in outs]
        metrics = score(hyps, references)
        metrics["n"] = float(len(sources))
        return metrics, [f"{s}\t{h}" for s, h in zip(sources, hyps)]


def group_references(pairs: list[Pair]) -> tuple[list[str], list[tuple[str, ...]]]:
    """Distinct sources in first-seen order, each with all its references: the same source
    with several targets (several pronunciations, several translations) is one test item."""
    grouped: dict[str, list[str]] = {}
    for p in pairs:
        refs = grouped.setdefault(p.source, [])
        refs.extend(r for r in p.references if r not in refs)
    return list(grouped), [tuple(r) for r in grouped.values()]


# -- training -------------------------------------------------------------------------------------
def validation_loss(model: Seq2Seq, src_ids, tgt_ids, batch_tokens: int) -> dict[str, float]:
    device = next(model.parameters()).device
    total_loss = total_nll = tokens = 0.0
    with torch.inference_mode():
        lengths = [max(len(s), len(t) + 1) for s, t in zip(src_ids, tgt_ids)]
        for idx in token_budget_batches(lengths, batch_tokens, shuffle=False, seed=0):
            batch = collate_pairs([src_ids[i] for i in idx], [tgt_ids[i] for i in idx], idx)
            batch = with_model_ids(batch, model, src_ids, tgt_ids)
            out = model(batch.to(device))
            total_loss += float(out.loss) * out.n_tokens
            total_nll += float(out.nll) * out.n_tokens
            tokens += out.n_tokens
    return {"valid_loss": total_loss / tokens, "valid_nll": total_nll / tokens}


def check_resumable(out: Path) -> None:
    if not (out / "recipe.yaml").is_file():
        raise CheckpointError(f"{out}: nothing to resume (no recipe.yaml); drop --resume")


def train(recipe: Recipe, out_dir: str | Path, resume: bool = False,
          splits: tuple[dict[str, list[Pair]], str] | None = None) -> dict:
    """Train ``recipe`` into ``out_dir`` and return the trainer's summary.

    ``splits`` (from :func:`load_splits`) lets a caller that also evaluates read the corpus once.
    """
    out = Path(out_dir)
    t0 = time.time()
    if resume:
        check_resumable(out)
    splits, fingerprint = splits or load_splits(recipe)
    log(f"data: {len(splits['train'])} train / {len(splits['valid'])} valid / "
        f"{len(splits['test'])} test pairs (split {fingerprint}), read in {time.time() - t0:.1f}s")
    # init_from: fine-tune an imported model; its architecture and tokenizers come with it.
    init = load_init(recipe.init_from, recipe.model) if recipe.init_from else None
    if resume:
        src_tok = load_tokenizer(out / "tokenizer" / "source")
        tgt_tok = load_tokenizer(out / "tokenizer" / "target")
    elif init:
        src_tok, tgt_tok = init.source, init.target
    else:
        src_tok, tgt_tok = build_tokenizers(recipe, splits["train"])
    d = recipe.data
    config = (init.model.config if init
              else recipe.model_config(src_tok.vocab_size, tgt_tok.vocab_size))
    # The model embeds at most max_len positions; the decoder also needs room for bos/eos.
    max_src = min(d.max_source_len, config.max_len)
    max_tgt = min(d.max_target_len, config.max_len - 1)
    src_ids, tgt_ids, _ = encode_pairs(splits["train"], src_tok, tgt_tok, max_src, max_tgt,
                                       "train")
    v_src, v_tgt, v_kept = encode_pairs(splits["valid"], src_tok, tgt_tok, max_src, max_tgt,
                                        "valid")
    torch.manual_seed(recipe.train.seed)
    model = init.model if init else build_seq2seq(config)  # kind: transformer | rnn | ...
    log(f"model: {model.num_parameters() / 1e6:.2f}M parameters, vocab {src_tok.vocab_size} -> "
        f"{tgt_tok.vocab_size}, {config.n_encoder_layers}+{config.n_decoder_layers} layers, "
        f"d_model {config.d_model}")

    def save_run(directory: Path) -> None:
        # Everything a later `transduce`/`evaluate` needs next to the weights.
        write_run_metadata(directory, recipe, {"split": fingerprint,
                                               "source_tokenizer": src_tok.fingerprint,
                                               "target_tokenizer": tgt_tok.fingerprint},
                           seq2seq_config_json(config))

    if not resume and is_main_process():
        # Tokenizers never change during a run: written once, before the first step, so an
        # interrupted checkpoint can never leave a half-written one.
        src_tok.save(out / "tokenizer" / "source")
        tgt_tok.save(out / "tokenizer" / "target")
    save_run(out)
    valid_pairs = [splits["valid"][i] for i in v_kept][: d.valid_decode]

    def validate(m: torch.nn.Module) -> dict[str, float]:
        was_training = m.training
        m.eval()
        metrics = validation_loss(m, v_src, v_tgt, d.batch_tokens)
        if recipe.train.metric not in ("valid_loss", "valid_nll") and valid_pairs:
            transducer = Transducer(m, src_tok, tgt_tok, DecodeConfig(batch_tokens=d.batch_tokens))
            decoded, _ = transducer.evaluate(valid_pairs)
            metrics.update({k: v for k, v in decoded.items() if k != "n"})
        m.train(was_training)
        return metrics

    stream = ModelIdStream(BatchStream(src_ids, tgt_ids, d.batch_tokens, recipe.train.seed,
                                       pad_to=d.pad_to),
                           model, src_ids, tgt_ids)
    trainer = Trainer(model, recipe.train, stream, out, validate=validate, on_save=save_run)
    summary = trainer.train(resume=resume)
    return summary


def recipe_test_split(run_dir: str | Path) -> tuple[list[Pair], str]:
    """The test pairs of the recipe a run was trained with, and a name for them (what
    ``evaluate`` scores without --data); the split must be the one trained on."""
    instead = "give --data TSV (or source and target files)"
    recipe, path = read_run_recipe(run_dir, "the run's test split", instead)
    splits, fingerprint = load_splits(recipe)
    if not splits["test"]:
        raise DataError(f"{path}: the recipe has no test split (data.test is not set); {instead}")
    check_same_split(recipe, fingerprint, path, instead)
    return splits["test"], f"the recipe's test split ({fingerprint})"


def evaluate_run(run_dir: str | Path, pairs: list[Pair], device: str = "cpu", **decode_args
                 ) -> tuple[dict[str, float], list[str]]:
    return Transducer.load(run_dir, device).evaluate(pairs, **decode_args)
