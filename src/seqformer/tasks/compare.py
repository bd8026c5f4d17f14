"""``seqformer compare``: train several model families on one task and tabulate the trade-offs.

A compare recipe is a transduction recipe whose ``model`` section is replaced by ``models``, a
mapping from a label to a model section (``kind`` picks the family, see
:mod:`seqformer.models.registry`). Every model gets the same data, tokenizers, training budget
and decoding, so the rows differ only in the architecture. With a ``synthetic`` section the data
is :mod:`seqformer.data.synthetic`'s copy/reverse task, generated at every length in
``synthetic.lengths``: the long-range sweep.

Each run is an ordinary run directory (``OUT/LABEL`` or ``OUT/TASK-LENGTH/LABEL``) that every
other command accepts. The table (``OUT/compare.md``, and ``compare.json``) reports, per run:
parameters; training seconds per epoch, computed as target tokens per epoch / training tokens
per second (the trainer's logged throughput, which excludes validation); decoding speed on the
test split (sentences and output tokens per second, with the recipe's decoding; the clock runs
around decoding alone); and the test PER and WER (for the synthetic tasks WER is 100 -
exact-match accuracy, and test decoding stops at ``length + 1`` tokens unless
``decode.max_length`` is set: a model that never emits eos would otherwise spend most of the
sweep generating ``2 * length + 10`` tokens of nothing). For the sweep, the compare-reverse recipe
selects checkpoints by validation loss, so training never decodes long validation outputs.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seqformer.config import from_dict, load_yaml, parse_override, set_path
from seqformer.data.synthetic import SYNTHETIC_TASKS, synthetic_splits
from seqformer.errors import ConfigError
from seqformer.metrics import error_rates
from seqformer.recipe import Recipe, recipe_from_dict, resolve_recipe_path


@dataclass(frozen=True)
class SyntheticConfig:
    task: str = "reverse"
    lengths: list[int] = field(default_factory=lambda: [10, 25, 50, 100, 200])
    train_examples: int = 5000
    valid_examples: int = 200
    test_examples: int = 200
    symbols: int = 10
    seed: int = 1

    def __post_init__(self) -> None:
        if self.task not in SYNTHETIC_TASKS:
            raise ConfigError(f"synthetic.task={self.task!r}; use one of "
                              f"{', '.join(SYNTHETIC_TASKS)}")
        if not self.lengths or any(n < 1 for n in self.lengths):
            raise ConfigError(f"synthetic.lengths must be a non-empty list of lengths >= 1, "
                              f"got {self.lengths}")
        for name in ("train_examples", "valid_examples", "test_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"synthetic.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class CompareRecipe:
    """The shared sections of a transduction recipe (kept as mappings and validated per model
    through :func:`~seqformer.recipe.recipe_from_dict`), ``models`` and optional ``synthetic``."""

    name: str = "compare"
    task: str = "compare"
    data: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    decode: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: SyntheticConfig | None = None

    def __post_init__(self) -> None:
        if self.task != "compare":
            raise ConfigError(f"task={self.task!r}: a compare recipe has task: compare")
        if not self.models:
            raise ConfigError("models: give at least one label: {kind: ..., ...} entry")
        for label, section in self.models.items():
            if not isinstance(section, dict):
                raise ConfigError(f"models.{label} must be a mapping of model fields")


@dataclass
class Row:
    task: str
    length: int | None
    label: str
    kind: str
    params: int
    steps: int
    train_minutes: float
    epoch_s: float
    train_tok_s: float
    decode_sent_s: float
    decode_tok_s: float
    per: float
    wer: float
    run_dir: str


def load_compare(name_or_path: str, overrides: list[str] | None = None) -> CompareRecipe:
    path = resolve_recipe_path(name_or_path)
    tree = load_yaml(path)
    for text in overrides or []:
        set_path(tree, *parse_override(text))
    return from_dict(CompareRecipe, tree, str(path))


def _plan(compare: CompareRecipe, out: Path) -> list[tuple[str, int | None, str, Recipe, Path]]:
    """Every (task, length, label, recipe, run_dir), all validated before anything trains."""
    lengths: list[int | None] = list(compare.synthetic.lengths) if compare.synthetic else [None]
    plan = []
    for length in lengths:
        task = (f"{compare.synthetic.task}-{length}" if compare.synthetic
                else str(compare.data.get("corpus", "files")))
        data = dict(compare.data)
        if compare.synthetic:
            folder = out.resolve() / "data" / task  # absolute: recipe.yaml outlives the cwd
            data.update(corpus="files", train=[str(folder / "train.tsv")],
                        valid=[str(folder / "valid.tsv")], test=[str(folder / "test.tsv")],
                        max_source_len=length, max_target_len=length)
        for label, section in compare.models.items():
            model = dict(section)
            if compare.synthetic:  # room for the whole sequence plus bos/eos
                model["max_len"] = max(int(model.get("max_len", 0)), length + 2)
            decode = dict(compare.decode)
            if compare.synthetic:  # every target has exactly `length` tokens, plus eos
                decode.setdefault("max_length", length + 1)
            tree = {"name": f"{compare.name}-{label}", "task": "transduction",
                    "data": data, "tokenizer": compare.tokenizer, "model": model,
                    "train": compare.train, "decode": decode}
            recipe = recipe_from_dict(copy.deepcopy(tree), f"{compare.name}: models.{label}")
            run_dir = out / task / label if compare.synthetic else out / label
            if (run_dir / "log.jsonl").is_file():
                raise ConfigError(f"{run_dir} already holds a run; pass a new --out or remove it")
            plan.append((task, length, label, recipe, run_dir))
    return plan


def _write_synthetic(compare: CompareRecipe, out: Path) -> None:
    syn = compare.synthetic
    for length in syn.lengths:
        folder = out / "data" / f"{syn.task}-{length}"
        folder.mkdir(parents=True, exist_ok=True)
        sizes = (syn.train_examples, syn.valid_examples, syn.test_examples)
        for name, pairs in synthetic_splits(syn.task, length, sizes, syn.seed,
                                            syn.symbols).items():
            (folder / f"{name}.tsv").write_text(
                "".join(f"{p.source}\t{p.target}\n" for p in pairs), encoding="utf-8")


def run_compare(compare: CompareRecipe, out_dir: str | Path) -> list[Row]:
    """Train and score every model (at every synthetic length); write the table and plot."""
    from seqformer.tasks.transduction import Transducer, load_splits, log, train
    from seqformer.viz.curves import read_log

    out = Path(out_dir)
    if compare.synthetic:
        _write_synthetic(compare, out)
    plan = _plan(compare, out)
    rows: list[Row] = []
    splits_cache: dict[str, tuple] = {}
    for task, length, label, recipe, run_dir in plan:
        log(f"compare: {task} / {label}")
        if task not in splits_cache:  # read each corpus once for all the models
            splits_cache[task] = load_splits(recipe)
        splits = splits_cache[task]
        started = time.perf_counter()
        summary = train(recipe, run_dir, splits=splits)
        minutes = (time.perf_counter() - started) / 60
        transducer = Transducer.load(run_dir, recipe.train.device
                                     if recipe.train.device != "auto" else _auto_device())
        records, _ = read_log(run_dir)
        tok_s = statistics.median(r["tokens_per_s"] for r in records)
        epoch_tokens = sum(len(transducer.tgt_tok.encode(p.target)) + 1
                           for p in splits[0]["train"])
        sources, references = test_items(splits[0]["test"] or splits[0]["valid"])
        started = time.perf_counter()
        outputs = transducer.transduce(sources)
        decode_s = max(time.perf_counter() - started, 1e-9)
        out_tokens = sum(len(o.hypotheses[0].tokens) + 1 for o in outputs)
        # Only the table's metrics: evaluate() also computes TER, whose shift search takes
        # minutes on 100-token outputs, and it would be timed as decoding.
        metrics = error_rates([o.texts[0] for o in outputs], references)
        config = json.loads((run_dir / "config.json").read_text())
        rows.append(Row(task, length, label, architecture(config),
                        transducer.model.num_parameters(), int(summary["step"]),
                        round(minutes, 2), epoch_tokens / tok_s, tok_s,
                        len(sources) / decode_s, out_tokens / decode_s,
                        metrics["per"], metrics["wer"], str(run_dir)))
        write_table(rows, out / "compare.md")  # after every run: a long sweep shows progress
        (out / "compare.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    plot(rows, out / "compare.png")
    return rows


def test_items(pairs: list) -> tuple[list[str], list[tuple[str, ...]]]:
    """Distinct sources, each with every acceptable reference (CMUdict words have several)."""
    grouped: dict[str, list[str]] = {}
    for p in pairs:
        refs = grouped.setdefault(p.source, [])
        refs.extend(r for r in p.references if r not in refs)
    return list(grouped), [tuple(refs) for refs in grouped.values()]


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def architecture(config: dict[str, Any]) -> str:
    """The ``kind`` column from a run's config.json: ``transformer``, ``gru+bahdanau``,
    ``lstm+luong-dot``, ``gru+none/cnn-encoder``."""
    if config.get("family") != "rnn":
        return "transformer"
    attention = config["attention"] + ("-" + config["score"]
                                       if config["attention"] == "luong" else "")
    encoder = "" if config.get("encoder", "rnn") == "rnn" else "/cnn-encoder"
    return f"{config['kind']}+{attention}{encoder}"


def write_table(rows: list[Row], path: Path) -> None:
    head = ("| task | model | kind | params | s/epoch | train tok/s | decode sent/s | "
            "decode tok/s | PER % | WER % |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r.task} | {r.label} | {r.kind} | {r.params:,} | {r.epoch_s:.1f} | "
                     f"{r.train_tok_s:,.0f} | {r.decode_sent_s:,.1f} | {r.decode_tok_s:,.0f} | "
                     f"{r.per:.2f} | {r.wer:.2f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(rows: list[Row], path: Path) -> Path:
    """Synthetic sweeps: PER (graded, where WER is 100% for every model that gets one token of a
    long sequence wrong) and training throughput against length, one line per model. One task:
    bars of WER, training and decoding speed per model."""
    from seqformer.viz.attention import _pyplot, save_png

    plt = _pyplot()
    labels = list(dict.fromkeys(r.label for r in rows))
    if any(r.length is not None for r in rows):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for label in labels:
            mine = sorted((r for r in rows if r.label == label), key=lambda r: r.length)
            axes[0].plot([r.length for r in mine], [r.per for r in mine], "o-", label=label)
            axes[1].plot([r.length for r in mine], [r.train_tok_s for r in mine], "o-",
                         label=label)
        axes[0].set(xlabel="sequence length", ylabel="test PER % (token error rate)",
                    xscale="log", title="error against length")
        axes[1].set(xlabel="sequence length", ylabel="training tokens/s", xscale="log",
                    yscale="log", title="training throughput")
        axes[0].legend()
    else:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for ax, key, title in zip(axes, ("wer", "train_tok_s", "decode_sent_s"),
                                  ("test WER %", "training tokens/s", "decoding sentences/s")):
            ax.bar(labels, [getattr(r, key) for r in rows])
            ax.set_title(title)
            ax.tick_params(axis="x", rotation=30)
    task = rows[0].task.rsplit("-", 1)[0] if rows and rows[0].length else (rows[0].task if rows
                                                                           else "")
    fig.suptitle(f"{task}: " + ", ".join(f"{r.label} {r.params / 1e6:.2f}M" for r in rows
                                         if r.task == rows[0].task))
    fig.tight_layout()
    return save_png(fig, path)
