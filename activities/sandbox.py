"""Jinja2's sandbox with a budget: what a template may compute, counted while it runs.

Campaign authors are API callers, not trusted code, and a template is code we run. Jinja2's
`ImmutableSandboxedEnvironment` (https://jinja.palletsprojects.com/en/stable/sandbox/) keeps it
from Python internals and from mutating lists and dicts; `StrictUndefined` turns a misspelt field
into an error, whose message (`unknown_name_message`) names the fields and variables there are
and the one most likely meant (`{{ lead.first_name }}` → `lead.firstName`). On top of it,
`render_source` counts every step the template takes against a budget, through the sandbox's
documented hooks (`call`, `call_binop` with `intercepted_binops`, `getattr`, `getitem`,
`wrap_str_format`, and the `concat` and `finalize` the compiled code goes through), and a
rewrite of the parsed template (`_RouteThroughBudget`) that routes every `{% for %}` iterable,
comparison operand, `~` and list, tuple and dict literal through it too:

- at most `MAX_LOOP_ITERATIONS` loop iterations in all, `range()` of at most `MAX_RANGE`;
- no value (string, list, dict, ...) larger than `MAX_VALUE_SIZE` characters or items, refused
  *before* it is built where an operation can multiply its input (`"A" * 200000`,
  `"%999999999s" % 1`, `"{:>999999999}".format(1)`, `|center(10**9)`, `|indent`, `|wordwrap`,
  `|replace`, `|join`, `|batch`, `.ljust(...)`, ...) and after it otherwise;
- integers of at most `MAX_INT_BITS` bits (`9 ** 999999999` is refused before it is computed);
- at most `MAX_OPERATIONS` steps and `MAX_BUILT` characters and items built in all;
- calls (macros, `caller()`, recursive loops) nested at most `MAX_CALL_DEPTH` deep;
- before it runs: at most `MAX_TEMPLATE_NODES` nodes, blocks nested `MAX_NESTING` deep;
- output of at most the caller's `limit` characters (streamed with `Template.generate()`;
  rendering stops past it);
- a deadline, checked at every step counted above.

The counts make the answer the same for the same template and variables every time; the
deadline only backs them up. Every refusal is a `TemplateRenderError` (`TemplateBudgetExceeded`
for the budget) whose message names the rule and the limit. `render_source` blocks while it runs:
`activities.templates` runs it in a pool of processes.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

from jinja2 import (
    Environment,
    StrictUndefined,
    TemplateError,
    nodes,
    pass_context,
    pass_environment,
)
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Cycler, Namespace, generate_lorem_ipsum, missing
from jinja2.visitor import NodeTransformer
from markupsafe import EscapeFormatter, Markup

from campaign_engine.spelling import likely_names

MAX_VALUE_SIZE = 100_000
"""Characters of any string, items of any list, tuple or dict, a template builds."""
MAX_RANGE = 10_000
"""Numbers one `range()` may yield (Jinja's own sandbox allows 100,000)."""
MAX_LOOP_ITERATIONS = 20_000
"""`{% for %}` iterations in one render, all loops together."""
MAX_OPERATIONS = 50_000
"""Steps of one render: loop iterations, calls, filters, operators, attribute and item look-ups,
literals and pieces of output. Jinja takes 2 to 15 µs a step: the heaviest templates within
this and `MAX_BUILT` render in about half a second on a 2-core machine."""
MAX_BUILT = 1_000_000
"""Characters and items of all the values one render builds (output included) or compares (`in`,
`==`, `<`, … cost as much as their operands are long)."""
MAX_TEMPLATE_NODES = 5_000
"""Nodes of a parsed template (each tag, expression, name, literal and run of text is one):
compiling one takes Jinja about 0.1 ms a node, before any budget can count."""
MAX_NESTING = 16
"""Blocks (`for`, `if`, `macro`, `call`, `filter`, `with`, `block`) nested inside each other;
Python refuses code nested more than 20 blocks deep."""
MAX_CALL_DEPTH = 32
"""Calls (macros, `caller()`, `loop(…)` of recursive loops) nested inside each other."""
MAX_INT_BITS = 4096
"""Bits of an integer built by `*` or `**` (about 1,233 digits)."""
MAX_FORMAT_WIDTH = MAX_VALUE_SIZE
"""Widths and precisions in `%`-formats, `str.format` specs and padding filters."""


class TemplateRenderError(ValueError):
    """A template that cannot be parsed or rendered; the message says where and why."""


class TemplateBudgetExceeded(TemplateRenderError):
    """A template that asks for more than its budget; the message names the rule and the limit."""


# --- names a template does not have -------------------------------------------------------------

MAX_NAME_SHOWN = 100
"""Characters of an unknown name an error message repeats."""
_variables: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "template_variables", default=None
)
"""The variables of the render under way: what an unknown name's message lists."""


