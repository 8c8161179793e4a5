#!/usr/bin/env python3
"""Turns `cargo bench` (criterion) output on stdin into a Markdown table: bench, median time,
median throughput. Benches named `group/job/ferrite: ...` and `group/job/fastest: ...` also
get a second table: Ferrite's path as a fraction of the fastest crate's speed, same run."""
import re
import sys

rows = []
name, in_change = None, False
for line in sys.stdin:
    line = line.rstrip("\n")
    head = re.match(r"^(\S[^\[]*?)\s{2,}time:\s+\[(.*?)\]", line) or re.match(r"^(\S[^\[]*?)\s+time:\s+\[(.*?)\]", line)
    if head:
        name, in_change = head.group(1).strip(), False
        t = head.group(2).split()
        rows.append([name, f"{t[2]} {t[3]}", ""])
        continue
    if line and not line[0].isspace() and not line.startswith(("Found", "Benchmarking", "Gnuplot", "Running", "Warning", "WARNING")):
        name, in_change = line.strip(), False
        continue
    if line.strip() == "change:":
        in_change = True
        continue
    if in_change or name is None:
        continue
    t = re.match(r"^\s+time:\s+\[(.*?)\]", line)
    if t:
        v = t.group(1).split()
        rows.append([name, f"{v[2]} {v[3]}", ""])
        continue
    thr = re.match(r"^\s+thrpt:\s+\[(.*?)\]", line)
    if thr and rows and rows[-1][0] == name:
        v = thr.group(1).split()
        rows[-1][2] = f"{v[2]} {v[3]}"
print("| bench | time (median) | throughput (median) |")
print("|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} |")

UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(cell):
    value, unit = cell.split()
    return float(value) * UNITS[unit]


pairs = {}
for r in rows:
    m = re.match(r"^(.*)/(ferrite|fastest): (.*)$", r[0])
    if m:
        pairs.setdefault(m.group(1), {})[m.group(2)] = (m.group(3), seconds(r[1]))
complete = {job: p for job, p in pairs.items() if len(p) == 2}
if complete:
    print()
    print("| job | Ferrite's path | fastest crate | Ferrite / fastest (speed) |")
    print("|---|---|---|---|")
    for job, p in complete.items():
        (ours, t_ours), (theirs, t_theirs) = p["ferrite"], p["fastest"]
        print(f"| {job.split('/', 1)[-1]} | {ours} | {theirs} | {t_theirs / t_ours:.0%} |")
