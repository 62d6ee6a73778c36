#!/usr/bin/env python3
"""Speed head to head: frugal bench vs llama.cpp's llama-bench on the same GGUF files and threads.

Builds llama.cpp from the llama-cpp-python source package (scripts/build_llama_cpp.sh, cached
outside the repo), makes a Q8_0 copy of the default model with llama-quantize, then runs the two
tools alternately for several rounds and prints the frugal/llama.cpp ratio of the median
tokens/s for prompt processing (pp) and text generation (tg). Decode speed is also given as a
fraction of the memory-bandwidth bound: measured copy bandwidth / weight bytes read per token.

usage: bench/compare_llama.py [--threads 2] [-p 512] [-n 128] [-r 5] [--rounds 3] [MODEL.gguf ...]
       bench/compare_llama.py --suite 1b [-r 2] [--rounds 2]

--suite 1b (issue 14) writes a random-weight Llama of Llama 3.2 1B's shape (tools/make_random_model,
F16, SmolLM2's tokenizer) and llama-quantize's Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M and Q2_K
of it into $FRUGAL_CACHE/big (default ~/.cache/frugal/big; made once, reused), then compares the
two engines on all seven. Random weights make the text meaningless, not the speed: both engines
read the same bytes. Results go to bench/results/speed_vs_llama_cpp[_SUITE].{md,json,png}.
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


# The formats issue 14 measures at 1B, as llama-quantize names them.
SUITE_1B_FORMATS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]


def make_suite_1b(peer_bin, frugal):
    """The 1B random-weight model in each format (cached; each file appears atomically)."""
    cache = os.path.join(os.environ.get("FRUGAL_CACHE", os.path.expanduser("~/.cache/frugal")), "big")
    os.makedirs(cache, exist_ok=True)
    f16 = os.path.join(cache, "r1b-f16.gguf")
    if not os.path.exists(f16):
        tokenizer = run(["bash", os.path.join(ROOT, "scripts", "fetch_model.sh")]).strip().splitlines()[-1]
        maker = os.path.join(os.path.dirname(frugal), "tools", "make_random_model")
        print(f"compare_llama: writing {f16}", file=sys.stderr, flush=True)
        run([maker, "--tokenizer-from", tokenizer, "--out", f16, "--preset", "1b", "--type", "f16"])
    models = []
    for fmt in SUITE_1B_FORMATS:
        path = os.path.join(cache, f"r1b-{fmt}.gguf")
        if not os.path.exists(path):
            print(f"compare_llama: llama-quantize {fmt}", file=sys.stderr, flush=True)
            run([os.path.join(peer_bin, "llama-quantize"), f16, path + ".part", fmt])
            os.replace(path + ".part", path)
        models.append(path)
    return models


def plot(report, path):
    """Tokens/s per model for both engines, prefill and decode side by side."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare_llama: matplotlib missing, no plot", file=sys.stderr)
        return
    tests = sorted({r["test"] for r in report["rows"]}, key=lambda t: not t.startswith("pp"))
    names = [m for m in dict.fromkeys(r["model"] for r in report["rows"])]
    fig, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4.8))
    if len(tests) == 1:
        axes = [axes]
    width = 0.38
    for ax, test in zip(axes, tests):
        rows = {r["model"]: r for r in report["rows"] if r["test"] == test}
        xs = range(len(names))
        llama = [rows[n]["llama_ts"] for n in names]
        frugal = [rows[n]["frugal_ts"] for n in names]
        ax.bar([x - width / 2 for x in xs], llama, width, label="llama.cpp", color="#8c8c8c")
        ax.bar([x + width / 2 for x in xs], frugal, width, label="frugal", color="#2b7bba")
        if test.startswith("tg"):
            bound = [rows[n].get("bandwidth_bound_ts") for n in names]
            ax.scatter([x + width / 2 for x in xs], bound, marker="_", s=300, color="black", label="bandwidth bound")
        for x, r in zip(xs, (rows[n] for n in names)):
            ax.annotate(f"{r['ratio']:.2f}x", (x + width / 2, r["frugal_ts"]), ha="center", va="bottom", fontsize=8)
        labels = [n.replace(".gguf", "").split("-")[-1] if n.startswith("r1b-") else n.replace(".gguf", "") for n in names]
        ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("tokens/s (median)")
        ax.set_title(f"{test}, {report['threads']} threads")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    parser.add_argument("--suite", choices=["1b"], help="the 1B random-weight model in seven llama.cpp formats")
    args = parser.parse_args()

    peer_bin = run(["bash", os.path.join(ROOT, "scripts", "build_llama_cpp.sh")]).strip().splitlines()[-1]
    peer_build = peer_build_description(peer_bin)
    print(f"compare_llama: peer is {peer_build}", file=sys.stderr)
    models = args.models
    if args.suite and models:
        sys.exit("compare_llama: give either model files or --suite, not both")
    if args.suite == "1b":
        models = make_suite_1b(peer_bin, args.frugal)
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
    stem = os.path.join(args.out, "speed_vs_llama_cpp" + (f"_{args.suite}" if args.suite else ""))
    with open(stem + ".md", "w") as f:
        f.write(text + "\n\n![tokens/s per format](" + os.path.basename(stem) + ".png)\n")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2)
    plot(report, stem + ".png")


if __name__ == "__main__":
    main()
