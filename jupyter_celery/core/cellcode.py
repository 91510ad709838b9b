"""What a cell reads and assigns, and how it is compiled: pure ``ast``, used on both sides.

The kernel side uses :func:`analyse` to choose the inputs to ship (names the cell reads before
it assigns them) and the outputs to bring back (names it assigns at the top level), and
:func:`compile_cell` to reject a syntax error before anything is submitted. The worker side
uses :func:`compile_cell` to run the cell so that line numbers in tracebacks are the cell's own.
"""

from __future__ import annotations

import ast
import linecache
from dataclasses import dataclass
from types import CodeType

from jupyter_celery.core.errors import CellSyntaxError


@dataclass(frozen=True)
class CellAnalysis:
    """Names a cell reads before assigning them, and names it binds at the top level (in order)."""

    reads: tuple[str, ...]
    assigns: tuple[str, ...]


@dataclass(frozen=True)
class CompiledCell:
    """A cell split like IPython does: statements, then the final expression (if any) to display."""

    body: CodeType
    final_expression: CodeType | None


def _parse(code: str, filename: str, first_line: int) -> ast.Module:
    try:
        tree = ast.parse(code, filename=filename, mode="exec")
    except SyntaxError as exc:
        lineno = (exc.lineno or 1) + first_line - 1
        end = exc.end_lineno + first_line - 1 if exc.end_lineno else None
        raise CellSyntaxError(
            SyntaxError(exc.msg, (filename, lineno, exc.offset, exc.text, end, exc.end_offset))
        ) from None
    if first_line > 1:
        ast.increment_lineno(tree, first_line - 1)
    return tree


def register_source(code: str, filename: str, first_line: int) -> None:
    """Make ``code`` visible to ``linecache`` so tracebacks show the cell's lines."""
    padded = "\n" * (first_line - 1) + code
    lines = [line + "\n" for line in padded.splitlines()]
    linecache.cache[filename] = (len(padded), None, lines, filename)


def compile_cell(code: str, filename: str = "<celery cell>", first_line: int = 1) -> CompiledCell:
    """Compile ``code``; a syntax error is a :class:`CellSyntaxError` with the cell's line number.

    >>> cell = compile_cell("x = 1\\nx + 1")
    >>> ns = {}; exec(cell.body, ns); eval(cell.final_expression, ns)
    2
    """
    tree = _parse(code, filename, first_line)
    final: ast.Expression | None = None
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
        final = ast.Expression(last.value)
    try:
        body = compile(tree, filename, "exec")
        expression = compile(final, filename, "eval") if final is not None else None
    except SyntaxError as exc:  # errors only the compiler sees: 'return' outside function, ...
        raise CellSyntaxError(SyntaxError(exc.msg, (filename, exc.lineno, exc.offset, exc.text))) from None
    return CompiledCell(body, expression)


def analyse(code: str, filename: str = "<celery cell>") -> CellAnalysis:
    """The names ``code`` reads before assigning them, and the names it binds at top level.

    >>> a = analyse("total = sum(range(n))\\nimport os\\nprint(total, os.getpid())")
    >>> a.reads, a.assigns
    (('sum', 'range', 'n', 'print'), ('total', 'os'))
    """
    return _analyse_tree(_parse(code, filename, 1))


def check_cell(code: str, filename: str = "<celery cell>", first_line: int = 1) -> CellAnalysis:
    """Compile ``code`` (raising :class:`CellSyntaxError`) and analyse it, parsing it only once.

    This is what the kernel side runs before it submits anything. A cell run again unchanged is
    not compiled again: only cells that compiled are remembered, and their analysis does not
    depend on the file name or line numbers.
    """
    cached = _checked.get(code)
    if cached is not None:
        return cached
    tree = _parse(code, filename, first_line)
    try:
        compile(tree, filename, "exec")
    except SyntaxError as exc:  # errors only the compiler sees: 'return' outside function, ...
        raise CellSyntaxError(SyntaxError(exc.msg, (filename, exc.lineno, exc.offset, exc.text))) from None
    analysis = _analyse_tree(tree)
    if len(_checked) >= _CHECKED_MAX:
        _checked.pop(next(iter(_checked)))
    _checked[code] = analysis
    return analysis