def _path_of(target: object, variables: Mapping[str, Any]) -> str | None:
    """The dotted name `target` has among `variables` (`lead`, `lead.firstName`), found by
    identity one level down; None when it has none, or more than one."""
    found = [name for name, value in variables.items() if value is target]
    for name, value in variables.items():
        if isinstance(value, Mapping):
            found.extend(f"{name}.{key}" for key, inner in value.items() if inner is target)
    return found[0] if len(found) == 1 else None


def _listed(names: Sequence[str]) -> str:
    """`a`, `b` and `c`."""
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _guess(options: Sequence[str]) -> str:
    """``: did you mean `a`?``, ``: did you mean `a` or `b`?``, or ``.`` for none: each ends
    the sentence it follows."""
    if not options:
        return "."
    return ": did you mean " + " or ".join(f"`{option}`" for option in options) + "?"


def unknown_name_message(
    obj: Any, name: Any, variables: Mapping[str, Any], functions: Sequence[str] = ()
) -> str | None:
    """What a template that names something `variables` do not have is told: the likely name
    and the names there are (`likely_names`), or None when it is not about a name of ours.

    - a variable (`obj` is Jinja's `missing`): ``unknown variable `first_name`: did you mean
      `lead.firstName`? The variables are `lead` (fields …) and `unsubscribe_url`.``
    - a field of a mapping among `variables`: ``unknown field `lead.first_name`: did you mean
      `lead.firstName`? The fields of `lead` are `id`, `email`, …``
    - a field of a value that has none (`lead.firstName.x`): says what the value is.

    `functions` (the environment's globals: `range`, `dict`, …) may be the likely name of an
    unknown variable too (`rnage` → `range`); they are not listed.
    """
    if isinstance(name, str) and len(name) > MAX_NAME_SHOWN:
        # The name is the template's own text: echoed, but not at any length.
        name = name[:MAX_NAME_SHOWN] + "…"
    if obj is missing:
        candidates = [(key, key, "") for key in variables]
        described: list[str] = []
        for key, value in variables.items():
            if isinstance(value, Mapping):
                candidates.extend((f"{key}.{field}", str(field), key) for field in value)
                described.append(f"`{key}` (fields {_listed([str(f) for f in value])})")
            else:
                described.append(f"`{key}`")
        guess = _guess(
            likely_names(str(name), candidates)
            or likely_names(str(name), [(each, each, "") for each in functions])
        )
        listed = (
            described[0]
            if len(described) == 1
            else ", ".join(described[:-1]) + " and " + described[-1]
        )
        return f"unknown variable `{name}`{guess} The variables are {listed}."
    path = _path_of(obj, variables)
    if path is None:
        return None
    if isinstance(obj, Mapping):
        fields = [str(field) for field in obj]
        wanted = f"{path}.{name}" if isinstance(name, str) else f"{path}[{name!r}]"
        guess = _guess(
            likely_names(str(name), [(f"{path}.{f}", f, path.rsplit(".", 1)[-1]) for f in fields])
        )
        return f"unknown field `{wanted}`{guess} The fields of `{path}` are {_listed(fields)}."
    kind = "text" if isinstance(obj, str) else type(obj).__name__
    return f"`{path}` is {kind}: it has no field `{name}`. Write `{{{{ {path} }}}}`."


