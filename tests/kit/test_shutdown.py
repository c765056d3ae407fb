"""The shutdown deadline ends a process whose graceful stop hangs, and says where it hung."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HANGING_STOP = textwrap.dedent(
    """
    import asyncio, logging
    from roomstream_kit.shutdown import arm_shutdown_deadline

    async def stuck_cleanup():
        await asyncio.Event().wait()  # a close handshake that never completes

    async def main():
        logging.basicConfig(level=logging.INFO)
        arm_shutdown_deadline(1.0)
        await stuck_cleanup()

    asyncio.run(main())
    """
)

CLEAN_STOP = textwrap.dedent(
    """
    import asyncio
    from roomstream_kit.shutdown import arm_shutdown_deadline

    async def main():
        arm_shutdown_deadline(30.0)
        await asyncio.sleep(0.1)

    asyncio.run(main())
    """
)


def test_a_hanging_stop_is_ended_with_exit_1_and_the_stuck_task_is_logged() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", HANGING_STOP], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "shutdown did not finish" in proc.stderr
    assert "stuck_cleanup" in proc.stderr


def test_a_clean_stop_is_not_affected() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CLEAN_STOP], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


async def test_cancel_and_wait_returns_by_its_deadline_even_if_a_task_ignores_cancel() -> None:
    import asyncio

    from roomstream_kit.shutdown import cancel_and_wait

    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # a library call that swallows its cancellation

    async def polite() -> None:
        await asyncio.sleep(10)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(polite())]
    await asyncio.sleep(0)
    assert await cancel_and_wait(tasks, 0.5, "test tasks") is False
    assert tasks[1].cancelled() and not tasks[0].done()
    release.set()
    tasks[0].cancel()
    await asyncio.wait(tasks, timeout=5)
    assert tasks[0].done()
    assert await cancel_and_wait([asyncio.create_task(polite())], 5.0) is True
