"""Message templates over a lead: rendered by the budgeted sandbox, in a pool of processes.

`activities.sandbox` counts what a template computes; this module decides for whom and where:

- **for whom**: at PUT, every template is rendered once for `WORST_CASE_LEAD` (every field at
  the longest the API accepts) and must fit its output limit (`MAX_SUBJECT_CHARS`,
  `MAX_BODY_CHARS`); a draft renders it for the real lead, under the same budget.
- **where**: `render_async` renders in a `pebble.ProcessPool`, never on the caller's event loop or
  in its process, so a template can neither stall the API's loop (not even through the GIL) nor
  crash a worker. It hands a render to the pool only when a process is free for it
  (`render_slots`): renders beyond that wait their turn in the caller, where a draft can
  heartbeat and a cancelled one simply stops waiting, and each render's deadline starts when a
  process takes it up. The turns are shared fairly between account groups, and the queue is
  bounded (`activities.render_queue`); a campaign's templates together have a render budget at
  PUT (`check_templates`), so no group's templates keep another's waiting. A render still
  running `HARD_TIMEOUT_GRACE_SECONDS` after its deadline is killed with its process; each
  process's address space is capped (`RENDER_PROCESS_MEMORY_BYTES` above what it uses at
  start), so a memory bomb the budget did not foresee is a `MemoryError` in that process, not
  an out-of-memory host.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pebble

from activities.render_queue import (
    FairRenderQueue,
    RenderQueueFull,
    RenderQueueLimits,
    render_queue,
)
from activities.sandbox import (
    TemplateBudgetExceeded,
    TemplateRenderError,
    render_source,
)
from campaign_engine import unsubscribe
from campaign_engine.settings import MAX_UNSUBSCRIBE_BASE_URL_CHARS
from workflows.types import Lead

MAX_SUBJECT_CHARS = 998
"""A rendered subject, like the template: RFC 5322's line length limit."""
MAX_BODY_CHARS = 100_000
"""A rendered body, like the template."""

CHECK_SECONDS = 1.0
"""Deadline of one template's check at PUT."""
DRAFT_SECONDS = 3.0
"""Deadline of one template's render for a draft: three times the check's, so that a template
accepted at PUT does not time out on a busier worker."""
HARD_TIMEOUT_GRACE_SECONDS = 3.0
"""A render still running this long past its deadline (which starts once the template is
compiled) is killed with its process."""
RENDER_PROCESSES = 2
"""Processes of the render pool (one per core of the machines we run on)."""
RENDER_BUDGET_SECONDS = 5.0
"""Default of a campaign's render budget (`check_templates`, setting `render_budget_seconds`):
CPU seconds its templates may take together when checked at PUT."""
RENDER_PROCESS_MEMORY_BYTES = 1024 * 1024 * 1024
"""Address space a render process may add to what it uses once started."""


