"""The declared dependency ranges are the tested ones.

``.ci/lowest.txt`` pins the lowest versions the fast suite runs against (the second leg of
``.ci/run``). Each runtime dependency in ``pyproject.toml`` must have a ``>=`` floor equal to its pin
there, so lowering a floor below the tested version (or adding a dependency without testing its floor)
fails here, not in a user's environment.
"""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

PYPROJECT = REPO / "pyproject.toml"
LOWEST = REPO / ".ci" / "lowest.txt"


def floors(requirements: list[str]) -> dict[str, Version | None]:
    """Map each requirement's canonical name to its ``>=`` lower bound (None when it has none)."""
    out: dict[str, Version | None] = {}
    for text in requirements:
        req = Requirement(text)
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        out[canonicalize_name(req.name)] = max(lows) if lows else None
    return out


def pins(text: str) -> dict[str, Version]:
    """Map each line ``name==version`` of a requirements text to its version; comments ignored.

    Raises:
        ValueError: a line that is not an exact ``==`` pin.
    """
    out: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            raise ValueError(f"{LOWEST.name}: {line!r} is not an exact name==version pin")
        out[canonicalize_name(req.name)] = Version(specs[0].version)
    return out


def test_parsers_on_a_small_example():
    assert floors(["jax>=0.8.1", "tqdm", "numpy>=1.0,<3", "scikit_learn>=1.4.2"]) == {
        "jax": Version("0.8.1"), "tqdm": None, "numpy": Version("1.0"), "scikit-learn": Version("1.4.2")}
    assert pins("# c\njax==0.8.1  # why\n\nScikit_Learn==1.4.2\n") == {
        "jax": Version("0.8.1"), "scikit-learn": Version("1.4.2")}
    with pytest.raises(ValueError, match="not an exact"):
        pins("jax>=0.8.1\n")


def test_every_runtime_floor_equals_its_pin_in_lowest_txt():
    declared = floors(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    pinned = pins(LOWEST.read_text())
    assert sorted(declared) == sorted(pinned), (
        "pyproject's dependencies and .ci/lowest.txt must name the same packages")
    for name, floor in declared.items():
        assert floor is not None, f"pyproject: {name} has no '>=' lower bound"
        assert floor == pinned[name], (
            f"pyproject declares {name}>={floor} but the lowest leg tests {name}=={pinned[name]}")


def test_jax_and_jaxlib_are_pinned_together():
    pinned = pins(LOWEST.read_text())
    assert pinned["jax"] == pinned["jaxlib"]
