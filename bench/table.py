#!/usr/bin/env python3
"""Medians, ratios and targets from bench/compare.sh's results.

Usage: table.py RESULTS SUMMARY
  RESULTS  every run's line ("round=N name=X key=value ..."; '#' lines and
           lines with error= are ignored)
  SUMMARY  the same lines folded by the anchors' `summarize.py --group`
           (one line per name: key=median key_min=… key_max=…)

Medians come from SUMMARY; keys that summarize.py does not fold (p999_us,
allocations, …) are folded here the same way (median over the runs).
Prints Markdown: the comparisons with ratios, reign's own figures, and the
targets with met / missed.
"""
import statistics
import sys


def parse(text):
    out = {}
    for tok in text.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def load_runs(path):
    runs = {}
    for line in open(path):
        i = line.find("name=")
        if line.startswith("#") or i < 0:
            continue
        row = parse(line[i:])
        if "error" in row:
            continue
        runs.setdefault(row["name"], []).append(row)
    return runs


def load_summary(path):
    out = {}
    for line in open(path):
        row = parse(line)
        if "name" in row and "error" not in row:
            out[row["name"]] = row
    return out


class Figures:
    def __init__(self, runs, summary):
        self.runs = runs
        self.summary = summary

    def get(self, name, key):
        """(median, min, max, runs) of key for name, or None. Computed from
        the runs themselves where they have the key (summarize.py rounds to
        one decimal, which turns 0.031 s into 0.0), else from SUMMARY."""
        vals = [float(r[key]) for r in self.runs.get(name, []) if key in r]
        if vals:
            return statistics.median(vals), min(vals), max(vals), len(vals)
        s = self.summary.get(name, {})
        if key in s:
            med = float(s[key])
            lo = float(s.get(key + "_min", med))
            hi = float(s.get(key + "_max", med))
            return med, lo, hi, int(s.get("runs", 1))
        return None

    def med(self, name, key):
        g = self.get(name, key)
        return None if g is None else g[0]


def fmt(v):
    if v is None:
        return "—"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if v == 0:
        return "0"
    return f"{v:.3g}"


def spread(g):
    if g is None:
        return "—"
    med, lo, hi, n = g
    return f"{fmt(med)} ({fmt(lo)}–{fmt(hi)}, n={n})"


# (comparison, our name, key, reference name, key, better)
PAIRS = [
    ("one hop in one process, µs/op, vs Go reign (BenchmarkMinimalMessageSend)", "reign_hop", "us_per_op", "goreign_hop", "us_per_op", "lower"),
    ("one hop in one process, µs/op, vs raw TCP one-way hop", "reign_hop", "us_per_op", "tcp_hop", "us_per_op", "lower"),
    ("one-way 64 B msg/s, 2 processes", "reign_oneway_64", "msgs_per_s", "erlang_dist_oneway", "msgs_per_s", "higher"),
    ("one-way 64 B msg/s vs NATS pub/sub (lossless)", "reign_oneway_64", "msgs_per_s", "nats_pubsub", "msgs_per_s", "higher"),
    ("one-way 64 B raw bytes msg/s vs NATS pub/sub (lossless)", "reign_oneway_raw_64", "msgs_per_s", "nats_pubsub", "msgs_per_s", "higher"),
    ("one-way 64 B raw bytes in batches of 64 msg/s vs NATS pub/sub (lossless)", "reign_oneway_batch_64", "msgs_per_s", "nats_pubsub", "msgs_per_s", "higher"),
    ("one-way 64 B flood: sender peak RSS KiB", "reign_oneway_64", "peak_rss_kb_a", "erlang_dist_oneway", "peak_rss_kb_a", "lower"),
    ("one-way 64 B flood: receiver peak RSS KiB", "reign_oneway_64", "peak_rss_kb_b", "erlang_dist_oneway", "peak_rss_kb_b", "lower"),
    ("round trip 64 B p50 µs vs raw TCP", "reign_pingpong", "p50_us", "tcp_pingpong", "p50_us", "lower"),
    ("round trip 64 B p50 µs vs Erlang", "reign_pingpong", "p50_us", "erlang_dist_pingpong", "p50_us", "lower"),
    ("round trip 64 B p99 µs vs Erlang", "reign_pingpong", "p99_us", "erlang_dist_pingpong", "p99_us", "lower"),
    ("round trip 64 B mean µs vs Erlang", "reign_pingpong", "mean_us", "erlang_dist_pingpong", "mean_us", "lower"),
    ("request/reply 64 B p50 µs vs NATS", "reign_reqrep", "p50_us", "nats_reqrep", "p50_us", "lower"),
    ("request/reply 64 B p99 µs vs NATS", "reign_reqrep", "p99_us", "nats_reqrep", "p99_us", "lower"),
    ("request/reply p50 µs under a 64 B flood on the same link vs unloaded", "reign_reqrep_loaded", "p50_us", "reign_reqrep_unloaded", "p50_us", "lower"),
    ("local 1→1 msg/s vs tokio mpsc", "reign_local_1to1", "msgs_per_s", "tokio_mpsc_1to1", "msgs_per_s", "higher"),
    ("local 2→1 msg/s vs tokio mpsc", "reign_local_2to1", "msgs_per_s", "tokio_mpsc_2to1", "msgs_per_s", "higher"),
    ("local 1→1 msg/s vs Erlang local", "reign_local_1to1", "msgs_per_s", "erlang_local_oneway", "msgs_per_s", "higher"),
    ("pub/sub 64 B, 1 subscriber, delivered msg/s vs NATS pub/sub 64 B (lossless)", "reign_pubsub_1", "deliveries_per_s", "nats_pubsub", "msgs_per_s", "higher"),
    ("register/sync/lookup/unregister µs/op (2 nodes) vs Go reign's register/sync/close (local sync)", "reign_registry_cycle", "us_per_op", "goreign_registry_cycle", "us_per_op", "lower"),
    ("register/sync/lookup/unregister p50 µs vs a round trip between the same two nodes", "reign_registry_cycle", "p50_us", "reign_cycle_rtt", "p50_us", "lower"),
    ("10,000 names visible on the peer(s), s, vs Erlang global", "reign_registry", "visible_on_b_secs", "erlang_global_register", "visible_on_b_secs", "lower"),
]

