"""Rows PostgreSQL rejects are isolated by bisection and dead-lettered; the rest commit.

An operator-declared table (a spec from the config file, not built in) with a CHECK constraint
added by hand: entries that violate it are valid msgpack and pass the decoder, so only the
server can reject them. One batch holds all of them.
"""
import subprocess

import msgpack
import psycopg2

from conftest import stored_offsets, wait_for, write_config

SPEC = """
[table scores]
topic = {topic}
on_conflict = update
columns = id bigint not null, score double precision, body text, labels text[]
key = id
"""


def test_bad_rows_isolated(tmp_path, database, kafka, workers, copysink_bin):
    topic = kafka.topic("scores")
    kafka.create_topics({topic: 1, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={},
                          batch={"max_rows": 5000, "linger_ms": 1000},
                          extra=SPEC.format(topic=topic))
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE scores ADD CONSTRAINT score_positive CHECK (score >= 0)")

    bad_ids = {17, 18, 999, 1500, 1999}
    entries = [{"id": i, "score": -1.0 if i in bad_ids else i / 2, "body": f"row {i}",
                "labels": ["x", str(i)]} for i in range(2000)]
    # the last message is an array: its second entry is bad, the others must land
    records = [(topic, msgpack.packb([e["id"]]), msgpack.packb(e)) for e in entries[:1990]]
    records.append((topic, b"arr", msgpack.packb(
        [{"id": 5000, "score": 1.0}, {"id": 5001, "score": -3.0}, {"id": 5002, "score": 2.0}])))
    positions = kafka.produce(records)
    ends = {(topic, 0): positions[-1][2] + 1}

    w = workers(config).start()

    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to catch up")
    assert w.stop() == 0, w.log_text()[-3000:]

    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, score, body, labels FROM scores ORDER BY id")
        rows = cur.fetchall()
    expected = [(e["id"], e["score"], e["body"], e["labels"]) for e in entries[:1990]
                if e["id"] not in bad_ids]
    expected += [(5000, 1.0, None, None), (5002, 2.0, None, None)]
    assert rows == expected

    dl = kafka.read_all(topic + ".dlq", 6)
    got = []
    for m in dl:
        h = {k: v.decode() for k, v in m.headers()}
        assert h["copysink.reason"] == "db_rejected"
        assert h["copysink.sqlstate"] == "23514"
        assert "score_positive" in h["copysink.error"]
        got.append((int(h["copysink.offset"]), int(h.get("copysink.entry", "-1")),
                    msgpack.unpackb(m.value())))
    bad_offsets = {positions[i][2] for i in range(1990) if entries[i]["id"] in bad_ids}
    assert sorted(g[0] for g in got) == sorted(bad_offsets | {positions[-1][2]})
    for off, entry, value in got:
        if off == positions[-1][2]:
            assert entry == 1 and value == {"id": 5001, "score": -3.0}
        else:
            assert entry == -1 and value["score"] == -1.0
    # bisection, not row-by-row: O(k log n) savepoints, visible in the log as one warning
    assert w.log_text().count("rows rejected by PostgreSQL") == 1


def test_one_bad_row_in_ten_thousand_costs_log_n_writes(tmp_path, database, kafka, workers,
                                                         copysink_bin):
    """One row in a batch of 10,000 violates the CHECK: the bisection finds it with at most
    2 x ceil(log2 10,000) = 28 COPY-and-merge attempts (the log line counts them), the
    9,999 others commit with their values, and the one goes to the dead-letter topic."""
    import math
    import re

    topic = kafka.topic("scores")
    kafka.create_topics({topic: 1, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={},
                          batch={"max_rows": 10000, "linger_ms": 5000,
                                 "write_when_idle": "off"},
                          extra=SPEC.format(topic=topic))
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE scores ADD CONSTRAINT score_positive CHECK (score >= 0)")
    n, bad = 10000, 6143
    entries = [{"id": i, "score": -1.0 if i == bad else float(i), "body": f"b{i}"}
               for i in range(n)]
    positions = kafka.produce([(topic, msgpack.packb([e["id"]]), msgpack.packb(e))
                               for e in entries])
    ends = {(topic, 0): positions[-1][2] + 1}

    w = workers(config).start()

    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to catch up")
    log = w.log_text()
    assert w.stop() == 0, log[-3000:]
    m = re.findall(r'msg="rejected rows isolated" table=scores rows=(\d+) rejected=(\d+) '
                   r'bisect_writes=(\d+)', log)
    assert len(m) == 1, log[-3000:]
    rows, rejected, writes = map(int, m[0])
    assert (rows, rejected) == (n, 1)
    assert writes <= 2 * math.ceil(math.log2(n)), writes
    print(f"1 bad row in {n}: {writes} COPY-and-merge attempts")
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, score, body FROM scores ORDER BY id")
        assert cur.fetchall() == [(e["id"], e["score"], e["body"]) for e in entries
                                  if e["id"] != bad]
    (letter,) = kafka.read_all(topic + ".dlq", 1)
    assert msgpack.unpackb(letter.value()) == entries[bad]
    assert dict(letter.headers())["copysink.sqlstate"] == b"23514"
