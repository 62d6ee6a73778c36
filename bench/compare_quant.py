#!/usr/bin/env python3
"""Quantization head to head: every frugal method/setting and llama.cpp's llama-quantize (with and
without an importance matrix) applied to the same model, every row evaluated by the same code.

Each row is quantized from the default model (SmolLM2-135M-Instruct Q4_1, scripts/fetch_model.sh)
into --work, then measured against that model with `frugal eval` (perplexity, KL divergence,
same top token on WikiText-2; zero-shot HellaSwag and SST-2 accuracy) and `frugal bench` (decode
tokens/s). A row whose quantize or eval command fails is kept in the table as "failed: <message>"
so the script runs before a method lands. A cross-check runs llama.cpp's own llama-perplexity on a
few files that both engines load. Calibration (frugal's GPTQ/AWQ/SmoothQuant/LLM.int8(),
llama-imatrix) reads tinyshakespeare.txt with one token budget, never the evaluation text.

Writes quant_comparison.md / .json, quant_kld_vs_bpw.png and quant_speed_vs_bpw.png to --out.
Each row runs `frugal eval` twice: against the reference (PPL/KLD only) and alone (task accuracy),
so the reference's own task accuracy is computed once, not once per row. A default run takes about
45 minutes on an idle 2-core machine (the six AWQ rows are a third of it), about twice that when
other work shares the cores; decode speeds are only comparable when measured on an idle machine
(the table flags the rows whose benchmark was disturbed).

usage: bench/compare_quant.py [--chunks 8] [--hellaswag 100] [--sst2 200] [--threads 2]
                              [--only REGEX] [--quick] [--reuse] [--work DIR] [--out DIR] [--list]
"""
import argparse
import datetime
import json
import math
import os
import re
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------
# The rows. A frugal row is (id, method label, settings label, `frugal quantize` arguments);
# "{llama:TYPE}" in the arguments stands for the llama-quantize output of TYPE (made on demand, so
# --types-from rows work under --only too). A llama row is (id, llama-quantize type, imatrix?).
# Adding a method or setting is adding a line here.
# ---------------------------------------------------------------------------------------------
FRUGAL_ROWS = [
    ("rtn-q8_0", "RTN", "8-bit g32 sym (q8_0)", ["--method", "rtn", "--bits", "8", "--group", "32", "--symmetric"]),
    ("rtn-w8-perchannel", "RTN", "8-bit per-channel sym", ["--method", "rtn", "--bits", "8", "--group", "-1", "--symmetric"]),
    ("rtn-q6_k", "RTN", "q6_K layout", ["--method", "rtn", "--format", "q6_k"]),
    ("rtn-q5_k", "RTN", "q5_K layout", ["--method", "rtn", "--format", "q5_k"]),
    ("rtn-q4_1", "RTN", "4-bit g32 asym (q4_1, the source grid)", ["--method", "rtn", "--bits", "4", "--group", "32"]),
    ("rtn-q4_k", "RTN", "q4_K layout", ["--method", "rtn", "--format", "q4_k"]),
    ("rtn-q4_0", "RTN", "q4_0 layout", ["--method", "rtn", "--format", "q4_0"]),
    ("rtn-4b-g128", "RTN", "4-bit g128 asym (g64 on 576-wide rows)", ["--method", "rtn", "--bits", "4", "--group", "128", "--group-fallback"]),
    ("rtn-q3_k", "RTN", "q3_K layout", ["--method", "rtn", "--format", "q3_k"]),
    ("rtn-3b-g128", "RTN", "3-bit g128 asym (g64 on 576-wide rows)", ["--method", "rtn", "--bits", "3", "--group", "128", "--group-fallback"]),
    ("rtn-q2_k", "RTN", "q2_K layout", ["--method", "rtn", "--format", "q2_k"]),
    ("gptq-4b-g128", "GPTQ", "4-bit g128 asym (g64 on 576-wide rows)", ["--method", "gptq", "--bits", "4", "--group", "128", "--group-fallback"]),
    ("gptq-q4_k", "GPTQ", "q4_K layout", ["--method", "gptq", "--format", "q4_k"]),
    ("gptq-3b-g128", "GPTQ", "3-bit g128 asym (g64 on 576-wide rows)", ["--method", "gptq", "--bits", "3", "--group", "128", "--group-fallback"]),
    ("gptq-q3_k", "GPTQ", "q3_K layout", ["--method", "gptq", "--format", "q3_k"]),
    ("gptq-as-Q4_K_M", "GPTQ", "types of llama Q4_K_M", ["--method", "gptq", "--types-from", "{llama:Q4_K_M}"]),
    ("gptq-as-Q3_K_M", "GPTQ", "types of llama Q3_K_M", ["--method", "gptq", "--types-from", "{llama:Q3_K_M}"]),
    ("awq-4b-g128", "AWQ", "4-bit g128 asym (g64 on 576-wide rows)", ["--method", "awq", "--bits", "4", "--group", "128", "--group-fallback"]),
    ("awq-q4_k", "AWQ", "q4_K layout", ["--method", "awq", "--format", "q4_k"]),
    ("awq-3b-g128", "AWQ", "3-bit g128 asym (g64 on 576-wide rows)", ["--method", "awq", "--bits", "3", "--group", "128", "--group-fallback"]),
    ("awq-q3_k", "AWQ", "q3_K layout", ["--method", "awq", "--format", "q3_k"]),
    ("awq-as-Q4_K_M", "AWQ", "types of llama Q4_K_M", ["--method", "awq", "--types-from", "{llama:Q4_K_M}"]),
    ("awq-as-Q3_K_M", "AWQ", "types of llama Q3_K_M", ["--method", "awq", "--types-from", "{llama:Q3_K_M}"]),
    ("smoothquant-w8a8", "SmoothQuant", "W8A8, alpha 0.5", ["--method", "smoothquant", "--alpha", "0.5"]),
    ("smoothquant-w8a8-a0.8", "SmoothQuant", "W8A8, alpha 0.8", ["--method", "smoothquant", "--alpha", "0.8"]),
    ("w8a8-nosmooth", "W8A8", "int8 per-channel x int8 per-token, no smoothing", ["--method", "w8a8"]),
    ("llm-int8", "LLM.int8()", "int8 + fp16 outliers", ["--method", "llm-int8"]),
]
LLAMA_ROWS = [
    ("llama-Q8_0", "Q8_0", False),
    ("llama-Q6_K", "Q6_K", False),
    ("llama-Q4_K_M", "Q4_K_M", False),
    ("llama-Q4_0", "Q4_0", False),
    ("llama-Q3_K_M", "Q3_K_M", False),
    ("llama-Q2_K", "Q2_K", False),
    ("llama-imat-Q4_K_M", "Q4_K_M", True),
    ("llama-imat-Q4_0", "Q4_0", True),
    ("llama-imat-Q3_K_M", "Q3_K_M", True),
    ("llama-imat-Q2_K", "Q2_K", True),
]
CALIBRATED_METHODS = {"gptq", "awq", "smoothquant", "w8a8", "llm-int8"}
# llama-perplexity runs on these (first loadable candidate of each group) next to frugal's PPL.
CROSS_CHECK = [["reference"], ["llama-Q4_K_M"], ["gptq-as-Q4_K_M", "gptq-q4_k"], ["rtn-q8_0"]]
# Rough seconds at 2 threads for the ETA: quantize (fixed, per calibration token) by kind.
QUANT_COST = {"rtn": (2, 0), "gptq": (22, 0.010), "awq": (150, 0.013), "smoothquant": (3, 0.001), "w8a8": (3, 0.001), "llm-int8": (3, 0.001),
              "llama": (2, 0), "llama-imat": (6, 0), "imatrix": (2, 0.012)}

