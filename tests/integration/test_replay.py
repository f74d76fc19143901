"""Tombstones and `copysink replay` against the real broker and PostgreSQL.

- A tombstone (null value, key = msgpack array of the conflict-key fields) deletes its row;
  entries after it insert the key again; a tombstone without a usable key is dead-lettered.
- `copysink replay --from earliest --until end` rebuilds an empty database to exactly what the
  live worker built, stops by itself, stores no offsets and leaves the live group alone.
- Replaying into the live database moves no row backwards: every row stays as it was.
- `--from TIME` starts at the first offset at or after the time; `--from topic:partition:offset`
  reads only that partition from that offset; `--tables` limits the tables.
"""
import datetime
import math
import random
import subprocess
import time
import uuid

import msgpack
import psycopg2

from conftest import _admin_execute, _with_dbname, stored_offsets, wait_for, write_config
from entries import assert_table_equals, encode, kafka_key, key_of, make_entry, table_contents

DIM = 8
PARTITIONS = 3
MODES = {"memory_entries": "update", "trajectories": "skip"}


def config_for(tmp_path, name, kafka, topics, conninfo, group):
    extra = "".join(f"\n[table {t}]\ntopic = {topics[t]}\non_conflict = {m}\ndim = {DIM}\n"
                    for t, m in MODES.items())
    return write_config(tmp_path / name, bootstrap=kafka.bootstrap, conninfo=conninfo,
                        group=group, tables={}, batch={"max_rows": 200, "linger_ms": 50},
                        extra=extra)


def new_database(admin_conninfo, created):
    name = "cs_" + uuid.uuid4().hex[:12]
    _admin_execute(admin_conninfo, f'CREATE DATABASE "{name}"')
    created.append(name)
    return _with_dbname(admin_conninfo, name)


def apply(ops):
    """ops: [(table, key, entry or None)] in offset order per key -> {table: {key: entry}}."""
    out = {t: {} for t in MODES}
    for table, key, entry in ops:
        if entry is None:
            out[table].pop(key, None)
        elif MODES[table] == "update" or key not in out[table]:
            out[table][key] = entry
    return out


def build(rng, topics, start, n_mem, n_traj, namespace=None):
    """Entries with repeated keys, then tombstones for some keys, then some of them again.
    Returns (records for Kafka.produce, ops for apply())."""
    records, ops = [], []

    def put(table, entry):
        records.append((topics[table], kafka_key(table, entry), encode(entry, rng.random() < 0.5)))
        ops.append((table, key_of(table, entry), entry))

    def delete(table, key):
        records.append((topics[table], msgpack.packb(list(key)), None))
        ops.append((table, key, None))

    for i in range(n_mem):
        e = make_entry(rng, "memory_entries", start + i, DIM)
        if namespace:
            e["namespace"] = namespace
        put("memory_entries", e)
    for i in range(n_traj):
        put("trajectories", make_entry(rng, "trajectories", start + i, DIM))
    for table in MODES:
        keys = sorted({k for t, k, e in ops if t == table and e is not None})
        gone = rng.sample(keys, min(20, len(keys)))
        for k in gone:
            delete(table, k)
        for k in gone[:8]:  # back again after the delete
            e = make_entry(rng, table, start + 10_000, DIM)
            e.update(dict(zip(("namespace", "key") if table == "memory_entries"
                              else ("trajectory_id", "step_number"), k)))
            put(table, e)
    return records, ops


