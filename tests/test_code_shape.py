"""Issue 23's rules for the library's code, measured by .ci/code_shape.py: no function over 80 lines
(its docstring aside), no public function with more than 12 parameters, no private name imported
across modules, and one meaning per public name across packages."""

import pytest

from tests.conftest import load_script

shape = load_script(".ci/code_shape.py")


@pytest.fixture(scope="module")
def measured():
    return shape.measure()


def test_no_function_over_80_lines(measured):
    assert measured["over_80"] == []


def test_no_public_function_over_12_parameters(measured):
    assert measured["public_over_12"] == []


def test_no_private_name_imported_across_modules(measured):
    assert measured["private_imports"] == []


def test_no_public_name_defined_in_two_packages(measured):
    assert measured["duplicated_names"] == {}


def test_the_measure_sees_each_violation(tmp_path):
    """The rules above can fail: a tree breaking each one is reported."""
    pkg = tmp_path / "jcausal"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    long_body = "\n".join(f"    x{i} = {i}" for i in range(81))
    params = ", ".join(f"p{i}" for i in range(13))
    (pkg / "a" / "m.py").write_text(f'def long():\n    """Doc."""\n{long_body}\n\n\n'
                                    f"def wide({params}):\n    pass\n\n\ndef _hidden():\n    pass\n")
    (pkg / "b" / "n.py").write_text("from jcausal.a.m import _hidden\n\n\ndef wide():\n    pass\n")
    m = shape.measure(pkg)
    assert m["over_80"] == [("jcausal.a.m:long", 82)]
    assert m["public_over_12"] == [("jcausal.a.m:wide", 13)]
    assert m["private_imports"] == ["jcausal.b.n imports jcausal.a.m._hidden"]
    assert m["duplicated_names"] == {"wide": ["jcausal.a.m", "jcausal.b.n"]}
