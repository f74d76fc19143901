#!/usr/bin/env python3
"""The SQL of copysink's write and update paths, measured statement by statement against its
variants, without Kafka or the worker: this script plays the writer's transactions itself.

Each batch is the transaction src/writer.c runs on the staging path, statement for statement
(BEGIN; SAVEPOINT copysink_table; binary COPY into the staging table; the merge; RELEASE
SAVEPOINT; the fenced offsets upsert; COMMIT), each side of a comparison on a connection of
its own with its staging table created at connect (staging = session). The rows are the
benchmark's (bench.make_entries, bench.binary_copy) with the staging table's four extra fields;
the merge and offsets statements are copysink's own text, checked against what the server
logged from the worker when bench/results/sql_capture_*.json is there (bench/sql_capture.py).

Each comparison is the current merge against one variant, over a number of rounds fixed by
--rounds before anything runs. Every round starts from the same state: the table TRUNCATEd,
refilled with the same 100,000 rows by one binary COPY, ANALYZEd (statistics target 10),
CHECKPOINT. Most comparisons are interleaved: one run of all the batches, batch i written by
one side and batch i+1 by the other (each side half the rows), the side writing the first
batch alternating between rounds. The machine is shared: separate runs a minute apart differ
by up to 4 x here, while neighbouring batches see the same load. synchronous_commit = off is
the exception (separate runs back to back, the first alternating): interleaved, the next
synchronous COMMIT would flush its WAL for it.
  update:    every value of every row changes: the current merge against the same without
             the source-offset guard, without IS DISTINCT FROM, as MERGE (PostgreSQL 15+),
             with ORDER BY key (writers > 1), the same with work_mem = 64 MB, or the rows
             COPYed in key order and no ORDER BY; with the staging table unlogged (TRUNCATE in
             each batch) or temporary with temp_buffers sized to the batch (2 x max_bytes,
             as temp_buffers_mb = -1 does); with synchronous_commit = off.
  replay:    the same rows again (no value changes): without IS DISTINCT FROM.
  new:       new keys through staging (the table holding the 100,000 others), as when
             direct_copy is off or backing off: MERGE.
  fillfactor: copies of the table at fillfactor 100, 90 and 80, updated in the same runs
             batch by batch (the copy going first rotating), over repeated update rounds
             (every key each round): rows/s per round, HOT updates (pg_stat_user_tables
             .n_tup_hot_upd), table size.
Autovacuum is off on the tables while the script runs (it would fire at random inside a run);
the fillfactor comparison therefore shows what page pruning alone does between rounds. The
comparisons that do not depend on the embedding's type (new, staging, synchronous_commit,
fillfactor) run on the real[] server only unless --all-on-vector.

Also measured: a client round trip (SELECT 1), the time of every statement of the
transaction from the client, and the cost of a direct COPY that fails on an existing key
(the fallback of direct_copy = on) with its ROLLBACK TO SAVEPOINT.

    V=$(scripts/venv.sh); $V/bin/python bench/sql_variants.py --bin BUILD/copysink \
        --pg 'host=127.0.0.1 port=55900 user=postgres dbname=postgres' \
        --pg 'host=127.0.0.1 port=55910 user=postgres dbname=postgres'

Writes bench/results/sql_variants.json and sql_variants.md.
"""
import argparse
import glob
import io
import json
import os
import statistics
import struct
import subprocess
import sys
import time

import psycopg2

import bench
from staging import wait_backends_gone

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
TARGET = '"public"."memory_entries"'
STAGE = "pg_temp.copysink_stage_0"
KEYS = ("namespace", "key")
UPD = ("value", "embedding", "metadata", "tags")
GROUP = "sqlvariants"
TOPIC = "memory_entries"
CHUNK = 256 * 1024  # copysink's COPY_CHUNK
FRESH = 100  # Data versions from here on have new keys


def q(name):
    return f'"{name}"'


def cols(prefix=""):
    return ", ".join(prefix + q(c) for c in bench.COLS)


# ---------------------------------------------------------------- the statements

GUARD = ("NOT COALESCE({r}.copysink_partition = {e}.copysink_partition AND "
         "{r}.copysink_offset > {e}.copysink_offset, false)")
FILTER = "copysink_op < 2 AND NOT copysink_collapsed"


def idf(e):
    return "(" + " OR ".join(f"t.{q(c)} IS DISTINCT FROM {e}.{q(c)}" for c in UPD) + ")"


