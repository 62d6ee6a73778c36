"""Starts `frugal serve` on an ephemeral port for the Python tests and stops it with SIGTERM."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

SKIP = 77  # CTest's SKIP_RETURN_CODE for these tests


def skip(message):
    print("SKIP: " + message)
    sys.exit(SKIP)


def model_path():
    path = os.environ.get("FRUGAL_MODEL") or os.path.expanduser("~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        skip("the model %s is missing (set FRUGAL_MODEL or run scripts/setup.sh)" % path)
    return path


class Server:
    """`frugal serve` as a child process; `url` is its base address once it listens."""

    def __init__(self, frugal, args=(), timeout=120):
        cmd = [frugal, "serve", "-m", model_path(), "--port", "0", "-t", "2", "-np", "2", "-c", "1024", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.url = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"on (http://[0-9.]+:\d+)/", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError("frugal serve did not start:\n" + "".join(self.log))
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def stop(self, timeout=30):
        """SIGTERM; returns the exit code (0 when the server drained and stopped cleanly)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -1
