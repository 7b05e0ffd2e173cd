"""Turns at the render processes, shared fairly between account groups (issue 24, item 3).

A process (the API's, a worker's) has `RENDER_PROCESSES` render processes; every render waits
for one of those turns here before it is handed to the pool (`activities.templates`). First come
first served let two groups' 25-step PUTs (100 templates) hold a third group's one-step PUT for
14 s. Here each account group has its own FIFO queue, and a freed turn goes to the group that
has received least render time since it became busy (`FairRenderQueue`), so a group's single
render waits for the renders already running — about one render slot — however much other
groups have queued.

The queue is bounded (`RenderQueueLimits`): renders that would wait beyond a group's share or
the process's total are refused at once with `RenderQueueFull`, which says how long to wait
(`retry_after_seconds`, from the renders ahead and their recent average time); the API answers
it 503 with `Retry-After`, a draft raises a retryable activity error. Nothing waits for a
neighbour's templates longer than the queue it may hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import weakref
from collections import deque
from dataclasses import dataclass, field

DEFAULT_MAX_WAITING = 1000
"""Renders that may wait in one process, all account groups together."""
DEFAULT_MAX_WAITING_PER_GROUP = 200
"""Renders one account group may have waiting in one process: two campaigns of `MAX_STEPS` (50)
steps checked at once (subject and body each), or 100 drafts (the SDK's default activity slots)
of one group in a worker."""
MAX_RETRY_AFTER_SECONDS = 60
"""The longest `Retry-After` given: past a minute the estimate says little."""


@dataclass(frozen=True)
class RenderQueueLimits:
    """How many renders may wait for a turn in one process: `max_waiting` in all,
    `max_waiting_per_group` of one account group. Renders running do not count."""

    max_waiting: int = DEFAULT_MAX_WAITING
    max_waiting_per_group: int = DEFAULT_MAX_WAITING_PER_GROUP


class RenderQueueFull(Exception):
    """The renders asked for would not fit in the queue (`RenderQueueLimits`): nothing of the
    request was queued. `retry_after_seconds` (1 to `MAX_RETRY_AFTER_SECONDS`) estimates when
    its share has drained; `scope` says whose share is full: `"account group"` or `"process"`."""

    def __init__(self, message: str, *, retry_after_seconds: int, scope: str) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.scope = scope


@dataclass
class _Group:
    """An account group with renders waiting or running here."""

    name: str
    arrival: int
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)
    running: int = 0
    granted: int = 0
    seconds: float = 0.0


class FairRenderQueue:
    """`slots` turns at the render processes, shared between account groups.

    A freed turn goes to the waiting group that has received least since it became busy: the
    fewest render seconds (CPU, as `record` reports them), then the fewest turns, then the
    earliest arrival. A group's single render — or a one-step PUT's two — goes ahead of the
    renders of a group that has had the processes for seconds, so it waits for at most the
    renders running when it came (about one render slot); groups with as much queued share the
    processes in turn. A group's account starts afresh once nothing of it waits or runs.

    Bound to one event loop (its futures are). Use `admit` for a request's renders as a whole,
    then `acquire`/`release` around each render, `record` each render's time.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._slots = slots
        self._groups: dict[str, _Group] = {}
        self._arrivals = itertools.count()
        self._waiting = 0
        self._mean_seconds = 0.05

    @property
    def waiting(self) -> int:
        """Renders waiting for a turn, all groups."""
        return self._waiting

    def waiting_of(self, group: str) -> int:
        """Renders of `group` waiting for a turn."""
        state = self._groups.get(group)
        return len(state.waiting) if state else 0

    def admit(self, group: str, count: int, limits: RenderQueueLimits) -> None:
        """Checks that `count` more renders of `group` may wait; raises `RenderQueueFull`
        (nothing queued) when the group's share or the process's total would be exceeded.

        Renders that a free turn would take at once do not wait, so they do not count."""
        would_wait = max(0, count - self._free) if not self._waiting else count
        if would_wait == 0:
            return
        if self.waiting_of(group) + would_wait > limits.max_waiting_per_group:
            raise RenderQueueFull(
                f"this account group already has {self.waiting_of(group)} templates waiting "
                f"to render here, and may have at most {limits.max_waiting_per_group}",
                retry_after_seconds=self._retry_after(self.waiting_of(group)),
                scope="account group",
            )
        if self._waiting + would_wait > limits.max_waiting:
            raise RenderQueueFull(
                f"{self._waiting} templates are waiting to render here, at most "
                f"{limits.max_waiting} may",
                retry_after_seconds=self._retry_after(self._waiting),
                scope="process",
            )

    async def acquire(self, group: str) -> None:
        """Waits for a turn for one render of `group` (see the class's docstring for the
        order). Cancelled while waiting, it leaves the queue; cancelled once granted, it passes
        the turn on. Each turn acquired is given back with `release(group)`."""
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(group, arrival=next(self._arrivals))
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self._grant(state)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiting.append(turn)
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if not turn.cancelled():
                self.release(group)  # granted just as it was cancelled: the turn goes on
                raise
            # Still queued, unless a `release` already dropped it as cancelled.
            with contextlib.suppress(ValueError):
                state.waiting.remove(turn)
                self._waiting -= 1
            self._forget_if_idle(group)
            raise

    def release(self, group: str) -> None:
        """Gives back a turn of `group`: to the next group's first waiting render, or to the
        free ones."""
        state = self._groups.get(group)
        if state is not None:
            state.running -= 1
            self._forget_if_idle(group)
        while True:
            waiting = [each for each in self._groups.values() if each.waiting]
            if not waiting:
                self._free = min(self._slots, self._free + 1)
                return
            chosen = min(waiting, key=lambda each: (each.seconds, each.granted, each.arrival))
            turn = chosen.waiting.popleft()
            self._waiting -= 1
            if turn.done():
                # Cancelled, its task not yet resumed to leave the queue: the next one.
                self._forget_if_idle(chosen.name)
                continue
            self._grant(chosen)
            turn.set_result(None)
            return

    def record(self, group: str, seconds: float) -> None:
        """Counts one render's time (seconds, in its process) to `group` and into the running
        average the `Retry-After` estimate uses."""
        state = self._groups.get(group)
        if state is not None:
            state.seconds += seconds
        self._mean_seconds += 0.2 * (seconds - self._mean_seconds)

    def _grant(self, state: _Group) -> None:
        state.running += 1
        state.granted += 1

    def _retry_after(self, ahead: int) -> int:
        estimate = math.ceil((ahead + 1) * self._mean_seconds / self._slots)
        return max(1, min(MAX_RETRY_AFTER_SECONDS, estimate))

    def _forget_if_idle(self, group: str) -> None:
        state = self._groups.get(group)
        if state is not None and not state.waiting and state.running <= 0:
            del self._groups[group]


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FairRenderQueue] = (
    weakref.WeakKeyDictionary()
)


def render_queue(slots: int) -> FairRenderQueue:
    """The running event loop's render queue with `slots` turns (one per loop: its futures are
    bound to it, and a process normally runs one loop, the API's or the worker's)."""
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = FairRenderQueue(slots)
    return queue


__all__ = [
    "DEFAULT_MAX_WAITING",
    "DEFAULT_MAX_WAITING_PER_GROUP",
    "FairRenderQueue",
    "RenderQueueFull",
    "RenderQueueLimits",
    "render_queue",
]