def merge_sql(stage=STAGE, target=TARGET, guard=True, distinct=True, key_order=False):
    """writer.c's build_merge + add_conflict for memory_entries (has_source, updated_at,
    on_conflict = update, the rows not collapsed), with parts left out on request."""
    sql = (f"INSERT INTO {target} AS t ({cols()}, copysink_partition, copysink_offset) "
           f"SELECT {cols()}, copysink_partition, copysink_offset FROM {stage} WHERE {FILTER}")
    if key_order:
        sql += " ORDER BY " + ", ".join(q(k) for k in KEYS)
    sql += (" ON CONFLICT (" + ", ".join(q(k) for k in KEYS) + ") DO UPDATE SET " +
            ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in UPD) +
            ", copysink_partition = EXCLUDED.copysink_partition, "
            "copysink_offset = EXCLUDED.copysink_offset, updated_at = now()")
    where = ([idf("EXCLUDED")] if distinct else []) + \
        ([GUARD.format(r="t", e="EXCLUDED")] if guard else [])
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql


def merge_command(stage=STAGE, target=TARGET):
    """The same merge as MERGE (PostgreSQL 15+): the same filter, condition and columns."""
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in KEYS)
    allc = list(bench.COLS) + ["copysink_partition", "copysink_offset"]
    return (f"MERGE INTO {target} AS t USING (SELECT {cols()}, copysink_partition, "
            f"copysink_offset FROM {stage} WHERE {FILTER}) AS s ON {on} "
            f"WHEN MATCHED AND {idf('s')} AND {GUARD.format(r='t', e='s')} THEN UPDATE SET " +
            ", ".join(f"{q(c)} = s.{q(c)}" for c in UPD) +
            ", copysink_partition = s.copysink_partition, copysink_offset = s.copysink_offset, "
            "updated_at = now() WHEN NOT MATCHED THEN INSERT (" +
            ", ".join(q(c) if c in bench.COLS else c for c in allc) + ") VALUES (" +
            ", ".join("s." + (q(c) if c in bench.COLS else c) for c in allc) + ")")


# writer.c's offsets_sql, with psycopg2's placeholders
OFFSETS_SQL = (
    "WITH v AS (SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[], "
    "%s::bigint[]) AS v(topic, partition, next_offset, expected, start_offset)) "
    "INSERT INTO copysink_offsets AS o (group_id, topic, partition, next_offset) "
    "SELECT %s, topic, partition, next_offset FROM v "
    "ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
    "next_offset = EXCLUDED.next_offset, updated_at = now() "
    "WHERE o.next_offset = (SELECT v.expected FROM v WHERE v.topic = EXCLUDED.topic "
    "AND v.partition = EXCLUDED.partition AND v.start_offset = v.expected) RETURNING 1")

CREATE_TEMP = (f"CREATE TEMP TABLE IF NOT EXISTS copysink_stage_0 WITH (toast_tuple_target = "
               f"8160) ON COMMIT DELETE ROWS AS SELECT {cols()}, 0::integer AS "
               "copysink_partition, 0::bigint AS copysink_offset, 0::smallint AS copysink_op, "
               "false AS copysink_collapsed FROM " + TARGET + " WITH NO DATA")
CREATE_UNLOGGED = CREATE_TEMP.replace(
    "TEMP TABLE IF NOT EXISTS copysink_stage_0", "UNLOGGED TABLE IF NOT EXISTS {stage}"
).replace(" ON COMMIT DELETE ROWS", "")


