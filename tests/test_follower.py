"""The change-feed follower starts and stops cleanly, whatever it is doing when asked to stop."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from cedarkey.server.cluster import Follower
from cedarkey.server.config import Settings
from cedarkey.server.main import create_app


def test_a_follower_stops_at_once_at_any_moment(tmp_path: Path) -> None:
    """Stopped while it waits, wakes up, or reads: each stop ends within a second. (It used to cancel its
    task, and Python 3.11's wait_for can swallow a cancellation that lands with its timeout: the loop ran
    on and the server's shutdown hung.)"""
    app, _ = create_app(Settings(data_dir=tmp_path / "data"))
    service = app.state.service
    rng = random.Random(7)

    async def cycles() -> None:
        for _ in range(300):
            follower = Follower(service, 0, poll_interval=0.0005)
            follower.start()
            await asyncio.sleep(rng.choice([0, 0.0002, 0.0005, 0.001, 0.003]))
            await asyncio.wait_for(follower.stop(), 1.0)

    try:
        asyncio.run(cycles())
    finally:
        service.store.close()
