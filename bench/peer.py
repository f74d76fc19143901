#!/usr/bin/env python3
"""The benchmark's Java peer: Debezium's JDBC sink connector (3.5.0.Final) in a Kafka Connect
standalone worker (4.1.1), loading the same entries as copysink into copysink's table.

  prepare(cache_dir) -> classpath      the pinned jars (bench/peer/pom.xml), resolved once
  produce_json(bootstrap, topic, entries, kind)
                                       the entries as Connect JSON with schemas
  run(classpath, bootstrap, pg, topic, table, n_rows, workdir, kind[, value_prefix])
                                       one timed run of the worker: seconds, rows/s, RSS, CPU
  verify(pg, table, entries)           the rows against the entries

As a program it migrates, produces, runs new keys and then updates, checks the rows and prints
the figures as JSON:

  $V/bin/python bench/peer.py --pg CONNINFO --kafka HOST:PORT --bin COPYSINK --entries 50000

Not part of copysink: a harness for bench/bench.py only. The worker's JVM is started as Kafka's
bin/connect-standalone.sh would start it (its default heap, -Xms256M -Xmx2G, and
kafka-run-class.sh's default JVM options), since that is how a user runs it.
"""
import argparse
import array
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import psycopg2
import psycopg2.extensions
from confluent_kafka import Consumer, TopicPartition

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER = os.path.join(HERE, "peer")
# what bin/connect-standalone.sh and bin/kafka-run-class.sh (Kafka 4.1) give the JVM when the
# user sets neither KAFKA_HEAP_OPTS nor KAFKA_JVM_PERFORMANCE_OPTS
HEAP_OPTS = "-Xms256M -Xmx2G"
JVM_OPTS = ("-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 "
            "-XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true")
REST_PORTS = range(59610, 59700)  # the worker's REST API (loopback)


def log(*a):
    print("peer:", *a, file=sys.stderr, flush=True)


def default_cache_dir():
    """${COPYSINK_CACHE:-<repo>/.cache}/debezium, as scripts/kafka.sh caches the broker."""
    return os.path.join(os.environ.get("COPYSINK_CACHE") or os.path.join(ROOT, ".cache"),
                        "debezium")


# ---------------------------------------------------------------- jars


def prepare(cache_dir):
    """Resolve the pinned jars into CACHE_DIR/libs-<pom hash> (once; later calls are offline)
    with Maven and bench/peer/settings.xml (every repository mirrored to Maven Central), the
    local Maven repository in CACHE_DIR/m2. Returns the JVM classpath. Raises RuntimeError
    naming the cause when Maven or Java is missing or the resolution fails."""
    pom, settings = os.path.join(PEER, "pom.xml"), os.path.join(PEER, "settings.xml")
    with open(pom, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    libs = os.path.join(cache_dir, f"libs-{digest}")
    if shutil.which("java") is None:
        raise RuntimeError("peer: java is not installed (OpenJDK 17 runs the Connect worker)")
    if not os.path.exists(os.path.join(libs, ".complete")):
        if shutil.which("mvn") is None:
            raise RuntimeError("peer: Maven (mvn) is needed to fetch the Debezium jars")
        log(f"resolving the Debezium JDBC sink and Kafka Connect jars into {libs}")
        tmp = libs + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(cache_dir, exist_ok=True)
        r = subprocess.run(["mvn", "-B", "-q", "-s", settings, "-f", pom,
                            "-Dmaven.repo.local=" + os.path.join(cache_dir, "m2"),
                            "dependency:copy-dependencies", "-DincludeScope=runtime",
                            "-DoutputDirectory=" + tmp], capture_output=True, text=True)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"peer: Maven could not resolve bench/peer/pom.xml:\n{tail}")
        for jar in ("debezium-connector-jdbc-", "connect-runtime-", "postgresql-",
                    "log4j-slf4j2-impl-"):
            if not glob.glob(os.path.join(tmp, jar + "*.jar")):
                raise RuntimeError(f"peer: {jar}*.jar missing after Maven's copy into {tmp}")
        shutil.rmtree(libs, ignore_errors=True)
        os.rename(tmp, libs)
        open(os.path.join(libs, ".complete"), "w").close()
    return os.path.join(libs, "*")