_CHECKED_MAX = 256
_checked: dict[str, CellAnalysis] = {}  # cell text -> analysis, for cells that compiled


def _analyse_tree(tree: ast.Module) -> CellAnalysis:
    scanner = _Scanner()
    scanner.block(tree.body, set())
    return CellAnalysis(tuple(scanner.reads), tuple(scanner.assigns))


def _target_names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


def _target_loads(target: ast.AST) -> list[ast.AST]:
    """Expressions evaluated while assigning to ``target`` (``a[i] = ...`` reads ``a`` and ``i``)."""
    if isinstance(target, ast.Name):
        return []
    if isinstance(target, (ast.Tuple, ast.List)):
        return [e for t in target.elts for e in _target_loads(t)]
    if isinstance(target, ast.Starred):
        return _target_loads(target.value)
    return [target]


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_SCOPES = (*_FUNCTIONS, ast.ClassDef, *_COMPREHENSIONS)
_TRY = (ast.Try, getattr(ast, "TryStar", ast.Try))  # try/except* is Python 3.11+


def _outer_parts(scope: ast.AST) -> list[ast.AST]:
    """The parts of a scope-creating node that are evaluated in the enclosing scope."""
    parts: list[ast.AST] = []
    if isinstance(scope, _FUNCTIONS):
        parts += [*scope.args.defaults, *(d for d in scope.args.kw_defaults if d is not None)]
        if not isinstance(scope, ast.Lambda):
            parts += scope.decorator_list
            parts += [scope.returns] if scope.returns is not None else []
    elif isinstance(scope, ast.ClassDef):
        parts += [*scope.decorator_list, *scope.bases, *(k.value for k in scope.keywords)]
    return parts


def _walk_scope(nodes: list[ast.AST]) -> list[ast.AST]:
    """Every node of one scope, in source order; nested scopes are listed but not entered."""
    out: list[ast.AST] = []
    for node in nodes:
        out.append(node)
        if isinstance(node, _SCOPES):
            out += _walk_scope(_outer_parts(node))
        else:
            out += _walk_scope(list(ast.iter_child_nodes(node)))
    return out


