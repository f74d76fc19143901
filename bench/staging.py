"""[postgres] staging = session against staging = transaction, paired (bench.py --staging-rounds).

Both modes get the same rows (the benchmark's topics), the same connection (the conninfo of the
run, one writer) and the same starting state for each run; the rounds are fixed beforehand and
each round runs both modes back to back, in alternating order (session first in odd rounds,
transaction first in even ones), so that a machine getting busier or quieter during the round
weighs on both. The figures are medians over the rounds: rows/s of each mode, the per-round
ratio transaction / session, and the writer's milliseconds per batch (from the worker's log).

Cases: new keys (every batch takes the direct COPY: transaction mode creates no staging table);
all keys existing with every value changed (every batch merges: one staging table created and
dropped per batch); the same in batches of 1,000 rows (ten times the batches, so the per-batch
cost weighs more). Each run also counts the catalog rows the worker inserted and deleted
(pg_stat_sys_tables of pg_class, pg_attribute, pg_type and pg_depend, read once the worker's
backend has exited and flushed its statistics), per batch. A last measurement, outside the
worker: the transaction copysink's transaction mode adds (CREATE TEMP TABLE ... ON COMMIT DROP
of the same staging table, then COMMIT) against an empty one, timed over many transactions.
"""
import json
import os
import statistics
import time

CATALOGS = ("pg_class", "pg_attribute", "pg_type", "pg_depend")
CASES = (
    ("new", "new", 10000, "new keys (direct COPY)"),
    ("update", "upd", 10000, "all keys existing, update (merge through staging)"),
    ("update_small", "upd", 1000, "the same, max_rows = 1000"),
)
MODES = ("session", "transaction")
STAGE_SQL = ("CREATE TEMP TABLE bench_xstage_0 WITH (toast_tuple_target = 8160) ON COMMIT DROP "
             "AS SELECT namespace, key, value, embedding, metadata, tags, "
             "0::integer AS copysink_partition, 0::bigint AS copysink_offset, "
             "0::smallint AS copysink_op, false AS copysink_collapsed FROM memory_entries "
             "WITH NO DATA")


def catalog_counts(conn):
    """{catalog: (tuples inserted, deleted, dead now, autovacuums)} from the statistics."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT relname, n_tup_ins, n_tup_del, n_dead_tup, autovacuum_count "
                    "FROM pg_stat_sys_tables WHERE schemaname = 'pg_catalog' AND relname = "
                    "ANY(%s)", (list(CATALOGS),))
        return {r[0]: r[1:] for r in cur.fetchall()}


def catalog_sizes(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relname = ANY(%s) "
                    "AND relnamespace = 'pg_catalog'::regnamespace", (list(CATALOGS),))
        return dict(cur.fetchall())


def wait_backends_gone(conn, timeout=30):
    """Wait until no other client backend is connected to the database: the worker's have
    exited, and with them flushed their statistics."""
    deadline = time.time() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
            if cur.fetchone()[0] == 0:
                return
            if time.time() > deadline:
                raise RuntimeError("the worker's backends did not exit")
            time.sleep(0.05)


def batches(out, log_name):
    """(batches committed, summed ms of their transactions) from a worker's log."""
    n = ms = 0
    with open(os.path.join(out, log_name)) as f:
        for line in f:
            if 'msg="batch committed"' in line:
                fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                n += 1
                ms += int(fields["ms"])
    return n, ms


def fill_table(conn, copy_new, cols):
    """memory_entries as the new-keys run leaves it (the same rows), by one binary COPY."""
    import io
    with conn.cursor() as cur:
        cur.execute("TRUNCATE memory_entries")
        cur.copy_expert(f"COPY memory_entries ({', '.join(cols)}) FROM STDIN (FORMAT binary)",
                        io.BytesIO(copy_new))
        cur.execute("CHECKPOINT")