def check_against_capture(res):
    """Compare the merge and offsets text with what the worker sent (sql_capture_*.json)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(RESULTS, "sql_capture_*.json"))):
        with open(path) as f:
            cap = json.load(f)
        texts = cap["cases"]["update"]["texts"]
        offsets = OFFSETS_SQL
        for i in range(1, 7):
            offsets = offsets.replace("%s", f"${(i % 6) + 1}", 1)
        out[os.path.basename(path)] = {
            "merge_equal": texts.get("merge") == merge_sql(),
            "offsets_equal": texts.get("offsets") == offsets,
        }
    res["statements_match_capture"] = out
    return out


# ---------------------------------------------------------------- rows


def split_rows(copy_bytes):
    """The rows of a 6-column binary COPY, each without its field count."""
    rows, pos, end = [], 19, len(copy_bytes) - 2
    while pos < end:
        start = pos + 2
        pos = start
        for _ in range(6):
            (n,) = struct.unpack_from("!i", copy_bytes, pos)
            pos += 4 + max(n, 0)
        rows.append(copy_bytes[start:pos])
    return rows


def source(version, i, per_part):
    """Partition and offset of entry i of version `version`: later versions, later offsets."""
    return i % 3, (version - 1) * per_part + i // 3


class Data:
    """The binary COPY of each version of the rows: the refill (target's columns + source) and
    the staging batches (+ source, op, collapsed), and the offsets of every batch."""

    def __init__(self, kind, n, batch, pool):
        self.n, self.batch, self.kind = n, batch, kind
        self.per_part = (n + 2) // 3
        self.rows, self.fills = {}, {}
        self.pool = pool

    def version(self, v):
        """Version v of the rows; from FRESH on, keys the other versions do not have."""
        if v not in self.rows:
            entries = bench.make_entries(self.n, 1, v % FRESH, self.pool)
            if v >= FRESH:
                for e in entries:
                    e["key"] = "fresh" + e["key"][len("entry"):]
            self.rows[v] = split_rows(bench.binary_copy(entries, self.kind))
        return self.rows[v]

    def fill(self, v):
        if v not in self.fills:
            self.fills[v] = self._fill(v)
        return self.fills[v]

    def _fill(self, v):
        out = [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)]
        for i, r in enumerate(self.version(v)):
            p, o = source(v, i, self.per_part)
            out.append(struct.pack("!h", 8) + r + struct.pack("!iiiq", 4, p, 8, o))
        out.append(struct.pack("!h", -1))
        return b"".join(out)

    def batches(self, v, direct=False, key_sorted=False):
        """[(copy bytes, {partition: (start, next)}, rows)] of version v in batches; with
        key_sorted, each batch's rows in key order (namespace bench{i % 8}, key entry_{i})."""
        rows, out = self.version(v), []
        for b0 in range(0, self.n, self.batch):
            parts = [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)]
            offs = {}
            idx = range(b0, min(b0 + self.batch, self.n))
            for i in (sorted(idx, key=lambda i: (i % 8, i)) if key_sorted else idx):
                p, o = source(v, i, self.per_part)
                lo, hi = offs.get(p, (o, o))
                offs[p] = (min(lo, o), max(hi, o + 1))
                if direct:
                    parts.append(struct.pack("!h", 8) + rows[i] + struct.pack("!iiiq", 4, p, 8, o))
                else:
                    parts.append(struct.pack("!h", 10) + rows[i] +
                                 struct.pack("!iiiqihib", 4, p, 8, o, 2, 0, 1, 0))
            parts.append(struct.pack("!h", -1))
            out.append((b"".join(parts), offs, min(self.batch, self.n - b0)))
        return out


# ---------------------------------------------------------------- runs


def control(conninfo):
    return bench.connect(conninfo)


COPY_TARGET = ("COPY {t} (namespace, key, value, embedding, metadata, tags, copysink_partition, "
               "copysink_offset) FROM STDIN (FORMAT binary)")


def refill(ctl, data, v, tables=("memory_entries",)):
    """Each table holding version v of every row (source columns set), analyzed; then one
    CHECKPOINT."""
    with ctl.cursor() as cur:
        for t in tables:
            cur.execute(f"TRUNCATE {t}")
            cur.copy_expert(COPY_TARGET.format(t=t), io.BytesIO(data.fill(v)), size=CHUNK)
            cur.execute(f"ANALYZE {t}")
        cur.execute("CHECKPOINT")


def set_offsets(ctl, batches, group=GROUP):
    """copysink_offsets of `group` where the first batch starts."""
    with ctl.cursor() as cur:
        cur.execute("DELETE FROM copysink_offsets WHERE group_id = %s", (group,))
        for p, (start, _) in sorted(batches[0][1].items()):
            cur.execute("INSERT INTO copysink_offsets (group_id, topic, partition, next_offset) "
                        "VALUES (%s, %s, %s, %s)", (group, TOPIC, p, start))


class Variant:
    """One way to write a batch: the merge statement (a function of the staging table and the
    target), the staging table's kind and the session's settings."""

    def __init__(self, name, label, merge=merge_sql, staging="temp", settings=(),
                 key_sorted=False):
        self.name, self.label = name, label
        self.make, self.staging, self.settings = merge, staging, settings
        self.key_sorted = key_sorted  # the worker would COPY each batch's rows in key order


