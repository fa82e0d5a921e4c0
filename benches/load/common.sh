# Shared prologue of the load scripts in benches/load/: sourced, never run.
#
#   HERE=...; source "$HERE/common.sh"
#   LOAD_TOOLS=(sipp sox)                       # commands that must exist (ip, unshare added)
#   LOAD_PKGS=(verde-cti-load:CTI_LOAD_BIN)     # extra release packages, skipped when VAR is set
#   load_enter_ns "$@"                          # outside: checks, build, re-exec; inside: lo up
#   load_workdir "bridge-$(load_ts)"            # WORK=target/load/NAME (with data/), cd there
#   verde_start verde.log --config X --flows Y  # VPID; waits for /health; killed on exit
#
# Then: pids+=($!) for anything started in the background (ended on exit); http_get PATH,
# metric NAME, calls_idle; cpu_ticks / tree_ticks / rss_kb PID and cpu_pct for /proc sampling;
# udp_in / udp_out for the namespace's UDP datagram counters; sipp_last CSV COLUMN.
#
# Outside the namespace, load_enter_ns checks the tools, builds a release verde (plus LOAD_PKGS)
# in one cargo command unless VERDE_BIN is set, makes the binaries' paths absolute and re-executes
# the calling script with the same arguments in a private network namespace (unshare -n as root,
# unshare -r -n otherwise) where only lo exists: every address used is 127.0.0.1.
# Inside, it brings lo up and raises the open-files limit (two SIP legs, their RTP sockets and
# websockets per call go past 1024).

ROOT=$(cd "$HERE/../.." && pwd)
HTTP=${HTTP:-127.0.0.1:8080}
HZ=$(getconf CLK_TCK)
LOAD_TOOLS=()
LOAD_PKGS=()

load_enter_ns() {
    if [ -n "${VERDE_LOAD_IN_NS:-}" ]; then
        ip link set lo up
        ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        BIN="${VERDE_BIN:-$ROOT/target/release/verde}"
        return 0
    fi
    local c spec var pkgs=()
    for c in "${LOAD_TOOLS[@]}" ip unshare; do
        command -v "$c" >/dev/null || { echo "missing $c: run tests/run.sh once (it installs the peers)" >&2; exit 1; }
    done
    [ -n "${VERDE_BIN:-}" ] || pkgs+=(-p verde)
    for spec in "${LOAD_PKGS[@]}"; do
        var=${spec#*:}
        [ -n "${!var:-}" ] || pkgs+=(-p "${spec%%:*}")
    done
    [ ${#pkgs[@]} -eq 0 ] || (cd "$ROOT" && cargo build --release "${pkgs[@]}")
    # The run happens in its work folder: binaries given relative to here must still be found.
    [ -z "${VERDE_BIN:-}" ] || export VERDE_BIN=$(realpath "$VERDE_BIN")
    for spec in "${LOAD_PKGS[@]}"; do
        var=${spec#*:}
        [ -z "${!var:-}" ] || export "$var=$(realpath "${!var}")"
    done
    local ns=(unshare -n); [ "$(id -u)" -eq 0 ] || ns=(unshare -r -n)
    exec "${ns[@]}" env VERDE_LOAD_IN_NS=1 bash "$0" "$@"
}

load_ts() { date +%Y%m%d-%H%M%S; }

# WORK=target/load/NAME with data/ in it, and the script's current folder.
load_workdir() {
    WORK="$ROOT/target/load/$1"
    mkdir -p "$WORK/data"
    cd "$WORK"
}

# Every process a script starts goes into pids: they are ended when it exits, however it exits.
pids=()
load_cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap load_cleanup EXIT

http_get() {
    exec 3<>"/dev/tcp/${HTTP%:*}/${HTTP#*:}" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$1" >&3
    cat <&3; exec 3<&- 3>&-
}
healthy() { http_get /health 2>/dev/null | head -1 | grep -q " 200"; }

# verde_start LOG ARGS...: verde on 127.0.0.1:5060 and $HTTP, data in $WORK/data, the repo's
# sounds, logging to $WORK/LOG; sets VPID and returns once /health answers 200 (exits if never).
verde_start() {
    local log=$1; shift
    "$BIN" --sip 127.0.0.1:5060 --http "$HTTP" --data "$WORK/data" --sounds "$ROOT/sounds" "$@" \
        2> "$WORK/$log" &
    VPID=$!; pids+=($VPID)
    for _ in $(seq 1 200); do healthy && return 0; sleep 0.1; done
    healthy || { echo "verde did not become healthy; log:" >&2; tail -30 "$WORK/$log" >&2; exit 1; }
}
# SIGTERM, then SIGKILL after 10 s.
verde_stop() {
    kill -TERM "$VPID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$VPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$VPID" 2>/dev/null || true; wait "$VPID" 2>/dev/null || true
}

# CPU time (utime + stime, every thread) in clock ticks, and resident memory in kB, of a process.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# cpu_pct T0 T1 S0 S1: ticks and wall-clock seconds (date +%s.%N) -> % of one core.
cpu_pct() { awk -v a="$1" -v b="$2" -v s="$3" -v e="$4" -v hz="$HZ" 'BEGIN{printf "%.1f", 100*(b-a)/hz/(e-s)}'; }

# sipp_last FILE COLUMN: the last value of a column of a SIPp -trace_stat CSV, looked up by name.
sipp_last() { awk -F';' -v name="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==name) c=i; next} {v=$c} END{print v}' "$1"; }
# The same for a process and its children (Kamailio's workers are child processes).
tree_ticks() {
    local p sum=0 t
    for p in $1 $(pgrep -P "$1" 2>/dev/null || true); do
        t=$(cpu_ticks "$p"); sum=$(( sum + ${t:-0} ))
    done
    echo "$sum"
}
# UDP datagrams received by every socket of this network namespace (/proc/net/snmp, InDatagrams).
udp_in() { awk '/^Udp:/ { if (h) { print $2; exit } h = 1 }' /proc/net/snmp; }
udp_out() { awk '/^Udp:/ { if (h) { print $5; exit } h = 1 }' /proc/net/snmp; }
# metric NAME_AND_LABELS: a sample's value from verde's /metrics (0 when absent).
metric() { { http_get /metrics 2>/dev/null || true; } | awk -v m="$1" 'index($0, m" ") == 1 {v=$2} END{print v+0}'; }
# Waits (up to $1 s, default 60) for verde to have no call up, e.g. the agents' *11 logins.
calls_idle() {
    for _ in $(seq 1 $(( ${1:-60} * 5 ))); do [ "$(metric verde_calls_active)" = 0 ] && return 0; sleep 0.2; done
    echo "warning: verde still has $(metric verde_calls_active) calls up" >&2
}
