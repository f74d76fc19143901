"""Figures derived from the runs' records, written into results.json beside them: each
server's memory bound, CPU per 100,000 rows by kind of run, and the targets with measured,
required and met (None when not measured, never a pass). results.md renders these only."""
from rounds import summary

MB = 1048576


def _pairs(res, path):
    node = res
    for k in path:
        node = node.get(k) if isinstance(node, dict) else None
        if node is None:
            return []
    return node.get("rounds", [])


def defaults_runs(res):
    """(where, record) of every copysink run at the defaults (no setting written)."""
    out = []
    for where, path in (("headline new keys", ("headline", "new")),
                        ("headline update", ("headline", "update")),
                        ("seed", ("seed",)), ("peer new keys", ("peer", "new")),
                        ("peer update", ("peer", "update"))):
        out += [(where, p["a"]) for p in _pairs(res, path) if not p["a"].get("settings")]
    out += [("latency", r) for r in res.get("latency", {}).get("rounds", [])
            if not r.get("settings")]
    return out


def memory(res, overrides):
    runs = defaults_runs(res)
    if not runs:
        return None
    max_bytes = max((r.get("max_bytes") or 0) for _, r in runs) or None
    worst = max(runs, key=lambda wr: wr[1].get("peak_rss_kb") or 0)
    by = {}
    for where, r in runs:
        by.setdefault(where, []).append(r.get("peak_rss_kb"))
    cap = 3 * max_bytes / MB + 32 if max_bytes else None
    peak = worst[1]["peak_rss_kb"] / 1024
    return {"runs": len(runs), "peak_mb": peak, "peak_run": worst[1]["log"],
            "max_bytes": max_bytes, "cap_mb": cap, "at_defaults": not overrides,
            "by_phase_mb": {w: max(v) / 1024 for w, v in by.items()},
            "met": None if cap is None else peak <= cap}


def _cpu_kind(label, recs):
    recs = [r for r in recs if r]
    if not recs:
        return None
    out = {"kind": label, "runs": len(recs)}
    for part in ("worker", "broker", "postgres"):
        vals = [r.get("cpu_per_100k_s", {}).get(part) for r in recs]
        out[part] = summary(vals, False)["median"]
    return out


def cpu(res):
    kinds = []

    def add(label, path, side):
        k = _cpu_kind(label, [p[side] for p in _pairs(res, path)])
        if k:
            kinds.append(k)

    add("copysink, new keys (headline, defaults)", ("headline", "new"), "a")
    add("raw binary COPY (headline)", ("headline", "new"), "b")
    add("copysink, update (headline, defaults)", ("headline", "update"), "a")
    add("hand merge (headline)", ("headline", "update"), "b")
    for w in res.get("writers", []):
        k = _cpu_kind(f"copysink, writers = {w['writers']}", [p["a"] for p in w["rounds"]])
        if k:
            kinds.append(k)
        k = _cpu_kind(f"raw binary COPY, {w['writers']} connection(s)",
                      [p["b"] for p in w["rounds"]])
        if k:
            kinds.append(k)
    add("copysink, new keys (seed phase)", ("seed",), "a")
    add("seed: StringIO COPY + ON CONFLICT", ("seed",), "b")
    if res.get("seed_inserts"):
        k = _cpu_kind("seed: individual INSERTs", res["seed_inserts"]["rounds"])
        if k:
            kinds.append(k)
    add("copysink, new keys (peer phase)", ("peer", "new"), "a")
    add("peer, new keys", ("peer", "new"), "b")
    add("copysink, update (peer phase)", ("peer", "update"), "a")
    add("peer, update", ("peer", "update"), "b")
    k = _cpu_kind("copysink at half load (latency)", res.get("latency", {}).get("rounds", []))
    if k:
        kinds.append(k)
    return kinds


def _t(name, measured, op, required, unit="", note=""):
    met = None if measured is None or required is None else \
        (measured >= required if op == ">=" else measured <= required)
    return {"target": name, "measured": measured, "op": op, "required": required,
            "unit": unit, "met": met, "note": note}


def targets(res):
    """The targets of one server; a phase that failed says so in its targets' note."""
    out = _targets(res)
    errors = res.get("errors", {})
    phase_of = (("new keys:", "headline"), ("update:", "headline"), ("copysink (defaults) / the "
                "seed", "seed"), ("peer,", "peer"), ("writers =", "writers"),
                ("p99", "latency"))
    for t in out:
        for prefix, ph in phase_of:
            if t["target"].startswith(prefix) and ph in errors and t["measured"] is None:
                t["note"] = f"phase {ph} failed: {errors[ph]}"
    return out


def _targets(res):
    out = []
    h = res.get("headline")
    if h:
        out.append(_t("new keys: copysink (defaults) / raw binary COPY, same connections",
                      h["new"]["ratio_of_medians"], ">=", h["new"]["target"], "x"))
        out.append(_t("update: copysink (defaults) / hand merge, same batches and "
                      "connections", h["update"]["ratio_of_medians"], ">=",
                      h["update"]["target"], "x"))
    else:
        out += [_t("new keys: copysink / raw binary COPY", None, ">=", 0.85, "x"),
                _t("update: copysink / hand merge", None, ">=", 0.95, "x")]
    sd = res.get("seed")
    out.append(_t("copysink (defaults) / the seed's COPY method",
                  sd["ratio_of_medians"] if sd else None, ">=", 25.0, "x"))
    p = res.get("peer")
    for key, label in (("new", "new keys"), ("update", "update")):
        if p and p.get("measured"):
            out.append(_t(f"peer, {label}: copysink / Debezium JDBC sink throughput",
                          p[key]["ratio_of_medians"], ">=", p[key]["target"], "x"))
            out.append(_t(f"peer, {label}: Debezium JDBC sink peak RSS / copysink's",
                          p[key]["rss_ratio_of_medians"], ">=", p[key]["rss_target"], "x"))
        else:
            why = p.get("reason", "") if p else ""
            out.append(_t(f"peer, {label}: copysink / Debezium JDBC sink throughput", None,
                          ">=", 15.0, "x", why))
            out.append(_t(f"peer, {label}: Debezium JDBC sink peak RSS / copysink's", None,
                          ">=", 10.0, "x", why))
    for w in res.get("writers", []):
        out.append(_t(f"writers = {w['writers']}: copysink / {w['writers']} raw COPYs at once",
                      w["ratio_of_medians"], ">=", w["target"], "x"))
    if not res.get("writers"):
        out.append(_t("writers = N: copysink / N raw COPYs at once", None, ">=", 0.85, "x"))
    m = res.get("memory")
    out.append(_t("peak RSS (VmHWM) at the defaults, MB", m["peak_mb"] if m else None, "<=",
                  m["cap_mb"] if m else None, "MB",
                  ("" if m["at_defaults"] else "not at the defaults: --max-bytes/--linger-ms "
                   "given") if m else ""))
    lat = res.get("latency")
    if lat and lat.get("measured"):
        linger = max((r.get("linger_ms") or 0) for r in lat["rounds"])
        out.append(_t("p99 produce -> commit at half load, median of the rounds, ms",
                      lat["summary"]["median"], "<=", linger + 100, "ms"))
    else:
        out.append(_t("p99 produce -> commit at half load, ms", None, "<=", None, "ms",
                      lat.get("reason", "") if lat else ""))
    return out


def server(res, overrides=None):
    res["memory"] = memory(res, overrides)
    res["cpu_per_100k"] = cpu(res)
    res["targets"] = targets(res)


def run(results):
    for res in results["servers"].values():
        server(res, results["run"].get("overrides"))
