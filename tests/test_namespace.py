"""Lazy inputs on the worker: which inputs a cell certainly reads, and loading the others on first use."""

from __future__ import annotations

import pytest

from jupyter_celery.core.errors import DecodingError
from jupyter_celery.worker.namespace import LazyBuiltins, certain_reads


@pytest.mark.parametrize(
    ("code", "certain"),
    [
        ("y = df.x + 1", {"df"}),
        ("if flag:\n    y = df\n", {"flag"}),
        ("y = a if c else b", {"c"}),
        ("y = a and b or c", {"a"}),
        ("y = [v for v in items if v > limit]", {"items"}),
        ("f = lambda: df", set()),
        ("def f(x=default):\n    return df\n", {"default"}),
        ("for row in rows:\n    total += row\n", {"rows"}),
        ("df = load()\nn = len(df)", {"load", "len"}),
        ("if c:\n    df = 1\nn = df", {"c"}),  # bound in a branch: no longer certainly the input
        ("total += 1", {"total"}),
        ("try:\n    x = df\nexcept Exception:\n    pass\n", set()),
        ("with open(path) as f:\n    data = other\n", {"open", "path"}),
        ("x = (", set()),  # a syntax error reads nothing (the compiler reports it)
    ],
)
def test_certain_reads(code, certain):
    assert certain_reads(code) == certain


def run(code: str, inputs: dict) -> tuple[dict, LazyBuiltins]:
    namespace: dict = {"__name__": "__main__"}
    lazy = LazyBuiltins(namespace, {name: (lambda v=v: v() if callable(v) else v) for name, v in inputs.items()})
    namespace["__builtins__"] = lazy
    exec(compile(code, "<cell>", "exec"), namespace)
    return namespace, lazy


def test_inputs_are_loaded_on_first_use_from_any_scope():
    code = (
        "def f():\n    return a + 1\n"
        "x = f()\n"
        "y = [b * i for i in range(3)]\n"
        "z = id\n"
        "w = len([1])\n"
        "if False:\n    unused\n"
    )
    namespace, lazy = run(code, {"a": 1, "b": 2, "id": "an input named like a builtin", "unused": 3})
    assert (namespace["x"], namespace["y"], namespace["z"], namespace["w"]) == (2, [0, 2, 4], lazy_id(), 1)
    assert lazy.loaded == ["a", "b", "id"]  # unused was never loaded
    assert namespace["a"] == 1  # bound as a global once loaded


def lazy_id() -> str:
    return "an input named like a builtin"


def test_an_unknown_name_is_still_a_name_error():
    with pytest.raises(NameError, match="name 'nope' is not defined"):
        run("nope", {})


def test_a_failed_load_is_kept_even_if_the_cell_catches_it():
    def broken():
        raise DecodingError("big", "object is not in store")

    namespace, lazy = run("try:\n    big\nexcept Exception:\n    caught = True\n", {"big": broken})
    assert namespace["caught"] is True
    assert isinstance(lazy.failure, DecodingError)
