"""Paired rounds: each comparison runs A and B back to back in every round, A first in odd
rounds and B first in even ones, for a number of rounds fixed before the run; the figures are
the medians of each side, the ratio of the medians, min and max beside them (and the best
round as an extra)."""
import statistics
import time


def summary(values, higher_is_better=True):
    vs = [v for v in values if v is not None]
    if not vs:
        return {"median": None, "min": None, "max": None, "best": None, "n": 0}
    return {"median": statistics.median(vs), "min": min(vs), "max": max(vs),
            "best": max(vs) if higher_is_better else min(vs), "n": len(vs)}


def ratio(a, b):
    return None if a is None or not b else a / b


def paired_set(rounds, comparisons, log, key="rows_per_s"):
    """Paired rounds of several comparisons, interleaved: every round runs each comparison's
    pair in turn, so that all of them see the same stretches of the machine's time.
    comparisons: [(name, run_a, run_b)], run_a(rnd) and run_b(rnd, last_a) returning records
    with `key`; A goes first in odd rounds, B in even ones. last_a is the record of the
    comparison's latest A run (this round's when A went first, else the round before's; round
    1 always runs A first), from which B takes what must match A (the connections, the batch
    size). Returns {name: result} (see _result)."""
    pairs = {name: [] for name, _, _ in comparisons}
    last = {name: None for name, _, _ in comparisons}
    for rnd in range(1, rounds + 1):
        first = "a" if rnd % 2 == 1 else "b"
        for name, run_a, run_b in comparisons:
            pair = {"round": rnd, "first": first}
            for side in (("a", "b") if first == "a" else ("b", "a")):
                log(f"{name}, round {rnd}/{rounds}: {side.upper()}")
                t0 = time.monotonic()
                if side == "a":
                    pair["a"] = last[name] = run_a(rnd)
                else:
                    pair["b"] = run_b(rnd, last[name])
                    pair["b_matched_to_round"] = rnd if first == "a" else rnd - 1
                pair[side]["wall_s"] = time.monotonic() - t0
            pair["ratio"] = ratio(pair["a"][key], pair["b"][key])
            pairs[name].append(pair)
            log(f"{name}, round {rnd}: A {pair['a'][key]:,.0f}  B {pair['b'][key]:,.0f}  "
                f"A/B {pair['ratio']:.2f}")
    return {name: _result(ps, key) for name, ps in pairs.items()}


def _result(pairs, key):
    """{"rounds", "a", "b" (summaries of key), "ratio_of_medians", "ratio_of_best",
    "ratio_min", "ratio_max", "ratio_median" (of the rounds' own ratios)}; ratios are A / B."""
    a = summary([p["a"][key] for p in pairs])
    b = summary([p["b"][key] for p in pairs])
    per = summary([p["ratio"] for p in pairs])
    return {"key": key, "rounds": pairs, "a": a, "b": b,
            "ratio_of_medians": ratio(a["median"], b["median"]),
            "ratio_of_best": ratio(a["best"], b["best"]),
            "ratio_min": per["min"], "ratio_max": per["max"], "ratio_median": per["median"]}


def single(rounds, run, log, label, key):
    """rounds rounds of one side (the latency mode): every round and the summary of key."""
    out = []
    for rnd in range(1, rounds + 1):
        log(f"{label}, round {rnd}/{rounds}")
        rec = run(rnd)
        rec["round"] = rnd
        out.append(rec)
    return {"key": key, "rounds": out,
            "summary": summary([r[key] for r in out], higher_is_better=False)}
