"""What the fixed-shape classification tasks (``tasks/vision.py``, ``tasks/audio.py``) share.

Their inputs are computed once, before training, as one tensor per split (normalised pixels,
normalised filterbanks) with the label indices beside it. From there on the two are the same:
batched predictions with the mean cross-entropy, loss / accuracy / macro-F1, the split
fingerprint, and the end of training (the Trainer validating on those metrics, the best
checkpoint scored on the test split into ``test_metrics.json``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from seqformer.errors import DataError
from seqformer.metrics.classification import accuracy, macro_f1
from seqformer.tasks.rundir import check_same_split, write_run_metadata
from seqformer.training.trainer import Trainer

# (inputs, labels or None) -> a batch the model's forward takes: ImageBatch, AudioBatch.
MakeBatch = Callable[[torch.Tensor, torch.Tensor | None], Any]


def label_ids(gold: Iterable[Any], labels: list[str], where: str) -> torch.Tensor:
    """Indices in ``labels`` of the gold labels (compared as strings); a DataError names the
    ones the training data never had."""
    gold = [str(x) for x in gold]
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(gold) - set(index))
    if unknown:
        raise DataError(f"{where}: label(s) {', '.join(unknown[:5])} do not occur in the "
                        f"training data (labels: {', '.join(labels)})")
    return torch.tensor([index[x] for x in gold], dtype=torch.long)


def check_classes(labels: list[str]) -> None:
    if len(labels) < 2:
        raise DataError(f"data.train: a single class ({labels[0]}); classification needs at "
                        "least two")


@torch.no_grad()
def predictions(model: Any, make_batch: MakeBatch, inputs: torch.Tensor,
                labels: torch.Tensor | None, batch_size: int) -> tuple[list[int], float]:
    """Predicted label indices of ``inputs`` and (with ``labels``) the mean cross-entropy,
    ``batch_size`` inputs per forward pass; the model's train/eval mode is restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, preds = 0.0, []
    for i in range(0, len(inputs), batch_size):
        gold = None if labels is None else labels[i:i + batch_size]
        out = model(make_batch(inputs[i:i + batch_size], gold).to(device))
        loss_sum += float(out.loss) * len(out.logits)
        preds.extend(out.logits.argmax(-1).cpu().tolist())
    model.train(was_training)
    return preds, loss_sum / max(len(preds), 1)


def scores(gold: list[int], preds: list[int], loss: float, num_labels: int,
           prefix: str = "") -> dict[str, float]:
    """``loss``, ``accuracy`` and ``macro_f1`` (over all ``num_labels`` classes), prefixed."""
    values = {"loss": loss, "accuracy": accuracy(gold, preds),
              "macro_f1": macro_f1(gold, preds, range(num_labels))}
    return {f"{prefix}{k}": v for k, v in values.items()}


