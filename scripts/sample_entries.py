#!/usr/bin/env python3
"""Print sample entries for one table as JSON lines, for the demo and for trying copysink by
hand (python3's standard library only):

    scripts/sample_entries.py TABLE COUNT [--dim N] [--invalid K] [--seed S]

About one key in five repeats an earlier one (an update for `update` tables, ignored by
`skip` tables). --invalid adds K entries that copysink must send to the dead-letter topic
(a missing required field, an embedding of the wrong dimension, a number where text belongs).
"""
import argparse
import json
import random
import sys

WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega café 東京").split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def embedding(rng, dim):
    return [round(rng.uniform(-1, 1), 6) for _ in range(dim)]


def entry(rng, table, i, dim):
    if table == "memory_entries":
        return {"namespace": f"ns{i % 5}", "key": f"key-{i}", "value": sentence(rng, 8),
                "embedding": embedding(rng, dim),
                "metadata": {"source": "demo", "n": i}, "tags": rng.sample(WORDS, 2)}
    if table == "patterns":
        return {"name": f"pattern-{i}", "pattern_type": rng.choice(["retry", "cache", "plan"]),
                "description": sentence(rng, 6), "embedding": embedding(rng, dim),
                "confidence": round(rng.random(), 4), "usage_count": rng.randint(0, 100),
                "success_count": rng.randint(0, 50), "metadata": {"origin": "demo"}}
    if table == "trajectories":
        return {"trajectory_id": f"traj-{i // 10}", "step_number": i % 10,
                "action": rng.choice(["search", "read", "write", "answer"]),
                "state": {"step": i % 10, "context": sentence(rng, 3)},
                "reward": round(rng.uniform(-1, 1), 4), "embedding": embedding(rng, dim),
                "metadata": {}}
    sys.exit(f"sample_entries.py: unknown table {table!r}")


def invalid(rng, table, i, dim):
    e = entry(rng, table, i, dim)
    kind = i % 3
    if kind == 0:
        del e[next(iter(e))]          # a required field missing
    elif kind == 1:
        e["embedding"] = e["embedding"][:-1]  # one value short
    else:
        e[next(iter(e))] = 12345      # a number where text belongs
    return e


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table")
    ap.add_argument("count", type=int)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--invalid", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    out = sys.stdout
    for i in range(a.count):
        key = i if i < 5 or rng.random() > 0.2 else rng.randrange(i)
        out.write(json.dumps(entry(rng, a.table, key, a.dim), ensure_ascii=False) + "\n")
    for i in range(a.invalid):
        out.write(json.dumps(invalid(rng, a.table, i, a.dim), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
