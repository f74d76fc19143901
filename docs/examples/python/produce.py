#!/usr/bin/env python3
"""Publish example entries for copysink (see docs/FORMAT.md).

For each of the three built-in tables (memory_entries, patterns, trajectories) this sends:

  1. one entry as a single msgpack map, its embedding an array of floats;
  2. a few entries as msgpack arrays of maps: entries are grouped by the partition their own
     Kafka key maps to, so this is one array message per partition that gets entries (one
     message when the topic has one partition);
  3. one entry whose embedding is the compact form: msgpack bin of little-endian float32.

Each message is keyed by the msgpack array of its entry's conflict-key values (an array
message by its first entry's), and partitioned with murmur2 like Java clients and kafkajs,
so that this producer, the Node.js example and a Java service put one key in one partition.

Environment:
  KAFKA_BOOTSTRAP       broker list (default 127.0.0.1:9092)
  EMBEDDING_DIM         the worker's `dim` (default 384)
  TOPIC_MEMORY_ENTRIES, TOPIC_PATTERNS, TOPIC_TRAJECTORIES
                        topics (default: the table name, which is the worker's default topic);
                        they must exist

Requirements: pip install -r requirements.txt   (msgpack, confluent-kafka)
"""
import os
import struct
import sys

import msgpack
from confluent_kafka import KafkaException, Producer

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
DIM = int(os.environ.get("EMBEDDING_DIM", "384"))

# conflict-key fields of each table, in key order: the Kafka key is msgpack of their values
KEY_FIELDS = {
    "memory_entries": ("namespace", "key"),
    "patterns": ("name",),
    "trajectories": ("trajectory_id", "step_number"),
}
TOPICS = {table: os.environ.get("TOPIC_" + table.upper(), table) for table in KEY_FIELDS}


def kafka_key(table, entry):
    """msgpack array of the entry's conflict-key values, e.g. 92 a6 't' 'r' ... 03 for
    ["traj_1", 3]. msgpack-python writes the shortest encoding, as every producer must."""
    return msgpack.packb([entry[field] for field in KEY_FIELDS[table]])


def murmur2(data):
    """Kafka's murmur2 (Java's Utils.murmur2), as an unsigned 32-bit int."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key, partitions):
    """The partition Java clients, kafkajs and librdkafka's murmur2_random pick for `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def fake_embedding(seed):
    """Stands in for your model's output: DIM floats in (-1, 1)."""
    return [((seed * 7919 + i * 104729) % 2001 - 1000) / 1024 for i in range(DIM)]


def compact(vector):
    """The compact embedding: 4*DIM bytes of little-endian float32 (sent as msgpack bin).
    With numpy: np.asarray(vector, dtype="<f4").tobytes()."""
    return struct.pack(f"<{len(vector)}f", *vector)


