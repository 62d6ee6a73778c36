#!/usr/bin/env python3
"""Speculative decoding in `frugal serve`: greedy and sampled requests, prompt lookup and a draft model.

The prompts are bench/speculative_bench.py's (copy-heavy: summarize, rewrite, edit code; open-ended:
chat, story), sent raw to /v1/completions one at a time (a single client: speculation is a latency
tool; above `--draft-sequences` decoding sequences the draft model stands aside). A request's rate
is its completion tokens over its whole time: the prompt is in the prefix cache after a warm-up
request, so its pass is one token (streamed chunks would not do: a step that accepts drafts sends
its tokens in one chunk).

- Prompt lookup: one server with `--lookup 0`; every prompt is sent with `"lookup": 0` and
  `"lookup": N` alternately (which goes first alternates too), --reps times: paired speed-ups.
- Draft model (--draft-model): a server without a draft and one with `--draft DRAFT`, run in turn
  --reps times (the draft cannot be switched off per request); speed-up = median over the reps.
- Modes: greedy (temperature 0: the text must equal plain decoding's, checked) and sampled
  (temperature --temperature, no seed: speculative sampling; the texts differ, the distribution is
  the model's).

Reports decode tokens/s, speed-up and the server's draft counters (/metrics) per prompt, medians
per set; writes serve_speculative.{md,json,png} into --out. A shared machine: compare only within
one run.

usage: bench/serve_speculative_bench.py [--model TARGET.gguf] [--draft-model DRAFT.gguf] [-n 96]
       [--lookup 8] [--reps 3] [--temperature 0.8] [--out DIR]
"""
import argparse
import datetime
import http.client
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import ServerProcess, free_port  # noqa: E402
from speculative_bench import PROMPTS  # noqa: E402  (the same prompts as the run/bench comparison)


