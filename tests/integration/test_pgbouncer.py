"""The worker behind PgBouncer in transaction mode ([postgres] staging).

A PgBouncer of the test's own (tests/integration/pgbouncer.py) in front of the test
PostgreSQL: pool_mode = transaction, two server connections for more clients than that, handed
out in turn, so that a client's transactions run on whichever server connection is free.

- staging = session: the staging tables the worker created when it connected live on the
  server connections it had then; once PgBouncer replaces those (RECONNECT here; in production
  server_lifetime, server_idle_timeout, a restart of either side, or just another server
  connection of the pool), the first batch that merges finds no staging table. The worker stops
  with an error that names the cause and the key to set, and writes nothing.
- staging = transaction: two workers of two writers each (six client connections over two
  server connections) load entries with keys repeated (updates in one table, skips in the
  other), deletes and rows PostgreSQL rejects (bisection), with a rebalance while they load:
  the tables hold exactly what the entries say, the stored offsets are the end offsets, the
  rejected rows are dead-lettered, no staging table is left behind, and a trigger on
  copysink_offsets shows the committed transactions of one worker on both server connections.

Needs Debian's pgbouncer package (scripts/setup.sh installs it on Debian 12); not in the
compatibility matrix, whose Debian 13 container has no PgBouncer.
"""
import random
import subprocess
import zlib

import msgpack
import psycopg2
import pytest

from conftest import (COMMITTED, STARTED, end_offsets, stored_offsets, wait_for,
                      write_config)
from entries import assert_table_equals, encode, kafka_key, key_of, make_entry
from pgbouncer import PgBouncer

PARTITIONS = 4
MODES = {"memory_entries": "update", "trajectories": "skip"}


@pytest.fixture
def bouncer(tmp_path, database, pg_admin_conninfo):
    dbname = dict(p.split("=", 1) for p in database.split())["dbname"]
    b = PgBouncer(tmp_path / "pgbouncer", pg_admin_conninfo, dbname, pool_size=2).start()
    yield b
    try:
        print(f"--- pgbouncer.log\n{b.log_tail()}")
    finally:
        b.stop()


def migrate(copysink_bin, config, env):
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True, env=env)


def query(conninfo, sql, *params):
    """The rows of one statement, on a connection of its own (closed, not left to the GC)."""
    conn = psycopg2.connect(conninfo)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def staging_tables(conninfo):
    """Temporary copysink staging tables of any session of the database."""
    return sorted(r[0] for r in query(conninfo, "SELECT relname FROM pg_class WHERE "
                                      "relpersistence = 't' AND relname LIKE "
                                      "'copysink\\_%stage\\_%'"))