class _NamingUndefined(StrictUndefined):
    """`StrictUndefined` whose error names the likely field and those there are
    (`unknown_name_message`), read from the render's variables; Jinja's own words otherwise
    (an unsafe attribute keeps its hint)."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        variables = _variables.get()
        if not self._undefined_hint and variables is not None:
            told = unknown_name_message(
                self._undefined_obj, self._undefined_name, variables, list(_env.globals)
            )
            if told is not None:
                return told
        return str(super()._undefined_message)


# --- the budget ---------------------------------------------------------------------------------


@dataclass
class _Budget:
    deadline: float
    seconds: float
    iterations: int = 0
    operations: int = 0
    built: int = 0
    depth: int = 0

    def charge(self, built: int = 0) -> None:
        """One step that built `built` characters or items; raises past any limit."""
        self.operations += 1
        self.built += built
        if self.operations > MAX_OPERATIONS:
            raise TemplateBudgetExceeded(
                f"the template takes more than {MAX_OPERATIONS:,} steps (loop iterations, "
                "calls, filters, operators, look-ups)"
            )
        if self.built > MAX_BUILT:
            raise TemplateBudgetExceeded(
                f"the template builds more than {MAX_BUILT:,} characters and items in all"
            )
        if time.monotonic() > self.deadline:
            raise TemplateBudgetExceeded(f"the template took longer than {self.seconds:g} s")

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise TemplateBudgetExceeded(
                f"the template's loops run more than {MAX_LOOP_ITERATIONS:,} iterations in all"
            )
        self.charge()


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "template_budget", default=None
)


def _current() -> _Budget:
    budget = _budget.get()
    if budget is None:
        # Jinja evaluates constant expressions while compiling when it can; refusing here
        # makes it leave them to render time, where the budget counts them.
        raise TemplateBudgetExceeded("template code runs only inside a budget")
    return budget


def _size(value: object, limit: int = MAX_VALUE_SIZE) -> int:
    """Roughly the characters `str(value)` would print: characters of strings, items (and what
    they hold) of containers, digits of numbers. Stops counting just past `limit`."""
    total = 0
    pending: list[object] = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, range):
            total += len(item)
        elif isinstance(item, dict):
            total += 2 * len(item)
            if total <= limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            if total <= limit:
                pending.extend(item)
        elif isinstance(item, Namespace):
            pending.append(object.__getattribute__(item, "_Namespace__attrs"))
        elif isinstance(item, Cycler):
            pending.append(item.items)
        else:
            total += 1
    return total


def _too_large(what: str, size: int) -> TemplateBudgetExceeded:
    return TemplateBudgetExceeded(
        f"{what} would hold {size:,} characters or items or more; templates build values of at "
        f"most {MAX_VALUE_SIZE:,}"
    )


def _refuse_larger(size: int, what: str) -> None:
    if size > MAX_VALUE_SIZE:
        raise _too_large(what, size)


def _account(value: Any, what: str = "a value") -> Any:
    """Charges a value just built to the budget; refuses it past `MAX_VALUE_SIZE`."""
    size = _size(value)
    _current().charge(size)
    _refuse_larger(size, what)
    return value


def _check_width(width: object, what: str) -> None:
    if isinstance(width, int) and abs(width) > MAX_FORMAT_WIDTH:
        raise TemplateBudgetExceeded(
            f"{what} of {width:,}; templates allow widths of at most {MAX_FORMAT_WIDTH:,}"
        )


def _check_int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateBudgetExceeded(
            f"{what} would have about {bits:,} bits; templates allow numbers of at most "
            f"{MAX_INT_BITS:,} bits"
        )


def _bounded_items(iterable: Iterable[Any], what: str) -> list[Any]:
    """The items of an iterable (a generator from `|map` included), refused past the limit."""
    budget = _current()
    items: list[Any] = []
    for item in iterable:
        items.append(item)
        if len(items) > MAX_VALUE_SIZE:
            raise _too_large(what, len(items))
    budget.charge(len(items))
    return items


def _joined_size(items: Sequence[Any], separator: object) -> int:
    separators = _size(separator) * max(len(items) - 1, 0)
    total = separators
    for item in items:
        total += _size(item)
        if total > MAX_VALUE_SIZE:
            break
    return total


def _replaced_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    occurrences = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(len(new) - len(old), 0)


_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?"
    r"(?P<type>[diouxXeEfFgGcrsa%])"
)


def _check_percent_format(template: str | bytes, values: object) -> None:
    """Refuses a `%`-format (`"%999999999s" % 1`, the `format` filter) that would build more than
    `MAX_VALUE_SIZE`: every conversion is counted as wide as its width, its precision or the
    largest value it may print, whichever is more."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    conversions = [m for m in _PERCENT_SPEC.finditer(text) if m.group("type") != "%"]
    if not conversions:
        return
    if isinstance(values, Mapping):
        candidates: Iterable[object] = values.values()
    elif isinstance(values, tuple):
        candidates = values
    else:
        candidates = (values,)
    largest = max((_size(value) for value in candidates), default=0)
    # %f of a large float prints every digit before the point.
    largest = max(largest, 320)
    total = len(text)
    for conversion in conversions:
        width, precision = conversion.group("width"), conversion.group("precision")
        if width == "*" or precision == "*":
            raise TemplateBudgetExceeded("'*' widths in %-formats are not allowed in templates")
        for number in (width, precision):
            if number is not None:
                _check_width(int(number), "a %-format width")
        total += max(int(width or 0), int(precision or 0), largest)
        if total > MAX_VALUE_SIZE:
            raise _too_large("a %-format", total)


