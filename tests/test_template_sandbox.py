"""The template budget on its own: every kind of bomb refused (or bounded) quickly, in-process.

The same inputs against the running API and worker are in `test_template_budget.py`.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities import templates
from activities.templates import (
    MAX_BODY_CHARS,
    MAX_SUBJECT_CHARS,
    WORST_CASE_LEAD,
    TemplateBudgetExceeded,
    TemplateRenderError,
)
from api.schemas import LeadBody
from workflows.types import Lead

ADA = Lead(
    id="a" * 24,
    email="ada@example.com",
    first_name="Ada",
    last_name="Lovelace",
    company="Analytical Engines",
)

# (template, a fragment of the refusal's message)
REFUSED = [
    (
        "{% for a in range(12000) %}{% for b in range(3000) %}{% endfor %}{% endfor %}x",
        "range() of 12,000 numbers",
    ),
    (
        "{% for a in range(10000) %}{% for b in range(3000) %}{% endfor %}{% endfor %}x",
        "more than 20,000 iterations",
    ),
    ('{{ "A" * 200000 }}', "'*' would hold 200,000"),
    ("{{ lead.firstName * 300000 }}", "'*' would hold 60,000,000"),
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "calls nest more than 32 deep"),
    (
        "{% macro m(n) %}{% for i in range(9) %}{{ m(n) }}{% endfor %}{% endmacro %}{{ m(1) }}",
        "nest",
    ),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "calls nest"),
    ("{{ range(10**9)|list }}", "range() of 1,000,000,000"),
    ('{{ "%999999999s" % 1 }}', "%-format width of 999,999,999"),
    ('{{ "%.999999999f" % 1.5 }}', "%-format width of 999,999,999"),
    ('{{ "%*s" % (999999999, 1) }}', "'*' widths"),
    ('{{ "{:>999999999}".format(1) }}', "format width of 999,999,999"),
    ('{{ "{0:{1}}".format(1, 999999999) }}', "format width of 999,999,999"),
    ('{{ "{0}{0}{0}".format("x" * 40000) }}', "str.format()"),
    ('{{ "%999999999s"|format(1) }}', "%-format width"),
    ('{% set big = "a" * 90000 %}{{ "%(a)s%(a)s" % {"a": big} }}', "%-format would hold"),
    ('{{ range(10000)|join("x" * 1000) }}', "join() would hold"),
    ('{{ "x".join(range(10000)|map("string")|list * 5) }}', "would hold"),
    ('{{ ("a" * 90000)|wordwrap(1) }}', "wordwrap()"),
    ('{{ "a b c"|wordwrap(1, wrapstring="x" * 90000) }}', "wordwrap()"),
    ('{{ "x"|center(10**9) }}', "center() width of 1,000,000,000"),
    ('{{ "x"|center(1000000000) }}', "center() width of 1,000,000,000"),
    ('{{ "x\ny"|indent(10**9) }}', "indent() width of 1,000,000,000"),
    ('{{ ("x\n" * 40000)|indent(10) }}', "indent() would hold"),
    ('{{ "x".ljust(10**9) }}', "str.ljust() width"),
    ('{{ "x".zfill(10**9) }}', "str.zfill() width"),
    ('{{ ("\t" * 50000).expandtabs(1000) }}', "str.expandtabs()"),
    ('{{ ("ab" * 1000).replace("", "x" * 1000) }}', "str.replace()"),
    ('{{ ("ab" * 1000)|replace("", "x" * 1000) }}', "replace()"),
    ('{{ (1).to_bytes(10**9, "big") }}', "int.to_bytes() length"),
    ("{{ lipsum(10**6) }}", "lipsum() of up to"),
    ("{{ lipsum(1, false, 10**9, 10**9) }}", "lipsum() of up to"),
    (
        '{% set x = "A" * 1000 %}{% for a in range(1000) %}{% for b in range(1000) %}'
        "{{ x }}{% endfor %}{% endfor %}",
        "renders more than 100,000 characters",
    ),
    (
        "{% for a in range(10000) %}{% for b in range(10000) %}"
        "{% if loop.cycle(1, 2) == 3 %}{% endif %}{% endfor %}{% endfor %}",
        "more than 50,000 steps",
    ),
    ("{{ 9 ** 999999999 }}", "'**' would have about"),
    ("{% set x = 10**1000 %}{{ x * x * x * x * x }}", "'*' would have about"),
    ("{% set l = [1, 2, 3] * 30000 %}{{ l|length }}", "'*' would hold"),
    ('{% set big = "a" * 90000 %}{% set l = [big, big, big] %}{{ l|length }}', "a list"),
    ('{% set big = "a" * 90000 %}{{ big ~ big }}', "'~' would hold"),
    ('{% set big = "a" * 60000 %}{{ big + big }}', "'+' would hold"),
    (
        '{% set ns = namespace(s="a") %}{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}'
        "{% endfor %}",
        "'~' would hold",
    ),
    (
        '{% set x %}{% for i in range(600) %}{{ "a" * 200 }}{% endfor %}{% endset %}',
        "block's output",
    ),
    (
        '{% macro m() %}{% for i in range(600) %}{{ "a" * 200 }}{% endfor %}{% endmacro %}'
        "{{ m()|length }}",
        "block's output",
    ),
    ('{{ ("x" * 100)|batch(10**9, "y")|list }}', "batch() size"),
    ("{{ [1]|slice(10**9)|list }}", "slice() into"),
    ("{{ [[1] * 1000] * 50|sum(start=[]) }}", "sum() adds numbers only"),
    ("{{ 5|round(-1000000000) }}", "round() to more than 308 digits"),
    (
        '{% set s = "ab" * 50000 %}{% for a in range(10000) %}{% if "abc" in s %}{% endif %}'
        "{% endfor %}",
        "builds more than 1,000,000",
    ),
    ("{% for a in x %}" * 40 + "{% endfor %}" * 40, "nests blocks more than 16 deep"),
    ("{{ a }}" * 6000, "more than 5,000 tags"),
    ("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", "RecursionError"),
    ("{{" + "-" * 50000 + "1 }}", "RecursionError"),
    ("Hi {{ lead.firstName ", "unexpected end of template"),
    ("{{ lead.fristName }}", "fristName"),
    ("{{ lead.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ('{% include "other" %}', "no loader"),
]


@pytest.mark.parametrize(("template", "why"), REFUSED, ids=[t[:40] for t, _ in REFUSED])
def test_budget_refuses_quickly(template: str, why: str) -> None:
    started = time.monotonic()

    with pytest.raises(TemplateRenderError) as refused:
        templates.render(template, WORST_CASE_LEAD, limit=MAX_BODY_CHARS, seconds=30)

    assert why in str(refused.value)
    # Far under the 30 s deadline given: refused by counting, not by the clock.
    assert time.monotonic() - started < 5


BOUNDED = [
    ('{{ "x"|truncate(10**9) }}', "x"),
    ('{{ "a b"|wordwrap(1) }}', "a\nb"),
    ("{{ range(5)|join(',') }}", "0,1,2,3,4"),
    ('{% for a in range(3) %}{{ loop.cycle("a", "b") }}{% endfor %}', "aba"),
    ("{{ 9**9**9 }}", str((9**9) ** 9)),  # Jinja's ** is left-associative
    ('{{ "%5s|%-3d|%.2f" % ("x", 7, 1.5) }}', "    x|7  |1.50"),
    ('{{ "{:>5}".format("x") }}', "    x"),
    ('{{ "x"|center(5) }}', "  x  "),
    ('{{ ("ab")|replace("", "-") }}', "-a-b-"),
    ("{{ [lead.firstName]|map('upper')|join(', ') }}", "ADA"),
    ("{% for c in lead.firstName %}{{ c }}.{% endfor %}", "A.d.a."),
]


@pytest.mark.parametrize(("template", "expected"), BOUNDED, ids=[t[:40] for t, _ in BOUNDED])
def test_budget_lets_ordinary_templates_through(template: str, expected: str) -> None:
    assert templates.render(template, ADA, limit=MAX_BODY_CHARS) == expected


def test_output_limit_is_the_callers() -> None:
    assert templates.render('{{ "x" * 998 }}', ADA, limit=MAX_SUBJECT_CHARS) == "x" * 998
    with pytest.raises(TemplateBudgetExceeded, match="more than 998 characters"):
        templates.render('{{ "x" * 999 }}', ADA, limit=MAX_SUBJECT_CHARS)


def test_worst_case_lead_has_every_field_at_the_api_maximum() -> None:
    limits = {name: field.metadata for name, field in LeadBody.model_fields.items()}

    def max_length(name: str) -> int:
        length: int = next(m.max_length for m in limits[name] if hasattr(m, "max_length"))
        return length

    assert len(WORST_CASE_LEAD.first_name) == max_length("first_name") == 200
    assert len(WORST_CASE_LEAD.last_name) == max_length("last_name") == 200
    assert len(WORST_CASE_LEAD.company) == max_length("company") == 200
    # RFC 5321's longest address (email-validator refuses longer), local part at its 64.
    assert len(WORST_CASE_LEAD.email) == 254
    assert len(WORST_CASE_LEAD.email.split("@")[0]) == 64
    assert len(WORST_CASE_LEAD.id) == 24


async def test_render_async_kills_a_render_past_its_deadline_and_recovers() -> None:
    # Compiling is counted only by the hard timeout: 4,000 nodes take well over 50 ms.
    slow_to_compile = "{{ lead.id }}" * 1999

    with pytest.raises(TemplateBudgetExceeded, match="was stopped"):
        await templates.render_async(
            slow_to_compile, ADA, limit=MAX_BODY_CHARS, seconds=0.001, grace_seconds=0.05
        )

    rendered = await templates.render_async("Hi {{ lead.firstName }}", ADA, limit=100)
    assert rendered == "Hi Ada"


async def test_render_async_reports_a_budget_error_across_the_process_boundary() -> None:
    with pytest.raises(TemplateBudgetExceeded, match="'\\*' would hold 200,000"):
        await templates.render_async('{{ "A" * 200000 }}', ADA, limit=MAX_BODY_CHARS)


# --- properties ---------------------------------------------------------------------------------

leads = st.builds(
    Lead,
    id=st.text(max_size=24),
    email=st.text(max_size=254),
    first_name=st.text(max_size=200),
    last_name=st.text(max_size=200),
    company=st.text(max_size=200),
)
limits = st.sampled_from([MAX_SUBJECT_CHARS, MAX_BODY_CHARS, 1, 0])


def _holds(template: str, lead: Lead, limit: int) -> None:
    started = time.monotonic()
    try:
        rendered = templates.render(template, lead, limit=limit, seconds=10)
    except TemplateRenderError:
        pass
    else:
        assert isinstance(rendered, str)
        assert len(rendered) <= limit
    assert time.monotonic() - started < 10


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(template=st.text(max_size=2000), lead=leads, limit=limits)
def test_any_text_renders_within_its_limit_or_is_refused(
    template: str, lead: Lead, limit: int
) -> None:
    _holds(template, lead, limit)


_numbers = st.one_of(
    st.integers(min_value=-3, max_value=20).map(str),
    st.integers(min_value=0, max_value=10**12).map(str),
    st.sampled_from(["10**9", "2**64", "9**99", "100000", "99999", "-1"]),
)
_strings = st.one_of(
    st.text(max_size=20).map(repr),
    st.sampled_from(
        ["lead.firstName", "lead.lastName", "lead.company", "lead.email", "lead.id", '"%s%s"']
    ),
)


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        filters = st.sampled_from(
            [
                "center",
                "indent",
                "wordwrap",
                "truncate",
                "batch",
                "slice",
                "round",
                "join",
                "replace",
                "format",
                "list",
                "string",
                "upper",
                "sum",
                "unique",
                "sort",
                "length",
                "reverse",
                "striptags",
                "urlize",
                "tojson",
                "pprint",
            ]
        )
        return st.one_of(
            st.tuples(inner, st.sampled_from(["*", "+", "~", "%", "**", "//", "in"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(inner, filters, st.lists(inner, max_size=2)).map(
                lambda t: f"({t[0]})|{t[1]}({', '.join(t[2])})"
            ),
            st.tuples(inner, st.sampled_from(["ljust", "center", "zfill", "join", "format"])).map(
                lambda t: f'"ab".{t[1]}({t[0]})'
            ),
            st.lists(inner, max_size=4).map(lambda items: f"[{', '.join(items)}]"),
            inner.map(lambda n: f"range({n})"),
            inner.map(lambda n: f"lipsum({n})"),
        )

    return st.recursive(st.one_of(_numbers, _strings), extend, max_leaves=12)


def _programs() -> st.SearchStrategy[str]:
    expression = _expressions()
    statement = st.one_of(
        expression.map(lambda e: f"{{{{ {e} }}}}"),
        expression.map(lambda e: f"{{% set x = {e} %}}{{{{ x }}}}"),
        st.text(max_size=30),
    )

    def nest(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(expression, inner).map(
                lambda t: f"{{% for i in {t[0]} %}}{t[1]}{{{{ loop.cycle('a', i) }}}}{{% endfor %}}"
            ),
            st.tuples(inner).map(
                lambda t: f"{{% macro m(n) %}}{t[0]}{{{{ m(n) }}}}{{% endmacro %}}{{{{ m(1) }}}}"
            ),
            st.lists(inner, max_size=3).map("".join),
        )

    return st.recursive(statement, nest, max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(template=_programs(), lead=leads, limit=limits)
def test_any_program_of_loops_and_multiplications_stays_within_budget(
    template: str, lead: Lead, limit: int
) -> None:
    _holds(template, lead, limit)