def one_run(h, args, conn, topic, max_rows, mode, log_name, n):
    before = catalog_counts(conn)
    dt, rss = h.run_copysink(args, topic, max_rows, log_name, conn,
                             pg_options=f"staging = {mode}")
    wait_backends_gone(conn)
    after = catalog_counts(conn)
    nb, ms = batches(args.out, log_name)
    ins = sum(after[c][0] - before[c][0] for c in CATALOGS)
    dele = sum(after[c][1] - before[c][1] for c in CATALOGS)
    return {"seconds": dt, "rows_per_s": n / dt, "peak_rss_kb": rss, "batches": nb,
            "writer_ms": ms, "ms_per_batch": ms / nb if nb else None,
            "catalog_inserted": ins, "catalog_deleted": dele,
            "catalog_inserted_by": {c: after[c][0] - before[c][0] for c in CATALOGS},
            "log": log_name}


def ddl_cost(conninfo, transactions, blocks):
    """Milliseconds per transaction of one that creates the staging table ON COMMIT DROP and
    commits, and of one that only runs SELECT 1, in alternating blocks on a connection of its
    own (closed at the end, which flushes its statistics)."""
    import psycopg2
    times = {"create": [], "empty": []}
    conn = psycopg2.connect(conninfo)
    try:
        with conn.cursor() as cur:
            for b in range(blocks):
                for kind in (("create", "empty") if b % 2 == 0 else ("empty", "create")):
                    t0 = time.perf_counter()
                    for _ in range(transactions):
                        cur.execute(STAGE_SQL if kind == "create" else "SELECT 1")
                        conn.commit()
                    times[kind].append((time.perf_counter() - t0) * 1000 / transactions)
    finally:
        conn.close()
    return times


def compare(h, args, conn, t_new, t_upd, copy_new, n):
    """The paired comparison; writes OUT/staging.json and OUT/staging.md."""
    res = {"entries": n, "rounds": args.staging_rounds, "cases": {}, "postgres": None}
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        res["postgres"] = cur.fetchone()[0]
    sizes_before = catalog_sizes(conn)
    counts_before = catalog_counts(conn)
    topics = {"new": t_new, "upd": t_upd}
    for name, topic_key, max_rows, _ in CASES:
        res["cases"][name] = {"max_rows": max_rows, "rounds": []}
    for rnd in range(1, args.staging_rounds + 1):
        order = MODES if rnd % 2 == 1 else tuple(reversed(MODES))
        for name, topic_key, max_rows, label in CASES:
            pair = {}
            for mode in order:
                h.log(f"staging round {rnd}: {label}, staging = {mode}")
                if topic_key == "new":
                    h.empty_table(conn)
                else:
                    fill_table(conn, copy_new, h.COLS)
                pair[mode] = one_run(h, args, conn, topics[topic_key], max_rows, mode,
                                     f"staging_{name}_{mode}_{rnd}.log", n)
            pair["first"] = order[0]
            res["cases"][name]["rounds"].append(pair)
    counts_after = catalog_counts(conn)
    res["catalogs"] = {c: {"size_before": sizes_before[c], "size_after": None,
                           "dead_after": counts_after[c][2],
                           "autovacuums": counts_after[c][3] - counts_before[c][3]}
                       for c in CATALOGS}
    for c, size in catalog_sizes(conn).items():
        res["catalogs"][c]["size_after"] = size
    h.log("staging: a transaction creating the staging table ON COMMIT DROP against an empty one")
    tx, blocks = 400, 5
    before = catalog_counts(conn)
    times = ddl_cost(args.pg, tx, blocks)
    wait_backends_gone(conn)
    after = catalog_counts(conn)
    created = tx * blocks
    res["ddl"] = {"transactions_per_block": tx, "blocks": blocks,
                  "create_ms": times["create"], "empty_ms": times["empty"],
                  "catalog_inserted_per_create": {
                      c: (after[c][0] - before[c][0]) / created for c in CATALOGS}}
    summarize(res)
    with open(os.path.join(args.out, "staging.json"), "w") as f:
        json.dump(res, f, indent=2)
    text = report(res)
    print(text)
    with open(os.path.join(args.out, "staging.md"), "w") as f:
        f.write(text)
    return res


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(res):
    for name, case in res["cases"].items():
        rounds = case["rounds"]
        s = {}
        for mode in MODES:
            s[mode] = {k: med([r[mode][k] for r in rounds])
                       for k in ("rows_per_s", "ms_per_batch", "batches", "catalog_inserted",
                                 "catalog_deleted")}
        s["ratio"] = med([r["transaction"]["rows_per_s"] / r["session"]["rows_per_s"]
                          for r in rounds])
        s["ms_per_batch_diff"] = med([r["transaction"]["ms_per_batch"] -
                                      r["session"]["ms_per_batch"] for r in rounds])
        s["catalog_rows_per_batch"] = med([r["transaction"]["catalog_inserted"] /
                                           r["transaction"]["batches"] for r in rounds])
        case["median"] = s
    d = res["ddl"]
    d["create_ms_median"] = med(d["create_ms"])
    d["empty_ms_median"] = med(d["empty_ms"])
    d["added_ms"] = d["create_ms_median"] - d["empty_ms_median"]


