"""The chaos test: three workers in one group load an insert-only table (no conflict key, so
a duplicate shows as a second row) and two keyed tables, 3 partitions each, while entries flow
at a paced rate and faults land on workers at work:

  - SIGKILLs of random workers, each followed by a replacement;
  - PostgreSQL immediate restarts during a retry that spans a rebalance: a switch in the
    database (a trigger) fails every write of the insert-only table with a retriable error
    (disk full); once a worker logs "batch not written, will retry", PostgreSQL restarts, a
    another worker is killed (its partitions go to the retrying workers, paused, after the
    session timeout) and a replacement joins (it takes partitions from them); once it holds
    partitions PostgreSQL restarts again; then the switch is turned off and the retried
    batches commit — the moment duplicates appeared in an independent chaos run;
  - PostgreSQL immediate restarts during a rebalance: a worker is started or stopped, and once
    another worker logs a partition "assigned"/"revoked", PostgreSQL restarts;
  - a broker restart;
  - scaling 1 -> 3 at the start and 3 -> 1 at the end.

At the end the tables hold exactly what was produced: each insert-only id once (none missing,
none twice), each keyed table equal to the expected last (update) or first (skip) values, every
column; nothing dead-lettered; the stored offsets equal the end offsets. The figures (lost,
duplicated, dead-lettered ...) are printed as one JSON line, written to COPYSINK_CHAOS_REPORT
when set (docs/results/chaos.json keeps the last run's).

Size, with environment overrides: COPYSINK_CHAOS_ENTRIES (default 40000, 40 % of them
insert-only), COPYSINK_CHAOS_RATE (entries/s, default 400), COPYSINK_CHAOS_KILLS (default 8),
COPYSINK_CHAOS_PG_RETRY (restart pairs during a retry, default 3), COPYSINK_CHAOS_PG_REBALANCE
(default 2), COPYSINK_CHAOS_KAFKA (broker restarts, default 1). Embeddings use dim = 16 to keep
the run short; the 384-dimensional path is covered by test_e2e.py.
"""
import json
import os
import random
import re
import subprocess
import threading
import time
import zlib

import msgpack

from conftest import (ASSIGNED, COMMITTED, REBALANCED, RETRYING, assert_events_exactly_once,
                      end_offsets, stored_offsets, wait_for, write_config)
from entries import (assert_table_equals, encode, expected_rows, kafka_key, make_entry,
                     table_contents)