_FORMAT_NUMBER = re.compile(r"\d+")


class _BoundedFormatter(SandboxedFormatter):
    """`str.format` in the sandbox, with every width and precision bounded and the result
    counted field by field, so `"{0}{0}{0}…".format(big)` stops before it is built."""

    def __init__(self, env: ImmutableSandboxedEnvironment, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._built = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in _FORMAT_NUMBER.findall(format_spec):
            _check_width(int(number), "a format width")
        _refuse_larger(self._built + _size(value), "str.format()")
        formatted = super().format_field(value, format_spec)
        self._built += len(formatted)
        _current().charge(len(formatted))
        _refuse_larger(self._built, "str.format()")
        return formatted


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


# --- the environment ----------------------------------------------------------------------------


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateBudgetExceeded(
            f"range() of {len(numbers):,} numbers; templates allow at most {MAX_RANGE:,}"
        )
    return numbers


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    words = n * max if isinstance(n, int) and isinstance(max, int) else 0
    if words > MAX_VALUE_SIZE // 10:
        raise TemplateBudgetExceeded(
            f"lipsum() of up to {words:,} words; templates allow at most {MAX_VALUE_SIZE // 10:,}"
        )
    return str(generate_lorem_ipsum(n, html, min, max))


def _str_method_check(owner: str | bytes, name: str, args: tuple[Any, ...]) -> None:
    """Refuses the `str` (and `bytes`) methods that can build far more than they are given."""
    if name in {"center", "ljust", "rjust", "zfill"} and args:
        _check_width(args[0], f"str.{name}() width")
    elif name == "expandtabs":
        tabsize = args[0] if args and isinstance(args[0], int) else 8
        tab = "\t" if isinstance(owner, str) else b"\t"
        _refuse_larger(len(owner) + owner.count(tab) * max(tabsize, 0), "str.expandtabs()")  # type: ignore[arg-type]
    elif name == "replace" and len(args) >= 2:
        _refuse_larger(_replaced_size(owner, *args[:3]), "str.replace()")
    elif name == "translate" and args:
        table = args[0]
        longest = 1
        if isinstance(table, Mapping):
            longest = max((_size(value) for value in table.values()), default=1)
        _refuse_larger(len(owner) * max(longest, 1), "str.translate()")


def _filter_rules() -> dict[str, Callable[..., Any]]:
    """Checks run before the filters that can build far more than they are given.

    Each takes the filter's own arguments (value first) and returns the value to filter, which
    `join` replaces by a bounded list of its items.
    """

    def center(value: Any, width: Any = 80) -> Any:
        _check_width(width, "center() width")
        return value

    def indent(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> Any:
        _check_width(width, "indent() width")
        text = str(s)
        pad = len(width) if isinstance(width, str) else max(int(width), 0)
        _refuse_larger(len(text) + (text.count("\n") + 1) * pad, "indent()")
        return s

    def wordwrap(
        s: Any,
        width: Any = 79,
        break_long_words: Any = True,
        wrapstring: Any = None,
        break_on_hyphens: Any = True,
    ) -> Any:
        text = str(s)
        if isinstance(width, int) and width > 0:
            # textwrap copies the rest of a long word for every line it cuts from it.
            lines = len(text) // width + 1
            if lines > MAX_RANGE:
                raise TemplateBudgetExceeded(
                    f"wordwrap() of {len(text):,} characters at width {width} would cut up to "
                    f"{lines:,} lines; templates allow at most {MAX_RANGE:,}"
                )
        wrap = len(wrapstring) if isinstance(wrapstring, str) else 1
        if wrap > 1:
            _refuse_larger(len(text) * (1 + wrap), "wordwrap()")
        return s

    def replace(s: Any, old: Any, new: Any, count: Any = None) -> Any:
        _refuse_larger(_replaced_size(str(s), str(old), str(new), count), "replace()")
        return s

    def format(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_percent_format(str(value), kwargs or args)
        return value

    def join(value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = _bounded_items(value, "join()")
        _refuse_larger(_joined_size(items, d), "join()")
        return items

    def batch(value: Any, linecount: Any, fill_with: Any = None) -> Any:
        _check_width(linecount, "batch() size")
        return value

    def slice(value: Any, slices: Any, fill_with: Any = None) -> Any:
        if isinstance(slices, int) and slices > MAX_RANGE:
            raise TemplateBudgetExceeded(
                f"slice() into {slices:,} lists; templates allow at most {MAX_RANGE:,}"
            )
        return value

    def sum(iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if not isinstance(start, int | float):
            raise TemplateBudgetExceeded("sum() adds numbers only in templates")
        return iterable

    def round(value: Any, precision: Any = 0, method: Any = "common") -> Any:
        if isinstance(precision, int) and abs(precision) > 308:
            raise TemplateBudgetExceeded("round() to more than 308 digits")
        return value

    return {
        "center": center,
        "indent": indent,
        "wordwrap": wordwrap,
        "replace": replace,
        "format": format,
        "join": join,
        "batch": batch,
        "slice": slice,
        "sum": sum,
        "round": round,
    }


_FORMAT_METHODS = frozenset(["format", "format_map"])


@pass_environment
def _sandboxed_attr(environment: Environment, obj: Any, name: Any) -> Any:
    """The `attr` filter (`foo|attr("bar")`: the attribute, never an item) under the sandbox's
    rules: an unsafe attribute is undefined, `str.format` comes wrapped (Jinja 3.1.6's fix of
    CVE-2025-27516, done here so that an older Jinja cannot reopen it)."""
    assert isinstance(environment, _BudgetedEnvironment)
    try:
        name = str(name)
        value = getattr(obj, name)
    except (AttributeError, UnicodeError):
        return environment.undefined(obj=obj, name=name)
    if not environment.is_safe_attribute(obj, name, value):
        return environment.unsafe_undefined(obj, name)
    return environment.wrap_str_format(value) or value


def _budgeted_filter(func: Callable[..., Any], rule: Callable[..., Any] | None) -> Any:
    # Jinja passes a context, eval context or environment first to filters marked so
    # (`jinja_pass_arg`, set by `pass_context` and friends, which `functools.wraps` copies).
    passed = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        _current().charge()
        if rule is not None and len(args) > passed:
            value = rule(*args[passed:], **kwargs)
            args = (*args[:passed], value, *args[passed + 1 :])
        return _account(func(*args, **kwargs), "a filter's result")

    return run


class _RouteThroughBudget(NodeTransformer):
    """Rewrites a parsed template so the budget sees what the sandbox has no hook for.

    `{% for x in xs %}` iterates `environment.budget_iter(xs)`; each operand of a comparison
    passes through `environment.budget_operand(…)`, which charges its length; `a ~ b` is
    `environment.budget_concat(a, b)`; a list, tuple or dict literal passes through
    `environment.budget_value(…)`. `EnvironmentAttribute` is the node Jinja offers extensions
    for calling back into the environment; template code cannot name or shadow it.
    """

    @staticmethod
    def _call(name: str, args: list[Any], lineno: int) -> nodes.Call:
        return nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None, lineno=lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._call("budget_iter", [node.iter], node.lineno)
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        # `x in big` and `big == other` cost as much as `big` is long, once per evaluation.
        self.generic_visit(node)
        node.expr = self._call("budget_operand", [node.expr], node.lineno)
        for operand in node.ops:
            operand.expr = self._call("budget_operand", [operand.expr], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._call("budget_concat", list(node.nodes), node.lineno)

    def _value(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return self._call("budget_value", [node], node.lineno)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        return self._value(node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        return self._value(node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        if node.ctx != "load":
            # `{% for a, b in … %}` and `{% set a, b = … %}`: targets, not values.
            return node
        return self._value(node)


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with every step a template takes counted against `_Budget`."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self) -> None:
        super().__init__(
            undefined=_NamingUndefined,
            autoescape=False,
            # No constant folding at compile time: everything a template computes is computed
            # while rendering, where the budget counts it.
            optimized=False,
            finalize=_finalize,
        )
        self.globals["range"] = _bounded_range
        self.globals["lipsum"] = _bounded_lipsum
        # Jinja 3.1.5's `|attr` skips the sandbox's attribute hook and hands out a raw
        # `str.format` (CVE-2025-27516); ours goes through it whatever Jinja is installed.
        self.filters["attr"] = _sandboxed_attr
        rules = _filter_rules()
        self.filters = {
            name: _budgeted_filter(func, rules.get(name)) for name, func in self.filters.items()
        }

    # --- hooks of the sandbox -------------------------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _current()
        budget.charge()
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            if isinstance(left, str | bytes | list | tuple) and type(left) is type(right):
                _refuse_larger(_size(left) + _size(right), "'+'")
        elif operator == "%" and isinstance(left, str | bytes):
            _check_percent_format(left, right)
        return _account(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(
        __self,  # Jinja's own spelling: a template may pass `self=` as a keyword.
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = _current()
        budget.charge()
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str) and name in _FORMAT_METHODS:
            # A raw `str.format` / `format_map`, however the template got hold of it (stored
            # in a variable, `|attr`, `|map(attribute=…)`: CVE-2024-56326, CVE-2025-27516), runs
            # through the sandbox's formatter, which refuses `{0.__class__}`-style field access.
            # Jinja 3.1.4 checked this here and 3.1.5 only in `getattr`; ours does both.
            __obj = __self.wrap_str_format(__obj)
        elif isinstance(owner, str | bytes):
            if name == "join" and args:
                items = _bounded_items(args[0], "str.join()")
                _refuse_larger(_joined_size(items, owner), "str.join()")
                args = (items, *args[1:])
            else:
                _str_method_check(owner, name, args)
        elif isinstance(owner, int) and name == "to_bytes" and args:
            _check_width(args[0], "int.to_bytes() length")
        elif isinstance(__obj, LoopContext) and args:
            # `loop(children)` of a recursive loop iterates its argument: count it too.
            args = (__self.budget_iter(args[0]), *args[1:])
        budget.depth += 1
        try:
            if budget.depth > MAX_CALL_DEPTH:
                raise TemplateBudgetExceeded(
                    f"calls nest more than {MAX_CALL_DEPTH} deep (a macro calling itself?)"
                )
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        return _account(result, f"{name or 'a call'}()")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _current().charge()
        value = super().getattr(obj, attribute)
        # Jinja before 3.1.5 hands out `str.format` itself here; wrap it as 3.1.5 does.
        return self.wrap_str_format(value) or value

    def getitem(self, obj: Any, argument: Any) -> Any:
        _current().charge()
        item = super().getitem(obj, argument)
        # A slice is a copy; a plain look-up builds nothing.
        return _account(item, "a slice") if isinstance(argument, slice) else item

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` / `format_map` through `_BoundedFormatter` (Jinja's own, bounded).

        A hook of Jinja 3.1.5 and later; `getattr`, `call` and the `attr` filter call it here
        whatever Jinja is installed.
        """
        if not callable(value) or getattr(value, "__name__", None) not in _FORMAT_METHODS:
            return None
        owner = getattr(value, "__self__", None)
        if not isinstance(owner, str):
            return None
        is_format_map = value.__name__ == "format_map"
        str_type = type(owner)

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            formatter: _BoundedFormatter
            if isinstance(owner, Markup):
                formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
            else:
                formatter = _BoundedFormatter(self)
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            return str_type(formatter.vformat(owner, args, kwargs))

        return functools.update_wrapper(bounded_format, value)

    # --- what the compiled template and `_RouteThroughBudget` call ------------------------------

    def concat(self, chunks: Iterable[str]) -> str:
        """Joins a macro's, block's or `{% set %}` block's output, refused past the limit."""
        parts = list(chunks)
        size = 0
        for part in parts:
            size += len(part)
            _refuse_larger(size, "a macro's or block's output")
        _current().charge(size)
        return "".join(parts)

    def budget_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every `{% for %}` iterates: the iterable, one counted iteration at a time."""
        budget = _current()
        for item in iterable:
            budget.iterate()
            yield item

    def budget_concat(self, *parts: Any) -> str:
        """`a ~ b ~ …`, with every part and the result within the limit."""
        size = 0
        for part in parts:
            size += _size(part)
            _refuse_larger(size, "'~'")
        return str(_account("".join(str(part) for part in parts), "'~'"))

    def budget_operand(self, value: Any) -> Any:
        """An operand of `in`, `==`, `<`, …: charged as long as it is (a scan may read it all)."""
        _current().charge(len(value) if isinstance(value, str | bytes | Sized) else 0)
        return value

    def budget_value(self, value: Any) -> Any:
        """A list, tuple or dict literal, counted with what it holds."""
        return _account(value, "a list, tuple or dict")


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    # Every `{{ … }}` is printed with str(): a list holding a large list many times over would
    # print far more than it takes in memory.
    return _account(value, "a printed value")


def _check_repeat(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, str | bytes | list | tuple):
        left, right = right, left
    if isinstance(left, str | bytes | list | tuple) and isinstance(right, int):
        _refuse_larger(_size(left) * max(right, 0), "'*'")
    elif isinstance(left, int) and isinstance(right, int):
        _check_int_bits(left.bit_length() + right.bit_length(), "'*'")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        _check_int_bits(base.bit_length() * exponent, "'**'")


_env = _BudgetedEnvironment()


@functools.lru_cache(maxsize=64)
def _compile(template: str) -> Any:
    # Compiled once per process and source: a worker drafts the same step for many leads.
    ast = _env.parse(template)
    _check_shape(ast)
    return _env.from_string(_RouteThroughBudget().visit(ast))


_BLOCKS = (
    nodes.For,
    nodes.If,
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.With,
    nodes.Block,
    nodes.AssignBlock,
    nodes.ScopedEvalContextModifier,
)


def _check_shape(ast: nodes.Template) -> None:
    """Refuses a template too large or too deeply nested to compile in reasonable time."""
    count = 0
    pending: list[tuple[nodes.Node, int]] = [(ast, 0)]
    while pending:
        node, depth = pending.pop()
        count += 1
        if count > MAX_TEMPLATE_NODES:
            raise TemplateBudgetExceeded(
                f"the template has more than {MAX_TEMPLATE_NODES:,} tags, expressions and "
                "pieces of text"
            )
        if isinstance(node, _BLOCKS):
            depth += 1
            if depth > MAX_NESTING:
                raise TemplateBudgetExceeded(
                    f"the template nests blocks more than {MAX_NESTING} deep"
                )
        pending.extend((child, depth) for child in node.iter_child_nodes())


# --- rendering ----------------------------------------------------------------------------------


def render_source(
    template: str, variables: Mapping[str, Any], *, limit: int, seconds: float
) -> str:
    """Renders `template` with `variables` in this thread, within the budget.

    `limit` is the most characters the output may have; `seconds` the deadline of rendering
    (compiling is bounded by `MAX_TEMPLATE_NODES`). Raises `TemplateRenderError`
    (`TemplateBudgetExceeded` for the budget) and nothing else.
    """
    try:
        compiled = _compile(template)
        # The deadline counts rendering; compiling is bounded by `MAX_TEMPLATE_NODES`.
        budget = _Budget(deadline=time.monotonic() + seconds, seconds=seconds)
        token = _budget.set(budget)
        named = _variables.set(variables)
        try:
            return _stream(compiled, variables, limit, budget)
        finally:
            _variables.reset(named)
            _budget.reset(token)
    except TemplateRenderError:
        raise
    except TemplateError as error:
        raise TemplateRenderError(_describe(error)) from error
    except Exception as error:
        # Expressions in a template can fail like any Python code (`{{ 1 / 0 }}`, a macro
        # recursing, a number too long to print); that is the template's fault, not ours.
        raise TemplateRenderError(f"{type(error).__name__}: {error}") from error


def _stream(compiled: Any, variables: Mapping[str, Any], limit: int, budget: _Budget) -> str:
    parts: list[str] = []
    size = 0
    stream = compiled.generate(variables)
    try:
        for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise TemplateBudgetExceeded(f"the template renders more than {limit:,} characters")
            budget.charge(len(chunk))
            parts.append(chunk)
    finally:
        stream.close()
    return "".join(parts)


_UNKNOWN_CALLABLE = re.compile(r"No (filter|test) named '([^']{1,100})'")
_UNKNOWN_TAG = re.compile(r"Encountered unknown tag '([^']{1,100})'")
_TAGS = (
    "if", "elif", "else", "endif", "for", "endfor", "set", "endset", "macro", "endmacro",
    "call", "endcall", "filter", "endfilter", "with", "endwith", "block", "endblock", "raw",
    "endraw",
)  # fmt: skip
"""The statement tags a template may use (Jinja's, less those of other files: `include`,
`import`, `extends`, which a template here has nothing to load)."""


def _describe(error: TemplateError) -> str:
    """Jinja's message and line, and for an unknown filter, test or tag the likely one
    (`{{ x | upperr }}` → `upper`)."""
    line = getattr(error, "lineno", None)
    where = f" (line {line})" if line else ""
    message = error.message or type(error).__name__
    name: str | None = None
    known: tuple[str, ...] = ()
    if unknown := _UNKNOWN_CALLABLE.search(message):
        name = unknown[2]
        known = tuple(_env.filters if unknown[1] == "filter" else _env.tests)
    elif unknown := _UNKNOWN_TAG.search(message):
        name, known = unknown[1], _TAGS
    if name is not None:
        likely = likely_names(name, [(each, each, "") for each in known])
        if likely:
            message = (
                message.rstrip(".")
                + ": did you mean "
                + " or ".join(f"`{each}`" for each in likely)
                + "?"
            )
    return f"{message}{where}"
