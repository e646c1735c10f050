#!/usr/bin/env python3
"""A deliberately slow consumer of results, for crates/its-node/tests/faults.rs.

Subscribes to its.results.* with a pending limit of --pending messages and handles one message
per --delay seconds, so NATS (the client library) must drop messages and report a slow
consumer. Prints "ready" once subscribed, then, on stdin EOF, one JSON line:
{"handled": N, "slow_consumer_errors": M, "queued": Q} (M: messages the client dropped,
one SlowConsumerError each; Q: still queued, never handled) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import nats
from nats.errors import SlowConsumerError


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--pending", type=int, default=4)
    p.add_argument("--delay", type=float, default=0.5)
    a = p.parse_args()

    slow = 0
    handled = 0

    async def on_error(e: Exception) -> None:
        nonlocal slow
        if isinstance(e, SlowConsumerError):
            slow += 1

    nc = await nats.connect(a.url, error_cb=on_error, allow_reconnect=False)

    async def on_msg(_msg) -> None:
        nonlocal handled
        handled += 1
        await asyncio.sleep(a.delay)

    sub = await nc.subscribe("its.results.*", cb=on_msg, pending_msgs_limit=a.pending)
    await nc.flush()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    queued = sub.pending_msgs
    print(json.dumps({"handled": handled, "slow_consumer_errors": slow, "queued": queued}), flush=True)
    await nc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
