#!/usr/bin/env python3
"""Medians and ratios from bench/compare.sh's results file.

Usage: table.py RESULTS
Each line: round=N name=X key=value ...; lines with error= are ignored.
Prints a Markdown table: our figure, the reference's, and the ratio, for
every pair both sides measured.
"""
import statistics
import sys


def parse(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def load(path):
    groups = {}
    for line in open(path):
        row = parse(line)
        if "name" not in row or "error" in row:
            continue
        name = row["name"]
        if name == "reign_oneway":
            name = f"reign_oneway_{row.get('payload_b', '?')}"
        groups.setdefault(name, []).append(row)
    return groups


def median(groups, name, key):
    vals = [float(r[key]) for r in groups.get(name, []) if key in r]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


# (what, our scenario, key, reference scenario, key, higher_is_better)
PAIRS = [
    ("one-way 64 B msg/s vs Erlang dist", "reign_oneway_64", "msgs_per_s", "erlang_dist_oneway", "msgs_per_s", True),
    ("one-way 64 B msg/s vs NATS pub/sub", "reign_oneway_64", "msgs_per_s", "nats_pubsub", "msgs_per_s", True),
    ("pub/sub 1 subscriber msg/s vs NATS pub/sub", "reign_pubsub_1", "msgs_per_s", "nats_pubsub", "msgs_per_s", True),
    ("round trip p50 µs vs raw TCP", "reign_pingpong", "p50_us", "tcp_pingpong", "p50_us", False),
    ("round trip p50 µs vs Erlang dist", "reign_pingpong", "p50_us", "erlang_dist_pingpong", "p50_us", False),
    ("round trip p99 µs vs Erlang dist", "reign_pingpong", "p99_us", "erlang_dist_pingpong", "p99_us", False),
    ("request/reply p50 µs vs NATS", "reign_reqrep", "p50_us", "nats_reqrep", "p50_us", False),
    ("request/reply p99 µs vs NATS", "reign_reqrep", "p99_us", "nats_reqrep", "p99_us", False),
    ("local 1→1 msg/s vs tokio mpsc", "reign_local_1to1", "msgs_per_s", "tokio_mpsc_1to1", "msgs_per_s", True),
    ("local 2→1 msg/s vs tokio mpsc", "reign_local_2to1", "msgs_per_s", "tokio_mpsc_2to1", "msgs_per_s", True),
    ("local 1→1 msg/s vs Erlang local", "reign_local_1to1", "msgs_per_s", "erlang_local_oneway", "msgs_per_s", True),
    ("10,000 names visible (s) vs Erlang global", "reign_registry", "visible_on_b_secs", "erlang_global_register", "visible_on_b_secs", False),
    ("receiver peak RSS KiB, one-way flood, vs Erlang", "reign_oneway_64", "peak_rss_kb_b", "erlang_dist_oneway", "peak_rss_kb_b", False),
]

OURS = [
    ("reign_oneway_64", ["msgs_per_s", "MB_per_s", "peak_rss_kb_a", "peak_rss_kb_b"]),
    ("reign_oneway_1024", ["msgs_per_s", "MB_per_s", "peak_rss_kb_b"]),
    ("reign_oneway_65536", ["msgs_per_s", "MB_per_s", "peak_rss_kb_b"]),
    ("reign_pingpong", ["p50_us", "p99_us", "p999_us"]),
    ("reign_reqrep", ["p50_us", "p99_us", "p999_us"]),
    ("reign_pubsub_1", ["msgs_per_s", "deliveries_per_s", "dropped"]),
    ("reign_pubsub_10", ["msgs_per_s", "deliveries_per_s", "dropped"]),
    ("reign_pubsub_100", ["msgs_per_s", "deliveries_per_s", "dropped"]),
    ("reign_tunnel", ["MB_per_s"]),
    ("reign_registry", ["register_secs", "visible_on_b_secs"]),
    ("reign_local_1to1", ["msgs_per_s"]),
    ("reign_local_2to1", ["msgs_per_s"]),
    ("reign_alloc", ["local_allocs_per_msg", "remote_allocs_per_msg"]),
    ("tcp_pingpong", ["p50_us", "p99_us"]),
]


def fmt(v):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def main():
    groups = load(sys.argv[1])
    print("| comparison | reign | reference | ratio (reign better when > 1) | runs |")
    print("|---|---|---|---|---|")
    for what, ours, okey, ref, rkey, higher in PAIRS:
        a, na = median(groups, ours, okey)
        b, nb = median(groups, ref, rkey)
        if a is None or b is None or a == 0 or b == 0:
            ratio = "—"
        else:
            ratio = f"{(a / b) if higher else (b / a):.2f}x"
        print(f"| {what} | {fmt(a)} | {fmt(b)} | {ratio} | {na}/{nb} |")
    print()
    print("| reign scenario | medians |")
    print("|---|---|")
    for name, keys in OURS:
        parts = []
        for key in keys:
            v, n = median(groups, name, key)
            if v is not None:
                parts.append(f"{key}={fmt(v)}")
        if parts:
            print(f"| {name} | {' '.join(parts)} |")


if __name__ == "__main__":
    main()
