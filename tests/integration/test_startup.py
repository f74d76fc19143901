"""Start-up and readiness against servers that are not there yet: the worker started while
PostgreSQL or the Kafka broker is down waits for it instead of exiting, answers /healthz and
reports itself not ready on /readyz, then loads every entry exactly once; a configuration
error still stops it at once, naming the cause; an idle worker notices a PostgreSQL outage on
/readyz within its 2 s ping; and every retry it logs says why.

Each test restores the servers it stops (try/finally, and the fixtures' teardown), so the
next test finds them running."""
import os
import re
import socket
import subprocess
import time
import urllib.request

import psycopg2
import pytest

from conftest import (assert_events_exactly_once, end_offsets, events_config, produce_events,
                      stored_offsets, wait_for)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RETRY_MSG = "batch not written, will retry"


def migrate(copysink_bin, config):
    subprocess.run([copysink_bin, "migrate", "-c", config], check=True)


def free_port():
    """A TCP port nothing listens on now (the kernel's choice), for the worker's endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url):
    """(status, body); status None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def status(url):
    return http_get(url)[0]


def log_records(log, msg):
    """The logfmt lines whose msg is `msg` (None: every line), each as {field: value}
    (values as written, escapes kept)."""
    out = []
    for line in log.splitlines():
        if msg is not None and f'msg="{msg}"' not in line:
            continue
        fields = {k: (q if q or not b else b)
                  for k, q, b in re.findall(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))', line)}
        fields["_line"] = line
        out.append(fields)
    return out


def assert_retries_say_why(log):
    """Every "batch not written, will retry" line carries a non-empty error="..."."""
    retries = log_records(log, RETRY_MSG)
    empty = [r["_line"] for r in retries if not r.get("error")]
    assert not empty, f"{len(empty)} of {len(retries)} retry lines without an error: {empty[:3]}"
    return retries


def assert_events_table(conninfo, ids, producer="p"):
    """The whole table, row for row, is what produce_events sent: each id once, with its
    producer and payload."""
    assert_events_exactly_once(conninfo, ids)
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, producer, payload FROM events ORDER BY id")
        rows = cur.fetchall()
    assert rows == [(i, producer, {"n": i, "s": f"event {i}"}) for i in sorted(ids)]


class Broker:
    """Stop and start the test broker (scripts/kafka.sh) on its recorded port."""

    def __init__(self):
        self.dir = os.environ.get("COPYSINK_TEST_KAFKA_DIR")
        if not self.dir:
            pytest.fail("COPYSINK_TEST_KAFKA_DIR is not set: run through scripts/test.sh")

    def _run(self, *args):
        subprocess.run([os.path.join(ROOT, "scripts", "kafka.sh"), *args], check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self):
        self._run("stop", self.dir)

    def start(self):
        with open(os.path.join(self.dir, "port")) as f:
            port = f.read().strip()
        self._run("start", self.dir, port)  # returns at once when it runs already


@pytest.fixture
def broker():
    b = Broker()
    yield b
    b.start()  # running again for the next test, whatever happened


def test_start_with_postgres_down(tmp_path, database, kafka, workers, copysink_bin, servers):
    """PostgreSQL is down when the worker starts: it logs that it waits, stays alive, is live
    (/healthz 200) and not ready (/readyz 503); once PostgreSQL is up it loads every entry,
    those produced before it started and while it waited, exactly once, becomes ready and
    exits 0 on SIGTERM."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100},
                           http_listen=f"127.0.0.1:{port}")
    migrate(copysink_bin, config)  # database and table exist before the server goes
    produce_events(kafka, topic, range(0, 1000))

    servers.pg_stop()
    try:
        w = workers(config).start()
        wait_for(lambda: "PostgreSQL not reachable yet: waiting for it" in w.log_text()
                 or not w.alive(), 60, "the worker to say it waits for PostgreSQL")
        assert w.alive(), w.log_text()[-3000:]
        waits = log_records(w.log_text(), "PostgreSQL not reachable yet: waiting for it")
        assert waits and waits[0].get("level") == "warning" and waits[0].get("error"), waits
        wait_for(lambda: status(base + "/healthz") == 200 or not w.alive(), 30,
                 "/healthz to answer 200")
        code, body = http_get(base + "/readyz")
        assert code == 503 and "PostgreSQL" in body, (code, body)
        produce_events(kafka, topic, range(1000, 2000))  # consumed while it waits
        # it joined the group and holds its partitions paused until it can read their
        # stored offsets: still waiting, not given up
        wait_for(lambda: "stored offsets not read" in w.log_text() or not w.alive(), 60,
                 "the assigned partitions to wait for PostgreSQL")
        assert w.alive(), w.log_text()[-3000:]
        assert status(base + "/readyz") == 503
    finally:
        servers.pg_start()
    ends = end_offsets(kafka, topic)
    assert sum(ends.values()) == 2000
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "every entry loaded once PostgreSQL is up")
    wait_for(lambda: status(base + "/readyz") == 200 or not w.alive(), 30, "/readyz 200")
    assert w.alive(), w.log_text()[-3000:]
    rc = w.stop()
    log = w.log_text()
    assert rc == 0, log[-3000:]
    assert_retries_say_why(log)
    assert_events_table(database, list(range(2000)))


def test_start_with_broker_down(tmp_path, database, kafka, workers, copysink_bin, broker):
    """The broker is down when the worker starts: it stays alive, its loop turning (/healthz
    200, stats lines), until the broker is back, then loads what is produced and exits 0 on
    SIGTERM."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 3})
    group = "g-" + kafka.prefix
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 500, "linger_ms": 100},
                           http_listen=f"127.0.0.1:{port}")
    migrate(copysink_bin, config)

    broker.stop()
    try:
        w = workers(config).start()
        wait_for(lambda: "brokers are down" in w.log_text() or not w.alive(), 60,
                 "librdkafka to find the broker down")
        # alive for a while with the broker down: three stats lines (stats_interval_s = 2)
        wait_for(lambda: w.log_text().count("msg=stats") >= 3 or not w.alive(), 60,
                 "the loop to keep turning")
        assert w.alive(), w.log_text()[-3000:]
        assert status(base + "/healthz") == 200
    finally:
        broker.start()
    assert w.alive(), w.log_text()[-3000:]
    ids = list(range(1500))
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "the entries produced after the broker came back")
    wait_for(lambda: status(base + "/readyz") == 200 or not w.alive(), 60, "/readyz 200")
    rc = w.stop()
    log = w.log_text()
    assert rc == 0, log[-3000:]
    assert_retries_say_why(log)
    assert_events_table(database, ids)