def replay(copysink_bin, config, *args):
    proc = subprocess.run([copysink_bin, "replay", "-c", config, *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replay finished:" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def full_contents(conninfo):
    return {t: table_contents(conninfo, t) for t in MODES}


def test_tombstones_and_replay(tmp_path, database, kafka, workers, copysink_bin,
                               pg_admin_conninfo):
    rng = random.Random(5)
    topics = {t: kafka.topic(t) for t in MODES}
    kafka.create_topics({**{t: PARTITIONS for t in topics.values()},
                         **{t + ".dlq": 1 for t in topics.values()}})
    group = "live-" + kafka.prefix
    live_cfg = config_for(tmp_path, "live.ini", kafka, topics, database, group)
    subprocess.run([copysink_bin, "migrate", "-c", live_cfg], check=True)

    # phase A, plus two tombstones that cannot delete anything: no key, a key of the wrong shape
    records, ops = build(rng, topics, 0, 900, 400)
    records += [(topics["memory_entries"], None, None),
                (topics["memory_entries"], msgpack.packb("just a string"), None)]
    kafka.produce(records)
    expected_a = apply(ops)
    assert sum(len(v) for v in expected_a.values()) > 300

    # the live worker loads it: deleted keys are gone, re-inserted ones are back
    ends = {(t, p): o for t in topics.values() for p, o in kafka.end_offsets(t).items()}
    w = workers(live_cfg, "live").start()
    wait_for(lambda: stored_offsets(database, group) == ends, 120, "the live worker")
    assert w.stop() == 0
    for table in MODES:
        assert_table_equals(database, table, expected_a[table])
    dead = kafka.read_all(topics["memory_entries"] + ".dlq", 2)
    assert len(dead) == 2
    reasons = sorted(dict(m.headers())["copysink.reason"].decode() for m in dead)
    assert reasons == ["malformed", "malformed"]
    errors = sorted(dict(m.headers())["copysink.error"].decode() for m in dead)
    assert "needs a key" in errors[0] and "msgpack array" in errors[1], errors
    committed = {t: kafka.committed(group, t, range(PARTITIONS)) for t in topics.values()}
    live_offsets = stored_offsets(database, group)

    created = []
    try:
        # 1. rebuild an empty database: the same rows, nothing stored, the live group untouched
        db2 = new_database(pg_admin_conninfo, created)
        cfg2 = config_for(tmp_path, "rebuild.ini", kafka, topics, db2, group)
        subprocess.run([copysink_bin, "migrate", "-c", cfg2], check=True)
        out = replay(copysink_bin, cfg2, "--from", "earliest", "--until", "end")
        for table in MODES:
            assert_table_equals(db2, table, expected_a[table])
        assert stored_offsets(db2, group) == {}
        assert stored_offsets(database, group) == live_offsets
        assert {t: kafka.committed(group, t, range(PARTITIONS))
                for t in topics.values()} == committed
        assert "replay finished: " in out

        # 2. replaying into the live database moves no row backwards: every row as it was
        before = full_contents(database)
        replay(copysink_bin, live_cfg, "--from", "earliest", "--until", "end")
        assert full_contents(database) == before

        # 3. --from TIME: only what was produced at or after it
        time.sleep(1.5)
        since = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(0.5)
        records_b, ops_b = build(rng, topics, 50_000, 200, 0, namespace="later")
        kafka.produce(records_b)
        db3 = new_database(pg_admin_conninfo, created)
        cfg3 = config_for(tmp_path, "since.ini", kafka, topics, db3, group)
        subprocess.run([copysink_bin, "migrate", "-c", cfg3], check=True)
        replay(copysink_bin, cfg3, "--from", since.isoformat(timespec="milliseconds"),
               "--until", "end")
        expected_b = apply(ops_b)
        for table in MODES:
            assert_table_equals(db3, table, expected_b[table])

        # 4. --from topic:partition:offset with --tables: that partition from that offset only
        all_ops = ops + ops_b
        topic = topics["memory_entries"]
        db4 = new_database(pg_admin_conninfo, created)
        cfg4 = config_for(tmp_path, "part.ini", kafka, topics, db4, group)
        subprocess.run([copysink_bin, "migrate", "-c", cfg4], check=True)
        start = 100
        replay(copysink_bin, cfg4, "--from", f"{topic}:1:{start}", "--until", "end",
               "--tables", "memory_entries")
        got = table_contents(db4, "memory_entries")
        assert table_contents(db4, "trajectories") == {}
        # expected: the ops of partition 1 at offsets >= start, read back from the topic
        part_ops = []
        for m in kafka.read_all(topic, sum(1 for t, _, _ in all_ops if t == "memory_entries")):
            if m.partition() != 1 or m.offset() < start or m.key() is None:
                continue
            try:
                key = tuple(msgpack.unpackb(m.key()))
            except Exception:
                continue
            if len(key) != 2:
                continue
            part_ops.append((m.offset(), key, m.value()))
        part_ops.sort()
        expected4 = {}
        for _, key, value in part_ops:
            if value is None:
                expected4.pop(key, None)
            else:
                expected4[key] = value
        assert set(got) == set(expected4)
        for key, value in expected4.items():
            entry = msgpack.unpackb(value)
            assert got[key]["value"] == entry["value"], key
    finally:
        for name in created:
            _admin_execute(pg_admin_conninfo, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_replay_progress_bar_on_a_terminal(tmp_path, database, kafka, copysink_bin):
    """On a terminal, `copysink replay --until end` draws a progress bar (percent of the range,
    rows, rows/s, ETA) that only moves forward, then prints its summary with the rows written."""
    import os
    import pty
    import re

    topics = {t: kafka.topic(t) for t in MODES}
    kafka.create_topics({t: PARTITIONS for t in topics.values()})
    n = 30000
    kafka.produce([(topics["memory_entries"], msgpack.packb(["bar", f"k{i}"]),
                    msgpack.packb({"namespace": "bar", "key": f"k{i}", "value": f"v{i}"}))
                   for i in range(n)])
    cfg = config_for(tmp_path, "c.ini", kafka, topics, database, "g-" + kafka.prefix)
    # small batches, so that the replay takes long enough for several bars (one per 0.2 s)
    cfg_text = open(cfg).read().replace("max_rows = 200", "max_rows = 10")
    open(cfg, "w").write(cfg_text)
    subprocess.run([copysink_bin, "migrate", "-c", cfg], check=True)

    master, slave = pty.openpty()
    proc = subprocess.Popen([copysink_bin, "replay", "-c", cfg, "--from", "earliest",
                             "--until", "end", "--tables", "memory_entries"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the replay closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    out = b"".join(chunks).decode("utf-8", "replace")
    bars = re.findall(r"\r\x1b\[K\[([#.]+)\]\s+([\d.]+)%\s+(\d+) rows\s+(\d+) rows/s\s+ETA (\d+):(\d\d)",
                      out)
    print(f"{len(bars)} progress bars drawn")
    assert len(bars) >= 2, out[-2000:]
    percents = [float(b[1]) for b in bars]
    rows = [int(b[2]) for b in bars]
    assert percents == sorted(percents) and rows == sorted(rows), bars
    assert all(0 <= p <= 100 for p in percents) and all(r <= n for r in rows)
    # The bar fills floor(fraction * width) cells and the percent is the same fraction rounded to
    # one decimal, so the fill lies between the floors at either end of that rounding.
    def fill_matches(bar, percent):
        lo, hi = (max(0.0, percent - 0.05) / 100, min(100.0, percent + 0.05) / 100)
        return math.floor(lo * len(bar) - 1e-9) <= bar.count("#") <= math.floor(hi * len(bar) + 1e-9)
    assert all(fill_matches(b[0], float(b[1])) for b in bars), bars
    assert re.search(rf"replay finished: {n} rows written, 0 entries dead-lettered", out), out[-2000:]
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT key, value FROM memory_entries WHERE namespace = 'bar'")
        assert dict(cur.fetchall()) == {f"k{i}": f"v{i}" for i in range(n)}
