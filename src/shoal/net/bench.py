"""Loopback throughput of shoal.net, next to the floor it cannot beat.

    python -m shoal.net.bench [--messages N] [--entry-bytes B] [--loop asyncio|uvloop]

"shoal.net": node 1 sends N AppendEntries (one entry of B bytes each) to node 2 through two
Transports; the clock stops when node 2 has decoded and delivered the last one. The sender
keeps at most `window` messages unacknowledged, as Raft's in-flight limit would.
"floor": the same frames, pre-encoded, written by a bare asyncio stream and only split into
frames on the other side: no codec, no validation, no queues. Their ratio is our overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from shoal.consensus.messages import Entry, Message, MsgType

from .codec import encode_message
from .frames import FrameDecoder, frame
from .transport import Transport

WINDOW = 2048


def _message(i: int, entry_bytes: int) -> Message:
    return Message(MsgType.APP, 1, 2, term=3, log_term=3, index=i, commit=i,
                   entries=(Entry(3, i + 1, data=b"x" * entry_bytes),))


async def _paced(n: int, send: Callable[[int], None], received: Callable[[], int],
                 progress: asyncio.Event, flush: Callable[[], None] = lambda: None) -> None:
    """Send n messages, never more than WINDOW ahead of the receiver; wait for the last."""
    sent = 0
    while received() < n:
        while sent < n and sent - received() < WINDOW:
            send(sent)
            sent += 1
        flush()
        progress.clear()
        await progress.wait()


async def bench_transport(n: int, entry_bytes: int) -> float:
    count = 0
    progress = asyncio.Event()

    def on_message(_: object) -> None:
        nonlocal count
        count += 1
        progress.set()

    a = Transport(1, ("127.0.0.1", 0), {}, "bench", lambda _: None)
    b = Transport(2, ("127.0.0.1", 0), {}, "bench", on_message)
    await a.start()
    await b.start()
    a.add_peer(2, b.address)
    b.add_peer(1, a.address)  # b accepts only its peers
    msgs = [_message(i, entry_bytes) for i in range(n)]
    start = time.perf_counter()
    await _paced(n, lambda i: a.send(msgs[i]), lambda: count, progress)
    elapsed = time.perf_counter() - start
    assert a.stats().peers[2].dropped_frames == 0
    await a.stop()
    await b.stop()
    return n / elapsed


async def bench_floor(n: int, entry_bytes: int) -> float:
    count = 0
    progress, finished = asyncio.Event(), asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        decoder = FrameDecoder()
        while data := await reader.read(256 * 1024):
            count += len(decoder.feed(data))
            progress.set()
        writer.close()
        finished.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    frames = [frame(encode_message(_message(i, entry_bytes))) for i in range(n)]
    pending: list[bytes] = []

    def flush() -> None:
        writer.writelines(pending)
        pending.clear()

    start = time.perf_counter()
    await _paced(n, lambda i: pending.append(frames[i]), lambda: count, progress, flush)
    elapsed = time.perf_counter() - start
    writer.close()
    await finished.wait()
    server.close()
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--entry-bytes", type=int, default=100)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = p.parse_args()
    factory = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    for name, bench in (("shoal.net", bench_transport), ("floor", bench_floor)):
        with asyncio.Runner(loop_factory=factory) as runner:
            rate = runner.run(bench(args.messages, args.entry_bytes))
        print(f"{args.loop:8} {name:10} {rate:12,.0f} msg/s")
        if name == "shoal.net":
            ours = rate
    print(f"ratio shoal.net / floor: {ours / rate:.2f}")


if __name__ == "__main__":
    main()
