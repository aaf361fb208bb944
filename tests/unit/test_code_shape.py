"""Issue 10 "Done when", measured with ``ast``: no module (plugins/modules) has more than 400 lines of code outside its
documentation strings, and no function in plugins/modules, plugins/module_utils or plugins/filter is longer than 90
lines. Each failure names the offenders.

A line of code is a line holding a Python token other than a comment; the DOCUMENTATION, EXAMPLES and RETURN
assignments and docstrings (module, class, function) do not count. A function's length is its whole span
(``def`` to its last line, decorators aside), nested functions included in their parent's.

Also: every release-mirror operation in ``_mirror.OPS`` is used by a publish backend (no dead operations)."""

from __future__ import annotations

import ast
import io
import os
import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = os.path.join(REPO, "plugins")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 90
DOC_NAMES = {"DOCUMENTATION", "EXAMPLES", "RETURN"}
SKIP_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def sources(*dirs):
    for d in dirs:
        base = os.path.join(PLUGINS, d)
        for name in sorted(os.listdir(base)):
            if name.endswith(".py") and name != "__init__.py":
                path = os.path.join(base, name)
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                yield os.path.relpath(path, REPO), text, ast.parse(text, path)


def documentation_lines(tree):
    """Line numbers of the DOCUMENTATION/EXAMPLES/RETURN assignments and of every docstring."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in DOC_NAMES for t in node.targets):
            lines.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(text, tree):
    docs = documentation_lines(tree)
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in SKIP_TOKENS:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return len(lines)


def long_functions(tree, limit):
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit]


def test_the_measures_count_what_they_should():
    text = ('"""Module docstring."""\nDOCUMENTATION = r"""\nmodule: x\n"""\n\n# a comment\n'
            'def f(a):\n    """Docstring\n    of two lines."""\n    x = (a +\n         1)\n    return x\n')
    tree = ast.parse(text)
    assert code_lines(text, tree) == 4  # def, the two lines of x = ..., return
    assert long_functions(tree, 5) == [("f", 7, 6)] and long_functions(tree, 6) == []


def test_no_module_has_more_than_400_lines_of_code():
    sizes = {path: code_lines(text, tree) for path, text, tree in sources("modules")}
    offenders = ["%s: %d lines of code (limit %d)" % (p, n, MAX_MODULE_LINES) for p, n in sorted(sizes.items()) if n > MAX_MODULE_LINES]
    print("\n".join(offenders))
    assert not offenders, "modules too long: " + "; ".join(offenders)
    assert len(sizes) >= 19  # every module was measured


def test_no_function_is_longer_than_90_lines():
    offenders = ["%s:%d %s() is %d lines (limit %d)" % (path, line, name, length, MAX_FUNCTION_LINES)
                 for path, _text, tree in sources("modules", "module_utils", "filter")
                 for name, line, length in long_functions(tree, MAX_FUNCTION_LINES)]
    print("\n".join(offenders))
    assert not offenders, "functions too long: " + "; ".join(offenders)


def test_every_mirror_operation_is_used():
    from ansible_collections.kiln.flatcar.plugins.module_utils import _mirror
    with open(os.path.join(PLUGINS, "module_utils", "_pub_backends.py"), encoding="utf-8") as fh:
        called = {node.value for node in ast.walk(ast.parse(fh.read())) if isinstance(node, ast.Constant)}
    unused = sorted(set(_mirror.OPS) - called)
    assert not unused, "mirror operations no backend runs (dead code): %s" % ", ".join(unused)
