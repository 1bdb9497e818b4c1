"""Courtesy edits share an allowance: in a burst, previews are skipped rather than sent all at once."""

from __future__ import annotations

from bot.api.types import PartialImage
from cogs.allowance import EditAllowance
from cogs.render import PreviewUpdater


def partial(index: int = 0) -> PartialImage:
    return PartialImage(index=index, sequence=0, data=b"\x89PNG preview", mime="image/png")


async def test_previews_of_many_replies_share_one_allowance() -> None:
    """Three replies, an allowance of two at once: the third reply's first preview is skipped, not sent."""
    now = [10.0]
    shared = EditAllowance(2, lambda: now[0])
    shown: list[int] = []

    def updater(reply: int) -> PreviewUpdater:
        async def show(_partial: PartialImage) -> None:
            shown.append(reply)

        return PreviewUpdater(show, interval=2.0, clock=lambda: now[0], shared=shared)

    replies = [updater(i) for i in range(3)]
    for reply in replies:
        await reply(partial())
        await reply.finish()
    assert shown == [0, 1]
    now[0] += 0.5  # one more edit in the bucket; reply 2 has shown nothing yet, so it may
    await replies[2](partial())
    await replies[2].finish()
    assert shown == [0, 1, 2]
    assert [reply.shown for reply in replies] == [1, 1, 1]


async def test_without_a_shared_allowance_only_the_interval_limits() -> None:
    now = [0.0]
    shown: list[PartialImage] = []

    async def show(item: PartialImage) -> None:
        shown.append(item)

    updater = PreviewUpdater(show, interval=2.0, clock=lambda: now[0])
    await updater(partial(0))
    await updater.finish()
    await updater(partial(1))
    await updater.finish()
    now[0] += 2.0
    await updater(partial(2))
    await updater.finish()
    assert [item.index for item in shown] == [0, 2]
