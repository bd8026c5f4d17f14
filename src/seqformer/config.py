"""Frozen dataclass configs that round-trip through JSON/YAML and fail loudly on typos.

A recipe maps one-to-one onto these dataclasses; a misspelt field is the commonest way a run
silently does the wrong thing, so unknown names are errors that suggest the nearest valid one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from seqformer.errors import ConfigError

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, where: str, path: str = "") -> Any:
    """Turn YAML/CLI values into the annotated type (e.g. "4" -> 4 for ``--set``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        for arg in args[:-1]:  # the first type the value fits, e.g. bool | str: true, "fast"
            try:
                return _coerce(value, arg, where, path)
            except ConfigError:
                pass
        return _coerce(value, args[-1], where, path)
    if origin in (tuple, list):
        if isinstance(value, str):  # --set a=1,2 or a=[1,2]
            value = [v.strip() for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {path} expects a list, got {value!r}; write it as "
                              "[a, b, ...]")
        inner = tuple(a for a in typing.get_args(annotation) if a is not Ellipsis) or (Any,)
        items = [_coerce(v, inner[min(i, len(inner) - 1)], where, f"{path}[{i}]")
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return from_dict(annotation, value, where, f"{path}.")
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return str(value)
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"{where}: {path} expects {name}, got {value!r}") from None
    return value


def unknown_field_error(name: str, valid: list[str], where: str, path: str = "") -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = (f"did you mean '{path}{close[0]}'?" if close
            else f"valid fields: {', '.join(sorted(valid))}")
    return ConfigError(f"{where}: unknown field '{path}{name}'; {hint}")


def check_finetune_fields(model: Mapping[str, Any], init_from: str | None,
                          allowed: Sequence[str], ignored: Sequence[str] = ()) -> None:
    """With ``init_from`` the pretrained encoder fixes the shape, so a recipe's ``model`` may
    set only ``allowed`` fields (regularisation, masking); another field would be silently
    overruled by the checkpoint or fail to load, so it is refused in one line."""
    if init_from is None:
        return
    for key in model:
        if key not in allowed and key not in ignored:
            raise ConfigError(f"model.{key}: the encoder's shape comes from init_from "
                              f"({init_from}); only {', '.join(allowed)} may be set")


def check_metric(metric: str, mode: str, modes: Mapping[str, str],
                 task: str | None = None) -> None:
    """``train.metric`` must be one the task's validation reports (``modes``: name -> "min" or
    "max"), and ``train.metric_mode`` its direction: the wrong one would keep the worst
    checkpoint and stop early on progress."""
    if metric not in modes:
        scope = f"for task: {task} " if task else ""
        raise ConfigError(f"train.metric={metric!r}; {scope}use one of {', '.join(modes)}")
    if mode != modes[metric]:
        better = "higher" if modes[metric] == "max" else "lower"
        raise ConfigError(f"train.metric_mode={mode!r} but {metric} is better when {better}; "
                          f"set train.metric_mode: {modes[metric]}")


@contextlib.contextmanager
def located(where: str) -> Iterator[None]:
    """Config errors raised inside name ``where`` (the recipe file) once, at the front."""
    try:
        yield
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}"
                          ) from None


def model_section(tree: dict[str, Any], config_class: type, where: str,
                  derived: set[str]) -> dict[str, Any]:
    """The recipe's ``model`` mapping, checked against ``config_class``'s fields before any
    data is read; ``derived`` fields come from the data or tokenizer, so a recipe may not set
    them."""
    model = tree.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{where}: model must be a mapping of fields")
    valid = {f.name for f in dataclasses.fields(config_class)} - derived
    for key in model:
        if key not in valid:
            raise unknown_field_error(key, sorted(valid), where, "model.")
    return model


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config",
              path: str = "") -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys with a nearest-name suggestion.

    ``where`` names the source (a file) and ``path`` the section (``"data."``) for messages.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where}: {path.rstrip('.') or 'config'} must be a mapping")
    data = dict(data or {})
    types_ = _field_types(cls)
    for key in data:
        if key not in types_:
            raise unknown_field_error(key, list(types_), where, path)
    kwargs = {k: _coerce(v, types_[k], where, f"{path}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one ``--set a.b=c`` override to a nested dict (types are coerced later)."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(value) if isinstance(value, str) else value


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set model.layers=4")
    key, value = text.split("=", 1)
    return key.strip(), value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: recipe not found; pass a YAML file or a bundled recipe name") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read recipe ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections (data, model, train)")
    return data
