#!/usr/bin/env python3
"""Pruning head to head (issue 9): magnitude, Wanda, SparseGPT (unstructured, 2:4, 4:8, OWL, joint
with 4-bit), structured layer and width pruning, and GPTQ rows for the same-size comparison, every
row measured by the same `frugal eval` and `frugal bench` as bench/compare_quant.py (whose GGUF
reader, runner, evaluation and caching this script imports rather than copies).

Each row is made from the base model (SmolLM2-135M-Instruct Q4_1 by default, --model for another,
e.g. Gemma 3 270M) into --work and measured against it: sparsity (measured zero weights of the
decoder-block matrices; parameters removed for structured rows), bits per weight, perplexity, KL
divergence (mean, p99), same top token on WikiText-2, zero-shot HellaSwag and SST-2, decode
tokens/s, and the wall time of the prune/quantize command. Calibration reads tinyshakespeare.txt
(never the evaluation text). The report is rewritten after every row, so a run cut short still
leaves a table of the rows it finished. Rows are ordered by the issue's targets first.

Writes NAME.md / NAME.json, NAME_kld_vs_bpw.png and NAME_kld_vs_speed.png to --out (NAME defaults
to prune_comparison).

usage: bench/compare_prune.py [--chunks 10] [--hellaswag 50] [--sst2 100] [--calib-tokens 4096]
                              [--only REGEX] [--reuse] [--work DIR] [--out DIR] [--name NAME]
                              [--model GGUF] [--frugal BIN] [--list]
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_quant as cq  # noqa: E402  (shared GGUF reader, runner, evaluation, caching)

ROOT = cq.ROOT

# (id, method label, settings label, frugal command, arguments). Order = run order: the rows the
# issue's targets compare come first, so a run cut short still answers them.
U = ["--pattern", "unstructured"]
ROWS = [
    ("magnitude-50", "magnitude", "50% unstructured", "prune", ["--method", "magnitude", "--sparsity", "0.5"] + U),
    ("wanda-50", "Wanda", "50% unstructured", "prune", ["--method", "wanda", "--sparsity", "0.5"] + U),
    ("sparsegpt-50", "SparseGPT", "50% unstructured", "prune", ["--method", "sparsegpt", "--sparsity", "0.5"] + U),
    ("wanda-2:4", "Wanda", "2:4", "prune", ["--method", "wanda", "--pattern", "2:4"]),
    ("sparsegpt-2:4", "SparseGPT", "2:4", "prune", ["--method", "sparsegpt", "--pattern", "2:4"]),
    ("wanda-70", "Wanda", "70% unstructured", "prune", ["--method", "wanda", "--sparsity", "0.7"] + U),
    ("wanda-70-owl", "Wanda + OWL", "70% unstructured, OWL", "prune", ["--method", "wanda", "--sparsity", "0.7", "--owl"] + U),
    ("sparsegpt-70", "SparseGPT", "70% unstructured", "prune", ["--method", "sparsegpt", "--sparsity", "0.7"] + U),
    ("sparsegpt-70-owl", "SparseGPT + OWL", "70% unstructured, OWL", "prune",
     ["--method", "sparsegpt", "--sparsity", "0.7", "--owl"] + U),
    ("sparsegpt-50-4b", "SparseGPT + 4-bit", "50% + 4-bit g32 sym (q4_0), one sweep", "prune",
     ["--method", "sparsegpt", "--sparsity", "0.5", "--bits", "4", "--group", "32", "--symmetric"] + U),
    ("gptq-3b-g128", "GPTQ", "3-bit g128 asym (g64 on 576-wide rows)", "quantize",
     ["--method", "gptq", "--bits", "3", "--group", "128", "--group-fallback"]),
    ("gptq-4b-g128", "GPTQ", "4-bit g128 asym (g64 on 576-wide rows)", "quantize",
     ["--method", "gptq", "--bits", "4", "--group", "128", "--group-fallback"]),
    ("gptq-q4_0", "GPTQ", "4-bit g32 sym (q4_0), the joint row's grid", "quantize",
     ["--method", "gptq", "--bits", "4", "--group", "32", "--symmetric"]),
    ("magnitude-2:4", "magnitude", "2:4", "prune", ["--method", "magnitude", "--pattern", "2:4"]),
    ("magnitude-4:8", "magnitude", "4:8", "prune", ["--method", "magnitude", "--pattern", "4:8"]),
    ("wanda-4:8", "Wanda", "4:8", "prune", ["--method", "wanda", "--pattern", "4:8"]),
    ("sparsegpt-4:8", "SparseGPT", "4:8", "prune", ["--method", "sparsegpt", "--pattern", "4:8"]),
    ("wanda-60", "Wanda", "60% unstructured", "prune", ["--method", "wanda", "--sparsity", "0.6"] + U),
    ("wanda-60-owl", "Wanda + OWL", "60% unstructured, OWL", "prune", ["--method", "wanda", "--sparsity", "0.6", "--owl"] + U),
    ("sparsegpt-60", "SparseGPT", "60% unstructured", "prune", ["--method", "sparsegpt", "--sparsity", "0.6"] + U),
    ("sparsegpt-60-owl", "SparseGPT + OWL", "60% unstructured, OWL", "prune",
     ["--method", "sparsegpt", "--sparsity", "0.6", "--owl"] + U),
    # Compact sparse storage (issue 10): the same pruning, only the non-zeros stored, so sparsity
    # shows up in size and decode speed instead of costing full bits per zero.
    ("sparsegpt-50-sparse-q8", "SparseGPT, sparse-q8", "50% unstructured, stored as sparse-q8", "prune",
     ["--method", "sparsegpt", "--sparsity", "0.5", "--format", "sparse-q8"] + U),
    ("sparsegpt-50-sparse-q4", "SparseGPT, sparse-q4", "50% unstructured, stored as sparse-q4", "prune",
     ["--method", "sparsegpt", "--sparsity", "0.5", "--format", "sparse-q4"] + U),
    ("sparsegpt-70-sparse-q8", "SparseGPT, sparse-q8", "70% unstructured, stored as sparse-q8", "prune",
     ["--method", "sparsegpt", "--sparsity", "0.7", "--format", "sparse-q8"] + U),
    ("sparsegpt-2:4-nm-q8", "SparseGPT, nm-q8", "2:4, stored as nm-q8", "prune",
     ["--method", "sparsegpt", "--pattern", "2:4", "--format", "nm-q8"]),
    ("sparsegpt-2:4-nm-q4", "SparseGPT, nm-q4", "2:4, stored as nm-q4", "prune",
     ["--method", "sparsegpt", "--pattern", "2:4", "--format", "nm-q4"]),
    ("layers-10", "layers", "10% of the blocks", "prune", ["--method", "layers", "--sparsity", "0.1"]),
    ("layers-20", "layers", "20% of the blocks", "prune", ["--method", "layers", "--sparsity", "0.2"]),
    ("layers-30", "layers", "30% of the blocks", "prune", ["--method", "layers", "--sparsity", "0.3"]),
    ("width-10", "width", "10% of the FFN channels", "prune", ["--method", "width", "--sparsity", "0.1"]),
    ("width-20", "width", "20% of the FFN channels", "prune", ["--method", "width", "--sparsity", "0.2"]),
    ("width-30", "width", "30% of the FFN channels", "prune", ["--method", "width", "--sparsity", "0.3"]),
]
UNCALIBRATED = {"magnitude", "rtn"}
STRUCTURED = {"layers", "width", "heads"}


# ---------------------------------------------------------------------------------------------
# Measured sparsity: the fraction of decoder-block matrix weights that decode to exactly 0, read
# from the blocks of the types pruning writes (q8_0, q4_0 keep 0 exact; f32/f16 trivially).
# ---------------------------------------------------------------------------------------------
def zero_fraction(path):
    import numpy as np
    data = np.memmap(path, dtype=np.uint8, mode="r")
    zeros = total = uncovered = 0
    for t in cq.gguf_tensors(path):
        if not t["name"].startswith("blk.") or len(t["dims"]) != 2:
            continue
        raw = data[t["offset"]:t["offset"] + t["bytes"]]
        n = t["elements"]
        if t["type"] == "q8_0":  # 34-byte blocks: f16 scale, 32 int8 (ggml-common.h block_q8_0)
            b = np.asarray(raw[:n // 32 * 34]).reshape(-1, 34)
            d = b[:, :2].copy().view(np.float16)[:, 0]
            z = (b[:, 2:].view(np.int8) == 0) | (d == 0)[:, None]
        elif t["type"] == "q4_0":  # 18-byte blocks: f16 scale, 32 nibbles, value (q - 8) * d
            b = np.asarray(raw[:n // 32 * 18]).reshape(-1, 18)
            d = b[:, :2].copy().view(np.float16)[:, 0]
            q = np.concatenate([b[:, 2:] & 0xF, b[:, 2:] >> 4], axis=1)
            z = (q == 8) | (d == 0)[:, None]
        elif t["type"] in ("f32", "f16"):
            z = np.asarray(raw[:n * (4 if t["type"] == "f32" else 2)]).view(np.float32 if t["type"] == "f32" else np.float16) == 0
        else:
            uncovered += n
            continue
        zeros += int(z.sum())
        total += n
    if total == 0 or uncovered > total:
        # Mostly types this reader does not decode (q5_0, k-quants): ask frugal, whose loader decodes
        # every type (`frugal info -o json` counts each matrix's exact zeros).
        return zero_fraction_from_frugal(path)
    return zeros / total


def zero_fraction_from_frugal(path):
    frugal = os.environ.get("FRUGAL_BIN", os.path.join(ROOT, "build", "frugal"))
    out = subprocess.run([frugal, "info", path, "-o", "json"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    info = json.loads(out.stdout)
    zeros = sum(t["zeros"] for t in info.get("sparse_tensors", []) if t["name"].startswith("blk."))
    block_params = block_matrix_params(path)
    return zeros / block_params if block_params else None


def block_matrix_params(path):
    return sum(t["elements"] for t in cq.gguf_tensors(path) if t["name"].startswith("blk.") and len(t["dims"]) == 2)


def block_params(path):
    return sum(t["elements"] for t in cq.gguf_tensors(path) if t["name"].startswith("blk.") and len(t["dims"]) == 2)


# ---------------------------------------------------------------------------------------------
class Runner(cq.Runner):
    """compare_quant's runner (caching, evaluation, bench) plus `frugal prune`."""

    def made_file(self, row_id, command, tool_args):
        path = os.path.join(self.args.work, f"frugal-{row_id.replace(':', '_')}.gguf")
        method = tool_args[tool_args.index("--method") + 1]
        cmd = [self.args.frugal, command, "-m", self.base, "-o", path, "-t", self.threads] + tool_args
        if method not in UNCALIBRATED:
            cmd += ["--calib", self.args.calib, "--calib-tokens", str(self.args.calib_tokens)]
        seconds = self.cached(path, cmd)
        self.cpu_seconds = None
        if seconds is None:
            for stale in (path, path + ".json"):
                if os.path.exists(stale):
                    os.remove(stale)
            before = os.times()
            _, _, seconds = cq.run(cmd)
            after = os.times()
            # CPU seconds of the command (user + system): on a shared machine the wall time also
            # counts the neighbours' load, the CPU time does not.
            self.cpu_seconds = (after.children_user + after.children_system) - (before.children_user + before.children_system)
            self.record(path, seconds, cmd)
        return path, seconds, cmd