OURS = [
    ("reign_hop", ["us_per_op", "p50_us", "p99_us", "p999_us"]),
    ("tcp_hop", ["us_per_op", "p50_us", "p99_us", "p999_us"]),
    ("goreign_hop", ["us_per_op"]),
    ("goreign_registry_cycle", ["us_per_op"]),
    ("reign_oneway_64", ["msgs_per_s", "MB_per_s", "peak_rss_kb_a", "peak_rss_kb_b", "full_retries"]),
    ("reign_oneway_raw_64", ["msgs_per_s", "MB_per_s", "peak_rss_kb_a", "peak_rss_kb_b"]),
    ("reign_oneway_batch_64", ["msgs_per_s", "MB_per_s", "peak_rss_kb_a", "peak_rss_kb_b"]),
    ("reign_oneway_1024", ["msgs_per_s", "MB_per_s", "peak_rss_kb_a", "peak_rss_kb_b"]),
    ("reign_oneway_4096", ["msgs_per_s", "MB_per_s", "peak_rss_kb_a", "peak_rss_kb_b"]),
    ("reign_oneway_65536", ["msgs_per_s", "MB_per_s", "peak_rss_kb_a", "peak_rss_kb_b"]),
    ("reign_pingpong", ["p50_us", "p99_us", "p999_us", "mean_us"]),
    ("tcp_pingpong", ["p50_us", "p99_us", "p999_us", "mean_us"]),
    ("reign_reqrep", ["p50_us", "p99_us", "p999_us", "mean_us"]),
    ("reign_reqrep_unloaded", ["p50_us", "p99_us", "p999_us"]),
    ("reign_reqrep_loaded", ["p50_us", "p99_us", "p999_us", "failed", "flood_msgs_per_s"]),
    ("reign_local_1to1", ["msgs_per_s"]),
    ("tokio_mpsc_1to1", ["msgs_per_s"]),
    ("reign_local_2to1", ["msgs_per_s"]),
    ("tokio_mpsc_2to1", ["msgs_per_s"]),
    ("reign_pubsub_1", ["msgs_per_s", "deliveries_per_s", "dropped"]),
    ("reign_pubsub_10", ["msgs_per_s", "deliveries_per_s", "dropped"]),
    ("reign_pubsub_100", ["msgs_per_s", "deliveries_per_s", "dropped"]),
    ("reign_tunnel", ["MB_per_s"]),
    ("reign_registry", ["register_secs", "visible_on_b_secs"]),
    ("reign_registry_cycle", ["us_per_op", "p50_us", "p99_us", "p999_us", "round_trips_p50", "round_trips_mean"]),
    ("reign_cycle_rtt", ["us_per_op", "p50_us", "p99_us", "p999_us"]),
    ("reign_alloc", ["local_allocs_per_msg", "remote_allocs_per_msg"]),
    ("erlang_global_register", ["register_secs", "visible_on_b_secs"]),
    ("erlang_dist_oneway", ["msgs_per_s", "peak_rss_kb_a", "peak_rss_kb_b"]),
    ("erlang_dist_pingpong", ["p50_us", "p99_us", "mean_us"]),
    ("erlang_local_oneway", ["msgs_per_s"]),
    ("nats_pubsub", ["msgs_per_s", "server_peak_rss_kb"]),
    ("nats_reqrep", ["p50_us", "p99_us", "mean_us"]),
]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratio_text(r):
    if r is None:
        return "—"
    if r < 0.1:
        return f"{r:.2g}x (1/{1 / r:,.0f})"
    return f"{r:.2f}x"


