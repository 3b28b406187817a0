"""Evaluating HCL2 expressions from python-hcl2's Lark tree.

Pure: values in, values out. Names are looked up in a scope (``var``,
``local``, dynamic-block iterators, ``for`` variables; see hclvalues). An
interpolation that names anything else (``${NOMAD_ALLOC_ID}``,
``${attr.kernel.name}``, ``${meta.rack}``, ``${env["HOME"]}`` ...) is a
runtime value Nomad resolves on the client: inside a template it is kept
verbatim, ``${...}`` and all (see hcltemplate); anywhere else it is an error.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lark import Token, Tree

from shoal.jobs.hclfuncs import FuncError, is_number, normalize_number, to_bool, to_number, to_string
from shoal.jobs.hclsyntax import EvalError, heredoc_body, kids, node_line, unescape
from shoal.jobs.hcltemplate import heredoc_parts, render, string_parts
from shoal.jobs.hclvalues import (
    LazyLocals,
    RuntimeRef,
    Scope,
    Variables,
    binary,
    bool_operand,
    for_scope,
    iterate,
    show,
    unknown_name,
)


class Evaluator:
    """Evaluates nodes of one parsed text (``src``), whose line 1 is file line ``1 + line_offset``."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]], src: str, line_offset: int = 0):
        self.functions = functions
        self.src = src
        self.line_offset = line_offset

    def line(self, node: Any) -> int | None:
        n = node_line(node)
        return None if n is None else n + self.line_offset

    def source_of(self, node: Any) -> str:
        meta = getattr(node, "meta", None)  # a Lark Tree's, when the parser kept positions
        if meta is None or meta.empty:
            return ""
        return self.src[meta.start_pos : meta.end_pos]

    def derive(self, src: str, line_offset: int) -> Evaluator:
        """An evaluator for another parsed text (an expression inside a heredoc), same functions."""
        return Evaluator(self.functions, src, line_offset)

    # -- entry points --

    def eval(self, node: Any, scope: Scope) -> Any:
        """The value of an expression; references to unknown names are errors here."""
        try:
            return self.value(node, scope)
        except RuntimeRef as r:
            raise EvalError(r.line, unknown_name(r.name)) from None
        except RecursionError:
            raise EvalError(self.line(node), "expression nested too deeply") from None

    def value(self, node: Any, scope: Scope) -> Any:
        """The value of an expression; a reference to a name the scope does not hold raises
        :class:`RuntimeRef` (a template keeps it verbatim, :meth:`eval` makes it an error)."""
        if isinstance(node, Token):
            raise EvalError(self.line(node), f"unexpected {json.dumps(str(node))}")
        rule = _RULES.get(node.data)
        if rule is None:
            raise EvalError(self.line(node), f"unsupported expression: {node.data.replace('_', ' ')}")
        return rule(self, node, scope)

    # -- expressions, one method per grammar rule (see _RULES) --

    def _x_expr_term(self, node: Tree, scope: Scope) -> Any:
        sub = kids(node)
        if len(sub) != 1:
            raise EvalError(self.line(node), "malformed expression")
        return self.value(sub[0], scope)

    def _x_int_lit(self, node: Tree, scope: Scope) -> Any:
        text = str(node.children[0])
        try:
            return int(text)
        except ValueError:
            raise EvalError(self.line(node), f"number {text[:20]}... is too long") from None

    def _x_float_lit(self, node: Tree, scope: Scope) -> Any:
        value = float(str(node.children[0]))
        if not math.isfinite(value):
            raise EvalError(self.line(node), f"number {str(node.children[0])[:20]} is out of range")
        return normalize_number(value)

    def _x_literal_value(self, node: Tree, scope: Scope) -> Any:
        return {"true": True, "false": False, "null": None}[str(node.children[0])]

    def _x_identifier(self, node: Tree, scope: Scope) -> Any:
        name = str(node.children[0])
        if name in scope:
            return scope[name]
        raise RuntimeRef(name, self.line(node))

    def _x_keyword(self, node: Tree, scope: Scope) -> Any:
        raise EvalError(self.line(node), f"{json.dumps(str(node.children[0]))} is a keyword, not a value")

    def _x_string(self, node: Tree, scope: Scope) -> Any:
        return render(string_parts(self, node), scope)

    def _x_template_string(self, node: Tree, scope: Scope) -> Any:
        raw = str(node.children[0])
        inner = raw[2:-2] if raw.startswith('\\"') else raw.strip('"')
        return unescape(inner, self.line(node))

    def _x_heredoc(self, node: Tree, scope: Scope) -> Any:
        tok = node.children[0]
        line = self.line(tok)
        body = heredoc_body(str(tok), line)
        parts = heredoc_parts(self, body, None if line is None else line + 1)
        return render(parts, scope, whole_value=False)

    def _x_tuple(self, node: Tree, scope: Scope) -> Any:
        return [self.value(k, scope) for k in kids(node)]

    def _x_object(self, node: Tree, scope: Scope) -> Any:
        out: dict[str, Any] = {}
        for elem in kids(node):
            key_node, value_node = kids(elem)[0], kids(elem)[-1]
            key = self._object_key(key_node, scope)
            if key in out:
                raise EvalError(self.line(elem), f"duplicate key {json.dumps(key)} in object")
            out[key] = self.value(value_node, scope)
        return out

    def _object_key(self, key_node: Tree, scope: Scope) -> str:
        (inner,) = kids(key_node) or [key_node.children[0]]
        if isinstance(inner, Tree) and inner.data == "keyword":
            return str(inner.children[0])
        if isinstance(inner, Tree) and inner.data == "expr_term":
            sub = kids(inner)
            if len(sub) == 1 and sub[0].data == "identifier" and len(inner.children) == 1:
                return str(sub[0].children[0])  # a bare name is the key itself
            if len(sub) == 1 and sub[0].data == "literal_value":
                return str(sub[0].children[0])
        key = self.value(inner, scope)
        if isinstance(key, (list, dict)) or key is None:
            raise EvalError(self.line(key_node), f"object key must be a string, got {show(key)}")
        return to_string(key)

    def _x_conditional(self, node: Tree, scope: Scope) -> Any:
        cond, yes, no = kids(node)
        c = self.value(cond, scope)
        try:
            flag = to_bool(c)
        except FuncError:
            raise EvalError(self.line(cond), f"condition must be a bool, got {show(c)}") from None
        return self.value(yes if flag else no, scope)

    def _x_unary_op(self, node: Tree, scope: Scope) -> Any:
        op = str(node.children[0])
        value = self.value(kids(node)[0], scope)
        try:
            if op == "-":
                return normalize_number(-to_number(value))
            return not to_bool(value)
        except FuncError as e:
            raise EvalError(self.line(node), f"operator {op}: {e}") from None

    def _x_binary_op(self, node: Tree, scope: Scope) -> Any:
        left_node, term = kids(node)[:2]
        op_node, right_node = kids(term)[:2]
        op = str(op_node.children[0]).strip()
        left = self.value(left_node, scope)
        if op == "&&" and bool_operand(left, op, self.line(node)) is False:
            return False
        if op == "||" and bool_operand(left, op, self.line(node)) is True:
            return True
        right = self.value(right_node, scope)
        return binary(op, left, right, self.line(node))

    def _x_function_call(self, node: Tree, scope: Scope) -> Any:
        names = [str(k.children[0]) for k in kids(node) if k.data == "identifier"]
        line = self.line(node)
        if len(names) != 1:
            raise EvalError(line, f"provider functions ({'::'.join(names)}) are not supported")
        name = names[0]
        fn = self.functions.get(name)
        if fn is None:
            raise EvalError(line, f"unknown function {name}()")
        args: list[Any] = []
        arg_tree = next((k for k in kids(node) if k.data == "arguments"), None)
        if arg_tree is not None:
            args = [self.value(a, scope) for a in kids(arg_tree)]
            if any(isinstance(t, Token) and t.type == "ELLIPSIS" for t in arg_tree.children):
                if not args or not isinstance(args[-1], list):
                    raise EvalError(line, f"{name}(): the argument before ... must be a list")
                args = args[:-1] + list(args[-1])
        try:
            inspect.signature(fn).bind(*args)
        except TypeError:
            raise EvalError(line, f"{name}(): wrong number of arguments ({len(args)})") from None
        try:
            result = fn(*args)
        except FuncError as e:
            raise EvalError(line, f"{name}(): {e}") from None
        except (ValueError, OverflowError, ArithmeticError) as e:
            raise EvalError(line, f"{name}(): {e}") from None
        return normalize_number(result) if is_number(result) else result

    def _x_index_expr_term(self, node: Tree, scope: Scope) -> Any:
        base_node, index = kids(node)
        return self._index(self.value(base_node, scope), index, scope)

    def _x_get_attr_expr_term(self, node: Tree, scope: Scope) -> Any:
        base_node, attr = kids(node)
        return self._get_attr(self.value(base_node, scope), attr)

    def _x_splat(self, node: Tree, scope: Scope) -> Any:
        base_node, splat = kids(node)
        base = self.value(base_node, scope)
        items = [] if base is None else base if isinstance(base, list) else [base]
        out = []
        for item in items:
            for op in kids(splat):
                item = self._get_attr(item, op) if op.data == "get_attr" else self._index(item, op, scope)
            out.append(item)
        return out

    def _get_attr(self, base: Any, attr: Tree) -> Any:
        name = str(kids(attr)[0].children[0])
        line = self.line(attr)
        if isinstance(base, LazyLocals):
            if name not in base:
                raise EvalError(line, f"no local value named {json.dumps(name)} is defined")
            return base[name]
        if isinstance(base, Variables):
            if name in base.unset:
                raise EvalError(line, "")  # the variable's own problem was reported where it is declared
            if name not in base:
                known = ", ".join(sorted(base)) or "none"
                raise EvalError(line, f"no variable named {json.dumps(name)} is declared (declared: {known})")
            return base[name]
        if isinstance(base, dict):
            if name not in base:
                raise EvalError(line, f"object has no attribute {json.dumps(name)}")
            return base[name]
        raise EvalError(line, f"cannot read attribute {json.dumps(name)} of {show(base)}")

    def _index(self, base: Any, index: Tree, scope: Scope) -> Any:
        line = self.line(index)
        if index.data == "short_index":
            key: Any = int(str(index.children[-1]))
        else:
            key = self.value(kids(index)[0], scope)
        if isinstance(base, list):
            try:
                n = to_number(key)
            except FuncError:
                raise EvalError(line, f"list index must be a number, got {show(key)}") from None
            if not float(n).is_integer() or not 0 <= n < len(base):
                raise EvalError(line, f"index {show(key)} is out of range for a list of {len(base)}")
            return base[int(n)]
        if isinstance(base, Mapping):
            if isinstance(key, (list, dict)) or key is None:
                raise EvalError(line, f"map key must be a string, got {show(key)}")
            k = to_string(key)
            if k not in base:
                raise EvalError(line, f"no key {json.dumps(k)} in the map")
            return base[k]
        raise EvalError(line, f"cannot index {show(base)}")

    def _x_for_tuple_expr(self, node: Tree, scope: Scope) -> Any:
        intro, *rest = kids(node)
        value_node = rest[0]
        cond = rest[1] if len(rest) > 1 else None
        out = []
        for inner in self._for_scopes(intro, scope):
            if cond is not None and not self._for_cond(cond, inner):
                continue
            out.append(self.value(value_node, inner))
        return out

    def _x_for_object_expr(self, node: Tree, scope: Scope) -> Any:
        intro, key_node, value_node, *rest = kids(node)
        cond = rest[0] if rest else None
        group = any(isinstance(t, Token) and t.type == "ELLIPSIS" for t in node.children)
        out: dict[str, Any] = {}
        for inner in self._for_scopes(intro, scope):
            if cond is not None and not self._for_cond(cond, inner):
                continue
            k = self.value(key_node, inner)
            if isinstance(k, (list, dict)) or k is None:
                raise EvalError(self.line(key_node), f"object key must be a string, got {show(k)}")
            key = to_string(k)
            value = self.value(value_node, inner)
            if group:
                out.setdefault(key, []).append(value)
            elif key in out:
                raise EvalError(self.line(key_node), f"duplicate key {json.dumps(key)} (use ... to group values)")
            else:
                out[key] = value
        return out

    def _for_scopes(self, intro: Tree, scope: Scope) -> Iterator[Scope]:
        names = [str(k.children[0]) for k in kids(intro) if k.data == "identifier"]
        coll_node = [k for k in kids(intro) if k.data != "identifier"][0]
        coll = self.value(coll_node, scope)
        for key, value in iterate(coll, self.line(coll_node)):
            yield for_scope(scope, names, key, value)

    def _for_cond(self, cond: Tree, scope: Scope) -> bool:
        value = self.value(kids(cond)[0], scope)
        try:
            return to_bool(value)
        except FuncError:
            raise EvalError(self.line(cond), f"for condition must be a bool, got {show(value)}") from None


