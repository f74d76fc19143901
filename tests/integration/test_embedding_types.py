"""Embeddings as users store them: embedding_type, halfvec, sparsevec, real[], and `copysink
migrate` without a superuser.

Each test adapts to the server it runs on and asserts what that server must do:

- pgvector 0.7.0 or later (halfvec and sparsevec exist): halfvec and sparsevec tables are
  migrated, loaded through Kafka by a real worker and read back byte for byte in the types'
  binary forms (halfvec_send, sparsevec_send); the expected halves come from Python's own IEEE
  half conversion (struct 'e') of the float32 the worker rounds to first; a value beyond half's
  range is dead-lettered as out_of_range;
- an older pgvector (0.6.2): the same tables make migrate fail with an error that names the
  pgvector version they need, and nothing is created;
- no pgvector: migrate fails with the error that names CREATE EXTENSION and says the server
  has no pgvector.

`copysink migrate` as the owner of a fresh database who is not a superuser: with
create_extension = off a table that needs pgvector fails with the exact statement a superuser
must run (and creates nothing), `auto` falls back to real[] with a notice; with
create_extension = on the owner is refused (pgvector is not trusted), a superuser creates the
extension and the table, and after that the owner's `auto` tables get vector.

COPYSINK_TEST_PGVECTOR=required turns a server without pgvector into a failure.
"""
import math
import os
import random
import re
import struct
import subprocess
import uuid

import msgpack
import pytest

from conftest import (_admin_execute, _with_dbname, end_offsets, stored_offsets, wait_for,
                      write_config)
from test_vector import query

HALF_MAX = 65504.0


def pgvector_version(conninfo):
    """The pgvector version CREATE EXTENSION would install, None without pgvector. Fails the
    calling test when COPYSINK_TEST_PGVECTOR=required and there is none."""
    wanted = os.environ.get("COPYSINK_TEST_PGVECTOR", "")
    if wanted not in ("", "required"):
        pytest.fail(f"COPYSINK_TEST_PGVECTOR={wanted!r}: only 'required' or unset")
    row = query(conninfo, "SELECT default_version FROM pg_available_extensions "
                          "WHERE name = 'vector'")
    if not row and wanted == "required":
        pytest.fail("COPYSINK_TEST_PGVECTOR=required, but the server has no pgvector "
                    "(no 'vector' in pg_available_extensions)")
    version = row[0][0] if row else None
    print(f"{query(conninfo, 'SELECT version()')[0][0]}; pgvector available: {version}")
    return version


def at_least(version, wanted):
    return version is not None and tuple(map(int, re.findall(r"\d+", version)[:3])) >= wanted


def column_types(conninfo):
    """{(table, column): SQL type} of the public tables' columns."""
    return {(t, c): ty for t, c, ty in query(conninfo, """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
          AND a.attnum > 0 AND NOT a.attisdropped""")}


def migrate(copysink_bin, config, *overrides):
    """`copysink migrate` with create_extension at its default unless overridden; (exit
    status, its log)."""
    args = [copysink_bin, "migrate", "-c", config]
    for o in overrides:
        args += ["-o", o]
    env = {k: v for k, v in os.environ.items() if k != "COPYSINK_POSTGRES_CREATE_EXTENSION"}
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    return p.returncode, p.stderr + p.stdout


def config_for(tmp_path, name, conninfo, spec, kafka=None, group="unused"):
    return write_config(tmp_path / f"{name}.ini",
                        bootstrap=kafka.bootstrap if kafka else "127.0.0.1:9",
                        conninfo=conninfo, group=group, tables={},
                        batch={"max_rows": 50, "linger_ms": 50}, extra=spec)