def test_readyz_with_broker_down_at_start(tmp_path, database, kafka, workers, copysink_bin,
                                          broker):
    """OPERATIONS.md: /readyz is 200 only "when connected to PostgreSQL and Kafka", else 503
    "Kafka not connected". A worker started with the broker down must not say it is ready;
    librdkafka reports "1/1 brokers are down" within a second, so 20 s is ample."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 1})
    group = "g-" + kafka.prefix
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, http_listen=f"127.0.0.1:{port}")
    migrate(copysink_bin, config)

    broker.stop()
    try:
        w = workers(config).start()
        wait_for(lambda: status(base + "/healthz") == 200 or not w.alive(), 60,
                 "/healthz to answer 200")
        wait_for(lambda: "brokers are down" in w.log_text() or not w.alive(), 60,
                 "librdkafka to find the broker down")
        try:
            wait_for(lambda: status(base + "/readyz") == 503 or not w.alive(), 20,
                     "/readyz 503 with the broker down")
        finally:
            code, body = http_get(base + "/readyz")
            print(f"/readyz with the broker down: {code} {body.strip()!r}")
        assert code == 503 and "Kafka" in body, (code, body)
        assert w.alive(), w.log_text()[-3000:]
    finally:
        broker.start()
    wait_for(lambda: status(base + "/readyz") == 200 or not w.alive(), 60, "/readyz 200")
    assert w.stop() == 0, w.log_text()[-3000:]


def test_config_errors_exit_at_once(tmp_path, database, kafka, workers, copysink_bin):
    """Errors that waiting cannot fix still stop the worker at once, with a non-zero status
    and a message naming the cause: a table whose real column type does not match its spec
    (status 2: main.c exits EXIT_USAGE for a fatal start-up error, as OPERATIONS.md says for
    "a table that does not match its spec at start-up"); an unknown key in the file, naming
    file, line and key; a misspelt environment variable, naming it (status 2)."""
    topic = kafka.topic("events")
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group)
    # the spec says producer text; the real table has integer
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE events (id bigint NOT NULL, producer integer NOT NULL, "
                    "payload jsonb)")

    def run_to_exit(w, timeout=30):
        t0 = time.time()
        try:
            rc = w.proc.wait(timeout=timeout)
        finally:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            w.log.close()
        took = time.time() - t0
        w.proc = None
        return rc, took, w.log_text()

    rc, took, log = run_to_exit(workers(config, "mismatch").start())
    print(f"spec mismatch: exit {rc} after {took:.2f} s")
    assert rc == 2, log[-3000:]
    assert took < 20, took
    errors = [r["msg"] for r in log_records(log, None) if r.get("level") == "error"]
    assert any(r'\"public.events\"' in m and r'column \"producer\"' in m
               and "integer" in m and "text" in m for m in errors), log[-3000:]
    assert "waiting for it" not in log

    bad = tmp_path / "bad.ini"
    text = open(config).read().replace("[worker]\n", "[worker]\nno_such_key = 1\n")
    bad.write_text(text)
    line_no = text.splitlines().index("no_such_key = 1") + 1
    rc, took, log = run_to_exit(workers(str(bad), "unknown-key").start())
    print(f"unknown key: exit {rc} after {took:.2f} s")
    assert rc == 2, log[-3000:]
    assert took < 20, took
    assert "no_such_key" in log and str(bad) in log and str(line_no) in log, log

    rc, took, log = run_to_exit(workers(config, "unknown-var").start(
        env={"COPYSINK_BATCH_MAX_ROW": "5"}))
    print(f"misspelt variable: exit {rc} after {took:.2f} s")
    assert rc == 2, log[-3000:]
    assert "COPYSINK_BATCH_MAX_ROW" in log, log


def test_readyz_while_idle(tmp_path, database, kafka, workers, copysink_bin, servers):
    """A worker with nothing to do notices a PostgreSQL outage on /readyz by its own ping
    (every 2 s): 503 within 5 s (asserted with 10 s: a loaded machine), 200 again once
    PostgreSQL is back, and the log says both, the outage with its error."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 2})
    group = "g-" + kafka.prefix
    port = free_port()
    readyz = f"http://127.0.0.1:{port}/readyz"
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, http_listen=f"127.0.0.1:{port}")
    migrate(copysink_bin, config)
    w = workers(config).start()
    ids = list(range(200))
    produce_events(kafka, topic, ids)
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 60,
             "everything consumed")
    wait_for(lambda: status(readyz) == 200 or not w.alive(), 30, "ready while idle")
    assert w.alive(), w.log_text()[-3000:]

    servers.pg_stop()
    try:
        t0 = time.time()
        wait_for(lambda: status(readyz) == 503, 30, "/readyz 503 with PostgreSQL down",
                 interval=0.05)
        latency = time.time() - t0
        code, body = http_get(readyz)
        print(f"/readyz turned 503 {latency:.2f} s after pg.sh stop returned: {body.strip()!r}")
        assert latency < 10, f"/readyz took {latency:.2f} s to turn 503"
        assert code == 503 and "PostgreSQL" in body, (code, body)
        assert w.alive(), w.log_text()[-3000:]
    finally:
        servers.pg_start()
    t1 = time.time()
    wait_for(lambda: status(readyz) == 200 or not w.alive(), 30, "/readyz 200 again",
             interval=0.05)
    print(f"/readyz turned 200 {time.time() - t1:.2f} s after pg.sh start returned")
    assert w.alive(), w.log_text()[-3000:]
    wait_for(lambda: "PostgreSQL answers again" in w.log_text(), 10, "the log to say so")
    rc = w.stop()
    log = w.log_text()
    assert rc == 0, log[-3000:]
    down = log_records(log, "PostgreSQL does not answer")
    assert down, log[-3000:]
    assert all(r.get("level") == "warning" and r.get("error") for r in down), down
    again = log_records(log, "PostgreSQL answers again")
    assert again, log[-3000:]
    assert log.index('msg="PostgreSQL does not answer"') < \
        log.index('msg="PostgreSQL answers again"')
    assert RETRY_MSG not in log  # idle: nothing was written meanwhile
    assert_events_table(database, ids)


