#!/usr/bin/env python3
"""A/B speed of two frugal binaries against llama.cpp in the same run (for kernel changes).

Runs llama-bench and `frugal bench` of each binary alternately, one repetition each per round, on
the same GGUF file and threads, and prints the median tokens/s of prompt processing (pp) and text
generation (tg) per tool, and the median over rounds of each binary's ratio to llama.cpp measured
in the same round (on a shared, noisy machine the per-round ratio cancels most of the load).

usage: bench/ab_speed.py --a OLD_FRUGAL --b NEW_FRUGAL [--rounds 5] [-p 512] [-n 128] [-t 2] [--model M] [--json OUT]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(cmd):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"ab_speed: command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}")
    rows = json.loads(result.stdout[result.stdout.index("["):])
    return {("pp" if row["n_prompt"] > 0 else "tg"): row["avg_ts"] for row in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="frugal binary A (before)")
    parser.add_argument("--b", required=True, help="frugal binary B (after)")
    parser.add_argument("--model", default=os.path.expanduser("~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--peer-bin", default=os.environ.get("FRUGAL_PEER_BIN", ""))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-p", type=int, default=512)
    parser.add_argument("-n", type=int, default=128)
    parser.add_argument("-t", type=int, default=2)
    parser.add_argument("--json", help="write the samples and medians here")
    args = parser.parse_args()
    if not args.peer_bin:
        sys.exit("ab_speed: set FRUGAL_PEER_BIN or --peer-bin (llama.cpp's bin directory)")
    common = ["-m", args.model, "-t", str(args.t), "-p", str(args.p), "-n", str(args.n), "-r", "1", "-o", "json"]
    tools = {"llama.cpp": [os.path.join(args.peer_bin, "llama-bench")], "A": [args.a, "bench"], "B": [args.b, "bench"]}
    samples = {tool: {"pp": [], "tg": []} for tool in tools}
    for r in range(args.rounds):
        # Rotate the order so no tool always runs right after another.
        order = list(tools)[r % 3:] + list(tools)[:r % 3]
        for tool in order:
            for test, ts in bench(tools[tool] + common).items():
                samples[tool][test].append(ts)
        print(f"round {r + 1}: " + ", ".join(f"{t} pp {samples[t]['pp'][-1]:.1f} tg {samples[t]['tg'][-1]:.1f}" for t in tools),
              file=sys.stderr)
    summary = {}
    for test in ("pp", "tg"):
        for tool in tools:
            summary[f"{tool} {test} median t/s"] = statistics.median(samples[tool][test])
        for tool in ("A", "B"):
            ratios = [a / b for a, b in zip(samples[tool][test], samples["llama.cpp"][test])]
            summary[f"{tool}/llama.cpp {test} median ratio"] = statistics.median(ratios)
    for key, value in summary.items():
        print(f"{key}: {value:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "samples": samples, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
