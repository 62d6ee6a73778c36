#!/usr/bin/env python3
"""Load benchmark of `frugal serve` against llama.cpp's `llama-server` (issue 11).

Both servers get the same model, threads and slots; clients stream chat completions from a fixed
set of prompts (greedy, ignore_eos so every answer has exactly --max-tokens tokens) at each
concurrency level. Per level: request throughput, output tokens/s, time to first token (TTFT) and
time per output token (TPOT) p50/p99, errors, and the server's peak RSS (VmHWM). Results go to
bench/results/serve_bench.{json,md,png}. Only the Python standard library is needed for the load
(matplotlib for the plot). The machines are shared: numbers are medians over --repeats runs and
are comparable only within one run of this script.

  python3 bench/serve_bench.py [--concurrency 1,4,16,64] [--slots 16] [--threads 2] [--max-tokens 64]
  python3 bench/serve_bench.py --only frugal --concurrency 16 --min-requests 1000   # soak: errors, RSS flat
  python3 bench/serve_bench.py --only frugal --concurrency 16 --ctx 2048 --shared-system-words 780 \
      [--frugal-args=--no-prefix-cache]     # a shared ~1000-token system prompt: cached prompt tokens, TTFT
"""
import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fixed set of short chat prompts of varied lengths (the same for both servers, in order).
PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about a quiet harbour at dawn.",
    "List three uses of a paperclip that are not holding paper.",
    "What is the difference between a list and a tuple in Python?",
    "Summarise the plot of Romeo and Juliet for a ten-year-old.",
    "Give me a recipe for a simple tomato soup.",
    "Why do cats purr? Answer briefly.",
    "Describe the water cycle step by step.",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "What are the main causes of inflation?",
    "Write a short motivational message for a student before an exam.",
    "How does a bicycle stay upright while moving?",
    "Name five planets and one fact about each.",
    "Suggest a name for a bakery that specialises in sourdough.",
    "What is photosynthesis? Keep it simple.",
    "Tell me a fun fact about octopuses.",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def peak_rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class ServerProcess:
    def __init__(self, name, cmd, port, log_path):
        self.name, self.port = name, port
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %d (see %s)" % (name, self.proc.returncode, log_path))
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("%s did not become healthy" % name)

    def stop(self):
        self.proc.terminate()
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def one_request(port, prompt, max_tokens, system=None, timeout=600):
    """Streams one chat completion; returns dict(ttft, latency, tokens, prompt_tokens, cached_tokens, error)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body = json.dumps({
        "model": "bench", "messages": messages, "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    })
    start = time.perf_counter()
    ttft, chunks, usage_tokens, prompt_tokens, cached_tokens = None, 0, None, 0, 0
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return {"error": "HTTP %d %s" % (resp.status, resp.read()[:200])}
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage_tokens = chunk["usage"].get("completion_tokens")
                prompt_tokens = chunk["usage"].get("prompt_tokens") or 0
                cached_tokens = (chunk["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - start
        conn.close()
    except Exception as e:  # noqa: BLE001 - every failure is counted as an error
        return {"error": repr(e)}
    latency = time.perf_counter() - start
    tokens = usage_tokens if usage_tokens is not None else chunks
    if ttft is None:
        return {"error": "no content"}
    return {"ttft": ttft, "latency": latency, "tokens": tokens, "prompt_tokens": prompt_tokens,
            "cached_tokens": cached_tokens, "error": None}


def run_level(port, pid, concurrency, n_requests, max_tokens, system=None):
    results, lock, next_index = [], threading.Lock(), [0]
    rss_samples = []
    rss_warm = []  # RSS once a tenth of the requests are done (the pool's pages touched: warm)

    def worker():
        while True:
            with lock:
                i = next_index[0]
                if i >= n_requests:
                    return
                next_index[0] += 1
            r = one_request(port, PROMPTS[i % len(PROMPTS)], max_tokens, system)
            with lock:
                results.append(r)
                if len(results) == max(1, n_requests // 10):
                    rss_warm.append(rss_mib(pid))

    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.wait(0.25):
            rss_samples.append(rss_mib(pid))

    threading.Thread(target=sampler, daemon=True).start()
    rss_start = rss_mib(pid)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    stop_sampling.set()
    ok = [r for r in results if not r["error"]]
    errors = [r["error"] for r in results if r["error"]]
    tokens = sum(r["tokens"] for r in ok)
    ttfts = [r["ttft"] for r in ok]
    tpots = [(r["latency"] - r["ttft"]) / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
    return {
        "concurrency": concurrency, "requests": len(results), "errors": len(errors),
        "error_examples": errors[:3], "wall_s": wall,
        "requests_per_s": len(ok) / wall, "output_tokens_per_s": tokens / wall,
        # Prompt tokens the server reports as served from its prefix cache (usage.prompt_tokens_details).
        "prompt_tokens": sum(r["prompt_tokens"] for r in ok), "cached_prompt_tokens": sum(r["cached_tokens"] for r in ok),
        "ttft_p50_ms": 1000 * percentile(ttfts, 50), "ttft_p99_ms": 1000 * percentile(ttfts, 99),
        "tpot_p50_ms": 1000 * percentile(tpots, 50), "tpot_p99_ms": 1000 * percentile(tpots, 99),
        "rss_mib_max_sampled": max(rss_samples) if rss_samples else rss_mib(pid),
        # RSS before and after the level: flat across many requests means nothing leaks per request.
        "rss_start_mib": rss_start, "rss_end_mib": rss_mib(pid),
        "rss_warm_mib": rss_warm[0] if rss_warm else float("nan"),
        "peak_rss_mib": peak_rss_mib(pid),
    }


def median_of(runs):
    """Per-field median over repeated runs of one level."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in runs)
    out["errors"] = sum(r["errors"] for r in runs)
    out["repeats"] = len(runs)
    return out


