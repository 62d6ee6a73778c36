#!/usr/bin/env python3
"""Speculative decoding benchmark: frugal's drafters vs plain decoding vs llama.cpp's tools.

Prompt sets: copy-heavy (summarize / rewrite a given paragraph, edit given code: the answer
quotes the input) and open-ended (chat, story). For every prompt, greedy decoding (--temp 0) of
N tokens on the same GGUF file and threads:
  frugal run --draft ngram | self:L | DRAFT.gguf  --draft-compare   (plain greedy before and after, same
                                                                     process: a paired speed-up)
  llama.cpp: llama-simple (plain), llama-lookup (n-gram), llama-speculative and
             llama-speculative-simple (draft model DRAFT.gguf).
DRAFT.gguf defaults to a frugal-compressed copy of the target: `frugal prune --method layers`
(half the blocks dropped, the rest as stored), made once into --work. Reports acceptance rate,
mean accepted length (tokens per verification), tokens/s and speed-up over plain decoding of the
same tool, medians over the prompts of each set; writes md + json + a plot into --out.

The machine these numbers come from may be shared: tokens/s are noisy; speed-ups are paired
(plain decoding measured right after, same process for frugal) and medians over prompts.

usage: bench/speculative_bench.py [--frugal build/frugal] [--peer-bin DIR] [-n 96] [-t 2] [--skip-peer]
       [--peer-timeout 120] [--reps 3] [--model TARGET.gguf] [--draft-model DRAFT.gguf] [--draft-p-min 0] [--out DIR]
A compressed self-draft for an uncompressed target: --model the F16 copy (frugal quantize --preset F16
--embedding-format f16), --draft-model the Q4_1 file it came from (or a 2/3-bit copy).
Every tool run has a timeout (--peer-timeout for llama.cpp's, --frugal-timeout for frugal's): a run
past it is killed and its row says so, so the benchmark always ends.
"""
import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PARAGRAPH = (
    "The city council met on Tuesday evening to discuss the proposed expansion of the public library. "
    "After two hours of debate, the members voted seven to two in favour of the plan, which adds a new "
    "reading room, a children's section and longer opening hours on weekends. The project will cost "
    "about four million dollars and is expected to be finished by the end of next year.")
CODE = '''def total_price(items, tax_rate):
    total = 0
    for item in items:
        total = total + item.price * item.quantity
    total = total + total * tax_rate
    return total
'''


def chat(user):
    # SmolLM2-Instruct's ChatML turn, written out so every tool sees the same raw prompt.
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


PROMPTS = {
    "copy-heavy": [
        ("summarize", chat("Summarize this paragraph in two sentences, reusing its words:\n\n" + PARAGRAPH)),
        ("rewrite", chat("Rewrite this paragraph in the past perfect tense, changing nothing else:\n\n" + PARAGRAPH)),
        ("edit-code", chat("Rename the variable `total` to `amount` in this Python function and show the whole "
                           "function:\n\n" + CODE)),
    ],
    "open-ended": [
        ("chat", chat("What are three good habits for staying healthy while working from home?")),
        ("story", chat("Write a short story about a lighthouse keeper who finds a message in a bottle.")),
    ],
}


def run(cmd, timeout=900):
    # A tool that crawls (llama-speculative with a useless draft: < 0.5 t/s) must not hang the
    # benchmark: past the timeout its whole process group is killed (a wrapper script's children
    # too) and TimeoutExpired goes to the caller, which records the row as timed out.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-1500:]}")
    return out, err


def frugal_run(args, prompt, draft):
    _, err = run([args.frugal, "run", "-m", args.model, "-p", prompt, "-n", str(args.n), "-t", str(args.t), "--temp", "0",
                  "-c", "1024", "--draft", draft, "--draft-max", str(args.draft_max), "--draft-p-min", str(args.draft_p_min),
                  "--draft-compare"],
                 timeout=args.frugal_timeout)
    gen = re.search(r"generation: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s\)", err)
    spec = re.search(r"acceptance ([\d.]+)% \((\d+) of (\d+) drafted\), ([\d.]+) tokens per verification", err)
    plain = re.search(r"plain greedy: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s[;)]", err)
    same = "outputs identical: yes" in err
    return {"tokens": int(gen.group(1)), "tps": float(gen.group(3)), "acceptance": float(spec.group(1)) / 100,
            "accepted_length": float(spec.group(4)), "plain_tps": float(plain.group(3)), "identical": same}


def peer_speed(err):
    m = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) s(?:econds)?, speed:\s+([\d.]+) t/s", err)
    return float(m.group(3)) if m else None


