"""Language modelling: learn to continue text, then sample from it or measure its perplexity.

The task owns what the trainer must not know: reading the text, the train/valid split, training
and saving the tokenizer, the block stream, the validation metrics (loss, perplexity, bits per
character) and the run directory. :class:`LanguageModel` is the inference side: load a run
directory, stream a continuation of a prompt, score a text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from seqformer.data.lm import (
    IGNORE,
    BlockStream,
    encode_text,
    eval_batches,
    read_text_files,
    split_tail,
)
from seqformer.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from seqformer.decoding.sampling import generate
from seqformer.errors import CheckpointError, ConfigError, DataError
from seqformer.models.gpt import GPT, config_json
from seqformer.recipe import LM_CORPORA, GenerateConfig, LMRecipe, recipe_from_dict
from seqformer.tasks.rundir import (
    check_same_split,
    check_vocabulary,
    log,
    read_run_recipe,
    write_run_metadata,
)
from seqformer.training.distributed import is_main_process
from seqformer.training.trainer import Trainer

TOKENIZER_DIR = "tokenizer"
EVAL_BATCH = 16  # blocks per forward pass when scoring


# -- data -----------------------------------------------------------------------------------------
def load_texts(recipe: LMRecipe) -> tuple[str, str, str]:
    """Training text, validation text and a fingerprint of the split (kept with the model)."""
    d = recipe.data
    if d.corpus == "files":
        text = read_text_files(d.train or [])
    else:
        from seqformer.data.bible import plain_text

        text = plain_text(LM_CORPORA[d.corpus])
    if d.max_chars:
        text = text[: d.max_chars]
    if d.valid:
        train, valid = text, read_text_files(d.valid)
    else:
        train, valid = split_tail(text, d.valid_percent)
    if not train.strip():
        raise DataError("the training text is empty; check data.train / data.corpus")
    digest = hashlib.sha256(f"{train}\0{valid}".encode()).hexdigest()[:16]
    return train, valid, digest


def build_tokenizer(recipe: LMRecipe, train_text: str) -> Tokenizer:
    tok = recipe.tokenizer
    if tok.kind == "char":
        return train_tokenizer("char", [train_text], min_frequency=tok.min_frequency)
    # Lines keep their newline, so the vocabulary can emit line breaks.
    return train_tokenizer("bpe", train_text.splitlines(keepends=True), tok.vocab_size,
                           tok.min_frequency)


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Text of ``ids``; for BPE, drops the word-start marker's space after each line break,
    which line-by-line encoding (see ``encode_text``) puts at every line start."""
    text = tokenizer.decode(ids)
    return text.replace("\n ", "\n") if tokenizer.kind == "bpe" else text


# -- scoring --------------------------------------------------------------------------------------
@torch.inference_mode()
def score_ids(model: GPT, ids: Sequence[int] | torch.Tensor, block: int,
              batch_size: int = EVAL_BATCH) -> tuple[float, int]:
    """Summed NLL (nats) of every id after the first, over non-overlapping blocks, and the count.

    Summed in float64 on the host: a mean of per-batch means would weigh a short last block
    like a full one.
    """
    device = next(model.parameters()).device
    nll_sum, n = 0.0, 0
    for batch in eval_batches(ids, block, batch_size):
        batch = batch.to(device)
        logits = model.logits(batch.inputs).float()
        nll_sum += float(F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(),
                                         ignore_index=IGNORE, reduction="sum"))
        n += batch.n_tgt_tokens
    return nll_sum, n


def metrics_from_nll(nll_sum: float, n_tokens: int, n_chars: int) -> dict[str, float]:
    """Mean NLL per token, perplexity = exp(mean NLL), and bits per character.

    Bits per character divide the total information by characters rather than tokens, so char
    and BPE models (and other toolkits) can be compared on the same text.
    """
    mean = nll_sum / max(n_tokens, 1)
    return {"nll": mean, "ppl": math.exp(min(mean, 700.0)),
            "bpc": nll_sum / math.log(2) / max(n_chars, 1), "tokens": float(n_tokens),
            "chars": float(n_chars)}


