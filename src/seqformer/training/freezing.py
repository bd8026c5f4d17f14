"""Freezing parameters by name pattern, and the table that shows what is trained.

Fine-tuning often trains only part of a model (the decoder, the top layers). Patterns on
parameter names (``fnmatch`` globs: ``"encoder.layers.[0-1].*"``, ``"src_embed.*"``) say that
without code. Freezing happens before the optimizer is built, so frozen parameters are not in
it at all -- no moments, no weight decay -- and a resumed run rebuilds the same optimizer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from seqformer.errors import ConfigError


def freeze_parameters(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name matches a pattern; return the names.

    Names include every alias of a tied parameter, so freezing either name of a tied pair
    freezes the shared tensor. A pattern that matches nothing is a :class:`ConfigError`: it is
    almost always a typo, and silently training everything would waste the run.
    """
    named = list(model.named_parameters(remove_duplicate=False))
    names = [name for name, _ in named]
    frozen: list[str] = []
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise ConfigError(f"train.freeze: pattern {pattern!r} matches no parameter; "
                              f"parameter names look like {shown}")
        frozen.extend(name for name in matched if name not in frozen)
    for name, param in named:
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def parameter_table(model: nn.Module) -> str:
    """Trainable and frozen parameter counts per top-level module and in total.

    Tied parameters are counted once, under the first module that owns them, so the total
    matches the number of values the optimizer sees.
    """
    rows: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        row = rows.setdefault(name.split(".")[0], [0, 0])
        row[0 if param.requires_grad else 1] += param.numel()
    total = [sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())]
    width = max([len("module"), len("total"), *map(len, rows)])
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'frozen':>12}"]
    for module, (trainable, frozen) in [*rows.items(), ("total", total)]:
        lines.append(f"{module:<{width}}  {trainable:>12,}  {frozen:>12,}")
    return "\n".join(lines)
