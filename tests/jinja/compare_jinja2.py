#!/usr/bin/env python3
"""Renders every .jinja chat template in llama.cpp's source (models/templates) with Python's jinja2,
set up as Hugging Face's apply_chat_template sets it up, and with `frugal template`, and
byte-compares the two for a standard conversation (system, user, assistant, user;
add_generation_prompt=True).

Exit codes: 0 all comparable templates match, 1 a mismatch, 77 skipped (jinja2 or the templates
missing). Usage: compare_jinja2.py FRUGAL_BINARY [TEMPLATE_DIR] [-v]
"""
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime

SKIP = 77

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello! What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And 3 * 3? Answer \"briefly\" <please>."},
]
BOS, EOS = "<s>", "</s>"
# A second, harder conversation: tools, an assistant tool call and the tool's answer (as
# transformers passes them: tools as JSON schemas, tool_calls with arguments as a dict).
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}]
TOOL_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temperature\": 21}"},
    {"role": "user", "content": "Thanks; and tomorrow?"},
]


# Differences understood and accepted, by (template, conversation label): the test fails only on others.
KNOWN_DIFFERENCES = {
    ("llama-cpp-deepseek-r1.jinja", "tool-call conversation"):
        "jinja2 fails (its map filter returns a generator that tojson cannot serialise); frugal's map returns "
        "a list and the template renders",
}


