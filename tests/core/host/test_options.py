from __future__ import annotations

import dataclasses

import pytest

from prunetune.errors import UsageError
from prunetune.host.options import build_config, parse_options


@dataclasses.dataclass(frozen=True)
class Cfg:
    t: float = 4.0
    n: int = 1
    flag: bool = False
    layers: tuple[str, ...] = ()
    path: str | None = None

    def __post_init__(self) -> None:
        if self.t <= 0:
            raise ValueError("t must be positive")


def test_parse_options() -> None:
    assert parse_options(["a=1", " b = x=y "], "thing") == {"a": "1", "b": "x=y"}
    with pytest.raises(UsageError, match="is not KEY=VALUE"):
        parse_options(["novalue"], "thing")


def test_strings_convert_to_field_types() -> None:
    cfg = build_config(Cfg, {"t": "2.5", "n": "3", "flag": "yes", "layers": "a,b", "path": "none"}, "x")
    assert cfg == Cfg(t=2.5, n=3, flag=True, layers=("a", "b"), path=None)


def test_typed_values_pass_through() -> None:
    assert build_config(Cfg, {"t": 1.5}, "x").t == 1.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"t": "hot"}, "x option t='hot' is not a valid float"),
        ({"flag": "maybe"}, "is not a valid bool"),
        ({"q": "1"}, r"x has no option q \(valid: flag, layers, n, path, t\)"),
        ({"t": "-1"}, "x: t must be positive"),
    ],
)
def test_bad_values_are_usage_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_config(Cfg, options, "x")
