"""Reliability under real faults: killed workers, a stalled zombie, SIGTERM, a PostgreSQL
outage, a broker restart, scaling the group up and down. An insert-only table (no conflict
key) makes any duplicate visible as a second row."""
import re
import signal
import subprocess
import threading
import time
import urllib.request

from conftest import (ASSIGNED, RETRYING, assert_events_exactly_once, end_offsets, events_config,
                      free_port, metric, produce_events, stored_offsets, wait_for)



# the test broker allows sessions from 1 s (scripts/kafka.sh): a worker that was killed or
# exited at once leaves the group within seconds
FAST_SESSION = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500}

def migrate(copysink_bin, config):
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_killed_between_db_commit_and_kafka_commit(tmp_path, database, kafka, workers,
                                                   copysink_bin):
    """SIGKILL right after the PostgreSQL commit, before the Kafka commit, three times:
    the stored offsets are the truth, so every entry is in the table exactly once."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    # a short session: the killed worker's membership ends within seconds, not 45 s
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 300, "linger_ms": 50},
                           kafka_settings=FAST_SESSION)
    migrate(copysink_bin, config)
    ids = list(range(3000))
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)

    import os
    for attempt in range(3):
        os.environ["COPYSINK_TEST_KILL_AFTER_COMMITS"] = str(attempt + 1)
        try:
            w = workers(config, f"killed{attempt}").start()
            w.proc.wait(timeout=120)
        finally:
            del os.environ["COPYSINK_TEST_KILL_AFTER_COMMITS"]
        assert w.proc.returncode == -signal.SIGKILL, w.log_text()[-2000:]
        w.log.close()
        w.proc = None
        # committed in PostgreSQL, and Kafka's committed offsets lag behind
        stored = stored_offsets(database, group)
        assert stored, "the killed worker committed nothing to PostgreSQL"
        committed = {}
        for (t, p) in ends:
            committed.update(kafka.committed(group, t, [p]))
        assert any(committed.get(p, -1001) < o for (t, p), o in stored.items()), \
            "Kafka had every offset already: the kill came too late to test anything"

    w = workers(config, "final").start()
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120, "catch-up")
    assert w.stop() == 0, w.log_text()[-3000:]
    assert_events_exactly_once(database, ids)


def test_zombie_is_fenced(tmp_path, database, kafka, workers, copysink_bin):
    """Worker A holds a batch and stalls (SIGSTOP) past its session timeout; worker B takes
    the partitions over and commits. When A resumes it must not commit its stale batch."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 2})
    group = "g-" + kafka.prefix
    fast = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    port = free_port()
    cfg_a = events_config(tmp_path, "a.ini", kafka=kafka, conninfo=database, topic=topic,
                          group=group, batch={"max_rows": 100000, "linger_ms": 6000,
                                              "write_when_idle": "off"},
                          kafka_settings=fast, http_listen=f"127.0.0.1:{port}")
    cfg_b = events_config(tmp_path, "b.ini", kafka=kafka, conninfo=database, topic=topic,
                          group=group, batch={"max_rows": 100000, "linger_ms": 200},
                          kafka_settings=fast)
    migrate(copysink_bin, cfg_a)
    ids = list(range(1000))

    a = workers(cfg_a, "a").start()
    a.wait_log(ASSIGNED, timeout=60, count=2)
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)
    # A has consumed everything into its batch (linger is 6 s), and written nothing yet
    wait_for(lambda: metric(port, "copysink_messages_total") == len(ids), 5,
             "A to consume every entry")
    assert stored_offsets(database, group) == {}, "A wrote before its linger: nothing to test"
    a.proc.send_signal(signal.SIGSTOP)
    b = workers(cfg_b, "b").start()
    wait_for(lambda: stored_offsets(database, group) == ends, 120, "B to commit everything")
    a.proc.send_signal(signal.SIGCONT)
    # A's linger has long passed: it writes (fenced) or learns it lost the partitions
    a.wait_log(r"fenced|\] lost", timeout=60)
    assert a.alive() and b.alive()
    assert b.stop() == 0
    assert a.stop() == 0
    assert_events_exactly_once(database, ids)
    assert stored_offsets(database, group) == ends


