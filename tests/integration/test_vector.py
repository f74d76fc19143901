"""Embeddings in pgvector's vector(dim) columns, or in real[] on a server without pgvector.

`copysink migrate` with [postgres] create_extension = on (the tests migrate as a superuser)
creates the `vector` extension when the server has pgvector and makes the embedding column
vector(dim), real[] otherwise, and the worker writes the matching binary COPY format
(src/schema.c, src/embedding.c). The same tests run against either server:

- migrate makes the embedding columns of the seed's three tables (conf/copysink.ini) 384-wide
  vector columns (or real[]);
- entries loaded through Kafka by a real worker read back bit for bit as the float32 values
  sent, whatever the wire form (a bin of little-endian float32, float64, float32 or integer
  msgpack numbers) and whatever the value (signed zeros, subnormals, the extremes, random bit
  patterns); updates (on_conflict update), skips (on_conflict skip) and deletes (tombstones)
  go through the merge;
- a nearest-neighbour query finds the expected rows: through an HNSW index (vector_l2_ops)
  built on the loaded table and kept up by the worker's later writes, or, without pgvector, by
  exact L2 distance over the real[] values.

COPYSINK_TEST_PGVECTOR=required turns a server without pgvector into a failure (the
compatibility matrix's pgvector servers set it, so a broken extension cannot pass as real[]).
"""
import os
import random
import struct
import subprocess
from contextlib import closing

import msgpack
import psycopg2
import pytest

from conftest import end_offsets, stored_offsets, wait_for, write_config
from entries import DIM, KEYS, assert_table_equals

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = {"memory_entries": "update", "patterns": "update", "trajectories": "skip"}
PARTITIONS = 2
FLOAT4OID = 700


# migrate creates pgvector where the server has it (the default, off, leaves that to a
# superuser: test_embedding_types.py)
CREATE_EXTENSION = ["-o", "postgres.create_extension=on"]


def has_pgvector(conninfo):
    """True when the server has pgvector (as `copysink migrate` with create_extension = on
    decides: the extension is available). Fails the calling test when COPYSINK_TEST_PGVECTOR=required and it has not:
    called in the test's body, so that this is a failure, not a fixture error."""
    wanted = os.environ.get("COPYSINK_TEST_PGVECTOR", "")
    if wanted not in ("", "required"):
        pytest.fail(f"COPYSINK_TEST_PGVECTOR={wanted!r}: only 'required' or unset")
    row = query(conninfo, "SELECT default_version FROM pg_available_extensions "
                          "WHERE name = 'vector'")
    if not row and wanted == "required":
        pytest.fail("COPYSINK_TEST_PGVECTOR=required, but the server has no pgvector "
                    "(no 'vector' in pg_available_extensions)")
    return bool(row)


