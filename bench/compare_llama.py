#!/usr/bin/env python3
"""Speed head to head: frugal bench vs llama.cpp's llama-bench on the same GGUF files and threads.

Builds llama.cpp from the llama-cpp-python source package (scripts/build_llama_cpp.sh, cached
outside the repo), makes a Q8_0 copy of the default model with llama-quantize, then runs the two
tools alternately for several rounds and prints the frugal/llama.cpp ratio of the median
tokens/s for prompt processing (pp) and text generation (tg). Decode speed is also given as a
fraction of the memory-bandwidth bound: measured copy bandwidth / weight bytes read per token.

usage: bench/compare_llama.py [--threads 2] [-p 512] [-n 128] [-r 5] [--rounds 3] [MODEL.gguf ...]
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"compare_llama: command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return result.stdout


def bench_json(cmd):
    out = run(cmd)
    start = out.index("[")
    return json.loads(out[start:])


def peer_build_description(peer_bin):
    """Which llama.cpp the ratios were measured against (scripts/build_llama_cpp.sh writes it):
    where AMX works, llama.cpp's AMX path is the bar; where it traps, the plain AVX-512 one."""
    try:
        with open(os.path.join(peer_bin, "peer_build.txt")) as f:
            return f.read().strip()
    except OSError:
        return "llama.cpp (build flags unknown: no peer_build.txt)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="GGUF files (default: SmolLM2 Q4_1 and a Q8_0 made from it)")
    parser.add_argument("--threads", "-t", type=int, default=2)
    parser.add_argument("-p", type=int, default=512, help="prompt tokens (pp test)")
    parser.add_argument("-n", type=int, default=128, help="generated tokens (tg test)")
    parser.add_argument("-r", type=int, default=5, help="repetitions per tool run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians are taken over them)")
    parser.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args()

    peer_bin = run(["bash", os.path.join(ROOT, "scripts", "build_llama_cpp.sh")]).strip().splitlines()[-1]
    peer_build = peer_build_description(peer_bin)
    print(f"compare_llama: peer is {peer_build}", file=sys.stderr)
    models = args.models
    if not models:
        q4_1 = run(["bash", os.path.join(ROOT, "scripts", "fetch_model.sh")]).strip().splitlines()[-1]
        q8_0 = os.path.join(os.path.dirname(q4_1), "SmolLM2-135M-Instruct.Q8_0.gguf")
        if not os.path.exists(q8_0):
            run([os.path.join(peer_bin, "llama-quantize"), "--allow-requantize", q4_1, q8_0 + ".part", "Q8_0"])
            os.replace(q8_0 + ".part", q8_0)
        models = [q4_1, q8_0]
    for m in models:
        if not os.path.exists(m):
            sys.exit(f"compare_llama: no such model file: {m}")

    bandwidth = float(run([args.frugal, "bench", "--bandwidth"]).split()[2]) * 1e9
    common = ["-t", str(args.threads), "-p", str(args.p), "-n", str(args.n), "-r", str(args.r), "-o", "json"]
    samples = {}  # (model, tool, test) -> [avg_ts per round]
    sizes = {}
    total = args.rounds * len(models) * 2
    step = 0
    for round_index in range(args.rounds):
        for model in models:
            # Alternate which tool goes first so slow drifts of the machine hit both alike.
            tools = [("llama.cpp", [os.path.join(peer_bin, "llama-bench"), "-m", model]),
                     ("frugal", [args.frugal, "bench", "-m", model])]
            if round_index % 2:
                tools.reverse()
            for tool, cmd in tools:
                step += 1
                print(f"[{step}/{total}] round {round_index + 1}: {tool} on {os.path.basename(model)}", file=sys.stderr, flush=True)
                for row in bench_json(cmd + common):
                    test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
                    samples.setdefault((model, tool, test), []).append(row["avg_ts"])
                    sizes[model] = row["model_size"]

    lines = [f"# frugal vs llama.cpp speed, {datetime.date.today()}", "",
             f"{args.threads} threads, pp{args.p} / tg{args.n}, {args.r} repetitions per run, {args.rounds} alternating rounds; "
             f"t/s are medians over rounds. Copy bandwidth {bandwidth / 1e9:.1f} GB/s.", "",
             f"Peer: {peer_build}.", "",
             "| model | test | llama.cpp t/s | frugal t/s | frugal / llama.cpp | frugal decode vs bandwidth bound |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    report = {"peer_build": peer_build, "threads": args.threads, "bandwidth_bytes_per_s": bandwidth, "rows": []}
    for model in models:
        for test in (f"pp{args.p}", f"tg{args.n}"):
            llama = statistics.median(samples[(model, "llama.cpp", test)])
            frugal = statistics.median(samples[(model, "frugal", test)])
            bound = ""
            row = {"model": os.path.basename(model), "test": test, "llama_ts": llama, "frugal_ts": frugal, "ratio": frugal / llama}
            if test.startswith("tg"):
                # A decoded token reads every weight once; bandwidth counts bytes read + written by
                # memcpy (the STREAM 'Copy' convention).
                limit = bandwidth / sizes[model]
                bound = f"{100 * frugal / limit:.0f}% of {limit:.0f} t/s"
                row["bandwidth_bound_ts"] = limit
            lines.append(f"| {os.path.basename(model)} | {test} | {llama:.2f} | {frugal:.2f} | {frugal / llama:.2f}x | {bound} |")
            report["rows"].append(row)
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speed_vs_llama_cpp.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "speed_vs_llama_cpp.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
