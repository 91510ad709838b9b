"""Which names a cell reads and assigns; compiling with the cell's line numbers."""

from __future__ import annotations

import pytest

from jupyter_celery.core.cellcode import analyse, compile_cell
from jupyter_celery.core.errors import CellSyntaxError


@pytest.mark.parametrize(
    ("code", "reads", "assigns"),
    [
        ("x = 1\nprint(x)", ("print",), ("x",)),
        (
            "total = sum(range(n))\nimport os\npid = os.getpid()",
            ("sum", "range", "n"),
            ("total", "os", "pid"),
        ),
        ("for i in range(3):\n    total = total + i", ("range", "total"), ("i", "total")),
        ("x += 1", ("x",), ("x",)),
        ("df['a'] = b", ("b", "df"), ()),
        ("if c:\n    a = 1\nelse:\n    a = 2\nprint(a)", ("c", "print"), ("a",)),
        ("if c:\n    a = 1\nprint(a)", ("c", "print", "a"), ("a",)),
        ("def f(a):\n    return a + g\ny = f(z)", ("g", "z"), ("f", "y")),
        ("lam = lambda t: t + off", ("off",), ("lam",)),
        ("[v * w for v in data]", ("data", "w"), ()),
        ("class C(Base):\n    k = 1\n    def m(self):\n        return k + self.v", ("Base", "k"), ("C",)),
        (
            "try:\n    v = 1\nexcept ValueError as e:\n    v = e\nprint(v)",
            ("ValueError", "print", "v"),
            ("v",),
        ),
        ("with open(p) as fh:\n    data = fh.read()\ndata", ("open", "p"), ("fh", "data")),
        ("del x", ("x",), ()),
        ("(y := 3) + y", (), ("y",)),
        ("import numpy as np, os.path", (), ("np", "os")),
    ],
)
def test_analyse(code, reads, assigns):
    result = analyse(code)
    assert result.reads == reads
    assert result.assigns == assigns


def test_compile_splits_the_final_expression():
    cell = compile_cell("a = 2\na * 21")
    ns: dict = {}
    exec(cell.body, ns)
    assert eval(cell.final_expression, ns) == 42
    assert compile_cell("a = 1").final_expression is None


def test_syntax_error_has_the_cell_line_number():
    with pytest.raises(CellSyntaxError) as info:
        compile_cell("ok = 1\nnot ok = 2\n", "Cell In[7]", first_line=2)
    assert info.value.lineno == 3
    rendered = "\n".join(info.value._render_traceback_())
    assert 'File "Cell In[7]", line 3' in rendered
    assert rendered.endswith("SyntaxError: invalid syntax") or "SyntaxError" in rendered


def test_compiler_only_errors_are_syntax_errors_too():
    with pytest.raises(CellSyntaxError):
        compile_cell("return 1")
