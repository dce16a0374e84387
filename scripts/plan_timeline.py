#!/usr/bin/env python3
"""Draws a plan's Chrome trace (`weft compile --trace FILE`) as a timeline picture.

Perfetto (ui.perfetto.dev) opens the same trace interactively; this script makes a
static picture of it for the README, laid out the way Perfetto lays it out: one
process per rank, one track per stream, a box per task, arrows for events.

    python3 scripts/plan_timeline.py TRACE.json OUT.png [--ranks N] [--from US] [--to US]

Needs matplotlib.
"""

import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("out")
    ap.add_argument("--ranks", type=int, default=2, help="ranks to draw (from rank 0)")
    ap.add_argument("--from", dest="t0", type=float, default=None, help="window start, µs")
    ap.add_argument("--to", dest="t1", type=float, default=None, help="window end, µs")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    with open(args.trace) as f:
        doc = json.load(f)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    boxes = [e for e in events if e.get("ph") == "X" and e["pid"] < args.ranks]
    if not boxes:
        sys.exit(f"{args.trace}: no task events for ranks < {args.ranks}")
    t0 = args.t0 if args.t0 is not None else min(e["ts"] for e in boxes)
    t1 = args.t1 if args.t1 is not None else max(e["ts"] + e["dur"] for e in boxes)
    boxes = [e for e in boxes if e["ts"] + e["dur"] >= t0 and e["ts"] <= t1]
    tracks = sorted({(e["pid"], e["tid"]) for e in boxes})
    row = {t: i for i, t in enumerate(tracks)}

    def colour(e):
        kernel = str(e.get("args", {}).get("kernel", ""))
        if kernel.startswith("pipelined"):
            return "#8e44ad"  # GEMM fused with a collective
        if kernel.startswith("nccl") or e.get("args", {}).get("collective"):
            return "#e4572e"
        if kernel.startswith("gemm"):
            return "#2e86ab"
        if kernel.startswith("view"):
            return "#bbbbbb"
        return "#7fb069"  # memory-bound

    fig, ax = plt.subplots(figsize=(14, 0.55 * len(tracks) + 1.4), dpi=110)
    for e in boxes:
        y = row[(e["pid"], e["tid"])]
        x = max(e["ts"], t0)
        w = min(e["ts"] + e["dur"], t1) - x
        ax.add_patch(Rectangle((x, y - 0.38), max(w, 0.0), 0.76, facecolor=colour(e), edgecolor="white", linewidth=0.3))
        if w > (t1 - t0) / 40:
            ax.text(x + w / 2, y, e["name"][:24], ha="center", va="center", fontsize=6, color="white", clip_on=True)
    # Flow arrows: an "s" (recorder's end) and an "f" (waiter's start) share an id.
    starts = {}
    for e in events:
        if e.get("ph") == "s":
            starts[(e["id"], e["pid"])] = e
    for e in events:
        if e.get("ph") != "f":
            continue
        s = starts.get((e["id"], e["pid"]))
        if s is None or (s["pid"], s["tid"]) not in row or (e["pid"], e["tid"]) not in row:
            continue
        if not (t0 <= s["ts"] <= t1 and t0 <= e["ts"] <= t1):
            continue
        ax.add_patch(FancyArrowPatch((s["ts"], row[(s["pid"], s["tid"])]), (e["ts"], row[(e["pid"], e["tid"])]),
                                     arrowstyle="-|>", mutation_scale=6, color="#333333", linewidth=0.5, alpha=0.6))
    from matplotlib.patches import Patch

    legend = [("GEMM", "#2e86ab"), ("memory-bound", "#7fb069"), ("collective", "#e4572e"),
              ("GEMM + collective, pipelined", "#8e44ad")]
    ax.legend(handles=[Patch(facecolor=c, label=l) for l, c in legend], loc="upper center",
              bbox_to_anchor=(0.5, -0.22), ncol=4, fontsize=8, frameon=False)
    ax.set_xlim(t0, t1)
    ax.set_ylim(len(tracks) - 0.5, -0.5)
    ax.set_yticks(range(len(tracks)))
    ax.set_yticklabels([f"rank {p} · {names.get((p, t), f'stream {t}')}" for p, t in tracks], fontsize=8)
    ax.set_xlabel("predicted time (µs)")
    ax.set_title(args.title or args.trace, fontsize=9)
    ax.grid(axis="x", linewidth=0.3, alpha=0.5)
    fig.tight_layout()
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