class Lane:
    """A connection of its own writing batches with one variant into one table, its offsets
    under one group."""

    def __init__(self, conninfo, var, table="memory_entries", group=GROUP):
        self.var, self.table, self.group = var, table, group
        stage = f"public.sqlv_ustage_{table}" if var.staging == "unlogged" else STAGE
        self.stage = stage
        self.merge = var.make(stage, f'"public"."{table}"')
        self.copy = (f"COPY {stage} ({cols()}, copysink_partition, copysink_offset, "
                     "copysink_op, copysink_collapsed) FROM STDIN (FORMAT binary)")
        self.steps = {k: [] for k in ("BEGIN", "SAVEPOINT", "TRUNCATE", "COPY", "merge",
                                      "RELEASE", "offsets", "COMMIT", "transaction")}
        self.merged = self.rows = 0
        self.conn = psycopg2.connect(conninfo)
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            for st in var.settings:
                cur.execute(st)
            if var.staging == "unlogged":
                cur.execute(CREATE_UNLOGGED.format(stage=stage))
                cur.execute(f"TRUNCATE {stage}")
            else:
                cur.execute(CREATE_TEMP)

    def write(self, batch):
        """The writer's transaction for one batch, each statement timed from the client."""
        data, offs, n = batch
        ps, steps = sorted(offs), self.steps
        with self.conn.cursor() as cur:
            t0 = time.perf_counter()
            steps["BEGIN"].append(timed(cur, "BEGIN"))
            steps["SAVEPOINT"].append(timed(cur, "SAVEPOINT copysink_table"))
            if self.var.staging == "unlogged":
                steps["TRUNCATE"].append(timed(cur, f"TRUNCATE {self.stage}"))
            t1 = time.perf_counter()
            cur.copy_expert(self.copy, io.BytesIO(data), size=CHUNK)
            steps["COPY"].append((time.perf_counter() - t1) * 1000)
            steps["merge"].append(timed(cur, self.merge))
            self.merged += cur.rowcount
            steps["RELEASE"].append(timed(cur, "RELEASE SAVEPOINT copysink_table"))
            arr = ([TOPIC] * len(ps), ps, [offs[p][1] for p in ps], [offs[p][0] for p in ps],
                   [offs[p][0] for p in ps], self.group)
            steps["offsets"].append(timed(cur, OFFSETS_SQL, arr))
            if cur.rowcount != len(ps):
                raise RuntimeError("the offsets fence refused a batch (the script's offsets)")
            steps["COMMIT"].append(timed(cur, "COMMIT"))
            steps["transaction"].append((time.perf_counter() - t0) * 1000)
        self.rows += n

    def close(self):
        self.conn.close()
        tx = sum(self.steps["transaction"])
        return {"rows_per_s": self.rows / tx * 1000, "rows": self.rows, "merged": self.merged,
                "batches": len(self.steps["transaction"]),
                "median_ms": {k: statistics.median(v) for k, v in self.steps.items() if v},
                "sum_ms": {k: sum(v) for k, v in self.steps.items() if v}}


def timed(cur, sql, args=None):
    t0 = time.perf_counter()
    cur.execute(sql, args)
    return (time.perf_counter() - t0) * 1000


def run_lanes(lanes, schedule, batch_sets):
    """Write batch_sets[k][i] with lanes[k] for each (i, k) of the schedule, in its order; close
    the lanes; @returns each lane's summary."""
    try:
        for i, k in schedule:
            lanes[k].write(batch_sets[k][i])
    except BaseException:
        for lane in lanes:
            lane.conn.close()
        raise
    return [lane.close() for lane in lanes]


def table_stats(ctl, table):
    with ctl.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT n_tup_upd, n_tup_hot_upd, pg_table_size(relid) "
                    "FROM pg_stat_user_tables WHERE relid = %s::regclass", (table,))
        return cur.fetchone()


def comparison(name, label, base, var, mode, state, version):
    return {"name": name, "label": label, "base": base, "var": var, "mode": mode,
            "state": state, "version": version, "rounds": []}


def run_round(conninfo, ctl, data, comp, rnd):
    """One round of a comparison. interleaved: one run from the refilled table, the batches
    alternating between the two variants (each on its own connection), the variant writing
    the first batch alternating between rounds. separate: a run of each, from the refilled
    table each time, the one run first alternating between rounds."""
    base, var = comp["base"], comp["var"]
    batches = data.batches(comp["version"])
    sets = [batches, data.batches(comp["version"], key_sorted=True) if var.key_sorted else batches]
    first = 0 if rnd % 2 == 1 else 1
    r = {"first": (base, var)[first].name}
    if comp["mode"] == "interleaved":
        refill(ctl, data, comp["state"])
        set_offsets(ctl, batches)
        bench.log(f"  {comp['name']} round {rnd}: interleaved, {r['first']} first")
        lanes = [Lane(conninfo, base), Lane(conninfo, var)]
        out = run_lanes(lanes, [(i, (i + first) % 2) for i in range(len(batches))], sets)
        r["base"], r["var"] = out
    else:
        for k in ((0, 1) if first == 0 else (1, 0)):
            refill(ctl, data, comp["state"])
            set_offsets(ctl, batches)
            bench.log(f"  {comp['name']} round {rnd}: {(base, var)[k].name}")
            (out,) = run_lanes([Lane(conninfo, (base, var)[k])],
                               [(i, 0) for i in range(len(batches))], [sets[k]])
            r["base" if k == 0 else "var"] = out
    comp["rounds"].append(r)


FF_TABLE = "sqlv_ff{}"