def test_zombie_batch_is_fenced(tmp_path, database, kafka, workers, copysink_bin):
    """The fenced path, forced: worker A's loop stalls (the COPYSINK_TEST_STALL_BEFORE_WRITE_MS
    hook) holding a full batch, so it polls no more and librdkafka takes it out of the group
    after max.poll.interval.ms; worker B gets the partitions and commits everything. When A's
    stall ends it writes the batch before it can hear of the rebalance: the offsets update
    finds B's offsets, not the ones A's batch started from, and rolls the transaction back."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 2})
    group = "g-" + kafka.prefix
    fast = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 400,
            "max.poll.interval.ms": 3000}
    cfg_a = events_config(tmp_path, "a.ini", kafka=kafka, conninfo=database, topic=topic,
                          group=group, batch={"max_rows": 100000, "linger_ms": 500},
                          kafka_settings=fast)
    cfg_b = events_config(tmp_path, "b.ini", kafka=kafka, conninfo=database, topic=topic,
                          group=group, batch={"max_rows": 100000, "linger_ms": 200},
                          kafka_settings=fast)
    migrate(copysink_bin, cfg_a)
    ids = list(range(1000))

    a = workers(cfg_a, "a").start(env={"COPYSINK_TEST_STALL_BEFORE_WRITE_MS": "12000"})
    a.wait_log(ASSIGNED, timeout=60, count=2)
    b = workers(cfg_b, "b").start()
    # B has joined and taken one partition; A holds the other
    b.wait_log(ASSIGNED, timeout=60)
    kafka.wait_group_balanced(group, 2, {(topic, 0), (topic, 1)}, timeout=60)
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends, 60, "B to commit everything")
    wait_for(lambda: "batch dropped: partitions fenced" in a.log_text() or not a.alive(), 60,
             "A's stale batch to be fenced")
    assert a.alive() and b.alive()
    assert b.stop() == 0
    assert a.stop() == 0
    assert "batch committed" not in a.log_text(), a.log_text()[-3000:]
    assert_events_exactly_once(database, ids)
    assert stored_offsets(database, group) == ends


def test_sigterm_writes_pending_batch(tmp_path, database, kafka, workers, copysink_bin):
    """SIGTERM with a batch pending (long linger): it is written and committed, exit 0."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    port = free_port()
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 100000, "linger_ms": 60000,
                                               "write_when_idle": "off"},
                           http_listen=f"127.0.0.1:{port}")
    migrate(copysink_bin, config)
    w = workers(config).start()
    w.wait_log(ASSIGNED, timeout=60, count=3)
    ids = list(range(2000))
    produce_events(kafka, topic, ids)
    wait_for(lambda: metric(port, "copysink_messages_total") == len(ids), 30,
             "the worker to consume every entry")
    assert stored_offsets(database, group) == {}, "nothing may be written before linger_ms"
    t0 = time.time()
    assert w.stop(timeout=30) == 0, w.log_text()[-3000:]
    assert time.time() - t0 < 25
    assert stored_offsets(database, group) == end_offsets(kafka, topic)
    assert_events_exactly_once(database, ids)


def test_sigterm_after_topic_deleted(tmp_path, database, kafka, workers, copysink_bin):
    """The topic is deleted while the worker holds its partitions, then SIGTERM: the worker
    exits within its grace period and the close guard's 5 s, whatever librdkafka does (2.0.2
    waited in rd_kafka_destroy() for ever here). Exit 0 when the Kafka client closes, 1 with
    the guard's error when it does not; every entry it committed is in the table once."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100},
                           kafka_settings=FAST_SESSION)
    migrate(copysink_bin, config)
    w = workers(config).start()
    w.wait_log(ASSIGNED, timeout=60, count=3)
    ids = list(range(3000))
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends, 60, "every offset stored")
    mark = w.log_size()
    for f in kafka.admin.delete_topics([topic]).values():
        f.result(timeout=60)
    w.wait_log(r"topic does not exist|Unknown topic or partition|no longer available",
               timeout=60, since=mark)
    w.proc.send_signal(signal.SIGTERM)
    try:
        rc = w.proc.wait(timeout=60)  # grace 20 s + the guard's 5 s, with room
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker did not exit after SIGTERM:\n" + w.log_text()[-3000:])
    log = w.log_text()
    assert rc in (0, 1), log[-3000:]
    if rc == 1:
        # the guard names the step it found the close in (librdkafka 2.0.2: rd_kafka_destroy)
        assert re.search(r"did not close within 5000 ms of the loop's end \(at: [a-z]", log), \
            log[-3000:]
    else:
        assert 'msg="copysink stopped"' in log, log[-3000:]
    assert_events_exactly_once(database, ids)


def test_write_when_idle(tmp_path, database, kafka, workers, copysink_bin):
    """write_when_idle = on, the default (the config leaves it out): with linger_ms at a
    minute, entries are written as soon as they arrive (the test above shows that nothing is
    written before linger_ms with it off); a backlog is still written in batches of many
    entries, not one transaction per entry."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 100000, "linger_ms": 60000})
    assert "write_when_idle" not in open(config).read()
    migrate(copysink_bin, config)
    backlog = list(range(20000))
    produce_events(kafka, topic, backlog)
    w = workers(config).start()
    wait_for(lambda: stored_offsets(database, group) == end_offsets(kafka, topic), 30,
             "the backlog written long before linger_ms")
    batches = w.log_text().count('msg="batch committed"')
    assert 0 < batches <= len(backlog) // 100, f"{batches} batches for {len(backlog)} entries"
    for round_ in range(3):
        ids = list(range(100000 * (round_ + 1), 100000 * (round_ + 1) + 10))
        produce_events(kafka, topic, ids)
        wait_for(lambda: stored_offsets(database, group) == end_offsets(kafka, topic), 20,
                 "new entries written long before linger_ms")
        backlog += ids
    assert w.stop() == 0
    assert_events_exactly_once(database, backlog)