DIM = 16
PARTITIONS = 3
MODES = {"memory_entries": "update", "trajectories": "skip"}
ENTRIES = int(os.environ.get("COPYSINK_CHAOS_ENTRIES", "40000"))
RATE = int(os.environ.get("COPYSINK_CHAOS_RATE", "400"))
KILLS = int(os.environ.get("COPYSINK_CHAOS_KILLS", "8"))
PG_RETRY = int(os.environ.get("COPYSINK_CHAOS_PG_RETRY", "3"))
PG_REBALANCE = int(os.environ.get("COPYSINK_CHAOS_PG_REBALANCE", "2"))
KAFKA_RESTARTS = int(os.environ.get("COPYSINK_CHAOS_KAFKA", "1"))
CATCH_UP_S = 60  # the backlog at the end is a few seconds' worth
EVENTS = ENTRIES * 2 // 5
COUNTS = {"memory_entries": (ENTRIES - EVENTS) // 2,
          "trajectories": ENTRIES - EVENTS - (ENTRIES - EVENTS) // 2}


# A switch that makes every write of the insert-only table fail with a retriable error
# (disk full), so that a retry lasts as long as the test needs.
FAULT_SQL = """
CREATE TABLE chaos_fault (active boolean NOT NULL);
INSERT INTO chaos_fault VALUES (false);
CREATE FUNCTION chaos_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT active FROM chaos_fault) THEN
        RAISE EXCEPTION 'chaos: injected fault' USING ERRCODE = '53100';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_fault BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION chaos_fault();
"""


def execute(conninfo, sql):
    """Run sql in its own transaction; False if PostgreSQL is not there (restarting)."""
    import psycopg2
    try:
        with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
            cur.execute(sql)
        conn.close()
        return True
    except psycopg2.OperationalError:
        return False


def schedule(rng):
    """The faults in order: the kinds spread over the run, kills between them."""
    special = (["pg_retry"] * PG_RETRY + ["pg_rebalance"] * PG_REBALANCE +
               ["kafka"] * KAFKA_RESTARTS)
    rng.shuffle(special)
    faults = ["kill"] * KILLS
    for i, kind in enumerate(special):
        faults.insert((i + 1) * len(faults) // (len(special) + 1) + i, kind)
    return faults


def make_messages(rng, topics):
    """(table, topic, partition, key, value, entry) in production order; each key stays in
    one partition, so its entries apply in production order."""
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
    return messages


class Feeder(threading.Thread):
    """Produces the messages at RATE per second, holding back (at most 3 s a chunk) while it
    is ahead of the fault schedule, so that entries keep arriving until the last fault."""

    CHUNK = 500

    def __init__(self, bootstrap, messages, nfaults):
        super().__init__(daemon=True)
        self.bootstrap, self.messages, self.nfaults = bootstrap, messages, nfaults
        self.faults = 0  # faults injected so far (the test's loop moves it)
        self.errors = []

    def run(self):
        from confluent_kafka import Producer
        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                      "linger.ms": 20, "compression.type": "lz4",
                      "message.timeout.ms": 300000})
        t0 = time.time()
        for j, (_, topic, part, key, value, _) in enumerate(self.messages):
            while True:
                try:
                    p.produce(topic, key=key, value=value, partition=part,
                              on_delivery=lambda err, msg: err and self.errors.append(err))
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
            if j % self.CHUNK == 0:
                ahead = t0 + j / RATE - time.time()
                if ahead > 0:
                    time.sleep(ahead)
                c, until = j // self.CHUNK, time.time() + 3
                while (self.faults < c * self.nfaults * self.CHUNK // len(self.messages) and
                       time.time() < until):
                    time.sleep(0.05)
        if p.flush(300) != 0:
            self.errors.append("not delivered within 300 s")