def metrics(model: Any, make_batch: MakeBatch, inputs: torch.Tensor, labels: torch.Tensor,
            batch_size: int, prefix: str = "valid_") -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on ``inputs``."""
    preds, loss = predictions(model, make_batch, inputs, labels, batch_size)
    return scores(labels.tolist(), preds, loss, model.config.num_labels, prefix)


def fingerprint(splits: dict[str, Any], parts: Callable[[Any], Iterable[bytes]]) -> str:
    """sha256 of every split's name and ``parts(split)`` (its inputs and labels): two runs with
    the same fingerprint saw the same examples in the same splits."""
    h = hashlib.sha256()
    for name, data in sorted(splits.items()):
        if data is not None:
            h.update(name.encode())
            for part in parts(data):
                h.update(part)
    return h.hexdigest()[:16]


def train_and_test(model: Any, recipe: Any, settings: dict[str, Any], split: str,
                   stream: Any, train_config: Any, encoded: dict[str, tuple[Any, Any]],
                   evaluate: Callable[..., dict[str, float]], out: Path, resume: bool
                   ) -> tuple[dict, dict[str, float]]:
    """Train ``model`` into ``out`` (validated by ``evaluate(model, *encoded["valid"])``, the
    run's metadata -- recipe with the ``split`` fingerprint, config.json with ``settings`` --
    written at the start and at every save); then score the best checkpoint on
    ``encoded["test"]`` (when there is one and training was not interrupted) and write it to
    ``test_metrics.json``. Returns the trainer summary and the test metrics."""

    def save_run(directory: Path) -> None:
        write_run_metadata(directory, recipe, {"split": split}, model.config_json(settings))

    save_run(out)
    valid = encoded["valid"]
    trainer = Trainer(model, train_config, stream, out,
                      validate=lambda m: evaluate(m, *valid), on_save=save_run)
    summary = trainer.train(resume=resume)
    test_metrics: dict[str, float] = {}
    if "test" in encoded and not summary.get("interrupted"):
        best = type(model).load(out, str(trainer.device))
        test_metrics = evaluate(best, *encoded["test"], prefix="test_")
        (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2) + "\n",
                                               encoding="utf-8")
    return summary, test_metrics


def describe(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


class Classifier:
    """The inference side of a run: the model (in eval mode) with its label names and the
    run's recipe. Subclasses turn raw inputs (images, clips) into the model's input tensor
    (:meth:`inputs`); ``batch_size`` of them go through the model at a time. :meth:`test_split`
    re-makes the recipe's splits with :meth:`load_splits` and checks them against the split
    fingerprint training recorded (:meth:`split_fingerprint`)."""

    batch_size = 128
    # The run directory (set by ``load``): its recipe.yaml is named in a split mismatch.
    run_dir: Path | None = None
    # What ``evaluate --data`` takes instead of the recipe's test split.
    data_file = "FILE"

    def __init__(self, model: Any, recipe: Any = None) -> None:
        self.model, self.recipe = model.eval(), recipe
        self.device = next(model.parameters()).device

    @property
    def labels(self) -> list[str]:
        return self.model.labels or [str(i) for i in range(self.model.config.num_labels)]

    def inputs(self, raw: Any) -> torch.Tensor:
        raise NotImplementedError

    def load_splits(self, recipe: Any) -> dict[str, Any]:
        """train / valid / test (or None) of ``recipe``, as training read them."""
        raise NotImplementedError

    def split_fingerprint(self, splits: dict[str, Any]) -> str:
        """The fingerprint training recorded for ``splits`` (``fingerprints.split``)."""
        raise NotImplementedError

    def test_split(self) -> Any:
        """The test split of the run's recipe, re-made (None without a recipe or a test
        split); a DataError when the data now gives another split than the run was trained
        on."""
        if self.recipe is None:
            return None
        splits = self.load_splits(self.recipe)
        where = (self.run_dir or Path()) / "recipe.yaml"
        check_same_split(self.recipe, self.split_fingerprint(splits), where,
                         f"give --data {self.data_file} instead")
        return splits["test"]

    @torch.no_grad()
    def logits(self, raw: Any) -> torch.Tensor:
        """(N, num_labels) logits of N raw inputs."""
        x, n = self.inputs(raw), self.batch_size
        parts = [self.model.logits(x[i:i + n].to(self.device)).float().cpu()
                 for i in range(0, len(x), n)]
        return torch.cat(parts) if parts else torch.zeros(0, self.model.config.num_labels)

    def predict(self, raw: Any) -> list[str]:
        """The label name of each raw input."""
        return [self.labels[i] for i in self.logits(raw).argmax(-1).tolist()]

    def rank(self, raw: Any, top_k: int = 1) -> list[list[tuple[str, float]]]:
        """The ``top_k`` likeliest (label, probability) of each raw input, best first."""
        return ranked(self.logits(raw), self.labels, top_k)


def ranked(logits: torch.Tensor, labels: list[str], top_k: int) -> list[list[tuple[str, float]]]:
    """(N, labels) logits -> per row the ``top_k`` (label, softmax probability), best first."""
    probs = logits.float().softmax(-1)
    values, ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [[(labels[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
            for row_p, row_i in zip(values, ids)]
