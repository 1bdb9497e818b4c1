"""Starts the image workers, writes their process ids to the file given and waits to be killed.

    python tests/pool_owner.py PIDS_FILE

For tests/test_pool_owner.py. The ids go to a file, not stdout: workers inherit stdout, and a test reading
a pipe that outliving workers keep open would hang instead of failing.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.imaging.pool import ImageWorkers


async def main() -> None:
    workers = ImageWorkers(max_workers=2)
    await workers.start()
    # (`_processes` is the executor's private map of its workers; this helper is the test's.)
    pids = sorted(workers._pool()._processes)
    target = Path(sys.argv[1])
    target.with_suffix(".tmp").write_text(" ".join(str(pid) for pid in pids))
    target.with_suffix(".tmp").replace(target)
    await asyncio.sleep(120)


if __name__ == "__main__":
    asyncio.run(main())