# -- the inference side ---------------------------------------------------------------------------
class LanguageModel:
    """A trained GPT with its tokenizer: prompt in, streamed text out; text in, perplexity out."""

    def __init__(self, model: GPT, tokenizer: Tokenizer,
                 defaults: GenerateConfig | None = None) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.defaults = defaults or GenerateConfig()
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> LanguageModel:
        run_dir = Path(run_dir)
        model = GPT.load(run_dir, map_location=device)
        tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR)
        check_vocabulary(run_dir, tokenizer.vocab_size, model.config.vocab_size)
        defaults = None
        recipe_path = run_dir / "recipe.yaml"
        if recipe_path.is_file():
            recipe = recipe_from_dict(yaml.safe_load(recipe_path.read_text(encoding="utf-8")),
                                      str(recipe_path))
            defaults = recipe.generate if isinstance(recipe, LMRecipe) else None
        return cls(model, tokenizer, defaults)

    def encode_prompt(self, prompt: str) -> list[int]:
        ids = encode_text(self.tokenizer, prompt, self.model.bos_id)
        unknown = sum(1 for i in ids[1:] if i == self.tokenizer.unk_id)
        if unknown:
            log(f"warning: {unknown} prompt symbol(s) unknown to the tokenizer were mapped to "
                "<unk>")
        return ids

    def controls(self, min_new: int = 0, no_repeat_ngram: int = 0,
                 bad_words: Sequence[str] = ()) -> list:
        """The search processors for these flags; bad values are errors naming the flag."""
        from seqformer.decoding.processors import BadWords, MinLength, NoRepeatNGram
        from seqformer.errors import ConfigError

        if min_new < 0 or no_repeat_ngram < 0:
            raise ConfigError("--min-new and --no-repeat-ngram must be >= 0 (0 = off)")
        out: list = []
        if min_new:
            out.append(MinLength(min_new, self.model.eos_id))
        if no_repeat_ngram:
            out.append(NoRepeatNGram(no_repeat_ngram))
        banned = []
        for text in bad_words:
            ids = self.tokenizer.encode(text)
            if not ids or self.tokenizer.unk_id in ids:
                raise ConfigError(f"--bad-words {text!r} cannot be encoded by the model's "
                                  "tokenizer (empty or unknown symbols); fix or drop it")
            banned.append(ids)
        if banned:
            out.append(BadWords(banned))
        return out

    def stream(self, prompt: str, max_new: int | None = None, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None, stop: Sequence[str] = (),
               repetition_penalty: float | None = None, min_new: int = 0,
               no_repeat_ngram: int = 0, bad_words: Sequence[str] = ()) -> Iterator[str]:
        """Yield pieces of the continuation of ``prompt`` as tokens are sampled.

        Ends at eos, after ``max_new`` tokens, or just before the first stop string (which is
        not yielded). Text that could be the start of a stop string is held back until the next
        tokens decide, so nothing past a stop string ever reaches the terminal. Arguments left
        None take the run's ``generate`` recipe section. ``min_new``, ``no_repeat_ngram`` and
        ``bad_words`` are the decoding controls beam search has (0 / empty = off).
        """
        stops = [s for s in stop if s]
        hold = max((len(s) for s in stops), default=1) - 1
        prompt_ids = self.encode_prompt(prompt)
        if len(prompt_ids) > self.model.config.max_len:
            log(f"warning: the prompt has {len(prompt_ids)} tokens but the context is "
                f"{self.model.config.max_len}; the model sees only the last "
                f"{self.model.config.max_len}")
        prefix = decode(self.tokenizer, prompt_ids)
        generated: list[int] = []
        shown = 0
        tokens = self._generate([prompt_ids], max_new, temperature, top_k, top_p, generator,
                                repetition_penalty, min_new, no_repeat_ngram, bad_words)
        completion = ""
        for token in tokens:
            token_id = int(token[0])
            if token_id == self.model.eos_id:
                break
            generated.append(token_id)
            completion = decode(self.tokenizer, prompt_ids + generated)[len(prefix):]
            cuts = [i for i in (completion.find(s, max(shown - hold, 0)) for s in stops)
                    if i >= 0]
            if cuts:
                yield completion[shown:min(cuts)]
                return
            safe = len(completion) - hold
            if safe > shown:
                yield completion[shown:safe]
                shown = safe
        if len(completion) > shown:
            yield completion[shown:]

    def _generate(self, prompts: list[list[int]], max_new: int | None,
                  temperature: float | None, top_k: int | None, top_p: float | None,
                  generator: torch.Generator | None, repetition_penalty: float | None,
                  min_new: int, no_repeat_ngram: int, bad_words: Sequence[str]
                  ) -> Iterator[torch.Tensor]:
        """``generate`` over equal-length prompts, unset knobs from the recipe's defaults."""
        d = self.defaults
        return generate(
            self.model, torch.tensor(prompts, device=self.device),
            d.max_new if max_new is None else max_new,
            d.temperature if temperature is None else temperature,
            d.top_k if top_k is None else top_k, d.top_p if top_p is None else top_p,
            generator, self.model.eos_id,
            d.repetition_penalty if repetition_penalty is None else repetition_penalty,
            # GPT-2 uses one id for all of these: never suppress the end of text.
            suppress=tuple(sorted({self.model.pad_id, self.tokenizer.bos_id,
                                   self.tokenizer.unk_id} - {self.model.eos_id})),
            controls=self.controls(min_new, no_repeat_ngram, bad_words))

    def samples(self, prompt: str, num: int, max_new: int | None = None,
                temperature: float | None = None, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None,
                stop: Sequence[str] = (), repetition_penalty: float | None = None,
                min_new: int = 0, no_repeat_ngram: int = 0, bad_words: Sequence[str] = ()
                ) -> list[str]:
        """``num`` continuations of ``prompt`` drawn together as one batch -- one forward pass
        per token for all of them -- each cut at eos or just before its first stop string.
        Arguments as for :meth:`stream`."""
        prompt_ids = self.encode_prompt(prompt)
        prefix = decode(self.tokenizer, prompt_ids)
        rows: list[list[int]] = [[] for _ in range(num)]
        ended = [False] * num
        for token in self._generate([prompt_ids] * num, max_new, temperature, top_k, top_p,
                                    generator, repetition_penalty, min_new, no_repeat_ngram,
                                    bad_words):
            for i, t in enumerate(token.tolist()):
                ended[i] = ended[i] or t == self.model.eos_id
                if not ended[i]:
                    rows[i].append(t)
        texts = []
        for row in rows:
            text = decode(self.tokenizer, prompt_ids + row)[len(prefix):]
            cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
            texts.append(text[:min(cuts)] if cuts else text)
        return texts

    def beam(self, prompt: str, beam: int, max_new: int | None = None, nbest: int = 1,
             alpha: float = 0.0, penalty: str = "gnmt", min_new: int = 0,
             no_repeat_ngram: int = 0, bad_words: Sequence[str] = ()) -> list[tuple[str, float]]:
        """The ``nbest`` most likely continuations by beam search, with their scores
        (log-prob / length penalty): deterministic, for when the likeliest text is wanted
        rather than a sample. ``max_new`` counts the end of text too."""
        from seqformer.decoding.continuation import Continuation
        from seqformer.decoding.search import beam_search

        if beam < 1 or not 1 <= nbest <= beam:
            raise ConfigError(f"need --beam >= 1 and 1 <= --nbest <= --beam, got {beam}, "
                              f"{nbest}")
        prompt_ids = self.encode_prompt(prompt)
        max_new = self.defaults.max_new if max_new is None else max_new
        room = self.model.config.max_len - len(prompt_ids)
        if room < 1:
            raise ConfigError(f"the prompt has {len(prompt_ids)} tokens and fills the "
                              f"context of {self.model.config.max_len}; shorten it")
        max_new = min(max_new, room)
        prefix = decode(self.tokenizer, prompt_ids)
        hyps = beam_search(Continuation(self.model),
                           torch.tensor([prompt_ids], device=self.device), beam, max_new,
                           alpha, penalty, nbest,
                           processors=self.controls(min_new, no_repeat_ngram, bad_words))[0]
        return [(decode(self.tokenizer, prompt_ids + h.tokens)[len(prefix):], h.score)
                for h in hyps]

    def complete(self, prompt: str, **kwargs) -> str:
        return "".join(self.stream(prompt, **kwargs))

    def perplexity(self, text: str, where: str = "text") -> dict[str, float]:
        """Perplexity, mean NLL per token and bits per character of ``text``."""
        if not text.strip():
            raise DataError(f"{where}: empty text; give some text to score")
        ids = encode_text(self.tokenizer, text, self.model.bos_id)
        unknown = sum(1 for i in ids if i == self.tokenizer.unk_id)
        if unknown:
            log(f"warning: {unknown} symbol(s) of {where} unknown to the tokenizer were scored "
                "as <unk>")
        nll_sum, n = score_ids(self.model, ids, self.model.config.max_len)
        return metrics_from_nll(nll_sum, n, len(text))