class Server:
    """One `frugal serve` (bench/serve_bench.py's ServerProcess starts it and waits for /health)."""

    def __init__(self, args, extra, log_path):
        self.port = free_port()
        cmd = [args.frugal, "serve", "-m", args.model, "--port", str(self.port), "-np", "1", "-c", "2048",
               "-t", str(args.t)] + extra
        self.process = ServerProcess("frugal serve", cmd, self.port, log_path)

    def complete(self, prompt, n, temperature, lookup=None):
        """One completion; returns (text, tokens, tokens/s over the whole request)."""
        body = {"prompt": prompt, "max_tokens": n, "temperature": temperature}
        if lookup is not None:
            body["lookup"] = lookup
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        start = time.perf_counter()
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        seconds = time.perf_counter() - start
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        answer = json.loads(data)
        tokens = answer["usage"]["completion_tokens"]
        return answer["choices"][0]["text"], tokens, tokens / seconds if tokens else None

    def draft_counters(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/metrics")
        values = {}
        for line in conn.getresponse().read().decode().splitlines():
            for name in ("frugal_draft_tokens_total", "frugal_draft_tokens_accepted_total"):
                if line.startswith(name + " "):
                    values[name] = float(line.split()[1])
        return values.get("frugal_draft_tokens_total", 0), values.get("frugal_draft_tokens_accepted_total", 0)

    def stop(self):
        self.process.stop()


def prompts():
    for kind, items in PROMPTS.items():
        for name, text in items:
            yield kind, name, text


def lookup_rows(args, modes):
    server = Server(args, ["--lookup", "0"], os.path.join(args.work, "serve_lookup.log"))
    rows = []
    try:
        for kind, name, text in prompts():
            server.complete(text, 4, 0)  # warm-up: the prompt into the prefix cache
            for mode, temperature in modes:
                plain, spec, same = [], [], True
                before = server.draft_counters()
                for rep in range(args.reps):
                    order = [0, args.lookup] if rep % 2 == 0 else [args.lookup, 0]
                    texts = {}
                    for lookup in order:
                        text_out, _, rate = server.complete(text, args.n, temperature, lookup)
                        (spec if lookup else plain).append(rate)
                        texts[lookup] = text_out
                    if temperature == 0 and texts[0] != texts[args.lookup]:
                        same = False
                after = server.draft_counters()
                rows.append(row(kind, name, "lookup", mode, plain, spec, before, after, same if temperature == 0 else None))
                print(format_row(rows[-1]), flush=True)
    finally:
        server.stop()
    return rows


def draft_rows(args, modes):
    results = {}  # (kind, name, mode) -> {"plain": [...], "spec": [...], texts, counters}
    for rep in range(args.reps):
        order = [False, True] if rep % 2 == 0 else [True, False]
        for with_draft in order:
            extra = ["--draft", args.draft_model, "--draft-p-min", "0"] if with_draft else []
            server = Server(args, extra, os.path.join(args.work, f"serve_draft_{int(with_draft)}.log"))
            try:
                for kind, name, text in prompts():
                    server.complete(text, 4, 0)
                    for mode, temperature in modes:
                        r = results.setdefault((kind, name, mode), {"plain": [], "spec": [], "texts": {}, "drafted": 0, "accepted": 0})
                        before = server.draft_counters()
                        text_out, _, rate = server.complete(text, args.n, temperature)
                        after = server.draft_counters()
                        r["spec" if with_draft else "plain"].append(rate)
                        r["texts"].setdefault(with_draft, set()).add(text_out)
                        r["drafted"] += after[0] - before[0]
                        r["accepted"] += after[1] - before[1]
            finally:
                server.stop()
    rows = []
    for (kind, name, mode), r in results.items():
        same = r["texts"][False] == r["texts"][True] if mode == "greedy" else None
        rows.append(row(kind, name, "draft model", mode, r["plain"], r["spec"], (0, 0), (r["drafted"], r["accepted"]), same))
        print(format_row(rows[-1]), flush=True)
    return rows


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def row(kind, name, drafter, mode, plain, spec, before, after, same):
    drafted, accepted = after[0] - before[0], after[1] - before[1]
    p, s = median(plain), median(spec)
    return {"set": kind, "prompt": name, "drafter": drafter, "mode": mode, "plain_tps": p, "spec_tps": s,
            "speedup": s / p if p and s else None, "acceptance": accepted / drafted if drafted else None,
            "drafted": drafted, "same_as_plain": same, "plain_runs": plain, "spec_runs": spec}


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def format_row(r):
    same = {True: "yes", False: "NO", None: "– (sampled)"}[r["same_as_plain"]]
    return (f"| {r['set']} | {r['prompt']} | {r['drafter']} | {r['mode']} | {fmt(r['plain_tps'], '.1f')} | "
            f"{fmt(r['spec_tps'], '.1f')} | {fmt(r['speedup'], '.2f')}x | {fmt(r['acceptance'], '.2f')} | {same} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    parser.add_argument("--model", default=os.environ.get("FRUGAL_MODEL", os.path.expanduser(
        "~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    parser.add_argument("--draft-model", help="a draft GGUF for the draft-model rows (none: lookup rows only)")
    parser.add_argument("-n", type=int, default=96)
    parser.add_argument("-t", type=int, default=2)
    parser.add_argument("--lookup", type=int, default=8, help="lookup drafts per step")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.8, help="the sampled mode's temperature")
    parser.add_argument("--skip-lookup", action="store_true")
    parser.add_argument("--work", default="/tmp/frugal_serve_speculative_bench")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args()
    for path in [args.frugal, args.model] + ([args.draft_model] if args.draft_model else []):
        if not os.path.exists(path):
            sys.exit(f"serve_speculative_bench: {path} not found")
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    modes = [("greedy", 0.0), ("sampled", args.temperature)]
    header = ["| set | prompt | drafter | mode | plain t/s | speculative t/s | speed-up | acceptance | = plain |",
              "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    rows = ([] if args.skip_lookup else lookup_rows(args, modes)) + (draft_rows(args, modes) if args.draft_model else [])

    summary = []
    for drafter in sorted({r["drafter"] for r in rows}):
        for mode, _ in modes:
            for kind in PROMPTS:
                sel = [r for r in rows if r["drafter"] == drafter and r["mode"] == mode and r["set"] == kind]
                if sel:
                    summary.append({"set": kind, "drafter": drafter, "mode": mode, "prompts": len(sel),
                                    "speedup": median([r["speedup"] for r in sel]),
                                    "acceptance": median([r["acceptance"] for r in sel])})
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    meta = {"date": stamp, "model": os.path.basename(args.model),
            "draft_model": os.path.basename(args.draft_model) if args.draft_model else None, "n": args.n,
            "threads": args.t, "lookup": args.lookup, "temperature": args.temperature, "reps": args.reps,
            "load_average": os.getloadavg()}
    with open(os.path.join(args.out, "serve_speculative.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "rows": rows}, f, indent=1)
    lines = [f"# Speculative decoding in frugal serve: {meta['model']}, {args.n} tokens, {args.t} threads, one client",
             "", f"{stamp}; draft model: {meta['draft_model'] or '–'}; lookup {args.lookup}; sampled = temperature "
             f"{args.temperature}, no seed; {args.reps} repetitions (medians); load average at the end "
             f"{meta['load_average'][0]:.1f}. Tokens/s: completion tokens over the request's time (prompt cached).", "",
             "| set | drafter | mode | prompts | speed-up (median) | acceptance (median) |", "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['set']} | {s['drafter']} | {s['mode']} | {s['prompts']} | {fmt(s['speedup'], '.2f')}x | "
                     f"{fmt(s['acceptance'], '.2f')} |")
    lines += ["", "Per prompt:", ""] + header + [format_row(r) for r in rows]
    with open(os.path.join(args.out, "serve_speculative.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("serve_speculative_bench: matplotlib missing, no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(PROMPTS), figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, PROMPTS):
        sel = [s for s in summary if s["set"] == kind and s["speedup"] is not None]
        ax.bar(range(len(sel)), [s["speedup"] for s in sel],
               color=["tab:blue" if s["mode"] == "greedy" else "tab:orange" for s in sel])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([f"{s['drafter']}\n{s['mode']}" for s in sel], fontsize=8)
        ax.set_title(kind)
    axes[0].set_ylabel("decode speed-up over plain (median)")
    fig.suptitle(f"frugal serve, speculative decoding: {meta['model']}, {args.t} threads, one client")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "serve_speculative.png"), dpi=120)


if __name__ == "__main__":
    main()
