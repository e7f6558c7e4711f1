"""Safe evaluation of the one Python expression form FreeSeg's YAML files contain.

FreeSeg (like Mask2Former) writes multi-scale training sizes as::

    MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 640) for x in range(5, 16)]"]

detectron2 loads that with PyYAML's unsafe loader, i.e. it runs arbitrary code from a config
file. We parse the text with :mod:`ast` and interpret only a tiny arithmetic language instead:
number literals, lists/tuples of them, + - * / // % **, unary minus, names bound by a list
comprehension, and the calls ``range``, ``int``, ``float``. Anything else raises
:class:`ConfigError`. Python's ``eval``/``compile`` are never called on the text.
"""
from __future__ import annotations

import ast
import operator
from typing import Any, Callable

from ..utils.errors import ConfigError

_BINARY_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_CALLS: dict[str, Callable[..., Any]] = {"range": range, "int": int, "float": float}
# Bounds that keep a hostile file from exhausting memory or CPU ("[0 for x in range(10**12)]").
_MAX_ITEMS = 100_000
_MAX_POW_EXPONENT = 64
_MAX_ABS_VALUE = 1e18


def safe_eval_list(text: str, where: str = "config") -> list[Any]:
    """Evaluate ``text`` (a list comprehension or list of numbers) without running code.

    Args:
        text: e.g. ``"[int(x * 0.1 * 640) for x in range(5, 16)]"``.
        where: what to name in error messages (the file and key).
    Returns:
        The resulting list, e.g. ``[320, 384, ..., 960]``.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{where}: cannot parse eval expression {text!r} ({exc.msg})") from None
    value = _Interpreter(text, where).run(tree.body, {})
    if isinstance(value, range):
        value = list(value)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"{where}: !!python/object/apply:eval must produce a list, got {type(value).__name__} "
            f"from {text!r}"
        )
    return list(value)


class _Interpreter:
    """Walks an expression tree, allowing only the node kinds listed in the module docstring."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where

    def fail(self, what: str) -> ConfigError:
        return ConfigError(
            f"{self.where}: {what} is not allowed in !!python/object/apply:eval {self.text!r}; "
            "only list comprehensions over range() with int/float arithmetic are accepted"
        )

    def run(self, node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float):
                raise self.fail(f"the constant {node.value!r}")
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.run(elt, env) for elt in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise self.fail(f"the name {node.id!r}")
            return env[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
            return self._number(_UNARY_OPS[type(node.op)](self._operand(node.operand, env)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
            left, right = self._operand(node.left, env), self._operand(node.right, env)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_POW_EXPONENT:
                raise self.fail(f"the exponent {right}")
            try:
                return self._number(_BINARY_OPS[type(node.op)](left, right))
            except ZeroDivisionError:
                raise ConfigError(f"{self.where}: division by zero in {self.text!r}") from None
        if isinstance(node, ast.Call):
            return self._call(node, env)
        if isinstance(node, ast.ListComp):
            return self._list_comp(node, env)
        raise self.fail(f"the syntax {type(node).__name__}")

    def _operand(self, node: ast.AST, env: dict[str, Any]) -> int | float:
        value = self.run(node, env)
        if type(value) not in (int, float):
            raise self.fail(f"arithmetic on {type(value).__name__}")
        return value

    def _number(self, value: Any) -> Any:
        if isinstance(value, (int, float)) and abs(value) > _MAX_ABS_VALUE:
            raise self.fail(f"the huge number {value:.3g}")
        return value

    def _call(self, node: ast.Call, env: dict[str, Any]) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in _CALLS:
            name = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
            raise self.fail(f"calling {name!r}")
        if node.keywords:
            raise self.fail("a keyword argument")
        args = [self._operand(arg, env) for arg in node.args]
        fn = _CALLS[node.func.id]
        if fn is range:
            if any(type(a) is not int for a in args) or not 1 <= len(args) <= 3:
                raise self.fail("range() with non-integer or wrong number of arguments")
            result = range(*args)
            if len(result) > _MAX_ITEMS:
                raise self.fail(f"a range of {len(result)} items")
            return result
        if len(args) != 1:
            raise self.fail(f"{node.func.id}() with {len(args)} arguments")
        return fn(args[0])

    def _list_comp(self, node: ast.ListComp, env: dict[str, Any]) -> list[Any]:
        results: list[Any] = []
        self._generate(node, node.generators, dict(env), results)
        return results

    def _generate(
        self, node: ast.ListComp, gens: list[ast.comprehension], env: dict[str, Any], out: list
    ) -> None:
        if not gens:
            out.append(self.run(node.elt, env))
            if len(out) > _MAX_ITEMS:
                raise self.fail(f"a list of more than {_MAX_ITEMS} items")
            return
        gen = gens[0]
        if gen.ifs or gen.is_async:
            raise self.fail("a comprehension filter")
        if not isinstance(gen.target, ast.Name):
            raise self.fail("a comprehension target other than a plain name")
        iterable = self.run(gen.iter, env)
        if not isinstance(iterable, (range, list, tuple)):
            raise self.fail(f"iterating over {type(iterable).__name__}")
        for item in iterable:
            self._generate(node, gens[1:], {**env, gen.target.id: item}, out)