def recipe_heldout_text(run_dir: str | Path) -> tuple[str, str]:
    """The whole held-out text of the recipe a run was trained with (validation scored only
    its first ``data.valid_chars``), and a name for it: what ``evaluate`` scores without
    --text. The split must be the one trained on."""
    instead = "give --text FILE"
    recipe, path = read_run_recipe(run_dir, "the run's held-out text", instead)
    if not isinstance(recipe, LMRecipe):
        raise CheckpointError(f"{path}: not a language-model recipe; {instead}")
    _, valid, fingerprint = load_texts(recipe)
    check_same_split(recipe, fingerprint, path, instead)
    return valid, f"the recipe's held-out text ({fingerprint})"


def perplexity(run_dir: str | Path, text: str, device: str = "cpu") -> dict[str, float]:
    return LanguageModel.load(run_dir, device).perplexity(text)


# -- training -------------------------------------------------------------------------------------
def check_resumable(out: Path) -> None:
    if not (out / "recipe.yaml").is_file():
        raise CheckpointError(f"{out}: nothing to resume (no recipe.yaml); drop --resume")


def accumulation(recipe: LMRecipe, block: int) -> int:
    """Micro-batches per update: ``data.tokens_per_step`` in blocks of ``block`` tokens
    (rounded, at least one), else the recipe's ``train.accumulate``."""
    d = recipe.data
    if d.tokens_per_step:
        return max(1, round(d.tokens_per_step / (d.batch_size * block)))
    return recipe.train.accumulate


