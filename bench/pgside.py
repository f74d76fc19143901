"""PostgreSQL for the benchmark: the database made ready, the table put in a run's starting
state, and the methods copysink is compared with (the raw binary COPY, the hand-typed merge,
the seed's method), each on as many connections as asked, each connection its own thread and
its own backend, started together once every connection is open."""
import io
import json
import subprocess
import threading
import time

import psycopg2

from entries import COLS, DIM, text_copy_row

TABLE = "memory_entries"
COPY_SQL = f"COPY {{t}} ({', '.join(COLS)}) FROM STDIN (FORMAT binary)"
CHUNK = 1 << 20  # bytes per read of a COPY stream: the client's share of the work stays small
MERGE_SQL = (
    "INSERT INTO {t} AS t (namespace, key, value, embedding, metadata, tags) "
    "SELECT namespace, key, value, embedding, metadata, tags FROM {s} "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, "
    "embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata, tags = EXCLUDED.tags, "
    "updated_at = now() WHERE (t.value, t.embedding, t.metadata, t.tags) IS DISTINCT FROM "
    "(EXCLUDED.value, EXCLUDED.embedding, EXCLUDED.metadata, EXCLUDED.tags)")


def connect(conninfo):
    conn = psycopg2.connect(conninfo)
    conn.autocommit = True
    return conn