def report(res):
    k = res["rounds"]
    lines = [f"# staging = session against staging = transaction ({res['entries']:,} entries, "
             f"{k} paired rounds, medians)", "",
             "| case | session rows/s | transaction rows/s | transaction / session "
             "| batches | ms per batch, session | ms per batch, transaction | difference "
             "| catalog rows inserted per run, session / transaction "
             "| per batch, transaction |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _, max_rows, label in CASES:
        m = res["cases"][name]["median"]
        lines.append(
            f"| {label} | {m['session']['rows_per_s']:,.0f} | "
            f"{m['transaction']['rows_per_s']:,.0f} | {m['ratio']:.3f} | "
            f"{m['transaction']['batches']:.0f} | {m['session']['ms_per_batch']:.1f} | "
            f"{m['transaction']['ms_per_batch']:.1f} | {m['ms_per_batch_diff']:+.1f} | "
            f"{m['session']['catalog_inserted']:.0f} / {m['transaction']['catalog_inserted']:.0f}"
            f" | {m['catalog_rows_per_batch']:.1f} |")
    lines += ["", "ms per batch: the worker's own figure (the batches' transactions, from its log); "
              "difference: the median of the rounds' differences. Catalog rows: inserted into "
              "pg_class, pg_attribute, pg_type and pg_depend during the run (session: the "
              "staging tables of each connection, created once; transaction: one set per "
              "batch that merges), all deleted again.", "",
              "Every round (rows/s; the mode run first in the round is marked *):", "",
              "| case | round | session | transaction | ratio |", "|---|---:|---:|---:|---:|"]
    for name, _, _, label in CASES:
        for i, r in enumerate(res["cases"][name]["rounds"], 1):
            s, t = r["session"]["rows_per_s"], r["transaction"]["rows_per_s"]
            star = {m: "*" if r["first"] == m else "" for m in MODES}
            lines.append(f"| {label} | {i} | {s:,.0f}{star['session']} | "
                         f"{t:,.0f}{star['transaction']} | {t / s:.3f} |")
    d = res["ddl"]
    per = d["catalog_inserted_per_create"]
    lines += ["", f"One transaction that creates the staging table (CREATE TEMP TABLE ... ON "
              f"COMMIT DROP, the same columns and storage parameter as copysink's) and commits: "
              f"median {d['create_ms_median']:.2f} ms, against {d['empty_ms_median']:.2f} ms for "
              f"an empty one (SELECT 1): {d['added_ms']:.2f} ms added, over {d['blocks']} "
              f"alternating blocks of {d['transactions_per_block']} transactions. Catalog rows "
              "inserted (and deleted again at commit) per created table: " +
              ", ".join(f"{c} {per[c]:.0f}" for c in CATALOGS) + ".", "",
              "The catalogs over the whole comparison (sizes in kB; dead rows now; autovacuum "
              "runs during it):", "",
              "| catalog | size before | size after | dead rows | autovacuums |",
              "|---|---:|---:|---:|---:|"]
    for c, v in res["catalogs"].items():
        lines.append(f"| {c} | {v['size_before'] // 1024:,} | {v['size_after'] // 1024:,} | "
                     f"{v['dead_after']:,} | {v['autovacuums']} |")
    lines += ["", f"PostgreSQL {res['postgres']}; one writer connection, direct to PostgreSQL "
              "(no pooler) in both modes; the machine is shared, so single rounds are noisy: "
              "read the medians and the spread of the rounds together."]
    return "\n".join(lines) + "\n"
