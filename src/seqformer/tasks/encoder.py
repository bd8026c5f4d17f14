"""Encoder (BERT) tasks: masked-LM pretraining, fine-tuning with one head per task, and the
inference side (fill-mask, sentence embeddings, evaluation).

The task owns what the trainer must not know: reading and splitting the corpora, training the
WordPiece vocabulary, encoding examples, the validation metrics and the run directory
(``tokenizer/``, ``config.json`` with ``family: bert``, ``recipe.yaml``). Fine-tuning starts
from a pretraining run (``init_from``): its tokenizer and encoder weights, a fresh head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from seqformer.data.finetune import (
    EncodedExample,
    LabelledStream,
    collate_labelled,
    encode_classification,
    encode_qa,
    encode_tagging,
    read_classification_tsv,
    read_conll,
    read_qa_jsonl,
)
from seqformer.data.mlm import (
    MLMStream,
    build_pair_examples,
    collate,
    fixed_masked_batches,
    pair_example,
    split_sentences,
    tokenize_documents,
)
from seqformer.data.tokenizer import Tokenizer, load_tokenizer
from seqformer.data.wordpiece import MASK_ID, train_wordpiece
from seqformer.errors import CheckpointError, DataError
from seqformer.metrics.classification import accuracy, entity_f1, macro_f1, squad
from seqformer.models.bert import (
    IGNORE,
    PAD_ID,
    BERTConfig,
    BERTModel,
    EncoderBatch,
    freeze_patterns,
    read_bert_config,
)
from seqformer.models.heads import decode_spans
from seqformer.recipe_encoder import (
    BASELINE_CLASSIFIERS,
    MLM_SOURCES,
    DistilRecipe,
    FinetuneRecipe,
    MLMRecipe,
    baseline_config_fields,
    encoder_recipe_from_dict,
)
from seqformer.tasks.rundir import check_vocabulary, log, write_run_metadata
from seqformer.training.trainer import Trainer

TOKENIZER_DIR = "tokenizer"
EVAL_BATCH = 64


def _bucket(key: str) -> float:
    """A stable number in [0, 100) from a key: the split is a function of the text alone."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 10000 / 100.0


# == pretraining ==================================================================================
Document = tuple[str, list[str]]  # (key for the split, segments)


def mlm_documents(recipe: MLMRecipe) -> list[Document]:
    """Every source's documents, each a list of segments (sentences, verses, lines)."""
    d = recipe.data
    docs: list[Document] = []
    for source in d.sources:
        found: list[Document] = []
        if source == "fortunes":
            from seqformer.data.fortunes import fortune_texts, normalise

            found = [(f"fortune:{normalise(t)}", split_sentences(t)) for t in fortune_texts()]
        elif source == "files":
            from seqformer.data.lm import read_text_files

            for path in d.files or []:
                text = read_text_files([path])
                for block in text.split("\n\n"):
                    lines = [line.strip() for line in block.splitlines() if line.strip()]
                    if lines:
                        found.append((f"file:{' '.join(lines)}", lines))
        else:
            from seqformer.data.bible import read_verses

            chapters: dict[tuple[str, int], list[str]] = {}
            for (book, chapter, _), text in read_verses(MLM_SOURCES[source]).items():
                chapters.setdefault((book, chapter), []).append(text)
            found = [(f"{source}:{b} {c}", verses) for (b, c), verses in chapters.items()]
        if d.max_documents:
            found = found[: d.max_documents]
        log(f"data: {source}: {len(found):,} documents, "
            f"{sum(len(s) for _, segs in found for s in segs):,} characters")
        docs.extend(found)
    if not docs:
        raise DataError("no pretraining text: every source in data.sources is empty")
    return docs


def split_documents(docs: list[Document], valid_percent: float
                    ) -> tuple[list[Document], list[Document]]:
    train = [doc for doc in docs if _bucket(doc[0]) >= valid_percent]
    valid = [doc for doc in docs if _bucket(doc[0]) < valid_percent]
    if not train or not valid:
        raise DataError(f"{len(docs)} documents are too few to hold out {valid_percent}% for "
                        "validation; add text or raise data.valid_percent")
    return train, valid


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:16]