def hf_environment():
    """jinja2 as transformers' _compile_jinja_template builds it (utils/chat_template_utils.py)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2 import nodes

    class AIChatTemplateExtension(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AIChatTemplateExtension, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# Random templates for a differential check against jinja2: whitespace control (every mix of
# {%- -%} {%+ +%}, trim_blocks and lstrip_blocks around if/for/set/comments/expressions) and
# expressions (operators, filters, tests, methods over the value kinds templates meet).
WS_TEXTS = ["", " ", "  ", "\n", " \n", "\n  ", "a", " a ", "\t", "\n\n", "x\n  "]
ATOMS = ["1", "2", "-3", "0", "2.5", "'ab'", "'a b '", "''", "[1, 2, 3]", "[]", "['x', 'y']", "none", "true", "false",
         "{'k': 1, 'j': 'v'}", "s", "n", "l", "d", "undefined_name", "(1, 2)"]
BINOPS = ["+", "-", "*", "//", "%", "/", "~", "==", "!=", "<", ">=", "in", "not in", "and", "or"]
FILTERS = ["length", "upper", "lower", "trim", "first", "last", "list", "reverse | list", "sort", "unique | list", "string",
           "join(',')", "default('D')", "tojson", "int", "float", "abs", "items | list", "dictsort", "title", "capitalize",
           "replace('a', 'b')", "sum", "max", "min", "selectattr('k') | list", "map('string') | list", "round", "wordcount",
           "batch(2) | list"]
TESTS = ["defined", "none", "string", "number", "integer", "float", "mapping", "iterable", "sequence", "odd", "even",
         "boolean", "true", "false", "callable", "lower", "upper", "divisibleby 2", "equalto 1", "in [1, 2]"]
METHODS = [".strip()", ".upper()", ".split()", ".split('a')", ".startswith('a')", ".endswith('b')", ".replace('a', 'c')",
           ".items() | list", ".keys() | list", ".values() | list", ".get('k')", ".get('zz', 5)", "[0]", "[-1]", "[1:]",
           "[::-1]", "[1:2]", ".k", "['k']", ".title()", ".find('b')", ".count('a')", ".lstrip('a')", ".rstrip()"]
VARIABLES = {"s": "hello", "n": 7, "l": [3, 1, 2, 3], "d": {"k": "v", "a": 1}, "x": "X"}


def random_whitespace_template(rng, depth=0):
    out = ""
    for _ in range(rng.randint(1, 4)):
        out += rng.choice(WS_TEXTS)
        l, r = rng.choice(["", "-", "+"]), rng.choice(["", "-", "+"])
        kind = rng.choice(["if", "for", "set", "var", "comment"])
        if kind == "var":
            out += "{{%s x %s}}" % (l.strip("+"), r.strip("+"))
        elif kind == "comment":
            out += "{#%s c %s#}" % (l, r)
        elif kind == "set" or depth >= 2:
            out += "{%%%s set y = 1 %s%%}" % (l, r)
        else:
            inner = random_whitespace_template(rng, depth + 1)
            l2, r2 = rng.choice(["", "-", "+"]), rng.choice(["", "-", "+"])
            head, tail = ("if x", "endif") if kind == "if" else ("for i in [1, 2]", "endfor")
            out += "{%%%s %s %s%%}%s{%%%s %s %s%%}" % (l, head, r, inner, l2, tail, r2)
        out += rng.choice(WS_TEXTS)
    return out


def random_expression(rng, depth=0):
    r = rng.random()
    if depth > 2 or r < 0.3:
        return rng.choice(ATOMS)
    if r < 0.5:
        return "(%s %s %s)" % (random_expression(rng, depth + 1), rng.choice(BINOPS), random_expression(rng, depth + 1))
    if r < 0.65:
        return "(%s | %s)" % (random_expression(rng, depth + 1), rng.choice(FILTERS))
    if r < 0.75:
        return "(%s is %s%s)" % (random_expression(rng, depth + 1), rng.choice(["", "not "]), rng.choice(TESTS))
    if r < 0.9:
        return "(%s)%s" % (random_expression(rng, depth + 1), rng.choice(METHODS))
    if r < 0.95:
        return "(not %s)" % random_expression(rng, depth + 1)
    return "(%s if %s else %s)" % tuple(random_expression(rng, depth + 1) for _ in range(3))


def compare_random(env, frugal, label, make, count, seed, verbose):
    """Renders `count` random templates with both; returns the number of differing outputs (both
    render but differently, or frugal fails where jinja2 renders). frugal rendering what jinja2
    refuses is counted apart: it is more permissive in a few corners, e.g. `undefined | int`."""
    import random
    rng = random.Random(seed)
    workdir = tempfile.mkdtemp()
    template_path, variables_path = os.path.join(workdir, "t.jinja"), os.path.join(workdir, "v.json")
    with open(variables_path, "w") as f:
        json.dump(dict(VARIABLES, messages=[]), f)
    differ, permissive = [], 0
    import warnings
    for _ in range(count):
        source = make(rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = env.from_string(source).render(**VARIABLES)
        except Exception:
            expected = None
        with open(template_path, "w") as f:
            f.write(source)
        run = subprocess.run([frugal, "template", "--template-file", template_path, "--messages", variables_path],
                             capture_output=True, timeout=60)
        got = run.stdout.decode("utf-8", "replace") if run.returncode == 0 else None
        if got == expected:
            continue
        if expected is None:
            permissive += 1
        else:
            differ.append((source, expected, got, run.stderr.decode("utf-8", "replace").strip()))
    os.unlink(template_path)
    os.unlink(variables_path)
    os.rmdir(workdir)
    print("jinja2 comparison, %d random %s (seed %d): %d differ, %d render in frugal where jinja2 raises"
          % (count, label, seed, len(differ), permissive))
    for source, expected, got, err in differ[:10]:
        print("  DIFFERS    %r\n    jinja2: %r\n    frugal: %r %s" % (source, expected, got, err))
    return len(differ)


def default_template_dir():
    cache = os.environ.get("FRUGAL_CACHE", os.path.expanduser("~/.cache/frugal"))
    peer = os.path.join(cache, "peer")
    if not os.path.isdir(peer):
        return None
    for name in sorted(os.listdir(peer), reverse=True):
        d = os.path.join(peer, name, "vendor", "llama.cpp", "models", "templates")
        if name.startswith("llama_cpp_python-") and os.path.isdir(d):
            return d
    return None


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    verbose = "-v" in sys.argv
    if not args:
        print(__doc__)
        return 2
    frugal = args[0]
    try:
        env = hf_environment()
    except ImportError:
        print("SKIP: Python jinja2 is not installed (scripts/setup.sh installs it)")
        return SKIP
    template_dir = args[1] if len(args) > 1 else default_template_dir()
    if not template_dir or not os.path.isdir(template_dir):
        print("SKIP: llama.cpp's models/templates not found (scripts/build_llama_cpp.sh unpacks the source)")
        return SKIP
    names = sorted(os.path.join(template_dir, f) for f in os.listdir(template_dir) if f.endswith(".jinja"))
    if not names:
        print("SKIP: no .jinja templates in " + template_dir)
        return SKIP
    # Templates of the models frugal is tested with that llama.cpp does not ship (Gemma 3 IT).
    ours = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
    names += sorted(os.path.join(ours, f) for f in os.listdir(ours) if f.endswith(".jinja"))

    status = 0
    for label, variables in (("standard conversation", {"messages": CONVERSATION, "tools": None}),
                             ("tool-call conversation", {"messages": TOOL_CONVERSATION, "tools": TOOLS})):
        status |= compare_all(env, frugal, template_dir, names, label, variables, verbose)
    if compare_random(env, frugal, "whitespace-control templates", random_whitespace_template, 200, 1, verbose):
        status = 1
    if compare_random(env, frugal, "expressions", lambda rng: "{{ %s }}" % random_expression(rng), 300, 1, verbose):
        status = 1
    return status


def compare_all(env, frugal, template_dir, names, label, variables, verbose):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(variables, f)
        messages_path = f.name
    matched, both_failed, mismatched = [], [], []
    try:
        for path in names:
            name = os.path.basename(path)
            with open(path, encoding="utf-8") as f:
                source = f.read()
            try:
                expected = env.from_string(source).render(
                    add_generation_prompt=True, bos_token=BOS, eos_token=EOS, **variables)
                expected_error = None
            except Exception as e:  # the template itself refuses this conversation (or jinja2 cannot run it)
                expected, expected_error = None, "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            run = subprocess.run([frugal, "template", "--template-file", path, "--messages", messages_path,
                                  "--add-generation-prompt", "--bos-token", BOS, "--eos-token", EOS],
                                 capture_output=True, timeout=60)
            got = run.stdout.decode("utf-8", "replace") if run.returncode == 0 else None
            got_error = run.stderr.decode("utf-8", "replace").strip() if run.returncode != 0 else None
            if expected_error is not None and got_error is not None:
                both_failed.append((name, expected_error, got_error))
            elif expected is not None and got == expected:
                matched.append(name)
            else:
                mismatched.append((name, expected, expected_error, got, got_error))
    finally:
        os.unlink(messages_path)

    comparable = len(names) - len(both_failed)
    if verbose:
        for name in matched:
            print("  matches    " + name)
    print("jinja2 comparison, %s: %d of %d templates render byte-identically; %d fail in both (the template "
          "refuses this conversation); %d differ" % (label, len(matched), len(names), len(both_failed), len(mismatched)))
    for name, expected_error, got_error in both_failed:
        print("  both fail  %s\n    jinja2: %s\n    frugal: %s" % (name, expected_error, got_error))
    unexplained = 0
    for name, expected, expected_error, got, got_error in mismatched:
        reason = KNOWN_DIFFERENCES.get((name, label))
        unexplained += reason is None
        print("  %s %s" % ("differs (known)" if reason else "DIFFERS   ", name))
        if reason:
            print("    why: " + reason)
        if expected_error:
            print("    jinja2 fails: " + expected_error)
        if got_error:
            print("    frugal fails: " + got_error)
        if expected is not None and got is not None:
            at = next((i for i in range(min(len(expected), len(got))) if expected[i] != got[i]), min(len(expected), len(got)))
            print("    first difference at char %d:\n      jinja2: %r\n      frugal: %r" % (at, expected[max(0, at - 40):at + 60], got[max(0, at - 40):at + 60]))
        if verbose and expected is not None:
            print("    --- jinja2 ---\n" + expected + "\n    --- frugal ---\n" + (got or ""))
    return 0 if unexplained == 0 and comparable > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
