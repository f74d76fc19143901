"""The chaos test: while 100,000 entries are produced across the three tables and an
insert-only table, the worker is killed with SIGKILL at random moments (at least 20 times),
PostgreSQL restarts with an immediate shutdown (twice) and the Kafka broker restarts (once).
At the end every table equals the expected contents exactly and the stored offsets equal the
end offsets.

Embeddings use dim = 16 here (a per-table setting) to keep the run inside CI's time; the
384-dimensional path is covered by test_e2e.py. Set COPYSINK_CHAOS_REPORT=FILE to write the
figures as JSON.
"""
import json
import os
import random
import subprocess
import threading
import time
import zlib

import msgpack

from conftest import assert_events_exactly_once, end_offsets, stored_offsets, wait_for, write_config
from entries import (assert_table_equals, encode, expected_rows, kafka_key, make_entry,
                     table_contents)

DIM = 16
PARTITIONS = 3
MODES = {"memory_entries": "update", "patterns": "update", "trajectories": "skip"}
COUNTS = {"memory_entries": 30000, "patterns": 20000, "trajectories": 20000}
EVENTS = 30000
KILLS = 20


def table_rows(conninfo, table, cols):
    import psycopg2
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT {", ".join(cols)} FROM "{table}"')
        return cur.fetchall()


def test_chaos(tmp_path, database, kafka, workers, copysink_bin, servers):
    rng = random.Random(7)
    topics = {t: kafka.topic(t) for t in list(COUNTS) + ["events"]}
    kafka.create_topics({**{t: PARTITIONS for t in topics.values()},
                         **{t + ".dlq": 1 for t in topics.values()}})
    group = "chaos-" + kafka.prefix
    extra = "".join(f"\n[table {t}]\ntopic = {topics[t]}\non_conflict = {m}\ndim = {DIM}\n"
                    for t, m in MODES.items())
    extra += (f"\n[table events]\ntopic = {topics['events']}\n"
              "columns = id bigint not null, producer text not null, payload jsonb\n")
    config = write_config(tmp_path / "chaos.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={}, batch={"max_rows": 2000, "linger_ms": 100},
                          kafka_settings={"session.timeout.ms": 6000,
                                          "heartbeat.interval.ms": 1000},
                          extra=extra)
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)

    # the input, in production order; every key stays in one partition
    messages = []
    for table, n in COUNTS.items():
        for i in range(n):
            e = make_entry(rng, table, i, DIM)
            k = kafka_key(table, e)
            messages.append((table, topics[table], zlib.crc32(k) % PARTITIONS, k,
                             encode(e, rng.random() < 0.5), e))
    for i in range(EVENTS):
        e = {"id": i, "producer": "chaos", "payload": {"n": i, "s": f"event {i}"}}
        messages.append(("events", topics["events"], i % PARTITIONS, msgpack.packb([i]),
                         msgpack.packb(e), e))
    rng.shuffle(messages)
    applied = [(t, e) for t, _, _, _, _, e in messages if t != "events"]
    expected = expected_rows(applied, MODES)

    from confluent_kafka import Producer
    produced = threading.Event()
    errors = []

    def feed():
        p = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True,
                      "linger.ms": 20, "compression.type": "lz4",
                      "message.timeout.ms": 300000})
        for j, (_, topic, part, key, value, _) in enumerate(messages):
            while True:
                try:
                    p.produce(topic, key=key, value=value, partition=part,
                              on_delivery=lambda err, msg: err and errors.append(err))
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
            if j % 2000 == 0:
                time.sleep(0.25)  # spread production over the faults
        assert p.flush(300) == 0
        produced.set()

    started = time.time()
    feeder = threading.Thread(target=feed)
    feeder.start()
    kills = pg_restarts = kafka_restarts = 0
    w = workers(config, "chaos-0").start()
    step = 0
    while not produced.is_set() or kills < KILLS or pg_restarts < 2 or kafka_restarts < 1:
        time.sleep(rng.uniform(0.3, 1.5))
        step += 1
        if kills < KILLS:
            w.kill()
            kills += 1
            w = workers(config, f"chaos-{kills}").start()
        if step in (6, 14) and pg_restarts < 2:
            servers.pg_restart_immediate()
            pg_restarts += 1
        if step == 10 and kafka_restarts < 1:
            servers.kafka_restart()
            kafka_restarts += 1
        if step > 200:
            break
    feeder.join()
    assert not errors, errors[:3]

    ends = end_offsets(kafka, *topics.values())
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 600,
             "the last worker to catch up")
    assert w.alive(), w.log_text()[-3000:]
    assert w.stop() == 0, w.log_text()[-3000:]

    # the figures first (written even when a check below fails), then the exact checks
    lost = wrong = 0
    for table in COUNTS:
        got = table_contents(database, table)
        lost += len(set(expected[table]) - set(got))
        wrong += len(set(got) - set(expected[table]))
    ids = [r[0] for r in table_rows(database, "events", ["id"])]
    lost += len(set(range(EVENTS)) - set(ids))
    duplicated = len(ids) - len(set(ids))
    figures = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.time() - started, 1),
               "entries": sum(COUNTS.values()) + EVENTS,
               "entries_per_table": {**COUNTS, "events (insert-only)": EVENTS},
               "kills": kills,
               "postgres_immediate_restarts": pg_restarts, "kafka_restarts": kafka_restarts,
               "lost": lost, "duplicated": duplicated, "unexpected_keys": wrong,
               "stored_offsets_equal_end_offsets": stored_offsets(database, group) == ends,
               "checked": ["each table equals its expected contents, every column",
                           "the insert-only table holds every id exactly once",
                           "stored offsets equal the end offsets"]}
    print("chaos figures:", json.dumps(figures))
    if os.environ.get("COPYSINK_CHAOS_REPORT"):
        with open(os.environ["COPYSINK_CHAOS_REPORT"], "w") as f:
            json.dump(figures, f, indent=2)

    # exact contents: last write wins (update), first write wins (skip), events exactly once
    for table in COUNTS:
        assert_table_equals(database, table, expected[table])
    assert_events_exactly_once(database, list(range(EVENTS)))
    assert stored_offsets(database, group) == ends
    assert kills >= KILLS and pg_restarts >= 2 and kafka_restarts >= 1