def check_resumable(out: Path) -> None:
    if not (out / "recipe.yaml").is_file():
        raise CheckpointError(f"{out}: nothing to resume (no recipe.yaml); drop --resume")


def _documents(recipe: MLMRecipe | DistilRecipe) -> tuple[list[Document], list[Document], str]:
    t0 = time.time()
    train_docs, valid_docs = split_documents(mlm_documents(recipe), recipe.data.valid_percent)
    split = _fingerprint([k for k, _ in train_docs], [k for k, _ in valid_docs])
    log(f"data: {len(train_docs):,} train / {len(valid_docs):,} valid documents (split {split})"
        f", read in {time.time() - t0:.1f}s")
    return train_docs, valid_docs, split


def train_mlm(recipe: MLMRecipe, out_dir: str | Path, resume: bool = False) -> dict:
    """Pretrain a BERT encoder with masked language modelling into ``out_dir``."""
    out = Path(out_dir)
    if resume:
        check_resumable(out)
    train_docs, valid_docs, split = _documents(recipe)
    if resume:
        tokenizer = load_tokenizer(out / TOKENIZER_DIR)
    else:
        tokenizer = train_wordpiece((s for _, segs in train_docs for s in segs),
                                    recipe.tokenizer.vocab_size, recipe.tokenizer.min_frequency)
    torch.manual_seed(recipe.train.seed)
    model = BERTModel(recipe.model_config(tokenizer.vocab_size), "mlm")
    return _train_masked_lm(recipe, out, resume, model, tokenizer, train_docs, valid_docs,
                            {"split": split})


def train_distil(recipe: DistilRecipe, out_dir: str | Path, resume: bool = False) -> dict:
    """Distil the MLM run ``recipe.teacher`` into a half-depth student in ``out_dir``."""
    from seqformer.models.distil import DistillingBERT, make_student

    out = Path(out_dir)
    if resume:
        check_resumable(out)
    teacher_dir = Path(recipe.teacher)
    if not (teacher_dir / "config.json").is_file():
        raise CheckpointError(f"teacher: {teacher_dir} is not a run directory (no config.json);"
                              " train one with 'seqformer train bert-pretrain' or fix the path")
    teacher = BERTModel.load(teacher_dir)
    if teacher.head_kind != "mlm":
        raise CheckpointError(f"teacher: {teacher_dir} has a {teacher.head_kind} head; "
                              "distillation needs a task: mlm run")
    tokenizer = load_tokenizer(teacher_dir / TOKENIZER_DIR)
    _require_wordpiece(tokenizer, teacher_dir)
    train_docs, valid_docs, split = _documents(recipe)
    torch.manual_seed(recipe.train.seed)
    student = make_student(teacher, **recipe.model)
    model = DistillingBERT(student, teacher, recipe.temperature, recipe.alpha_kl,
                           recipe.alpha_mlm, recipe.alpha_cos)
    log(f"distil: teacher {teacher_dir} ({teacher.config.layers} layers, "
        f"{teacher.num_parameters() / 1e6:.2f}M) -> student {student.config.layers} layers "
        f"({student.num_parameters() / 1e6:.2f}M)")
    return _train_masked_lm(recipe, out, resume, model, tokenizer, train_docs, valid_docs,
                            {"split": split, "teacher": f"{teacher_dir}:{tokenizer.fingerprint}"},
                            teacher)


