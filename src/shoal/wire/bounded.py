"""msgpack decoding whose work is bounded by what a legal message can hold, not by its bytes.

A byte of msgpack can stand for an empty array, which costs Python some 64 bytes and the
garbage collector a container to trace: a 1.6 MB frame of them took 5 s and 117 MB to decode,
an 8 MiB one 9 s and 570 MB, long enough to depose a leader. So every decoder of untrusted
bytes says how much structure it accepts, and two tools enforce it:

- `check_shape`: a pre-scan that reads only headers (it jumps over str and bin payloads), so a
  value nested too deeply or holding too many elements is refused before anything is built.
  Its cost is one Python step per element, so it suits envelopes of a few elements.
- `unpackb`: msgpack's own decoder, with arrays and maps longer than `max_len` refused from
  their header (before the list is allocated), and the containers and the values in them
  counted as each is built, stopping the decode once either passes its bound. For schemas
  whose legal values hold many elements (log entries, txn ops), where a Python step per
  element would cost as much as the decode; their decoders bound depth by their schema
  (msgpack itself stops at 1023 levels, in C).
"""

from __future__ import annotations

from typing import Any

import msgpack


class TooComplex(ValueError):
    """A msgpack value holds more elements or nests deeper than its decoder accepts."""


_INT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
              0xCA: 4, 0xCB: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4,  # bin, str: skip the payload
          0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext: its type byte follows the length
_CONTAINER = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # width, values per item


def check_shape(data: bytes, max_elements: int, max_depth: int) -> None:
    """Raise TooComplex if the first msgpack value in `data` has more than `max_elements`
    values in all (itself and every nested one) or nests containers deeper than `max_depth`.
    Truncated input is left for the decoder to report."""
    pos, end, count = 0, len(data), 0
    todo = 1  # values still to read in the innermost open container
    stack: list[int] = []  # the `todo` of each enclosing container
    while True:
        while not todo:
            if not stack:
                return
            todo = stack.pop()
        if pos >= end:
            return
        b = data[pos]
        todo -= 1
        count += 1
        if count > max_elements:
            raise TooComplex(f"more than {max_elements} elements")
        pos += 1
        if b <= 0x7F or b >= 0xE0 or 0xC0 <= b <= 0xC3:  # fixint, nil, false, true
            continue
        if b <= 0x9F:  # fixmap, fixarray
            n = (b & 0x0F) * (2 if b <= 0x8F else 1)
        elif b <= 0xBF:  # fixstr
            pos += b & 0x1F
            continue
        elif b in _SIZED:
            w = _SIZED[b]
            pos += w + int.from_bytes(data[pos:pos + w], "big") + (b >= 0xC7 and b <= 0xC9)
            continue
        elif b in _CONTAINER:
            w, per = _CONTAINER[b]
            n = int.from_bytes(data[pos:pos + w], "big") * per
            pos += w
        else:
            pos += _INT_WIDTH.get(b, 0)
            continue
        if n:
            if len(stack) >= max_depth:
                raise TooComplex(f"nested deeper than {max_depth}")
            stack.append(todo)
            todo = n


def unpackb(data: bytes, max_values: int, max_containers: int, max_len: int,
            **options: Any) -> Any:
    """msgpack.unpackb(data, **options), raising TooComplex for an array or map of more than
    `max_len` items (from its header, before it is allocated), and as soon as the containers
    built so far number more than `max_containers` or hold more than `max_values` values
    (each container counts as one value too). Other failures are msgpack's own. A container
    costs a Python call here, which is why they have a bound of their own."""
    values, containers = max_values, max_containers

    def spend(value: Any, n: int) -> Any:
        nonlocal values, containers
        values -= n
        containers -= 1
        if values < 0 or containers < 0:
            raise TooComplex(f"more than {max_values} values or {max_containers} containers")
        return value

    try:
        return msgpack.unpackb(
            data, max_array_len=max_len, max_map_len=max_len,
            list_hook=lambda v: spend(v, len(v) + 1),
            object_hook=lambda v: spend(v, 2 * len(v) + 1), **options)
    except ValueError as exc:
        if "exceeds max_" in str(exc):  # msgpack's refusal of an over-long header
            raise TooComplex(str(exc)) from None
        raise