# ---------------------------------------------------------------- Connect JSON


def _schema(fields, name=None):
    s = {"type": "struct", "optional": False, "fields": fields}
    if name:
        s["name"] = name
    return s


KEY_SCHEMA = _schema([{"field": "namespace", "type": "string", "optional": False},
                      {"field": "key", "type": "string", "optional": False}],
                     "copysink.memory_entries.Key")


def value_schema(kind):
    """The value's Connect schema. The embedding is an array of float32 for a real[] column;
    for pgvector's vector, Debezium's io.debezium.data.DoubleVector (bound as CAST(? AS vector);
    its FloatVector maps to halfvec, which pgvector 0.6 lacks and which would halve the
    precision). metadata is a string of semantic type io.debezium.data.Json, with the source
    column type a Debezium source connector propagates for jsonb, so it is bound as
    cast(? as jsonb)."""
    if kind == "vector":
        emb = {"field": "embedding", "type": "array", "optional": True,
               "items": {"type": "double", "optional": False},
               "name": "io.debezium.data.DoubleVector", "version": 1}
    else:
        emb = {"field": "embedding", "type": "array", "optional": True,
               "items": {"type": "float", "optional": False}}
    return _schema([
        {"field": "namespace", "type": "string", "optional": False},
        {"field": "key", "type": "string", "optional": False},
        {"field": "value", "type": "string", "optional": True},
        emb,
        {"field": "metadata", "type": "string", "optional": True, "name": "io.debezium.data.Json",
         "version": 1, "parameters": {"__debezium.source.column.type": "JSONB"}},
        {"field": "tags", "type": "array", "optional": True,
         "items": {"type": "string", "optional": False}},
    ], "copysink.memory_entries.Value")


def float32_text(x):
    """The shortest decimal that reads back as the same float32 (what a Java or JavaScript
    producer writes for a float), not the 17 digits of its double."""
    want = struct.pack("<f", x)
    for digits in range(6, 10):
        s = "%.*g" % (digits, x)
        if struct.pack("<f", float(s)) == want:
            return s
    return repr(x)


def to_connect_json(entries, kind):
    """(key, value) byte pairs of the entries in Connect's JSON-with-schemas envelope."""
    key_head = '{"schema":' + json.dumps(KEY_SCHEMA, separators=(",", ":")) + ',"payload":'
    val_head = '{"schema":' + json.dumps(value_schema(kind), separators=(",", ":")) + \
        ',"payload":'
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    cache = {}  # the pool's embeddings are shared objects: format each once
    for e in entries:
        emb = cache.get(id(e["embedding"]))
        if emb is None:
            emb = cache[id(e["embedding"])] = \
                "[" + ",".join(float32_text(x) for x in e["embedding"]) + "]"
        key = key_head + '{"namespace":' + dumps(e["namespace"]) + ',"key":' + \
            dumps(e["key"]) + "}}"
        value = (val_head + '{"namespace":' + dumps(e["namespace"]) + ',"key":' +
                 dumps(e["key"]) + ',"value":' + dumps(e["value"]) + ',"embedding":' + emb +
                 ',"metadata":' + dumps(dumps(e["metadata"])) + ',"tags":' +
                 dumps(e["tags"]) + "}}")
        yield key.encode(), value.encode()


def produce_json(bootstrap, topic, entries, kind):
    """Produce every entry to TOPIC (created beforehand with bench.create_topic) as Connect
    JSON with schemas, keyed by the struct (namespace, key), with bench.produce's producer
    settings (lz4, idempotent). KIND is the embedding column's: "real[]" or "vector". Returns
    the seconds it took; raises RuntimeError if any message was not delivered."""
    return bench.produce_pairs(bootstrap, topic, to_connect_json(entries, kind),
                               what="peer: produce")


