"""Kafka for the benchmark: topics created (and waited for), entries produced, end offsets."""
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from entries import kafka_key, to_msgpack

PARTITIONS = 3
PRODUCER = {"enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4",
            "batch.size": 1000000}


def create_topic(bootstrap, topic, partitions=PARTITIONS, timeout=60):
    """Create the topic and wait until the broker's metadata shows every partition with a
    leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                           replication_factor=1)]).values():
        f.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions and \
                all(p.leader >= 0 and p.error is None for p in md.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has no leader for every partition after "
                               f"{timeout} s")
        time.sleep(0.05)


def produce_pairs(bootstrap, topic, pairs, what="produce"):
    """Produce every (key, value) of PAIRS to TOPIC with PRODUCER's settings. Returns seconds;
    raises RuntimeError (WHAT names the caller) if any message was not delivered."""
    p = Producer(dict(PRODUCER, **{"bootstrap.servers": bootstrap}))
    failed = []
    t0 = time.perf_counter()

    def cb(err, msg):
        if err is not None:
            failed.append(err)

    for key, value in pairs:
        while True:
            try:
                p.produce(topic, key=key, value=value, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(120)
    if left or failed:
        raise RuntimeError(f"{what}: {left} undelivered, errors {failed[:3]}")
    return time.perf_counter() - t0


def produce(bootstrap, topic, entries):
    """Produce every entry as msgpack, keyed by its conflict key. Returns seconds."""
    return produce_pairs(bootstrap, topic, ((kafka_key(e), to_msgpack(e)) for e in entries))


def end_offsets(bootstrap, topic):
    """{(topic, partition): high watermark} of the partitions that hold anything."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    try:
        ends = {(topic, p): c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()
    return {k: v for k, v in ends.items() if v > 0}


def warm_up(bootstrap, topic):
    """Join a group once before any clock runs: the broker creates its offsets topic on the
    first group, which takes seconds that no later run pays."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-warm-up",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    c.close()
