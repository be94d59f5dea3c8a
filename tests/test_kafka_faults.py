"""The Kafka port when its node is cut off from a quorum (the two other nodes paused with
SIGSTOP): every request is answered promptly with Kafka's error, so clients move on, instead of
being held until a timeout or having the connection closed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from kafka_wire import call
from shoal.events.protocol import ErrorCode
from shoal.events.protocol import create_topics as ct
from shoal.events.protocol import fetch as fe
from shoal.events.protocol import find_coordinator as fc
from shoal.events.protocol import init_producer_id as ip
from shoal.events.protocol import metadata as md
from shoal.events.protocol import produce as pr
from shoal.events.protocol.records import NewRecord, build_batch
from shoal.local.cluster import LocalProcessCluster

TOPIC = "faults"
PROMPT_S = 6.0  # an election timeout (0.5 s), a ReadIndex's bound (2 s), a loaded machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProcessCluster]:
    with LocalProcessCluster(3, tmp_path_factory.mktemp("kafka-faults")) as c:
        c.start()
        yield c


def _call(addr: str, body: object, version: int) -> tuple[object, float]:
    return call(addr, body, version, timeout=60)


def _metadata(addr: str) -> md.MetadataResponse:
    resp, _ = _call(addr, md.MetadataRequest(topics=[md.MetadataRequestTopic(name=TOPIC)],
                                             allow_auto_topic_creation=False), 9)
    assert isinstance(resp, md.MetadataResponse)
    return resp


def test_a_node_without_a_quorum_answers_at_once(cluster: LocalProcessCluster) -> None:
    bootstrap = cluster.kafka_bootstrap
    create = ct.CreateTopicsRequest(topics=[ct.CreatableTopic(
        name=TOPIC, num_partitions=3, replication_factor=3, assignments=[], configs=[])],
        timeout_ms=30_000, validate_only=False)
    deadline = time.monotonic() + 60
    while True:  # (NOT_CONTROLLER until this node hears of the meta leader)
        resp, _ = _call(bootstrap[0], create, 5)
        code = resp.topics[0].error_code  # type: ignore[attr-defined]
        if code in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            break
        assert code == ErrorCode.NOT_CONTROLLER and time.monotonic() < deadline, resp
        time.sleep(0.1)
    while True:  # every partition led, as one node sees it
        leaders = [p.leader_id for p in _metadata(bootstrap[0]).topics[0].partitions]
        if len(leaders) == 3 and all(n > 0 for n in leaders):
            break
        assert time.monotonic() < deadline, leaders
        time.sleep(0.1)
    survivor = leaders[0]  # it leads partition 0 until it sees it has no quorum
    addr = bootstrap[cluster.ids.index(survivor)]
    others = [i for i in cluster.ids if i != survivor]
    for i in others:
        cluster.kill(i, signal.SIGSTOP)
    try:
        # A produce it takes as leader, then steps down with (no quorum): answered when it
        # steps down, as of unknown outcome, not at the request's 20 s timeout.
        resp, took = _call(addr, pr.ProduceRequest(acks=-1, timeout_ms=20_000, topic_data=[
            pr.TopicProduceData(name=TOPIC, partition_data=[pr.PartitionProduceData(
                index=0, records=build_batch([NewRecord(b"cut off")]).encode())])]), 9)
        code = resp.responses[0].partition_responses[0].error_code  # type: ignore[attr-defined]
        assert code in (ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NOT_LEADER_OR_FOLLOWER), code
        assert took < PROMPT_S, f"Produce answered after {took:.1f} s"
        # Metadata from its own view, with no quorum to confirm it: brokers and partitions.
        started = time.monotonic()
        meta = _metadata(addr)
        assert time.monotonic() - started < PROMPT_S
        assert len(meta.brokers) == 3 and len(meta.topics[0].partitions) == 3
        # Every partition refused for the client to look elsewhere, none held for long.
        resp, took = _call(addr, fe.FetchRequest(
            replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=1 << 20, topics=[
                fe.FetchTopic(topic=TOPIC, partitions=[
                    fe.FetchPartition(partition=p, fetch_offset=0, partition_max_bytes=1 << 20)
                    for p in range(3)])]), 4)
        codes = [p.error_code for p in resp.responses[0].partitions]  # type: ignore[attr-defined]
        assert codes == [ErrorCode.NOT_LEADER_OR_FOLLOWER] * 3, codes
        assert took < PROMPT_S, f"Fetch answered after {took:.1f} s"
        # No controller: a retriable error for the producer, not a closed connection.
        resp, took = _call(addr, ip.InitProducerIdRequest(transactional_id=None,
                                                          transaction_timeout_ms=60_000), 1)
        assert resp.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE  # type: ignore[attr-defined]
        assert took < PROMPT_S + 2.0, f"InitProducerId answered after {took:.1f} s"
        resp, _ = _call(addr, fc.FindCoordinatorRequest(key="g", key_type=0), 2)
        assert resp.error_code in (  # type: ignore[attr-defined]
            ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.NONE)
    finally:
        for i in others:
            cluster.kill(i, signal.SIGCONT)