def f32(x):
    """x rounded to float32 as the worker's (float) cast rounds it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# ---------------------------------------------------------------- migrate without superuser

@pytest.fixture
def owned_database(pg_admin_conninfo):
    """A fresh database owned by a new role that is neither superuser nor CREATEDB; yields
    (the owner's conninfo, the superuser's conninfo, database name). Both go afterwards."""
    role = "own_" + uuid.uuid4().hex[:10]
    name = "cs_" + uuid.uuid4().hex[:12]
    _admin_execute(pg_admin_conninfo, f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB '
                                      "NOCREATEROLE")
    try:
        _admin_execute(pg_admin_conninfo, f'CREATE DATABASE "{name}" OWNER "{role}"')
        superuser = _with_dbname(pg_admin_conninfo, name)
        owner = " ".join([p for p in superuser.split() if not p.startswith("user=")] +
                         [f"user={role}"])
        assert query(owner, "SELECT rolsuper OR rolcreatedb FROM pg_roles "
                            "WHERE rolname = current_user") == [(False,)]
        yield owner, superuser, name
    finally:
        _admin_execute(pg_admin_conninfo, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _admin_execute(pg_admin_conninfo, f'DROP ROLE IF EXISTS "{role}"')


NEEDS_VECTOR = """
[table items]
columns = id bigint not null, body text, e embedding
key = id
dim = 4
embedding_type = vector
"""

AUTO = """
[table later]
columns = id bigint not null, e embedding
key = id
dim = 4
"""


def test_migrate_as_database_owner(tmp_path, owned_database, copysink_bin):
    """The owner of a fresh database, not a superuser: a table that must be vector fails with
    create_extension off, saying exactly what a superuser must run, and creates nothing;
    `auto` falls back to real[] with a notice saying why. With create_extension on the owner
    cannot create pgvector (not a trusted extension) and is told so; a superuser with
    create_extension on creates it and the table. From then on `auto` tables are vector, even
    for the owner with create_extension off."""
    owner, superuser, dbname = owned_database
    version = pgvector_version(superuser)
    statement = f'a superuser must run \\"CREATE EXTENSION vector;\\" in database \\"{dbname}\\"'
    config = config_for(tmp_path, "owner", owner, NEEDS_VECTOR)

    rc, log = migrate(copysink_bin, config)
    assert rc == 1, log
    assert 'table \\"public.items\\" column \\"e\\" is vector(4), which needs the pgvector ' \
           "extension" in log, log
    assert statement in log, log
    if version is None:
        assert "the server has no pgvector: install pgvector on the server, then " + \
               statement in log, log
    assert column_types(superuser) == {}, "a failed migrate left tables behind"

    rc, log = migrate(copysink_bin, config, "postgres.create_extension=on")
    assert rc == 1, log
    if version is not None:
        assert ('could not create extension \\"vector\\" in database \\"' + dbname +
                '\\": permission denied to create extension \\"vector\\"') in log, log
        assert "pgvector is not a trusted extension: migrate as a superuser" in log, log
    else:
        assert "the server has no pgvector" in log and statement in log, log
    assert query(superuser, "SELECT 1 FROM pg_extension WHERE extname = 'vector'") == []
    assert column_types(superuser) == {}

    # auto, owner, off: real[] and a notice that says why
    auto = config_for(tmp_path, "auto", owner, AUTO)
    rc, log = migrate(copysink_bin, auto)
    assert rc == 0, log
    assert (f'table \\"public.later\\" column \\"e\\" is created as real[]: database '
            f'\\"{dbname}\\" has no pgvector extension') in log, log
    assert column_types(superuser)[("later", "e")] == "real[]"

    # a superuser with create_extension on
    as_super = config_for(tmp_path, "super", superuser, NEEDS_VECTOR)
    rc, log = migrate(copysink_bin, as_super, "postgres.create_extension=on")
    if version is None:
        assert rc == 1 and "the server has no pgvector" in log, log
        return
    assert rc == 0, log
    assert f'created extension \\"vector\\" {version} in database \\"{dbname}\\"' in log, log
    assert column_types(superuser)[("items", "e")] == "vector(4)"
    # the owner again, create_extension off: items exists, and a new auto table is vector
    rc, log = migrate(copysink_bin, config)
    assert rc == 0, log
    soon = config_for(tmp_path, "soon", owner, AUTO.replace("[table later]", "[table soon]"))
    rc, log = migrate(copysink_bin, soon)
    assert rc == 0 and "created as real[]" not in log, log
    assert column_types(superuser)[("soon", "e")] == "vector(4)"
    assert column_types(superuser)[("later", "e")] == "real[]"  # left as it was


# ---------------------------------------------------------------- halfvec and sparsevec

HALVES = """
[table halves]
topic = {topic}
columns = id bigint not null, e halfvec(8)
key = id
"""

SPARSE = """
[table sparse]
topic = {topic}
columns = id bigint not null, s sparsevec(1000)
key = id
"""


def needs_halfvec(version, copysink_bin, config, log_check):
    """On a server whose pgvector has no halfvec/sparsevec: migrate must fail naming what is
    needed. Returns True when the test can go on to load data."""
    rc, log = migrate(copysink_bin, config, "postgres.create_extension=on")
    if at_least(version, (0, 7, 0)):
        assert rc == 0, log
        return True
    assert rc == 1, log
    assert log_check(log), log
    if version is None:
        assert "the server has no pgvector: install pgvector 0.7.0 or later on the server, " \
               'then a superuser must run \\"CREATE EXTENSION vector;\\"' in log, log
    else:
        assert f"which needs pgvector 0.7.0 or later, but the server has pgvector {version}: " \
               "install pgvector 0.7.0 or later on the server" in log, log
    return False


def load(kafka, conninfo, worker, group, topics, records):
    """Produce, then wait until the worker has stored every topic's end offset."""
    positions = kafka.produce(records)
    ends = end_offsets(kafka, *topics)
    wait_for(lambda: stored_offsets(conninfo, group) == ends or not worker.alive(), 120,
             f"stored offsets {ends}")
    assert worker.alive(), worker.log_text()[-3000:]
    return positions


