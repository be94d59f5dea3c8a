"""Loopback throughput of shoal.net, next to the floor it cannot beat.

    python -m shoal.net.bench [--messages N] [--entry-bytes B] [--loop asyncio|uvloop]
    python -m shoal.net.bench --codec [--messages N] [--entry-bytes B]
    python -m shoal.net.bench --codec-passes raft:0 --passes 2 --messages N   (under callgrind)

"shoal.net": node 1 sends N AppendEntries (one entry of B bytes each, group 0) to node 2
through two Transports; the clock stops when node 2 has decoded and delivered the last one.
The sender keeps at most `window` messages unacknowledged, as Raft's in-flight limit would.
"floor": the same frames, pre-encoded, written by a bare asyncio stream and only split into
frames on the other side: no codec, no validation, no queues. Their ratio is our overhead.

--codec: no sockets, one core: the per-message CPU cost of what the two ends do to a message
(encode, frame, split frames, decode), for each engine's codec, with and without the group
envelope (protocol 1 framed the codec's bytes alone). Repeats interleave; the best is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from shoal.consensus.messages import Entry, Message, MsgType
from shoal.consensus.paxos import Accept

from .codec import Codec, encode_message, get_codec
from .frames import FrameDecoder, frame, message_frame, split_group
from .paxos_codec import PAXOS
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

    def on_message(_group: int, _msg: object) -> None:
        nonlocal count
        count += 1
        progress.set()

    a = Transport(1, ("127.0.0.1", 0), {}, "bench", lambda _g, _m: None)
    b = Transport(2, ("127.0.0.1", 0), {}, "bench", on_message)
    await a.start()
    await b.start()
    a.set_peers({2: b.address})
    b.set_peers({1: a.address})  # b accepts only its peers
    msgs = [_message(i, entry_bytes) for i in range(n)]
    start = time.perf_counter()
    await _paced(n, lambda i: a.send(0, msgs[i]), lambda: count, progress)
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


def _codec_round_trips(codec: Codec, msgs: list[Any], group: int | None) -> float:
    """CPU seconds to encode, frame, split and decode every message once, as the two ends do.
    CPU time, not wall time, so other processes on the machine disturb it less."""
    encode, decode, decoder = codec.encode, codec.decode, FrameDecoder()
    start = time.process_time()
    if group is None:  # protocol 1: the codec's bytes alone
        for m in msgs:
            for payload in decoder.feed(frame(encode(m))):
                decode(payload)
    else:
        for m in msgs:
            for payload in decoder.feed(message_frame(group, encode(m))):
                g, body = split_group(payload)
                decode(body)
    return time.process_time() - start


def _best_us(fn: Callable[[], object], number: int, repeats: int) -> float:
    """The best of `repeats` CPU timings of `number` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, time.process_time() - start)
    return best / number * 1e6


def _codec_case(name: str, n: int, entry_bytes: int) -> tuple[Codec, list[Any]]:
    """n messages of the engine's most common kind: Raft's append, Paxos's Accept."""
    if name == "raft":
        return get_codec("raft"), [_message(i, entry_bytes) for i in range(n)]
    entry = (Entry(3, 1, data=b"x" * entry_bytes),)
    return PAXOS, [Accept(1, 2, 65537, entry, i, i) for i in range(n)]


def codec_passes(spec: str, n: int, entry_bytes: int, passes: int) -> None:
    """`passes` round trips of one variant, silently: for counting instructions, which a busy
    machine cannot blur, e.g. under `valgrind --tool=callgrind`. `spec` is CODEC:GROUP, with
    GROUP an integer or `none` for protocol 1's payload. Count passes=2 and passes=0 and
    divide the difference by 2n."""
    name, _, group = spec.partition(":")
    codec, msgs = _codec_case(name, n, entry_bytes)
    for _ in range(passes):
        _codec_round_trips(codec, msgs, None if group == "none" else int(group))


def bench_codec(n: int, entry_bytes: int, repeats: int = 15) -> None:
    """Whole round trips, v1 beside v2; then the envelope's own steps timed alone, which a
    busy machine blurs less than the difference of two round trips."""
    cases = [_codec_case(name, n, entry_bytes) for name in ("raft", "paxos")]
    variants: list[tuple[str, int | None]] = [
        ("message only (v1)", None), ("group 0 (v2)", 0), ("group 70000 (v2)", 70_000),
    ]
    for codec, msgs in cases:
        best = {name: float("inf") for name, _ in variants}
        for _ in range(repeats):
            for name, group in variants:
                best[name] = min(best[name], _codec_round_trips(codec, msgs, group))
        base = best[variants[0][0]]
        for name, _ in variants:
            us = best[name] / n * 1e6
            print(f"{codec.name:6} {name:18} {us:7.2f} us/msg  {best[name] / base - 1:+6.1%}")
        payload = codec.encode(msgs[0])
        framing = _best_us(partial(frame, payload), 20_000, repeats)
        for group in (0, 70_000):
            body = message_frame(group, payload)[4:]
            added = _best_us(partial(message_frame, group, payload), 20_000, repeats)
            added += _best_us(partial(split_group, body), 20_000, repeats) - framing
            print(f"{codec.name:6} envelope of group {group:<6} adds {added:5.2f} us/msg, "
                  f"{added / (base / n * 1e6):5.1%} of the v1 round trip")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--entry-bytes", type=int, default=100)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    p.add_argument("--codec", action="store_true", help="per-message codec cost, no sockets")
    p.add_argument("--codec-passes", metavar="CODEC:GROUP",
                   help="run --passes round trips of one variant, print nothing (callgrind)")
    p.add_argument("--passes", type=int, default=1)
    args = p.parse_args()
    if args.codec_passes:
        codec_passes(args.codec_passes, args.messages, args.entry_bytes, args.passes)
        return
    if args.codec:
        bench_codec(args.messages, args.entry_bytes)
        return
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
