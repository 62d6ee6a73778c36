#!/usr/bin/env python3
"""Drives `frugal run --chat` (and plain `run`) as a user would, through a pty and through pipes,
on a tiny random model: slash commands, a conversation much longer than the context, Ctrl-C
(SIGINT) in the middle of a reply and at the prompt, Ctrl-C in plain run, and --stop.

Usage: drive_chat.py FRUGAL_BINARY MODEL.gguf. Exit 0 when every check passes; prints what failed.
"""
import os
import pty
import select
import signal
import subprocess
import sys
import time

FAILURES = []


def check(condition, what, output=""):
    if condition:
        print("ok      " + what)
    else:
        print("FAILED  " + what + ("\n--- output ---\n" + output[-3000:] if output else ""))
        FAILURES.append(what)


class PtySession:
    """A child process on a pseudo-terminal, so frugal sees an interactive user."""

    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(argv[0], argv)
        self.out = ""

    def read_until(self, pattern, timeout=30.0, start=0):
        deadline = time.time() + timeout
        while pattern not in self.out[start:]:
            left = deadline - time.time()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                return pattern in self.out[start:]
            if not data:
                return pattern in self.out[start:]
            self.out += data.decode("utf-8", "replace")
        return True

    def send(self, text):
        os.write(self.fd, text.encode())

    def wait(self, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.read_until("\0never\0", timeout=0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.read_until("\0never\0", timeout=0.2)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return None


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    frugal, model = sys.argv[1], sys.argv[2]
    base = [frugal, "run", "-m", model, "-t", "1", "--temp", "0"]

    # 1. Slash commands in an interactive session.
    s = PtySession(base + ["--chat", "-n", "4", "-c", "128"])
    check(s.read_until("> "), "interactive chat shows a prompt", s.out)
    check("chat template: the model's own" in s.out, "says which chat template is used", s.out)
    s.send("/help\n")
    check(s.read_until("/system TEXT"), "/help lists the commands", s.out)
    s.send("/system Be brief.\n")
    check(s.read_until("[system prompt set]"), "/system sets the system prompt", s.out)
    s.send("/clear\n")
    check(s.read_until("[conversation cleared]"), "/clear forgets the conversation", s.out)
    s.send("/bogus\n")
    check(s.read_until("unknown command /bogus"), "an unknown command is named", s.out)
    s.send("/exit\n")
    code = s.wait()
    check(code == 0, "/exit leaves with exit code 0 (got %r)" % code, s.out)
    check("generation:" in s.out, "stats are printed on exit", s.out)

    # 2. A conversation far longer than the context keeps going (oldest turns dropped), via a pipe.
    turns = ["message number %d: tell me more about the weather today" % i for i in range(25)]
    r = subprocess.run(base + ["--chat", "-n", "12", "-c", "96", "--system", "You are a bot."],
                       input="\n".join(turns) + "\n", capture_output=True, text=True, errors="replace", timeout=120)
    check(r.returncode == 0, "a conversation 5x longer than the context ends normally (exit %d)" % r.returncode,
          r.stdout + r.stderr)
    check("dropped the" in r.stderr and "the system prompt stays" in r.stderr,
          "the oldest turns are dropped, the system prompt kept", r.stderr)
    check("error" not in r.stderr, "no error during the long conversation", r.stderr)
    check(r.stderr.count("\n") >= 3 and "prompt:" in r.stderr, "stats after the long conversation", r.stderr)

    # 3. Ctrl-C in the middle of a reply stops it and returns to the prompt; Ctrl-C there exits.
    # A rolling cache (--window), no length limit, --ignore-eos: the reply would never end by itself.
    s = PtySession(base + ["--chat", "-n", "-1", "-c", "256", "--window", "64", "--ignore-eos"])
    check(s.read_until("> "), "prompt before the long reply", s.out)
    s.send("write forever\n")
    mark = len(s.out)
    time.sleep(1.0)
    s.read_until("\0never\0", timeout=0.5)
    replied = len(s.out) - mark
    os.kill(s.pid, signal.SIGINT)
    check(s.read_until("[reply stopped]", timeout=20), "Ctrl-C stops the reply (%d bytes streamed first)" % replied,
          s.out)
    check(s.read_until("> ", start=s.out.find("[reply stopped]")), "back at the prompt after Ctrl-C", s.out)
    check("tokens/s" in s.out[s.out.find("[reply stopped]"):], "stats of the stopped reply are printed", s.out)
    s.send("/help\n")
    check(s.read_until("/clear", start=s.out.find("[reply stopped]")), "the session still answers after Ctrl-C", s.out)
    time.sleep(0.3)
    os.kill(s.pid, signal.SIGINT)
    code = s.wait()
    check(code == 0, "Ctrl-C at the prompt exits cleanly (exit %r)" % code, s.out)

    # 4. Plain run: Ctrl-C stops the generation and prints stats.
    p = subprocess.Popen(base + ["-p", "Once upon a time", "-n", "-1", "--window", "64", "--ignore-eos"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    check(p.returncode == 130, "plain run: Ctrl-C exits with 130 (got %d)" % p.returncode, out + err)
    check("[interrupted]" in err and "generation:" in err, "plain run: Ctrl-C prints stats", err)
    check(len(out) > len("Once upon a time"), "plain run streamed text before Ctrl-C", out)

    # 5. --stop: the output ends right before the stop sequence.
    # Bytes: a random model writes arbitrary bytes; the stop sequence is ASCII picked from them.
    r = subprocess.run(base + ["-p", "Hello", "-n", "40"], capture_output=True, timeout=60)
    text = r.stdout[len(b"Hello"):]
    ascii_runs = [i for i in range(len(text) // 3, len(text) - 3) if all(32 < c < 127 for c in text[i:i + 3])]
    if ascii_runs:
        stop = text[ascii_runs[0]:ascii_runs[0] + 3]
        cut = text.find(stop)
        r2 = subprocess.run(base + ["-p", "Hello", "-n", "40", "--stop", "zzz-never", "--stop", stop.decode()],
                            capture_output=True, timeout=60)
        check(r2.returncode == 0 and r2.stdout == b"Hello" + text[:cut],
              "--stop %r ends the output before its first occurrence (byte %d of %d)" % (stop, cut, len(text)),
              repr(r2.stdout) + "\n---\n" + repr(r.stdout))
    else:
        check(False, "the tiny model generated ASCII text to pick a stop sequence from", repr(r.stdout))

    # 6. --stop in chat: the reply ends before the stop sequence; the conversation goes on.
    chat = base + ["--chat", "-n", "40", "-c", "256"]
    r = subprocess.run(chat, input=b"hello there\n", capture_output=True, timeout=60)
    reply = r.stdout[:-1] if r.stdout.endswith(b"\n") else r.stdout
    ascii_runs = [i for i in range(len(reply) // 3, len(reply) - 3) if all(32 < c < 127 for c in reply[i:i + 3])]
    if ascii_runs:
        stop = reply[ascii_runs[0]:ascii_runs[0] + 3]
        cut = reply.find(stop)
        r2 = subprocess.run(chat + ["--stop", stop.decode()], input=b"hello there\n/help\n", capture_output=True, timeout=60)
        check(r2.returncode == 0 and r2.stdout.startswith(reply[:cut] + b"\n") and b"/system TEXT" in r2.stdout,
              "chat --stop %r ends the reply before it (byte %d of %d), the session goes on" % (stop, cut, len(reply)),
              repr(r2.stdout) + "\n---\n" + repr(r.stdout))
    else:
        check(False, "the tiny model replied with ASCII text to pick a stop sequence from", repr(r.stdout))

    print("%d check(s) failed" % len(FAILURES) if FAILURES else "all chat checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