def test_large_message_setting(tmp_path, database, kafka, workers, copysink_bin):
    """[kafka] message.max.bytes above the worker's own fetch size (max_bytes / 8): the
    consumer still starts (librdkafka refuses fetch.max.bytes < message.max.bytes) and
    writes."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 1})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, kafka_settings={"message.max.bytes": "20000000"})
    migrate(copysink_bin, config)
    w = workers(config).start()
    ids = list(range(100))
    produce_events(kafka, topic, ids)
    wait_for(lambda: stored_offsets(database, group) == end_offsets(kafka, topic), 30,
             "entries written")
    assert w.stop() == 0, w.log_text()[-2000:]
    assert_events_exactly_once(database, ids)


def test_postgres_outage(tmp_path, database, kafka, workers, copysink_bin, servers):
    """PostgreSQL stops while entries flow: the worker retries (not ready meanwhile), and
    everything lands exactly once when it is back."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    port = free_port()
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100},
                           http_listen=f"127.0.0.1:{port}")
    migrate(copysink_bin, config)
    w = workers(config).start()
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 60, "ready")
    produce_events(kafka, topic, range(0, 1000))
    wait_for(lambda: sum(stored_offsets(database, group).values()) == 1000, 60, "first part")
    mark = w.log_size()
    servers.pg_stop()
    try:
        produce_events(kafka, topic, range(1000, 3000))
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 503, 60,
                 "readyz to report the outage")
        assert http_status(f"http://127.0.0.1:{port}/healthz") == 200
        # it keeps retrying (fails if it exits instead)
        w.wait_log(RETRYING, timeout=60, since=mark, count=3)
    finally:
        servers.pg_start()
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends, 120, "catch-up after the outage")
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 30, "ready again")
    assert w.stop() == 0
    assert "will retry" in w.log_text()
    assert_events_exactly_once(database, list(range(3000)))


def test_second_signal_exits_at_once(tmp_path, database, kafka, workers, copysink_bin,
                                     servers):
    """SIGTERM while PostgreSQL is down: the worker drains, retrying within its grace period;
    a second signal (SIGINT) ends it at once. What it held was not committed, so the next
    worker reads it again: every entry exactly once."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 2})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100},
                           kafka_settings=FAST_SESSION)
    migrate(copysink_bin, config)
    w = workers(config).start()
    wait_for(lambda: w.log_text().count("assigned") >= 2, 60, "partitions")
    servers.pg_stop()
    try:
        produce_events(kafka, topic, range(600))
        wait_for(lambda: "will retry" in w.log_text() or not w.alive(), 60, "a retry")
        w.proc.send_signal(signal.SIGTERM)
        drain = w.wait_log("stopping: writing what is pending", timeout=30)[0]
        # the drain waits for PostgreSQL within its grace period: it retries, alive
        w.wait_log(RETRYING, timeout=10,
                   since=len(w.log_text()[:drain.end()].encode()))
        assert w.alive(), "the drain must wait for PostgreSQL within its grace period"
        t0 = time.time()
        w.proc.send_signal(signal.SIGINT)
        rc = w.proc.wait(timeout=10)
        assert time.time() - t0 < 3, "a second signal must exit at once"
        assert rc == 128 + signal.SIGINT
    finally:
        servers.pg_start()
    assert stored_offsets(database, group) == {}
    w2 = workers(config, "w2").start()
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w2.alive(), 120, "catch-up")
    assert w2.stop() == 0, w2.log_text()[-3000:]
    assert_events_exactly_once(database, list(range(600)))


def test_broker_restart(tmp_path, database, kafka, workers, copysink_bin, servers):
    """The broker restarts while the worker runs: it waits, resumes and loses nothing."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100})
    migrate(copysink_bin, config)
    w = workers(config).start()
    produce_events(kafka, topic, range(0, 1500))
    servers.kafka_restart()
    produce_events(kafka, topic, range(1500, 3000))
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 180, "catch-up")
    assert w.stop() == 0, w.log_text()[-3000:]
    assert_events_exactly_once(database, list(range(3000)))