def _free_names(scope: ast.AST) -> list[str]:  # noqa: PLR0912 - one branch per node type
    """Names a nested scope reads from outside itself (for a function: when it is called)."""
    local: set[str] = set()
    body: list[ast.AST]
    if isinstance(scope, _FUNCTIONS):
        args = scope.args
        local.update(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
        local.update(a.arg for a in (args.vararg, args.kwarg) if a is not None)
        body = [scope.body] if isinstance(scope, ast.Lambda) else list(scope.body)
    elif isinstance(scope, ast.ClassDef):
        body = list(scope.body)
    else:
        comprehension = scope
        assert isinstance(comprehension, _COMPREHENSIONS)
        for gen in comprehension.generators:
            local.update(_target_names(gen.target))
        body = [g for gen in comprehension.generators for g in (gen.iter, *gen.ifs)]
        body += (
            [comprehension.key, comprehension.value] if isinstance(comprehension, ast.DictComp) else [comprehension.elt]
        )
    loads: list[str] = []
    nested: list[ast.AST] = []
    declared_global: set[str] = set()
    for node in _walk_scope(body):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loads.append(node.id)
            else:
                local.add(node.id)
        elif isinstance(node, ast.Global):
            declared_global.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            local.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        if isinstance(node, _SCOPES):
            nested.append(node)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                local.add(node.name)
    local -= declared_global
    free = [name for name in loads if name not in local]
    # names bound in a class body are not visible inside its methods
    shield = set() if isinstance(scope, ast.ClassDef) else local
    for inner in nested:
        free += [name for name in _free_names(inner) if name not in shield]
    return list(dict.fromkeys(free))


class _Scanner:
    """Walks module-level statements in order, tracking which names are surely bound so far."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.assigns: list[str] = []

    def _read(self, name: str, bound: set[str]) -> None:
        if name not in bound and name not in self.reads:
            self.reads.append(name)

    def _bind(self, names: list[str], bound: set[str]) -> None:
        for name in names:
            bound.add(name)
            if name not in self.assigns:
                self.assigns.append(name)

    def expr(self, node: ast.AST | None, bound: set[str]) -> None:
        if node is None:
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self._read(node.id, bound)
            return
        if isinstance(node, _SCOPES):
            for part in _outer_parts(node):
                self.expr(part, bound)
            for name in _free_names(node):
                self._read(name, bound)
            return
        if isinstance(node, ast.NamedExpr):
            self.expr(node.value, bound)
            self._bind([node.target.id], bound)
            return
        for child in ast.iter_child_nodes(node):
            self.expr(child, bound)

    def block(self, body: list[ast.stmt], bound: set[str]) -> None:
        for stmt in body:
            self.stmt(stmt, bound)

    def _branches(self, blocks: list[list[ast.stmt]], bound: set[str]) -> None:
        """Branches that may or may not run: only names bound on every branch stay bound after."""
        results = []
        for body in blocks:
            local = set(bound)
            self.block(body, local)
            results.append(local)
        if results and all(blocks):
            bound |= set.intersection(*results)

    def stmt(self, node: ast.stmt, bound: set[str]) -> None:  # noqa: PLR0912, PLR0915 - one branch per statement type
        if isinstance(node, ast.Assign):
            self.expr(node.value, bound)
            for target in node.targets:
                for load in _target_loads(target):
                    self.expr(load, bound)
            self._bind([n for t in node.targets for n in _target_names(t)], bound)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.value, bound)
            if isinstance(node.target, ast.Name):
                self._read(node.target.id, bound)
                self._bind([node.target.id], bound)
            else:
                self.expr(node.target, bound)
        elif isinstance(node, ast.AnnAssign):
            self.expr(node.value, bound)
            if node.value is not None:
                for load in _target_loads(node.target):
                    self.expr(load, bound)
                self._bind(_target_names(node.target), bound)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expr(node.iter, bound)
            loop = set(bound)
            for load in _target_loads(node.target):
                self.expr(load, loop)
            self._bind(_target_names(node.target), loop)
            self.block(node.body, loop)
            self._branches([node.orelse], bound)
        elif isinstance(node, (ast.While, ast.If)):
            self.expr(node.test, bound)
            self._branches([node.body, node.orelse], bound)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr, bound)
                if item.optional_vars is not None:
                    self._bind(_target_names(item.optional_vars), bound)
            self.block(node.body, bound)
        elif isinstance(node, _TRY):
            try_node: ast.Try = node
            self._branches([try_node.body, try_node.orelse], bound)
            for handler in try_node.handlers:
                self.expr(handler.type, bound)
                local = set(bound) | ({handler.name} if handler.name else set())
                self.block(handler.body, local)
            self.block(try_node.finalbody, bound)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.expr(node, bound)
            self._bind([node.name], bound)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self._bind([(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"], bound)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self._read(target.id, bound)
                    bound.discard(target.id)
                else:
                    self.expr(target, bound)
        elif isinstance(node, ast.Match):
            self.expr(node.subject, bound)
            for case in node.cases:
                local = set(bound)
                captures = [getattr(n, "name", None) or getattr(n, "rest", None) for n in ast.walk(case.pattern)]
                for sub in ast.walk(case.pattern):
                    if isinstance(sub, ast.Name):
                        self._read(sub.id, local)
                self._bind([n for n in captures if n], local)
                self.expr(case.guard, local)
                self.block(case.body, local)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            pass
        else:
            self.expr(node, bound)