def fillfactor_rounds(conninfo, ctl, data, ffs, reps, updates):
    """A copy of memory_entries for each fill factor; per repetition: every copy refilled, then
    `updates` rounds each updating every key (versions 2, 3, ...) in all copies, batch by
    batch (batch i into each copy in turn, the copy going first rotating with i). Per copy and
    round: rows/s, updates, HOT updates, table size."""
    tables = [FF_TABLE.format(ff) for ff in ffs]
    with ctl.cursor() as cur:
        cur.execute("SELECT array_to_string(reloptions, ', ') FROM pg_class "
                    "WHERE oid = 'memory_entries'::regclass")
        opts = cur.fetchone()[0]
        for ff, t in zip(ffs, tables):
            cur.execute(f"DROP TABLE IF EXISTS {t}")
            cur.execute(f"CREATE TABLE {t} (LIKE memory_entries INCLUDING ALL)")
            cur.execute(f"ALTER TABLE {t} SET ({opts}, fillfactor = {ff})")
    base = Variant("current", "current merge")
    out = {"fillfactors": ffs, "updates": updates, "reps": []}
    for rep in range(1, reps + 1):
        refill(ctl, data, 1, tables)
        wait_backends_gone(ctl)
        r = {str(ff): {"size_filled": table_stats(ctl, t)[2], "rounds": []}
             for ff, t in zip(ffs, tables)}
        for u in range(updates):
            batches = data.batches(2 + u)
            before = {t: table_stats(ctl, t) for t in tables}
            for t in tables:
                set_offsets(ctl, batches, GROUP + "_" + t)
            with ctl.cursor() as cur:
                cur.execute("CHECKPOINT")
            bench.log(f"  fillfactor rep {rep}/{reps}, update round {u + 1}")
            lanes = [Lane(conninfo, base, t, GROUP + "_" + t) for t in tables]
            k = len(tables)
            res = run_lanes(lanes, [(i, (i + j) % k) for i in range(len(batches))
                                    for j in range(k)], [batches] * k)
            wait_backends_gone(ctl)
            for ff, t, s in zip(ffs, tables, res):
                upd, hot, size = table_stats(ctl, t)
                r[str(ff)]["rounds"].append({
                    "rows_per_s": s["rows_per_s"], "merge_ms": s["median_ms"]["merge"],
                    "commit_ms": s["median_ms"]["COMMIT"], "updated": upd - before[t][0],
                    "hot": hot - before[t][1], "size": size})
        out["reps"].append(r)
    with ctl.cursor() as cur:
        for t in tables:
            cur.execute(f"DROP TABLE {t}")
            cur.execute("DELETE FROM copysink_offsets WHERE group_id = %s", (GROUP + "_" + t,))
    return out