def peer_run(args, tool, prompt):
    b = args.peer_bin
    common = ["-m", args.model, "-n", str(args.n), "-t", str(args.t), "--temp", "0", "-c", "1024"]
    if tool == "llama-simple":
        # llama-simple: greedy, prompt as the last argument, speed on its "decoded" line (threads:
        # its default, the machine's cores).
        _, err = run([os.path.join(b, tool), "-m", args.model, "-n", str(args.n), prompt], timeout=args.peer_timeout)
        return {"tps": peer_speed(err)}
    if tool == "llama-lookup":
        cmd = [os.path.join(b, tool)] + common + ["-p", prompt, "--spec-draft-n-max", str(args.draft_max)]
    else:
        cmd = [os.path.join(b, tool)] + common + ["-p", prompt, "-md", args.draft_model, "-td", str(args.t),
                                                   "--spec-draft-n-max", str(args.draft_max), "--draft-p-min", str(args.draft_p_min)]
        if tool == "llama-speculative-simple":
            cmd += ["--spec-type", "draft-simple"]
    _, err = run(cmd, timeout=args.peer_timeout)
    out = {"tps": peer_speed(err)}
    drafted = re.search(r"n_drafted\s*=\s*(\d+)", err)
    accepted = re.search(r"n_accept\s*=\s*(\d+)", err)
    if drafted and accepted and int(drafted.group(1)) > 0:
        out["acceptance"] = int(accepted.group(1)) / int(drafted.group(1))
    return out


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    parser.add_argument("--model", default=os.path.expanduser("~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--draft-model", help="draft GGUF (default: the target with half its layers dropped by frugal prune)")
    parser.add_argument("--self-layers", type=int, default=12, help="early-exit self-draft: blocks the draft runs")
    parser.add_argument("--peer-bin", default=os.environ.get("FRUGAL_PEER_BIN", ""))
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--peer-prompts", default="", help="comma-separated prompt names llama.cpp runs (default: all)")
    parser.add_argument("-n", type=int, default=96)
    parser.add_argument("-t", type=int, default=2)
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--draft-p-min", type=float, default=0.0, help="both tools stop drafting below this draft probability")
    parser.add_argument("--no-self", action="store_true", help="leave out the early-exit self-draft (a target that is not the draft's family)")
    parser.add_argument("--peer-timeout", type=float, default=120,
                        help="seconds one llama.cpp tool run may take before it is killed and recorded as timed out")
    parser.add_argument("--frugal-timeout", type=float, default=300, help="seconds one frugal run may take")
    parser.add_argument("--reps", type=int, default=1, help="frugal runs per prompt and drafter (the median speed-up is kept)")
    parser.add_argument("--work", default="/tmp/frugal_speculative_bench")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if not args.draft_model:
        args.draft_model = os.path.join(args.work, "draft_layers50.gguf")
        if not os.path.exists(args.draft_model):
            run([args.frugal, "prune", "-m", args.model, "-o", args.draft_model, "--method", "layers", "--sparsity", "0.5",
                 "-t", str(args.t)])

    drafters = {"lookup": "ngram", f"self:{args.self_layers}": f"self:{args.self_layers}", "draft model": args.draft_model}
    if args.no_self:
        del drafters[f"self:{args.self_layers}"]
    peer_tools = [] if args.skip_peer or not args.peer_bin else ["llama-simple", "llama-lookup", "llama-speculative",
                                                                 "llama-speculative-simple"]
    rows = []
    for kind, prompts in PROMPTS.items():
        for name, prompt in prompts:
            for label, draft in drafters.items():
                runs = []
                for _ in range(args.reps):
                    try:
                        runs.append(frugal_run(args, prompt, draft))
                    except Exception as e:  # noqa: BLE001 - keep the rest of the table
                        print(f"speculative_bench: frugal {label} on {name}: {e}", file=sys.stderr)
                if not runs:
                    continue
                # The run with the median paired speed-up (each run times plain decoding right after).
                runs.sort(key=lambda x: x["tps"] / x["plain_tps"])
                r = dict(runs[len(runs) // 2])
                r["identical"] = all(x["identical"] for x in runs)
                r["reps"] = len(runs)
                r.update(tool="frugal", drafter=label, set=kind, prompt=name, speedup=r["tps"] / r["plain_tps"])
                rows.append(r)
                print(f"{kind:10s} {name:9s} frugal {label:12s} {r['tps']:7.2f} t/s plain {r['plain_tps']:7.2f} "
                      f"x{r['speedup']:.2f} acc {r['acceptance']:.2f} len {r['accepted_length']:.2f} "
                      f"identical {r['identical']}", file=sys.stderr)
            for tool in peer_tools:
                if args.peer_prompts and name not in args.peer_prompts.split(","):
                    continue
                try:
                    r = peer_run(args, tool, prompt)
                except subprocess.TimeoutExpired:
                    # Killed: slower than n / peer_timeout tokens/s. Kept as a row (an upper bound).
                    print(f"speculative_bench: {tool} on {name}: killed after {args.peer_timeout:.0f} s", file=sys.stderr)
                    r = {"tps": None, "timed_out": True, "tps_below": args.n / args.peer_timeout}
                except Exception as e:  # noqa: BLE001
                    print(f"speculative_bench: {tool} on {name}: {e}", file=sys.stderr)
                    continue
                r.update(tool=tool, set=kind, prompt=name)
                rows.append(r)
                print(f"{kind:10s} {name:9s} {tool:26s} {r['tps']} t/s acc {r.get('acceptance')}"
                      f"{' (timed out)' if r.get('timed_out') else ''}", file=sys.stderr)
    # Peer speed-ups: against llama-simple on the same prompt.
    for r in rows:
        if r["tool"].startswith("llama-") and r["tool"] != "llama-simple":
            base = [x["tps"] for x in rows if x["tool"] == "llama-simple" and x["prompt"] == r["prompt"]]
            if base and base[0] and r["tps"]:
                r["speedup"] = r["tps"] / base[0]

    summary = []
    configs = [("frugal", d) for d in drafters] + [(t, None) for t in peer_tools]
    for kind in PROMPTS:
        for tool, drafter in configs:
            sel = [r for r in rows if r["set"] == kind and r["tool"] == tool and r.get("drafter") == drafter]
            if not sel:
                continue
            summary.append({"set": kind, "tool": tool, "drafter": drafter, "prompts": len(sel),
                            "tps": median([r["tps"] for r in sel]), "speedup": median([r.get("speedup") for r in sel]),
                            "acceptance": median([r.get("acceptance") for r in sel]),
                            "accepted_length": median([r.get("accepted_length") for r in sel]),
                            "identical": all(r.get("identical", True) for r in sel)})

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    os.makedirs(args.out, exist_ok=True)
    meta = {"date": stamp, "model": os.path.basename(args.model), "draft_model": "target, half its layers dropped (frugal prune --method layers --sparsity 0.5)"
            if args.draft_model.endswith("draft_layers50.gguf") else os.path.basename(args.draft_model),
            "n": args.n, "threads": args.t, "draft_max": args.draft_max, "uname": os.uname().release,
            "load_average": os.getloadavg()}
    with open(os.path.join(args.out, "speculative.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "rows": rows}, f, indent=1)

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    lines = [f"# Speculative decoding: {meta['model']}, greedy, {args.n} tokens, {args.t} threads, draft-max {args.draft_max}",
             "", f"{stamp}; draft model: {meta['draft_model']}; load average at the end "
             f"{meta['load_average'][0]:.1f} (a shared machine: tokens/s are noisy, speed-ups are paired with plain "
             "decoding of the same tool and prompt; medians over the prompts of each set).", "",
             "| set | tool | drafter | prompts | tokens/s | speed-up vs plain | acceptance | mean accepted length | = plain greedy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['set']} | {s['tool']} | {s['drafter'] or '–'} | {s['prompts']} | {fmt(s['tps'], '.2f')} | "
                     f"{fmt(s['speedup'], '.2f')}× | {fmt(s['acceptance'], '.2f')} | {fmt(s['accepted_length'], '.2f')} | "
                     f"{'yes' if s['tool'] == 'frugal' and s['identical'] else ('NO' if s['tool'] == 'frugal' else '–')} |")
    lines += ["", "Per prompt:", "", "| set | prompt | tool | drafter | tokens/s | speed-up | acceptance |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        tps = f"< {r['tps_below']:.2f} (killed after {args.peer_timeout:.0f} s)" if r.get("timed_out") else fmt(r["tps"], ".2f")
        lines.append(f"| {r['set']} | {r['prompt']} | {r['tool']} | {r.get('drafter') or '–'} | {tps} | "
                     f"{fmt(r.get('speedup'), '.2f')} | {fmt(r.get('acceptance'), '.2f')} |")
    with open(os.path.join(args.out, "speculative.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("speculative_bench: matplotlib missing, no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(PROMPTS), figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, PROMPTS):
        sel = [s for s in summary if s["set"] == kind and s["speedup"] is not None]
        labels = [f"{s['tool']}\n{s['drafter'] or ''}".strip() for s in sel]
        ax.bar(range(len(sel)), [s["speedup"] for s in sel], color=["tab:blue" if s["tool"] == "frugal" else "tab:gray" for s in sel])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(kind)
    axes[0].set_ylabel("speed-up over plain decoding (median)")
    fig.suptitle(f"Speculative decoding, {meta['model']}, {args.t} threads")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "speculative.png"), dpi=120)


if __name__ == "__main__":
    main()
