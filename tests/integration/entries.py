"""Generating entries, invalid messages and the expected table contents.

The expected contents are computed the way the worker promises to apply entries: one by one
in offset order per key (keys are partitioned by their conflict key, so one key lives in one
partition): last valid entry wins for `update` tables, first valid entry for `skip` tables.
"""
import math
import struct

import msgpack
import psycopg2
import psycopg2.extras

DIM = 384

KEYS = {
    "memory_entries": ("namespace", "key"),
    "patterns": ("name",),
    "trajectories": ("trajectory_id", "step_number"),
}

COLUMNS = {
    "memory_entries": ("namespace", "key", "value", "embedding", "metadata", "tags"),
    "patterns": ("name", "pattern_type", "description", "embedding", "confidence",
                 "usage_count", "success_count", "metadata"),
    "trajectories": ("trajectory_id", "step_number", "action", "state", "reward", "embedding",
                     "metadata"),
}

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega café naïve 東京 emoji🙂").split()


def f32(x):
    """x rounded to float32, as the embedding column stores it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def embedding_sql(column="embedding"):
    """SQL of an embedding column's float32 values as bytes, bit-exact whichever type the column
    has: vector(N) (pgvector) or real[] (both cast to real[] without rounding)."""
    return f"array_send({column}::real[])"


def embedding_from(raw):
    """The float32 values (as Python floats) of embedding_sql()'s bytes; None for NULL."""
    if raw is None:
        return None
    raw = bytes(raw)
    ndim, _, _ = struct.unpack_from(">iiI", raw, 0)
    if ndim == 0:
        return []
    assert ndim == 1, f"an embedding of {ndim} dimensions"
    n, _ = struct.unpack_from(">ii", raw, 12)
    values = []
    for i in range(n):
        size, value = struct.unpack_from(">if", raw, 20 + 8 * i)
        assert size == 4, f"element {i} of an embedding: {size} bytes"
        values.append(value)
    return values


def embedding(rng, dim=DIM):
    return [f32(rng.uniform(-1, 1)) for _ in range(dim)]


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_entry(rng, table, i, dim=DIM):
    if table == "memory_entries":
        e = {"namespace": f"ns{rng.randrange(5)}", "key": f"entry_{rng.randrange(300)}",
             "value": f"value {i} " + text(rng, 5), "embedding": embedding(rng, dim),
             "metadata": {"index": i, "score": rng.random(), "nested": {"ok": True, "n": None,
                                                                        "l": [1, "two", 3.5]}},
             "tags": [rng.choice(WORDS) for _ in range(rng.randrange(0, 4))]}
        if rng.random() < 0.1:
            del e["tags"]  # optional field omitted -> NULL
        return e
    if table == "patterns":
        e = {"name": f"pattern_{rng.randrange(800)}", "pattern_type": rng.choice(["optimization", "caching", "retry"]),
             "description": text(rng, 8), "embedding": embedding(rng, dim),
             "confidence": rng.random(), "usage_count": rng.randrange(0, 2**31 - 1),
             "success_count": rng.randrange(-5, 100), "metadata": {"category": rng.choice(WORDS)}}
        if rng.random() < 0.1:
            e["description"] = None
        return e
    e = {"trajectory_id": f"traj_{rng.randrange(200)}", "step_number": rng.randrange(5),
         "action": rng.choice(["move_forward", "turn_left", "stop"]),
         "state": {"position": i, "velocity": i * 0.5, "tags": ["a", "b"]},
         "reward": rng.uniform(-10, 10), "embedding": embedding(rng, dim),
         "metadata": {"batch": "training"}}
    return e


def key_of(table, entry):
    return tuple(entry[k] for k in KEYS[table])


def kafka_key(table, entry):
    return msgpack.packb(list(key_of(table, entry)))


def encode(entry, compact):
    """msgpack of an entry; the compact form sends the embedding as little-endian float32 bin."""
    if compact and isinstance(entry.get("embedding"), list):
        entry = dict(entry)
        emb = entry["embedding"]
        entry["embedding"] = struct.pack(f"<{len(emb)}f", *emb)
    return msgpack.packb(entry, use_bin_type=True)


def deep(n):
    d = {"leaf": 1}
    for _ in range(n):
        d = {"d": d}
    return d


