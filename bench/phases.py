"""The benchmark's phases, each run on one server (a Server: its connection, its table, the
rows in its embedding type, the shared topics). Every measured run starts from the same state:
the table empty (new keys) or holding version 1 of every row (updates, refilled by one binary
COPY, vacuumed), and a CHECKPOINT. Every copysink run here at the defaults writes no setting
but what it needs (csrun.config_text), so it takes the worker's defaults, writers included."""
import importlib
import io
import os
import subprocess
import sys
import struct
import tempfile
import threading
import time
import uuid

import cpu
import csrun
import kafkaside
import pgside
import rounds
from entries import CopyRows, kafka_key, make_entries, to_msgpack

PEER_MISSING = "peer: bench/peer.py missing"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Server:
    """One PostgreSQL server of the run and what its phases share."""

    def __init__(self, name, conninfo, conn, target, kind, res, shared, args):
        self.name, self.conninfo, self.conn, self.t = name, conninfo, conn, target
        self.kind, self.res, self.shared, self.args = kind, res, shared, args
        self.n = len(shared.new)
        log(f"{name}: binary COPY rows of the entries (embedding as {kind})")
        self.rows_new = CopyRows(shared.new, kind)
        self.rows_upd = CopyRows(shared.upd, kind)
        res["copy_bytes_per_row"] = self.rows_new.bytes_per_row()

    def check(self, n, version, what):
        """The run left n rows of the given version in the table (and no other rows)."""
        got, total = pgside.count_version(self.conn, version), pgside.count_rows(self.conn)
        if got != n or total != n:
            raise RuntimeError(f"{self.name}: {what} left {got} rows of version {version} and "
                               f"{total} in all, expected {n}")


# ---------------------------------------------------------------- the two sides


def dead_letters(s, log_name):
    """How many entries the worker's log reports dead-lettered (none in a clean run)."""
    try:
        with open(os.path.join(s.t.out, log_name), errors="replace") as f:
            return sum(1 for line in f if 'msg="entry dead-lettered"' in line)
    except OSError:
        return 0


def copysink_new(s, topic, n, log_name, settings=None):
    """copysink into the empty table (new keys)."""
    pgside.set_empty(s.conn)
    rec = csrun.run(s.t, topic, log_name, settings)
    s.check(n, 1, f"copysink ({log_name}, {dead_letters(s, log_name)} dead-lettered)")
    return rec


def copysink_update(s, topic, n, fill, log_name, settings=None):
    """copysink into the table holding version 1 (every key exists, every value changes)."""
    pgside.set_filled(s.conn, fill)
    rec = csrun.run(s.t, topic, log_name, settings)
    s.check(n, 2, f"copysink ({log_name}, {dead_letters(s, log_name)} dead-lettered)")
    return rec


def baseline_record(n, seconds, cpu_s, **extra):
    rec = {"seconds": seconds, "rows": n, "rows_per_s": n / seconds,
           "cpu_s": {"worker": None, **cpu_s},
           "cpu_per_100k_s": {"worker": None,
                              **{k: cpu.per_100k(v, n) for k, v in cpu_s.items()}}}
    rec.update(extra)
    return rec


def raw_copy(s, rows, k, **extra):
    """The raw ceiling: the rows in k shares (every k-th row), k binary COPYs at once, into the
    empty table."""
    streams = [rows.stream(rows.share(i, k)) for i in range(k)]  # before the clock
    pgside.set_empty(s.conn)
    dt, c = pgside.raw_copy(s.conninfo, streams, s.t.meter())
    del streams
    s.check(rows.n, 1, "the raw COPY")
    return baseline_record(rows.n, dt, c, connections=k, **extra)


def hand_merge(s, rows, fill, k, batch_rows, **extra):
    """The hand-typed merge: k connections at once, each merging its share (every k-th row)
    in transactions of batch_rows rows, into the table holding version 1."""
    batches = []
    for i in range(k):
        share = list(rows.share(i, k))
        batches.append([rows.stream(share[j:j + batch_rows])
                        for j in range(0, len(share), batch_rows)])
    pgside.set_filled(s.conn, fill)
    dt, c = pgside.hand_merge(s.conninfo, batches, s.t.meter())
    nb = sum(len(b) for b in batches)
    del batches
    s.check(rows.n, 2, "the hand merge")
    return baseline_record(rows.n, dt, c, connections=k, batch_rows=batch_rows,
                           transactions=nb, **extra)


