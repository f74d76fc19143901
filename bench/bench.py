#!/usr/bin/env python3
"""copysink benchmark: copysink end to end against the raw COPY ceiling, the merge ceiling and
the seed's method, side by side on the same generated entries, in one run on one machine.

Run it through bench/run.sh, which builds copysink and starts PostgreSQL and Kafka.
Writes bench/results/results.json, results.md and batch_size.png (gnuplot).
"""
import argparse
import array
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import msgpack
import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import staging

DIM = 384
PARTITIONS = 3
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega memory pattern vector cache batch").split()
COLS = ("namespace", "key", "value", "embedding", "metadata", "tags")
MERGE_SQL = (
    "INSERT INTO {t} AS t (namespace, key, value, embedding, metadata, tags) "
    "SELECT namespace, key, value, embedding, metadata, tags FROM {s} "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, "
    "embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata, tags = EXCLUDED.tags, "
    "updated_at = now() WHERE (t.value, t.embedding, t.metadata, t.tags) IS DISTINCT FROM "
    "(EXCLUDED.value, EXCLUDED.embedding, EXCLUDED.metadata, EXCLUDED.tags)")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- entries

SWEEP_MAX_BYTES = 268435456  # the batch size sweep: max_rows bounds every batch
POOL = 4096  # distinct embeddings; generating 200,000 x 384 floats in Python would dominate


def embedding_pool(seed):
    rng = random.Random(seed)
    return [array.array("f", (rng.uniform(-1, 1) for _ in range(DIM))) for _ in range(POOL)]


def make_entries(n, seed, version, pool):
    """n memory entries with unique keys; `version` changes every value but not the keys."""
    rng = random.Random(seed * 1000 + version)
    out = []
    for i in range(n):
        out.append({
            "namespace": f"bench{i % 8}",
            "key": f"entry_{i:08d}",
            "value": f"v{version} " + " ".join(rng.choice(WORDS) for _ in range(12)),
            "embedding": pool[(i * 31 + version * 7) % POOL],
            "metadata": {"index": i, "version": version, "score": round(rng.random(), 6),
                         "source": rng.choice(WORDS), "nested": {"a": i % 7, "b": "x"}},
            "tags": [rng.choice(WORDS) for _ in range(3)],
        })
    return out


def to_msgpack(e):
    """The compact producer form: embedding as little-endian float32 bin."""
    d = dict(e)
    d["embedding"] = e["embedding"].tobytes()  # native = little-endian on x86-64
    return msgpack.packb(d, use_bin_type=True)


def embedding_field(emb, kind):
    """The binary COPY field of an embedding: pgvector's vector or a real[] array."""
    be = array.array("f", emb)
    be.byteswap()
    raw = be.tobytes()
    if kind == "vector":
        body = struct.pack("!hh", DIM, 0) + raw
    else:  # real[]: array header, then (length 4, float4) per element
        elems = bytearray(8 * DIM)
        elems[3::8] = b"\x04" * DIM
        for k in range(4):
            elems[4 + k::8] = raw[k::4]
        body = struct.pack("!iiiii", 1, 0, 700, DIM, 1) + bytes(elems)
    return struct.pack("!i", len(body)) + body


def binary_copy(entries, kind):
    """The same rows in PostgreSQL's binary COPY format (embedding as the column's type)."""
    cache = {}
    parts = [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)]
    for e in entries:
        parts.append(struct.pack("!h", 6))
        for s in (e["namespace"], e["key"], e["value"]):
            b = s.encode()
            parts.append(struct.pack("!i", len(b)) + b)
        emb = cache.get(id(e["embedding"]))
        if emb is None:
            emb = cache[id(e["embedding"])] = embedding_field(e["embedding"], kind)
        parts.append(emb)
        js = b"\x01" + json.dumps(e["metadata"], separators=(",", ":")).encode()
        parts.append(struct.pack("!i", len(js)) + js)
        tags = b"".join(struct.pack("!i", len(t.encode())) + t.encode() for t in e["tags"])
        arr = struct.pack("!iiiii", 1, 0, 25, len(e["tags"]), 1) + tags
        parts.append(struct.pack("!i", len(arr)) + arr)
    parts.append(struct.pack("!h", -1))
    return b"".join(parts)


def text_copy_row(e, kind):
    """The seed's StringIO text COPY line (bulk_ops.py escaping)."""
    def esc(s):
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    floats = ",".join(repr(float(x)) for x in e["embedding"])
    emb = "[" + floats + "]" if kind == "vector" else "{" + floats + "}"
    tags = "{" + ",".join(e["tags"]) + "}"
    return "\t".join([esc(e["namespace"]), esc(e["key"]), esc(e["value"]), emb,
                      esc(json.dumps(e["metadata"])), tags]) + "\n"


# ---------------------------------------------------------------- PostgreSQL


def connect(conninfo):
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    return conn


def clone_table(conn, name):
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(f"CREATE TABLE {name} (LIKE memory_entries INCLUDING ALL)")
        # LIKE leaves out the storage parameters (copysink migrate's toast_tuple_target)
        cur.execute("SELECT array_to_string(reloptions, ', ') FROM pg_class "
                    "WHERE oid = 'memory_entries'::regclass")
        opts = cur.fetchone()[0]
        if opts:
            cur.execute(f"ALTER TABLE {name} SET ({opts})")
        cur.execute("CHECKPOINT")


def empty_table(conn):
    """TRUNCATE memory_entries, then CHECKPOINT: every measured run starts from an empty table
    and with no dirty buffers or pending checkpoint left by the run before it."""
    with conn.cursor() as cur:
        cur.execute("TRUNCATE memory_entries")
        cur.execute("CHECKPOINT")


