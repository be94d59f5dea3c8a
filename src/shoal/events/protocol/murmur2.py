"""murmur2, bit for bit as Kafka's default partitioner computes it.

A keyed record's partition is `toPositive(murmur2(key)) % numPartitions` in the Java client
(BuiltInPartitioner.partitionForKey), and librdkafka's `murmur2_random` partitioner and the
Python clients copy it so that a key lands on the same partition whichever client wrote it.
A server that ever picks partitions for keys (or checks a client did) must agree exactly, so
this is a line-by-line port of Utils.murmur2: seed 0x9747b28c, m 0x5bd1e995, r 24, bytes read
little-endian four at a time, the tail mixed in with Java's switch fall-through, and every
product reduced to 32 bits as Java's int arithmetic does. `toPositive` is `n & 0x7fffffff`
(not abs: abs(MIN_VALUE) stays negative in Java). The tests use Kafka's own vectors from
UtilsTest.testMurmur2.
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data`, as a signed 32-bit int (Java's int)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length // 4
    for i in range(n4):
        i4 = 4 * i
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> _R
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Java's Utils.toPositive: clear the sign bit."""
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    assert num_partitions > 0, num_partitions
    return to_positive(murmur2(key)) % num_partitions