# ---------------------------------------------------------------- the worker


def jdbc_settings(conninfo):
    """The JDBC URL (with reWriteBatchedInserts=true), user and password of a libpq conninfo."""
    d = psycopg2.extensions.parse_dsn(conninfo)
    host = d.get("host", "127.0.0.1")
    if host.startswith("/"):
        raise RuntimeError("peer: the JDBC driver needs a TCP host, not a socket folder")
    url = (f"jdbc:postgresql://{host}:{d.get('port', '5432')}/"
           f"{d.get('dbname', d.get('user', 'postgres'))}?reWriteBatchedInserts=true")
    return url, d.get("user", "postgres"), d.get("password", "")


def free_rest_port():
    for port in REST_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("peer: no free port for the worker's REST API in 59610-59699")


def fill(template, dest, **fields):
    with open(os.path.join(PEER, template)) as f:
        text = string.Template(f.read()).substitute(fields)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def markers(bootstrap, topic):
    """Per partition: the end offset and the (namespace, key, value) of its first and last
    message, read from the topic itself. A partition is applied in offset order, one
    transaction per flushed batch, so its last entry's row holding that value means the whole
    partition is in (checked afterwards with a full count)."""
    ends = bench.end_offsets(bootstrap, topic)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peer-probe",
                  "enable.auto.commit": False})
    out = {}
    try:
        for (_, part), end in ends.items():
            got = {}
            for which, off in (("first", 0), ("last", end - 1)):
                c.assign([TopicPartition(topic, part, off)])
                deadline = time.time() + 30
                while which not in got:
                    if time.time() > deadline:
                        raise RuntimeError(f"peer: could not read {topic}[{part}]@{off}")
                    m = c.poll(1.0)
                    if m is None or m.error():
                        continue
                    v = json.loads(m.value())["payload"]
                    got[which] = (v["namespace"], v["key"], v["value"])
            out[part] = {"end": end, **got}
    finally:
        c.close()
    return ends, out


