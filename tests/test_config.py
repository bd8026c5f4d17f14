"""The recipe reader turns every malformed value into a one-line ConfigError naming the field."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from seqformer.config import from_dict
from seqformer.errors import ConfigError


@dataclass(frozen=True)
class Section:
    steps: list[int] = field(default_factory=list)
    betas: tuple[float, float] = (0.9, 0.98)
    sizes: tuple[int, ...] = ()
    names: list[str] | None = None
    mode: bool | str = False


def test_lists_and_tuples_are_coerced_from_yaml_and_set_strings() -> None:
    s = from_dict(Section, {"steps": "1, 2", "betas": "(0.8, 0.9)", "sizes": [3, 4.0],
                            "names": "a,b"})
    assert s == Section([1, 2], (0.8, 0.9), (3, 4), ["a", "b"])
    assert from_dict(Section, {"names": None}).names is None


@pytest.mark.parametrize("value, message", [
    ({"steps": 5}, "r.yaml: model.steps expects a list, got 5"),
    ({"steps": None}, "r.yaml: model.steps expects a list, got None"),
    ({"betas": 0.9}, "r.yaml: model.betas expects a list, got 0.9"),
    ({"steps": [1, "x"]}, "r.yaml: model.steps[1] expects int, got 'x'"),
    ({"sizes": [[1]]}, "r.yaml: model.sizes[0] expects int, got [1]"),
    ({"sizes": "1,y"}, "r.yaml: model.sizes[1] expects int, got 'y'"),
])
def test_malformed_lists_name_the_field(value, message) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(Section, value, "r.yaml", "model.")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("value, expected", [
    ("true", True), ("off", False), (True, True), ("reduce-overhead", "reduce-overhead")])
def test_a_union_takes_the_first_type_the_value_fits(value, expected) -> None:
    """``bool | str`` (train.compile): --set strings that read as booleans are booleans."""
    assert from_dict(Section, {"mode": value}).mode == expected