def toast_check(conn, pool, kind, n, rounds):
    """Raw COPY of rows wider than the benchmark's (a longer value) into a copy of the table
    with PostgreSQL's default TOAST threshold and with copysink migrate's toast_tuple_target:
    rows/s, bytes per row and the TOAST table's size, for each width (best of the rounds)."""
    out = []
    for words in (0, 60, 120):
        entries = make_entries(n, 7, 1, pool)
        for e in entries:
            e["value"] += "".join(f" lorem{i % 97}" for i in range(words))
        data = binary_copy(entries, kind)
        del entries
        row = {"extra_words": words}
        for _ in range(rounds):
            for label, target in (("default", "default"), ("toast_tuple_target", 8160)):
                dt = raw_ceiling(conn, data, n, target)
                with conn.cursor() as cur:
                    cur.execute("SELECT avg(pg_column_size(t.*)), pg_relation_size("
                                "(SELECT reltoastrelid FROM pg_class WHERE relname = "
                                "'bench_raw')) FROM bench_raw t")
                    size, toast = cur.fetchone()
                if label not in row or n / dt > row[label]["rows_per_s"]:
                    row[label] = {"rows_per_s": n / dt, "row_bytes": float(size),
                                  "toast_bytes": toast}
        out.append(row)
    return out


def raw_ceiling(conn, copy_bytes, n, toast_target=None):
    """Seconds of one binary COPY into an empty copy of the table; toast_target "default"
    or a number sets its toast_tuple_target instead of memory_entries' own."""
    clone_table(conn, "bench_raw")
    with conn.cursor() as cur:
        if toast_target == "default":
            cur.execute("ALTER TABLE bench_raw RESET (toast_tuple_target)")
        elif toast_target is not None:
            cur.execute(f"ALTER TABLE bench_raw SET (toast_tuple_target = {toast_target})")
        t0 = time.perf_counter()
        cur.copy_expert(f"COPY bench_raw ({', '.join(COLS)}) FROM STDIN (FORMAT binary)",
                        io.BytesIO(copy_bytes))
        dt = time.perf_counter() - t0
        cur.execute("SELECT count(*) FROM bench_raw")
        assert cur.fetchone()[0] == n
    return dt


def raw_ceiling_parallel(conninfo, conn, parts, n):
    """The raw ceiling with one connection per part, all at once: a psql \\copy each (separate
    processes, so that nothing on the client side is shared), the clock from starting them to
    the last one done."""
    clone_table(conn, "bench_raw")
    files = []
    try:
        for part in parts:
            f = tempfile.NamedTemporaryFile(suffix=".copy", delete=False)
            f.write(part)
            f.close()
            files.append(f.name)
        cols = ", ".join(COLS)
        t0 = time.perf_counter()
        procs = [subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo,
                                   "-c", f"\\copy bench_raw ({cols}) FROM '{name}' "
                                   "(FORMAT binary)"]) for name in files]
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError("raw ceiling: a psql \\copy failed")
        dt = time.perf_counter() - t0
    finally:
        for name in files:
            os.unlink(name)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_raw")
        assert cur.fetchone()[0] == n
    return dt


def merge_ceiling(conn, table, copy_bytes):
    """Binary COPY into a temp table, then the same INSERT ... ON CONFLICT, one transaction."""
    conn.autocommit = False
    with conn.cursor() as cur:
        t0 = time.perf_counter()
        cur.execute("CREATE TEMP TABLE bench_stage ON COMMIT DROP AS "
                    f"SELECT {', '.join(COLS)} FROM {table} WITH NO DATA")
        cur.copy_expert(f"COPY bench_stage FROM STDIN (FORMAT binary)", io.BytesIO(copy_bytes))
        cur.execute(MERGE_SQL.format(t=table, s="bench_stage"))
        conn.commit()
        dt = time.perf_counter() - t0
    conn.autocommit = True
    return dt


def seed_copy(conn, entries, kind, batch=1000):
    """The seed's bulk path: StringIO text COPY into a temp table, then ON CONFLICT."""
    clone_table(conn, "bench_seed")
    t0 = time.perf_counter()
    for i in range(0, len(entries), batch):
        conn.autocommit = False
        with conn.cursor() as cur:
            buf = io.StringIO()
            for e in entries[i:i + batch]:
                if len(e["embedding"]) != DIM:
                    raise ValueError("embedding dimension")
                buf.write(text_copy_row(e, kind))
            buf.seek(0)
            cur.execute("CREATE TEMP TABLE temp_seed (LIKE bench_seed INCLUDING DEFAULTS) "
                        "ON COMMIT DROP")
            cur.copy_from(buf, "temp_seed", columns=COLS)
            cur.execute(MERGE_SQL.format(t="bench_seed", s="temp_seed"))
        conn.commit()
    conn.autocommit = True
    return time.perf_counter() - t0


def seed_inserts(conn, entries, kind):
    """The seed's individual INSERTs, one statement per entry."""
    clone_table(conn, "bench_ins")
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for e in entries:
            cur.execute("INSERT INTO bench_ins (namespace, key, value, embedding, metadata, tags)"
                        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (namespace, key) DO "
                        "UPDATE SET value = EXCLUDED.value",
                        (e["namespace"], e["key"], e["value"],
                         "[" + ",".join(repr(x) for x in e["embedding"]) + "]"
                         if kind == "vector" else list(e["embedding"]),
                         json.dumps(e["metadata"]), e["tags"]))
    return time.perf_counter() - t0


def stored(conn, group):
    with conn.cursor() as cur:
        cur.execute("SELECT topic, partition, next_offset FROM copysink_offsets WHERE group_id = %s",
                    (group,))
        return {(t, p): o for t, p, o in cur.fetchall()}


def embedding_kind(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'memory_entries'::regclass AND attname = 'embedding'")
        t = cur.fetchone()[0]
    return "vector" if t.startswith("vector") else "real[]"


# ---------------------------------------------------------------- Kafka


def create_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS,
                                           replication_factor=1)]).values():
        f.result(timeout=60)
    time.sleep(1)


PRODUCER = {"enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4",
            "batch.size": 1000000}


