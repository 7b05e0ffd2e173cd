"""Turns at the render processes, shared fairly between account groups (issue 24, item 3).

A process (the API's, a worker's) has `RENDER_PROCESSES` render processes; every render waits
for one of those turns here before it is handed to the pool (`activities.templates`). First come
first served let one group's two 25-step PUTs (100 templates) hold a neighbour's one-step PUT
for 14 s. Here each account group has its own FIFO queue, and a freed turn goes to the group
served least recently (a group with nothing waiting before has never been served, so it goes
first): round robin between the groups that wait, so a group's single render waits for at most
one render already running — about one render slot — however much another group has queued.

The queue is bounded (`RenderQueueLimits`): renders that would wait beyond a group's share or
the process's total are refused at once with `RenderQueueFull`, which says how long to wait
(`retry_after_seconds`, from the renders ahead and their recent average time); the API answers
it 503 with `Retry-After`, a draft raises a retryable activity error. Nothing waits for a
neighbour's templates longer than the queue it may hold.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import weakref
from collections import deque
from dataclasses import dataclass

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


class FairRenderQueue:
    """`slots` turns at the render processes, granted round robin between account groups.

    Bound to one event loop (its futures are). Use `admit` for a request's renders as a whole,
    then `acquire`/`release` around each render; `record` feeds the average render time the
    `Retry-After` estimate uses.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._slots = slots
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        # Grant number of each waiting group's last turn; absent: not served while it waited.
        self._last_turn: dict[str, int] = {}
        self._arrival: dict[str, int] = {}
        self._turns = itertools.count(1)
        self._arrivals = itertools.count()
        self._mean_seconds = 0.05

    @property
    def waiting(self) -> int:
        """Renders waiting for a turn, all groups."""
        return sum(len(queue) for queue in self._waiting.values())

    def waiting_of(self, group: str) -> int:
        """Renders of `group` waiting for a turn."""
        return len(self._waiting.get(group, ()))

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
        if self.waiting + would_wait > limits.max_waiting:
            raise RenderQueueFull(
                f"{self.waiting} templates are waiting to render here, at most "
                f"{limits.max_waiting} may",
                retry_after_seconds=self._retry_after(self.waiting),
                scope="process",
            )

    async def acquire(self, group: str) -> None:
        """Waits for a turn for one render of `group` (see the module's docstring for the
        order). Cancelled while waiting, it leaves the queue; cancelled once granted, it passes
        the turn on."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        queue = self._waiting.get(group)
        if queue is None:
            queue = self._waiting[group] = deque()
            self._arrival[group] = next(self._arrivals)
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # granted just as it was cancelled: the turn goes on
            else:
                self._forget(group, turn)
            raise

    def release(self) -> None:
        """Gives a turn back: to the next group's first waiting render, or to the free ones."""
        while self._waiting:
            group = min(
                self._waiting,
                key=lambda name: (self._last_turn.get(name, 0), self._arrival[name]),
            )
            queue = self._waiting[group]
            turn = queue.popleft()
            if not queue:
                self._drop(group)
            else:
                self._last_turn[group] = next(self._turns)
            if not turn.done():
                turn.set_result(None)
                return
        self._free = min(self._slots, self._free + 1)

    def record(self, seconds: float) -> None:
        """Takes one render's time (seconds, in its process) into the running average."""
        self._mean_seconds += 0.2 * (seconds - self._mean_seconds)

    def _retry_after(self, ahead: int) -> int:
        estimate = math.ceil((ahead + 1) * self._mean_seconds / self._slots)
        return max(1, min(MAX_RETRY_AFTER_SECONDS, estimate))

    def _forget(self, group: str, turn: asyncio.Future[None]) -> None:
        queue = self._waiting.get(group)
        if queue is None:
            return
        try:
            queue.remove(turn)
        except ValueError:
            return
        if not queue:
            self._drop(group)

    def _drop(self, group: str) -> None:
        # A group with nothing waiting starts afresh: its next render is served first.
        del self._waiting[group]
        self._last_turn.pop(group, None)
        self._arrival.pop(group, None)


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