def shared_system_prompt(words):
    """A fixed system prompt of about `words` words shared by every request (prefix caching)."""
    if words <= 0:
        return None
    vocabulary = ("the server keeps answers short clear and polite and it never invents facts about "
                  "people places or numbers when a question is unclear it asks one question back").split()
    return "You are a careful assistant. " + " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


def bench_server(name, cmd, port, args, levels, log_dir):
    print("== %s: %s" % (name, " ".join(cmd)), flush=True)
    server = ServerProcess(name, cmd, port, os.path.join(log_dir, "serve_bench_%s.log" % name))
    print("  (server log: %s)" % os.path.join(log_dir, "serve_bench_%s.log" % name), flush=True)
    rows = []
    system = shared_system_prompt(args.shared_system_words)
    try:
        one_request(port, PROMPTS[0], 8)  # warm-up (without the shared system prompt)
        for c in levels:
            n = max(args.min_requests, args.requests_per_client * c)
            runs = [run_level(port, server.proc.pid, c, n, args.max_tokens, system) for _ in range(args.repeats)]
            row = median_of(runs)
            rows.append(row)
            print("  c=%-3d %4d req  %6.2f req/s  %7.1f tok/s  TTFT p50 %7.0f ms p99 %7.0f ms  TPOT p50 %6.1f ms p99 %6.1f ms  "
                  "errors %d  peak RSS %.0f MiB  cached prompt %d/%d" % (
                      c, row["requests"], row["requests_per_s"], row["output_tokens_per_s"], row["ttft_p50_ms"],
                      row["ttft_p99_ms"], row["tpot_p50_ms"], row["tpot_p99_ms"], row["errors"], row["peak_rss_mib"],
                      row["cached_prompt_tokens"], row["prompt_tokens"]), flush=True)
    finally:
        code = server.stop()
    return {"server": name, "command": cmd, "exit_code_after_sigterm": code, "levels": rows}