def test_session_staging_fails_clearly(tmp_path, database, kafka, workers, copysink_bin,
                                       bouncer):
    topic = kafka.topic("memory.entries")
    kafka.create_topics({topic: 1, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    direct = write_config(tmp_path / "direct.ini", bootstrap=kafka.bootstrap,
                          conninfo=database, group=group,
                          tables={"memory_entries": (topic, "update")})
    migrate(copysink_bin, direct, None)
    rng = random.Random(20261203)
    entries = []
    for i in range(20):
        e = make_entry(rng, "memory_entries", i)
        e.update(namespace="ns", key=f"k{i}")
        entries.append(e)
    for e in entries:  # the keys exist: the worker's batch takes the merge
        query(database, "INSERT INTO memory_entries (namespace, key, value) VALUES (%s, %s, "
              "'before')", e["namespace"], e["key"])
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap,
                          conninfo=bouncer.conninfo(application_name="session_worker"),
                          group=group, tables={"memory_entries": (topic, "update")})
    w = workers(config).start(env={"COPYSINK_POSTGRES_STAGING": "session",
                                   "COPYSINK_POSTGRES_WRITERS": "1"})
    w.wait_log(STARTED)  # connected: its staging tables exist on the server connections of now
    old = {s["remote_pid"] for s in bouncer.servers()}
    assert old, "no server connection in the pool"
    assert set(staging_tables(database)) == {"copysink_stage_0"}
    bouncer.admin(f"RECONNECT {bouncer.dbname}")
    wait_for(lambda: not (old & {s["remote_pid"] for s in bouncer.servers()}), 30,
             "PgBouncer to close the server connections the worker connected through")

    kafka.produce([(topic, kafka_key("memory_entries", e), encode(e, True)) for e in entries])
    wait_for(lambda: not w.alive(), 60, "the worker to stop")
    log = w.log_text()
    assert w.proc.returncode == 1, log[-3000:]
    errors = [l for l in log.splitlines() if "level=error" in l]
    assert errors, log[-3000:]
    print(errors[-1])
    assert ('could not write to table \\"memory_entries\\": the staging table '
            '\\"copysink_stage_0\\" this connection created is gone') in errors[-1]
    assert "PgBouncer pool_mode = transaction" in errors[-1]
    assert "set [postgres] staging = transaction" in errors[-1]
    # 3F000 (schema "pg_temp" does not exist) on a server connection that never held a
    # temporary table, 42P01 on one that held others
    assert "SQLSTATE 3F000" in errors[-1] or "SQLSTATE 42P01" in errors[-1]
    assert "will retry" not in log  # stopped at once, not retrying what cannot work
    assert query(database, "SELECT DISTINCT value FROM memory_entries") == [("before",)]
    assert staging_tables(database) == []
    assert stored_offsets(database, group) == {}


def build_input(rng, topics):
    """Messages in production order for both tables: entries of repeated keys, tombstones and
    entries PostgreSQL rejects (keys of their own, so that what a key ends with never depends
    on how the entries were batched). The first 400 of each table are new keys, each once,
    and neither, so that the first batches take the direct COPY. Each message: table, topic,
    partition, key, value, kind (entry, delete or bad) and entry."""
    per_table = []
    for table in MODES:
        out = []
        for i in range(2000):
            r = rng.random()
            n = rng.randrange(250) if i >= 400 else 1000 + i
            e = make_entry(rng, table, i)
            if table == "memory_entries":
                e.update(namespace=f"ns{n % 3}", key=f"k{n}")
            else:
                e.update(trajectory_id=f"traj{n}", step_number=n % 4)
            kind = "entry"
            if r < 0.02 and i >= 400:
                kind = "bad"
                if table == "memory_entries":
                    e.update(namespace="bad", key=f"bad{i}", value=f"bad row {i}")
                else:
                    e.update(trajectory_id=f"bad{i}", step_number=0, action="bad")
            elif r < 0.12 and i >= 400:
                kind = "delete"
            key = kafka_key(table, e)
            out.append({"table": table, "topic": topics[table], "key": key,
                        "partition": zlib.crc32(key) % PARTITIONS, "kind": kind, "entry": e,
                        "value": None if kind == "delete" else encode(e, rng.random() < .5)})
        per_table.append(out)
    # both tables interleaved, each in its own order
    messages = []
    while any(per_table):
        src = rng.choice([t for t in per_table if t])
        messages.append(src.pop(0))
    return messages


def expected_contents(messages):
    """Each entry and delete applied one by one in offset order; rejected entries never."""
    rows = {t: {} for t in MODES}
    for m in messages:
        t, e = m["table"], m["entry"]
        k = key_of(t, e)
        if m["kind"] == "delete":
            rows[t].pop(k, None)
        elif m["kind"] == "entry" and not (MODES[t] == "skip" and k in rows[t]):
            rows[t][k] = e
    return rows


def produce_in_order(kafka, messages):
    positions = kafka.produce([(m["topic"], m["key"], m["value"]) for m in messages],
                              settings={"partitioner": "consistent"})
    for m, (_, p, off) in zip(messages, positions):
        m["offset"] = off
        m["got_partition"] = p


BACKEND_LOG = """
CREATE TABLE backend_log (txid bigint, pid integer, app text);
CREATE FUNCTION log_backend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO backend_log VALUES (txid_current(), pg_backend_pid(),
                                    current_setting('application_name'));
    RETURN NULL;
END$$;
CREATE TRIGGER log_backend AFTER INSERT ON copysink_offsets
    FOR EACH STATEMENT EXECUTE FUNCTION log_backend();
ALTER TABLE memory_entries ADD CONSTRAINT no_bad_value CHECK (value NOT LIKE 'bad row %');
ALTER TABLE trajectories ADD CONSTRAINT no_bad_action CHECK (action <> 'bad');
"""


def test_transaction_staging_exactly_once(tmp_path, database, kafka, workers, copysink_bin,
                                          bouncer):
    rng = random.Random(20261204)
    topics = {t: kafka.topic(t.replace("_", ".")) for t in MODES}
    kafka.create_topics({**{t: PARTITIONS for t in topics.values()},
                         **{t + ".dlq": 1 for t in topics.values()}})
    group = "g-" + kafka.prefix
    tables = {t: (topics[t], MODES[t]) for t in MODES}
    direct = write_config(tmp_path / "direct.ini", bootstrap=kafka.bootstrap,
                          conninfo=database, group=group, tables=tables)
    migrate(copysink_bin, direct, None)
    query(database, BACKEND_LOG)

    messages = build_input(rng, topics)
    expected = expected_contents(messages)
    assert sum(m["kind"] == "bad" for m in messages) > 40
    assert sum(m["kind"] == "delete" for m in messages) > 200

    env = {"COPYSINK_POSTGRES_STAGING": "transaction", "COPYSINK_POSTGRES_WRITERS": "2"}
    configs = [write_config(tmp_path / f"w{i}.ini", bootstrap=kafka.bootstrap,
                            conninfo=bouncer.conninfo(application_name=f"worker{i}"),
                            group=group, tables=tables,
                            batch={"max_rows": 100, "linger_ms": 50})
               for i in (1, 2)]
    servers, clients = set(), set()

    def observe():
        servers.update(s["remote_pid"] for s in bouncer.servers())
        clients.update(c["ptr"] for c in bouncer.clients())

    # the first half for one worker; a second worker joins (a rebalance: partitions move, each
    # continuing from its stored offset) before the second half
    half = len(messages) // 2
    produce_in_order(kafka, messages[:half])
    w1 = workers(configs[0], "worker1").start(env=env)
    w1.wait_log(COMMITTED)
    w2 = workers(configs[1], "worker2").start(env=env)
    kafka.wait_group_balanced(group, 2, {(t, p) for t in topics.values()
                                         for p in range(PARTITIONS)})
    produce_in_order(kafka, messages[half:])
    # the producer's partitioner put each key where build_input's model says (crc32 % n is
    # librdkafka's "consistent" partitioner): one key, one partition, in offset order
    assert all(m["got_partition"] == m["partition"] for m in messages)
    ends = end_offsets(kafka, *topics.values())
    bad = {(m["topic"], m["partition"], m["offset"]) for m in messages if m["kind"] == "bad"}

    def caught_up():
        observe()
        assert w1.alive() and w2.alive(), "a worker exited"
        return stored_offsets(database, group) == ends

    wait_for(caught_up, 300, "the stored offsets to reach the end offsets")
    assert w1.stop() == 0, w1.log_text()[-3000:]
    assert w2.stop() == 0, w2.log_text()[-3000:]
    logs = w1.log_text() + w2.log_text()

    for table in MODES:
        assert_table_equals(database, table, expected[table])
    assert stored_offsets(database, group) == ends
    got = set()
    for topic in topics.values():
        for m in kafka.read_all(topic + ".dlq", sum(1 for b in bad if b[0] == topic)):
            h = {k: v.decode() for k, v in m.headers()}
            assert h["copysink.reason"] == "db_rejected", h
            assert h["copysink.sqlstate"] == "23514", h
            got.add((h["copysink.topic"], int(h["copysink.partition"]),
                     int(h["copysink.offset"])))
    assert got == bad  # at least once: a letter sent again would be the same triple
    assert "rejected rows isolated" in logs  # bisection ran
    assert "/merge" in logs and "/direct" in logs  # both paths, the merge through staging
    assert "42P01" not in logs and "will retry" not in logs
    assert staging_tables(database) == []

    by_app = query(database, "SELECT app, count(DISTINCT txid), count(DISTINCT pid), "
                   "array_agg(DISTINCT pid) FROM backend_log GROUP BY app ORDER BY app")
    print(f"server connections seen in SHOW SERVERS: {sorted(servers)}; client connections "
          f"seen in SHOW CLIENTS: {len(clients)}; committed batches by worker: {by_app}")
    assert [a for a, *_ in by_app] == ["worker1", "worker2"]
    assert len(servers) >= 2 and len(clients) >= 6
    # the committed transactions of each worker ran on more than one server connection
    # (PostgreSQL backend), and all of them on the pool's two
    assert all(n_pids >= 2 for _, _, n_pids, _ in by_app), by_app
    assert len({p for *_, pids in by_app for p in pids}) <= 2, by_app
