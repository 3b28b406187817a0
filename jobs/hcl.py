"""Reading Nomad-style HCL2 job files into the format-neutral ``Block`` tree.

python-hcl2 parses (its Lark tree carries a line for every node); this module
evaluates what Nomad's jobspec2 evaluates before a job reaches the servers:
``variable``/``variables`` blocks (defaults, caller-given values, ``type``,
``validation``), ``locals``, ``${...}`` interpolation, functions, ``dynamic``
blocks, heredocs. Runtime interpolations are kept as written (see hcltemplate).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hcl2
from lark import Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from shoal.errors import Problem
from shoal.jobs.body import INVALID, Attribute, Block
from shoal.jobs.hcleval import Evaluator
from shoal.jobs.hclsyntax import EvalError, kids, literal_string, node_line, parse_snippet
from shoal.jobs.hclvalues import LazyLocals, Scope, iterate, variables_object
from shoal.jobs.hclfuncs import FuncError, functions, to_bool, to_number, to_string, type_name
from shoal.jobs.paths import ROOT, FieldPath, child, render

VARIABLE_ATTRS = ("type", "default", "description", "sensitive", "nullable")


@dataclass(slots=True)
class HclDocument:
    """What an HCL job file holds once evaluated: its job block (if any) and what was wrong."""

    job: Block | None = None
    problems: list[Problem] = field(default_factory=list)


def read_hcl(
    text: str,
    filename: str,
    variables: Mapping[str, str] | None = None,
    read_file: Callable[[str], str] | None = None,
) -> HclDocument:
    """Parse and evaluate HCL ``text``. ``read_file`` backs ``file()``; without it ``file()`` fails."""
    reader = _Reader(filename, read_file or _no_files)
    try:
        reader.read(text.replace("\r\n", "\n"), dict(variables or {}))
    except RecursionError:
        reader.problem(None, ROOT, "the file is nested too deeply to read")
    return HclDocument(reader.job, reader.problems)


def _no_files(path: str) -> str:
    raise FuncError(f"cannot read {json.dumps(path)}: no file access in this context")


# ---- syntax errors ------------------------------------------------------------------

_TOKEN_NAMES = {
    "RBRACE": '"}"',
    "LBRACE": '"{"',
    "RSQB": '"]"',
    "LSQB": '"["',
    "RPAR": '")"',
    "LPAR": '"("',
    "EQ": '"="',
    "COMMA": '","',
    "COLON": '":"',
    "DBLQUOTE": "a quoted string",
    "NAME": "a name",
    "NL_OR_COMMENT": "a new line",
    "$END": "the end of the file",
}
_VALUE_TOKENS = {"INT_LITERAL", "FLOAT_LITERAL", "DBLQUOTE", "HEREDOC_TEMPLATE", "LSQB", "LBRACE", "TRUE", "NULL"}


def syntax_message(e: UnexpectedInput) -> str:
    if isinstance(e, UnexpectedCharacters):
        return f"syntax error: unexpected character {json.dumps(e.char)}"
    if isinstance(e, UnexpectedEOF):
        return "syntax error: unexpected end of file (is a closing brace or quote missing?)"
    if isinstance(e, UnexpectedToken):
        tok = e.token
        text = str(tok)
        if tok.type == "$END":
            found = "end of file (is a closing brace or quote missing?)"
        elif text.strip() == "" or text.startswith("\n"):
            found = "end of line"
        else:
            found = json.dumps(text.strip().splitlines()[0][:30], ensure_ascii=False)
        expected = set(e.expected or ())
        if expected & _VALUE_TOKENS and len(expected) > 3:
            want = "a value"
        else:
            names = sorted({_TOKEN_NAMES.get(x, x.lower()) for x in expected})
            want = " or ".join(names[:6])
        return f"syntax error: unexpected {found}" + (f"; expected {want}" if want else "")
    return f"syntax error: {str(e).splitlines()[0]}"


# ---- the reader ------------------------------------------------------------------------


def _name(node: Tree) -> str:
    tok = node.children[0]
    return str(tok)


@dataclass(slots=True)
class _BlockSyntax:
    type: str
    labels: list[Any]  # label nodes
    body: Tree
    node: Tree


@dataclass(slots=True)
class _TopLevel:
    variables: list[_BlockSyntax] = field(default_factory=list)
    shorthand: list[Tree] = field(default_factory=list)  # attributes of `variables { }` blocks
    locals: list[Tree] = field(default_factory=list)
    jobs: list[_BlockSyntax] = field(default_factory=list)


def _split_block(node: Tree) -> _BlockSyntax:
    head: list[Tree] = []
    body: Tree | None = None
    for c in node.children:
        if isinstance(c, Tree) and c.data == "body":
            body = c
        elif isinstance(c, Tree) and c.data != "new_line_or_comment":
            head.append(c)
    assert body is not None  # the grammar guarantees a body
    return _BlockSyntax(_name(head[0]), head[1:], body, node)


class _Reader:
    def __init__(self, filename: str, read_file: Callable[[str], str]):
        self.filename = filename
        self.functions = functions(read_file)
        self.problems: list[Problem] = []
        self.job: Block | None = None
        self.ev: Evaluator = Evaluator(self.functions, "")

    def problem(self, line: int | None, path: FieldPath, message: str) -> None:
        self.problems.append(Problem(self.filename, line, render(path), message))

    def read(self, text: str, given: dict[str, str]) -> None:
        try:
            tree = hcl2.parses_to_tree(text)
        except UnexpectedInput as e:
            line = e.line if isinstance(e.line, int) and e.line > 0 else text.count("\n") + 1
            col = f" (column {e.column})" if isinstance(e.column, int) and e.column > 0 else ""
            self.problems.append(Problem(self.filename, line, "", syntax_message(e) + col))
            return
        except LarkError as e:
            self.problems.append(Problem(self.filename, 1, "", f"syntax error: {str(e).splitlines()[0]}"))
            return
        self.ev = Evaluator(self.functions, text)
        top = self._top_level(tree)
        values, unset = self._variables(top.variables, top.shorthand, given)
        local = LazyLocals()
        scope: dict[str, Any] = {"var": variables_object(values, unset), "local": local}
        local.scope = scope
        self._locals(top.locals, local)
        self._validations(top.variables, scope)
        if not top.jobs:
            self.problems.append(Problem(self.filename, 1, "", 'no job block found (expected job "NAME" { ... })'))
            return
        for extra in top.jobs[1:]:
            self.problem(node_line(extra.node), child(ROOT, "job"), "only one job block is allowed per file")
        self.job = self._block(top.jobs[0], scope, ROOT)

    def _top_level(self, tree: Tree) -> _TopLevel:
        """Sort the file's top-level blocks; anything but job, variable(s) and locals is reported."""
        top = _TopLevel()
        for item in kids(tree.children[0]):
            line = node_line(item)
            if item.data == "attribute":
                name = _name(kids(item)[0])
                self.problem(line, (), f"attribute {json.dumps(name)} is not allowed at the top level; "
                             "a job file holds a job block, and variable and locals blocks")
                continue
            blk = _split_block(item)
            if blk.type in ("variables", "locals"):
                target = top.shorthand if blk.type == "variables" else top.locals
                target.extend(a for a in kids(blk.body) if a.data == "attribute")
                for b in kids(blk.body):
                    if b.data == "block":
                        self.problem(node_line(b), child(ROOT, blk.type),
                                     f"only attributes (name = value) are allowed in a {blk.type} block")
            elif blk.type == "variable":
                top.variables.append(blk)
            elif blk.type == "job":
                top.jobs.append(blk)
            else:
                self.problem(line, child(ROOT, blk.type),
                             f"unsupported top-level block {json.dumps(blk.type)}; "
                             "a job file holds one job block, and variable and locals blocks")
        return top

    # -- variables and locals --

    def _variables(
        self, blocks: list[_BlockSyntax], shorthand: list[Tree], given: dict[str, str]
    ) -> tuple[dict[str, Any], set[str]]:
        """The variables' values, and the names declared whose value failed (already reported)."""
        declared: dict[str, int | None] = {}
        values: dict[str, Any] = {}
        for attr in shorthand:
            name = _name(kids(attr)[0])
            path = child(ROOT, "variable", name)
            if name in declared:
                self.problem(node_line(attr), path, f"variable declared twice (first at line {declared[name]})")
                continue
            declared[name] = node_line(attr)
            if name in given:
                values[name] = given[name]
                continue
            try:
                values[name] = self.ev.eval(kids(attr)[-1], {})
            except EvalError as e:
                self.problem(e.line, path, f"default: {e.message}")
        for blk in blocks:
            line = node_line(blk.node)
            if len(blk.labels) != 1:
                self.problem(line, child(ROOT, "variable"), 'a variable block needs exactly one label: variable "NAME" { ... }')
                continue
            name = self._label(blk.labels[0], child(ROOT, "variable")) or ""
            path = child(ROOT, "variable", name)
            if name in declared:
                self.problem(line, path, f"variable declared twice (first at line {declared[name]})")
                continue
            declared[name] = line
            attrs: dict[str, Tree] = {}
            for item in kids(blk.body):
                if item.data == "block":
                    b = _split_block(item)
                    if b.type != "validation":
                        self.problem(node_line(item), child(path, b.type), "unknown block in a variable block")
                    continue
                aname = _name(kids(item)[0])
                if aname not in VARIABLE_ATTRS:
                    self.problem(node_line(item), child(path, aname),
                                 f"unknown attribute in a variable block (expected {', '.join(VARIABLE_ATTRS)})")
                    continue
                attrs[aname] = item
            vtype: Any = ("any",)
            if "type" in attrs:
                try:
                    vtype = _parse_type(kids(attrs["type"])[-1])
                except EvalError as e:
                    self.problem(node_line(attrs["type"]), child(path, "type"), e.message)
            for flag in ("sensitive", "nullable"):
                if flag in attrs:
                    try:
                        to_bool(self.ev.eval(kids(attrs[flag])[-1], {}))
                    except (EvalError, FuncError) as e:
                        self.problem(node_line(attrs[flag]), child(path, flag), f"expected a bool: {_msg(e)}")
            if "description" in attrs:
                try:
                    to_string(self.ev.eval(kids(attrs["description"])[-1], {}))
                except (EvalError, FuncError) as e:
                    self.problem(node_line(attrs["description"]), child(path, "description"), f"expected a string: {_msg(e)}")
            if name in given:
                raw = given[name]
                try:
                    values[name] = _convert(_from_text(raw, vtype, line), vtype)
                except (EvalError, FuncError) as e:
                    self.problem(line, path, f"value {json.dumps(raw)} given for this variable is invalid: {_msg(e)}")
                continue
            if "default" not in attrs:
                self.problem(line, path, "no value given and no default set (give it a value when you load the job, "
                             "or add a default)")
                continue
            default = attrs["default"]
            try:
                values[name] = _convert(self.ev.eval(kids(default)[-1], {}), vtype)
            except EvalError as e:
                self.problem(e.line or node_line(default), child(path, "default"), e.message)
            except FuncError as e:
                self.problem(node_line(default), child(path, "default"), f"does not match the variable's type: {e}")
        for name in sorted(set(given) - set(declared)):
            self.problems.append(Problem(self.filename, None, render(child(ROOT, "variable", name)),
                                         "a value was given for a variable the job file does not declare"))
        return values, set(declared) - set(values)

    def _validations(self, blocks: list[_BlockSyntax], scope: Scope) -> None:
        values = scope["var"]
        for blk in blocks:
            if len(blk.labels) != 1:
                continue
            name = self._label(blk.labels[0], child(ROOT, "variable"), report=False) or ""
            if name not in values:
                continue
            for item in kids(blk.body):
                if item.data != "block" or _split_block(item).type != "validation":
                    continue
                path = child(child(ROOT, "variable", name), "validation")
                attrs = {_name(kids(a)[0]): a for a in kids(_split_block(item).body) if a.data == "attribute"}
                if "condition" not in attrs or "error_message" not in attrs:
                    self.problem(node_line(item), path, "a validation block needs condition and error_message")
                    continue
                try:
                    ok = to_bool(self.ev.eval(kids(attrs["condition"])[-1], scope))
                    msg = to_string(self.ev.eval(kids(attrs["error_message"])[-1], scope))
                except (EvalError, FuncError) as e:
                    self.problem(node_line(item), path, _msg(e))
                    continue
                if not ok:
                    self.problem(node_line(blk.node), child(ROOT, "variable", name), f"invalid value: {msg}")

    def _locals(self, defs: list[Tree], local: LazyLocals) -> None:
        for attr in defs:
            name = _name(kids(attr)[0])
            path = child(ROOT, "local")
            if name in local:
                self.problem(node_line(attr), child(path, name),
                             f"local value defined twice (first at line {local.defined_at(name)})")
                continue
            local.define(name, kids(attr)[-1], self.ev, node_line(attr))
        for name in list(local):
            try:
                local[name]
            except EvalError as e:
                if e.message:
                    self.problem(e.line or local.defined_at(name), child(child(ROOT, "local"), name), e.message)

    def _label(self, node: Tree, path: FieldPath, report: bool = True) -> str | None:
        """A block label's text; None if it is not a plain string. Bad escapes are reported."""
        try:
            return literal_string(node)
        except EvalError as e:
            if report:
                self.problem(e.line, path, e.message)
            return ""

    # -- blocks --

    def _block(self, blk: _BlockSyntax, scope: Scope, parent: FieldPath) -> Block:
        labels: list[str] = []
        for lab in blk.labels:
            text = self._label(lab, child(parent, blk.type))
            if text is None:
                self.problem(node_line(lab), child(parent, blk.type),
                             "block labels must be plain quoted strings (no ${...} interpolation)")
                text = ""
            labels.append(text)
        out = Block(blk.type, labels, node_line(blk.node))
        self._body(blk.body, scope, child(parent, blk.type, labels[0] if labels else None), out)
        return out

    def _body(self, body: Tree, scope: Scope, path: FieldPath, out: Block) -> None:
        for item in kids(body):
            if item.data == "attribute":
                out.attributes.append(self._attribute(item, scope))
                continue
            blk = _split_block(item)
            if blk.type == "dynamic":
                out.blocks.extend(self._dynamic(blk, scope, path))
            else:
                out.blocks.append(self._block(blk, scope, path))

    def _attribute(self, item: Tree, scope: Scope) -> Attribute:
        sub = kids(item)
        name, line = _name(sub[0]), node_line(item)
        try:
            return Attribute(name, self.ev.eval(sub[-1], scope), line)
        except EvalError as e:
            return Attribute(name, INVALID, e.line or line, e.message)

    def _dynamic(self, blk: _BlockSyntax, scope: Scope, parent: FieldPath) -> list[Block]:
        line = node_line(blk.node)
        label = self._label(blk.labels[0], child(parent, "dynamic")) if len(blk.labels) == 1 else None
        path = child(parent, "dynamic", label)
        if not label:
            self.problem(line, path, 'a dynamic block needs one label naming the block to generate: dynamic "NAME" { ... }')
            return []
        attrs: dict[str, Tree] = {}
        contents: list[_BlockSyntax] = []
        for item in kids(blk.body):
            if item.data == "attribute":
                name = _name(kids(item)[0])
                if name not in ("for_each", "iterator", "labels"):
                    self.problem(node_line(item), child(path, name),
                                 "unknown attribute in a dynamic block (expected for_each, iterator, labels, content)")
                attrs[name] = item
                continue
            inner = _split_block(item)
            if inner.type != "content":
                self.problem(node_line(item), child(path, inner.type), "unknown block in a dynamic block (expected content)")
                continue
            contents.append(inner)
        if "for_each" not in attrs or len(contents) != 1:
            self.problem(line, path, "a dynamic block needs a for_each attribute and exactly one content block")
            return []
        iterator = label
        if "iterator" in attrs:
            sub = kids(kids(attrs["iterator"])[-1])
            name = _name(sub[0]) if len(sub) == 1 and sub[0].data == "identifier" else None
            if not name:
                self.problem(node_line(attrs["iterator"]), child(path, "iterator"), "iterator must be a bare name, e.g. iterator = port")
                return []
            iterator = name
        try:
            coll = self.ev.eval(kids(attrs["for_each"])[-1], scope)
            pairs = list(iterate(coll, node_line(attrs["for_each"])))
        except EvalError as e:
            if e.message:
                self.problem(e.line or line, child(path, "for_each"), e.message)
            return []
        out: list[Block] = []
        for key, value in pairs:
            inner_scope = dict(scope)
            inner_scope[iterator] = {"key": key, "value": value}
            labels: list[str] = []
            if "labels" in attrs:
                try:
                    raw = self.ev.eval(kids(attrs["labels"])[-1], inner_scope)
                    if not isinstance(raw, list) or any(isinstance(x, (list, dict)) or x is None for x in raw):
                        raise EvalError(node_line(attrs["labels"]), "labels must be a list of strings")
                    labels = [to_string(x) for x in raw]
                except EvalError as e:
                    self.problem(e.line or line, child(path, "labels"), e.message)
                    return out
            content = contents[0]
            gen = Block(label, labels, node_line(content.node))
            self._body(content.body, inner_scope, child(parent, label, labels[0] if labels else None), gen)
            out.append(gen)
        return out