def produce(bootstrap, topic, entries):
    """Produce every entry, keyed by its conflict key (the msgpack array of the key fields)."""
    p = Producer(dict(PRODUCER, **{"bootstrap.servers": bootstrap}))
    failed = []
    t0 = time.perf_counter()

    def cb(err, msg):
        if err is not None:
            failed.append(err)

    for e in entries:
        key = msgpack.packb([e["namespace"], e["key"]])
        while True:
            try:
                p.produce(topic, key=key, value=to_msgpack(e), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(120)
    if left or failed:
        raise RuntimeError(f"produce: {left} undelivered, errors {failed[:3]}")
    return time.perf_counter() - t0


def end_offsets(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    ends = {}
    for p in range(PARTITIONS):
        ends[(topic, p)] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    c.close()
    return {k: v for k, v in ends.items() if v > 0}


# ---------------------------------------------------------------- copysink


def warm_up(bootstrap, topic):
    """Join a group once before any clock runs: the broker creates its offsets topic on the
    first group, which takes seconds that no later run pays."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-warm-up",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    c.close()


def write_config(path, args, topic, group, max_rows, linger_ms=None, direct=True,
                 when_idle=True, kafka_extra="", max_bytes=None, fetch_wake=True,
                 pg_options=""):
    linger_ms = args.linger_ms if linger_ms is None else linger_ms
    path.write(f"""[kafka]
bootstrap.servers = {args.kafka}
group.id = {group}
{kafka_extra}
[postgres]
conninfo = {args.pg}
{pg_options}
direct_copy = {"on" if direct else "off"}

[batch]
max_rows = {max_rows}
max_bytes = {max_bytes or args.max_bytes}
linger_ms = {linger_ms}
write_when_idle = {"on" if when_idle else "off"}

[worker]
stats_interval_s = 5
fetch_wake = {"on" if fetch_wake else "off"}

[http]
listen =

[table memory_entries]
topic = {topic}
on_conflict = update
""")
    path.flush()


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_copysink(args, topic, max_rows, log_name, conn, direct=True, profile=None,
                 kafka_extra="", max_bytes=None, fetch_wake=True, when_idle=True, workers=1,
                 pg_options=""):
    """Start a worker (or several in one group, each with its own connection and a share of
    the partitions) with a fresh group on a topic produced beforehand; stop the clock when the
    last offset is stored in PostgreSQL. Returns (seconds, peak RSS in kB, summed over the
    workers)."""
    group = "bench-" + uuid.uuid4().hex[:8]
    ends = end_offsets(args.kafka, topic)
    names = [log_name] if workers == 1 else \
        [log_name.replace(".log", f"_w{i + 1}.log") for i in range(workers)]
    logs = [open(os.path.join(args.out, name), "wb") for name in names]
    procs = []
    perf = None
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as cfg:
        write_config(cfg, args, topic, group, max_rows, direct=direct, kafka_extra=kafka_extra,
                     max_bytes=max_bytes, fetch_wake=fetch_wake, when_idle=when_idle,
                     pg_options=pg_options)
        try:
            if profile:  # the whole machine: copysink, PostgreSQL and the broker share it
                perf = subprocess.Popen(["perf", "record", "-a", "-F", "999", "-o", profile],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            t0 = time.perf_counter()
            procs = [subprocess.Popen([args.bin, "run", "-c", cfg.name], stdout=f, stderr=f)
                     for f in logs]
            while stored(conn, group) != ends:
                for proc, name in zip(procs, names):
                    if proc.poll() is not None:
                        raise RuntimeError(f"copysink exited with {proc.returncode}, see {name}")
                time.sleep(0.01)
            dt = time.perf_counter() - t0
            rss = sum(peak_rss_kb(proc.pid) for proc in procs)
        finally:
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait(60)
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
            for f in logs:
                f.close()
    return dt, rss


def rate_producer(args):
    """The latency mode's producer, built beside the copysink binary."""
    path = os.path.join(os.path.dirname(os.path.abspath(args.bin)), "copysink_rate_producer")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: build the target copysink_rate_producer")
    return path


def perf_summary(data, out):
    """Where the CPU went during a run, by process and by function (perf report)."""
    with open(out, "w") as f:
        for sort, limit in (("comm", 12), ("comm,dso,sym", 40)):
            r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                "--sort", sort, "--percent-limit", "0.7"],
                               capture_output=True, text=True)
            body = [l for l in r.stdout.splitlines() if l and not l.startswith("#")]
            f.write(f"== perf report --sort {sort}\n" + "\n".join(body[:limit]) + "\n\n")


def latency(args, topic, rate, seconds, pool, conn, name, when_idle=True):
    """p50 and p99 from produce to commit at a fixed rate. The records are produced by
    copysink_rate_producer (bench/rate_producer.c), which reports when it handed each one to
    librdkafka; a poller reads the stored offsets every 5 ms, and an entry's latency ends at
    the first reading that covers its offset."""
    group = "bench-lat-" + uuid.uuid4().hex[:8]
    entries = make_entries(int(rate * seconds), 99, 5, pool)
    empty_table(conn)  # each latency run inserts new keys into an empty table
    commits = []  # (time, {partition: next offset})
    sends = {}    # (partition, offset) -> time the entry was handed to the producer
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as cfg, \
            tempfile.NamedTemporaryFile("wb", suffix=".rec") as rec, \
            tempfile.NamedTemporaryFile("r", suffix=".sent") as sent, \
            open(os.path.join(args.out, f"{name}.log"), "wb") as logf:
        # encoded before the clock starts, and produced from C: the producer is a client of the
        # benchmark, and on a small machine its CPU would be taken from the system under test
        for e in entries:
            key, value = msgpack.packb([e["namespace"], e["key"]]), to_msgpack(e)
            rec.write(struct.pack("<II", len(key), len(value)) + key + value)
        rec.flush()
        del entries
        write_config(cfg, args, topic, group, 10000, args.linger_ms, when_idle=when_idle)
        proc = subprocess.Popen([args.bin, "run", "-c", cfg.name], stdout=logf, stderr=logf)
        try:
            time.sleep(3)  # joined the group and assigned
            stop = threading.Event()

            def poll():
                c = connect(args.pg)
                with c.cursor() as cur:
                    while not stop.is_set():
                        cur.execute("SELECT partition, next_offset FROM copysink_offsets "
                                    "WHERE group_id = %s", (group,))
                        commits.append((time.time(), dict(cur.fetchall())))
                        time.sleep(0.005)
                c.close()
            th = threading.Thread(target=poll)
            th.start()
            try:
                conf = dict(PRODUCER, **{"bootstrap.servers": args.kafka, "linger.ms": 5})
                r = subprocess.run([rate_producer(args), topic, f"{rate:.3f}", rec.name,
                                    sent.name] + [f"{k}={str(v).lower()}" for k, v in
                                                  conf.items()],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"latency: the producer failed: {r.stderr.strip()}")
                ends = end_offsets(args.kafka, topic)
                deadline = time.time() + 120
                while stored(conn, group) != ends:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"latency: the worker did not catch up, see {name}.log")
                    time.sleep(0.05)
                time.sleep(0.05)
            finally:
                stop.set()
                th.join()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        for line in sent:
            part, off, at = line.split()
            sends[(int(part), int(off))] = float(at)
    lat = []
    j = 0
    for (part, off), sent in sorted(sends.items(), key=lambda kv: kv[1]):
        while j < len(commits) and commits[j][0] < sent:
            j += 1
        for t, offs in commits[j:]:
            if offs.get(part, -1) > off:
                lat.append((t - sent) * 1000)
                break
    if len(lat) != len(sends):
        raise RuntimeError(f"latency: {len(sends) - len(lat)} entries never seen committed")
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], len(lat)