def matched(a):
    """What B takes from the A run it is paired with: the connections (the writers the worker
    used) and where that was read."""
    return {"connections_from": f"{a['log']}: writers = {a['writers']} ({a['writers_source']})"}


# ---------------------------------------------------------------- phases


def headline(s):
    """At the defaults: new keys against the raw COPY ceiling over as many connections as the
    worker used writers; every key existing with its value changed against the hand-typed
    merge in batches of the worker's size, as many connections."""
    n = s.n
    topics = s.shared.topics

    def raw_b(rnd, a):
        return raw_copy(s, s.rows_new, csrun.connections(a), **matched(a))

    def merge_b(rnd, a):
        b = a.get("batches", {}).get("rows_p50")
        if not b:
            raise RuntimeError(f"no batch committed in {a['log']}: no batch size to match")
        return hand_merge(s, s.rows_upd, s.rows_new, csrun.connections(a), b,
                          batch_rows_from=f"{a['log']}: the median rows of its "
                                          f"{a['batches']['n']} committed batches",
                          **matched(a))

    res = rounds.paired_set(s.args.rounds, [
        ("headline new keys", lambda rnd: copysink_new(
            s, topics["new"], n, f"headline_new_copysink_{rnd}.log"), raw_b),
        ("headline update", lambda rnd: copysink_update(
            s, topics["upd"], n, s.rows_new, f"headline_upd_copysink_{rnd}.log"), merge_b),
    ], log)
    s.res["headline"] = {
        "new": dict(res["headline new keys"], a_label="copysink end to end, new keys, defaults",
                    b_label="raw binary COPY, as many connections as copysink's writers",
                    target=0.85),
        "update": dict(res["headline update"],
                       a_label="copysink end to end, all keys existing (update), defaults",
                       b_label="binary COPY into a temp table + INSERT ... ON CONFLICT DO "
                               "UPDATE per batch of copysink's size, as many connections",
                       target=0.95)}


def seed(s):
    """copysink at the defaults (new keys, every entry) against the seed's method (psycopg2
    text COPY through StringIO into a temp table, then ON CONFLICT, per 1,000 entries) on the
    first --seed-entries entries; the seed's individual INSERTs once per round beside it."""
    m = min(s.args.seed_entries, s.n)
    entries = s.shared.new[:m]

    def seed_b(rnd, a):
        pgside.set_empty(s.conn)
        dt, c = pgside.seed_copy(s.conninfo, entries, s.kind, meter=s.t.meter())
        s.check(m, 1, "the seed's COPY")
        return baseline_record(m, dt, c, connections=1)

    res = rounds.paired_set(s.args.rounds, [
        ("seed", lambda rnd: copysink_new(s, s.shared.topics["new"], s.n,
                                          f"seed_copysink_{rnd}.log"), seed_b)], log)
    s.res["seed"] = dict(res["seed"], a_label="copysink end to end, new keys, defaults",
                         b_label=f"seed: StringIO text COPY + ON CONFLICT ({m} entries)",
                         target=25.0)
    k = min(s.args.insert_entries, s.n)
    if k > 0:
        def ins(rnd):
            pgside.set_empty(s.conn)
            dt, c = pgside.seed_inserts(s.conninfo, s.shared.new[:k], s.kind, s.t.meter())
            s.check(k, 1, "the seed's INSERTs")
            return baseline_record(k, dt, c, connections=1)
        r = rounds.single(s.args.rounds, ins, log, "seed: individual INSERTs", "rows_per_s")
        r["summary"] = rounds.summary([x["rows_per_s"] for x in r["rounds"]])
        s.res["seed_inserts"] = dict(r, entries=k)


def writers(s):
    """[postgres] writers = N (set explicitly) against N raw binary COPYs at once, each
    loading its share, for every N of --writers-list; new keys."""
    comps = []
    for k in s.args.writers_list:
        comps.append((f"writers {k}",
                      lambda rnd, k=k: copysink_new(s, s.shared.topics["new"], s.n,
                                                    f"writers{k}_copysink_{rnd}.log",
                                                    {"postgres": {"writers": k}}),
                      lambda rnd, a, k=k: raw_copy(s, s.rows_new, k)))
    res = rounds.paired_set(s.args.rounds, comps, log)
    s.res["writers"] = [dict(res[f"writers {k}"], writers=k, target=0.85)
                        for k in s.args.writers_list]