def round_trip(conninfo, n=2000):
    """Milliseconds of SELECT 1 from the client, n times on one connection."""
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    ts = []
    with conn.cursor() as cur:
        for _ in range(n):
            t0 = time.perf_counter()
            cur.execute("SELECT 1")
            cur.fetchone()
            ts.append((time.perf_counter() - t0) * 1000)
    conn.close()
    ts.sort()
    return {"n": n, "median_ms": ts[n // 2], "p90_ms": ts[int(n * 0.9)]}


def failed_direct(conninfo, ctl, data):
    """The direct COPY of an update batch (its first key exists) failing, then ROLLBACK TO
    SAVEPOINT: the milliseconds of each, per batch, on the filled table."""
    refill(ctl, data, 1)
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    fail, back = [], []
    with conn.cursor() as cur:
        for copy, _, _ in data.batches(2, direct=True):
            cur.execute("BEGIN")
            cur.execute("SAVEPOINT copysink_table")
            t0 = time.perf_counter()
            try:
                cur.copy_expert("COPY memory_entries (namespace, key, value, embedding, "
                                "metadata, tags, copysink_partition, copysink_offset) FROM "
                                "STDIN (FORMAT binary)", io.BytesIO(copy), size=CHUNK)
                raise RuntimeError("the direct COPY of existing keys succeeded")
            except psycopg2.errors.UniqueViolation:
                pass
            fail.append((time.perf_counter() - t0) * 1000)
            back.append(timed(cur, "ROLLBACK TO SAVEPOINT copysink_table"))
            cur.execute("ROLLBACK")
    conn.close()
    return {"failed_copy_ms": statistics.median(fail), "rollback_to_ms": statistics.median(back),
            "batches": len(fail)}


def explain_merge(conninfo, data):
    """The plan of the MERGE and of INSERT ... ON CONFLICT for one batch (no ANALYZE)."""
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    out = {}
    with conn.cursor() as cur:
        cur.execute(CREATE_TEMP)
        cur.execute("BEGIN")
        cur.copy_expert(f"COPY {STAGE} ({cols()}, copysink_partition, copysink_offset, "
                        "copysink_op, copysink_collapsed) FROM STDIN (FORMAT binary)",
                        io.BytesIO(data.batches(2)[0][0]), size=CHUNK)
        for name, sql in (("insert_on_conflict", merge_sql()), ("merge", merge_command())):
            cur.execute("EXPLAIN (COSTS OFF) " + sql)
            out[name] = [r[0] for r in cur.fetchall()]
        cur.execute("ROLLBACK")
    conn.close()
    return out


# ---------------------------------------------------------------- server


def prepare_server(args, conninfo):
    ctl = control(conninfo)
    with ctl.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        if cur.fetchone()[0]:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    subprocess.run([args.bin, "migrate", "-c", "/dev/stdin"], input=(
        f"[postgres]\nconninfo = {conninfo}\n[table memory_entries]\n").encode(), check=True)
    with ctl.cursor() as cur:
        cur.execute("ALTER TABLE memory_entries SET (autovacuum_enabled = false)")
        cur.execute("SET default_statistics_target = 10")  # this session's ANALYZE: quick
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute("SHOW shared_buffers")
        sb = cur.fetchone()[0]
        cur.execute("SHOW temp_buffers")
        tb = cur.fetchone()[0]
        cur.execute("SHOW work_mem")
        wm = cur.fetchone()[0]
    return ctl, {"postgres": version, "embedding_type": bench.embedding_kind(ctl),
                 "shared_buffers": sb, "temp_buffers": tb, "work_mem": wm}


def server_run(args, conninfo, pool):
    t_start = time.time()
    ctl, info = prepare_server(args, conninfo)
    kind = info["embedding_type"]
    bench.log(f"server {info['postgres']}, embedding {kind}")
    data = Data(kind, args.entries, args.batch, pool)
    res = dict(info, entries=args.entries, batch=args.batch, rounds=args.rounds)
    full = kind != "vector" or args.all_on_vector
    res["round_trip"] = round_trip(conninfo)
    res["failed_direct"] = failed_direct(conninfo, ctl, data)
    res["explain"] = explain_merge(conninfo, data)
    cur_ = Variant("current", "current merge")
    tb = f"SET temp_buffers = '{2 * args.max_bytes // 1024}kB'"
    U = "update: every value changed"
    comps = [
        comparison("no_guard", U, cur_, Variant(
            "no_guard", "without the source-offset guard",
            merge=lambda st, t: merge_sql(st, t, guard=False)), "interleaved", 1, 2),
        comparison("no_distinct", U, cur_, Variant(
            "no_distinct", "without IS DISTINCT FROM",
            merge=lambda st, t: merge_sql(st, t, distinct=False)), "interleaved", 1, 2),
        comparison("merge_cmd", U, cur_, Variant(
            "merge_cmd", "MERGE instead of INSERT ... ON CONFLICT", merge=merge_command),
            "interleaved", 1, 2),
        comparison("key_order", U, cur_, Variant(
            "key_order", "ORDER BY key (writers > 1)",
            merge=lambda st, t: merge_sql(st, t, key_order=True)), "interleaved", 1, 2),
        comparison("key_order_work_mem", U, cur_, Variant(
            "key_order_work_mem", "ORDER BY key, work_mem = 64 MB",
            merge=lambda st, t: merge_sql(st, t, key_order=True),
            settings=("SET work_mem = '64MB'",)), "interleaved", 1, 2),
        comparison("key_sorted_copy", U, cur_, Variant(
            "key_sorted_copy", "rows COPYed in key order, no ORDER BY", key_sorted=True),
            "interleaved", 1, 2),
        comparison("replay_no_distinct", "replay: no value changed", cur_, Variant(
            "no_distinct", "without IS DISTINCT FROM",
            merge=lambda st, t: merge_sql(st, t, distinct=False)), "interleaved", 1, 1),
    ]
    if full:
        comps += [
            comparison("new_merge_cmd", "new keys through staging (100,000 other keys in the "
                       "table)", cur_, Variant("merge_cmd", "MERGE", merge=merge_command),
                       "interleaved", 1, FRESH + 1),
            comparison("unlogged", U, cur_, Variant(
                "unlogged", "staging: unlogged table, TRUNCATE in each batch",
                staging="unlogged"), "interleaved", 1, 2),
            comparison("temp_buffers", U, cur_, Variant(
                "temp_buffers", f"staging: temp, temp_buffers = {2 * args.max_bytes >> 20} MB",
                settings=(tb,)), "interleaved", 1, 2),
            comparison("sync_off", U, cur_, Variant(
                "sync_off", "synchronous_commit = off",
                settings=("SET synchronous_commit = off",)), "separate", 1, 2),
        ]
    if args.only:
        comps = [c for c in comps if c["name"] in args.only]
    for rnd in range(1, args.rounds + 1):
        for comp in comps:
            run_round(conninfo, ctl, data, comp, rnd)
    res["comparisons"] = [dict(c, base=[c["base"].name, c["base"].label],
                               var=[c["var"].name, c["var"].label]) for c in comps]
    if full and (not args.only or "fillfactor" in args.only):
        res["fillfactor"] = fillfactor_rounds(conninfo, ctl, data, args.fillfactors,
                                              args.rounds, args.updates)
    with ctl.cursor() as cur:
        cur.execute("ALTER TABLE memory_entries RESET (autovacuum_enabled)")
        cur.execute("SELECT relname FROM pg_class WHERE relname LIKE 'sqlv_ustage_%'")
        for (t,) in cur.fetchall():
            cur.execute(f"DROP TABLE public.{t}")
        cur.execute("DELETE FROM copysink_offsets WHERE group_id = %s", (GROUP,))
        cur.execute("TRUNCATE memory_entries")
    ctl.close()
    res["seconds"] = time.time() - t_start
    return res


# ---------------------------------------------------------------- report


def med(xs):
    return statistics.median(xs)


def compare_stats(comp):
    """Medians of the rows/s of each side, the ratio of the medians, the lowest and highest
    per-round ratio, and the medians of the statements' milliseconds."""
    rs = comp["rounds"]
    b = [r["base"]["rows_per_s"] for r in rs]
    v = [r["var"]["rows_per_s"] for r in rs]
    ratios = [y / x for x, y in zip(b, v)]

    def ms(side, step):
        return med([r[side]["median_ms"][step] for r in rs])

    return {"base": med(b), "var": med(v), "ratio": med(v) / med(b), "min": min(ratios),
            "max": max(ratios), "rows": med([r["var"]["rows"] for r in rs]),
            "merged": (med([r["base"]["merged"] for r in rs]), med([r["var"]["merged"] for r in rs])),
            "ms": {k: (ms("base", k), ms("var", k)) for k in ("merge", "COPY", "COMMIT",
                                                              "transaction")}}


def fmt(x, d=0):
    return f"{x:,.{d}f}"


def report(res):
    s0 = res["servers"][0]
    L = [f"# copysink's write and update SQL against its variants ({s0['entries']:,} rows per "
         f"run, batches of {s0['batch']:,}, {s0['rounds']} paired rounds, medians)",
         "",
         "Written by bench/sql_variants.py (its docstring has the method). rows/s: a side's "
         "rows over the summed client-side time of its batches' transactions (BEGIN to "
         "COMMIT). Ratio: the variant's median rows/s over the baseline's (above 1: the "
         "variant is faster), then the lowest and highest ratio of a single round. "
         "Interleaved: both sides in one run from the same refilled table, batch by batch on "
         "two connections (each side writes half the rows); separate: a run of each from the "
         "same refilled table, back to back. Machine: "
         f"{res['machine']['cpus']} CPUs, shared with other benchmarks; {res['date']}.", ""]
    for s in res["servers"]:
        L += [f"## PostgreSQL {s['postgres']}, embedding {s['embedding_type']} "
              f"(shared_buffers {s['shared_buffers']}, temp_buffers {s['temp_buffers']}, "
              f"work_mem {s['work_mem']})", "",
              "| case | variant against the current merge | how | current rows/s | variant "
              "rows/s | ratio of medians | per-round min–max | merge ms, current / variant "
              "| COMMIT ms, current / variant | rows changed per run, current / variant |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in s["comparisons"]:
            st = compare_stats(c)
            m, cm = st["ms"]["merge"], st["ms"]["COMMIT"]
            L.append(f"| {c['label']} | {c['var'][1]} | {c['mode']} | {fmt(st['base'])} "
                     f"| {fmt(st['var'])} | {st['ratio']:.3f} | {st['min']:.3f}–{st['max']:.3f} "
                     f"| {m[0]:.1f} / {m[1]:.1f} | {cm[0]:.1f} / {cm[1]:.1f} "
                     f"| {fmt(st['merged'][0])} / {fmt(st['merged'][1])} |")
        L.append("")
        upd = [c for c in s["comparisons"] if c["version"] == 2][0]["rounds"]
        small = {k: med([r["base"]["median_ms"][k] for r in upd])
                 for k in ("BEGIN", "SAVEPOINT", "COPY", "merge", "RELEASE", "offsets",
                           "COMMIT", "transaction")}
        rt, fd = s["round_trip"], s["failed_direct"]
        L += ["The current merge's transaction, update case (client side, medians, ms): " +
              ", ".join(f"{k} {v:.3f}" if v < 1 else f"{k} {v:.1f}" for k, v in small.items()) +
              ".", "",
              f"A round trip (SELECT 1, psycopg2, loopback): median {rt['median_ms']:.3f} ms, "
              f"p90 {rt['p90_ms']:.3f} ms over {rt['n']:,}. Pipelining the statements after the "
              f"COPY (merge, RELEASE, offsets, COMMIT: 4 round trips into 1) saves 3 round trips "
              f"= {3 * rt['median_ms']:.3f} ms per batch, "
              f"{3 * rt['median_ms'] / small['transaction'] * 100:.2f} % of the transaction; "
              f"BEGIN + SAVEPOINT + COPY sent as one query string as well (COPY cannot be "
              f"pipelined) saves 2 more: {5 * rt['median_ms']:.3f} ms in all.", "",
              f"A direct COPY of an update batch failing on its first key (direct_copy = on, "
              f"when the backoff does not skip it): {fd['failed_copy_ms']:.1f} ms, then ROLLBACK "
              f"TO SAVEPOINT {fd['rollback_to_ms']:.2f} ms (medians of {fd['batches']} batches).",
              "", "Plans (EXPLAIN, one batch in staging, the table filled and analyzed):", ""]
        for name, plan in s["explain"].items():
            L += [f"{name}:", "", "```"] + plan + ["```", ""]
        if "fillfactor" in s:
            ff = s["fillfactor"]
            b0 = str(ff["fillfactors"][0])
            L += [f"### fillfactor over {ff['updates']} update rounds (every key each round, "
                  f"autovacuum off; {len(ff['reps'])} repetitions, all fill factors batch by "
                  f"batch in the same runs; medians)", "",
                  f"| fillfactor | round | rows/s | ratio to fillfactor {b0} (min–max) | merge ms "
                  "| HOT updates | of updates | table MB after (filled) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for f_ in map(str, ff["fillfactors"]):
                for u in range(ff["updates"]):
                    rows = [rep[f_]["rounds"][u] for rep in ff["reps"]]
                    base = [rep[b0]["rounds"][u] for rep in ff["reps"]]
                    ratios = [a["rows_per_s"] / c["rows_per_s"] for a, c in zip(rows, base)]
                    rps = med([r["rows_per_s"] for r in rows])
                    filled = med([rep[f_]["size_filled"] for rep in ff["reps"]])
                    L.append(f"| {f_} | {u + 1} | {fmt(rps)} "
                             f"| {rps / med([r['rows_per_s'] for r in base]):.3f} "
                             f"({min(ratios):.3f}–{max(ratios):.3f}) "
                             f"| {med([r['merge_ms'] for r in rows]):.1f} "
                             f"| {fmt(med([r['hot'] for r in rows]))} "
                             f"| {fmt(med([r['updated'] for r in rows]))} "
                             f"| {med([r['size'] for r in rows]) / 1048576:.0f} "
                             f"({filled / 1048576:.0f}) |")
            L.append("")
        L += [f"This server's part took {s['seconds']:.0f} s.", ""]
    if res.get("capture"):
        L += ["## What the worker sends per batch (bench/sql_capture.py: the server's log of "
              "copysink run, log_min_duration_statement = 0, 40,000 entries per case)", "",
              "| server | case | batches | statements | round trips | server ms, BEGIN to COMMIT "
              "| rows per batch (worker's median) | sequence |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
        for cap in res["capture"].values():
            for case, c in cap["cases"].items():
                for sh in c["shapes"]:
                    L.append(f"| {cap['postgres']} {cap['embedding_type']} | {case} "
                             f"| {sh['batches']} | {sh['statements']} | {sh['round_trips']} "
                             f"| {sh['span_ms_median']:.1f} | {fmt(c['batch_rows_median'])} "
                             f"| {' / '.join(sh['sequence'])} |")
        L += ["", "Round trips: one per statement, two per COPY (the command until the "
              "server's CopyInResponse, the data until its CommandComplete), a failed one "
              "included. The merge and offsets statements this script runs equal the worker's "
              "(text compared): " + json.dumps(res.get("statements_match_capture")), ""]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="copysink, for migrate")
    ap.add_argument("--pg", action="append", required=True, help="conninfo (repeatable)")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=6_500,
                    help="rows per batch (copysink's at max_bytes = 32 MiB for real[] rows)")
    ap.add_argument("--max-bytes", type=int, default=33554432)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--updates", type=int, default=3, help="update rounds per fillfactor")
    ap.add_argument("--fillfactors", type=int, nargs="+", default=[100, 90, 80])
    ap.add_argument("--all-on-vector", action="store_true",
                    help="also the comparisons that do not depend on the embedding's type on "
                         "pgvector's server (by default only those that do run there)")
    ap.add_argument("--only", type=lambda x: x.split(","), default=None,
                    help="comma-separated comparison names (and/or fillfactor) to run")
    ap.add_argument("--tag", default="", help="write sql_variants_TAG.json and .md")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()

    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "servers": [],
           "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}}
    check_against_capture(res)
    res["capture"] = {}
    for path in sorted(glob.glob(os.path.join(RESULTS, "sql_capture_*.json"))):
        with open(path) as f:
            res["capture"][os.path.basename(path)] = json.load(f)
    pool = bench.embedding_pool(1)
    for conninfo in args.pg:
        res["servers"].append(server_run(args, conninfo, pool))
    res["only"] = args.only
    name = "sql_variants" + ("_" + args.tag if args.tag else "")
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    text = report(res)
    with open(os.path.join(args.out, name + ".md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
