"""A job's namespace on the worker: inputs are loaded from the store only when the cell uses them.

Small inputs (inline in the message) are bound before the cell runs. A large input (in the store)
is loaded up front only when the cell certainly reads it (:func:`certain_reads`: it is read at the
top level, outside any branch, before being assigned). Any other large input is loaded lazily:
the namespace's ``__builtins__`` is then a :class:`LazyBuiltins` mapping, which CPython (3.10 to
3.13) consults through the mapping protocol when a name is neither local nor global, so the
input is fetched at its first use and bound as a global, and an input used only in a branch not
taken is never fetched.

That mapping costs: with a non-dict builtins CPython cannot specialise global-name lookups, so
pure-Python loops over builtins run about 2x (3.11) to 5x (3.12) slower. Hence lazy loading is
used only when a large input may go unused; jobs whose large inputs are all certainly read (the
usual case) run with the real builtins.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from functools import partial
from typing import Any

from jupyter_celery.core.codec import Codec
from jupyter_celery.core.errors import DecodingError
from jupyter_celery.core.messages import JobSpec


class LazyBuiltins(dict[str, Any]):
    """The builtins of a job's namespace, plus its large inputs, each loaded on first use.

    ``failure`` keeps the first error of a load, so that the job fails with it even if the cell
    caught the exception.
    """

    def __init__(self, namespace: dict[str, Any], pending: dict[str, Callable[[], Any]]) -> None:
        super().__init__(vars(builtins))
        for name in pending:
            self.pop(name, None)  # an input named like a builtin (id, input, sum...) shadows it, as in the notebook
        self._namespace = namespace
        self._pending = dict(pending)
        self.loaded: list[str] = []
        self.failure: DecodingError | None = None

    def __missing__(self, name: str) -> Any:
        load = self._pending.get(name)
        if load is None:
            raise KeyError(name)
        try:
            value = load()
        except DecodingError as exc:
            self.failure = self.failure or exc
            raise
        del self._pending[name]
        self._namespace[name] = value  # later reads find it as a global, without this mapping
        self.loaded.append(name)
        return value


def build_namespace(spec: JobSpec, codec: Codec) -> tuple[dict[str, Any], LazyBuiltins | None]:
    """The globals to run ``spec``'s cell in, and the lazy mapping when some input is loaded lazily.

    Decoding errors of inputs loaded up front are raised here (:class:`DecodingError`).
    """
    namespace: dict[str, Any] = {"__name__": "__main__"}
    certain = certain_reads(spec.code)
    pending: dict[str, Callable[[], Any]] = {}
    for name, encoded in spec.inputs.items():
        if codec.in_store(encoded) and name not in certain:
            pending[name] = partial(codec.decode, name, encoded)
        else:
            namespace[name] = codec.decode(name, encoded)
    lazy = LazyBuiltins(namespace, pending) if pending else None
    namespace["__builtins__"] = lazy if lazy is not None else builtins
    return namespace, lazy


def certain_reads(code: str) -> frozenset[str]:
    """Names that running ``code`` reads for certain, unless an earlier statement raises.

    Only the parts of top-level statements that always run count: a simple statement's
    expressions, the test of an ``if``/``while``, the iterable of a ``for``, the items of a
    ``with``, the subject of a ``match``, decorators and defaults of a ``def``/``class``; within
    them not the right-hand operands of ``and``/``or``, the branches of ``x if c else y``, the
    bodies of lambdas or comprehensions beyond their first iterable. A name bound earlier at the
    top level (anywhere, even in a branch) does not count.

    >>> sorted(certain_reads("y = df.x + 1\\nif flag:\\n    z = other\\n"))
    ['df', 'flag']
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return frozenset()
    found: set[str] = set()
    bound: set[str] = set()
    for stmt in tree.body:
        for part in _always_run(stmt):
            found.update(name for name in _always_loaded(part) if name not in bound)
        bound.update(n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load))
        bound.update(n.name for n in ast.walk(stmt) if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    return frozenset(found)


def _always_run(stmt: ast.stmt) -> list[ast.AST]:  # noqa: PLR0911 - one branch per statement type
    """The parts of a top-level statement that run whenever the statement does."""
    if isinstance(stmt, (ast.If, ast.While)):
        return [stmt.test]
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return [stmt.iter]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [stmt.items[0].context_expr]
    if isinstance(stmt, ast.Match):
        return [stmt.subject]
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = stmt.args
        return [*stmt.decorator_list, *args.defaults, *(d for d in args.kw_defaults if d is not None)]
    if isinstance(stmt, ast.ClassDef):
        return [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords)]
    if isinstance(stmt, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise, ast.Assert)):
        parts: list[ast.AST] = [c for c in ast.iter_child_nodes(stmt) if isinstance(c, ast.expr)]
        if isinstance(stmt, ast.Assert):
            parts = [stmt.test]
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            parts.append(ast.Name(stmt.target.id, ast.Load()))  # x += 1 reads x
        return parts
    return []  # try, import, delete, global...: nothing counted


def _always_loaded(node: ast.AST) -> list[str]:  # noqa: PLR0911 - one branch per node type
    """Names an expression certainly loads when it is evaluated."""
    if isinstance(node, ast.Name):
        return [node.id] if isinstance(node.ctx, ast.Load) else []
    if isinstance(node, ast.BoolOp):
        return _always_loaded(node.values[0])
    if isinstance(node, ast.IfExp):
        return _always_loaded(node.test)
    if isinstance(node, ast.Compare):
        return _always_loaded(node.left) + _always_loaded(node.comparators[0])
    if isinstance(node, ast.Lambda):
        return [n for d in (*node.args.defaults, *node.args.kw_defaults) if d is not None for n in _always_loaded(d)]
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        return _always_loaded(node.generators[0].iter)
    return [name for child in ast.iter_child_nodes(node) for name in _always_loaded(child)]