def load_peer():
    """bench/peer.py, or None when the module is absent (an error inside it is raised)."""
    try:
        return importlib.import_module("peer")
    except ModuleNotFoundError as e:
        if e.name == "peer":
            return None
        raise


def peer_call(mod, variant, **kw):
    """The peer's run: new keys until the table holds n_rows rows; the update variant until
    n_rows rows hold version 2 (value_prefix "v2 ", what make_entries writes)."""
    if variant == "update":
        kw["value_prefix"] = "v2 "
    return mod.run(**kw)


def peer(s):
    """copysink at the defaults against the peer (Debezium's JDBC sink, bench/peer.py) on the
    same first --peer-entries entries, into the same table from the same state: new keys into
    the empty table, and every key existing (version 1 refilled) with its value changed."""
    mod = s.shared.peer
    if s.shared.peer_error is not None:
        raise RuntimeError(f"bench/peer.py could not be imported: {s.shared.peer_error!r}")
    if mod is None:
        log(PEER_MISSING)
        s.res["peer"] = {"measured": False, "reason": PEER_MISSING}
        return
    m = s.shared.peer_n
    classpath = s.shared.peer_classpath()
    fill = CopyRows(s.shared.new[:m], s.kind)
    json_topics = s.shared.peer_json_topics(s.kind)
    wdir = os.path.join(s.t.out, "peer")
    os.makedirs(wdir, exist_ok=True)

    def peer_b(variant, version):
        def run(rnd, a):
            if version == 1:
                pgside.set_empty(s.conn)
            else:
                pgside.set_filled(s.conn, fill)
            work = os.path.join(wdir, f"{variant}_{rnd}")
            os.makedirs(work, exist_ok=True)
            meter = s.t.meter().start()
            got = peer_call(mod, variant, classpath=classpath,
                            bootstrap=s.t.kafka, pg_conninfo=s.conninfo,
                            topic=json_topics[variant], table=pgside.TABLE, n_rows=m,
                            workdir=work, kind=s.kind)
            c = meter.stop()
            s.check(m, version, f"the peer ({variant}, round {rnd})")
            rec = dict(got)
            rec.setdefault("rows", m)
            if "rows_per_s" not in rec:
                rec["rows_per_s"] = m / rec["seconds"]
            rec["cpu_s"] = {"worker": rec.get("cpu_s"), **c}  # worker: the peer's JVM
            rec["cpu_per_100k_s"] = {k: cpu.per_100k(v, m) for k, v in rec["cpu_s"].items()}
            rec["workdir"] = work
            return rec
        return run

    res = rounds.paired_set(s.args.rounds, [
        ("peer new keys", lambda rnd: copysink_new(s, s.shared.topics["peer_new"], m,
                                                   f"peer_new_copysink_{rnd}.log"),
         peer_b("new", 1)),
        ("peer update", lambda rnd: copysink_update(s, s.shared.topics["peer_upd"], m, fill,
                                                    f"peer_upd_copysink_{rnd}.log"),
         peer_b("update", 2)),
    ], log)
    out = {"measured": True, "entries": m}
    for key, name in (("new", "peer new keys"), ("update", "peer update")):
        r = res[name]
        r["rss_a"] = rounds.summary([p["a"]["peak_rss_kb"] for p in r["rounds"]], False)
        r["rss_b"] = rounds.summary([p["b"].get("peak_rss_kb") for p in r["rounds"]], False)
        r["rss_ratio_of_medians"] = rounds.ratio(r["rss_b"]["median"], r["rss_a"]["median"])
        out[key] = dict(r, target=15.0, rss_target=10.0)
    s.res["peer"] = out


