"""End to end: Kafka (msgpack) -> copysink -> PostgreSQL, against a real broker and server.

10,000 entries over the three tables, three partitions each, keys repeated inside and across
batches, arrays of entries and the compact binary embedding, and more than 50 invalid messages
of different kinds. Afterwards the tables must hold exactly the expected rows and values, every
invalid message must be on the dead-letter topic with its reason, and the stored and committed
offsets must equal the end offsets. Feeding the same input again must change nothing.
"""
import random
import re
import zlib

import msgpack
import psycopg2
import psycopg2.extras
import pytest

from conftest import (assert_events_exactly_once, end_offsets, events_config, produce_events,
                      stored_offsets, wait_for, write_config)
from entries import (KEYS, assert_table_equals, encode, expected_rows, invalid_messages,
                     kafka_key, key_of, make_entry, table_contents)

COUNTS = {"memory_entries": 4000, "patterns": 3000, "trajectories": 3000}
MODES = {"memory_entries": "update", "patterns": "update", "trajectories": "skip"}
PARTITIONS = 3
MOVING = ("updated_at", "copysink_partition", "copysink_offset")


def partition_of(key_bytes):
    return zlib.crc32(key_bytes) % PARTITIONS


def build_input(rng, topics):
    """Messages in production order: dicts with table, topic, partition, key, value, entries
    (the valid entries, in order) and bad (expected dead letters: (reason, entry index))."""
    messages = []
    for table, count in COUNTS.items():
        by_part = {p: [] for p in range(PARTITIONS)}
        for i in range(count):
            e = make_entry(rng, table, i)
            by_part[partition_of(kafka_key(table, e))].append(e)
        for p, entries in by_part.items():
            i = 0
            while i < len(entries):
                n = 1 if rng.random() < 0.7 else rng.randrange(2, 6)
                group = entries[i:i + n]
                i += n
                compact = rng.random() < 0.3
                if len(group) == 1:
                    value = encode(group[0], compact)
                else:
                    value = msgpack.packb([msgpack.unpackb(encode(e, compact), raw=False)
                                           for e in group], use_bin_type=True)
                messages.append({"table": table, "topic": topics[table], "partition": p,
                                 "key": kafka_key(table, group[0]), "value": value,
                                 "entries": group, "bad": []})
    # interleave tables and partitions: the shuffled list is the production order, and the
    # expected contents are computed from that same order
    rng.shuffle(messages)
    return messages


def add_invalid(rng, topics, messages):
    for table in COUNTS:
        for desc, reason, value, _ in invalid_messages(rng, table):
            p = rng.randrange(PARTITIONS)
            messages.append({"table": table, "topic": topics[table], "partition": p,
                             "key": b"bad", "value": value, "entries": [],
                             "bad": [(reason, -1)], "desc": desc})
        # an array where one entry of three is bad: the other two must land
        good = [make_entry(rng, table, 10**7 + j) for j in range(2)]
        bad = dict(good[0])
        bad[KEYS[table][0]] = None
        p = partition_of(kafka_key(table, good[0]))
        for g in good[1:]:
            # same partition for every entry of the message, so per-key order stays defined
            while partition_of(kafka_key(table, g)) != p:
                g.update(make_entry(rng, table, rng.randrange(10**8)))
        value = msgpack.packb([good[0], bad, good[1]], use_bin_type=True)
        messages.append({"table": table, "topic": topics[table], "partition": p,
                         "key": kafka_key(table, good[0]), "value": value,
                         "entries": good, "bad": [("missing_field", 1)], "desc": "array"})


def produce(kafka, messages):
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True,
                         "linger.ms": 20, "compression.type": "lz4",
                         "message.max.bytes": 10_000_000})
    done = []

    def cb(err, msg):
        assert err is None, err
        done.append(msg)

    for i, m in enumerate(messages):
        while True:
            try:
                producer.produce(m["topic"], key=m["key"], value=m["value"],
                                 partition=m["partition"],
                                 on_delivery=lambda err, msg, m=m: (cb(err, msg),
                                                                    m.__setitem__("offset", msg.offset())))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert len(done) == len(messages)


def stored_offsets(conninfo, group):
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT topic, partition, next_offset FROM copysink_offsets "
                    "WHERE group_id = %s", (group,))
        return {(t, p): o for t, p, o in cur.fetchall()}


def all_end_offsets(kafka, topics):
    ends = {}
    for topic in topics.values():
        for p, high in kafka.end_offsets(topic).items():
            if high > 0:
                ends[(topic, p)] = high
    return ends


def run_until_caught_up(workers, config, conninfo, group, ends, name):
    w = workers(config, name).start()
    try:
        wait_for(lambda: stored_offsets(conninfo, group) == ends or not w.alive(), 300,
                 "stored offsets to reach the end offsets")
        assert w.alive(), "worker exited early:\n" + w.log_text()[-4000:]
    finally:
        rc = w.stop() if w.alive() else w.proc.returncode
    assert rc == 0, f"worker exit code {rc}:\n" + w.log_text()[-4000:]
    return w


