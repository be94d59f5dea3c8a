"""Shoal's event streaming: Kafka-compatible topics and partitions.

The first piece is `shoal.events.protocol`, a sans-I/O codec for Kafka's wire protocol
(requests and responses of the APIs Kafka's clients need, record batches, compression,
murmur2 partitioning). The server and the log that use it live beside it as they arrive.
"""
