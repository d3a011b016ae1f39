#!/usr/bin/env python3
"""Helpers for bench/run.sh: read oha's JSON, aggregate runs, print the table, write
BENCHMARKS.md. Standard library only.

  report.py status OHA_JSON              -> the status codes seen, space-separated
  report.py run OHA_JSON EXPECT          -> ok_rps p50_ms p99_ms bad transport ok (tab-separated)
  report.py summary WORK_DIR OUT_MD      -> prints the table; writes OUT_MD unless it is "-"
"""
import json
import statistics
import sys
from pathlib import Path

# Issue 7's targets for this machine class, checked where the run measured them.
WARM_RPS = 17_000
WARM_P99_MS = {16: 8.0, 64: 12.0}
COLD_RPS = 95
MIXED_WARM_P99_MS = 25.0
ENROLL_RPS_C16 = 12_000
GRANT_BEARER_RPS_C16 = 12_000
GRANT_LIST_P99_RATIO = 1.5
PEAK_RSS_MIB = 128
STARTUP_MS = 1000
# Issue 13's: the warm token path against the minimal server on the same stack (measured in
# the same run, with production logging on), and against the peer.
MINIMAL_RATIO = 0.85
PEER_RATIO = 6.0


def load(path):
    with open(path) as f:
        return json.load(f)


def statuses(d):
    return {str(k): int(v) for k, v in (d.get("statusCodeDistribution") or {}).items()}


def cmd_status(path):
    print(" ".join(sorted(statuses(load(path)))) or "none")


def cmd_run(path, expect):
    d = load(path)
    codes = statuses(d)
    if expect == "2xx":
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
    else:
        ok = codes.get(expect, 0)
    bad = sum(codes.values()) - ok
    transport = sum(int(v) for v in (d.get("errorDistribution") or {}).values())
    total_secs = float(d["summary"]["total"]) or float("nan")
    pct = d.get("latencyPercentiles") or {}
    ms = lambda key: (pct.get(key) or 0.0) * 1000.0
    print(f"{ok / total_secs:.1f}\t{ms('p50'):.2f}\t{ms('p99'):.2f}\t{bad}\t{transport}\t{ok}")


def read_tsv(path, names):
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(dict(zip(names, line.split("\t"))))
    return rows


RUN_FIELDS = ["scenario", "store", "conc", "rep", "rps", "p50", "p99", "bad", "transport",
              "ok", "cores", "rss_kib"]


def points(runs):
    """Median over repetitions for each (scenario, store, conc), in run order."""
    grouped = {}
    for r in runs:
        grouped.setdefault((r["scenario"], r["store"], int(r["conc"])), []).append(r)
    out = []
    for (scenario, store, conc), rs in grouped.items():
        med = lambda k: statistics.median(float(x[k]) for x in rs)
        out.append({
            "scenario": scenario, "store": store, "conc": conc, "runs": len(rs),
            "rps": med("rps"), "p50": med("p50"), "p99": med("p99"),
            "errors": sum(int(x["bad"]) + int(x["transport"]) for x in rs),
            "cores": med("cores"),
            "rss_mib": max(int(x["rss_kib"]) for x in rs) / 1024.0,
        })
    return out


HEADERS = ["scenario", "store", "conc", "req/s", "p50 ms", "p99 ms", "errors",
           "server cores", "peak RSS MiB"]


def cells(p):
    return [p["scenario"], p["store"], str(p["conc"]), f"{p['rps']:.0f}" if p["rps"] >= 100
            else f"{p['rps']:.1f}", f"{p['p50']:.2f}", f"{p['p99']:.2f}", str(p["errors"]),
            f"{p['cores']:.2f}", f"{p['rss_mib']:.1f}"]


def text_table(pts):
    rows = [HEADERS] + [cells(p) for p in pts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    line = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(rows[0]), line(["-" * w for w in widths])] + [line(r) for r in rows[1:]])


def md_table(pts):
    out = ["| " + " | ".join(HEADERS) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADERS) - 2)) + "|"]
    out += ["| " + " | ".join(cells(p)) + " |" for p in pts]
    return "\n".join(out)


def find(pts, scenario, store, conc=None):
    return [p for p in pts if p["scenario"] == scenario and p["store"] == store
            and (conc is None or p["conc"] == conc)]