def _msg(e: Exception) -> str:
    return e.message if isinstance(e, EvalError) else str(e)


# ---- variable types ----------------------------------------------------------------------

_PRIMITIVE = ("string", "number", "bool", "any")


def _parse_type(node: Tree) -> tuple[Any, ...]:
    sub = kids(node) if node.data == "expr_term" else [node]
    if len(sub) != 1:
        raise EvalError(node_line(node), "invalid type")
    n = sub[0]
    if n.data == "identifier" and _name(n) in _PRIMITIVE:
        return (_name(n),)
    if n.data == "function_call":
        fname = _name(kids(n)[0])
        args = next((k for k in kids(n) if k.data == "arguments"), None)
        arg_nodes = kids(args) if args is not None else []
        if fname in ("list", "set", "map") and len(arg_nodes) == 1:
            return (fname, _parse_type(arg_nodes[0]))
        if fname in ("object", "tuple"):
            return ("any",)  # structural types: values are taken as written
    raise EvalError(node_line(node), "unknown type; use string, number, bool, list(T), set(T), map(T), object or any")


def _type_text(t: tuple[Any, ...]) -> str:
    return t[0] if len(t) == 1 else f"{t[0]}({_type_text(t[1])})"


def _convert(value: Any, t: tuple[Any, ...]) -> Any:
    kind = t[0]
    if kind == "any" or value is None:
        return value
    if kind == "string":
        if isinstance(value, (list, dict)):
            raise FuncError(f"expected a string, got a {type_name(value)}")
        return to_string(value)
    if kind == "number":
        return to_number(value)
    if kind == "bool":
        return to_bool(value)
    if kind in ("list", "set"):
        if not isinstance(value, list):
            raise FuncError(f"expected {_type_text(t)}, got a {type_name(value)}")
        items = [_convert(v, t[1]) for v in value]
        if kind == "set":
            items = [x for i, x in enumerate(items) if x not in items[:i]]
        return items
    if not isinstance(value, dict):
        raise FuncError(f"expected {_type_text(t)}, got a {type_name(value)}")
    return {k: _convert(v, t[1]) for k, v in value.items()}


def _from_text(raw: str, t: tuple[Any, ...], line: int | None) -> Any:
    """A caller-given value: strings are taken as they are; other types are parsed as HCL."""
    if t[0] in ("string", "any"):
        return raw
    if t[0] in ("number", "bool"):
        return raw.strip()
    node = parse_snippet(raw, line)
    return Evaluator({}, "_ = " + raw).eval(node, {})

