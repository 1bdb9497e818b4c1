"""Image workers never outlive a bot killed without closing them (SIGKILL, the OOM killer)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

OWNER = Path(__file__).with_name("pool_owner.py")


def running(pid: int) -> bool:
    """True while `pid` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def poll(check: Callable[[], bool], seconds: float) -> None:
    """Until `check()` or `seconds` have passed: other processes' state gives nothing to wait on."""
    deadline = time.monotonic() + seconds
    while True:
        if check() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
async def test_workers_exit_when_their_owner_is_killed(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(OWNER), str(pids_file), stdout=asyncio.subprocess.DEVNULL
    )
    pids: list[int] = []
    try:
        await poll(pids_file.exists, 60)
        pids = [int(pid) for pid in pids_file.read_text().split()]
        assert len(pids) == 2
        assert all(running(pid) for pid in pids)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await poll(lambda: not any(running(pid) for pid in pids), 15)
        assert not [pid for pid in pids if running(pid)], "a worker outlived its owner"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in pids:  # never leave a worker behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