def target_checks(pts, startups, grant_small, grant_big):
    """(target, measured, verdict) for every target this run measured."""
    checks = []
    verdict = lambda ok: "met" if ok else "MISSED"
    stores = sorted({p["store"] for p in pts if p["store"] != "node"})
    for store in stores:
        for scenario in ("oauth2_token", "endorsed_json"):
            for p in find(pts, scenario, store):
                limit = WARM_P99_MS.get(p["conc"])
                ok = p["rps"] >= WARM_RPS and p["errors"] == 0 and (limit is None or p["p99"] <= limit)
                checks.append((f"{scenario} {store} c={p['conc']}: >= {WARM_RPS} req/s"
                               + (f", p99 <= {limit:g} ms" if limit else "") + ", 0 errors",
                               f"{p['rps']:.0f} req/s, p99 {p['p99']:.2f} ms, {p['errors']} errors",
                               verdict(ok)))
        for p in find(pts, "cold_oauth2_token", store):
            checks.append((f"cold_oauth2_token {store} c={p['conc']}: >= {COLD_RPS} req/s",
                           f"{p['rps']:.1f} req/s", verdict(p["rps"] >= COLD_RPS)))
        for p in find(pts, "mixed_warm", store):
            checks.append((f"mixed_warm {store} c={p['conc']}: warm p99 <= {MIXED_WARM_P99_MS:g} ms "
                           "during the flood", f"p99 {p['p99']:.2f} ms",
                           verdict(p["p99"] <= MIXED_WARM_P99_MS and p["errors"] == 0)))
        for scenario, want in (("enrollment_authorize", ENROLL_RPS_C16),
                               ("grant_token_bearer", GRANT_BEARER_RPS_C16)):
            for p in find(pts, scenario, store, 16):
                checks.append((f"{scenario} {store} c=16: >= {want} req/s",
                               f"{p['rps']:.0f} req/s", verdict(p["rps"] >= want and p["errors"] == 0)))
        for small in find(pts, f"grant_list_{grant_small}", store):
            for big in find(pts, f"grant_list_{grant_big}", store, small["conc"]):
                ratio = big["p99"] / small["p99"] if small["p99"] else float("inf")
                checks.append((f"grant list {store} c={small['conc']}: p99 at {grant_big} grants "
                               f"<= {GRANT_LIST_P99_RATIO}x p99 at {grant_small}",
                               f"{big['p99']:.2f} / {small['p99']:.2f} ms = {ratio:.2f}x",
                               verdict(ratio <= GRANT_LIST_P99_RATIO)))
        c64 = [p for p in pts if p["store"] == store and p["conc"] == 64]
        if c64:
            worst = max(c64, key=lambda p: p["rss_mib"])
            checks.append((f"peak RSS under c=64 load ({store}) <= {PEAK_RSS_MIB} MiB",
                           f"{worst['rss_mib']:.1f} MiB (max, {worst['scenario']})",
                           verdict(worst["rss_mib"] <= PEAK_RSS_MIB)))
    for line, ratio, errors in minimal_ratios(pts):
        checks.append((f"oauth2_token / minimal_token >= {MINIMAL_RATIO}, 0 errors", line,
                       verdict(ratio >= MINIMAL_RATIO and errors == 0)))
    for line, ratio, errors in peer_ratios(pts):
        checks.append((f"oauth2_token / peer >= {PEER_RATIO:g}x, 0 errors", line,
                       verdict(ratio >= PEER_RATIO and errors == 0)))
    for line, ratio, errors in policy_peer_ratios(pts):
        checks.append((f"policy_oauth2_token / peer >= {PEER_RATIO:g}x, 0 errors", line,
                       verdict(ratio >= PEER_RATIO and errors == 0)))
    first = [s for s in startups if s["store"] == "sqlite" and s["kind"] == "first"]
    restarts = [float(s["ms"]) for s in startups if s["store"] == "sqlite" and s["kind"] == "restart"]
    if first or restarts:
        worst = max([float(s["ms"]) for s in first] + restarts)
        checks.append((f"startup to ready on SQLite <= {STARTUP_MS} ms",
                       f"{worst:.0f} ms (slowest start)", verdict(worst <= STARTUP_MS)))
    return checks


def startup_lines(startups):
    out = []
    for store in sorted({s["store"] for s in startups}):
        first = [float(s["ms"]) for s in startups if s["store"] == store and s["kind"] == "first"]
        again = [float(s["ms"]) for s in startups if s["store"] == store and s["kind"] == "restart"]
        parts = []
        if first:
            parts.append(f"first start on an empty database (migrations + key generation) "
                         f"{first[0]:.0f} ms")
        if again:
            parts.append(f"restarts median {statistics.median(again):.0f} ms, max {max(again):.0f} ms "
                         f"(n={len(again)})")
        out.append(f"{store}: " + "; ".join(parts))
    return out