def example_entries():
    """{table: (single entry, [entries sent as arrays], compact entry)}."""
    return {
        "memory_entries": (
            {"namespace": "improvements", "key": "entry_1",
             "value": "Load batches with binary COPY, then merge once",
             "embedding": fake_embedding(1),
             "metadata": {"source": "example", "score": 0.92, "reviewed": True,
                          "links": ["docs/FORMAT.md"], "owner": None},
             "tags": ["postgres", "performance"]},
            [{"namespace": "improvements", "key": "entry_2", "value": "Keep one key in one partition",
              "embedding": fake_embedding(2), "metadata": {"source": "example"}, "tags": ["kafka"]},
             {"namespace": "improvements", "key": "entry_3", "value": "No embedding yet: NULL"},
             {"namespace": "research", "key": "entry_1", "value": "Unicode is fine: café, 東京 🙂",
              "embedding": fake_embedding(3), "metadata": None, "tags": []}],
            {"namespace": "improvements", "key": "entry_4",
             "value": "The compact embedding is 1,536 bytes instead of ~3,460",
             "embedding": compact(fake_embedding(4)), "metadata": {"encoding": "float32le"}},
        ),
        "patterns": (
            {"name": "batch-writes", "pattern_type": "optimization",
             "description": "Group small writes into one transaction",
             "embedding": fake_embedding(11), "confidence": 0.87, "usage_count": 42,
             "success_count": 39, "metadata": {"category": "database", "since": "2024-05-01"}},
            [{"name": "retry-with-backoff", "pattern_type": "resilience", "confidence": 0.75,
              "usage_count": 7, "success_count": 6},
             {"name": "cache-aside", "pattern_type": "caching", "description": None,
              "embedding": fake_embedding(12), "confidence": 1.0, "usage_count": 0,
              "success_count": 0, "metadata": {"ttl_s": 300, "layers": ["memory", "redis"]}}],
            {"name": "idempotent-consumer", "pattern_type": "messaging",
             "description": "Store the offset with the data", "embedding": compact(fake_embedding(13)),
             "confidence": 0.95, "usage_count": 2147483647, "success_count": 3},
        ),
        "trajectories": (
            {"trajectory_id": "traj_1", "step_number": 0, "action": "read_config",
             "state": {"file": "copysink.ini", "ok": True}, "reward": 0.0,
             "embedding": fake_embedding(21), "metadata": {"agent": "example", "run": 1}},
            [{"trajectory_id": "traj_1", "step_number": step, "action": action,
              "state": {"step": step, "position": [step, step * 0.5], "done": step == 3},
              "reward": reward, "embedding": fake_embedding(21 + step)}
             for step, action, reward in ((1, "connect", 0.25), (2, "copy", 0.5),
                                          (3, "commit", 1.0))],
            {"trajectory_id": "traj_2", "step_number": 0, "action": "plan",
             "state": {"goal": "load", "depth": {"a": {"b": {"c": 1}}}}, "reward": -0.125,
             "embedding": compact(fake_embedding(31)), "metadata": {"agent": "example"}},
        ),
    }


def main():
    producer = Producer({
        "bootstrap.servers": BOOTSTRAP,
        "enable.idempotence": True,   # no duplicates or reordering on retries
        "acks": "all",                # implied by idempotence; stated for clarity
        "compression.type": "lz4",    # or zstd
        "linger.ms": 10,              # let messages gather into compressed batches
        "partitioner": "murmur2_random",  # same partitions as Java clients and kafkajs
        "message.max.bytes": 1000000,  # keep within the broker's / topic's limit
        "allow.auto.create.topics": False,  # a typo in a topic name is an error, not a topic
    })
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(f"{msg.topic()}: {err}")
        else:
            print(f"{msg.topic()} [{msg.partition()}] @{msg.offset()} "
                  f"key={msgpack.unpackb(msg.key())} {len(msg.value())} bytes")

    # partition counts, checked before anything is sent
    partition_count = {}
    for table, topic in TOPICS.items():
        meta = producer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            sys.exit(f"topic {topic!r}: {meta.error.str()} (create it first)")
        partition_count[table] = len(meta.partitions)

    for table, (single, grouped, with_compact) in example_entries().items():
        topic, partitions = TOPICS[table], partition_count[table]

        # 1. one entry, one map; librdkafka picks the partition from the key
        producer.produce(topic, msgpack.packb(single), kafka_key(table, single),
                         on_delivery=on_delivery)

        # 2. arrays of maps: one message per partition, holding the entries whose own key
        #    maps to it, so each entry stays in the partition of its key
        by_partition = {}
        for entry in grouped:
            by_partition.setdefault(partition_for(kafka_key(table, entry), partitions),
                                    []).append(entry)
        for partition, entries in by_partition.items():
            producer.produce(topic, msgpack.packb(entries), kafka_key(table, entries[0]),
                             partition=partition, on_delivery=on_delivery)

        # 3. compact embedding: a bytes value packs as msgpack bin
        producer.produce(topic, msgpack.packb(with_compact), kafka_key(table, with_compact),
                         on_delivery=on_delivery)
        producer.poll(0)

    left = producer.flush(30)
    if failures or left:
        sys.exit(f"not delivered: {failures or f'{left} message(s) timed out'}")


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        sys.exit(f"kafka: {e}")