def test_chaos(tmp_path, database, kafka, workers, copysink_bin, servers):
    rng = random.Random(int(os.environ.get("COPYSINK_CHAOS_SEED", "7")))
    topics = {t: kafka.topic(t) for t in list(COUNTS) + ["events"]}
    kafka.create_topics({**{t: PARTITIONS for t in topics.values()},
                         **{t + ".dlq": 1 for t in topics.values()}})
    group = "chaos-" + kafka.prefix
    extra = "".join(f"\n[table {t}]\ntopic = {topics[t]}\non_conflict = {m}\ndim = {DIM}\n"
                    for t, m in MODES.items())
    extra += (f"\n[table events]\ntopic = {topics['events']}\n"
              "columns = id bigint not null, producer text not null, payload jsonb\n")
    config = write_config(tmp_path / "chaos.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={}, batch={"max_rows": 500, "linger_ms": 100},
                          kafka_settings={"session.timeout.ms": 2000,
                                          "heartbeat.interval.ms": 400},
                          extra=extra)
    text = open(config).read().replace(
        "[worker]\n", "[worker]\nretry_backoff_ms = 200\nretry_backoff_max_ms = 1000\n")
    open(config, "w").write(text)
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)
    execute(database, FAULT_SQL)
    partitions = {(t, p) for t in topics.values() for p in range(PARTITIONS)}

    messages = make_messages(rng, topics)
    expected = expected_rows([(t, e) for t, _, _, _, _, e in messages if t != "events"], MODES)
    faults = schedule(rng)

    serial = [0]
    figures = {"kills": 0, "postgres_immediate_restarts": 0, "kafka_restarts": 0,
               "retries_seen": 0, "rebalances_during_a_retry": 0, "joined_while_others_retry": 0,
               "restarts_during_a_rebalance": 0, "faults_on_a_worker_at_work": 0,
               "sigterm_exits_not_0": []}

    def start():
        serial[0] += 1
        return workers(config, f"chaos-{serial[0]}").start()

    def sigterm(w):
        code = w.stop(timeout=60)
        if code != 0:
            figures["sigterm_exits_not_0"].append(code)
            print(f"{w.log_path} exited with {code} on SIGTERM:\n" + w.log_text()[-1500:])

    def progress():
        try:
            return sum(stored_offsets(database, group).values())
        except Exception:  # PostgreSQL restarting
            return None

    def wait_for_progress(pool, since, timeout=60):
        """True once the stored offsets have moved past `since` (the workers are at work)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for w in pool:
                assert w.alive(), "a worker exited by itself:\n" + w.log_text()[-3000:]
            now = progress()
            if now is not None and now > since:
                return True
            time.sleep(0.05)
        return False

    def wait_any(pool, pattern, marks, timeout):
        """The first worker of `pool` whose log matches `pattern` after its mark, or None."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for w in pool:
                if re.search(pattern, w.log_text(marks[w])):
                    return w
            time.sleep(0.05)
        return None

    def kill_and_replace(pool):
        """SIGKILL a random worker, start a replacement in its place."""
        i = rng.randrange(len(pool))
        pool[i].kill()
        figures["kills"] += 1
        pool[i] = start()

    def set_fault(on):
        """Switch the injected write fault on or off (retrying while PostgreSQL restarts)."""
        wait_for(lambda: execute(database, f"UPDATE chaos_fault SET active = {on}"), 30,
                 "PostgreSQL to take the fault switch")

    def pg_during_retry(pool):
        """A rebalance while a worker retries, PostgreSQL restarting twice meanwhile: the
        fault switch fails every write of the insert-only table (disk full, a retriable
        error) until switched off. Once a worker logs "batch not written, will retry",
        PostgreSQL restarts (immediate) and another worker is killed: after the session
        timeout its partitions go to the retrying workers; a replacement joins and takes
        partitions from them; once it holds partitions, PostgreSQL restarts again; then the
        fault ends and the retried batches commit."""
        marks = {w: w.log_size() for w in pool}

        def retried_across_a_rebalance(w):
            """w logged a partition assigned/revoked/lost after its first retry line since
            the mark, before its next committed batch."""
            tail = w.log_text(marks.setdefault(w, 0))
            retry = re.search(RETRYING, tail)
            if retry is None:
                return False
            tail = tail[retry.end():]
            moved, done = re.search(REBALANCED, tail), re.search(COMMITTED, tail)
            return moved is not None and (done is None or moved.start() < done.start())

        set_fault(True)
        try:
            retrying = wait_any(pool, RETRYING, marks, 30)
            assert retrying is not None, "no worker retried with the fault on"
            figures["retries_seen"] += 1
            servers.pg_restart_immediate()
            figures["postgres_immediate_restarts"] += 1
            # the killed worker's partitions go to the retrying ones after the session
            # timeout (assigned while retrying), then a new worker takes some back (revoked)
            victim = rng.choice([w for w in pool if w is not retrying])
            victim.kill()
            figures["kills"] += 1
            pool.remove(victim)
            try:
                wait_for(lambda: any(retried_across_a_rebalance(w) for w in pool), 15,
                         "a retrying worker to be assigned the killed worker's partitions")
            except AssertionError:
                pass  # counted below
            joiner = start()
            marks[joiner] = 0
            pool.append(joiner)
            try:
                joiner.wait_log(ASSIGNED, timeout=20)
                figures["joined_while_others_retry"] += 1
            except AssertionError:
                pass  # counted: the retrying workers held the group up
            servers.pg_restart_immediate()
            figures["postgres_immediate_restarts"] += 1
            figures["rebalances_during_a_retry"] += any(retried_across_a_rebalance(w)
                                                        for w in pool)
        finally:
            set_fault(False)

    def pg_during_rebalance(pool, n):
        marks = {w: w.log_size() for w in pool}
        if n % 2 == 0:
            pool.append(start())  # a fourth worker: the others give partitions up
            others = pool[:-1]
        else:
            sigterm(pool.pop(rng.randrange(len(pool))))  # the others take its partitions
            others = pool
        if wait_any(others, REBALANCED, marks, 30) is not None:
            figures["restarts_during_a_rebalance"] += 1
        servers.pg_restart_immediate()
        figures["postgres_immediate_restarts"] += 1
        # back to three
        if len(pool) > 3:
            sigterm(pool.pop(0))
        while len(pool) < 3:
            pool.append(start())

    started = time.time()
    feeder = Feeder(kafka.bootstrap, messages, len(faults) + 2)
    feeder.start()

    # scale 1 -> 3
    pool = [start()]
    pool[0].wait_log(ASSIGNED, timeout=60)
    wait_for_progress(pool, 0)
    pool += [start(), start()]
    for w in pool:
        w.wait_log(ASSIGNED, timeout=60)
    kafka.wait_group_balanced(group, 3, partitions, timeout=60)
    feeder.faults += 1

    rebalance_n = 0
    for kind in faults:
        since = progress() or 0
        figures["faults_on_a_worker_at_work"] += wait_for_progress(pool, since)
        time.sleep(rng.uniform(0, 0.5))
        if kind == "kill":
            kill_and_replace(pool)
        elif kind == "pg_retry":
            pg_during_retry(pool)
        elif kind == "pg_rebalance":
            pg_during_rebalance(pool, rebalance_n)
            rebalance_n += 1
        else:
            servers.kafka_restart()
            figures["kafka_restarts"] += 1
        feeder.faults += 1

    # scale 3 -> 1 while entries still arrive
    wait_for_progress(pool, progress() or 0)
    for w in pool[1:]:
        sigterm(w)
    pool = pool[:1]
    feeder.faults += 1
    feeder.join()
    assert not feeder.errors, feeder.errors[:3]

    last = pool[0]
    ends = end_offsets(kafka, *topics.values())
    try:
        wait_for(lambda: stored_offsets(database, group) == ends or not last.alive(),
                 CATCH_UP_S, "the last worker to catch up")
    except AssertionError:
        pass  # reported below: which partitions stayed behind
    stored = stored_offsets(database, group)
    behind = {f"{t}[{p}]": [stored.get((t, p), 0), end] for (t, p), end in sorted(ends.items())
              if stored.get((t, p), 0) != end}
    assert last.alive(), last.log_text()[-3000:]
    sigterm(last)

    # the figures first (printed even when a check below fails), then the exact checks
    lost = wrong = 0
    for table in COUNTS:
        got = table_contents(database, table)
        lost += len(set(expected[table]) - set(got))
        wrong += len(set(got) - set(expected[table]))
    import psycopg2
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM events")
        ids = [r[0] for r in cur.fetchall()]
    lost += len(set(range(EVENTS)) - set(ids))
    duplicated = len(ids) - len(set(ids))
    dead_lettered = sum(len(kafka.read_all(t + ".dlq", 0, timeout=1)) for t in topics.values())
    commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)),
                             "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "commit": commit.stdout.strip() or "unknown",
              "seed": int(os.environ.get("COPYSINK_CHAOS_SEED", "7")),
              "seconds": round(time.time() - started, 1),
              "entries": ENTRIES,
              "entries_per_table": {**COUNTS, "events (insert-only)": EVENTS},
              "workers": "1 -> 3 -> 1", "partitions_per_topic": PARTITIONS,
              **figures,
              "lost": lost, "duplicated": duplicated, "unexpected_keys": wrong,
              "dead_lettered": dead_lettered,
              "stored_offsets_equal_end_offsets": stored_offsets(database, group) == ends,
              "partitions_behind": behind,  # [stored, end] of any that never caught up
              "checked": ["each keyed table equals its expected contents, every column",
                          "the insert-only table holds every id exactly once",
                          "no entry on any dead-letter topic",
                          "stored offsets equal the end offsets",
                          "every SIGTERM exits 0"]}
    print("chaos figures:", json.dumps(report))
    if os.environ.get("COPYSINK_CHAOS_REPORT"):
        with open(os.environ["COPYSINK_CHAOS_REPORT"], "w") as f:
            json.dump(report, f, indent=2)

    assert not behind, (f"partitions never caught up within {CATCH_UP_S} s after the "
                        f"last fault ([stored, end]): {behind}")
    assert_events_exactly_once(database, list(range(EVENTS)))
    for table in COUNTS:
        assert_table_equals(database, table, expected[table])
    assert stored_offsets(database, group) == ends
    assert dead_lettered == 0  # the entries are all valid
    assert figures["sigterm_exits_not_0"] == [], figures["sigterm_exits_not_0"]
    assert figures["kills"] >= KILLS + figures["retries_seen"]
    assert figures["postgres_immediate_restarts"] >= PG_RETRY + PG_REBALANCE
    assert figures["kafka_restarts"] == KAFKA_RESTARTS
    assert figures["faults_on_a_worker_at_work"] == len(faults)