_Rule = Callable[[Evaluator, Tree, Scope], Any]

# The grammar rules an expression may be made of, and the method that evaluates each.
_RULES: dict[str, _Rule] = {
    "expr_term": Evaluator._x_expr_term,
    "int_lit": Evaluator._x_int_lit,
    "float_lit": Evaluator._x_float_lit,
    "literal_value": Evaluator._x_literal_value,
    "identifier": Evaluator._x_identifier,
    "keyword": Evaluator._x_keyword,
    "string": Evaluator._x_string,
    "template_string": Evaluator._x_template_string,
    "heredoc_template": Evaluator._x_heredoc,
    "heredoc_template_trim": Evaluator._x_heredoc,
    "tuple": Evaluator._x_tuple,
    "object": Evaluator._x_object,
    "conditional": Evaluator._x_conditional,
    "unary_op": Evaluator._x_unary_op,
    "binary_op": Evaluator._x_binary_op,
    "function_call": Evaluator._x_function_call,
    "index_expr_term": Evaluator._x_index_expr_term,
    "get_attr_expr_term": Evaluator._x_get_attr_expr_term,
    "full_splat_expr_term": Evaluator._x_splat,
    "attr_splat_expr_term": Evaluator._x_splat,
    "for_tuple_expr": Evaluator._x_for_tuple_expr,
    "for_object_expr": Evaluator._x_for_object_expr,
}