def latency(s):
    """p50 and p99 from produce to commit at half the headline's new-keys median rate (the
    defaults), --latency-rounds rounds fixed beforehand, each on a topic of its own into the
    empty table. The entries are encoded beforehand and produced by copysink_rate_producer
    (bench/rate_producer.c), which notes when it handed each one to librdkafka; a poller
    reads the stored offsets every 5 ms, and an entry's latency ends at the first reading
    that covers its offset."""
    rate = s.args.latency_rate
    source = "--latency-rate"
    if not rate:
        h = s.res.get("headline", {}).get("new")
        if not h:
            log(f"{s.name}: latency: no headline new-keys rate measured and no --latency-rate: "
                "skipped")
            s.res["latency"] = {"measured": False, "reason": "no rate (headline not run)"}
            return
        rate, source = h["a"]["median"] / 2, "half the headline's copysink new-keys median"
    count = int(rate * s.args.latency_seconds)
    log(f"{s.name}: latency: encoding {count} entries")
    rec_file = tempfile.NamedTemporaryFile("wb", suffix=".rec")
    for first in range(0, count, 50000):  # in chunks: the entries need not all be in memory
        for e in make_entries(min(50000, count - first), 99, 5, s.shared.pool, first=first):
            key, value = kafka_key(e), to_msgpack(e)
            rec_file.write(struct.pack("<II", len(key), len(value)) + key + value)
    rec_file.flush()
    os.sync()  # the file's pages written back before any round, not during one
    producer = rate_producer(s.t.bin)
    # the producer's own start (connection, idempotent producer id, leaders) is not the
    # worker's latency: it delivers a record here before its clock starts
    warm_up = f"{s.shared.run_id}.{s.slug}.lat-warm-up"
    kafkaside.create_topic(s.t.kafka, warm_up, partitions=1)
    try:
        r = rounds.single(s.args.latency_rounds,
                          lambda rnd: latency_round(s, rnd, rate, rec_file.name, producer,
                                                    warm_up),
                          log, f"{s.name}: latency at {rate:,.0f} entries/s", "p99_ms")
    finally:
        rec_file.close()
    s.res["latency"] = dict(r, measured=True, rate=rate, rate_source=source,
                            seconds=s.args.latency_seconds,
                            p50_summary=rounds.summary([x["p50_ms"] for x in r["rounds"]],
                                                       False))


def rate_producer(bin_path):
    path = os.path.join(os.path.dirname(os.path.abspath(bin_path)), "copysink_rate_producer")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: build the target copysink_rate_producer")
    return path


def assigned(path, topic):
    """Partitions of topic the worker's log reports assigned (and where each starts)."""
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if f'partition \\"{topic}\\" [' in line and
                       "assigned" in line and "starting at" in line)
    except OSError:
        return 0