BUSY_LIMIT = 0.2  # cores used by other processes during a speed measurement before it is flagged
GGML_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0", 9: "q8_1", 10: "q2_K",
              11: "q3_K", 12: "q4_K", 13: "q5_K", 14: "q6_K", 15: "q8_K", 16: "iq2_xxs", 17: "iq2_xs", 18: "iq3_xxs",
              19: "iq1_s", 20: "iq4_nl", 21: "iq3_s", 22: "iq2_s", 23: "iq4_xs", 24: "i8", 25: "i16", 26: "i32",
              27: "i64", 28: "f64", 29: "iq1_m", 30: "bf16", 34: "tq1_0", 35: "tq2_0"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fmt_time(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------
# GGUF tensor table (sizes from the data offsets, so it works for any type, frugal's own too).
# ---------------------------------------------------------------------------------------------
def gguf_tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(vtype):
        nonlocal pos
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, n = take("I"), take("Q")
            if etype in scalar:  # skip numeric arrays in one step
                pos += n * struct.calcsize(scalar[etype])
                return None
            for _ in range(n):
                value(etype)
            return None
        return take(scalar[vtype])

    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    pos = 4
    _version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    alignment = 32
    for _ in range(n_kv):
        key = string()
        v = value(take("I"))
        if key == "general.alignment":
            alignment = v
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        ttype, offset = take("I"), take("Q")
        infos.append([name, dims, ttype, offset])
    start = (pos + alignment - 1) // alignment * alignment
    order = sorted(range(len(infos)), key=lambda i: infos[i][3])
    tensors = []
    for k, i in enumerate(order):
        name, dims, ttype, offset = infos[i]
        end = infos[order[k + 1]][3] if k + 1 < len(order) else len(data) - start
        tensors.append({"name": name, "dims": dims, "type": type_name(ttype),
                        "elements": math.prod(dims), "bytes": end - offset, "offset": start + offset})
    return tensors


def type_name(type_id):
    if type_id in GGML_TYPES:
        return GGML_TYPES[type_id]
    # frugal's generic group types (src/tensor/generic_group.h): 0x46510000 | 0x1000 if symmetric
    # | bits << 4 | log2(group / 32), named fq<bits>[s]_g<group>.
    if type_id & 0xFFFF0000 == 0x46510000 and type_id & 0xE000 == 0:
        bits, group = (type_id >> 4) & 0xF, 32 << (type_id & 0xF)
        return f"fq{bits}{'s' if type_id & 0x1000 else ''}_g{group}"
    return f"type{type_id}"


def layout(path):
    """Bits per weight over all tensors and over the transformer layers' matrices, and the types."""
    tensors = gguf_tensors(path)
    params = sum(t["elements"] for t in tensors)
    nbytes = sum(t["bytes"] for t in tensors)
    layers = [t for t in tensors if t["name"].startswith("blk.") and len(t["dims"]) == 2]
    types = {}
    for t in tensors:
        if len(t["dims"]) == 2:
            types[t["type"]] = types.get(t["type"], 0) + 1
    embd = next((t["type"] for t in tensors if t["name"] == "token_embd.weight"), None)
    return {"params": params, "tensor_bytes": nbytes, "file_bytes": os.path.getsize(path), "embedding_type": embd,
            "bpw": 8.0 * nbytes / params,
            "bpw_layers": 8.0 * sum(t["bytes"] for t in layers) / sum(t["elements"] for t in layers),
            "types": dict(sorted(types.items(), key=lambda kv: -kv[1]))}


# ---------------------------------------------------------------------------------------------
# Running the tools.
# ---------------------------------------------------------------------------------------------
class CommandFailed(Exception):
    pass


def error_line(text):
    lines = [l.strip() for l in text.replace("\r", "\n").splitlines() if l.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "failed" in line.lower():
            return re.sub(r"^frugal: error: ", "", line)[:300]
    return (lines[-1] if lines else "no output")[:300]


def wait_for(binary):
    # The frugal binary disappears for a moment while it is being rebuilt.
    for _ in range(120):
        if os.path.exists(binary):
            return
        time.sleep(5)
    raise CommandFailed(f"{binary} does not exist")


def run(cmd, timeout=None):
    """Runs cmd; returns (stdout, stderr, seconds) or raises CommandFailed with its error line."""
    wait_for(cmd[0])
    start = time.monotonic()
    try:
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"timed out after {timeout} s: {' '.join(cmd[:4])} ...")
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise CommandFailed(error_line(result.stderr + "\n" + result.stdout) + f" (exit {result.returncode})")
    return result.stdout, result.stderr, seconds


def json_from(stdout):
    start = min(i for i in (stdout.find("{"), stdout.find("[")) if i >= 0)
    return json.loads(stdout[start:])


def busy_seconds():
    """(CPU seconds the whole machine has been busy, CPU seconds of this script's finished children)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    children = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), children.children_user + children.children_system


class Runner:
    def __init__(self, args, base, peer_bin):
        self.args = args
        self.base = base
        self.peer_bin = peer_bin
        self.threads = str(args.threads)
        self.imatrix_seconds = None
        self.llama_files = {}  # (type, imatrix) -> (path, seconds)

    def cached(self, path, cmd):
        """With --reuse, the recorded time of an existing output made by the same command; otherwise None."""
        meta = path + ".json"
        if self.args.reuse and os.path.exists(path) and os.path.exists(meta):
            with open(meta) as f:
                recorded = json.load(f)
            if recorded.get("command") == cmd:
                return recorded["seconds"]
        return None

    def record(self, path, seconds, cmd):
        with open(path + ".json", "w") as f:
            json.dump({"seconds": seconds, "command": cmd, "when": datetime.datetime.now().isoformat(timespec="seconds")}, f)

    def imatrix(self):
        """The importance matrix, made once per run (or reused with --reuse), and the seconds it took."""
        path = os.path.join(self.args.work, f"imatrix-{self.args.calib_tokens}.dat")
        if self.imatrix_seconds is not None:
            return path, self.imatrix_seconds
        chunks = max(1, self.args.calib_tokens // 512)
        cmd = [os.path.join(self.peer_bin, "llama-imatrix"), "-m", self.base, "-f", self.args.calib,
               "-o", path, "-c", "512", "--chunks", str(chunks), "-t", self.threads]
        seconds = self.cached(path, cmd)
        if seconds is None:
            _, _, seconds = run(cmd)
            self.record(path, seconds, cmd)
        self.imatrix_seconds = seconds
        return path, seconds

    def llama_file(self, qtype, use_imatrix):
        key = (qtype, use_imatrix)
        if key in self.llama_files:
            return self.llama_files[key]
        path = os.path.join(self.args.work, f"llama-{'imat-' if use_imatrix else ''}{qtype}.gguf")
        cmd = [os.path.join(self.peer_bin, "llama-quantize"), "--allow-requantize"]
        if use_imatrix:
            cmd += ["--imatrix", self.imatrix()[0]]
        cmd += [self.base, path + ".part", qtype, self.threads]
        seconds = self.cached(path, cmd)
        if seconds is None:
            _, _, seconds = run(cmd)
            os.replace(path + ".part", path)
            self.record(path, seconds, cmd)
        self.llama_files[key] = (path, seconds)
        return path, seconds

    def frugal_file(self, row_id, quant_args):
        path = os.path.join(self.args.work, f"frugal-{row_id}.gguf")
        resolved = []
        for a in quant_args:
            m = re.fullmatch(r"\{llama:(\w+)\}", a)
            resolved.append(self.llama_file(m.group(1), False)[0] if m else a)
        # frugal quantize writes its output atomically; the .json beside it marks it complete.
        cmd = [self.args.frugal, "quantize", "-m", self.base, "-o", path, "-t", self.threads] + resolved
        if quant_args[quant_args.index("--method") + 1] in CALIBRATED_METHODS:
            cmd += ["--calib", self.args.calib, "--calib-tokens", str(self.args.calib_tokens)]
        seconds = self.cached(path, cmd)
        if seconds is None:
            for stale in (path, path + ".json"):
                if os.path.exists(stale):
                    os.remove(stale)
            _, _, seconds = run(cmd)
            self.record(path, seconds, cmd)
        return path, seconds

    def evaluate(self, path, with_base=True):
        a = self.args
        out = {}
        start = time.monotonic()
        if with_base:
            # The base's log-probabilities are computed once per run (--save-base) and read back by
            # every later row (--base-logits), so the sweep does not re-run the base for each file.
            base_logits = os.path.join(a.work, f"base-logits-c512-{a.chunks}.bin")
            if getattr(self, "base_logits_ready", False):
                base_args = ["--base-logits", base_logits]
            else:
                base_args = ["--base", self.base, "--save-base", base_logits]
            stdout, _, _ = run([a.frugal, "eval", "-m", path] + base_args + ["-f", a.text, "-c", "512",
                                "--chunks", str(a.chunks), "--hellaswag", "0", "--sst2", "0", "-o", "json", "-t", self.threads])
            self.base_logits_ready = True
            out.update(json_from(stdout))
        # Task accuracy of the model alone (the base's is measured once, on the reference row).
        if a.hellaswag > 0 or a.sst2 > 0 or not with_base:
            stdout, _, _ = run([a.frugal, "eval", "-m", path, "-f", a.text, "-c", "512",
                                "--chunks", str(1 if with_base else a.chunks), "--hellaswag", str(a.hellaswag),
                                "--sst2", str(a.sst2), "-o", "json", "-t", self.threads])
            tasks = json_from(stdout)
            if not with_base:
                out.update(tasks)
            for k in ("hellaswag_acc", "hellaswag_stderr", "hellaswag_tasks", "sst2_acc", "sst2_stderr", "sst2_tasks"):
                if k in tasks:
                    out[k] = tasks[k]
        out["eval_seconds"] = time.monotonic() - start
        before = busy_seconds()
        stdout, _, seconds = run([a.frugal, "bench", "-m", path, "-p", "0", "-n", str(a.bench_n), "-r", str(a.bench_r),
                                  "-t", self.threads, "-o", "json"])
        after = busy_seconds()
        # CPU the rest of the machine used meanwhile (in cores): decode on all cores collapses under it.
        out["bench_other_cores"] = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / seconds)
        # The best repetition: on a shared machine the others measure the neighbours' load too.
        bench = json_from(stdout)[0]
        out["decode_ts"] = max(bench["samples_ts"])
        out["decode_ts_avg"], out["decode_ts_stddev"] = bench["avg_ts"], bench["stddev_ts"]
        return out

    def llama_perplexity(self, path):
        stdout, stderr, _ = run([os.path.join(self.peer_bin, "llama-perplexity"), "-m", path, "-f", self.args.text,
                                 "-c", "512", "--chunks", str(self.args.chunks), "-t", self.threads])
        m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", stdout + stderr)
        if not m:
            raise CommandFailed("no 'Final estimate' in llama-perplexity output")
        return float(m.group(1)), float(m.group(2))


# ---------------------------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------------------------
def cell(value, fmt):
    return "" if value is None else format(value, fmt)


def embedding_note(report):
    ok = [r for r in report["rows"] if "error" not in r and r.get("embedding_type")]
    if not ok:
        return ""
    ref = ok[0]["embedding_type"]
    others = sorted({r["embedding_type"] for r in ok} - {ref})
    share = 100.0 * report.get("embedding_params", 0) / ok[0]["params"] if report.get("embedding_params") else None
    what = f"The token embedding (tied output head{f', {share:.0f}% of the parameters' if share else ''}) is {ref} in the reference"
    if not others:
        return what + " and in every row."
    return what + f"; some rows store it as {', '.join(others)} (see the storage types below)."


def markdown(report):
    s = report["settings"]
    ref = report["rows"][0]
    lines = [f"# Quantization comparison, {report['date']}", "",
             f"Model: `{os.path.basename(report['base'])}` ({ref.get('params', 0) / 1e6:.1f} M parameters). "
             f"Every row is quantized from it and measured by the same code: `frugal eval` against it "
             f"(WikiText-2 test, {s['chunks']} chunks of 512 tokens: perplexity, KL divergence KL(reference || row) per "
             f"token, same top token), zero-shot HellaSwag ({s['hellaswag']} tasks) and SST-2 ({s['sst2']} sentences), "
             f"and `frugal bench` decode speed (tg{s['bench_n']}, {s['bench_r']} repetitions, {s['threads']} threads). "
             f"Calibration (GPTQ, AWQ, SmoothQuant, LLM.int8(), llama-imatrix) reads the first {s['calib_tokens']} tokens "
             f"of `tinyshakespeare.txt`, never the evaluation text.", "",
             "**Note.** The reference is the dequantized Q4_1 model (no full-precision model is available), so "
             "re-quantizing to its own grid (4-bit groups of 32 with a min, q4_1) is free (KLD 0), and every other grid "
             "pays a re-rounding error that tells more about how the grids line up than about the method: a 5-bit row "
             "(q5_0, q5_1, q5_K) can score worse than a 4-bit one. The 3- and 2-bit rows are the honest comparison. " + embedding_note(report) + " llama.cpp's k-quant layouts need rows of 256 elements: the "
             "576-wide matrices of this model fall back to 32-element types (llama.cpp's Q3_K_M has no 3-bit tensor "
             "here), so 'bpw (layers)' (the transformer layers' matrices only) tells the real compression.", "",
             "| row | tool | method | settings | bpw | bpw (layers) | MiB | PPL | ΔPPL % | KLD mean | KLD p99 | same top % "
             "| HellaSwag % | SST-2 % | decode t/s | quantize s |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ok = [r for r in report["rows"] if "error" not in r]
    ok = [ok[0]] + sorted(ok[1:], key=lambda r: (-r["bpw"], r.get("kld_mean", 0)))
    for r in ok:
        qs = ""
        if r.get("quantize_seconds") is not None:
            qs = f"{r['quantize_seconds']:.1f}"
            if r.get("imatrix_seconds"):
                qs += f" + {r['imatrix_seconds']:.1f}"
        lines.append(f"| {r['id']} | {r['tool']} | {r['method']} | {r['settings']} | {r['bpw']:.3f} | {r['bpw_layers']:.3f} | "
                     f"{r['file_bytes'] / 1048576:.1f} | {cell(r.get('ppl'), '.3f')} | {cell(r.get('delta_ppl_pct'), '+.2f')} | "
                     f"{cell(r.get('kld_mean'), '.5f')} | {cell(r.get('kld_p99'), '.4f')} | {cell(r.get('same_top_pct'), '.2f')} | "
                     f"{cell(r.get('hellaswag_acc'), '.1f')} | {cell(r.get('sst2_acc'), '.1f')} | "
                     f"{cell(r.get('decode_ts'), '.1f')}{'*' if r.get('bench_other_cores', 0) > BUSY_LIMIT else ''} | {qs} |")
    failed = [r for r in report["rows"] if "error" in r]
    lines += ["", "bpw = 8 × tensor bytes / parameters (metadata such as the tokenizer not counted); MiB = whole file. "
              "Sorted by bpw. HellaSwag ±%.1f, SST-2 ±%.1f points (binomial standard error at the reference's accuracy). "
              "Quantize s is wall time of the quantize command (calibration included); '+ N' is llama-imatrix's time, "
              "shared by the imatrix rows. Decode t/s is the best of %d repetitions; with all cores in use, decode slows down "
              "many times over when anything else runs, so a * marks a row during whose benchmark other processes "
              "used more than %.1f of a core: its speed is not comparable." % (
                  ref.get("hellaswag_stderr", 0), ref.get("sst2_stderr", 0), s["bench_r"], BUSY_LIMIT) if ok else ""]
    if failed:
        lines += ["", "Rows that did not run:", ""]
        for r in failed:
            lines.append(f"- {r['id']} ({r['tool']} {r['method']}, {r['settings']}): failed: {r['error']}")
    if report.get("cross_check"):
        lines += ["", "## Cross-check with llama.cpp's llama-perplexity", "",
                  f"Same files, same text, `-c 512 --chunks {s['chunks']}`.", "",
                  "| row | frugal PPL | llama-perplexity PPL | difference % |", "| --- | ---: | ---: | ---: |"]
        for c in report["cross_check"]:
            if "error" in c:
                lines.append(f"| {c['id']} | {cell(c.get('frugal_ppl'), '.4f')} | failed: {c['error']} | |")
            else:
                lines.append(f"| {c['id']} | {c['frugal_ppl']:.4f} | {c['llama_ppl']:.4f} ± {c['llama_ppl_error']:.4f} | "
                             f"{100 * (c['frugal_ppl'] / c['llama_ppl'] - 1):+.3f} |")
    layouts = [r for r in report["rows"] if "types" in r]
    if layouts:
        lines += ["", "## Storage types of the 2-D tensors", "", "| row | token embedding | all 2-D tensors (count) |",
                  "| --- | --- | --- |"]
        for r in layouts:
            lines.append(f"| {r['id']} | {r.get('embedding_type') or ''} | {', '.join(f'{k} ×{v}' for k, v in r['types'].items())} |")
    return "\n".join(lines) + "\n"


def plots(report, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("compare_quant: matplotlib is not installed (scripts/setup.sh installs it); no plots")
        return []
    rows = [r for r in report["rows"][1:] if "error" not in r and r.get("bpw")]
    styles = {"RTN": ("tab:blue", "o"), "GPTQ": ("tab:green", "s"), "AWQ": ("tab:orange", "D"),
              "SmoothQuant": ("tab:purple", "v"), "LLM.int8()": ("tab:brown", "^"),
              "llama-quantize": ("black", "x"), "llama-quantize + imatrix": ("tab:red", "P")}
    written = []
    for key, ylabel, name, logy in (("kld_mean", "KL divergence to the reference (mean, log scale)", "quant_kld_vs_bpw.png", True),
                                     ("decode_ts", "decode tokens/s (frugal bench)", "quant_speed_vs_bpw.png", False)):
        fig, ax = plt.subplots(figsize=(10, 6.5))
        seen = set()
        for r in rows:
            value = r.get(key)
            if value is None or (logy and value <= 0):
                continue
            group = r["method"] if r["tool"] == "frugal" else r["method"]
            color, marker = styles.get(group, ("gray", "*"))
            label = (f"frugal {group}" if r["tool"] == "frugal" else group) if group not in seen else None
            seen.add(group)
            # Speeds measured while other processes ran are drawn faint (see the table's * note).
            faint = key == "decode_ts" and r.get("bench_other_cores", 0) > BUSY_LIMIT
            ax.scatter(r["bpw"], value, c=color, marker=marker, s=45, label=label, zorder=3, alpha=0.3 if faint else 1.0)
            ax.annotate(r["id"] + ("*" if faint else ""), (r["bpw"], value), textcoords="offset points", xytext=(4, 3),
                        fontsize=6.5, color=color, alpha=0.5 if faint else 1.0)
        if key == "decode_ts" and report["rows"][0].get("decode_ts"):
            ref = report["rows"][0]
            faint = ref.get("bench_other_cores", 0) > BUSY_LIMIT
            ax.scatter(ref["bpw"], ref["decode_ts"], c="gray", marker="*", s=90, label="reference (Q4_1)" + ("*" if faint else ""),
                       zorder=3, alpha=0.3 if faint else 1.0)
        if logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("bits per weight (all tensors)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{os.path.basename(report['base'])}: {ylabel.split(' (')[0]} vs size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=130)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=None, help="WikiText-2 chunks of 512 tokens for PPL/KLD (default 8)")
    parser.add_argument("--hellaswag", type=int, default=None, help="HellaSwag tasks (default 100; 0 = skip)")
    parser.add_argument("--sst2", type=int, default=None, help="SST-2 sentences (default 200; 0 = skip)")
    parser.add_argument("--calib-tokens", type=int, default=None,
                        help="calibration tokens for every calibrated method and llama-imatrix (default 2048 = 4 chunks of 512)")
    parser.add_argument("--bench-n", type=int, default=None, help="decode tokens per frugal bench run (default 64)")
    parser.add_argument("--bench-r", type=int, default=None, help="frugal bench repetitions (default 3)")
    parser.add_argument("--threads", "-t", type=int, default=2)
    parser.add_argument("--only", help="run only rows whose id matches this regular expression (the reference always runs)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (files and results go to WORK/quick)")
    parser.add_argument("--reuse", action="store_true", help="reuse quantized files (and imatrix) already in --work")
    parser.add_argument("--list", action="store_true", help="print the row ids and exit")
    parser.add_argument("--no-cross-check", action="store_true", help="skip the llama-perplexity cross-check")
    parser.add_argument("--work", default=os.path.join(os.environ.get("FRUGAL_CACHE", os.path.expanduser("~/.cache/frugal")), "quant-compare"))
    parser.add_argument("--out", help="where the table, JSON and plots go (default bench/results)")
    parser.add_argument("--model", help="base GGUF (default: scripts/fetch_model.sh's SmolLM2 Q4_1)")
    parser.add_argument("--data", default=os.environ.get("FRUGAL_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data")))
    parser.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    args = parser.parse_args()

    quick = dict(chunks=2, hellaswag=10, sst2=20, calib_tokens=512, bench_n=16, bench_r=1)
    full = dict(chunks=8, hellaswag=100, sst2=200, calib_tokens=2048, bench_n=64, bench_r=3)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.quick:  # keep smoke-run files and results apart from the real ones
        args.work = os.path.join(args.work, "quick")
    if args.out is None:
        args.out = os.path.join(args.work, "results") if args.quick else os.path.join(ROOT, "bench", "results")
    args.text = os.path.join(args.data, "wikitext2-test.txt")
    args.calib = os.path.join(args.data, "tinyshakespeare.txt")
    only = re.compile(args.only) if args.only else None

    rows = [{"id": "reference", "tool": "reference", "method": "none", "settings": "the base model itself"}]
    for rid, qtype, imat in LLAMA_ROWS:  # first: the --types-from rows read their files
        rows.append({"id": rid, "tool": "llama.cpp", "method": "llama-quantize + imatrix" if imat else "llama-quantize",
                     "settings": qtype, "qtype": qtype, "imatrix": imat})
    for rid, method, settings, qargs in FRUGAL_ROWS:
        rows.append({"id": rid, "tool": "frugal", "method": method, "settings": settings, "args": qargs})
    rows = [rows[0]] + [r for r in rows[1:] if only is None or only.search(r["id"])]
    if args.list:
        for r in rows:
            print(f"{r['id']:22} {r['tool']:10} {r['method']:25} {r['settings']}")
        return
    for path in (args.text, args.calib):
        if not os.path.exists(path):
            sys.exit(f"compare_quant: no such data file: {path} (--data DIR)")

    def setup_output(cmd):
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            sys.exit(f"compare_quant: {' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
        return result.stdout.strip().splitlines()[-1]

    base = args.model or setup_output(["bash", os.path.join(ROOT, "scripts", "fetch_model.sh")])
    peer_bin = setup_output(["bash", os.path.join(ROOT, "scripts", "build_llama_cpp.sh")])
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    runner = Runner(args, base, peer_bin)

    # Expected seconds per row, for the ETA (rescaled by what the finished rows took).
    eval_cost = 3 + 1.7 * args.chunks + 0.14 * args.hellaswag + 0.05 * args.sst2 + 2 + args.bench_n * args.bench_r / 40
    imatrix_pending = True

    def expected(r):
        nonlocal imatrix_pending
        cost = eval_cost * (1.3 if r["tool"] == "reference" else 1.0)
        def quant(kind):
            fixed, per_token = QUANT_COST.get(kind, (30, 0.01))
            return fixed + per_token * args.calib_tokens

        if r["tool"] == "llama.cpp":
            cost += quant("llama-imat" if r["imatrix"] else "llama")
            if r["imatrix"] and imatrix_pending:
                cost += quant("imatrix")
                imatrix_pending = False
        elif r["tool"] == "frugal":
            cost += quant(r["args"][r["args"].index("--method") + 1])
        return cost

    costs = [expected(r) for r in rows]
    log(f"compare_quant: {len(rows)} rows, work dir {args.work}, roughly {fmt_time(sum(costs))} expected")
    started = time.monotonic()
    done_cost = 0.0
    for i, r in enumerate(rows):
        elapsed = time.monotonic() - started
        eta = (elapsed / done_cost if done_cost else 1.0) * sum(costs[i:])
        log(f"[{i + 1}/{len(rows)}] {r['id']} ({r['tool']} {r['method']}, {r['settings']}) - elapsed {fmt_time(elapsed)}, ETA {fmt_time(eta)}")
        row_start = time.monotonic()
        try:
            if r["tool"] == "reference":
                path, r["quantize_seconds"] = base, None
            elif r["tool"] == "llama.cpp":
                path, r["quantize_seconds"] = runner.llama_file(r["qtype"], r["imatrix"])
                if r["imatrix"]:
                    r["imatrix_seconds"] = runner.imatrix()[1]
                r["command"] = f"llama-quantize --allow-requantize {'--imatrix imatrix.dat ' if r['imatrix'] else ''}BASE OUT {r['qtype']}"
            else:
                path, r["quantize_seconds"] = runner.frugal_file(r["id"], r["args"])
                r["command"] = "frugal quantize -m BASE -o OUT " + " ".join(r["args"])
            r["file"] = path
            r.update(layout(path))
            if r["tool"] == "reference":
                ev = runner.evaluate(path, with_base=False)
                ev.update({"kld_mean": 0.0, "kld_p99": 0.0, "same_top_pct": 100.0, "delta_ppl_pct": 0.0})
            else:
                ev = runner.evaluate(path)
            ev.pop("model", None)
            ev.pop("base", None)
            ev.pop("bits_per_weight", None)
            r.update(ev)
            summary = f"bpw {r['bpw']:.3f}, PPL {r['ppl']:.3f}, KLD {r['kld_mean']:.5f}"
            log(f"    {summary}, decode {r['decode_ts']:.1f} t/s ({fmt_time(time.monotonic() - row_start)})")
        except (CommandFailed, OSError, ValueError, KeyError) as e:
            r["error"] = str(e)
            log(f"    failed: {e}")
        done_cost += costs[i]

    # Cross-check: llama.cpp's perplexity on files both engines load.
    by_id = {r["id"]: r for r in rows}
    cross = []
    if not args.no_cross_check:
        for group in CROSS_CHECK:
            r = next((by_id[g] for g in group if g in by_id and "error" not in by_id[g]), None)
            if r is None:
                continue
            log(f"cross-check: llama-perplexity on {r['id']}")
            c = {"id": r["id"], "frugal_ppl": r["ppl"]}
            try:
                c["llama_ppl"], c["llama_ppl_error"] = runner.llama_perplexity(r["file"])
            except CommandFailed as e:
                c["error"] = str(e)
            cross.append(c)

    report = {"date": str(datetime.date.today()), "base": base, "quick": args.quick, "only": args.only,
              "settings": {k: getattr(args, k) for k in ("chunks", "hellaswag", "sst2", "calib_tokens", "bench_n", "bench_r", "threads")},
              "seconds": time.monotonic() - started, "rows": rows, "cross_check": cross,
              "embedding_params": next((t["elements"] for t in gguf_tensors(base) if t["name"] == "token_embd.weight"), None)}
    text = markdown(report)
    print(text)
    with open(os.path.join(args.out, "quant_comparison.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "quant_comparison.json"), "w") as f:
        json.dump(report, f, indent=2)
    written = plots(report, args.out)
    log(f"compare_quant: done in {fmt_time(report['seconds'])}; wrote quant_comparison.md/.json"
        f"{' and ' + ', '.join(os.path.basename(p) for p in written) if written else ''} to {args.out}")


if __name__ == "__main__":
    main()