def dead_letters(kafka, topics, expected_count):
    got = []
    for table, topic in topics.items():
        for m in kafka.read_all(topic + ".dlq", expected_count[table]):
            h = {k: v.decode() for k, v in (m.headers() or [])}
            got.append((h["copysink.topic"], int(h["copysink.partition"]),
                        int(h["copysink.offset"]), int(h.get("copysink.entry", "-1")),
                        h["copysink.reason"], h["copysink.table"], m.value()))
            assert h["copysink.error"], h
    return got


def expected_dead_letters(messages):
    out = []
    for m in messages:
        for reason, entry in m["bad"]:
            out.append((m["topic"], m["partition"], m["offset"], entry, reason, m["table"]))
    return sorted(out)


@pytest.mark.parametrize("writers", [1, 3, "auto"])
def test_end_to_end(tmp_path, database, kafka, workers, copysink_bin, writers):
    """writers = 3: each of a table's three partitions has its own writer connection; auto
    (nine partitions): four writers."""
    rng = random.Random(20261123)
    topics = {t: kafka.topic(t.replace("_", ".")) for t in COUNTS}
    kafka.create_topics({**{t: PARTITIONS for t in topics.values()},
                         **{t + ".dlq": 1 for t in topics.values()}})
    group = "copysink-" + kafka.prefix
    config = write_config(tmp_path / "copysink.ini", bootstrap=kafka.bootstrap,
                          conninfo=database, group=group,
                          tables={t: (topics[t], MODES[t]) for t in COUNTS}, writers=writers)
    import subprocess
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)

    messages = build_input(rng, topics)
    add_invalid(rng, topics, messages)
    n_invalid = sum(len(m["bad"]) for m in messages)
    n_entries = sum(len(m["entries"]) for m in messages)
    assert n_invalid >= 50 and n_entries >= 10_000
    produce(kafka, messages)

    # expected contents: valid entries in production order (= offset order per partition)
    applied = [(m["table"], e) for m in messages for e in m["entries"]]
    expected = expected_rows(applied, MODES)
    dup_keys = len(applied) - sum(len(v) for v in expected.values())
    assert dup_keys > 1000, "the input must repeat keys"

    ends = all_end_offsets(kafka, topics)
    w = run_until_caught_up(workers, config, database, group, ends, "first")
    assert "batch committed" in w.log_text()
    if writers != 1:  # every writer wrote batches
        lanes = set(re.findall(r'msg="batch committed" .* writer=(\d+)', w.log_text()))
        assert lanes == {str(i) for i in range(4 if writers == "auto" else writers)}, lanes

    for table in COUNTS:
        assert_table_equals(database, table, expected[table])

    # every invalid message (or entry) is on the dead-letter topic, with its reason
    per_table = {t: sum(len(m["bad"]) for m in messages if m["table"] == t) for t in COUNTS}
    got = dead_letters(kafka, topics, per_table)
    assert sorted(g[:6] for g in got) == expected_dead_letters(messages)
    by_pos = {(m["topic"], m["partition"], m["offset"]): m for m in messages}
    for topic, part, off, entry, reason, table, value in got:
        m = by_pos[(topic, part, off)]
        if entry < 0:
            assert value == m["value"], "dead letter must keep the original bytes"
        else:
            assert msgpack.unpackb(value, raw=False) == msgpack.unpackb(m["value"], raw=False)[entry]

    # offsets: stored in PostgreSQL and committed to Kafka equal the end offsets
    assert stored_offsets(database, group) == ends
    for topic in topics.values():
        parts = [p for (t, p) in ends if t == topic]
        committed = kafka.committed(group, topic, parts)
        assert committed == {p: ends[(topic, p)] for p in parts}

    # feeding the same input again changes nothing: every value and created_at stay; updated_at
    # may move only where a key had several versions (re-applying them in order passes through
    # the intermediate values before it returns to the final one)
    versions = {}
    for table, e in applied:
        versions[(table, key_of(table, e))] = versions.get((table, key_of(table, e)), 0) + 1
    before = {t: table_contents(database, t) for t in COUNTS}
    produce(kafka, [dict(m) for m in messages])
    ends2 = all_end_offsets(kafka, topics)
    run_until_caught_up(workers, config, database, group, ends2, "second")
    for table in COUNTS:
        after = table_contents(database, table)
        assert set(after) == set(before[table]), table
        for key, row in after.items():
            old = before[table][key]
            assert {c: v for c, v in row.items() if c not in MOVING} == \
                {c: v for c, v in old.items() if c not in MOVING}, (table, key)
            if MODES[table] == "skip" or versions[(table, key)] == 1:
                assert all(row[c] == old[c] for c in MOVING), (table, key)


def worker_backends(conninfo):
    """The worker's PostgreSQL connections: every backend of the test database but ours."""
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        return cur.fetchone()[0]


