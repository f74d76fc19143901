"""The chaos test: while 100,000 entries are produced across the three tables and an
insert-only table, the worker is killed with SIGKILL at random moments (at least 20 times),
PostgreSQL restarts with an immediate shutdown (twice) and the Kafka broker restarts (once).
At the end every table equals the expected contents exactly, no entry was dead-lettered and the
stored offsets equal the end offsets.

Every fault lands on a worker at work: before each one the test waits until the current worker
has committed a batch since it started (or since the last fault), then waits a random 0-0.8 s,
so the fault falls inside its next batches (filling, COPY, merge or commit). Production is paced
by the faults, so that new entries keep arriving until the last one. The broker's
group.min.session.timeout.ms is lowered (scripts/kafka.sh) so that a killed worker leaves the
group within 2 s instead of 6.

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
                          kafka_settings={"session.timeout.ms": 2000,
                                          "heartbeat.interval.ms": 400},
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
    faults = [0]  # faults injected so far; the feeder keeps pace with them
    FAULTS, CHUNK = KILLS + 3, 2000

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
            if j % CHUNK == 0:
                # chunk c waits until its share of the faults has happened (at most 3 s), so
                # entries keep coming until the last fault
                c, wait_until = j // CHUNK, time.time() + 3
                while (faults[0] < c * FAULTS * CHUNK // len(messages) and
                       time.time() < wait_until):
                    time.sleep(0.05)
        assert p.flush(300) == 0
        produced.set()

    def committed_so_far():
        try:
            return sum(stored_offsets(database, group).values())
        except Exception:  # PostgreSQL restarting
            return None

    def wait_for_progress(since, timeout=60):
        """True once the stored offsets have moved past `since` (the worker is at work)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert w.alive(), "a worker exited by itself:\n" + w.log_text()[-3000:]
            now = committed_so_far()
            if now is not None and now > since:
                return True
            time.sleep(0.05)
        return False

    started = time.time()
    feeder = threading.Thread(target=feed)
    feeder.start()
    kills = pg_restarts = kafka_restarts = at_work = 0
    w = workers(config, "chaos-0").start()
    for step in range(1, FAULTS + 1):
        since = committed_so_far() or 0
        at_work += wait_for_progress(since)
        time.sleep(rng.uniform(0, 0.8))
        if step in (6, 16):
            servers.pg_restart_immediate()
            pg_restarts += 1
        elif step == 11:
            servers.kafka_restart()
            kafka_restarts += 1
        else:
            w.kill()
            kills += 1
            w = workers(config, f"chaos-{kills}").start()
        faults[0] += 1
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
    dead_lettered = sum(len(kafka.read_all(t + ".dlq", 0, timeout=1)) for t in topics.values())
    figures = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.time() - started, 1),
               "entries": sum(COUNTS.values()) + EVENTS,
               "entries_per_table": {**COUNTS, "events (insert-only)": EVENTS},
               "kills": kills,
               "postgres_immediate_restarts": pg_restarts, "kafka_restarts": kafka_restarts,
               "faults_on_a_worker_at_work": at_work,
               "lost": lost, "duplicated": duplicated, "unexpected_keys": wrong,
               "dead_lettered": dead_lettered,
               "stored_offsets_equal_end_offsets": stored_offsets(database, group) == ends,
               "checked": ["each table equals its expected contents, every column",
                           "the insert-only table holds every id exactly once",
                           "no entry on any dead-letter topic",
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
    assert at_work == kills + pg_restarts + kafka_restarts
    assert dead_lettered == 0  # the entries are all valid