def targets(f):
    """(target, figure, met?) lines."""
    out = []

    def add(what, value_text, ok):
        verdict = "—" if ok is None else ("**met**" if ok else "**missed**")
        out.append((what, value_text, verdict))

    hop = f.med("reign_hop", "us_per_op")
    r = ratio(hop, f.med("goreign_hop", "us_per_op"))
    add("one hop in one process ≤ 0.67x Go reign (issue 17)", f"{r:.2f}x" if r else "—",
        None if r is None else r <= 0.67)
    r = ratio(hop, f.med("tcp_hop", "us_per_op"))
    add("… ≤ 1.1x a raw loopback TCP one-way hop", f"{r:.2f}x" if r else "—",
        None if r is None else r <= 1.1)
    r = ratio(f.med("reign_reqrep", "p50_us"), f.med("nats_reqrep", "p50_us"))
    add("request/reply p50 ≤ 0.5x NATS (issue 17)", f"{r:.2f}x" if r else "—",
        None if r is None else r <= 0.5)
    one = f.med("reign_oneway_64", "msgs_per_s")
    add("one-way 64 B over mTLS ≥ 5M msg/s", fmt(one) + " msg/s" if one else "—",
        None if one is None else one >= 5e6)
    r = ratio(one, f.med("erlang_dist_oneway", "msgs_per_s"))
    add("… ≥ 10x Erlang distribution", f"{r:.2f}x" if r else "—", None if r is None else r >= 10)
    r = ratio(one, f.med("nats_pubsub", "msgs_per_s"))
    add("… ≥ 2x NATS pub/sub", f"{r:.2f}x" if r else "—", None if r is None else r >= 2)
    r = ratio(f.med("reign_pingpong", "p50_us"), f.med("tcp_pingpong", "p50_us"))
    add("round trip p50 ≤ 1.15x raw TCP ping-pong", f"{r:.2f}x" if r else "—",
        None if r is None else r <= 1.15)
    for shape in ("1to1", "2to1"):
        r = ratio(f.med(f"tokio_mpsc_{shape}", "msgs_per_s"), f.med(f"reign_local_{shape}", "msgs_per_s"))
        add(f"local {shape.replace('to', '→')}: tokio mpsc ≤ 1.5x reign", f"mpsc is {r:.2f}x reign" if r else "—",
            None if r is None else r <= 1.5)
    r = ratio(f.med("reign_local_1to1", "msgs_per_s"), f.med("erlang_local_oneway", "msgs_per_s"))
    add("local ≥ 2x Erlang local", f"{r:.2f}x" if r else "—", None if r is None else r >= 2)
    r = ratio(f.med("reign_registry_cycle", "p50_us"), f.med("reign_cycle_rtt", "p50_us"))
    add("register/sync/lookup/unregister ≤ 2 round trips (issue 17)", f"{r:.2f} round trips at p50" if r else "—",
        None if r is None else r <= 2)
    v = f.med("reign_registry", "visible_on_b_secs")
    add("10,000 names visible cluster-wide ≤ 50 ms", f"{v * 1e3:.1f} ms" if v is not None else "—",
        None if v is None else v <= 0.05)
    a = f.med("reign_oneway_64", "peak_rss_kb_a")
    b = f.med("reign_oneway_64", "peak_rss_kb_b")
    if a is not None and b is not None:
        worst = max(a, b)
        add("peak RSS of a node under a one-way 64 B flood ≤ 64 MB",
            f"sender {a / 1024:.0f} MiB, receiver {b / 1024:.0f} MiB", worst <= 64 * 1024)
    return out


def main():
    runs = load_runs(sys.argv[1])
    summary = load_summary(sys.argv[2]) if len(sys.argv) > 2 else {}
    f = Figures(runs, summary)

    print("| comparison | reign (median) | reference (median) | reign / reference | better when |")
    print("|---|---|---|---|---|")
    for what, ours, okey, ref, rkey, better in PAIRS:
        a, b = f.med(ours, okey), f.med(ref, rkey)
        r = ratio(a, b)
        print(f"| {what} | {fmt(a)} | {fmt(b)} ({ref}) | {ratio_text(r)} | {better} |")
    print()
    print("| scenario | key | median (min–max, runs) |")
    print("|---|---|---|")
    for name, keys in OURS:
        for key in keys:
            g = f.get(name, key)
            if g is not None:
                print(f"| {name} | {key} | {spread(g)} |")
    print()
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for what, value, verdict in targets(f):
        print(f"| {what} | {value} | {verdict} |")


if __name__ == "__main__":
    main()