# ---------------------------------------------------------------------------------------------
def cell(value, fmt):
    return "" if value is None else format(value, fmt)


def markdown(report):
    s = report["settings"]
    ref = report["rows"][0]
    title = "Pruning comparison" + (f" ({report['label']})" if report.get("label") else "")
    lines = [f"# {title}, {report['date']}", "",
             f"Model: `{os.path.basename(report['base'])}` ({ref.get('params', 0) / 1e6:.1f} M parameters). Every row is "
             f"made from it and measured by the same code as bench/compare_quant.py: `frugal eval` against it (WikiText-2 "
             f"test, {s['chunks']} chunks of 512 tokens: perplexity, KL divergence KL(reference || row) per token, same top "
             f"token), zero-shot HellaSwag ({s['hellaswag']} tasks) and SST-2 ({s['sst2']} sentences), and `frugal bench` "
             f"decode speed (tg{s['bench_n']}, best of {s['bench_r']}, {s['threads']} threads). Calibration (all but magnitude) "
             f"reads the first {s['calib_tokens']} tokens of `tinyshakespeare.txt`, never the evaluation text "
             f"(`frugal prune`'s default is 16384; fewer here so the run fits a shared machine).", "",
             "Sparsity is the measured fraction of decoder-block matrix weights that are exactly 0 (q8_0/q4_0 blocks "
             "decoded), or for structured rows (layers, width) the fraction of decoder-block parameters removed. Pruned "
             "files are stored densely unless the row says otherwise (Q4_1 has no exact 0, so pruned matrices become q8_0 "
             "unless the joint row quantizes them), so their sparsity makes files larger than the reference, not smaller; "
             "the rows 'stored as sparse-q8/sparse-q4/nm-q8/nm-q4' keep only the non-zeros (docs/SPARSE_FORMATS.md). "
             "The embedding and output matrix stay dense in every row. "
             "bpw = 8 × tensor bytes / parameters of the row's own file.", "",
             "| row | method | settings | sparsity % | bpw | MiB | PPL | ΔPPL % | KLD mean | KLD p99 | same top % "
             "| HellaSwag % | SST-2 % | decode t/s | compress s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        if "error" in r or "ppl" not in r:
            continue
        busy = "*" if r.get("bench_other_cores", 0) > cq.BUSY_LIMIT else ""
        lines.append(f"| {r['id']} | {r['method']} | {r['settings']} | {cell(r.get('sparsity_pct'), '.1f')} | {r['bpw']:.3f} | "
                     f"{r['file_bytes'] / 1048576:.1f} | {r['ppl']:.3f} | {cell(r.get('delta_ppl_pct'), '+.1f')} | "
                     f"{cell(r.get('kld_mean'), '.4f')} | {cell(r.get('kld_p99'), '.3f')} | {cell(r.get('same_top_pct'), '.1f')} | "
                     f"{cell(r.get('hellaswag_acc'), '.1f')} | {cell(r.get('sst2_acc'), '.1f')} | {cell(r.get('decode_ts'), '.1f')}{busy} | "
                     f"{cell(r.get('compress_seconds'), '.1f')}{f' ({cpu:.0f})' if (cpu := r.get('compress_cpu_seconds')) else ''} |")
    lines += ["", f"HellaSwag ±{ref.get('hellaswag_stderr', 0):.1f}, SST-2 ±{ref.get('sst2_stderr', 0):.1f} points (binomial "
              "standard error at the reference's accuracy). Compress s is the wall time of the `frugal prune` / `frugal "
              "quantize` command (calibration included) on the shared machine, CPU seconds (user + system) in brackets where recorded. Decode t/s is the best repetition; * marks a "
              f"row during whose benchmark other processes used more than {cq.BUSY_LIMIT} of a core, so its speed is not "
              "comparable (the machine was shared with other jobs throughout)."]
    failed = [r for r in report["rows"] if "error" in r]
    if failed:
        lines += ["", "Rows that did not run:", ""] + [f"- {r['id']}: failed: {r['error']}" for r in failed]
    lines += ["", "Commands (BASE = the model above, OUT = the row's file):", ""]
    for r in report["rows"][1:]:
        if r.get("command"):
            lines.append(f"- {r['id']}: `{r['command']}`")
    return "\n".join(lines) + "\n"


STYLES = {"magnitude": ("tab:gray", "o"), "Wanda": ("tab:blue", "s"), "Wanda + OWL": ("tab:cyan", "s"),
          "SparseGPT": ("tab:green", "D"), "SparseGPT + OWL": ("lime", "D"), "SparseGPT + 4-bit": ("tab:olive", "P"),
          "GPTQ": ("tab:red", "x"), "layers": ("tab:purple", "v"), "width": ("tab:orange", "^"),
          # compact sparse storage: stars, in the colour of the method that pruned them, one shade per format
          "SparseGPT, sparse-q8": ("darkgreen", "*"), "SparseGPT, sparse-q4": ("mediumseagreen", "*"),
          "SparseGPT, nm-q8": ("darkslategray", "*"), "SparseGPT, nm-q4": ("teal", "*")}


def plots(report, out_dir, name):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        cq.log("compare_prune: matplotlib is not installed (scripts/setup.sh installs it); no plots")
        return []
    rows = [r for r in report["rows"][1:] if "error" not in r and r.get("kld_mean")]
    ref = report["rows"][0]
    written = []
    for xkey, xlabel, suffix in (("bpw", "bits per weight (all tensors, as stored)", "kld_vs_bpw"),
                                 ("decode_ts", "decode tokens/s (frugal bench, shared machine)", "kld_vs_speed")):
        fig, ax = plt.subplots(figsize=(10, 6.5))
        seen = set()
        for r in rows:
            if r.get(xkey) is None:
                continue
            color, marker = STYLES.get(r["method"], ("black", "*"))
            ax.scatter(r[xkey], r["kld_mean"], c=color, marker=marker, s=90 if marker == "*" else 45, zorder=3,
                       label=r["method"] if r["method"] not in seen else None)
            seen.add(r["method"])
            ax.annotate(r["id"], (r[xkey], r["kld_mean"]), textcoords="offset points", xytext=(4, 3), fontsize=6.5, color=color)
        if ref.get(xkey):
            ax.axvline(ref[xkey], color="gray", ls=":", lw=1, label=f"reference ({ref[xkey]:.2f})")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("KL divergence to the reference (mean, log scale)")
        ax.set_title(f"{os.path.basename(report['base'])}: pruning and quantization, KLD vs {xkey.replace('_ts', ' speed')}")
        ax.grid(True, which="both", alpha=0.3)
        if seen:
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{name}_{suffix}.png")
        fig.savefig(path, dpi=130)
        plt.close(fig)
        written.append(path)
    return written


def write_report(report, args):
    text = markdown(report)
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump(report, f, indent=2)
    return text


# ---------------------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10, help="WikiText-2 chunks of 512 tokens for PPL/KLD")
    parser.add_argument("--hellaswag", type=int, default=50, help="HellaSwag tasks (0 = skip)")
    parser.add_argument("--sst2", type=int, default=100, help="SST-2 sentences (0 = skip)")
    parser.add_argument("--calib-tokens", type=int, default=4096, help="calibration tokens for every calibrated row")
    parser.add_argument("--bench-n", type=int, default=32, help="decode tokens per frugal bench run")
    parser.add_argument("--bench-r", type=int, default=2, help="frugal bench repetitions")
    parser.add_argument("--threads", "-t", type=int, default=2)
    parser.add_argument("--only", help="run only rows whose id matches this regular expression (the reference always runs)")
    parser.add_argument("--reuse", action="store_true", help="reuse files already made in --work by the same command")
    parser.add_argument("--list", action="store_true", help="print the row ids and exit")
    parser.add_argument("--skip-reference", action="store_true",
                        help="do not evaluate the reference alone (for a part run joined later with --combine)")
    parser.add_argument("--work", default=os.path.join(os.environ.get("FRUGAL_CACHE", os.path.expanduser("~/.cache/frugal")), "prune-compare"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--name", default="prune_comparison", help="file name stem of the report and plots")
    parser.add_argument("--label", help="a word for the report's title (e.g. the model)")
    parser.add_argument("--model", help="base GGUF (default: scripts/fetch_model.sh's SmolLM2 Q4_1)")
    parser.add_argument("--data", default=os.environ.get("FRUGAL_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data")))
    parser.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="measure nothing: join the rows of these reports (runs split with --only, e.g. in parallel; "
                             "the first one's reference and settings are kept) into --out/--name, in this script's row order")
    args = parser.parse_args()
    if args.combine:
        reports = []
        for p in args.combine:
            with open(p) as f:
                reports.append(json.load(f))
        report = reports[0]
        by_id = {}
        for rep in reports:
            for r in rep["rows"][1:]:
                # A measured row wins over a failed one or one a cut-short run never reached.
                if r["id"] not in by_id or ("ppl" in r and "ppl" not in by_id[r["id"]]):
                    by_id[r["id"]] = r
        order = [rid for rid, *_ in ROWS]
        report["rows"] = report["rows"][:1] + sorted(by_id.values(), key=lambda r: order.index(r["id"]) if r["id"] in order else len(order))
        report["label"] = args.label or report.get("label")
        report["seconds"] = sum(rep.get("seconds", 0) for rep in reports)
        os.makedirs(args.out, exist_ok=True)
        print(write_report(report, args))
        plots(report, args.out, args.name)
        return
    args.text = os.path.join(args.data, "wikitext2-test.txt")
    args.calib = os.path.join(args.data, "tinyshakespeare.txt")
    only = re.compile(args.only) if args.only else None

    rows = [{"id": "reference", "method": "none", "settings": "the base model itself"}]
    rows += [{"id": rid, "method": m, "settings": st, "command_name": c, "args": a}
             for rid, m, st, c, a in ROWS if only is None or only.search(rid)]
    if args.list:
        for r in rows:
            print(f"{r['id']:18} {r['method']:18} {r['settings']}")
        return
    for path in (args.text, args.calib):
        if not os.path.exists(path):
            sys.exit(f"compare_prune: no such data file: {path} (--data DIR)")
    if args.model:
        base = args.model
    else:
        result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_model.sh")], stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            sys.exit("compare_prune: scripts/fetch_model.sh failed (--model GGUF)")
        base = result.stdout.strip().splitlines()[-1]
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    runner = Runner(args, base, peer_bin=None)
    ref_block_params = block_params(base)

    report = {"date": str(datetime.date.today()), "base": base, "label": args.label, "only": args.only,
              "settings": {k: getattr(args, k) for k in ("chunks", "hellaswag", "sst2", "calib_tokens", "bench_n", "bench_r", "threads")},
              "rows": rows}
    started = time.monotonic()
    done = 0
    for i, r in enumerate(rows):
        elapsed = time.monotonic() - started
        eta = f", ETA {cq.fmt_time(elapsed / done * (len(rows) - i))}" if done else ""
        cq.log(f"[{i + 1}/{len(rows)}] {r['id']} ({r['method']}, {r['settings']}) - elapsed {cq.fmt_time(elapsed)}{eta}")
        row_start = time.monotonic()
        try:
            if r["id"] == "reference":
                path = base
                if args.skip_reference:
                    raise cq.CommandFailed("skipped (--skip-reference)")
            else:
                cq.log(f"    frugal {r['command_name']} {' '.join(r['args'])} ...")
                path, r["compress_seconds"], cmd = runner.made_file(r["id"], r["command_name"], r["args"])
                r["command"] = f"frugal {r['command_name']} -m BASE -o OUT " + " ".join(cmd[cmd.index("-t"):]).replace(args.calib, "tinyshakespeare.txt")
                r["compress_cpu_seconds"] = runner.cpu_seconds
                cq.log(f"    made in {r['compress_seconds']:.1f} s" + (f" ({runner.cpu_seconds:.1f} s CPU)" if runner.cpu_seconds else ""))
            r["file"] = path
            r.update(cq.layout(path))
            method = r.get("args", ["--method", "none"])[r.get("args", ["--method"]).index("--method") + 1]
            if method in STRUCTURED:
                r["sparsity_pct"] = 100.0 * (1 - block_params(path) / ref_block_params)
            elif r["id"] == "reference" or r["command_name"] == "prune":
                zf = zero_fraction(path)
                r["sparsity_pct"] = None if zf is None else 100.0 * zf
            cq.log("    frugal eval (PPL/KLD, then HellaSwag/SST-2) and frugal bench ...")
            if r["id"] == "reference":
                ev = runner.evaluate(path, with_base=False)
                ev.update({"kld_mean": 0.0, "kld_p99": 0.0, "same_top_pct": 100.0, "delta_ppl_pct": 0.0})
            else:
                ev = runner.evaluate(path)
            for k in ("model", "base", "bits_per_weight"):
                ev.pop(k, None)
            r.update(ev)
            cq.log(f"    sparsity {cell(r.get('sparsity_pct'), '.1f')}%, bpw {r['bpw']:.3f}, PPL {r['ppl']:.3f}, KLD {r['kld_mean']:.4f}, "
                   f"decode {r['decode_ts']:.1f} t/s ({cq.fmt_time(time.monotonic() - row_start)})")
        except (cq.CommandFailed, OSError, ValueError, KeyError) as e:
            r["error"] = str(e)
            cq.log(f"    failed: {e}")
        done += 1
        report["seconds"] = time.monotonic() - started
        write_report(report, args)  # after every row: a run cut short keeps what it measured
        written = plots(report, args.out, args.name)
    text = write_report(report, args)
    print(text)
    cq.log(f"compare_prune: done in {cq.fmt_time(report['seconds'])}; wrote {args.name}.md/.json"
           f"{' and ' + ', '.join(os.path.basename(p) for p in written) if written else ''} to {args.out}")


if __name__ == "__main__":
    main()