def dead_letters(kafka, topic, count, positions):
    """{entry id: (reason, error)} of the dead letters of `topic`; positions: {entry id:
    (topic, partition, offset)} as produced."""
    ids = {(p, o): i for i, (_, p, o) in positions.items()}
    letters = kafka.read_all(topic + ".dlq", count)
    got = {}
    for m in letters:
        h = {k: v.decode() for k, v in m.headers()}
        where = (int(h["copysink.partition"]), int(h["copysink.offset"]))
        got[ids[where]] = (h["copysink.reason"], h["copysink.error"])
    assert len(got) == len(letters) == count, got
    return got


def half_bytes(values):
    """halfvec_send of float32 values: int16 dim, int16 0, each as IEEE half, big-endian."""
    return struct.pack(">HH", len(values), 0) + b"".join(struct.pack(">e", v) for v in values)


def test_halfvec_end_to_end(tmp_path, database, kafka, workers, copysink_bin):
    """Entries of every wire form (float64, float32 and int arrays, a bin of float32, a bin of
    halves) with the rounding cases (ties to even, subnormals, ±0, the largest half, values
    that round down to it) go through Kafka into a halfvec(8) column and read back exactly
    as Python's IEEE half of the float32 each value rounds to; updates go through the merge.
    A value beyond half's range (as float64 or float32) is dead-lettered as out_of_range and
    NaN as not_finite; their siblings are stored."""
    version = pgvector_version(database)
    topic = kafka.topic("halves")
    kafka.create_topics({topic: 2, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = config_for(tmp_path, "halves", database, HALVES.format(topic=topic), kafka, group)
    if not needs_halfvec(version, copysink_bin, config,
                         lambda log: 'table \\"public.halves\\" column \\"e\\" is halfvec(8)' in log):
        assert column_types(database) == {}
        return
    assert column_types(database)[("halves", "e")] == "halfvec(8)"
    rng = random.Random(7)
    w = workers(config).start()

    rows = {
        0: [0.0, -0.0, 1.0, HALF_MAX, -HALF_MAX, 2.0 ** -24, 2.0 ** -25, 1 + 2.0 ** -11],
        1: [0.1, 1 / 3, math.pi, -2.5, 6.1e-5, 1e-8, 65519.0, 3 * 2.0 ** -25],
        2: [rng.uniform(-1000, 1000) for _ in range(8)],
        3: [rng.uniform(-1, 1) for _ in range(8)],
        4: [1, -2, 3, 100, -100, 0, 7, 65504],
        5: [rng.uniform(-60000, 60000) for _ in range(8)],
        6: [-(2.0 ** -14), 2.0 ** -14 - 2.0 ** -25, 1 + 3 * 2.0 ** -11, 2 - 2.0 ** -11,
            1e-45, -5e-324, 1.0000001, 65505.0],
    }
    forms = {2: "bin32", 3: "bin16", 6: "f32"}
    expected = {}

    def entry(i, values):
        form = forms.get(i)
        if form == "bin32":
            return msgpack.packb({"id": i, "e": struct.pack("<8f", *values)}), \
                [f32(x) for x in values]
        if form == "bin16":
            halves = struct.pack("<8e", *values)
            return msgpack.packb({"id": i, "e": halves}), list(struct.unpack("<8e", halves))
        return msgpack.packb({"id": i, "e": values}, use_single_float=form == "f32"), \
            [f32(float(x)) for x in values]

    records = []
    for i, values in rows.items():
        value, stored = entry(i, values)
        records.append((topic, msgpack.packb([i]), value))
        expected[i] = half_bytes(stored)
    bad = {100: [1, 2, 3, 4, 5, 6, 7, 70000.0],  # beyond 65504 as float64
           101: [1, 2, 3, 4, 5, 6, 1e39, 8],      # beyond float32 too: still out of range
           102: [1, 2, float("nan"), 4, 5, 6, 7, 8],
           103: [65520.0, 0, 0, 0, 0, 0, 0, 0]}   # the tie at the top goes to even: overflow
    records += [(topic, msgpack.packb([i]), msgpack.packb({"id": i, "e": v}))
                for i, v in bad.items()]
    positions = load(kafka, database, w, group, [topic], records)

    def stored():
        return {i: bytes(b) for i, b in query(database, "SELECT id, halfvec_send(e) FROM halves")}

    assert stored() == expected
    letters = dead_letters(kafka, topic, len(bad),
                           {i: positions[len(rows) + k] for k, i in enumerate(bad)})
    assert letters == {
        100: ("out_of_range", 'field "e" value 7 is out of range for halfvec: 70000'),
        101: ("out_of_range", 'field "e" value 6 is out of range for halfvec: 1e+39'),
        102: ("not_finite", 'field "e" value 2 is not a finite float32'),
        103: ("out_of_range", 'field "e" value 0 is out of range for halfvec: 65520'),
    }, letters

    # updates through the merge (the keys exist), one unchanged, a new key by direct COPY
    updates = {0: [rng.uniform(-10, 10) for _ in range(8)], 1: rows[1],
               7: [rng.uniform(-1, 1) for _ in range(8)]}
    records = []
    for i, values in updates.items():
        value, stored_values = entry(i, values)
        records.append((topic, msgpack.packb([i]), value))
        expected[i] = half_bytes(stored_values)
    load(kafka, database, w, group, [topic], records)
    assert stored() == expected
    assert w.stop() == 0, w.log_text()[-3000:]


def sparse_bytes(dim, pairs):
    """sparsevec_send: int32 dim, nnz, 0, the 0-based indices ascending, then the values."""
    pairs = sorted((i, f32(v)) for i, v in pairs.items() if f32(v) != 0)
    return struct.pack(f">iii{len(pairs)}i{len(pairs)}f", dim, len(pairs), 0,
                       *[i for i, _ in pairs], *[v for _, v in pairs])


def test_sparsevec_end_to_end(tmp_path, database, kafka, workers, copysink_bin):
    """sparsevec(1000) entries as {"indices", "values"} maps (unordered, with zeros, empty)
    and as dense arrays and bins go through Kafka and read back exactly (sparsevec_send), and
    the text form shows pgvector's 1-based indices; an index beyond dim is out_of_range, one
    given twice embedding_dim; an update goes through the merge."""
    version = pgvector_version(database)
    topic = kafka.topic("sparse")
    kafka.create_topics({topic: 2, topic + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = config_for(tmp_path, "sparse", database, SPARSE.format(topic=topic), kafka, group)
    if not needs_halfvec(version, copysink_bin, config,
                         lambda log: 'column \\"s\\" is sparsevec(1000)' in log):
        assert column_types(database) == {}
        return
    assert column_types(database)[("sparse", "s")] == "sparsevec(1000)"
    rng = random.Random(11)
    w = workers(config).start()

    dense = [0.0] * 1000
    for i in rng.sample(range(1000), 20):
        dense[i] = rng.uniform(-1, 1)
    dense[17] = 3  # an int
    dense_bin = [0.0] * 1000
    dense_bin[0], dense_bin[999] = -0.5, 1e-3
    entries = {
        0: ({"indices": [999, 0, 500], "values": [1.5, -2, 0.25]},
            {999: 1.5, 0: -2.0, 500: 0.25}),
        1: ({"indices": [3, 7], "values": [0.0, 4.0]}, {7: 4.0}),
        2: (dense, {i: v for i, v in enumerate(dense) if v != 0}),
        3: (struct.pack("<1000f", *dense_bin), {0: -0.5, 999: 1e-3}),
        4: ({"indices": [], "values": []}, {}),
    }
    many = {"values": [rng.uniform(-1, 1) for _ in range(300)],
            "indices": rng.sample(range(1000), 300)}  # values first, indices in any order
    entries[5] = (many, dict(zip(many["indices"], many["values"])))
    expected = {i: sparse_bytes(1000, pairs) for i, (_, pairs) in entries.items()}
    records = [(topic, msgpack.packb([i]), msgpack.packb({"id": i, "s": s}))
               for i, (s, _) in entries.items()]
    bad = {100: {"indices": [1, 1000], "values": [1, 2]},
           101: {"indices": [5, 2, 5], "values": [1, 2, 3]}}
    records += [(topic, msgpack.packb([i]), msgpack.packb({"id": i, "s": s}))
                for i, s in bad.items()]
    positions = load(kafka, database, w, group, [topic], records)

    def stored():
        return {i: bytes(b) for i, b in
                query(database, "SELECT id, sparsevec_send(s) FROM sparse")}

    assert stored() == expected
    assert query(database, "SELECT s::text FROM sparse WHERE id = 0") == \
        [("{1:-2,501:0.25,1000:1.5}/1000",)]
    got = dead_letters(kafka, topic, len(bad),
                       {i: positions[len(entries) + k] for k, i in enumerate(bad)})
    assert got == {100: ("out_of_range",
                         'field "s" index 1 is out of range for sparsevec(1000): 1000'),
                   101: ("embedding_dim", 'field "s" has index 5 twice')}, got

    update = {"indices": [10, 20], "values": [1.0, 2.0]}
    load(kafka, database, w, group, [topic],
         [(topic, msgpack.packb([0]), msgpack.packb({"id": 0, "s": update}))])
    expected[0] = sparse_bytes(1000, {10: 1.0, 20: 2.0})
    assert stored() == expected
    assert w.stop() == 0, w.log_text()[-3000:]


# ---------------------------------------------------------------- real[] where pgvector is

REAL = """
[table memory_entries]
topic = {topic}
embedding_type = real[]

[table vecs]
topic = {topic2}
columns = id bigint not null, e real[]
key = id
dim = 4
"""


def test_explicit_real_array(tmp_path, database, kafka, workers, copysink_bin):
    """embedding_type = real[] (a built-in table) and a column spelled real[] stay real[] on a
    server with pgvector, even with the extension in the database and create_extension on;
    entries load and read back bit for bit. Asking the same tables for vector afterwards is
    a start-up error that names both types."""
    version = pgvector_version(database)
    if version is not None:
        query(database, "CREATE EXTENSION IF NOT EXISTS vector")
    topics = [kafka.topic("memory"), kafka.topic("vecs")]
    kafka.create_topics({topics[0]: 1, topics[1]: 1, topics[0] + ".dlq": 1,
                         topics[1] + ".dlq": 1})
    group = "g-" + kafka.prefix
    config = config_for(tmp_path, "real", database,
                        REAL.format(topic=topics[0], topic2=topics[1]), kafka, group)
    rc, log = migrate(copysink_bin, config, "postgres.create_extension=on")
    assert rc == 0, log
    types = column_types(database)
    assert types[("memory_entries", "embedding")] == "real[]"
    assert types[("vecs", "e")] == "real[]"
    assert "created as real[]" not in log, log  # explicit: no notice, no fallback

    rng = random.Random(3)
    vecs = {i: [f32(rng.uniform(-1, 1)) for _ in range(4)] for i in range(5)}
    vecs[5] = [f32(x) for x in (0.0, -0.0, 1e-45, 3.4028235e38)]
    emb = [f32(rng.uniform(-1, 1)) for _ in range(384)]
    records = [(topics[1], msgpack.packb([i]), msgpack.packb({"id": i, "e": v}))
               for i, v in vecs.items()]
    records.append((topics[0], msgpack.packb(["ns", "k"]),
                    msgpack.packb({"namespace": "ns", "key": "k", "value": "v",
                                   "embedding": struct.pack("<384f", *emb)})))
    w = workers(config).start()
    load(kafka, database, w, group, topics, records)
    got = {i: bytes(b) for i, b in query(database, "SELECT id, array_send(e) FROM vecs")}
    assert got == {i: struct.pack(">iiIii", 1, 0, 700, 4, 1) +
                   b"".join(struct.pack(">if", 4, x) for x in v) for i, v in vecs.items()}
    (raw,), = query(database, "SELECT array_send(embedding) FROM memory_entries")
    assert bytes(raw)[20:] == b"".join(struct.pack(">if", 4, x) for x in emb)
    assert w.stop() == 0, w.log_text()[-3000:]

    p = subprocess.run([copysink_bin, "check", "-c", config, "-o",
                        "table.memory_entries.embedding_type=vector"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert 'error: table "public.memory_entries" column "embedding" has type real[], expected ' \
           "vector(384)" in p.stdout, p.stdout
    assert 'ok: table "public.vecs" matches its spec' in p.stdout, p.stdout
