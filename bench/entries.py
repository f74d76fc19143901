"""The benchmark's rows: generated memory entries, their msgpack form (what the producers
send), their binary COPY form (what the raw COPY and the hand merge load, the embedding in the
column's own binary type) and the seed's text COPY line."""
import array
import json
import random
import struct

import msgpack

DIM = 384
POOL = 4096  # distinct embeddings; generating 200,000 x 384 floats in Python would dominate
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega memory pattern vector cache batch").split()
COLS = ("namespace", "key", "value", "embedding", "metadata", "tags")
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)


def embedding_pool(seed):
    rng = random.Random(seed)
    return [array.array("f", (rng.uniform(-1, 1) for _ in range(DIM))) for _ in range(POOL)]


def make_entries(n, seed, version, pool, extra_words=0, first=0):
    """n memory entries with unique keys (entry_<first> on); `version` changes every value but
    not the keys; extra_words lengthens the value (the TOAST check)."""
    rng = random.Random((seed * 1000 + version) * 1000003 + first if first else
                        seed * 1000 + version)
    tail = "".join(f" lorem{i % 97}" for i in range(extra_words))
    out = []
    for i in range(first, first + n):
        out.append({
            "namespace": f"bench{i % 8}",
            "key": f"entry_{i:08d}",
            "value": f"v{version} " + " ".join(rng.choice(WORDS) for _ in range(12)) + tail,
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


def kafka_key(e):
    """The conflict key as the Kafka key (the msgpack array of the key fields)."""
    return msgpack.packb([e["namespace"], e["key"]])


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


class CopyRows:
    """The rows of a binary COPY, each row's bytes addressable, so that any share of them
    (every k-th row, a batch of consecutive ones) becomes a complete COPY stream."""

    def __init__(self, entries, kind):
        cache = {}
        parts, offs, pos = [], array.array("q", [0]), 0
        for e in entries:
            row = [struct.pack("!h", 6)]
            for s in (e["namespace"], e["key"], e["value"]):
                b = s.encode()
                row.append(struct.pack("!i", len(b)) + b)
            emb = cache.get(id(e["embedding"]))
            if emb is None:
                emb = cache[id(e["embedding"])] = embedding_field(e["embedding"], kind)
            row.append(emb)
            js = b"\x01" + json.dumps(e["metadata"], separators=(",", ":")).encode()
            row.append(struct.pack("!i", len(js)) + js)
            tags = b"".join(struct.pack("!i", len(t.encode())) + t.encode() for t in e["tags"])
            arr = struct.pack("!iiiii", 1, 0, 25, len(e["tags"]), 1) + tags
            row.append(struct.pack("!i", len(arr)) + arr)
            b = b"".join(row)
            parts.append(b)
            pos += len(b)
            offs.append(pos)
        self.body = b"".join(parts)
        self.offs = offs
        self.n = len(entries)

    def row(self, i):
        return self.body[self.offs[i]:self.offs[i + 1]]

    def stream(self, rows=None):
        """A complete binary COPY of the given row indexes (all when None)."""
        if rows is None:
            return COPY_HEADER + self.body + COPY_TRAILER
        return COPY_HEADER + b"".join(self.row(i) for i in rows) + COPY_TRAILER

    def share(self, i, k):
        """Row indexes of the i-th of k shares (every k-th row)."""
        return range(i, self.n, k)

    def bytes_per_row(self):
        return (len(COPY_HEADER) + len(self.body) + len(COPY_TRAILER)) / max(self.n, 1)


def text_copy_row(e, kind):
    """The seed's StringIO text COPY line (bulk_ops.py escaping)."""
    def esc(s):
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    floats = ",".join(repr(float(x)) for x in e["embedding"])
    emb = "[" + floats + "]" if kind == "vector" else "{" + floats + "}"
    tags = "{" + ",".join(e["tags"]) + "}"
    return "\t".join([esc(e["namespace"]), esc(e["key"]), esc(e["value"]), emb,
                      esc(json.dumps(e["metadata"])), tags]) + "\n"