def proc_figures(pid):
    """(peak RSS in kB, user + system CPU seconds) of a live process, from /proc."""
    rss = bench.peak_rss_kb(pid)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def rest_status(port, name):
    """The connector's status from the REST API, or None while the API is not up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/connectors/{name}/status",
                                    timeout=2) as r:
            return json.load(r)
    except (urllib.error.URLError, ConnectionError, socket.timeout, json.JSONDecodeError):
        return None


def check_status(st, log_path):
    """Raise with the trace if the connector or a task FAILED."""
    if not st:
        return
    for what in [st.get("connector", {})] + st.get("tasks", []):
        if what.get("state") == "FAILED":
            who = f"task {what['id']}" if "id" in what else "connector"
            raise RuntimeError(f"peer: the {who} FAILED (log {log_path}):\n"
                               f"{what.get('trace', '')}")


def log_tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def stop(proc, timeout=30):
    """SIGTERM, then SIGKILL if the JVM is still there after TIMEOUT seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run(classpath, bootstrap, pg_conninfo, topic, table, n_rows, workdir, kind,
        value_prefix=None, tasks=1, timeout=600, heap_opts=HEAP_OPTS, extra_props=None):
    """One timed run of the worker on a topic produced beforehand by produce_json for KIND
    (checked against TABLE's embedding column), with a fresh connector
    (so a fresh consumer group, from the earliest offset). The clock starts when the JVM is
    started and stops when the table holds N_ROWS rows, or with VALUE_PREFIX (the update
    case: the same keys with every value changed) N_ROWS rows whose value starts with it.

    Returns {"seconds", "rows_per_s", "first_row_s", "rows_per_s_steady", "committed_s",
    "peak_rss_kb", "cpu_s", "log", ...}: first_row_s is when the first batch was seen committed,
    the steady rate is the rows after it over the time after it, committed_s is when the
    consumer group's committed offsets reached the end offsets (the worker commits every
    offset.flush.interval.ms = 1 s); RSS and CPU are the JVM's, read when the rows were in.
    EXTRA_PROPS (a dict) are added to the connector's properties, after and over the template's
    (e.g. consumer.override.max.partition.fetch.bytes). Raises RuntimeError with the task's
    trace if the connector fails, the JVM exits, or TIMEOUT seconds pass."""
    os.makedirs(workdir, exist_ok=True)
    workdir = os.path.abspath(workdir)
    name = "peer-" + uuid.uuid4().hex[:8]
    url, user, password = jdbc_settings(pg_conninfo)
    port = free_rest_port()
    worker = fill("worker.properties", os.path.join(workdir, f"{name}-worker.properties"),
                  bootstrap=bootstrap, workdir=workdir, rest_port=port)
    connector = fill("connector.properties", os.path.join(workdir, f"{name}.properties"),
                     name=name, tasks=tasks, topic=topic, jdbc_url=url, user=user,
                     password=password, table=table)
    if extra_props:
        with open(connector, "a") as f:
            f.write("# given to peer.run\n" +
                    "".join(f"{k}={v}\n" for k, v in extra_props.items()))
    log_path = os.path.join(workdir, f"{name}.log")
    ends, marks = markers(bootstrap, topic)
    if sum(ends.values()) < n_rows:
        raise RuntimeError(f"peer: {topic} holds {sum(ends.values())} messages, "
                           f"fewer than {n_rows}")
    conn = bench.connect(pg_conninfo)
    with conn.cursor() as cur:
        cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attname = 'embedding'", (table,))
        col = cur.fetchone()
    if col is None or (kind == "vector") != col[0].startswith("vector"):
        conn.close()
        raise RuntimeError(f"peer: {table}.embedding is {col[0] if col else 'missing'}, "
                           f"the entries were produced for {kind}")
    pairs = [m[w] for m in marks.values() for w in ("first", "last")]
    probe = (f"SELECT namespace, key, value FROM {table} WHERE (namespace, key) IN (" +
             ", ".join(["(%s, %s)"] * len(pairs)) + ")")
    probe_args = [x for ns, k, _ in pairs for x in (ns, k)]
    count_sql = (f"SELECT count(*) FROM {table}" if value_prefix is None else
                 f"SELECT count(*) FROM {table} WHERE starts_with(value, %s)")
    count_args = () if value_prefix is None else (value_prefix,)
    cmd = (["java"] + heap_opts.split() + JVM_OPTS.split() +
           ["-Dlog4j2.configurationFile=" + os.path.join(PEER, "log4j2.properties"),
            "-cp", classpath, "org.apache.kafka.connect.cli.ConnectStandalone",
            worker, connector])
    res = {"connector": name, "tasks": tasks, "heap_opts": heap_opts, "log": log_path,
           "extra_props": dict(extra_props or {})}
    logf = open(log_path, "wb")
    proc = None
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=workdir)
        deadline = t0 + timeout
        first = end = None
        first_rows = 0
        next_status = t0
        with conn.cursor() as cur:
            while end is None:
                now = time.perf_counter()
                if proc.poll() is not None:
                    raise RuntimeError(f"peer: the worker exited with {proc.returncode} "
                                       f"(log {log_path}):\n{log_tail(log_path)}")
                if now > deadline:
                    raise RuntimeError(f"peer: {table} did not reach {n_rows} rows within "
                                       f"{timeout} s (log {log_path}):\n{log_tail(log_path)}")
                if now >= next_status:
                    check_status(rest_status(port, name), log_path)
                    next_status = now + 0.5
                at = time.perf_counter() - t0  # the moment the probe saw
                cur.execute(probe, probe_args)
                rows = {(ns, k): v for ns, k, v in cur.fetchall()}
                seen = [rows.get((ns, k)) == v for ns, k, v in pairs]
                if first is None and any(seen):
                    first = at
                    cur.execute(count_sql, count_args)
                    first_rows = cur.fetchone()[0]
                if all(seen[1::2]):  # every partition's last entry: confirm with a full count
                    cur.execute(count_sql, count_args)
                    if cur.fetchone()[0] == n_rows:
                        end = at
                        break
                time.sleep(0.05)
        res["peak_rss_kb"], res["cpu_s"] = proc_figures(proc.pid)
        check_status(rest_status(port, name), log_path)
        res.update(seconds=end, rows_per_s=n_rows / end, first_row_s=first,
                   first_rows=first_rows,
                   rows_per_s_steady=(n_rows - first_rows) / (end - first) if end > first else None)
        res["committed_s"] = wait_committed(bootstrap, "connect-" + name, ends, t0,
                                            deadline, proc, log_path)
        res["batches"] = batch_sizes(log_path)
    finally:
        if proc is not None:
            stop(proc)
        logf.close()
        conn.close()
    return res


