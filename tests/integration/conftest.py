"""Fixtures for integration tests: a fresh database, fresh topics, the worker as a process.

scripts/test.sh starts PostgreSQL and a Kafka broker and exports:
  COPYSINK_TEST_PG_CONNINFO  libpq conninfo of the server's "postgres" database (superuser)
  COPYSINK_TEST_KAFKA        bootstrap address of the broker
  COPYSINK_BIN               the copysink binary under test (set by CTest)
and, for a server that must have pgvector (test_vector.py):
  COPYSINK_TEST_PGVECTOR     "required": a server without pgvector fails the test
Each test gets its own database and topic names, so tests do not see each other's data.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import psycopg2
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def _required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the integration tests through scripts/test.sh")
    return value


@pytest.fixture(scope="session")
def pg_admin_conninfo():
    return _required_env("COPYSINK_TEST_PG_CONNINFO")


@pytest.fixture(scope="session")
def kafka_bootstrap():
    return _required_env("COPYSINK_TEST_KAFKA")


@pytest.fixture(scope="session")
def copysink_bin():
    path = _required_env("COPYSINK_BIN")
    if not os.access(path, os.X_OK):
        pytest.fail(f"COPYSINK_BIN {path} is not executable")
    return path


@pytest.fixture
def database(pg_admin_conninfo):
    """A new empty database; yields its conninfo and drops it afterwards."""
    name = "cs_" + uuid.uuid4().hex[:12]
    _admin_execute(pg_admin_conninfo, f'CREATE DATABASE "{name}"')
    yield _with_dbname(pg_admin_conninfo, name)
    # a new connection: the test may have restarted the server meanwhile
    _admin_execute(pg_admin_conninfo, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_execute(conninfo, sql):
    admin = psycopg2.connect(conninfo)
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(sql)
    finally:
        admin.close()


def _with_dbname(conninfo, dbname):
    parts = [p for p in conninfo.split() if not p.startswith("dbname=")]
    return " ".join(parts + [f"dbname={dbname}"])


class Kafka:
    """Topic creation, producing with delivery reports, reading topics back."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.prefix = "t" + uuid.uuid4().hex[:10]

    def topic(self, name):
        return f"{self.prefix}.{name}"

    def create_topics(self, partitions_by_topic):
        futures = self.admin.create_topics(
            [NewTopic(t, num_partitions=n, replication_factor=1)
             for t, n in partitions_by_topic.items()])
        for f in futures.values():
            f.result(timeout=60)
        # wait until the metadata shows every partition with a leader
        deadline = time.time() + 60
        while time.time() < deadline:
            md = self.admin.list_topics(timeout=10)
            if all(t in md.topics and len(md.topics[t].partitions) == n
                   for t, n in partitions_by_topic.items()):
                return
            time.sleep(0.2)
        raise AssertionError("topics did not appear in the metadata")

    def produce(self, records, settings=None):
        """records: list of (topic, key bytes or None, value bytes or None); settings: more
        producer settings. Returns [(topic, partition, offset)] in the same order."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                             "linger.ms": 5, "compression.type": "lz4", **(settings or {})})
        results = [None] * len(records)

        def report(i):
            def cb(err, msg):
                assert err is None, f"delivery failed: {err}"
                results[i] = (msg.topic(), msg.partition(), msg.offset())
            return cb

        for i, (topic, key, value) in enumerate(records):
            while True:
                try:
                    producer.produce(topic, key=key, value=value, on_delivery=report(i))
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(60) == 0, "messages not delivered"
        assert all(r is not None for r in results)
        return results

    def end_offsets(self, topic):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "probe-" + uuid.uuid4().hex})
        md = c.list_topics(topic, timeout=10)
        ends = {}
        for p in md.topics[topic].partitions:
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        c.close()
        return ends

    def committed(self, group, topic, partitions):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        c.close()
        return {tp.partition: tp.offset for tp in got}

    def read_all(self, topic, expected_count, timeout=60):
        """Every message of `topic` from the beginning (waits for expected_count)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "reader-" + uuid.uuid4().hex,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        msgs = []
        deadline = time.time() + timeout
        while len(msgs) < expected_count and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            msgs.append(m)
        # a little longer, to catch any extra message that should not be there
        end = time.time() + 2
        while time.time() < end:
            m = c.poll(0.2)
            if m is not None and not m.error():
                msgs.append(m)
        c.close()
        return msgs

    def describe_group(self, group):
        """(state name, {member id: {(topic, partition)}}) from the group coordinator."""
        desc = self.admin.describe_consumer_groups([group], request_timeout=10)[group]
        d = desc.result(timeout=15)
        return (d.state.name if d.state is not None else "UNKNOWN",
                {m.member_id: {(tp.topic, tp.partition)
                               for tp in (m.assignment.topic_partitions if m.assignment else [])}
                 for m in d.members})

    def wait_group_balanced(self, group, members, partitions, timeout=60):
        """Wait until the group is Stable with `members` members, `partitions` (a set of
        (topic, partition)) all assigned, each to one member, and every member holding at least
        one when there are enough to go round. Returns {member id: partitions}."""
        seen = [None]

        def balanced():
            try:
                state, got = self.describe_group(group)
            except Exception as e:  # the coordinator is moving, the broker restarting
                seen[0] = repr(e)
                return False
            seen[0] = (state, got)
            held = [tp for tps in got.values() for tp in tps]
            return (state == "STABLE" and len(got) == members and
                    sorted(held) == sorted(partitions) and
                    (len(partitions) < members or all(got.values())))

        wait_for(balanced, timeout, f"group {group} balanced over {members} members "
                 f"(last seen: {seen[0]})")
        return seen[0][1]


