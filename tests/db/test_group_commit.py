"""The group commit's own rules, with a stand-in for the statement: who runs a call, which
items it takes, and what each caller gets back (its uses run real statements:
tests/jobs/test_intake_together.py, tests/jobs/test_transitions_together.py)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from app.db.group_commit import GroupCommit

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


class Statements:
    """Records each call (its group, its items, the context it ran in); each waits for `go`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int], str]] = []
        self.go = asyncio.Event()
        self.go.set()

    async def run(self, group: str, items: list[int]) -> Sequence[int | BaseException]:
        self.calls.append((group, items, CALLER.get()))
        await self.go.wait()
        return [ValueError(item) if item < 0 else item * 10 for item in items]


async def _do(commit: GroupCommit[str, int, int], group: str, item: int) -> int:
    CALLER.set(f"caller {item}")
    return await commit.do(group, item)


async def test_the_first_goes_alone_and_those_that_come_meanwhile_go_together() -> None:
    statements = Statements()
    commit = GroupCommit(statements.run, max_items=3)
    statements.go.clear()
    first = asyncio.ensure_future(_do(commit, "a", 1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(_do(commit, "a", n)) for n in range(2, 7)]
    await asyncio.sleep(0)
    statements.go.set()

    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50, 60]
    # At most three at a time; each call in its first item's context.
    assert statements.calls == [
        ("a", [1], "caller 1"),
        ("a", [2, 3, 4], "caller 2"),
        ("a", [5, 6], "caller 5"),
    ]
    # Nothing left behind: the next item goes alone again.
    assert await _do(commit, "a", 7) == 70
    assert statements.calls[-1] == ("a", [7], "caller 7")


async def test_groups_do_not_wait_for_each_other() -> None:
    statements = Statements()
    commit = GroupCommit(statements.run, max_items=10)
    statements.go.clear()
    held = asyncio.ensure_future(_do(commit, "a", 1))
    await asyncio.sleep(0)
    other = asyncio.ensure_future(_do(commit, "b", 2))
    await asyncio.sleep(0)
    assert [call[:2] for call in statements.calls] == [("a", [1]), ("b", [2])]
    statements.go.set()
    assert await asyncio.gather(held, other) == [10, 20]


async def test_each_caller_gets_its_own_exception_and_a_failed_call_is_everyones() -> None:
    statements = Statements()
    commit = GroupCommit(statements.run, max_items=10)
    statements.go.clear()
    calls = [asyncio.ensure_future(_do(commit, "a", n)) for n in (1, 2, -3, 4)]
    await asyncio.sleep(0)
    statements.go.set()
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert answers[:2] == [10, 20]
    assert isinstance(answers[2], ValueError)
    assert answers[3] == 40

    async def broken(group: str, items: list[int]) -> Sequence[int | BaseException]:
        await asyncio.sleep(0)
        raise RuntimeError("the database went away")

    failing: GroupCommit[str, int, int] = GroupCommit(broken, max_items=10)
    answers = await asyncio.gather(
        *(_do(failing, "a", n) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(answer, RuntimeError) for answer in answers)


async def test_a_caller_that_stops_waiting_leaves_the_call_to_the_others() -> None:
    statements = Statements()
    commit = GroupCommit(statements.run, max_items=10)
    statements.go.clear()
    # The first caller runs the call itself: cancelled, its call ends, and the items that came
    # meanwhile still get theirs.
    first = asyncio.ensure_future(_do(commit, "a", 1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(_do(commit, "a", n)) for n in (2, 3)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    statements.go.set()
    assert await asyncio.gather(*waiting) == [20, 30]
    assert [items for _, items, _ in statements.calls] == [[1], [2, 3]]

    # One that waits for a call: the call goes on, for it too (its answer is dropped).
    statements.go.clear()
    first = asyncio.ensure_future(_do(commit, "a", 4))
    await asyncio.sleep(0)
    leaving, staying = (asyncio.ensure_future(_do(commit, "a", n)) for n in (5, 6))
    await asyncio.sleep(0)
    leaving.cancel()
    statements.go.set()
    assert await asyncio.gather(first, staying) == [40, 60]
    assert statements.calls[-1][1] == [5, 6]


async def test_closing_cancels_what_still_waits() -> None:
    statements = Statements()
    commit = GroupCommit(statements.run, max_items=10)
    statements.go.clear()
    first = asyncio.ensure_future(_do(commit, "a", 1))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(_do(commit, "a", 2))
    await asyncio.sleep(0)
    first.cancel()  # hands the waiting item to a task of the group's own
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.sleep(0)
    await commit.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