def _max_field(sample: str, length: int) -> str:
    return (sample * (length // len(sample) + 1))[:length]


WORST_CASE_LEAD = Lead(
    id="f" * 24,
    # 64 (the longest local part) + "@" + 189 = 254 characters, the longest address.
    email="w" * 64 + "@" + "w" * 63 + "." + "w" * 63 + "." + "w" * 57 + ".com",
    first_name=_max_field("Zoë Ångström ", 200),
    last_name=_max_field("Łukasz Øster ", 200),
    company=_max_field("Straße & Söhne ", 200),
)
"""The lead templates are checked against at PUT: every field at the longest the API accepts
(`LeadBody`: names 200 characters, e-mail 254, id 24 hex), with non-ASCII letters and spaces, so
that output grows with a lead's data as far as it ever can for fields of that length."""


UNSUBSCRIBE_URL_MARKER = "[unsubscribe link]"
"""What `{{ unsubscribe_url }}` renders to in a draft (and so what a reviewer sees): the
delivery activity replaces it with the message's own one-click URL, which only it can make (its
key stays out of workflow history)."""
MAX_UNSUBSCRIBE_URL_CHARS = (
    MAX_UNSUBSCRIBE_BASE_URL_CHARS + len("/u/") + unsubscribe.MAX_TOKEN_CHARS
)
WORST_CASE_UNSUBSCRIBE_URL = "https://" + "u" * (MAX_UNSUBSCRIBE_URL_CHARS - len("https://"))
"""What `{{ unsubscribe_url }}` renders to at PUT: the longest URL delivery can put in its
place, so the output limits checked there hold for the delivered subject and body too."""


def lead_context(lead: Lead, unsubscribe_url: str = UNSUBSCRIBE_URL_MARKER) -> dict[str, Any]:
    """The variables a template sees: `lead` with the camelCase names the API uses for a lead,
    and `unsubscribe_url` (see `UNSUBSCRIBE_URL_MARKER`)."""
    return {
        "unsubscribe_url": unsubscribe_url,
        "lead": {
            "id": lead.id,
            "email": lead.email,
            "firstName": lead.first_name,
            "lastName": lead.last_name,
            "company": lead.company,
        },
    }


def render(
    template: str,
    lead: Lead,
    *,
    limit: int,
    seconds: float = DRAFT_SECONDS,
    unsubscribe_url: str = UNSUBSCRIBE_URL_MARKER,
) -> str:
    """Renders `template` for `lead` in this thread (see `activities.sandbox.render_source`).

    `limit` is the most characters the output may have (`MAX_SUBJECT_CHARS`, `MAX_BODY_CHARS`);
    `seconds` the deadline. Raises `TemplateRenderError` (`TemplateBudgetExceeded` for the
    budget) and nothing else. Blocks while it runs: from async code use `render_async`.
    """
    return render_source(
        template, lead_context(lead, unsubscribe_url), limit=limit, seconds=seconds
    )


_T = TypeVar("_T")


# --- the process pool ---------------------------------------------------------------------------

_pool: pebble.ProcessPool | None = None
_pool_lock = threading.Lock()


def _cap_memory() -> None:
    """Runs in each render process as it starts: caps its address space (Linux)."""
    try:
        import resource

        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * resource.getpagesize()
        cap = in_use + RENDER_PROCESS_MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Linux
        pass


def _stop_render_pool() -> None:
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.stop()  # type: ignore[no-untyped-call]
        # Stopping terminates the processes; a join that still times out leaves them to the
        # operating system rather than hold up the exit.
        with contextlib.suppress(TimeoutError):
            pool.join(timeout=HARD_TIMEOUT_GRACE_SECONDS)


def _render_pool() -> pebble.ProcessPool:
    global _pool
    with _pool_lock:
        if _pool is None or not _pool.active:
            # Spawned, not forked: the API and the worker run threads (uvicorn's, Temporal's
            # core) that a fork would copy mid-flight.
            _pool = pebble.ProcessPool(
                max_workers=RENDER_PROCESSES,
                initializer=_cap_memory,
                context=multiprocessing.get_context("spawn"),
            )
        return _pool


# Left to the interpreter's teardown, `multiprocessing` reports the pool's semaphores as leaked.
atexit.register(_stop_render_pool)


_holders = 0


@contextlib.contextmanager
def render_pool_held() -> Iterator[None]:
    """Starts the render processes now (not at the first render) and stops them on leaving,
    unless another holder still needs them: the API holds them for its lifespan, the worker
    for its run, a test session for all its tests.

    Starting takes about a second when the program is the `campaign-engine` script (`spawn`
    imports the main module in every process it starts); stopping them here, not at exit,
    matters for the API: uvicorn ends it by re-raising SIGTERM, which skips `atexit`.
    """
    global _holders
    with _pool_lock:
        _holders += 1
    _render_pool().schedule(render, args=("", WORST_CASE_LEAD), kwargs={"limit": 0})
    try:
        yield
    finally:
        with _pool_lock:
            _holders -= 1
            last = _holders == 0
        if last:
            _stop_render_pool()


def render_slots() -> FairRenderQueue:
    """The running event loop's turns at the render pool (`activities.render_queue`):
    `RENDER_PROCESSES` renders at a time, the rest wait, each account group in its own queue,
    the group that has had least render time served first (one queue per loop: asyncio's
    futures are bound to one, and a process normally runs one loop, the API's or the
    worker's)."""
    return render_queue(RENDER_PROCESSES)


def admit_renders(account_group: str, count: int, limits: RenderQueueLimits) -> None:
    """Checks, before any of them is queued, that `count` renders of `account_group` may wait
    for a turn here; raises `RenderQueueFull` (with its `retry_after_seconds`) when not."""
    render_slots().admit(account_group, count, limits)


def _timed_render(
    template: str, lead: Lead, *, limit: int, seconds: float, unsubscribe_url: str
) -> tuple[str, float]:
    """`render`, in a render process, with the CPU seconds its thread spent on it (CPU, not
    wall-clock time: a campaign's render budget must not depend on how busy the machine is)."""
    started = time.thread_time()
    text = render(template, lead, limit=limit, seconds=seconds, unsubscribe_url=unsubscribe_url)
    return text, time.thread_time() - started


def _soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any) -> None:
    """`callback(*args)` on `loop` from any thread; nothing once the loop is closed (a render
    that ends after its caller's loop)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _followed(future: pebble.ProcessFuture[_T]) -> asyncio.Future[_T]:
    """An asyncio future with `future`'s outcome. Unlike `asyncio.wrap_future`, cancelling it
    leaves `future` alone: pebble kills the process of a running render that is cancelled."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[_T] = loop.create_future()

    def settle(done: pebble.ProcessFuture[_T]) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.cancel()
        elif (error := done.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    future.add_done_callback(lambda done: _soon(loop, settle, done))
    return waiter


def _ended(
    slots: FairRenderQueue, account_group: str, future: pebble.ProcessFuture[tuple[str, float]]
) -> None:
    """A render's end, on its caller's loop: its time is counted to its group (so the next turn
    is given knowing it), then its turn given back."""
    if not future.cancelled() and future.exception() is None:
        slots.record(account_group, future.result()[1])
    slots.release(account_group)


async def render_timed(
    template: str,
    lead: Lead,
    *,
    limit: int,
    seconds: float = DRAFT_SECONDS,
    grace_seconds: float = HARD_TIMEOUT_GRACE_SECONDS,
    unsubscribe_url: str = UNSUBSCRIBE_URL_MARKER,
    account_group: str = "",
) -> tuple[str, float]:
    """`render_async`, with the CPU seconds the render took in its process (see
    `_timed_render`); a render stopped at its deadline raises, so it has no time."""
    loop = asyncio.get_running_loop()
    slots = render_slots()
    await slots.acquire(account_group)
    try:
        future = _render_pool().schedule(
            _timed_render,
            args=(template, lead),
            kwargs={"limit": limit, "seconds": seconds, "unsubscribe_url": unsubscribe_url},
            timeout=seconds + grace_seconds,
        )
    except BaseException:
        slots.release(account_group)
        raise
    # The turn is the process's: it is given back when the render ends, not when this call does.
    future.add_done_callback(lambda done: _soon(loop, _ended, slots, account_group, done))
    try:
        # Cancelled, the render is left to end by its deadline: cancelling the pool's future
        # kills its process when the render has just started (pebble counts it started only
        # once the process reports it), and starting another takes seconds on a busy machine
        # — seconds every group waits. A render is handed over only when a process is free,
        # so it would not have waited in the pool anyway.
        text, spent = await _followed(future)
    except TimeoutError as error:
        raise TemplateBudgetExceeded(
            f"the template took longer than {seconds:g} s and was stopped"
        ) from error
    except pebble.ProcessExpired as error:
        raise TemplateRenderError(f"rendering stopped its process ({error})") from error
    return text, spent


async def render_async(
    template: str,
    lead: Lead,
    *,
    limit: int,
    seconds: float = DRAFT_SECONDS,
    grace_seconds: float = HARD_TIMEOUT_GRACE_SECONDS,
    unsubscribe_url: str = UNSUBSCRIBE_URL_MARKER,
    account_group: str = "",
) -> str:
    """`render` in the render pool: never on the caller's event loop or in its process.

    Waits first for a turn (`render_slots`, fair between account groups: `account_group` is
    the render's; "" for renders of no group), so that the pool never queues: `seconds` (and
    `grace_seconds`) count from when a process takes the render up, not from the call. It does
    not check the queue's bounds: callers that must refuse rather than wait call
    `admit_renders` first. A render still running `grace_seconds` after its deadline (compiling
    a template is not counted by the budget, only by this) is killed with its process and
    reported as over budget; the pool starts a new process. Raises `TemplateRenderError` only.

    Cancelled while it waits for a turn, the render is dropped; once handed to the pool, it
    ends by its deadline (killing it would cost a second or more to start a new process) and
    keeps its turn until then.
    """
    text, _ = await render_timed(
        template,
        lead,
        limit=limit,
        seconds=seconds,
        grace_seconds=grace_seconds,
        unsubscribe_url=unsubscribe_url,
        account_group=account_group,
    )
    return text


@dataclass(frozen=True)
class TemplateCheck:
    """One template to check: where it is (`steps.0.body`), its source and its output limit."""

    field: str
    template: str
    limit: int


class RenderBudgetExceeded(Exception):
    """A campaign's templates together took more than their render budget (`check_templates`):
    `spent_seconds` (CPU seconds counted until the checks stopped) over `budget_seconds`."""

    def __init__(self, spent_seconds: float, budget_seconds: float) -> None:
        super().__init__(
            f"the templates took more than {budget_seconds:g} s to render together "
            f"({spent_seconds:.2f} s when the check stopped)"
        )
        self.spent_seconds = spent_seconds
        self.budget_seconds = budget_seconds


async def check_templates(
    checks: Sequence[TemplateCheck],
    *,
    seconds: float = CHECK_SECONDS,
    budget_seconds: float = RENDER_BUDGET_SECONDS,
    account_group: str = "",
    limits: RenderQueueLimits | None = None,
) -> dict[str, str]:
    """Renders each template for `WORST_CASE_LEAD` (and `WORST_CASE_UNSUBSCRIBE_URL`) in the
    render pool, in parallel, as renders of `account_group` (fair share, `render_slots`).

    First admits them all (`admit_renders` with `limits`, default `RenderQueueLimits()`):
    raises `RenderQueueFull`, nothing queued, when they would not fit in the queue.

    Returns `{field: problem}` for those that do not render within budget, in the order given
    (empty when all do). Once one has failed, the checks not yet started are dropped: the answer
    is a refusal either way, and a campaign of a hundred slow templates costs one deadline.
    Each template has `seconds`; all of them together `budget_seconds` of CPU time in the render
    processes: once the renders done have spent more, the rest are dropped and
    `RenderBudgetExceeded` is raised (the renders running then finish by their own deadline,
    so the pool may spend up to `RENDER_PROCESSES` x `seconds` more).
    """
    admit_renders(account_group, len(checks), limits or RenderQueueLimits())
    tasks: dict[asyncio.Future[tuple[str, float]], str] = {
        asyncio.ensure_future(
            render_timed(
                check.template,
                WORST_CASE_LEAD,
                limit=check.limit,
                seconds=seconds,
                unsubscribe_url=WORST_CASE_UNSUBSCRIBE_URL,
                account_group=account_group,
            )
        ): check.field
        for check in checks
    }
    failures: dict[str, str] = {}
    spent = 0.0
    pending: set[asyncio.Future[tuple[str, float]]] = set(tasks)
    try:
        while pending and not failures and spent <= budget_seconds:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, TemplateRenderError):
                    failures[tasks[task]] = str(error)
                elif error is not None:
                    raise error
                else:
                    spent += task.result()[1]
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    if not failures and spent > budget_seconds:
        raise RenderBudgetExceeded(spent, budget_seconds)
    order = {check.field: index for index, check in enumerate(checks)}
    return dict(sorted(failures.items(), key=lambda failure: order[failure[0]]))


__all__ = [
    "MAX_BODY_CHARS",
    "MAX_SUBJECT_CHARS",
    "RENDER_BUDGET_SECONDS",
    "UNSUBSCRIBE_URL_MARKER",
    "WORST_CASE_LEAD",
    "WORST_CASE_UNSUBSCRIBE_URL",
    "RenderBudgetExceeded",
    "RenderQueueFull",
    "RenderQueueLimits",
    "TemplateBudgetExceeded",
    "TemplateCheck",
    "TemplateRenderError",
    "admit_renders",
    "check_templates",
    "lead_context",
    "render",
    "render_async",
    "render_pool_held",
    "render_slots",
    "render_timed",
]
