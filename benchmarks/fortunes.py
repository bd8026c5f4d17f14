"""Fortune-category benchmark: fine-tuned BERT vs TF-IDF + logistic regression, same split.

    python benchmarks/fortunes.py --run runs/fortune-classify       # score a fine-tuned run
    python benchmarks/fortunes.py --train                           # fine-tune it first

Both models see the same deterministic split (``seqformer.data.fortunes.labelled_fortunes``:
sha1 of the normalised text, about 80/10/10, duplicates and two-category entries removed) and
are scored on its test part with the same accuracy and macro-F1 functions. The baseline is
scikit-learn's TfidfVectorizer (word 1-2 grams, sublinear tf) + LogisticRegression, its C
chosen on the validation part. Latency: milliseconds per 1,000 test sentences (batched
inference on the whole test part after a warm-up; for the baseline, vectorising + predicting).
Prints one JSON line (also written to --json) for RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emit, hardware

from seqformer.data.fortunes import DEFAULT_CATEGORIES, labelled_fortunes
from seqformer.metrics.classification import accuracy, macro_f1


def baseline(splits) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = {k: [f.text for f in v] for k, v in splits.items()}
    gold = {k: [f.category for f in v] for k, v in splits.items()}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform(texts["train"])
    best = None
    for c in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, gold["train"])
        score = macro_f1(gold["valid"], list(model.predict(vectorizer.transform(
            texts["valid"]))))
        if best is None or score > best[0]:
            best = (score, c, model)
    _, c, model = best
    t0 = time.perf_counter()
    pred = list(model.predict(vectorizer.transform(texts["test"])))
    ms_per_1k = (time.perf_counter() - t0) / len(pred) * 1e6
    return {"accuracy": accuracy(gold["test"], pred), "macro_f1": macro_f1(gold["test"], pred),
            "C": c, "ms_per_1k_sentences": ms_per_1k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/fortune-classify", help="fine-tuned run dir")
    parser.add_argument("--train", action="store_true", help="fine-tune --recipe into --run")
    parser.add_argument("--recipe", default="fortune-classify")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    splits, dropped = labelled_fortunes(DEFAULT_CATEGORIES)
    t0 = time.time()
    base = baseline(splits)
    base_seconds = time.time() - t0
    train_minutes = None
    if args.train:
        from seqformer.recipe import load_recipe
        from seqformer.tasks.encoder import train_finetune

        start = time.time()
        train_finetune(load_recipe(args.recipe, args.set), args.run)
        train_minutes = round((time.time() - start) / 60, 2)
    from seqformer.tasks.encoder import EncoderRun

    run = EncoderRun.load(args.run, "cuda" if torch.cuda.is_available() else "cpu")
    items = [(f.text, None, f.category) for f in splits["test"]]
    run.evaluate(items[:32])  # warm-up
    t0 = time.perf_counter()
    ours = run.evaluate(items)
    ms_per_1k = (time.perf_counter() - t0) / len(items) * 1e6
    emit({"benchmark": "fortunes", "categories": list(DEFAULT_CATEGORIES),
          "split": {k: len(v) for k, v in splits.items()}, "dropped": dropped,
          "tfidf_lr": {k: round(v, 4) for k, v in base.items()},
          "tfidf_lr_seconds": round(base_seconds, 1),
          "bert": {"run": args.run, "accuracy": round(ours["accuracy"], 4),
                   "macro_f1": round(ours["macro_f1"], 4), "train_minutes": train_minutes,
                   "layers": getattr(run.model.config, "layers", None),
                   "params_m": round(run.model.num_parameters() / 1e6, 2),
                   "ms_per_1k_sentences": round(ms_per_1k)},
          "threads": torch.get_num_threads(),
          "hardware": hardware(), "torch": torch.__version__}, args.json)


if __name__ == "__main__":
    main()
