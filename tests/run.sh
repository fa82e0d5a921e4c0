#!/usr/bin/env bash
# verde's test command: everything CI runs, in the order CI runs it.
#
#   tests/run.sh            # from anywhere in the repository
#
# 1. installs the interop peers when missing (Debian/Ubuntu, apt-get; needs root or sudo):
#    sip-tester (sipp), baresip, linphone-cli (linphonec), sox, espeak-ng, tshark (dumpcap), iproute2,
#    kamailio (kamcmd) and postgresql (store_postgres and multi-node tests; its server stays off PATH, in
#    /usr/lib/postgresql/*/bin),
#    chromium (driven by playwright-core from npm, installed in tests/browser with `npm ci`; no
#    browser is ever downloaded), and Node.js with npm when missing;
# 2. cargo fmt --check, cargo clippy -D warnings, the unit and integration tests;
# 3. builds the verde binary and runs the interop tests (crate verde-interop, tests/interop/)
#    inside a private network namespace that has only lo (unshare -n), so the peers can only
#    reach verde over loopback and nothing leaks onto the machine's real network.
#
# Environment: VERDE_BIN=path uses that binary instead of building target/debug/verde;
# VERDE_KEEP_TEST_DIRS=1 keeps every test's scratch directory (target/interop/); failing tests
# always keep theirs. Extra arguments go to the interop `cargo test` (e.g. `--test sipp_udp_tcp`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else SUDO=(none); fi
as_root() {
    if [ "${SUDO[0]:-}" = none ]; then return 1; fi
    "${SUDO[@]}" "$@"
}

# --- 1. peers ---------------------------------------------------------------------------------
PACKAGES=(cmake g++ sip-tester baresip linphone-cli sox libsox-fmt-all espeak-ng tshark iproute2 chromium kamailio postgresql)
COMMANDS=(cmake g++ sipp baresip linphonec sox espeak-ng dumpcap tshark ip unshare chromium node npm)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
fi
# Node.js may come from elsewhere (nodesource, nvm): only installed from Debian when absent.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing interop peers: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found; install these packages by hand: ${missing[*]} (Debian names)"
    [ "${SUDO[0]:-}" != none ] \
        || die "installing ${missing[*]} needs root: rerun as root or install them by hand"
    export DEBIAN_FRONTEND=noninteractive
    # tshark's package asks whether non-root users may capture; answer "no" so it never blocks.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | as_root debconf-set-selections \
        || die "debconf-set-selections failed (is debconf installed?)"
    as_root apt-get update -q || die "apt-get update failed: no network or no package mirror?"
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed; install them by hand"
fi
for c in "${COMMANDS[@]}"; do
    command -v "$c" >/dev/null 2>&1 \
        || die "$c not found; the interop tests need: ${PACKAGES[*]} (Debian package names)"
done
# Debian installs these in /usr/sbin, off a non-root user's PATH; the harness looks there too.
for c in kamailio kamcmd; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] \
        || die "$c not found: the multi-node test needs the kamailio package"
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || die "no PostgreSQL server in /usr/lib/postgresql/*/bin: the PostgreSQL store tests (store_postgres, multinode_kamailio) need the postgresql package"
[ -f /usr/share/sip-tester/dtmf_2833_1.pcap ] \
    || die "/usr/share/sip-tester/dtmf_2833_*.pcap missing: reinstall the sip-tester package"

# playwright-core for the browser tests, at the version package-lock.json pins; it drives
# /usr/bin/chromium and must never download a browser of its own.
step "npm ci (tests/browser: playwright-core)"
(cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund) \
    || die "npm ci in tests/browser failed: no access to the npm registry?"

# --- 2. the Rust checks -----------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup.rs)"
for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "cargo $comp is missing and rustup is not there to add it"
        step "rustup component add $comp"
        rustup component add "$comp" || die "rustup component add $comp failed"
    fi
done

step "cargo fmt --all -- --check"
cargo fmt --all -- --check || die "formatting differs: run cargo fmt --all"

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace --exclude verde-interop"
cargo test --workspace --exclude verde-interop

# --- 3. interop -------------------------------------------------------------------------------
if [ -z "${VERDE_BIN:-}" ]; then
    step "cargo build -p verde"
    cargo build -p verde
fi
# Built outside the namespace: inside it there is no network, so cargo must have nothing to fetch.
step "cargo test -p verde-interop --no-run"
cargo test -p verde-interop --no-run

NS=(unshare -n)
if [ "$(id -u)" -ne 0 ]; then
    # Without root a user namespace is needed to get a network namespace.
    NS=(unshare -r -n)
fi
"${NS[@]}" true 2>/dev/null \
    || die "cannot create a network namespace (${NS[*]}): run as root, or enable unprivileged user namespaces"

step "interop tests in a private network namespace (${NS[*]})"
"${NS[@]}" bash -c 'ip link set lo up && exec cargo test -p verde-interop --offline --no-fail-fast "$@" -- --test-threads=1' _ "$@"

# Bounded fuzzing of every parser a stranger reaches (docs/fuzzing.md); longer runs by hand.
if [ "$#" -eq 0 ]; then
    step "fuzz: every target 30 s (fuzz/run.sh)"
    bash fuzz/run.sh 30
fi

step "all tests passed"