def write_markdown(path, meta, servers):
    lines = ["# frugal serve vs llama-server", "",
             "Model `%s`, %d threads, %d slots, %d output tokens per request (greedy, ignore_eos), streamed chat "
             "completions from %d fixed prompts; medians over %d run(s) per level. Shared 2-core machine: compare only "
             "within this table. %s" % (os.path.basename(meta["model"]), meta["threads"], meta["slots"], meta["max_tokens"],
                                        len(PROMPTS), meta["repeats"], meta["date"]),
             "", "Load average at start: %s (2 cores). llama-server extra flags: `%s`." % (
                 ", ".join("%.1f" % x for x in meta["load_average_at_start"]), meta["peer_args"] or "none"), "",
             "| server | clients | requests | errors | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | peak RSS MiB | RSS before → at 10% → after MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in servers:
        for r in s["levels"]:
            lines.append("| %s | %d | %d | %d | %.2f | %.1f | %.0f | %.0f | %.1f | %.1f | %.0f | %.0f → %.0f → %.0f |" % (
                s["server"], r["concurrency"], r["requests"], r["errors"], r["requests_per_s"], r["output_tokens_per_s"],
                r["ttft_p50_ms"], r["ttft_p99_ms"], r["tpot_p50_ms"], r["tpot_p99_ms"], r["peak_rss_mib"],
                r["rss_start_mib"], r["rss_warm_mib"], r["rss_end_mib"]))
    by = {s["server"]: {r["concurrency"]: r for r in s["levels"]} for s in servers}
    if "frugal" in by and "llama-server" in by:
        lines += ["", "| clients | frugal / llama-server output tok/s | frugal TTFT p50 / llama-server's |", "|---:|---:|---:|"]
        for c, r in sorted(by["frugal"].items()):
            peer = by["llama-server"].get(c)
            if peer and peer["output_tokens_per_s"] > 0:
                lines.append("| %d | %.2f× | %.2f× |" % (c, r["output_tokens_per_s"] / peer["output_tokens_per_s"],
                                                        r["ttft_p50_ms"] / peer["ttft_p50_ms"]))
    if "frugal" in by and 1 in by["frugal"]:
        single = by["frugal"][1]["output_tokens_per_s"]
        lines += ["", "frugal's output tokens/s relative to its own single client (%.1f tok/s): " % single +
                  ", ".join("%d clients %.2f×" % (c, r["output_tokens_per_s"] / single) for c, r in sorted(by["frugal"].items()))]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(path, servers):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for s in servers:
        c = [r["concurrency"] for r in s["levels"]]
        axes[0].plot(c, [r["output_tokens_per_s"] for r in s["levels"]], "o-", label=s["server"])
        axes[1].plot(c, [r["ttft_p50_ms"] for r in s["levels"]], "o-", label=s["server"] + " p50")
        axes[1].plot(c, [r["ttft_p99_ms"] for r in s["levels"]], "x--", label=s["server"] + " p99")
        axes[2].plot(c, [r["tpot_p50_ms"] for r in s["levels"]], "o-", label=s["server"] + " p50")
        axes[2].plot(c, [r["tpot_p99_ms"] for r in s["levels"]], "x--", label=s["server"] + " p99")
    for ax, title in zip(axes, ["output tokens/s", "time to first token (ms)", "time per output token (ms)"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    peer = os.environ.get("FRUGAL_PEER_BIN", os.path.expanduser("~/.cache/frugal/peer/build-0.3.36-amx-off/bin"))
    ap.add_argument("--llama-server", default=os.path.join(peer, "llama-server"))
    ap.add_argument("--model", default=os.environ.get("FRUGAL_MODEL", os.path.expanduser(
        "~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=512, help="context of each slot (llama-server gets ctx * slots)")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--min-requests", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", choices=["frugal", "llama-server"], help="benchmark one server")
    ap.add_argument("--frugal-args", default="", help="extra frugal serve flags, e.g. '--no-prefix-cache'")
    ap.add_argument("--peer-args", default="", help="extra llama-server flags, e.g. '--poll 0' (its threads spin-wait "
                    "by default, which collapses on an oversubscribed machine)")
    ap.add_argument("--shared-system-words", type=int, default=0,
                    help="prepend one shared system prompt of about N words to every request (~1.3 tokens a word)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    os.makedirs(args.out, exist_ok=True)
    meta = {"frugal_args": args.frugal_args, "peer_args": args.peer_args, "load_average_at_start": os.getloadavg(), "model": args.model, "threads": args.threads, "slots": args.slots, "ctx_per_slot": args.ctx,
            "max_tokens": args.max_tokens, "repeats": args.repeats, "shared_system_words": args.shared_system_words, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    servers = []
    if args.only in (None, "frugal"):
        port = free_port()
        cmd = [args.frugal, "serve", "-m", args.model, "--port", str(port), "-t", str(args.threads), "-np", str(args.slots),
               "-c", str(args.ctx), "--max-queue", "1024", *args.frugal_args.split()]
        servers.append(bench_server("frugal", cmd, port, args, levels, tempfile.gettempdir()))
    if args.only in (None, "llama-server"):
        if not os.path.exists(args.llama_server):
            print("llama-server not found at %s (FRUGAL_PEER_AMX=off FRUGAL_PEER_EXTRA_TOOLS=llama-server bash "
                  "scripts/build_llama_cpp.sh builds it); skipping it" % args.llama_server)
        else:
            port = free_port()
            cmd = [args.llama_server, "-m", args.model, "--host", "127.0.0.1", "--port", str(port), "-t", str(args.threads),
                   "-tb", str(args.threads), "-np", str(args.slots), "-c", str(args.ctx * args.slots), "--no-webui", *args.peer_args.split()]
            servers.append(bench_server("llama-server", cmd, port, args, levels, tempfile.gettempdir()))
    result = {"meta": meta, "servers": servers}
    with open(os.path.join(args.out, "serve_bench.json"), "w") as f:
        json.dump(result, f, indent=1)
    write_markdown(os.path.join(args.out, "serve_bench.md"), meta, servers)
    plot(os.path.join(args.out, "serve_bench.png"), servers)
    print("results in %s/serve_bench.{json,md,png}" % args.out)


if __name__ == "__main__":
    sys.exit(main())