@pytest.fixture
def kafka(kafka_bootstrap):
    return Kafka(kafka_bootstrap)


# the harness's own COPYSINK_TEST_* variables (servers, what they must have), not fault
# injection
_SERVER_VARS = {"COPYSINK_TEST_PG_CONNINFO", "COPYSINK_TEST_KAFKA", "COPYSINK_TEST_PG_DIR",
                "COPYSINK_TEST_KAFKA_DIR", "COPYSINK_TEST_PGVECTOR"}

# The worker's log lines the tests wait for (src/worker.c); logfmt escapes the quotes.
PARTITION_EVENT = (r'partition \\"(?P<topic>[^"\\]+)\\" \[(?P<partition>\d+)\] '
                   r'(?P<event>assigned|revoked|lost)')
ASSIGNED = r'partition \\"[^"\\]+\\" \[\d+\] assigned'
REBALANCED = r'partition \\"[^"\\]+\\" \[\d+\] (?:assigned|revoked|lost)'
RETRYING = r'batch not written, will retry'
COMMITTED = r'msg="batch committed"'
STARTED = r'msg="copysink \S+ started'


class Worker:
    """copysink run as a child process, its log kept in a file."""

    def __init__(self, binary, config, log_path):
        self.binary = binary
        self.config = config
        self.log_path = log_path
        self.proc = None

    def start(self, *extra, env=None):
        """env: more environment variables for this worker only. A worker given a
        COPYSINK_TEST_* fault-injection variable runs the test build of the binary
        (COPYSINK_TESTHOOKS_BIN): the shipped one has no such hooks."""
        self.log = open(self.log_path, "ab")
        env = {**os.environ, **(env or {})}
        binary = self.binary
        if any(k.startswith("COPYSINK_TEST_") and k not in _SERVER_VARS for k in env):
            binary = _required_env("COPYSINK_TESTHOOKS_BIN")
        self.proc = subprocess.Popen([binary, "run", "-c", self.config, *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        return self

    def stop(self, timeout=60):
        """SIGTERM, wait; returns the exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        self.proc = None
        return rc

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, since=0):
        """The log from byte `since` on (a mark from log_size())."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def log_size(self):
        """A mark for log_text() and wait_log(): the log's length in bytes now."""
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def wait_log(self, pattern, timeout=60, since=0, count=1, allow_exit=False):
        """Wait until the regex `pattern` matches `count` times in the log after mark `since`;
        returns the matches. Fails at once, with the log's tail, if the worker exits first
        (unless allow_exit: then returns what matched by then)."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while True:
            found = list(rx.finditer(self.log_text(since)))
            if len(found) >= count:
                return found
            if not self.alive():
                if allow_exit:
                    return found
                raise AssertionError(f"{self.log_path}: the worker exited (code "
                                     f"{self.proc and self.proc.returncode}) before "
                                     f"{count} x /{pattern}/:\n" + self.log_text()[-3000:])
            if time.time() > deadline:
                raise AssertionError(f"{self.log_path}: timed out after {timeout}s waiting "
                                     f"for {count} x /{pattern}/:\n" + self.log_text()[-3000:])
            time.sleep(0.05)

    def assignment(self):
        """The partitions the worker holds now, from its assigned/revoked/lost lines."""
        held = set()
        for m in re.finditer(PARTITION_EVENT, self.log_text()):
            tp = (m["topic"], int(m["partition"]))
            if m["event"] == "assigned":
                held.add(tp)
            else:
                held.discard(tp)
        return held


@pytest.fixture
def workers(tmp_path, copysink_bin):
    started = []

    def make(config, name="worker"):
        w = Worker(copysink_bin, config, str(tmp_path / f"{name}.log"))
        started.append(w)
        return w

    yield make
    for w in started:
        if w.alive():
            w.kill()
    # pytest shows a test's captured output only when it fails: the workers' last lines are
    # then in the report even after the temporary directory is gone
    for w in started:
        try:
            text = w.log_text()
            print(f"--- {w.log_path} (first and last lines)\n{text[:3000]}\n[...]\n"
                  f"{text[-3000:]}" if len(text) > 6000 else f"--- {w.log_path}\n{text}")
        except OSError:
            pass


def write_config(path, *, bootstrap, conninfo, group, tables, batch=None, extra="",
                 kafka_settings=None, http_listen="", writers=None):
    """tables: {name: (topic, on_conflict)}; kafka_settings: more [kafka] keys; writers:
    [postgres] writers (None: the default)."""
    batch = batch or {}
    lines = [
        "[kafka]",
        f"bootstrap.servers = {bootstrap}",
        f"group.id = {group}",
        *[f"{k} = {v}" for k, v in (kafka_settings or {}).items()],
        "",
        "[postgres]",
        f"conninfo = {conninfo}",
        *([f"writers = {writers}"] if writers is not None else []),
        "",
        "[batch]",
        f"max_rows = {batch.get('max_rows', 1000)}",
        f"max_bytes = {batch.get('max_bytes', 33554432)}",
        f"linger_ms = {batch.get('linger_ms', 100)}",
        *([f"write_when_idle = {batch['write_when_idle']}"] if "write_when_idle" in batch else []),
        "",
        "[worker]",
        "stats_interval_s = 2",
        "",
        "[http]",
        f"listen = {http_listen}",
        "",
    ]
    for name, (topic, mode) in tables.items():
        lines += [f"[table {name}]", f"topic = {topic}", f"on_conflict = {mode}", ""]
    path.write_text("\n".join(lines) + extra)
    return str(path)


def free_port():
    """A TCP port on loopback that nothing listens on now (for [http] listen)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port, name):
    """The value of an unlabelled sample of the worker's /metrics, None when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            body = r.read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_for(predicate, timeout, what, interval=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Servers:
    """Stop, start and restart the test PostgreSQL and Kafka broker (scripts/pg.sh, kafka.sh)."""

    def __init__(self):
        self.root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.pg_dir = _required_env("COPYSINK_TEST_PG_DIR")
        self.kafka_dir = _required_env("COPYSINK_TEST_KAFKA_DIR")

    def _run(self, script, *args):
        subprocess.run([os.path.join(self.root, "scripts", script), *args], check=True,
                       stdout=subprocess.DEVNULL)

    def pg_stop(self):
        self._run("pg.sh", "stop", self.pg_dir)

    def pg_start(self):
        self._run("pg.sh", "start", self.pg_dir)

    def pg_restart_immediate(self):
        self._run("pg.sh", "restart-immediate", self.pg_dir)

    def kafka_restart(self):
        self._run("kafka.sh", "restart", self.kafka_dir)

    def kafka_stop(self):
        self._run("kafka.sh", "stop", self.kafka_dir)

    def kafka_start(self):
        with open(os.path.join(self.kafka_dir, "port")) as f:
            port = f.read().strip()
        self._run("kafka.sh", "start", self.kafka_dir, port)


@pytest.fixture
def servers():
    s = Servers()
    yield s
    # leave both servers running for the next test, whatever happened
    try:
        s._run("pg.sh", "start", s.pg_dir)
    except subprocess.CalledProcessError:
        pass


EVENTS_SPEC = """
[table events]
topic = {topic}
columns = id bigint not null, producer text not null, payload jsonb
"""


def events_config(tmp_path, name, *, kafka, conninfo, topic, group, batch=None, extra="",
                  kafka_settings=None, http_listen=""):
    """A worker config with one insert-only table `events` (no conflict key): any duplicate
    delivery would show as a second row."""
    return write_config(tmp_path / name, bootstrap=kafka.bootstrap, conninfo=conninfo,
                        group=group, tables={}, batch=batch, kafka_settings=kafka_settings,
                        http_listen=http_listen,
                        extra=EVENTS_SPEC.format(topic=topic) + extra)


def produce_events(kafka, topic, ids, producer="p"):
    import msgpack
    return kafka.produce([(topic, msgpack.packb([i]),
                           msgpack.packb({"id": i, "producer": producer,
                                          "payload": {"n": i, "s": f"event {i}"}}))
                          for i in ids])


def assert_events_exactly_once(conninfo, ids, table="events"):
    """`table` (an insert-only table of EVENTS_SPEC's columns) holds each of `ids` exactly
    once, with its own payload, and nothing else."""
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT id, count(*) FROM "{table}" GROUP BY id HAVING count(*) > 1')
        dups = cur.fetchall()
        cur.execute(f'SELECT id, payload FROM "{table}" ORDER BY id')
        rows = cur.fetchall()
    assert dups == [], f"{len(dups)} ids written more than once, e.g. {dups[:5]}"
    got = [r[0] for r in rows]
    missing = sorted(set(ids) - set(got))
    assert not missing, f"{len(missing)} ids lost, e.g. {missing[:5]}"
    assert got == sorted(ids)
    for i, payload in rows:
        assert payload == {"n": i, "s": f"event {i}"}


def stored_offsets(conninfo, group):
    with psycopg2.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT topic, partition, next_offset FROM copysink_offsets "
                    "WHERE group_id = %s", (group,))
        return {(t, p): o for t, p, o in cur.fetchall()}


def end_offsets(kafka, *topics):
    ends = {}
    for topic in topics:
        for p, high in kafka.end_offsets(topic).items():
            if high > 0:
                ends[(topic, p)] = high
    return ends


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test is a failure here: the suite has every server it needs, so a skip can
    only hide a test that did not run."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = f"test skipped, which this suite counts as a failure: {report.longrepr}"


class EventFeeder:
    """A thread producing events (EVENTS_SPEC rows, ids 0, 1, 2 ...) at a paced rate, round
    robin over `topics`, until stop(). ids[topic] lists what was delivered to each topic;
    errors holds any delivery error."""

    def __init__(self, kafka, topics, rate=500, chunk=25):
        import threading
        self.kafka, self.topics, self.rate, self.chunk = kafka, list(topics), rate, chunk
        self.ids = {t: [] for t in self.topics}
        self.errors = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        import msgpack
        p = Producer({"bootstrap.servers": self.kafka.bootstrap, "enable.idempotence": True,
                      "linger.ms": 5, "message.timeout.ms": 300000})

        def report(err, msg):
            if err is not None:
                self.errors.append(err)
            else:
                self.ids[msg.topic()].append(msgpack.unpackb(msg.key())[0])

        i, t0 = 0, time.time()
        while not self._stop.is_set():
            for _ in range(self.chunk):
                topic = self.topics[i % len(self.topics)]
                value = msgpack.packb({"id": i, "producer": "feeder",
                                       "payload": {"n": i, "s": f"event {i}"}})
                while True:
                    try:
                        p.produce(topic, key=msgpack.packb([i]), value=value,
                                  on_delivery=report)
                        break
                    except BufferError:
                        p.poll(0.05)
                i += 1
            p.poll(0)
            self.sent = i
            # pacing: rate entries per second in all
            ahead = t0 + i / self.rate - time.time()
            if ahead > 0:
                self._stop.wait(ahead)
        if p.flush(300) != 0:
            self.errors.append("messages not delivered within 300 s")

    def stop(self):
        """Stop producing, wait for every delivery report; returns ids by topic."""
        self._stop.set()
        self._thread.join()
        assert not self.errors, self.errors[:3]
        assert sum(len(v) for v in self.ids.values()) == self.sent
        return self.ids