def train(recipe: LMRecipe, out_dir: str | Path, resume: bool = False) -> dict:
    """Train ``recipe`` into ``out_dir`` and return the trainer's summary."""
    out = Path(out_dir)
    t0 = time.time()
    if resume:
        check_resumable(out)
    train_text, valid_text, fingerprint = load_texts(recipe)
    log(f"data: {len(train_text):,} train / {len(valid_text):,} valid characters "
        f"(split {fingerprint}), read in {time.time() - t0:.1f}s")
    d = recipe.data
    torch.manual_seed(recipe.train.seed)
    if recipe.init_from:  # fine-tune an imported model: architecture and tokenizer come with it
        from seqformer.interop.finetune import load_lm_init

        model, tokenizer = load_lm_init(recipe.init_from, recipe.model)
        config = model.config
        log(f"init_from: {recipe.init_from}")
    else:
        tokenizer = (load_tokenizer(out / TOKENIZER_DIR) if resume
                     else build_tokenizer(recipe, train_text))
        config = recipe.model_config(tokenizer.vocab_size)
        model = GPT(config)
    train_ids = encode_text(tokenizer, train_text, config.bos_id)
    if d.train_tokens:
        if d.train_tokens > len(train_ids):
            raise ConfigError(f"data.train_tokens={d.train_tokens:,} but the training text has "
                              f"{len(train_ids):,} tokens; lower it (or drop it for all)")
        train_ids = train_ids[: d.train_tokens]  # the vocabulary above saw the whole text
    scored_valid = valid_text[: d.valid_chars] if d.valid_chars else valid_text
    valid_ids = encode_text(tokenizer, scored_valid, config.bos_id)
    log(f"model: {model.num_parameters() / 1e6:.2f}M parameters, {tokenizer.kind} vocab "
        f"{tokenizer.vocab_size}, {config.layers} layers, d_model {config.d_model}, context "
        f"{config.max_len}; {len(train_ids):,} train / {len(valid_ids):,} valid tokens")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": fingerprint,
                                               "tokenizer": tokenizer.fingerprint},
                           config_json(config))

    if not resume and is_main_process():
        tokenizer.save(out / TOKENIZER_DIR)  # written once, before any checkpoint
    save_run(out)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        nll_sum, n = score_ids(m, valid_ids, config.max_len)
        metrics = metrics_from_nll(nll_sum, n, len(scored_valid))
        return {"valid_loss": metrics["nll"], "valid_ppl": metrics["ppl"],
                "valid_bpc": metrics["bpc"]}

    train_config = recipe.train
    if d.tokens_per_step:
        accumulate = accumulation(recipe, config.max_len)
        train_config = dataclasses.replace(train_config, accumulate=accumulate)
        log(f"batch: {accumulate} x {d.batch_size} blocks of {config.max_len} = "
            f"{accumulate * d.batch_size * config.max_len:,} tokens per update")
    stream = BlockStream(train_ids, config.max_len, d.batch_size, recipe.train.seed)
    trainer = Trainer(model, train_config, stream, out, validate=validate, on_save=save_run)
    return trainer.train(resume=resume)