def wait_committed(bootstrap, group, ends, t0, deadline, proc, log_path):
    """Seconds from T0 until GROUP's committed offsets reach ENDS."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(t, p) for t, p in ends]
        while True:
            got = {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=10)}
            if got == ends:
                return time.perf_counter() - t0
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"peer: committed offsets {got} never reached {ends} "
                                   f"(log {log_path})")
            time.sleep(0.1)
    finally:
        c.close()


def batch_sizes(log_path):
    """The sizes of the task's put() calls (with max.poll.records = batch.size each is one
    flush, one transaction), from its DEBUG line "Received N changes." (log4j2.properties)."""
    n = []
    with open(log_path, errors="replace") as f:
        for line in f:
            i = line.find("Received ")
            if i >= 0 and " changes." in line:
                try:
                    n.append(int(line[i + 9:].split()[0]))
                except ValueError:
                    pass
    return {"n": len(n), "rows_max": max(n), "rows_p50": sorted(n)[len(n) // 2]} if n else None


# ---------------------------------------------------------------- checks


def verify(conninfo, table, entries, sample=2000, seed=5):
    """Check that TABLE holds as many rows as ENTRIES, and compare SAMPLE of them (random,
    plus the first and last entries) with their entries: value, tags, metadata (as jsonb), the
    embedding as float4 (exactly the float32 values), and copysink's partition and offset
    columns left NULL. Returns the rows compared; raises RuntimeError on a difference."""
    rng = random.Random(seed)
    picked = [entries[0], entries[-1]] + rng.sample(entries, min(sample, len(entries)))
    conn = bench.connect(conninfo)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            got = cur.fetchone()[0]
            if got != len(entries):
                raise RuntimeError(f"peer: {table} holds {got} rows, not {len(entries)}")
            for e in picked:
                cur.execute(f"SELECT value, tags, metadata, embedding::real[], "
                            f"copysink_partition, copysink_offset, created_at IS NOT NULL "
                            f"FROM {table} WHERE namespace = %s AND key = %s",
                            (e["namespace"], e["key"]))
                row = cur.fetchone()
                if row is None:
                    raise RuntimeError(f"peer: row {e['namespace']}/{e['key']} missing")
                value, tags, meta, emb, part, off, created = row
                if isinstance(meta, str):
                    meta = json.loads(meta)
                checks = (("value", value == e["value"]), ("tags", tags == e["tags"]),
                          ("metadata", meta == e["metadata"]),
                          ("embedding", emb is not None and
                           array.array("f", emb) == e["embedding"]),
                          ("copysink columns", part is None and off is None),
                          ("created_at", created))
                diffs = [f for f, ok in checks if not ok]
                if diffs:
                    raise RuntimeError(f"peer: row {e['namespace']}/{e['key']} differs in "
                                       f"{', '.join(diffs)}")
    finally:
        conn.close()
    return len(picked)


# ---------------------------------------------------------------- the program


def migrate(args):
    """copysink migrate (with the vector extension first when asked or --kind auto finds it),
    then an empty memory_entries; returns the embedding column's kind."""
    conn = bench.connect(args.pg)
    with conn.cursor() as cur:
        if args.kind in ("auto", "vector"):
            cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            if cur.fetchone():
                cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            elif args.kind == "vector":
                raise RuntimeError("peer: --kind vector, but the server has no pgvector")
    subprocess.run([args.bin, "migrate", "-c", "/dev/stdin"], input=(
        f"[postgres]\nconninfo = {args.pg}\n[table memory_entries]\n").encode(), check=True)
    kind = bench.embedding_kind(conn)
    if args.kind != "auto" and kind != args.kind:
        raise RuntimeError(f"peer: memory_entries.embedding is {kind}, not {args.kind}")
    with conn.cursor() as cur:
        cur.execute("TRUNCATE memory_entries")
        cur.execute("CHECKPOINT")
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
    conn.close()
    return kind, version


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", required=True, help="libpq conninfo (TCP host) of the database")
    ap.add_argument("--kafka", required=True, help="bootstrap servers")
    ap.add_argument("--bin", required=True, help="the copysink binary (for copysink migrate)")
    ap.add_argument("--entries", type=int, default=50_000)
    ap.add_argument("--kind", choices=("auto", "real[]", "vector"), default="auto",
                    help="the embedding column (auto: vector when the server has pgvector)")
    ap.add_argument("--tasks", type=int, default=1, help="the connector's tasks.max")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a connector property over the template's (repeatable)")
    ap.add_argument("--cache", default=default_cache_dir())
    ap.add_argument("--workdir", help="logs and worker files (default: a new /tmp folder)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per run")
    args = ap.parse_args()

    extra = dict(kv.split("=", 1) for kv in args.set)
    classpath = prepare(args.cache)
    kind, version = migrate(args)
    n = args.entries
    workdir = args.workdir or tempfile.mkdtemp(prefix="copysink-peer.")
    log(f"generating {n} entries (embedding column {kind}); logs in {workdir}")
    pool = bench.embedding_pool(1)
    new, upd = bench.make_entries(n, 1, 1, pool), bench.make_entries(n, 1, 2, pool)
    run_id = uuid.uuid4().hex[:6]
    t_new, t_upd = f"peer.{run_id}.new", f"peer.{run_id}.upd"
    for t in (t_new, t_upd):
        bench.create_topic(args.kafka, t)
    log("producing")
    res = {"peer": "debezium-connector-jdbc 3.5.0.Final, connect-runtime 4.1.1 (standalone)",
           "entries": n, "embedding_type": kind, "postgres": version, "tasks": args.tasks,
           "produce_s": produce_json(args.kafka, t_new, new, kind)}
    produce_json(args.kafka, t_upd, upd, kind)
    bench.warm_up(args.kafka, t_new)

    log("new keys into an empty table")
    res["new"] = run(classpath, args.kafka, args.pg, t_new, "memory_entries", n, workdir, kind,
                     tasks=args.tasks, timeout=args.timeout, extra_props=extra)
    res["new"]["verified_rows"] = verify(args.pg, "memory_entries", new)
    with bench.connect(args.pg).cursor() as cur:
        cur.execute("CHECKPOINT")
    log("the same keys, every value changed (update)")
    res["update"] = run(classpath, args.kafka, args.pg, t_upd, "memory_entries", n, workdir,
                        kind, value_prefix="v2 ", tasks=args.tasks, timeout=args.timeout,
                        extra_props=extra)
    res["update"]["verified_rows"] = verify(args.pg, "memory_entries", upd)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