def one(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def available_vector(conn):
    """The pgvector version the server could install, or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        row = cur.fetchone()
    return row[0] if row else None


def migrate(bin_path, conninfo):
    """The benchmark's table created afresh by `copysink migrate`: vector(384) where the server
    has pgvector (the extension created first), real[] where it has not."""
    conn = connect(conninfo)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            if available_vector(conn):
                cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        conn.close()
    subprocess.run([bin_path, "migrate", "-c", "/dev/stdin"], check=True, input=(
        f"[postgres]\nconninfo = {conninfo}\n[table {TABLE}]\n").encode())


def embedding_kind(conn):
    t = one(conn, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                  f"WHERE attrelid = '{TABLE}'::regclass AND attname = 'embedding'")
    return "vector" if t.startswith("vector") else "real[]", t


def server_info(conn):
    return {"version": one(conn, "SHOW server_version"),
            "major": int(one(conn, "SHOW server_version_num")) // 10000,
            "vector": one(conn, "SELECT (SELECT extversion FROM pg_extension "
                                "WHERE extname = 'vector')")}


def postmaster_pid(conn):
    """The cluster's postmaster: the parent of this connection's backend (the server is on
    this machine)."""
    with open(f"/proc/{one(conn, 'SELECT pg_backend_pid()')}/stat") as f:
        text = f.read()
    return int(text[text.rindex(")") + 2:].split()[1])


def checkpoint(conn):
    with conn.cursor() as cur:
        cur.execute("CHECKPOINT")


def set_empty(conn):
    """The new-keys start: the table empty, no dirty buffers or pending checkpoint left."""
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {TABLE}")
    checkpoint(conn)


def set_filled(conn, rows):
    """The update start: the table holding version 1 of every row, loaded by one binary COPY
    (the fast path), vacuumed and analyzed (hint bits set, statistics known), checkpointed."""
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {TABLE}")
        cur.copy_expert(COPY_SQL.format(t=TABLE), io.BytesIO(rows.stream()), size=CHUNK)
        cur.execute(f"VACUUM (ANALYZE) {TABLE}")
    checkpoint(conn)


def count_version(conn, version):
    return one(conn, f"SELECT count(*) FROM {TABLE} WHERE value LIKE %s", (f"v{version} %",))


def count_rows(conn):
    return one(conn, f"SELECT count(*) FROM {TABLE}")


def stored(conn, group):
    with conn.cursor() as cur:
        cur.execute("SELECT topic, partition, next_offset FROM copysink_offsets "
                    "WHERE group_id = %s", (group,))
        return {(t, p): o for t, p, o in cur.fetchall()}


def parallel(conninfo, jobs, meter=None, setup=None):
    """Run jobs[i](conn) on connection i, all at once: the connections are opened (and
    setup(conn) run on each) first; the clock and the meter start when every thread is ready
    and stop when the last is done. Returns (seconds, the meter's figures or None)."""
    conns = []
    try:
        for _ in jobs:
            conns.append(psycopg2.connect(conninfo))
            if setup:
                setup(conns[-1])
        ready = threading.Barrier(len(jobs) + 1)
        errors = []

        def body(job, conn):
            ready.wait()
            try:
                job(conn)
            except Exception as e:  # raised again in the main thread
                errors.append(e)

        threads = [threading.Thread(target=body, args=(j, c)) for j, c in zip(jobs, conns)]
        for t in threads:
            t.start()
        if meter:
            meter.start()
        t0 = time.perf_counter()
        ready.wait()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
        cpu = meter.stop() if meter else None
    finally:
        for c in conns:
            c.close()
    if errors:
        raise errors[0]
    return dt, cpu


def raw_copy(conninfo, streams, meter=None):
    """The raw ceiling: one binary COPY per stream into the table, each on its connection, in
    one transaction each. Returns (seconds, cpu)."""
    def job(stream):
        def run(conn):
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.copy_expert(COPY_SQL.format(t=TABLE), io.BytesIO(stream), size=CHUNK)
        return run
    return parallel(conninfo, [job(s) for s in streams], meter)


STAGE = "bench_stage"


def _stage(conn):
    """The hand merge's staging table, once per connection, before the clock starts (what
    copysink's staging = session does at connect)."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE {STAGE} WITH (toast_tuple_target = 8160) "
                    f"ON COMMIT DELETE ROWS AS SELECT {', '.join(COLS)} FROM {TABLE} "
                    "WITH NO DATA")
    conn.commit()


def hand_merge(conninfo, batches, meter=None):
    """The merge typed by hand: per batch one transaction of a binary COPY into the
    connection's staging table and one INSERT ... ON CONFLICT DO UPDATE into the table.
    batches[i] is connection i's list of COPY streams. Returns (seconds, cpu)."""
    def job(streams):
        def run(conn):
            with conn.cursor() as cur:
                for s in streams:
                    cur.copy_expert(COPY_SQL.format(t=STAGE), io.BytesIO(s), size=CHUNK)
                    cur.execute(MERGE_SQL.format(t=TABLE, s=STAGE))
                    conn.commit()
        return run
    return parallel(conninfo, [job(b) for b in batches], meter, setup=_stage)


def seed_copy(conninfo, entries, kind, batch=1000, meter=None):
    """The seed's bulk path (BULK_OPERATIONS.md): per 1,000 entries, the rows written as text
    COPY lines into a StringIO, copy_from into a temporary table created ON COMMIT DROP, then
    INSERT ... ON CONFLICT, one transaction. Returns (seconds, cpu)."""
    def run(conn):
        conn.autocommit = False
        for i in range(0, len(entries), batch):
            with conn.cursor() as cur:
                buf = io.StringIO()
                for e in entries[i:i + batch]:
                    if len(e["embedding"]) != DIM:
                        raise ValueError("embedding dimension")
                    buf.write(text_copy_row(e, kind))
                buf.seek(0)
                cur.execute(f"CREATE TEMP TABLE temp_seed (LIKE {TABLE} INCLUDING DEFAULTS) "
                            "ON COMMIT DROP")
                cur.copy_from(buf, "temp_seed", columns=COLS)
                cur.execute(MERGE_SQL.format(t=TABLE, s="temp_seed"))
            conn.commit()
    return parallel(conninfo, [run], meter)


def seed_inserts(conninfo, entries, kind, meter=None):
    """The seed's individual INSERTs, one statement per entry (autocommit)."""
    def run(conn):
        conn.autocommit = True
        with conn.cursor() as cur:
            for e in entries:
                cur.execute(f"INSERT INTO {TABLE} (namespace, key, value, embedding, metadata, "
                            "tags) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (namespace, key) "
                            "DO UPDATE SET value = EXCLUDED.value",
                            (e["namespace"], e["key"], e["value"],
                             "[" + ",".join(repr(x) for x in e["embedding"]) + "]"
                             if kind == "vector" else list(e["embedding"]),
                             json.dumps(e["metadata"]), e["tags"]))
    return parallel(conninfo, [run], meter)


def clone_table(conn, name, toast_target=None):
    """An empty copy of the table with its storage parameters (LIKE leaves them out);
    toast_target "default" resets toast_tuple_target, a number sets it."""
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING ALL)")
        cur.execute("SELECT array_to_string(reloptions, ', ') FROM pg_class "
                    f"WHERE oid = '{TABLE}'::regclass")
        opts = cur.fetchone()[0]
        if opts:
            cur.execute(f"ALTER TABLE {name} SET ({opts})")
        if toast_target == "default":
            cur.execute(f"ALTER TABLE {name} RESET (toast_tuple_target)")
        elif toast_target is not None:
            cur.execute(f"ALTER TABLE {name} SET (toast_tuple_target = {toast_target})")
        cur.execute("CHECKPOINT")
