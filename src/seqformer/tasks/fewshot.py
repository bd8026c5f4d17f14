"""Few-shot evaluation of a GPT, GPT-3's way (Brown et al. 2020): k demonstrations of a task
in the prompt, then the query; the greedy continuation up to the end of its line is the
answer; accuracy (exact match) for each k. No weights change: what rises with k is learning
in context.

The prompt for k = 2 (separator ``" -> "``, one example a line)::

    abc -> hgf
    dab -> ehg
    bad ->

Demonstrations for a query are drawn (seeded) from the other pairs of the task, and those of a
larger k extend those of a smaller one, so the curve compares like with like.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from seqformer.data.corpus import Pair
from seqformer.errors import ConfigError


@dataclass
class ShotResult:
    shots: int
    accuracy: float  # % of queries whose answer equals the target exactly
    n: int
    example: tuple[str, str, str]  # the first query's (prompt, answer, target)


def fewshot_prompt(demos: Sequence[Pair], query: str, sep: str) -> str:
    return "".join(f"{d.source}{sep}{d.target}\n" for d in demos) + f"{query}{sep.rstrip()}"


def answer(completion: str) -> str:
    """The model's answer: its continuation up to the end of the line, stripped."""
    return completion.split("\n", 1)[0].strip()


def evaluate_fewshot(lm, pairs: Sequence[Pair], shots: Sequence[int], n: int = 100,
                     seed: int = 0, sep: str = " -> ", progress: bool = False
                     ) -> list[ShotResult]:
    """Accuracy of ``lm`` (a :class:`~seqformer.tasks.lm.LanguageModel`) at each number of
    demonstrations in ``shots``, on the first ``n`` queries of a seeded shuffle of ``pairs``."""
    if not shots or min(shots) < 0:
        raise ConfigError(f"--shots must be numbers >= 0, got {list(shots)}")
    if len(pairs) <= max(shots):
        raise ConfigError(f"{max(shots)} demonstrations need at least {max(shots) + 1} pairs in "
                          f"the task; it has {len(pairs)}")
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    queries = order[:n]
    # One fixed list of candidate demonstrations per query: k takes its first k.
    demos = {q: rng.sample([i for i in range(len(pairs)) if i != q], max(shots))
             for q in queries}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(queries) * len(shots), desc="few-shot", unit="prompt")
    results = []
    for k in sorted(set(shots)):
        right, example = 0, ("", "", "")
        for number, q in enumerate(queries):
            prompt = fewshot_prompt([pairs[i] for i in demos[q][:k]], pairs[q].source, sep)
            budget = len(lm.tokenizer.encode(" " + pairs[q].target)) + 2
            got = answer(lm.complete(prompt, max_new=budget, temperature=0.0))
            right += got == pairs[q].target
            if number == 0:
                example = (prompt, got, pairs[q].target)
            if bar:
                bar.update(1)
        results.append(ShotResult(k, 100.0 * right / len(queries), len(queries), example))
    if bar:
        bar.close()
    return results