def _train_masked_lm(recipe: MLMRecipe | DistilRecipe, out: Path, resume: bool,
                     model: BERTModel, tokenizer: Tokenizer, train_docs: list[Document],
                     valid_docs: list[Document], fingerprints: dict[str, str],
                     teacher: BERTModel | None = None) -> dict:
    """The part pretraining and distillation share: pair examples, the masked stream, the
    fixed-mask validation, run metadata and the Trainer."""
    config, seed = model.config, recipe.train.seed
    train_examples = build_pair_examples(
        tokenize_documents(tokenizer, [segs for _, segs in train_docs]), config.max_len, seed)
    valid_examples = build_pair_examples(
        tokenize_documents(tokenizer, [segs for _, segs in valid_docs]), config.max_len, seed)
    valid_examples = valid_examples[: recipe.data.valid_examples]
    n_tokens = sum(len(ids) for ids, _ in train_examples)
    log(f"model: {model.num_parameters() / 1e6:.2f}M parameters, wordpiece vocab "
        f"{tokenizer.vocab_size}, {config.layers} layers, d_model {config.d_model}; "
        f"{len(train_examples):,} train pairs ({n_tokens:,} tokens) / "
        f"{len(valid_examples):,} valid pairs")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {**fingerprints,
                                               "tokenizer": tokenizer.fingerprint},
                           model.config_json())

    if not resume:
        tokenizer.save(out / TOKENIZER_DIR)
    save_run(out)
    valid_batches = fixed_masked_batches(valid_examples, recipe.data.batch_size,
                                         tokenizer.vocab_size, seed + 1,
                                         recipe.data.mask_probability)
    if teacher is not None:
        scores = mlm_metrics(teacher, valid_batches)
        log("teacher: " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    def validate(m: torch.nn.Module) -> dict[str, float]:
        return mlm_metrics(m, valid_batches)

    stream = MLMStream(train_examples, recipe.data.batch_size, tokenizer.vocab_size, seed,
                       recipe.data.mask_probability)
    trainer = Trainer(model, recipe.train, stream, out, validate=validate, on_save=save_run)
    return trainer.train(resume=resume)


@torch.no_grad()
def mlm_metrics(model: torch.nn.Module, batches: Sequence[EncoderBatch]) -> dict[str, float]:
    """Mean masked-token NLL and accuracy over every masked position of ``batches`` (the
    hard-label part only, so a distilled student is scored like its teacher)."""
    device = next(model.parameters()).device
    loss_sum, correct, n = 0.0, 0, 0
    for batch in batches:
        batch = batch.to(device)
        out = model(batch)
        scored = batch.labels.ne(IGNORE)
        count = int(scored.sum())
        loss_sum += float(out.nll) * count
        correct += int((out.logits.argmax(-1) == batch.labels[scored]).sum())
        n += count
    return {"valid_loss": loss_sum / max(n, 1), "valid_accuracy": correct / max(n, 1)}


# == fine-tuning ==================================================================================
Items = dict[str, list[Any]]  # split -> raw items of the task


def load_items(recipe: FinetuneRecipe) -> Items:
    """Raw items per split: (text_a, text_b, label) / (words, tags) / QA dicts."""
    d = recipe.data
    if d.corpus == "fortunes":
        from seqformer.data.fortunes import labelled_fortunes

        splits, dropped = labelled_fortunes(d.categories)
        log(f"data: fortunes {', '.join(d.categories)}: "
            + ", ".join(f"{len(v)} {k}" for k, v in splits.items())
            + f" (dropped {dropped['duplicates']} duplicates, {dropped['ambiguous']} with two "
              "categories)")
        return {k: [(f.text, None, f.category) for f in v] for k, v in splits.items()}
    reader = {"classify": read_classification_tsv, "tag": read_conll,
              "qa": read_qa_jsonl}[recipe.task]
    train = reader(d.train)
    if d.valid:
        valid = reader(d.valid)
    else:
        keys = [json.dumps(item, ensure_ascii=False, default=str) for item in train]
        valid = [x for x, k in zip(train, keys) if _bucket(k) < d.valid_percent]
        train = [x for x, k in zip(train, keys) if _bucket(k) >= d.valid_percent]
        if not valid or not train:
            raise DataError(f"{d.train}: too few examples to hold out {d.valid_percent}% for "
                            "validation; give data.valid")
    test = reader(d.test) if d.test else []
    return {"train": train, "valid": valid, "test": test}


def label_names(task: str, train_items: list[Any], recipe: FinetuneRecipe) -> list[str]:
    if task == "classify":
        if recipe.data.corpus == "fortunes":
            return list(recipe.data.categories)
        return sorted({label for _, _, label in train_items})
    if task == "tag":
        tags = {t for _, tags in train_items for t in tags} | {"O"}
        return ["O", *sorted(tags - {"O"})]
    return []


def encode_items(task: str, tokenizer: Tokenizer, items: list[Any], labels: list[str],
                 max_len: int, where: str, training: bool = False) -> list[EncodedExample]:
    """Encode raw items; a label unseen in training is a DataError naming it."""
    index = {name: i for i, name in enumerate(labels)}

    def label_id(name: str) -> int:
        if name not in index:
            raise DataError(f"{where}: label {name!r} does not occur in the training data "
                            f"(labels: {', '.join(labels)})")
        return index[name]

    out = []
    for item in items:
        if task == "classify":
            a, b, name = item
            out.append(encode_classification(tokenizer, a, b, label_id(name), max_len))
        elif task == "tag":
            words, tags = item
            out.append(encode_tagging(tokenizer, words, [label_id(t) for t in tags], max_len))
        else:
            example = encode_qa(tokenizer, item["question"], item["context"], item["answers"],
                                max_len)
            if training and not example.meta["found"]:
                continue  # the answer was truncated away: nothing to learn from
            out.append(example)
    return out


def _require_wordpiece(tokenizer: Tokenizer, where: Path) -> None:
    if tokenizer.kind != "wordpiece":
        raise CheckpointError(f"{where}: a {tokenizer.kind} tokenizer; encoder tasks need the "
                              "wordpiece tokenizer of a task: mlm run")


WORD2VEC_PREFIX = "word2vec:"  # model.embeddings: word2vec:fortunes trains the vectors first


def init_word_vectors(model: Any, tokenizer: Tokenizer, path: str) -> None:
    """A baseline classifier's embeddings from a word2vec text file (``model.embeddings``), or
    from vectors trained here and now on a built-in corpus (``word2vec:fortunes``: seconds)."""
    from seqformer.models.word2vec import WordVectors, corpus_texts, train_word2vec

    if path.startswith(WORD2VEC_PREFIX):
        corpus = path[len(WORD2VEC_PREFIX):]
        vectors = train_word2vec(corpus_texts(corpus), dim=model.config.embed_dim,
                                 progress=False)
        log(f"model.embeddings: word2vec on the {corpus} corpus, {len(vectors):,} words, "
            f"{vectors.stats['seconds']:.1f} s")
    else:
        vectors = WordVectors.load(path)
    tokens = tokenizer.pieces(range(tokenizer.vocab_size))
    found = model.init_embeddings(tokens, vectors)
    log(f"model.embeddings: {found:,} of {len(tokens):,} tokens have a vector in {path} "
        f"({100 * found / len(tokens):.0f}%; the rest start random), "
        f"embeddings_mode {model.config.embeddings_mode}")


def init_encoder(recipe: FinetuneRecipe, train_items: list[Any], labels: list[str]
                 ) -> tuple[BERTModel, Tokenizer, str]:
    """The model to fine-tune and its tokenizer: from ``init_from`` or, without it, new."""
    task = recipe.task
    kind = recipe.model.get("kind")
    if kind in BASELINE_CLASSIFIERS:  # Kim's CNN or an RNN: from scratch, own WordPiece
        texts = ([" ".join(w) for w, _ in train_items] if task == "tag"
                 else [t for a, b, _ in train_items for t in (a, b) if t])
        tokenizer = train_wordpiece(texts, recipe.tokenizer.vocab_size,
                                    recipe.tokenizer.min_frequency)
        fields = {**baseline_config_fields(recipe), "vocab_size": tokenizer.vocab_size,
                  "num_labels": len(labels)}
        if kind == "cnn":
            from seqformer.models.cnn import CNNClassifier, CNNClassifierConfig

            log("model.kind: cnn -- a convolutional classifier trained from scratch")
            baseline: Any = CNNClassifier(CNNClassifierConfig(**fields), labels)
        else:
            from seqformer.models.rnn_classifier import RNNClassifier, RNNClassifierConfig

            log(f"model.kind: {kind} -- a recurrent "
                f"{'tagger' if task == 'tag' else 'classifier'} trained from scratch")
            baseline = RNNClassifier(RNNClassifierConfig(**fields), labels)
        if baseline.config.embeddings:
            init_word_vectors(baseline, tokenizer, baseline.config.embeddings)
        return baseline, tokenizer, f"scratch-{kind}"
    if recipe.init_from is None:
        log("init_from is not set: training the encoder from scratch (no pretraining)")
        texts = ([t for a, b, _ in train_items for t in (a, b) if t] if task == "classify"
                 else [" ".join(w) for w, _ in train_items] if task == "tag"
                 else [t for item in train_items for t in (item["question"], item["context"])])
        tokenizer: Tokenizer = train_wordpiece(texts, recipe.tokenizer.vocab_size,
                                               recipe.tokenizer.min_frequency)
        config = BERTConfig(**{**recipe.model, "vocab_size": tokenizer.vocab_size})
        return BERTModel(config, task, labels), tokenizer, "scratch"
    source = Path(recipe.init_from)
    if not (source / "config.json").is_file():
        raise CheckpointError(f"init_from: {source} is not a run directory (no config.json); "
                              "train one with 'seqformer train bert-pretrain' or fix the path")
    from seqformer.training.checkpoint import read_weights

    base, _, _ = read_bert_config(source)
    config = dataclasses.replace(base, **recipe.model)
    tokenizer = load_tokenizer(source / TOKENIZER_DIR)
    _require_wordpiece(tokenizer, source)
    model = BERTModel(config, task, labels)
    weights = {k: v for k, v in read_weights(source / "model.safetensors").items()
               if k.startswith("bert.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k.startswith("bert.")]
    if missing or unexpected:
        raise CheckpointError(f"{source}/model.safetensors: encoder weights do not fit "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    log(f"init_from: encoder weights and tokenizer of {source}")
    return model, tokenizer, f"{source}:{tokenizer.fingerprint}"


@torch.no_grad()
def predict(model: BERTModel, examples: Sequence[EncodedExample],
            batch_size: int = EVAL_BATCH) -> tuple[list[torch.Tensor], float]:
    """Per-example logits (unpadded) and the mean loss, in input order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs: list[torch.Tensor] = []
    loss_sum = 0.0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        batch = collate_labelled(chunk, model.head_kind).to(device)
        result = model(batch)
        loss_sum += float(result.loss) * len(chunk)
        logits = result.logits.float().cpu()
        for row, e in enumerate(chunk):
            outs.append(logits[row] if model.head_kind == "classify"
                        else logits[row, :len(e.ids)])
    model.train(was_training)
    return outs, loss_sum / max(len(examples), 1)


def task_metrics(model: BERTModel, examples: Sequence[EncodedExample],
                 prefix: str = "valid_") -> dict[str, float]:
    """accuracy/macro-F1 (classify), entity P/R/F1 (tag), SQuAD EM/F1 (qa), and the loss."""
    logits, loss = predict(model, examples)
    kind, labels = model.head_kind, model.labels
    metrics: dict[str, float] = {"loss": loss}
    if kind == "classify":
        gold = [e.label for e in examples]
        pred = [int(x.argmax()) for x in logits]
        metrics |= {"accuracy": accuracy(gold, pred),
                    "macro_f1": macro_f1(gold, pred, range(len(labels)))}
    elif kind == "tag":
        gold_tags, pred_tags = [], []
        for e, x in zip(examples, logits):
            best = x.argmax(-1)
            first = e.meta["first"]
            gold_tags.append([labels[e.label[first[w]]] if w in first else "O"
                              for w in range(e.meta["n_words"])])
            pred_tags.append([labels[int(best[first[w]])] if w in first else "O"
                              for w in range(e.meta["n_words"])])
        metrics |= entity_f1(gold_tags, pred_tags)
    else:
        texts = qa_answers(examples, logits)
        scores = squad(texts, [e.meta["answers"] for e in examples])
        metrics |= {"exact": scores["exact"], "f1": scores["f1"]}
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def qa_answers(examples: Sequence[EncodedExample], logits: Sequence[torch.Tensor],
               max_answer_len: int = 30) -> list[str]:
    """The context text of the best valid span of each example."""
    texts = []
    for e, x in zip(examples, logits):
        allowed = torch.zeros(1, len(e.ids), dtype=torch.bool)
        start = e.meta["ctx_start"]
        allowed[0, start:start + len(e.meta["offsets"])] = True
        (s, t), = decode_spans(x[None, :, 0], x[None, :, 1], allowed, max_answer_len)
        if s < 0:
            texts.append("")
            continue
        offsets = e.meta["offsets"]
        texts.append(e.meta["context"][offsets[s - start][0]:offsets[t - start][1]])
    return texts


def train_finetune(recipe: FinetuneRecipe, out_dir: str | Path,
                   resume: bool = False) -> tuple[dict, dict[str, float]]:
    """Fine-tune into ``out_dir``; returns the trainer summary and the test metrics (empty
    without a test split), which are also written to ``test_metrics.json``."""
    out = Path(out_dir)
    if resume:
        check_resumable(out)
    items = load_items(recipe)
    labels = label_names(recipe.task, items["train"], recipe)
    torch.manual_seed(recipe.train.seed)
    model, tokenizer, origin = init_encoder(recipe, items["train"], labels)
    if resume:
        tokenizer = load_tokenizer(out / TOKENIZER_DIR)
    max_len = min(recipe.data.max_len or model.config.max_len, model.config.max_len)
    encoded = {split: encode_items(recipe.task, tokenizer, part, labels, max_len,
                                   f"data.{split}", training=split == "train")
               for split, part in items.items()}
    if not encoded["train"]:
        raise DataError("no training examples after encoding; check data.train")
    split = _fingerprint({k: [json.dumps(x, default=str) for x in v] for k, v in items.items()})
    patterns = freeze_patterns(recipe.freeze, getattr(model.config, "layers", 0))
    stream = LabelledStream(encoded["train"], recipe.data.batch_size, recipe.train.seed,
                            recipe.task)
    train_config = recipe.train.for_epochs(stream.per_epoch)
    train_config = dataclasses.replace(train_config, freeze=[*train_config.freeze, *patterns])
    log(f"model: {model.num_parameters() / 1e6:.2f}M parameters, head {recipe.task}"
        + (f" ({len(labels)} labels)" if labels else "") + f", freeze {recipe.freeze}; "
        + ", ".join(f"{len(v)} {k}" for k, v in encoded.items())
        + f" examples; {train_config.max_steps} steps")

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split, "tokenizer":
                                               tokenizer.fingerprint, "init_from": origin},
                           model.config_json())

    if not resume:
        tokenizer.save(out / TOKENIZER_DIR)
    save_run(out)
    trainer = Trainer(model, train_config, stream, out,
                      validate=lambda m: task_metrics(m, encoded["valid"]), on_save=save_run)
    summary = trainer.train(resume=resume)
    test_metrics: dict[str, float] = {}
    if encoded["test"] and not summary.get("interrupted"):
        best = load_encoder_model(out, str(trainer.device))
        test_metrics = task_metrics(best, encoded["test"], "test_")
        (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2) + "\n",
                                               encoding="utf-8")
    return summary, test_metrics


# == inference ====================================================================================
def load_encoder_model(run_dir: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The model of an encoder run: a BERT with its head, a CNN or a recurrent classifier."""
    from seqformer.models.rnn_classifier import FAMILY as RNN_FAMILY
    from seqformer.models.rnn_classifier import RNNClassifier
    from seqformer.models.seq2seq import read_model_config

    family = read_model_config(run_dir).get("family")
    if family == "cnn":
        from seqformer.models.cnn import CNNClassifier

        return CNNClassifier.load(run_dir, device)
    if family == RNN_FAMILY:
        return RNNClassifier.load(run_dir, device)
    return BERTModel.load(run_dir, device)


class EncoderRun:
    """A trained encoder with its tokenizer and recipe: fill-mask, embed, evaluate."""

    def __init__(self, model: BERTModel, tokenizer: Tokenizer, recipe: Any = None) -> None:
        self.model, self.tokenizer, self.recipe = model.eval(), tokenizer, recipe
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> EncoderRun:
        run_dir = Path(run_dir)
        model = load_encoder_model(run_dir, device)
        tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR)
        _require_wordpiece(tokenizer, run_dir)
        check_vocabulary(run_dir, tokenizer.vocab_size, model.config.vocab_size)
        recipe = None
        path = run_dir / "recipe.yaml"
        if path.is_file():
            recipe = encoder_recipe_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")),
                                              str(path))
        return cls(model, tokenizer, recipe)

    def _encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        limit = self.model.config.max_len - 2
        ids, types = collate([pair_example(self.tokenizer.encode(t)[:limit]) for t in texts])
        return ids.to(self.device), types.to(self.device)

    @torch.no_grad()
    def fill_mask(self, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (token, probability) for each [MASK] in ``text``, left to right."""
        if self.model.head_kind != "mlm":
            raise DataError(f"fill-mask needs a pretrained (task: mlm) model; this one has a "
                            f"{self.model.head_kind} head")
        ids, types = self._encode([text])
        where = (ids[0] == MASK_ID).nonzero().flatten().tolist()
        if not where:
            raise DataError(f"no [MASK] in {text!r}; write [MASK] where a word is missing")
        probs = self.model.logits(ids, types)[0].float().softmax(-1)
        probs[:, :MASK_ID + 1] = 0.0  # never propose a special token
        out = []
        for pos in where:
            p, i = probs[pos].topk(top_k)
            out.append([(self.tokenizer.pieces([int(t)])[0], float(q)) for q, t in zip(p, i)])
        return out

    def _bert(self) -> BERTModel:
        if not isinstance(self.model, BERTModel):
            kind = "CNN" if self.model.config_json()["family"] == "cnn" else "recurrent"
            raise DataError(f"embed needs a BERT encoder run; this is a {kind} classifier, "
                            "which has no token states to pool")
        return self.model

    @torch.no_grad()
    def embed(self, texts: Sequence[str], pooling: str | None = None,
              batch_size: int = EVAL_BATCH, layers: Sequence[int] | None = None,
              combine: str = "concat") -> np.ndarray:
        """(len(texts), dim) float32 sentence embeddings (see ``BERTModel.embed``)."""
        model = self._bert()
        pooling = pooling or getattr(self.recipe, "pooling", "mean")
        parts = []
        for i in range(0, len(texts), batch_size):
            ids, types = self._encode(texts[i:i + batch_size])
            vectors = model.embed(ids, types, pooling, layers, combine)
            parts.append(vectors.float().cpu().numpy())
        return np.concatenate(parts).astype(np.float32)

    @torch.no_grad()
    def token_vectors(self, texts: Sequence[str], layers: Sequence[int] | None = None,
                      combine: str = "concat", batch_size: int = EVAL_BATCH
                      ) -> list[tuple[list[str], np.ndarray]]:
        """Each text's word pieces (with [CLS] and [SEP]) and their (pieces, dim) float32
        features (see ``BERTModel.token_states``): the input of a feature-based tagger."""
        model = self._bert()
        out = []
        for i in range(0, len(texts), batch_size):
            ids, types = self._encode(texts[i:i + batch_size])
            states = model.token_states(ids, types, layers, combine).float().cpu().numpy()
            for row, vectors in zip(ids.tolist(), states, strict=True):
                n = sum(1 for t in row if t != PAD_ID)
                out.append((self.tokenizer.pieces(row[:n]), vectors[:n].astype(np.float32)))
        return out

    def classify(self, texts: Sequence[str], top_k: int = 1) -> list[list[tuple[str, float]]]:
        """The ``top_k`` likeliest (label, probability) of each text, best first; a text with
        a tab is a pair (``a<TAB>b``, as in a classify TSV). A classify head or a CNN only."""
        from seqformer.tasks.classify import ranked

        if self.model.head_kind != "classify":
            raise DataError(f"classify needs a text classifier (task: classify); this model "
                            f"has a {self.model.head_kind} head")
        labels = list(self.model.labels)
        items = [(*(t.split("\t", 1) if "\t" in t else (t, None)), labels[0]) for t in texts]
        encoded = encode_items("classify", self.tokenizer, items, labels,
                               self.model.config.max_len, "input")
        logits, _ = predict(self.model, encoded)  # the placeholder labels only make a loss
        return ranked(torch.stack(logits), labels, top_k) if logits else []

    def evaluate(self, items: list[Any]) -> dict[str, float]:
        """Metrics of the model's head on raw items of its task (see :func:`load_items`)."""
        task = self.model.head_kind
        if task == "mlm":
            raise DataError("evaluate: a pretrained (mlm) model has no task head; evaluate a "
                            "fine-tuned run, or use fill-mask")
        encoded = encode_items(task, self.tokenizer, items, self.model.labels,
                               self.model.config.max_len, "--data")
        return task_metrics(self.model, encoded, "")