# ---------------------------------------------------------------- main


def prepare(args):
    """Everything the runs share: the table migrated and empty, the entries (new keys, and the
    same keys with every value changed), their binary COPY, the two topics produced."""
    n = args.entries
    res = {"entries": n, "dim": DIM, "max_bytes": args.max_bytes, "linger_ms": args.linger_ms,
           "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
           "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    res["copysink_version"] = subprocess.run([args.bin, "--version"], capture_output=True,
                                             text=True).stdout.strip()

    subprocess.run([args.bin, "migrate", "-c", "/dev/stdin"], input=(
        f"[postgres]\nconninfo = {args.pg}\n[table memory_entries]\n").encode(), check=True)
    conn = connect(args.pg)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE memory_entries")
        cur.execute("SHOW server_version")
        res["postgres"] = cur.fetchone()[0]
    kind = embedding_kind(conn)
    res["embedding_type"] = kind

    log(f"generating {n} entries (embedding column {kind})")
    pool = embedding_pool(1)
    new = make_entries(n, 1, 1, pool)
    upd = make_entries(n, 1, 2, pool)  # same keys, every value changed
    copy_new, copy_upd = binary_copy(new, kind), binary_copy(upd, kind)
    res["copy_bytes_per_row"] = len(copy_new) / n
    res["msgpack_bytes_per_row"] = sum(len(to_msgpack(e)) for e in new[:1000]) / 1000

    run_id = uuid.uuid4().hex[:6]
    t_new, t_upd = f"bench.{run_id}.new", f"bench.{run_id}.upd"
    for t in (t_new, t_upd):
        create_topic(args.kafka, t)
    log("producing")
    res["produce_s"] = produce(args.kafka, t_new, new)
    produce(args.kafka, t_upd, upd)
    warm_up(args.kafka, t_new)

    return res, conn, kind, pool, new, copy_new, copy_upd, t_new, t_upd, run_id


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--seed-entries", type=int, default=20_000,
                    help="entries for the seed's COPY method (it is slow)")
    ap.add_argument("--insert-entries", type=int, default=2_000,
                    help="entries for the seed's individual INSERTs")
    ap.add_argument("--batch-sizes", default="1000,2500,5000,10000,20000",
                    help="max_rows values of the batch size sweep (empty: no sweep)")
    ap.add_argument("--max-bytes", type=int, default=33554432)
    ap.add_argument("--linger-ms", type=int, default=200)
    ap.add_argument("--writers", type=int, default=PARTITIONS,
                    help="[postgres] writers of the several-writers runs, which the targets "
                         "compare (default: one per partition)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the runs the targets compare (each figure: the fastest)")
    ap.add_argument("--latency-rounds", type=int, default=5,
                    help="rounds of the latency mode with the defaults (the figure: the best)")
    ap.add_argument("--toast-entries", type=int, default=50_000,
                    help="rows per width of the TOAST check (0: skip it)")
    ap.add_argument("--latency-seconds", type=float, default=20,
                    help="length of the latency mode (0: skip it)")
    ap.add_argument("--pg", help="conninfo of an empty database")
    ap.add_argument("--kafka", help="bootstrap servers")
    ap.add_argument("--bin", help="the copysink binary")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction,
                    default=shutil.which("perf") is not None,
                    help="profile the whole machine with perf during copysink's new-keys run "
                         "(default: when perf is installed) into OUT/profile.txt")
    ap.add_argument("--report-only", action="store_true",
                    help="write the report again from OUT/results.json")
    ap.add_argument("--staging-rounds", type=int, default=5,
                    help="paired rounds of [postgres] staging = session against transaction "
                         "(bench/staging.py; OUT/staging.json and staging.md; 0: skip it)")
    ap.add_argument("--staging-only", action="store_true",
                    help="run only the staging comparison (and what it needs)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        with open(os.path.join(args.out, "results.json")) as f:
            report(json.load(f), args.out)
        return
    if not (args.pg and args.kafka and args.bin):
        ap.error("--pg, --kafka and --bin are required (bench/run.sh gives them)")
    res, conn, kind, pool, new, copy_new, copy_upd, t_new, t_upd, run_id = prepare(args)
    n = args.entries
    if args.staging_only:
        staging.compare(sys.modules[__name__], args, conn, t_new, t_upd, copy_new, n)
        return

    # The runs that the targets compare, in turns, ROUNDS times: the first run after producing
    # meets a busier machine (the broker writing back its pages) and the machine is shared, so
    # each figure is the fastest of its rounds, measured beside the others; results.json keeps
    # every round.
    for rnd in range(1, args.rounds + 1):
        for name, wake in (("copysink_new", True), ("copysink_new_nowake", False)):
            log(f"round {rnd}: copysink, new keys{'' if wake else ', fetch_wake = off'}")
            empty_table(conn)
            dt, rss = run_copysink(args, t_new, 10000, f"{name}_{rnd}.log", conn,
                                   fetch_wake=wake)
            keep_best(res, name, {"seconds": dt, "rows_per_s": n / dt, "peak_rss_kb": rss,
                                  "log": f"{name}_{rnd}.log"})
        for name, wr in (("copysink_update", 1), ("copysink_update_writers", args.writers)):
            if name == "copysink_update_writers":  # the table again as new keys left it
                log(f"round {rnd}: copysink, new keys, writers = {wr}")
                empty_table(conn)
                log_name = f"copysink_new_writers_{rnd}.log"
                dt, rss = run_copysink(args, t_new, 10000, log_name, conn,
                                       pg_options=f"writers = {wr}")
                keep_best(res, "copysink_new_writers", {"seconds": dt, "rows_per_s": n / dt,
                                                        "peak_rss_kb": rss, "log": log_name,
                                                        "writers": wr})
            log(f"round {rnd}: copysink, all keys existing (update), writers = {wr}")
            with conn.cursor() as cur:
                cur.execute("CHECKPOINT")
            log_name = f"{name.replace('update', 'upd')}_{rnd}.log"
            dt, rss = run_copysink(args, t_upd, 10000, log_name, conn,
                                   pg_options=f"writers = {wr}")
            keep_best(res, name, {"seconds": dt, "rows_per_s": n / dt, "peak_rss_kb": rss,
                                  "log": log_name, "writers": wr})
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM memory_entries WHERE value LIKE 'v2 %'")
                got = cur.fetchone()[0]
            if got != n:
                raise RuntimeError(f"copysink updated {got} rows of {n}")
        log(f"round {rnd}: raw COPY ceiling (psycopg2, then psql)")
        dt = raw_ceiling(conn, copy_new, n)
        keep_best(res, "raw_copy", {"seconds": dt, "rows_per_s": n / dt, "client": "psycopg2"})
        dt = raw_ceiling_parallel(args.pg, conn, [copy_new], n)
        keep_best(res, "raw_copy", {"seconds": dt, "rows_per_s": n / dt, "client": "psql"})
        log(f"round {rnd}: merge ceiling, new keys, then all keys existing")
        clone_table(conn, "bench_merge")
        dt = merge_ceiling(conn, "bench_merge", copy_new)
        keep_best(res, "merge_new", {"seconds": dt, "rows_per_s": n / dt})
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
        dt = merge_ceiling(conn, "bench_merge", copy_upd)
        keep_best(res, "merge_update", {"seconds": dt, "rows_per_s": n / dt})

    log("copysink, new keys, direct path off (staging and merge)")
    empty_table(conn)
    dt, rss3 = run_copysink(args, t_new, 10000, "copysink_new_merge.log", conn, direct=False)
    res["copysink_new_merge"] = {"seconds": dt, "rows_per_s": n / dt, "peak_rss_kb": rss3}
    # the staging tables in local buffers of twice max_bytes instead of the server's setting
    log("copysink, new keys, direct path off, temp_buffers_mb = -1 (twice max_bytes)")
    empty_table(conn)
    dt, _ = run_copysink(args, t_new, 10000, "copysink_new_merge_tb.log", conn, direct=False,
                         pg_options="temp_buffers_mb = -1")
    with conn.cursor() as cur:
        cur.execute("SHOW temp_buffers")
        server_tb = cur.fetchone()[0]
    res["copysink_new_merge_tb"] = {"seconds": dt, "rows_per_s": n / dt,
                                    "temp_buffers_mb": 2 * args.max_bytes // 1048576,
                                    "server_temp_buffers": server_tb}
    big = 4 * args.max_bytes // 1024  # the default: half of max_bytes less fetch.max.bytes
    log(f"copysink, new keys, queued.max.messages.kbytes = {big} (4 x max_bytes)")
    empty_table(conn)
    dt, rss4 = run_copysink(args, t_new, 10000, "copysink_new_bigqueue.log", conn,
                            kafka_extra=f"queued.max.messages.kbytes = {big}\n")
    res["copysink_new_bigqueue"] = {"seconds": dt, "rows_per_s": n / dt, "peak_rss_kb": rss4,
                                    "queued_max_messages_kbytes": big}
    # several writers in one worker ([postgres] writers), each its own connection and a share
    # of the partitions: 1 and args.writers come from the rounds, the others are run here
    res["copysink_writers"] = []
    for k in range(1, max(args.writers, 3) + 1):
        src = {1: res["copysink_new"], args.writers: res["copysink_new_writers"]}.get(k)
        if src is None:
            log(f"copysink, new keys, writers = {k}")
            empty_table(conn)
            dt, rss = run_copysink(args, t_new, 10000, f"copysink_new_writers{k}.log", conn,
                                   pg_options=f"writers = {k}")
            src = {"seconds": dt, "rows_per_s": n / dt, "peak_rss_kb": rss}
        res["copysink_writers"].append({"writers": k, **{f: src[f] for f in
                                                         ("seconds", "rows_per_s", "peak_rss_kb")}})
    res["raw_copy_parallel"] = []
    for k in range(1, max(args.writers, 3) + 1):
        log(f"raw COPY ceiling, {k} psql connection(s) at once")
        parts = [binary_copy(new[i::k], kind) for i in range(k)]
        dt = raw_ceiling_parallel(args.pg, conn, parts, n)
        res["raw_copy_parallel"].append({"connections": k, "seconds": dt, "rows_per_s": n / dt})

    log("seed: StringIO COPY + ON CONFLICT")
    m = min(args.seed_entries, n)
    dt = seed_copy(conn, new[:m], kind)
    res["seed_copy"] = {"entries": m, "seconds": dt, "rows_per_s": m / dt}
    log("seed: individual INSERTs")
    m = min(args.insert_entries, n)
    dt = seed_inserts(conn, new[:m], kind)
    res["seed_insert"] = {"entries": m, "seconds": dt, "rows_per_s": m / dt}
    for t in ("bench_raw", "bench_merge", "bench_seed", "bench_ins"):
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {t}")

    log("batch size sweep")
    res["batch_sizes"] = []
    for bs in [int(x) for x in args.batch_sizes.split(",") if x]:
        empty_table(conn)
        # max_rows alone bounds the batch: max_bytes is set out of its way, and the consumer's
        # queue (which the worker sizes to max_bytes) is kept at its default size
        dt, rss = run_copysink(args, t_new, bs, f"copysink_bs{bs}.log", conn,
                               max_bytes=SWEEP_MAX_BYTES, kafka_extra=(
                                   f"fetch.max.bytes = {args.max_bytes // 8}\n"
                                   f"queued.max.messages.kbytes = "
                                   f"{(args.max_bytes - args.max_bytes // 8) // 2048}\n"))
        res["batch_sizes"].append({"max_rows": bs, "rows_per_s": n / dt, "peak_rss_kb": rss})

    if args.toast_entries > 0:
        log("TOAST check: raw COPY of wider rows, default threshold and toast_tuple_target")
        res["toast_entries"] = args.toast_entries
        res["toast"] = toast_check(conn, pool, kind, args.toast_entries, 2)

    if args.profile:
        log("profile of a new-keys run (not counted in the figures)")
        empty_table(conn)
        prof = os.path.join(args.out, "perf.data")
        run_copysink(args, t_new, 10000, "copysink_profile.log", conn, profile=prof)
        perf_summary(prof, os.path.join(args.out, "profile.txt"))
        os.unlink(prof)

    if args.latency_seconds > 0:
        # half of what the same settings reached with new keys
        rate = res["copysink_new"]["rows_per_s"] / 2
        # the machine is shared, and noise only ever adds latency: as with the other figures,
        # several rounds, each on a topic of its own (no backlog from the one before), and the
        # figure is the best of them; results.json and the report keep every round
        for rnd in range(1, args.latency_rounds + 1):
            log(f"round {rnd}: latency at half load ({rate:.0f} entries/s)")
            t_lat = f"bench.{run_id}.lat{rnd}"
            create_topic(args.kafka, t_lat)
            p50, p99, cnt = latency(args, t_lat, rate, args.latency_seconds, pool, conn,
                                    f"latency_{rnd}")
            entry = res.setdefault("latency", {"rounds": []})
            entry["rounds"].append({"rate": rate, "p50_ms": p50, "p99_ms": p99, "samples": cnt,
                                    "log": f"latency_{rnd}.log"})
            entry.update(min(entry["rounds"], key=lambda r: r["p99_ms"]))
        log("latency at half load, write_when_idle = off")
        t_lat = f"bench.{run_id}.lat_linger"
        create_topic(args.kafka, t_lat)
        p50, p99, cnt = latency(args, t_lat, rate, args.latency_seconds, pool, conn,
                                "latency_linger", False)
        res["latency_linger"] = {"rate": rate, "p50_ms": p50, "p99_ms": p99, "samples": cnt}

    if args.staging_rounds > 0:
        staging.compare(sys.modules[__name__], args, conn, t_new, t_upd, copy_new, n)

    report(res, args.out)


def keep_best(res, name, rec):
    """Add a round's figures to res[name]; res[name] shows the fastest round."""
    entry = res.setdefault(name, {"rounds": []})
    entry["rounds"].append(rec)
    entry.update(max(entry["rounds"], key=lambda r: r["rows_per_s"]))


def default_peak_rss_mb(res):
    """The highest peak RSS of the runs at the default memory settings, every round."""
    runs = [res["copysink_new_merge"]]
    runs += res["copysink_update"].get("rounds", [res["copysink_update"]])
    runs += res["copysink_new"].get("rounds", [res["copysink_new"]])
    runs += res["copysink_new_nowake"].get("rounds", [res["copysink_new_nowake"]])
    for name in ("copysink_new_writers", "copysink_update_writers"):
        runs += res[name].get("rounds", [res[name]]) if name in res else []
    runs += res.get("copysink_writers", [])
    return max(r["peak_rss_kb"] for r in runs) / 1024


def targeted(res):
    """The new-keys and update rates the targets compare: copysink with several writers when
    the run measured them (one per partition, a setting of the worker), else the defaults."""
    if "copysink_new_writers" in res and "copysink_update_writers" in res:
        return (res["copysink_new_writers"]["rows_per_s"],
                res["copysink_update_writers"]["rows_per_s"],
                f" (writers = {res['copysink_new_writers']['writers']})")
    return res["copysink_new"]["rows_per_s"], res["copysink_update"]["rows_per_s"], ""


def targets(res):
    """(name, measured, required, format) of every target; met when measured >= required
    (the ceilings of RSS and latency are turned round: the room left under them)."""
    c_new, c_upd, label = targeted(res)
    out = [
        (f"new keys: copysink{label} / raw COPY ceiling", c_new / res["raw_copy"]["rows_per_s"],
         0.85, "{:.2f}"),
        (f"keys existing, update: copysink{label} / merge ceiling",
         c_upd / res["merge_update"]["rows_per_s"], 0.95, "{:.2f}"),
        (f"copysink{label} / the seed's COPY method", c_new / res["seed_copy"]["rows_per_s"], 20,
         "{:.1f}"),
    ]
    rss = default_peak_rss_mb(res)
    cap = 3 * res["max_bytes"] / 1048576 + 32
    out.append(("peak RSS (MB) at most 3 x max_bytes + 32 MB: room left", cap - rss, 0, "{:.0f}"))
    if "latency" in res:
        out.append(("p99 latency at half load (ms) at most linger_ms + 100: room left",
                    res["linger_ms"] + 100 - res["latency"]["p99_ms"], 0, "{:.0f}"))
    return out


def writer_figures(out, log_name, seconds):
    """From a worker's log: rows/s while its writer wrote (the batches' own durations) and the
    share of the run the writer was busy."""
    rows = ms = 0
    try:
        with open(os.path.join(out, log_name)) as f:
            for line in f:
                if 'msg="batch committed"' in line:
                    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                    rows += int(fields["rows"])
                    ms += int(fields["ms"])
    except OSError:
        return None
    if ms == 0:
        return None
    return rows * 1000 / ms, ms / 1000 / seconds


def batch_stats(out, log_name):
    """Sizes and durations of the batches a worker's log reports, or None."""
    rows, ms = [], []
    try:
        with open(os.path.join(out, log_name)) as f:
            for line in f:
                if 'msg="batch committed"' in line:
                    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                    rows.append(int(fields["rows"]))
                    ms.append(int(fields["ms"]))
    except OSError:
        return None
    if not rows:
        return None
    rows.sort()
    ms.sort()
    return {"n": len(rows), "rows_p50": rows[len(rows) // 2], "rows_max": rows[-1],
            "ms_p50": ms[len(ms) // 2], "ms_p99": ms[int(len(ms) * 0.99)], "ms_max": ms[-1]}


def miss(got, need, fmt):
    if need > 0:
        return f"no: {got / need:.0%} of it"
    return f"no: over by {fmt.format(-got)}"


def report(res, out):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    c_new = res["copysink_new"]["rows_per_s"]
    c_upd = res["copysink_update"]["rows_per_s"]
    k = len(res["copysink_new"].get("rounds", [None]))
    best = f" (fastest of {k})" if k > 1 else ""
    t_new, t_upd, label = targeted(res)

    def t_ratio(rate, key, digits=2):
        """The ratio of the targeted configuration too, when it is not the default."""
        if not label:
            return ""
        return (f"; writers = {res['copysink_new_writers']['writers']}: "
                f"{rate / res[key]['rows_per_s']:.{digits}f}")
    rows = [
        (f"copysink end to end, new keys{best}", c_new, ""),
        (f"copysink end to end, new keys, fetch_wake = off{best}",
         res["copysink_new_nowake"]["rows_per_s"],
         f"copysink/this {c_new / res['copysink_new_nowake']['rows_per_s']:.2f}"),
        ("copysink end to end, new keys, direct_copy = off",
         res["copysink_new_merge"]["rows_per_s"],
         f"/merge ceiling {res['copysink_new_merge']['rows_per_s'] / res['merge_new']['rows_per_s']:.2f}"),
        *([(f"copysink end to end, new keys, direct_copy = off, temp_buffers "
             f"{res['copysink_new_merge_tb']['temp_buffers_mb']}MB (the server's: "
             f"{res['copysink_new_merge_tb'].get('server_temp_buffers', '8MB')})",
             res["copysink_new_merge_tb"]["rows_per_s"],
             f"/direct_copy = off {res['copysink_new_merge_tb']['rows_per_s'] / res['copysink_new_merge']['rows_per_s']:.2f}")]
          if "copysink_new_merge_tb" in res else []),
        (f"copysink end to end, new keys, queued.max.messages.kbytes = "
         f"{res['copysink_new_bigqueue']['queued_max_messages_kbytes']} (peak RSS "
         f"{res['copysink_new_bigqueue']['peak_rss_kb'] / 1024:.0f} MB)",
         res["copysink_new_bigqueue"]["rows_per_s"], ""),
        (f"copysink end to end, all keys existing (update){best}", c_upd, ""),
        *([(f"copysink end to end, new keys, writers = {res['copysink_new_writers']['writers']}"
            f"{best}", res["copysink_new_writers"]["rows_per_s"],
            f"/writers = 1 {res['copysink_new_writers']['rows_per_s'] / c_new:.2f}"),
           (f"copysink end to end, all keys existing (update), writers = "
            f"{res['copysink_update_writers']['writers']}{best}",
            res["copysink_update_writers"]["rows_per_s"],
            f"/writers = 1 {res['copysink_update_writers']['rows_per_s'] / c_upd:.2f}")]
          if "copysink_update_writers" in res else []),
        (f"raw binary COPY ceiling (one connection, {res['raw_copy'].get('client', 'psycopg2')})"
         f"{best}", res["raw_copy"]["rows_per_s"],
         f"copysink/ceiling {c_new / res['raw_copy']['rows_per_s']:.2f}{t_ratio(t_new, 'raw_copy')}"),
        (f"merge ceiling by hand, new keys{best}", res["merge_new"]["rows_per_s"],
         f"copysink/merge {c_new / res['merge_new']['rows_per_s']:.2f}{t_ratio(t_new, 'merge_new')}"),
        (f"merge ceiling by hand, keys existing{best}", res["merge_update"]["rows_per_s"],
         f"copysink/merge {c_upd / res['merge_update']['rows_per_s']:.2f}{t_ratio(t_upd, 'merge_update')}"),
        (f"seed: StringIO COPY + ON CONFLICT ({res['seed_copy']['entries']} entries)",
         res["seed_copy"]["rows_per_s"],
         f"copysink/seed {c_new / res['seed_copy']['rows_per_s']:.1f}{t_ratio(t_new, 'seed_copy', 1)}"),
        (f"seed: individual INSERTs ({res['seed_insert']['entries']} entries)",
         res["seed_insert"]["rows_per_s"],
         f"copysink/seed {c_new / res['seed_insert']['rows_per_s']:.1f}{t_ratio(t_new, 'seed_insert', 1)}"),
    ]
    lines = [f"# copysink benchmark ({res['entries']} entries, {res['dim']}-dim embeddings)", "",
             "| method | rows/s | ratio |", "|---|---:|---|"]
    lines += [f"| {name} | {rate:,.0f} | {ratio} |" for name, rate, ratio in rows]
    lines += ["", "The writer's side of each copysink run (from the worker's log: rows over the "
              "summed durations of the batches' transactions, and their share of the run):", "",
              "| run | rows/s while writing | writer busy |", "|---|---:|---:|"]
    for key, log_name in (("copysink_new", res["copysink_new"].get("log", "copysink_new.log")),
                          ("copysink_new_nowake",
                           res["copysink_new_nowake"].get("log", "copysink_new_nowake.log")),
                          ("copysink_new_merge", "copysink_new_merge.log"),
                          ("copysink_new_merge_tb", "copysink_new_merge_tb.log"),
                          ("copysink_new_bigqueue", "copysink_new_bigqueue.log"),
                          ("copysink_update",
                           res["copysink_update"].get("log", "copysink_upd.log")),
                          ("copysink_new_writers",
                           res.get("copysink_new_writers", {}).get("log", "")),
                          ("copysink_update_writers",
                           res.get("copysink_update_writers", {}).get("log", ""))):
        f = writer_figures(out, log_name, res[key]["seconds"]) if key in res else None
        if f:
            lines.append(f"| {key} | {f[0]:,.0f} | {f[1]:.0%} |")
    if "copysink_writers" in res and "raw_copy_parallel" in res:
        lines += ["", f"Several writers: one worker with [postgres] writers = N (each writer its "
                  f"own connection and a share of the {PARTITIONS} partitions) beside the raw "
                  "COPY ceiling with as many psql connections at once:", "",
                  "| writers | copysink rows/s | x 1 writer | peak RSS MB "
                  "| raw COPY rows/s | x 1 connection |", "|---:|---:|---:|---:|---:|---:|"]
        w1 = res["copysink_writers"][0]["rows_per_s"]
        r1 = res["raw_copy_parallel"][0]["rows_per_s"]
        for w, r in zip(res["copysink_writers"], res["raw_copy_parallel"]):
            lines.append(f"| {w['writers']} | {w['rows_per_s']:,.0f} | {w['rows_per_s'] / w1:.2f} "
                         f"| {w['peak_rss_kb'] / 1024:.0f} | {r['rows_per_s']:,.0f} "
                         f"| {r['rows_per_s'] / r1:.2f} |")
    mb = res["max_bytes"] / 1048576
    rss = default_peak_rss_mb(res)
    if res.get("toast"):
        lines += ["", f"TOAST check: raw COPY of {res['toast_entries']:,} rows with the value longer by 0, "
                  "60 or 120 words, into a table with PostgreSQL's default threshold (2,032 "
                  "bytes) and with `toast_tuple_target = 8160` (copysink migrate's tables), "
                  "best of 2:", "",
                  "| extra words | bytes per row | default rows/s | default TOAST MB "
                  "| toast_tuple_target rows/s | its TOAST MB | ratio |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["toast"]:
            d, t = r["default"], r["toast_tuple_target"]
            lines.append(f"| {r['extra_words']} | {t['row_bytes']:,.0f} | {d['rows_per_s']:,.0f} "
                         f"| {d['toast_bytes'] / 1048576:.0f} | {t['rows_per_s']:,.0f} "
                         f"| {t['toast_bytes'] / 1048576:.0f} "
                         f"| {t['rows_per_s'] / d['rows_per_s']:.2f} |")
    lines += ["", f"Peak RSS of the worker at the default settings: {rss:.1f} MB (target "
              f"3 x max_bytes + 32 MB = {3 * mb + 32:.0f} MB)", "",
              f"Batch size sweep (max_bytes = {SWEEP_MAX_BYTES // 1048576} MB, so that max_rows "
              "bounds every batch; the consumer's queue at its default size):", "",
              "| max_rows | rows/s | peak RSS MB |", "|---:|---:|---:|"]
    lines += [f"| {b['max_rows']} | {b['rows_per_s']:,.0f} | {b['peak_rss_kb'] / 1024:.1f} |"
              for b in res["batch_sizes"]]
    if "latency" in res:
        l = res["latency"]
        rounds = l.get("rounds", [l])
        lines += ["", f"Latency at {l['rate']:,.0f} entries/s (half of copysink's new-keys rate, "
                  "the default settings), produced from C (bench/rate_producer.c): "
                  f"p50 {l['p50_ms']:.0f} ms, p99 {l['p99_ms']:.0f} ms over {l['samples']} entries "
                  f"(target p99 <= linger_ms + 100 = {res['linger_ms'] + 100} ms), the best of "
                  f"{len(rounds)} rounds (the median round's p99: "
                  f"{sorted(r['p99_ms'] for r in rounds)[len(rounds) // 2]:.0f} ms); every round:", "",
                  "| round | p50 ms | p99 ms | entries |", "|---:|---:|---:|---:|"]
        lines += [f"| {i} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['samples']} |"
                  for i, r in enumerate(rounds, 1)]
    if "latency_linger" in res:
        l = res["latency_linger"]
        lines += ["", f"The same with write_when_idle = off: p50 {l['p50_ms']:.0f} ms, "
                  f"p99 {l['p99_ms']:.0f} ms over {l['samples']} entries"]
    lat_batches = [(name, batch_stats(out, log_name)) for name, log_name in
                   (("defaults (the best round)", res.get("latency", {}).get("log", "latency.log")),
                    ("write_when_idle = off", "latency_linger.log"))]
    if any(b for _, b in lat_batches):
        lines += ["", "The latency runs' transactions (from the worker's log):", "",
                  "| run | batches | rows p50 | rows max | ms p50 | ms p99 | ms max |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {b['n']} | {b['rows_p50']} | {b['rows_max']} | {b['ms_p50']} "
                  f"| {b['ms_p99']} | {b['ms_max']} |" for name, b in lat_batches if b]
    lines += ["", "## Targets", "", "| target | measured | required | met |", "|---|---:|---:|---|"]
    for name, got, need, fmt in targets(res):
        lines.append(f"| {name} | {fmt.format(got)} | {fmt.format(need)} | "
                     f"{'yes' if got >= need else miss(got, need, fmt)} |")
    lines += ["", f"{res['entries']} entries, {res['copy_bytes_per_row']:.0f} bytes of binary COPY "
              f"and {res['msgpack_bytes_per_row']:.0f} bytes of msgpack per row, embedding column "
              f"{res['embedding_type']}; PostgreSQL {res['postgres']}; {res['copysink_version']}; "
              f"{res['machine']['cpus']} CPUs; {res['date']}."]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    dat = os.path.join(out, "batch_size.dat")
    with open(dat, "w") as f:
        for b in res["batch_sizes"]:
            f.write(f"{b['max_rows']} {b['rows_per_s']:.0f}\n")
    gp = (f"set terminal png noenhanced size 800,500; "
          f"set output '{os.path.join(out, 'batch_size.png')}';"
          "set title 'copysink rows/s against batch size (max_rows)'; set xlabel 'max_rows';"
          "set ylabel 'rows/s'; set logscale x; set grid; set yrange [0:]; set key bottom right;"
          f"plot '{dat}' using 1:2 with linespoints lw 2 title 'copysink end to end', "
          f"{res['raw_copy']['rows_per_s']:.0f} with lines dt 2 title 'raw COPY ceiling', "
          f"{res['merge_new']['rows_per_s']:.0f} with lines dt 3 title 'merge ceiling, new keys'")
    try:
        subprocess.run(["gnuplot", "-e", gp], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"no plot: {e}")


if __name__ == "__main__":
    main()