@pytest.mark.parametrize("partitions", [1, 2, 6])
def test_writers_auto(tmp_path, database, kafka, workers, copysink_bin, partitions):
    """The default, writers = auto: one writer per assigned partition, up to four, each with
    its own connection (the loop has one more); the others never connect. Every entry lands
    exactly once, and each writer in use wrote batches."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: partitions})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 200})
    import subprocess
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    w = workers(config).start()
    ids = list(range(3000))
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 90,
             "everything stored")
    assert w.alive(), w.log_text()[-3000:]
    used = min(partitions, 4)
    assert worker_backends(database) == used + 1
    lanes = set(re.findall(r'msg="batch committed" .* writer=(\d+)', w.log_text()))
    assert lanes == {str(i) for i in range(used)}, lanes
    assert w.stop() == 0, w.log_text()[-3000:]
    assert_events_exactly_once(database, ids)


def test_transactional_producer(tmp_path, database, kafka, workers, copysink_bin):
    """Entries from a transactional producer (read_committed, the default): every committed
    entry lands exactly once, an aborted transaction's entries never, and the commit markers
    (one offset each, never delivered) are not taken for jumps: no seek back, no warning."""
    from confluent_kafka import Producer
    topic = kafka.topic("events")
    kafka.create_topics({topic: 2})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500})
    import subprocess
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": "tx-" + topic,
                  "linger.ms": 5})
    p.init_transactions(30)
    committed, aborted = [], []
    for t in range(40):
        ids = list(range(t * 50, t * 50 + 50))
        p.begin_transaction()
        for i in ids:
            p.produce(topic, key=msgpack.packb([i]), value=msgpack.packb(
                {"id": i, "producer": "p", "payload": {"n": i, "s": f"event {i}"}}))
        if t == 17:
            p.flush(30)
            p.abort_transaction(30)
            aborted += ids
        else:
            p.commit_transaction(30)
            committed += ids
    w = workers(config).start()
    ends = end_offsets(kafka, topic)
    # the last commit marker of each partition is never delivered: stored stops one short
    wait_for(lambda: {k: v + 1 for k, v in stored_offsets(database, group).items()} == ends
             or not w.alive(), 90, "every committed entry stored")
    assert w.alive(), w.log_text()[-3000:]
    assert w.stop() == 0, w.log_text()[-3000:]
    assert_events_exactly_once(database, committed)
    log = w.log_text()
    jumps = re.findall(r'jumped from offset (\d+) to (\d+)', log)
    # the aborted transaction (its entries and marker) is one gap of more than one offset per
    # partition: sought back once each; a commit marker never is
    assert all(int(b) - int(a) > 1 for a, b in jumps), jumps
    assert len(jumps) <= 2, jumps


def test_writers_contend_for_the_same_keys(tmp_path, database, kafka, workers, copysink_bin):
    """Three writers, and every key in all three partitions (as when producers key messages
    otherwise than the table): the writers' transactions meet the same keys of one table, as
    new keys (the direct COPY) and as existing ones (the merge). Every entry is applied once
    its turn comes, none is dead-lettered or lost, and each key ends holding one partition's
    last version of it, every column of that version."""
    import subprocess
    from entries import COLUMNS
    rng = random.Random(20261202)
    topic = kafka.topic("contend")
    kafka.create_topics({topic: 3, topic + ".dlq": 1})
    group = "copysink-" + kafka.prefix + "-contend"
    config = write_config(tmp_path / "contend.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={"memory_entries": (topic, "update")},
                          batch={"max_rows": 300, "linger_ms": 50}, writers=3)
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    keys = [(f"ns{i % 7}", f"k{i}") for i in range(1500)]
    last = {}  # key -> {partition: that partition's last version}
    messages = []
    for rnd in range(2):  # round 0: new keys; round 1: every key exists
        for p in range(3):
            for ns, k in keys:
                e = make_entry(rng, "memory_entries", rnd)
                e.update(namespace=ns, key=k, value=f"round {rnd} partition {p} {k}")
                last.setdefault((ns, k), {})[p] = e
                messages.append({"topic": topic, "partition": p, "key": k.encode(),
                                 "value": encode(e, rng.random() < 0.5)})
    produce(kafka, messages)
    ends = all_end_offsets(kafka, {"memory_entries": topic})
    w = run_until_caught_up(workers, config, database, group, ends, "contend")
    log = w.log_text()
    lanes = set(re.findall(r'msg="batch committed" .* writer=(\d+)', log))
    assert lanes == {"0", "1", "2"}, lanes
    assert "dead-lettered" not in log
    assert sum(kafka.end_offsets(topic + ".dlq").values()) == 0
    print(f"retries after deadlocks: {log.count('deadlock')}; batches committed: "
          f"{log.count('batch committed')}")

    got = table_contents(database, "memory_entries")
    assert set(got) == set(keys)
    for key, row in got.items():
        def same(e):
            for col in COLUMNS["memory_entries"]:
                if row[col] != e.get(col):
                    return False
            return True
        assert row["value"].startswith("round 1 "), (key, row["value"])
        p = int(row["value"].split()[3])
        assert same(last[key][p]), (key, row["value"])