def ratios_to(pts, scenario, store, name, mine="oauth2_token"):
    """(line, ratio, errors): `mine` on each store against `scenario` at the same conc."""
    out = []
    for other in find(pts, scenario, store):
        for ours in (p for p in pts if p["scenario"] == mine and p["conc"] == other["conc"]):
            ratio = ours["rps"] / other["rps"] if other["rps"] else float("inf")
            out.append((f"c={other['conc']}: Portcullis {mine} ({ours['store']}) "
                        f"{ours['rps']:.0f} req/s, p99 {ours['p99']:.2f} ms vs {name} "
                        f"{other['rps']:.0f} req/s, p99 {other['p99']:.2f} ms -> {ratio:.2f}x",
                        ratio, ours["errors"] + other["errors"]))
    return out


def peer_ratios(pts):
    return ratios_to(pts, "peer_oidc_token", "node", "peer")


def policy_peer_ratios(pts):
    """Issue 14: the warm path with a secret that has an expiry, a CIDR list and a quota."""
    return ratios_to(pts, "peer_oidc_token", "node", "peer", mine="policy_oauth2_token")


def minimal_ratios(pts):
    return ratios_to(pts, "minimal_token", "none", "minimal server")


def peer_lines(pts):
    return [line for line, _, _ in peer_ratios(pts) + policy_peer_ratios(pts)]


def minimal_lines(pts):
    return [line for line, _, _ in minimal_ratios(pts)]


def read_meta(path):
    meta, notes, legend = {}, [], []
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("\t")
            if key == "note":
                notes.append(value)
            elif key == "legend":
                if value not in legend:
                    legend.append(value)
            elif key:
                meta[key] = value
    return meta, notes, legend


def cmd_summary(work, out_md):
    work = Path(work)
    pts = points(read_tsv(work / "runs.tsv", RUN_FIELDS))
    startups = read_tsv(work / "startups.tsv", ["store", "label", "kind", "ms"])
    meta, notes, legend = read_meta(work / "meta.tsv")
    checks = target_checks(pts, startups, meta.get("grants_small", "10"),
                           meta.get("grants_big", "100000"))

    print()
    print(text_table(pts) if pts else "(no measurements)")
    print()
    for line in startup_lines(startups):
        print(f"startup  {line}")
    for line in minimal_lines(pts):
        print(f"minimal  {line}")
    for line in peer_lines(pts):
        print(f"peer     {line}")
    for target, measured, verdict in checks:
        print(f"target   {verdict:<6} {target}: {measured}")
    for note in notes:
        print(f"note     {note}")

    if out_md == "-":
        return
    md = ["# Benchmarks", "",
          "<!-- Generated by bench/run.sh: do not edit by hand. Re-run the command below "
          "to refresh it; put analysis in bench/NOTES.md, which is copied in. -->", "",
          f"- Date: {meta.get('date', '?')}",
          f"- Machine: {meta.get('machine', '?')}",
          f"- Commit: {meta.get('commit', '?')}",
          f"- Toolchain: {meta.get('toolchain', '?')}; load generator {meta.get('oha', '?')}",
          f"- Command: `{meta.get('command', '?')}`",
          f"- Method: {meta.get('method', '?')}", "",
          "## Results", "",
          "Medians over the runs of each point; errors are summed over them (responses other "
          "than the expected status, plus transport errors). Server cores = the server's CPU "
          "time over the run's wall time; peak RSS = the server's VmHWM (it is restarted for "
          "every point).", "",
          md_table(pts) if pts else "(no measurements)", ""]
    if startups:
        md += ["## Startup to ready", ""] + [f"- {l}" for l in startup_lines(startups)] + [""]
    minimal = minimal_lines(pts)
    if minimal:
        md += ["## Against the minimal server (same stack, same run)", ""]
        md += [f"- {l}" for l in minimal] + [""]
    peers = peer_lines(pts)
    if peers:
        md += ["## Peer comparison", ""] + [f"- {l}" for l in peers] + [""]
    if checks:
        md += ["## Targets (issues 7 and 13)", "", "| target | measured | |", "|---|---|---|"]
        md += [f"| {t} | {m} | {v} |" for t, m, v in checks] + [""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if legend:
        md += ["## Scenarios", ""] + [f"- {l}" for l in legend] + [""]
    analysis = Path(meta.get("notes_file", ""))
    if analysis.is_file():
        md += ["## Analysis (bench/NOTES.md)", "", analysis.read_text().strip(), ""]
    Path(out_md).write_text("\n".join(md))
    print(f"\nwrote {out_md}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "status":
        cmd_status(argv[1])
    elif len(argv) >= 3 and argv[0] == "run":
        cmd_run(argv[1], argv[2])
    elif len(argv) >= 3 and argv[0] == "summary":
        cmd_summary(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