def test_retries_during_outage_say_why(tmp_path, database, kafka, workers, copysink_bin,
                                       servers):
    """PostgreSQL goes down with entries to write: the worker retries the batch, and every
    "batch not written, will retry" line carries the error that made it retry; when
    PostgreSQL is back every entry is in the table once."""
    topic = kafka.topic("events")
    kafka.create_topics({topic: 2})
    group = "g-" + kafka.prefix
    config = events_config(tmp_path, "c.ini", kafka=kafka, conninfo=database, topic=topic,
                           group=group, batch={"max_rows": 300, "linger_ms": 50})
    migrate(copysink_bin, config)
    w = workers(config).start()
    produce_events(kafka, topic, range(0, 300))
    wait_for(lambda: sum(stored_offsets(database, group).values()) == 300 or not w.alive(), 60,
             "the first entries written")
    servers.pg_stop()
    try:
        produce_events(kafka, topic, range(300, 1200))
        # several attempts: the first finds the connection gone, the next ones cannot connect
        wait_for(lambda: w.log_text().count(RETRY_MSG) >= 3 or not w.alive(), 60,
                 "three retries")
        assert w.alive(), w.log_text()[-3000:]
    finally:
        servers.pg_start()
    ends = end_offsets(kafka, topic)
    wait_for(lambda: stored_offsets(database, group) == ends or not w.alive(), 120,
             "catch-up after the outage")
    rc = w.stop()
    log = w.log_text()
    assert rc == 0, log[-3000:]
    retries = assert_retries_say_why(log)
    print(f"{len(retries)} retry lines, errors: "
          f"{sorted({r['error'][:90] for r in retries})}")
    assert len(retries) >= 3
    assert_events_table(database, list(range(1200)))
