"""Group commit: work that arrives while a statement of its group runs is done by the next
statement of that group, together.

Why: a statement costs Postgres and this process much more than the row it writes (planned,
run and committed, one round trip; bench/README.md, issue 17, seventh pass). Done together,
that is paid once for the items of a statement. An item waits for at most the statement before
its own, and only while one is running: alone, it goes at once. Groups never wait for each
other, so one client's statements hold back no other client's.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Item(Generic[T, R]):
    value: T
    answer: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # The caller's (its log fields, the span of its trace): a call runs in its first item's.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class GroupCommit(Generic[K, T, R]):
    """Runs `run(group, items)` for the items of a group, one call at a time per group: an item
    alone at once, in its caller's task; then, while any wait, a call for up to `max_items` of
    those that arrived meanwhile. `run` answers each item, in order, with its result or the
    exception to raise for it; an exception out of `run` is every item's."""

    def __init__(
        self,
        run: Callable[[K, list[T]], Coroutine[Any, Any, Sequence[R | BaseException]]],
        *,
        max_items: int,
    ) -> None:
        self._run = run
        self._max_items = max_items
        # Items waiting for their group's running call to end; a group is here for as long as
        # a task runs its calls.
        self._waiting: dict[K, list[_Item[T, R]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def do(self, group: K, value: T) -> R:
        waiting = self._waiting.get(group)
        if waiting is not None:
            item: _Item[T, R] = _Item(value)
            waiting.append(item)
            # The call goes on for the others when a caller stops waiting: its item may be
            # done, as a statement sent for one caller alone is.
            return await asyncio.shield(item.answer)
        # Nothing runs for the group: this caller's call, in its own task and context.
        self._waiting[group] = []
        try:
            (outcome,) = await self._run(group, [value])
        finally:
            if self._waiting[group]:
                # Not the caller's context: the calls it makes serve others (see _call).
                task = asyncio.create_task(self._drain(group), context=contextvars.Context())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                del self._waiting[group]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _drain(self, group: K) -> None:
        waiting = self._waiting[group]
        items: list[_Item[T, R]] = []
        try:
            while waiting:
                items = waiting[: self._max_items]
                del waiting[: self._max_items]
                try:
                    outcomes = await self._call(group, items)
                except Exception as exc:
                    outcomes = [exc] * len(items)
                for item, outcome in zip(items, outcomes, strict=True):
                    if item.answer.done():
                        continue
                    if isinstance(outcome, BaseException):
                        item.answer.set_exception(outcome)
                    else:
                        item.answer.set_result(outcome)
        finally:
            del self._waiting[group]
            # Unanswered only when cancelled: the process is stopping.
            for item in (*items, *waiting):
                item.answer.cancel()

    def _call(
        self, group: K, items: list[_Item[T, R]]
    ) -> asyncio.Task[Sequence[R | BaseException]]:
        """`run` in the first item's context: a call for one is traced and logged as the
        caller's own statement was; a call for several, as the first one's."""
        values = [item.value for item in items]
        return asyncio.create_task(self._run(group, values), context=items[0].context.copy())

    async def aclose(self) -> None:
        """Stop: items still waiting are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def each(calls: Sequence[Coroutine[Any, Any, R]]) -> list[R | BaseException]:
    """Every call's outcome, run at once: for a `run` that does its items one by one. One call
    runs in the calling task, not a task of its own, and its exception is raised, which is the
    same to GroupCommit as returned: its one item's."""
    if len(calls) == 1:
        return [await calls[0]]
    return await asyncio.gather(*calls, return_exceptions=True)