# librdkafka's debug line for each reconnect it delays (debug context "broker")
RECONNECT_DELAY = re.compile(r"Delaying next reconnect by (\d+)ms")


def test_broker_outage_then_sigterm(tmp_path, database, kafka, workers, copysink_bin, servers):
    """The broker stays down until the worker's consumer has failed to reconnect eight times,
    long enough for librdkafka's doubling backoff to pass 1 s, then comes back. Every
    connection of the worker waits at most reconnect.backoff.max.ms (copysink's default 1 s;
    librdkafka's own, 10 s, left the group coordinator's connection down for up to 10 s after
    the broker was back, and a SIGTERM then found the close waiting for the Kafka-side offset
    commits queued on it past the close guard: exit 1). The worker catches up, exits 0 on
    SIGTERM, and every entry is there once."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100},
                           kafka_settings={"debug": "broker"})
    migrate(copysink_bin, config)
    w = workers(config).start(env={"COPYSINK_WORKER_LOG_LEVEL": "debug"})
    produce_events(kafka, topic, range(0, 1500))
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120, "catch-up")
    mark = w.log_size()
    servers.kafka_stop()
    w.wait_log(r"Delaying next reconnect by \d+ms[^\n]*client=copysink#consumer", since=mark,
               count=8, timeout=120)
    servers.kafka_start()
    produce_events(kafka, topic, range(1500, 3000))
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "catch-up after the outage")
    assert w.stop() == 0, w.log_text()[-3000:]
    delays = [int(d) for d in RECONNECT_DELAY.findall(w.log_text())]
    assert len(delays) >= 8, "no reconnect delays logged: nothing checked"
    assert max(delays) <= 1000, f"a reconnect waited {max(delays)} ms: {sorted(delays)[-5:]}"
    assert_events_exactly_once(database, list(range(3000)))


def test_scale_one_three_one(tmp_path, database, kafka, workers, copysink_bin):
    """From one worker to three and back to one while entries flow (cooperative rebalancing):
    nothing lost, nothing duplicated."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 6})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 200, "linger_ms": 100})
    migrate(copysink_bin, config)
    total = 12000
    done = threading.Event()

    def feed():
        for start in range(0, total, 500):
            produce_events(kafka, topic, range(start, start + 500))
            time.sleep(0.4)
        done.set()

    first = workers(config, "w1").start()
    feeder = threading.Thread(target=feed)
    feeder.start()
    first.wait_log(ASSIGNED, timeout=60, count=6)
    wait_for(lambda: stored_offsets(database, group), 60, "the first worker's first batch")
    more = [workers(config, f"w{i}").start() for i in (2, 3)]
    # the two joined, each holds partitions and the first gave some up
    for m in more:
        m.wait_log(ASSIGNED, timeout=60)
    kafka.wait_group_balanced(group, 3, {(topic, p) for p in range(6)}, timeout=60)
    # the group's description can show the new assignment before the first worker's loop has
    # acted on its revocation and logged it. With librdkafka 2.8.0 (cooperative-sticky) the
    # first worker's partitions were once reported lost instead (its generation was gone): it
    # gives them up without its drain, and what it had not committed is read again by their new
    # owners, which the exactly-once check below covers
    first.wait_log(r"\] (?:revoked|lost)", timeout=60)
    for m in more:
        assert m.stop() == 0, m.log_text()[-3000:]
    feeder.join()
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends, 120, "catch-up")
    assert first.stop() == 0, first.log_text()[-3000:]
    assert "revoked" in more[0].log_text() or "revoked" in more[1].log_text()
    assert_events_exactly_once(database, list(range(total)))


