"""Write the decoder fuzzer's seed corpus (tests/fuzz/corpus): valid entries of every table,
arrays of entries, the compact embedding, and one example of each rejection reason.
Run with the test venv: .cache/venv/bin/python tests/fuzz/make_corpus.py"""
import math
import os
import struct

import msgpack

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
EMB = [0.5, -1.0, 2.0, 0.25]


def seeds():
    mem = {"namespace": "ns", "key": "k1", "value": "v", "embedding": EMB,
           "metadata": {"a": [1, 2.5, None, True], "b": {"c": "d"}}, "tags": ["x", "y"]}
    yield "memory_entry", msgpack.packb(mem)
    yield "memory_entry_bin", msgpack.packb({**mem, "embedding": struct.pack("<4f", *EMB)})
    yield "pattern", msgpack.packb({"name": "p", "pattern_type": "t", "description": "d",
                                    "embedding": EMB, "confidence": 0.9, "usage_count": 3,
                                    "success_count": 2, "metadata": {}})
    yield "trajectory", msgpack.packb({"trajectory_id": "t1", "step_number": 1,
                                       "action": "go", "state": {"s": [1, {"x": "y"}]},
                                       "reward": -1.5, "embedding": EMB})
    yield "all_types", msgpack.packb({"id": 1, "s": "é東", "i2": -2, "i4": 70000, "f4": 1.5,
                                      "f8": 2.5, "b": False, "j": [1, "two"], "t": ["a"],
                                      "embedding": EMB})
    new = {"id": 3, "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
           "ts": "2026-12-03T14:00:00.5+02:00", "d": "2024-02-29", "n": "-123.4500", "by": b"\x00\xff", "fa": [1.5, None, -2],
           "ia": [1, None], "la": [-2 ** 63], "js": {"a": [1, None]}}
    yield "new_types", msgpack.packb(new)
    yield "new_types_other_forms", msgpack.packb(
        {**new, "u": bytes(range(16)), "ts": msgpack.Timestamp(1796306400, 500),
         "d": 1796256000000, "n": 1.5e-7})
    yield "new_types_bad", msgpack.packb(
        {**new, "ts": "2026-12-03T14:00:00", "n": "1e-99999", "d": "2023-02-29"})
    yield "array", msgpack.packb([mem, {**mem, "key": "k2"}, 5])
    yield "missing", msgpack.packb({"namespace": "ns"})
    yield "wrong_type", msgpack.packb({**mem, "value": 5})
    yield "dim", msgpack.packb({**mem, "embedding": [1.0]})
    yield "nan", msgpack.packb({**mem, "embedding": [math.nan] * 4})
    yield "utf8", msgpack.packb({**mem, "value": "x"}).replace(b"\xa1x", b"\xa1\xff")
    yield "nul", msgpack.packb({**mem, "value": "a\0b"})
    yield "range", msgpack.packb({"id": 2 ** 63, "i2": 70000, "i4": -2 ** 40})
    yield "deep", b"\x91" * 40 + b"\xc0"
    nested = None
    for _ in range(40):
        nested = [nested]
    # one entry of three nests 40 levels: rejected alone, its siblings decode
    yield "array_deep_entry", msgpack.packb([mem, {**mem, "key": "k2", "metadata": nested},
                                             {**mem, "key": "k3"}])
    yield "huge_len", b"\xdb\xff\xff\xff\xffab"
    yield "ext_bin", msgpack.packb({"j": msgpack.ExtType(3, b"ab"), "s": b"bin"})
    yield "trailing", msgpack.packb({}) + b"\x00"
    # halfvec and sparsevec columns (the all_types specs with those encodings)
    yield "half_bin", msgpack.packb({"id": 3, "embedding": struct.pack("<4e", *EMB)})
    yield "half_range", msgpack.packb({"id": 4, "embedding": [1.0, 65520.0, 1e39, -0.0]})
    yield "sparse", msgpack.packb({"id": 5, "embedding": {"indices": [3, 0, 2],
                                                          "values": [1.5, -2, 0.0]}})
    yield "sparse_dup", msgpack.packb({"id": 6, "embedding": {"values": [1, 2],
                                                              "indices": [1, 1]}})


os.makedirs(OUT, exist_ok=True)
for name, data in seeds():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
