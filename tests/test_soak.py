"""The soak (bench/soak.py) in the suite: a short one always, the long one under `-m slow`."""

from __future__ import annotations

import pytest

from bench.soak import report, soak


async def test_soak_short_loses_and_duplicates_nothing() -> None:
    tally = await soak(duration=8, enrollers=2, approvers=4)

    assert tally.problems == [], report(tally)
    assert tally.approved, report(tally)
    assert tally.statuses["enrol/duplicate 409 LEAD_ALREADY_ENROLLED"] > 0, report(tally)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_soak_long_loses_and_duplicates_nothing() -> None:
    tally = await soak(duration=60)

    assert tally.problems == [], report(tally)
