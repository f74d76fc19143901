"""Dead letters against the real broker: a letter too large for its topic goes without its
value and does not hold back its partition; a letter refused for any other reason holds back
its batch until the topic is fixed.

The faults are the broker's own refusals: a dead-letter topic with a small max.message.bytes,
and a compacted dead-letter topic, which refuses a record without a key (INVALID_RECORD).
"""
import os
import subprocess

import msgpack
import psycopg2
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from conftest import stored_offsets, wait_for, write_config

SPEC = """
[table letters]
topic = {topic}
on_conflict = update
columns = id bigint not null, body text not null
key = id
"""


def setup_topics(kafka, dlq_config):
    """The source topic (one partition) and its dead-letter topic with `dlq_config`."""
    topic = kafka.topic("letters")
    kafka.create_topics({topic: 1})
    dlq = topic + ".dlq"
    for f in kafka.admin.create_topics([NewTopic(dlq, num_partitions=1, replication_factor=1,
                                                 config=dlq_config)]).values():
        f.result(timeout=60)
    return topic, dlq


def letters_config(tmp_path, kafka, database, copysink_bin, topic, group):
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={}, batch={"max_rows": 1000, "linger_ms": 100},
                          extra=SPEC.format(topic=topic))
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    return config


def stored_rows(database):
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, body FROM letters ORDER BY id")
        return cur.fetchall()


def headers(message):
    return {k: v.decode() for k, v in message.headers()}


def test_too_large_dead_letter_goes_without_value(tmp_path, database, kafka, workers,
                                                  copysink_bin):
    """A 2 MB field (too_large) in a message the broker took lz4-compressed, and a dead-letter
    topic that takes at most 100,000 bytes a batch: the letter of random (incompressible) text
    is refused as MESSAGE_TOO_LARGE and arrives without its value, with copysink.value_size and
    copysink.value_dropped; the letter of repetitive text fits once compressed and arrives
    whole. Everything after both entries on the partition is stored, and the stored offset
    reaches the end without any batch read again."""
    topic, dlq = setup_topics(kafka, {"max.message.bytes": "100000"})
    group = "g-" + kafka.prefix
    config = letters_config(tmp_path, kafka, database, copysink_bin, topic, group)

    good = [{"id": i, "body": f"letter {i}"} for i in range(150)]
    noise = msgpack.packb({"id": 7777, "body": os.urandom(1024 * 1024).hex()})  # 2 MB
    repeats = msgpack.packb({"id": 8888, "body": "x" * (2 * 1024 * 1024)})
    records = [(topic, msgpack.packb([e["id"]]), msgpack.packb(e)) for e in good[:50]]
    records.append((topic, b"noise", noise))
    records += [(topic, msgpack.packb([e["id"]]), msgpack.packb(e)) for e in good[50:100]]
    records.append((topic, b"repeats", repeats))
    records += [(topic, msgpack.packb([e["id"]]), msgpack.packb(e)) for e in good[100:]]
    # librdkafka checks its message.max.bytes (1 MB by default) before compression
    positions = kafka.produce(records, {"message.max.bytes": 8 * 1024 * 1024})
    noise_offset, repeats_offset = positions[50][2], positions[101][2]
    ends = {(topic, 0): positions[-1][2] + 1}

    w = workers(config).start()
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the stored offset to reach the end of the partition")
    assert w.stop() == 0, w.log_text()[-3000:]
    log = w.log_text()
    assert "dead letter too large: sending it without its value" in log, log[-3000:]
    assert "dead letters not delivered" not in log, log[-3000:]

    assert stored_rows(database) == [(e["id"], e["body"]) for e in good]
    letters = kafka.read_all(dlq, 2)
    by_offset = {}
    for m in letters:  # at least once: every copy must be right
        h = headers(m)
        assert (h["copysink.reason"], h["copysink.topic"], h["copysink.partition"],
                h["copysink.table"]) == ("too_large", topic, "0", "letters"), h
        assert "copysink.error" in h
        by_offset.setdefault(int(h["copysink.offset"]), []).append((m, h))
    assert set(by_offset) == {noise_offset, repeats_offset}, by_offset.keys()
    for m, h in by_offset[noise_offset]:
        assert m.value() is None and m.key() == b"noise"
        assert (h["copysink.value_dropped"], int(h["copysink.value_size"])) == ("true",
                                                                                len(noise))
    for m, h in by_offset[repeats_offset]:
        assert m.value() == repeats and m.key() == b"repeats"
        assert "copysink.value_dropped" not in h and "copysink.value_size" not in h


def test_undelivered_dead_letter_is_read_again(tmp_path, database, kafka, workers, copysink_bin):
    """A dead letter the broker refuses for a reason other than its size (a compacted topic
    takes no record without a key: INVALID_RECORD) must hold back its batch: the batch is read
    again until the letter is delivered, so the entry is neither lost nor committed past, and
    the letter is never sent without its value."""
    topic, dlq = setup_topics(kafka, {"cleanup.policy": "compact"})
    group = "g-" + kafka.prefix
    config = letters_config(tmp_path, kafka, database, copysink_bin, topic, group)

    good = [{"id": i, "body": f"letter {i}"} for i in range(100)]
    bad = msgpack.packb({"id": 7777, "pad": "x" * 4000})  # no body: missing_field
    records = [(topic, msgpack.packb([e["id"]]), msgpack.packb(e)) for e in good[:50]]
    records.append((topic, None, bad))  # no key: the compacted topic refuses its letter
    records += [(topic, msgpack.packb([e["id"]]), msgpack.packb(e)) for e in good[50:]]
    positions = kafka.produce(records)
    bad_offset = positions[50][2]
    ends = {(topic, 0): positions[-1][2] + 1}

    w = workers(config).start()

    # while the topic refuses the letter, nothing at or past it commits
    wait_for(lambda: w.log_text().count("dead letters not delivered") >= 3 or not w.alive(),
             60, "the worker to try the batch three times")
    assert w.alive(), w.log_text()[-3000:]
    assert stored_offsets(database, group).get((topic, 0), 0) <= bad_offset
    log = w.log_text()
    assert "without its value" not in log, log[-3000:]
    assert "Broker failed to validate record" in log, log[-3000:]  # INVALID_RECORD

    # the operator fixes the topic: the next attempt delivers the letter and commits the rest
    res = ConfigResource("topic", dlq, incremental_configs=[ConfigEntry(
        "cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET)])
    for f in kafka.admin.incremental_alter_configs([res]).values():
        f.result(timeout=60)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to catch up")
    assert w.stop() == 0, w.log_text()[-3000:]

    assert stored_rows(database) == [(e["id"], e["body"]) for e in good]
    letters = kafka.read_all(dlq, 1)
    assert letters, "the dead letter never arrived"
    for m in letters:  # at least once: every copy is the refused entry, whole
        h = headers(m)
        assert (h["copysink.reason"], int(h["copysink.offset"])) == ("missing_field", bad_offset)
        assert m.value() == bad and m.key() is None
        assert "copysink.value_dropped" not in h
