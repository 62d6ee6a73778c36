#!/usr/bin/env python3
"""StreamingLLM's comparison on frugal: PPL and tokens/s against position for a rolling cache
with attention sinks, a plain sliding window, and the sliding window with re-computation.

Runs `frugal perplexity --window W ... -o json` three times (skipped for a variant whose JSON is
already in --out-dir unless --rerun) and plots the trace each run prints: after every batch the
tokens scored, the running PPL and the seconds since the start. From the running PPL r_k after
n_k tokens the summed NLL is n_k ln r_k, so a bin's PPL is exp(dNLL / dn) and its speed dn / dt.

Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks", fig. 3 / sec. 4.1.
"""
import argparse
import json
import math
import os
import subprocess
import sys


def run(args, name, extra):
    path = os.path.join(args.out_dir, f"streaming_{name}.json")
    if os.path.exists(path) and not args.rerun:
        with open(path) as f:
            return json.load(f)
    cmd = [args.frugal, "perplexity", "-m", args.model, "-f", args.text, "--window", str(args.window),
           "--stream-tokens", str(args.tokens), "-t", str(args.threads), "-o", "json"] + extra
    print("+", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    data["command"] = " ".join(cmd[1:])
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    return data


def bins(data, width):
    """(bin centre, PPL of the bin, tokens/s in the bin, batches/s in the bin) over bins of about
    `width` tokens."""
    tr = data["trace"]
    points = [(0, 0.0, 0.0)] + [(n, n * math.log(p), s) for n, p, s in zip(tr["scored"], tr["running_ppl"], tr["seconds"])]
    out, start, k0 = [], points[0], 0
    for k, pt in enumerate(points[1:], 1):
        if pt[0] - start[0] >= width or k == len(points) - 1:
            dn, dt = pt[0] - start[0], max(pt[2] - start[2], 1e-9)
            if dn > 0:
                out.append(((pt[0] + start[0]) / 2, math.exp((pt[1] - start[1]) / dn), dn / dt, (k - k0) / dt))
            start, k0 = pt, k
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frugal", default="build/frugal")
    ap.add_argument("--model", default=os.environ.get("FRUGAL_MODEL", ""))
    ap.add_argument("--text", default="../shared/data/wikitext2-test.txt")
    ap.add_argument("--tokens", type=int, default=3000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32, help="tokens per forward pass of the rolling cache")
    ap.add_argument("--stride", type=int, default=32, help="tokens scored per recomputation (1 = exact)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", type=int, default=250, help="tokens per plotted bin")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--rerun", action="store_true")
    args = ap.parse_args()

    runs = {
        f"sinks ({args.sinks}) + window": run(args, "sinks", ["--sinks", str(args.sinks), "--stream-batch", str(args.batch)]),
        "plain window": run(args, "window", ["--sinks", "0", "--stream-batch", str(args.batch)]),
        f"window with re-computation (stride {args.stride})": run(args, "recompute", ["--recompute-stride", str(args.stride)]),
    }
    rows = []
    for label, data in runs.items():
        b = bins(data, args.bin)
        rows.append((label, data, b))
        rec = data.get("recompute_stride", 0)
        tr = data["trace"]
        # Every recomputation is one pass over a full window whatever the stride, so the exact
        # (stride 1) form runs at one token per pass: passes per second past the first window.
        full = [i for i, n in enumerate(tr["scored"]) if n >= args.window]
        extra = ""
        if rec and len(full) > 1:
            i0, i1 = full[0], full[-1]
            extra = f", exact form ~{(i1 - i0) / (tr['seconds'][i1] - tr['seconds'][i0]):.1f} tokens/s"
        print(f"{label}: PPL {data['ppl']:.3f} +/- {data['ppl_error']:.3f}, {data['tokens_scored'] / data['seconds']:.1f} tokens/s, "
              f"KV {data.get('kv_cache_mib', float('nan')):.2f} MiB{extra}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for label, data, b in rows:
        line = ax1.plot([r[0] for r in b], [r[1] for r in b], marker="o", ms=3, label=label)[0]
        ax2.plot([r[0] for r in b], [r[2] for r in b], marker="o", ms=3, label=label, color=line.get_color())
        if data.get("recompute_stride", 0) > 1:
            # One pass over a full window per recomputation: the exact form scores one token per pass.
            ax2.plot([r[0] for r in b], [r[3] for r in b], ls="--", color=line.get_color(),
                     label="re-computation, exact (stride 1): passes/s")
    ax1.set_yscale("log")
    ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    ax1.set_ylabel(f"PPL per {args.bin}-token bin")
    ax1.axvline(args.window, color="grey", lw=0.8, ls=":")
    ax1.legend()
    ax1.set_title(f"SmolLM2-135M, WikiText-2 test as one stream, window {args.window}")
    ax2.set_ylabel("tokens/s (scored)")
    ax2.set_xlabel("position in the stream (tokens)")
    ax2.axvline(args.window, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    path = os.path.join(args.out_dir, "streaming_ppl_speed.png")
    fig.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