def query(conninfo, sql, args=()):
    """Run one statement in autocommit; its rows, or [] when it returns none."""
    with closing(psycopg2.connect(conninfo)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description is not None else []


def bits_to_floats(bits):
    return list(struct.unpack(f"<{len(bits)}f", struct.pack(f"<{len(bits)}I", *bits)))


def f32_bits(x):
    """The float32 bits of x, rounded to nearest as a C (float) cast rounds."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def random_bits(rng, n):
    """n random finite float32 bit patterns, every exponent alike (normals, subnormals, zeros)."""
    out = []
    while len(out) < n:
        b = rng.getrandbits(32)
        if (b >> 23) & 0xFF != 0xFF:
            out.append(b)
    return out


EDGES = [0x00000000, 0x80000000,  # +0, -0
         0x00000001, 0x80000001,  # smallest subnormals
         0x007FFFFF, 0x00800000,  # largest subnormal, smallest normal
         0x7F7FFFFF, 0xFF7FFFFF,  # largest finite, both signs
         0x3F800000, 0x3EAAAAAB, 0x3DCCCCCD, 0x40490FDB]  # 1, 1/3, 0.1, pi


def wire_embedding(rng, form):
    """(the embedding as sent, its float32 bits as stored) for one wire form:
    bin (little-endian float32), f64 / f32 (msgpack floats of exact float32 values) or numbers
    (ints and float64 values that the worker rounds to float32 to nearest)."""
    if form == "numbers":
        sent = [0, 1, -2, 16777217, 2**53, -(2**31), 0.1, -1e-46, 3.4028235e38,
                1 / 3, 5e-324, 1.0000000596046448]
        sent += [rng.uniform(-1, 1) for _ in range(DIM - len(sent))]
        return sent, [f32_bits(float(x)) for x in sent]
    bits = EDGES + random_bits(rng, DIM - len(EDGES))
    rng.shuffle(bits)
    if form == "bin":
        return struct.pack(f"<{DIM}I", *bits), bits
    return bits_to_floats(bits), bits


FORMS = ("bin", "f64", "f32", "numbers")


def make_entry(rng, table, i, phase, form):
    """(entry as sent, entry as stored, the embedding's bits or None). Every other float is
    exactly a float32, so that msgpack's float32 form changes nothing but the encoding."""
    sent_emb, bits = wire_embedding(rng, form) if form else (None, None)
    if table == "memory_entries":
        e = {"namespace": "vec", "key": f"m{i}", "value": f"phase {phase} {form}",
             "metadata": {"i": i, "phase": phase}, "tags": [form or "none"]}
    elif table == "patterns":
        e = {"name": f"p{i}", "pattern_type": "vector", "description": f"phase {phase}",
             "confidence": 0.25 * i, "usage_count": i, "success_count": phase,
             "metadata": {"form": form}}
    else:
        e = {"trajectory_id": f"t{i // 2}", "step_number": i % 2,
             "action": f"phase {phase}", "state": {"i": i}, "reward": -1.5 * i,
             "metadata": {"form": form}}
    stored = dict(e, embedding=bits_to_floats(bits) if bits else None)
    if sent_emb is not None:
        e["embedding"] = sent_emb
    return e, stored, bits


def pack(entry, form):
    return msgpack.packb(entry, use_bin_type=True, use_single_float=form == "f32")


def key_of(table, entry):
    return tuple(entry[k] for k in KEYS[table])


class Load:
    """Entries and tombstones in produce order (take() hands them over for producing), and
    what the tables must hold once every one taken so far is applied."""

    def __init__(self, topics):
        self.topics = topics
        self.records = []
        self.rows = {t: {} for t in topics}   # table -> key -> entry as stored
        self.bits = {t: {} for t in topics}   # table -> key -> embedding bits or None

    def put(self, table, sent, stored, bits, form):
        self.records.append((self.topics[table], msgpack.packb(list(key_of(table, sent))),
                             pack(sent, form)))
        k = key_of(table, sent)
        if SEED[table] == "update" or k not in self.rows[table]:
            self.rows[table][k] = stored
            self.bits[table][k] = bits

    def delete(self, table, key):
        self.records.append((self.topics[table], msgpack.packb(list(key)), None))
        self.rows[table].pop(key, None)
        self.bits[table].pop(key, None)

    def take(self):
        records, self.records = self.records, []
        return records


def embedding_bytes(bits, vector):
    """The column's binary send form of an embedding: pgvector's vector_send (int16 dim,
    int16 unused, float4s) or array_send of a float4[]."""
    if vector:
        return struct.pack(f">HH{DIM}I", DIM, 0, *bits)
    return struct.pack(">iiIii", 1, 0, FLOAT4OID, DIM, 1) + b"".join(
        struct.pack(">iI", 4, b) for b in bits)


def assert_bit_exact(conninfo, table, bits, vector):
    send = "vector_send" if vector else "array_send"
    cols = ", ".join(KEYS[table])
    got = {tuple(r[:-1]): (bytes(r[-1]) if r[-1] is not None else None)
           for r in query(conninfo, f"SELECT {cols}, {send}(embedding) FROM {table}")}
    assert set(got) == set(bits), table
    for key, b in bits.items():
        want = embedding_bytes(b, vector) if b is not None else None
        if got[key] != want:
            at = next((i for i in range(min(len(got[key] or b""), len(want or b"")))
                       if got[key][i] != want[i]), None)
            pytest.fail(f"{table} {key}: embedding not stored bit for bit: {send} gives "
                        f"{got[key] and got[key][:8].hex()}... ({got[key] and len(got[key])} "
                        f"bytes), expected {want and want[:8].hex()}... ({want and len(want)} "
                        f"bytes), first difference at byte {at}")


def topics_and_config(tmp_path, kafka, conninfo, tables, name):
    """Topics (and their dead-letter topics) and a worker's config for `tables`; returns
    (topics by table, group, config path)."""
    topics = {t: kafka.topic(t) for t in tables}
    kafka.create_topics({**{t: PARTITIONS for t in topics.values()},
                         **{t + ".dlq": 1 for t in topics.values()}})
    group = "g-" + kafka.prefix
    config = write_config(tmp_path / f"{name}.ini", bootstrap=kafka.bootstrap,
                          conninfo=conninfo, group=group,
                          tables={t: (topics[t], SEED[t]) for t in tables},
                          batch={"max_rows": 50, "linger_ms": 50})
    return topics, group, config


def load(kafka, conninfo, worker, group, topics, records):
    """Produce, then wait until the worker has stored every topic's end offset."""
    kafka.produce(records)
    ends = end_offsets(kafka, *topics.values())
    wait_for(lambda: stored_offsets(conninfo, group) == ends or not worker.alive(), 120,
             f"stored offsets {ends}")
    assert worker.alive(), worker.log_text()[-3000:]


def assert_no_dead_letters(kafka, worker, topics):
    assert "dead-lettered" not in worker.log_text(), worker.log_text()[-3000:]
    for t in topics.values():
        assert sum(kafka.end_offsets(t + ".dlq").values()) == 0, t


def test_migrate_makes_embedding_columns(database, copysink_bin):
    """The shipped configuration (conf/copysink.ini, conninfo from the environment): three
    tables whose embedding is vector(384) with pgvector, real[] without; run twice, the
    second run changes nothing."""
    pgvector = has_pgvector(database)
    env = {**os.environ, "COPYSINK_POSTGRES_CONNINFO": database}
    for _ in range(2):
        subprocess.run([copysink_bin, "migrate", "-c", os.path.join(ROOT, "conf/copysink.ini"),
                        *CREATE_EXTENSION], check=True, env=env, timeout=60)
    got = dict(query(database, """
        SELECT c.relname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE a.attname = 'embedding' AND c.relnamespace = 'public'::regnamespace
          AND c.relkind = 'r' AND NOT a.attisdropped"""))
    want = "vector(384)" if pgvector else "real[]"
    assert got == {t: want for t in SEED}
    ext = query(database, "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    version = query(database, "SELECT version()")[0][0]
    print(f"{version}; vector extension: {ext[0][0] if ext else 'none'}")
    assert bool(ext) == pgvector


def test_embeddings_round_trip_bit_exact(tmp_path, database, kafka, workers, copysink_bin):
    """Every wire form and every kind of finite float32 into the seed's three tables; then
    updates, skipped updates, deletes, deletes followed by the key again, an embedding set
    to NULL and one set from NULL, all through the merge. After each phase every row is
    compared whole, and its embedding byte for byte in the column's binary form."""
    pgvector = has_pgvector(database)
    rng = random.Random(384)
    topics, group, config = topics_and_config(tmp_path, kafka, database, SEED, "seed")
    subprocess.run([copysink_bin, "migrate", "-c", config, *CREATE_EXTENSION], check=True,
                   timeout=60)
    w = workers(config).start()

    state = Load(topics)
    for table in SEED:
        for i in range(12):
            form = FORMS[i % len(FORMS)] if i != 11 else None  # i = 11: no embedding
            state.put(table, *make_entry(rng, table, i, 1, form), form)
    load(kafka, database, w, group, topics, state.take())
    for table in SEED:
        assert_table_equals(database, table, state.rows[table])
        assert_bit_exact(database, table, state.bits[table], pgvector)

    for table in SEED:
        for j, i in enumerate([0, 1, 2, 3, 4, 11]):  # existing keys; 0 loses its embedding
            form = None if i == 0 else FORMS[j % len(FORMS)]
            state.put(table, *make_entry(rng, table, i, 2, form), form)
        for i in (5, 6):
            sent, _, _ = make_entry(rng, table, i, 2, None)
            state.delete(table, key_of(table, sent))
        state.put(table, *make_entry(rng, table, 6, 3, "bin"), "bin")  # back after its delete
        for i in (12, 13):  # new keys
            state.put(table, *make_entry(rng, table, i, 2, FORMS[i % len(FORMS)]),
                      FORMS[i % len(FORMS)])
    # the expectation itself: on_conflict skip keeps phase 1's row, update takes phase 2's
    assert state.rows["trajectories"][("t0", 1)]["action"] == "phase 1"
    assert state.rows["patterns"][("p1",)]["description"] == "phase 2"
    load(kafka, database, w, group, topics, state.take())
    for table in SEED:
        assert_table_equals(database, table, state.rows[table])
        assert_bit_exact(database, table, state.bits[table], pgvector)
    assert_no_dead_letters(kafka, w, topics)
    assert w.stop() == 0, w.log_text()[-3000:]


def nearest(conninfo, probe, pgvector):
    """(key, distance) of the row nearest to `probe` (L2): through the HNSW index with
    pgvector (the plan is checked), by exact distance over real[] without."""
    if pgvector:
        sql = ("SELECT key, embedding <-> %(q)s::vector FROM memory_entries "
               "ORDER BY embedding <-> %(q)s::vector LIMIT 1")
        text = "[" + ",".join(repr(x) for x in probe) + "]"
        with closing(psycopg2.connect(conninfo)) as conn, conn.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
            cur.execute("SET hnsw.ef_search = 100")
            cur.execute("EXPLAIN (FORMAT JSON) " + sql, {"q": text})
            plan = cur.fetchone()[0][0]["Plan"]
            names = []
            stack = [plan]
            while stack:
                node = stack.pop()
                names.append(node.get("Index Name"))
                stack.extend(node.get("Plans", []))
            assert "memory_entries_embedding_hnsw" in names, plan
            cur.execute(sql, {"q": text})
            return cur.fetchone()
    sql = ("SELECT key, sqrt(d) FROM (SELECT key, (SELECT sum((a - b) * (a - b)) "
           "FROM unnest(embedding, %s::real[]) AS u(a, b)) AS d FROM memory_entries) s "
           "WHERE d IS NOT NULL ORDER BY d LIMIT 1")
    return tuple(query(conninfo, sql, (probe,))[0])


def test_nearest_neighbour(tmp_path, database, kafka, workers, copysink_bin):
    """200 entries loaded; with pgvector an HNSW index is built on them; then updates, deletes
    and new keys go through the merge into the indexed table. Each probe (a row's embedding
    moved slightly) finds its row; the old embedding of an updated or deleted row finds
    nothing at its place."""
    pgvector = has_pgvector(database)
    rng = random.Random(16)
    tables = {"memory_entries": "update"}
    topics, group, config = topics_and_config(tmp_path, kafka, database, tables, "nn")
    subprocess.run([copysink_bin, "migrate", "-c", config, *CREATE_EXTENSION], check=True,
                   timeout=60)
    w = workers(config).start()

    def entry(i, phase):
        emb = bits_to_floats([f32_bits(rng.uniform(-1, 1)) for _ in range(DIM)])
        return {"namespace": "nn", "key": f"k{i}", "value": f"phase {phase}",
                "embedding": emb}

    def records(entries, deleted=()):
        out = [(topics["memory_entries"], msgpack.packb(["nn", e["key"]]),
                msgpack.packb({**e, "embedding": struct.pack(f"<{DIM}f", *e["embedding"])},
                              use_bin_type=True)) for e in entries]
        return out + [(topics["memory_entries"], msgpack.packb(["nn", f"k{i}"]), None)
                      for i in deleted]

    rows = {i: entry(i, 1) for i in range(200)}
    load(kafka, database, w, group, topics, records(rows.values()))
    if pgvector:
        query(database, "CREATE INDEX memory_entries_embedding_hnsw ON memory_entries "
                        "USING hnsw (embedding vector_l2_ops)")

    old = {i: rows[i]["embedding"] for i in range(40)}
    updated = {i: entry(i, 2) for i in range(20)} | {i: entry(i, 2) for i in range(200, 230)}
    deleted = list(range(20, 40))
    load(kafka, database, w, group, topics, records(updated.values(), deleted))
    rows.update(updated)
    for i in deleted:
        del rows[i]
    got = {k for (k,) in query(database, "SELECT key FROM memory_entries")}
    assert got == {e["key"] for e in rows.values()}

    for i in [0, 7, 19, 40, 41, 99, 150, 199, 200, 229]:
        probe = [x + rng.uniform(-1e-3, 1e-3) for x in rows[i]["embedding"]]
        key, distance = nearest(database, probe, pgvector)
        assert (key, distance < 0.1) == (f"k{i}", True), (i, key, distance)
    for i, emb in old.items():  # random vectors are ~16 apart: nothing is left at 0
        key, distance = nearest(database, emb, pgvector)
        assert distance > 1.0, (i, key, distance)
    assert_no_dead_letters(kafka, w, topics)
    assert w.stop() == 0, w.log_text()[-3000:]