def latency_round(s, rnd, rate, rec_name, producer, warm_up):
    t = s.t
    topic = f"{s.shared.run_id}.{s.slug}.lat{rnd}"
    kafkaside.create_topic(t.kafka, topic)
    group = "bench-lat-" + uuid.uuid4().hex[:8]
    log_name = f"latency_{rnd}.log"
    pgside.set_empty(s.conn)
    commits = []  # (time, {partition: next offset}), the poller's readings
    stop = threading.Event()
    poll_conn = pgside.connect(s.conninfo)
    poll_pid = pgside.one(poll_conn, "SELECT pg_backend_pid()")

    def poll():
        with poll_conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("SELECT partition, next_offset FROM copysink_offsets "
                            "WHERE group_id = %s", (group,))
                commits.append((time.time(), dict(cur.fetchall())))
                time.sleep(0.005)

    meter = cpu.Meter(t.broker_pid, t.postmaster_pid, exclude=(t.own_backend, poll_pid)).start()
    proc, logf, cfg = csrun.start_worker(t, topic, group, None, log_name)
    th = threading.Thread(target=poll)
    try:
        path = os.path.join(t.out, log_name)
        csrun.wait_for(lambda: assigned(path, topic) >= kafkaside.PARTITIONS,
                       time.monotonic() + 60, "the partitions assigned", proc, log_name)
        th.start()
        with tempfile.NamedTemporaryFile("r", suffix=".sent") as sent:
            conf = dict(kafkaside.PRODUCER, **{"bootstrap.servers": t.kafka, "linger.ms": 5,
                                               "warm.up.topic": warm_up})
            r = subprocess.run([producer, topic, f"{rate:.3f}", rec_name, sent.name] +
                               [f"{k}={str(v).lower()}" for k, v in conf.items()],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"latency: the producer failed: {r.stderr.strip()}")
            sends = {}
            for line in sent:
                part, off, at = line.split()
                sends[(int(part), int(off))] = float(at)
        ends = kafkaside.end_offsets(t.kafka, topic)
        want = {p: o for (_, p), o in ends.items()}
        # the poller's own reading must cover the end: the latencies come from its readings
        csrun.wait_for(lambda: commits and all(commits[-1][1].get(p, -1) >= o
                                               for p, o in want.items()),
                       time.monotonic() + 120, "the worker to catch up", proc, log_name)
        rows = sum(ends.values())
        rec = csrun.figures(t, proc, rows, s.args.latency_seconds, meter.stop(), log_name, None)
    finally:
        stop.set()
        if th.is_alive():
            th.join()
        poll_conn.close()
        csrun.stop_worker(proc, logf, cfg)
    del rec["rows_per_s"]  # a fixed rate, not a throughput
    rec.update(csrun.read_log(os.path.join(t.out, log_name)))
    lat = []
    windows = {}  # 250 ms window of send time -> its latencies: where in the round a tail is
    j = 0
    t_first = min(sends.values()) if sends else 0
    for (part, off), at in sorted(sends.items(), key=lambda kv: kv[1]):
        while j < len(commits) and commits[j][0] < at:
            j += 1
        for tm, offs in commits[j:]:
            if offs.get(part, -1) > off:
                lat.append((tm - at) * 1000)
                windows.setdefault(int((at - t_first) * 4), []).append(lat[-1])
                break
    if len(lat) != len(sends):
        raise RuntimeError(f"latency: {len(sends) - len(lat)} entries never seen committed")
    with open(os.path.join(t.out, f"latency_{rnd}_windows.tsv"), "w") as f:
        f.write("sent_from_s\tentries\tp50_ms\tp99_ms\tmax_ms\n")
        for w, ls in sorted(windows.items()):
            ls.sort()
            f.write(f"{w / 4:.2f}\t{len(ls)}\t{ls[len(ls) // 2]:.0f}\t"
                    f"{ls[int(len(ls) * 0.99)]:.0f}\t{ls[-1]:.0f}\n")
    lat.sort()
    rec.update(p50_ms=lat[len(lat) // 2], p99_ms=lat[int(len(lat) * 0.99)], samples=len(lat))
    return rec


# ---------------------------------------------------------------- optional phases


def toast(s):
    """Raw binary COPY of rows whose value is longer by 0, 60 or 120 words into a copy of the
    table with PostgreSQL's default TOAST threshold (B) and with copysink migrate's
    toast_tuple_target (A), paired rounds; rows/s, bytes per row and TOAST size."""
    n = min(s.args.toast_entries, s.n)
    comps = []
    for words in (0, 60, 120):
        rows = CopyRows(make_entries(n, 7, 1, s.shared.pool, extra_words=words), s.kind)

        def one(target, rows=rows, words=words):
            def run(rnd, *_):
                pgside.clone_table(s.conn, "bench_raw", target)
                stream = rows.stream()
                meter = s.t.meter().start()
                t0 = time.perf_counter()
                with s.conn.cursor() as cur:
                    cur.copy_expert(pgside.COPY_SQL.format(t="bench_raw"), io.BytesIO(stream),
                                    size=pgside.CHUNK)
                dt = time.perf_counter() - t0
                c = meter.stop()
                size, toast_bytes = stored_size(s.conn)
                return baseline_record(n, dt, c, row_bytes=size, toast_bytes=toast_bytes,
                                       toast_tuple_target=target)
            return run
        comps.append((f"toast +{words} words", one(8160), one("default")))
    res = rounds.paired_set(s.args.rounds, comps, log)
    with s.conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_raw")
    s.res["toast"] = {"entries": n, "widths": [dict(res[f"toast +{w} words"], extra_words=w)
                                               for w in (0, 60, 120)]}


def stored_size(conn):
    """Average stored row size and the TOAST table's bytes of bench_raw."""
    with conn.cursor() as cur:
        cur.execute("SELECT avg(pg_column_size(t.*)), pg_relation_size((SELECT reltoastrelid "
                    "FROM pg_class WHERE relname = 'bench_raw')) FROM bench_raw t")
        size, toast_bytes = cur.fetchone()
    return float(size), toast_bytes


SWEEP_MAX_BYTES = 268435456  # the batch size sweep: max_rows bounds every batch


def batch(s):
    """copysink with max_rows = each of --batch-sizes and max_bytes out of the way (the
    consumer's queue kept at what the default max_bytes gives), new keys; --rounds rounds,
    the sizes interleaved in each; medians."""
    sizes = [int(x) for x in s.args.batch_sizes.split(",") if x]
    mb = 33554432
    runs = {bs: [] for bs in sizes}
    for rnd in range(1, s.args.rounds + 1):
        for bs in sizes:
            log(f"{s.name}: batch size {bs}, round {rnd}")
            runs[bs].append(copysink_new(
                s, s.shared.topics["new"], s.n, f"batch{bs}_{rnd}.log",
                {"batch": {"max_rows": bs, "max_bytes": SWEEP_MAX_BYTES},
                 "kafka": {"fetch.max.bytes": mb // 8,
                           "queued.max.messages.kbytes": (mb - mb // 8) // 2048}}))
    s.res["batch"] = [{"max_rows": bs, "runs": runs[bs],
                       "rows_per_s": rounds.summary([r["rows_per_s"] for r in runs[bs]]),
                       "peak_rss_kb": rounds.summary([r["peak_rss_kb"] for r in runs[bs]],
                                                     False)} for bs in sizes]


def staging_phase(s):
    """[postgres] staging = session against transaction (bench/staging.py), one writer;
    OUT/logs/<server>/staging.json and staging.md."""
    import argparse
    import staging
    from entries import COLS

    class Harness:  # what staging.compare() calls
        pass

    def run_copysink(args, topic, max_rows, log_name, conn, pg_options=""):
        k, v = (x.strip() for x in pg_options.split("=", 1))
        rec = csrun.run(s.t, topic, log_name, {"postgres": {"writers": 1, k: v},
                                               "batch": {"max_rows": max_rows}})
        return rec["seconds"], rec["peak_rss_kb"]

    h = Harness()
    h.COLS, h.log, h.empty_table, h.run_copysink = COLS, log, pgside.set_empty, run_copysink
    sargs = argparse.Namespace(pg=s.conninfo, out=s.t.out, staging_rounds=s.args.rounds)
    s.res["staging"] = staging.compare(h, sargs, s.conn, s.shared.topics["new"],
                                       s.shared.topics["upd"], s.rows_new.stream(), s.n)


def profile(s):
    """A new-keys run at the defaults under perf record -a (not counted in any figure)."""
    pgside.set_empty(s.conn)
    data = os.path.join(s.t.out, "perf.data")
    csrun.run(s.t, s.shared.topics["new"], "profile_copysink.log", profile=data)
    with open(os.path.join(s.t.out, "profile.txt"), "w") as f:
        for sort, limit in (("comm", 12), ("comm,dso,sym", 40)):
            r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                "--sort", sort, "--percent-limit", "0.7"],
                               capture_output=True, text=True)
            body = [l for l in r.stdout.splitlines() if l and not l.startswith("#")]
            f.write(f"== perf report --sort {sort}\n" + "\n".join(body[:limit]) + "\n\n")
    os.unlink(data)
    s.res["profile"] = {"file": os.path.join(s.t.out, "profile.txt")}


def ab(s):
    """Paired rounds of copysink at the defaults (A) against copysink with --ab-set's settings
    (B), new keys and update on the headline's topics: what one setting changes, throughput
    and peak RSS, the same rows and rounds on both sides."""
    settings = {}
    for item in s.args.ab_set:
        name, sep, value = item.partition("=")
        sec, dot, key = name.partition(".")
        if not sep or not dot or not sec or not key:
            raise RuntimeError(f"--ab-set {item}: expected SECTION.KEY=VALUE")
        settings.setdefault(sec, {})[key] = value
    if not settings:
        raise RuntimeError("the ab phase needs at least one --ab-set SECTION.KEY=VALUE")
    n, topics = s.n, s.shared.topics
    res = rounds.paired_set(s.args.rounds, [
        ("ab new keys",
         lambda rnd: copysink_new(s, topics["new"], n, f"ab_new_a_{rnd}.log"),
         lambda rnd, a: copysink_new(s, topics["new"], n, f"ab_new_b_{rnd}.log", settings)),
        ("ab update",
         lambda rnd: copysink_update(s, topics["upd"], n, s.rows_new, f"ab_upd_a_{rnd}.log"),
         lambda rnd, a: copysink_update(s, topics["upd"], n, s.rows_new, f"ab_upd_b_{rnd}.log",
                                        settings)),
    ], log)
    for r in res.values():
        for side in ("a", "b"):
            r[side + "_peak_rss_kb"] = rounds.summary([p[side]["peak_rss_kb"]
                                                       for p in r["rounds"]], False)
    s.res["ab"] = {"b_settings": settings, "new": res["ab new keys"],
                   "update": res["ab update"]}


PHASES = {"headline": headline, "writers": writers, "seed": seed, "peer": peer,
          "latency": latency, "toast": toast, "batch": batch, "staging": staging_phase,
          "profile": profile, "ab": ab}
DEFAULT_PHASES = ("headline", "writers", "seed", "peer", "latency")