def invalid_messages(rng, table):
    """(description, reason, value bytes, entry index or None) of messages the worker must
    dead-letter. Entry index is set for arrays where only one entry is bad."""
    good = make_entry(rng, table, 10**6)
    req = KEYS[table][0]
    text_field = {"memory_entries": "value", "patterns": "pattern_type",
                  "trajectories": "action"}[table]
    out = []

    def bad(desc, reason, **changes):
        e = dict(good)
        for k, v in changes.items():
            if v is KeyError:
                e.pop(k, None)
            else:
                e[k] = v
        out.append((desc, reason, msgpack.packb(e, use_bin_type=True), None))

    out.append(("truncated", "malformed", msgpack.packb(good)[:-7], None))
    out.append(("garbage", "malformed", b"\xc1\xc1\xc1", None))
    out.append(("trailing bytes", "malformed", msgpack.packb(good) + b"\x01", None))
    out.append(("not a map", "not_a_map", msgpack.packb(42), None))
    out.append(("huge declared array", "malformed", b"\xdd\xff\xff\xff\xff", None))
    bad("missing required", "missing_field", **{req: KeyError})
    bad("nil required", "missing_field", **{req: None})
    bad("wrong type text", "wrong_type", **{text_field: 12})
    bad("short embedding", "embedding_dim", embedding=[0.5] * (DIM - 1))
    bad("long bin embedding", "embedding_dim", embedding=b"\0" * (4 * DIM + 4))
    bad("nan in embedding", "not_finite", embedding=[0.0] * (DIM - 1) + [math.nan])
    bad("inf in embedding", "not_finite", embedding=[math.inf] + [0.0] * (DIM - 1))
    bad("nul byte", "nul_byte", **{text_field: "a\x00b"})
    bad("too deep metadata", "too_deep", metadata=deep(40))
    bad("nan in metadata", "not_finite", metadata={"x": math.nan})
    if table == "trajectories":
        bad("int out of range", "out_of_range", step_number=2**40)
    if table == "patterns":
        bad("int32 out of range", "out_of_range", usage_count=2**31)
    if table == "memory_entries":
        bad("tags not strings", "wrong_type", tags=[1, 2])
    # invalid UTF-8 inside a str: msgpack-python will not pack it, so build the bytes
    e = dict(good)
    e[text_field] = "@@MARK@@"
    raw = msgpack.packb(e, use_bin_type=True)
    out.append(("invalid utf8", "invalid_utf8",
                raw.replace(b"\xa8@@MARK@@", b"\xa3\xff\xfe\xfd"), None))
    # an array message where one entry of three is bad: the other two must land
    return out


def expected_rows(applied, modes):
    """applied: list of (table, entry) in offset order per key. Returns {table: {key: entry}}."""
    result = {t: {} for t in modes}
    for table, entry in applied:
        k = key_of(table, entry)
        if modes[table] == "skip" and k in result[table]:
            continue
        result[table][k] = entry
    return result


def table_contents(conninfo, table):
    """{key: row} of a built-in table; the embedding as its float32 values (embedding_from)."""
    with psycopg2.connect(conninfo) as conn, conn.cursor(
            cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(f'SELECT t.*, {embedding_sql("t.embedding")} AS embedding_f32 '
                    f'FROM "{table}" t')
        rows = [dict(r) for r in cur.fetchall()]
    for r in rows:
        r["embedding"] = embedding_from(r.pop("embedding_f32"))
    return {tuple(r[k] for k in KEYS[table]): r for r in rows}


def assert_table_equals(conninfo, table, expected):
    got = table_contents(conninfo, table)
    assert set(got) == set(expected), (
        f"{table}: missing {len(set(expected) - set(got))} keys, "
        f"unexpected {len(set(got) - set(expected))}")
    for key, entry in expected.items():
        row = got[key]
        for col in COLUMNS[table]:
            want = entry.get(col)
            have = row[col]
            if col == "embedding" and want is None:
                assert have is None, (table, key, col, "NULL expected")
            elif col == "embedding":
                assert have is not None and len(have) == len(want), (table, key, col)
                assert have == want, (table, key, col)
            else:
                assert have == want, (table, key, col, have, want)
        assert row["created_at"] is not None and row["updated_at"] is not None