def test_sigterm_within_kubernetes_grace_at_default_bounds(tmp_path, database, kafka, workers,
                                                           copysink_bin):
    """Kubernetes sends SIGTERM and waits 30 s: at the default batch bounds (10,000 rows,
    32 MiB, 200 ms) and with 384-dimensional entries streaming from a backlog, the worker
    writes what it holds, commits and exits 0 well inside that; a second worker then loads the
    rest, and every entry is in the table once with its own value and embedding."""
    import random

    import msgpack
    import psycopg2
    from conftest import write_config
    from entries import embedding, embedding_from, embedding_sql, encode

    topic = kafka.topic("mem")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / "c.ini", bootstrap=kafka.bootstrap, conninfo=database,
                          group=group, tables={"memory_entries": (topic, "update")},
                          batch={"max_rows": 10000, "max_bytes": 33554432, "linger_ms": 200})
    migrate(copysink_bin, config)
    rng = random.Random(7)
    pool = [embedding(rng) for _ in range(16)]
    n = 60000
    entries = [{"namespace": "k8s", "key": f"e{i}", "value": f"value {i}",
                "embedding": pool[i % len(pool)], "metadata": {"i": i}} for i in range(n)]
    kafka.produce([(topic, msgpack.packb(["k8s", e["key"]]), encode(e, True)) for e in entries])
    ends = end_offsets(kafka, topic)

    w = workers(config, "a").start()
    wait_for(lambda: 'msg="batch committed"' in w.log_text() or not w.alive(), 60,
             "the first batch")
    t0 = time.time()
    code = w.stop(timeout=30)
    took = time.time() - t0
    log = w.log_text()
    assert code == 0, log[-3000:]
    print(f"SIGTERM to exit 0: {took:.2f} s")
    assert took < 30, f"exit took {took:.1f} s"
    assert "stopping: writing what is pending" in log
    assert "not written before the grace period ended" not in log
    assert stored_offsets(database, group) != ends, "the backlog should outlast the first worker"

    b = workers(config, "b").start()
    wait_for(lambda: stored_offsets(database, group) == ends or not b.alive(), 120,
             "the second worker to load the rest")
    assert b.stop() == 0
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT key, value, (metadata->>'i')::int, {embedding_sql()} "
                    "FROM memory_entries WHERE namespace = 'k8s' ORDER BY (metadata->>'i')::int")
        rows = cur.fetchall()
    assert len(rows) == n
    for i, (key, value, idx, emb) in enumerate(rows):
        assert (key, value, idx) == (f"e{i}", f"value {i}", i)
        assert embedding_from(emb) == pool[i % len(pool)], f"embedding of e{i}"


def test_infrastructure_errors_are_retried_not_dead_lettered(tmp_path, database, kafka, workers,
                                                             copysink_bin):
    """The server itself fails the batch's INSERT with a serialization failure (40001), a
    deadlock (40P01), out of disk (53100) and out of memory (53200), one after the other: a
    trigger raises them, counted by a sequence, which a rollback does not undo. Each is
    retried (never dead-lettered, never bisected), and afterwards every entry is in the table
    exactly once."""
    import psycopg2

    topic = kafka.topic("events")
    kafka.create_topics({topic: 1, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100})
    migrate(copysink_bin, config)
    codes = ["40001", "40P01", "53100", "53200"]
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("CREATE SEQUENCE fault_seq")
        cur.execute(f"""
            CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE n bigint := nextval('fault_seq');
                    codes text[] := ARRAY[{",".join(f"'{c}'" for c in codes)}];
            BEGIN
                IF n <= array_length(codes, 1) THEN
                    RAISE EXCEPTION 'injected fault %', codes[n] USING ERRCODE = codes[n];
                END IF;
                RETURN NULL;
            END $$""")
        cur.execute("CREATE TRIGGER inject BEFORE INSERT ON events "
                    "FOR EACH STATEMENT EXECUTE FUNCTION inject_fault()")
    ids = list(range(2000))
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)
    w = workers(config).start()
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the worker to get through the faults")
    log = w.log_text()
    assert w.stop() == 0, log[-3000:]
    retries = [line for line in log.splitlines() if "batch not written, will retry" in line]
    for code in codes:
        assert any(f"injected fault {code}" in line for line in retries), (code, log[-3000:])
    assert "dead-lettered" not in log and "rows rejected by PostgreSQL" not in log
    assert kafka.end_offsets(topic + ".dlq") in ({}, {0: 0})
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT last_value FROM fault_seq")
        assert cur.fetchone()[0] > len(codes)  # every fault was raised, then writes went on
    assert_events_exactly_once(database, ids)
