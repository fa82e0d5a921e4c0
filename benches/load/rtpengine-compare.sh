#!/usr/bin/env bash
# RTP relay throughput: verde's bridge against rtpengine in userspace, the same SIPp calls with a
# tone both ways (50 packets/s per direction per call) relayed by one or the other.
#
#   benches/load/rtpengine-compare.sh [-n CALLS] [-r CALLS_PER_S] [-d HOLD_MS] [-m MEASURE_S] [-R RUNS]
#
#   -n  concurrent calls (default 400)         -r  rate at which they are set up (default 50/s)
#   -d  how long each call lasts (default 30000 ms; must cover the ramp + 3 s + MEASURE_S)
#   -m  seconds measured on the plateau (default 10)
#   -R  runs (default 3): figures are medians over the runs
#
# In a private network namespace (only lo; see common.sh), for each run:
#   rtpengine: callers' SIPp -> Kamailio 127.0.0.1:5060 (benches/load/kamailio/rtpengine.cfg:
#     stateless forward, rtpengine_offer on the INVITE, rtpengine_answer on the 200, delete on
#     BYE) -> agents' SIPp 127.0.0.1:5080; rtpengine 10.x from Debian, userspace only
#     (--table=-1: no kernel module, every packet goes through its worker threads), ng on
#     127.0.0.1:2223, media ports 30000-39999;
#   verde: callers' SIPp -> verde (bench flow: queue `bench`, first-free) -> registered agents
#     whose phone is the same agents' SIPp; verde's B2BUA bridge relays the media, as in
#     benches/load/bridge-load.sh.
# Both: the callers' and the phones' scenarios of benches/load/bridge/ (rtp_stream of a 440 Hz
# tone, looped). Once every call is up (plus 3 s), for MEASURE_S seconds: the relay's CPU (every
# thread, /proc/PID/stat) and the UDP datagrams read in the namespace (/proc/net/snmp
# InDatagrams, counted when a program reads one): SIPp's rtp_stream never reads what it gets, so
# they are the packets the relay took in, i.e. relayed packets/s; OutDatagrams (the endpoints'
# sends plus the relay's, about twice that) is shown as a check. Prints per run and the
# medians: relayed packets/s (and the nominal calls x 100), relay CPU in % of one core,
# packets/s per core, and the ratio verde / rtpengine.
# Kamailio's CPU is not counted: no signalling happens in the window.
# Needs: sipp, sox, kamailio, rtpengine (Debian packages kamailio, rtpengine-daemon), iproute2.
# VERDE_BIN=path uses that binary. Work files: target/load/rtpengine-<ts>/.
set -euo pipefail

CALLS=400 RATE=50 HOLD=30000 MEASURE=10 RUNS=3
while getopts "n:r:d:m:R:h" o; do
    case "$o" in
        n) CALLS=$OPTARG ;; r) RATE=$OPTARG ;; d) HOLD=$OPTARG ;; m) MEASURE=$OPTARG ;; R) RUNS=$OPTARG ;;
        *) sed -n '2,31p' "$0"; exit 2 ;;
    esac
done
SETTLE=3
if [ $(( CALLS / RATE + SETTLE + MEASURE + 2 )) -gt $(( HOLD / 1000 )) ]; then
    echo "the window must end before the first hangup: CALLS/RATE + $SETTLE + MEASURE_S + 2 <= HOLD_MS/1000" >&2
    exit 2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp sox kamailio rtpengine ss)
load_enter_ns "$@"

# ---- inside the namespace ----
load_workdir "rtpengine-$(load_ts)"
mkdir -p "$WORK/flows" "$WORK/kamrun"
sox -n -r 8000 -c 1 -t ul "$WORK/tone.ulaw" synth 4 sine 440 vol 0.5
cp "$HERE/bridge/flow.yaml" "$WORK/flows/"
for f in uas_agent uac_caller; do
    sed "s|@TONE@|$WORK/tone.ulaw|" "$HERE/bridge/$f.xml" > "$WORK/$f.xml"
done
{
    printf 'sip:\n  max_calls: 20000\nqueues:\n'
    printf '  - { name: bench, strategy: first-free, wrap_up: 1s, ring_timeout: 10s, announce: { position: false, estimated_wait: false } }\n'
    printf 'agents:\n'
    for i in $(seq 1 "$CALLS"); do printf '  - { id: "%d", password: bench, queues: [bench] }\n' $((2000 + i)); done
} > "$WORK/bench.yaml"
{ echo SEQUENTIAL; for i in $(seq 1 "$CALLS"); do echo "$((2000 + i));[authentication username=$((2000 + i)) password=bench]"; done; } > "$WORK/agents.csv"

PHONES=
phones_start() {
    sipp -sf "$WORK/uas_agent.xml" -i 127.0.0.1 -p 5080 -mp 40000 -buff_size 4194304 -nostdin \
        > "$WORK/sipp-phones-$1.out" 2>&1 &
    PHONES=$!; pids+=($PHONES)
    sleep 0.5
}
CPID=
callers_start() {
    sipp -sf "$WORK/uac_caller.xml" -s 800000001 127.0.0.1:5060 -i 127.0.0.1 -p 5090 -mp 50000 \
        -r "$RATE" -m "$CALLS" -d "$HOLD" -buff_size 4194304 -nostdin -trace_stat -fd 1 \
        -timeout "$(( HOLD / 1000 + 60 ))s" > "$WORK/sipp-callers-$1.out" 2>&1 &
    CPID=$!; pids+=($CPID)
}
# Waits for the plateau (every call up: CALLS x 100 datagrams read per second, or the ramp's
# time over twice), then SETTLE s, then measures. Prints "cpu_pct read_per_s sent_per_s".
measure() { # $1: relay pid, $2: name
    local want=$(( CALLS * 100 * 95 / 100 )) u0 u1 s0 s1
    for _ in $(seq 1 $(( (CALLS / RATE + 5) * 2 ))); do
        u0=$(udp_in); sleep 1; u1=$(udp_in)
        [ $(( u1 - u0 )) -ge "$want" ] && break
    done
    sleep "$SETTLE"
    local c0 c1
    local o0 o1
    c0=$(cpu_ticks "$1"); u0=$(udp_in); o0=$(udp_out); s0=$(date +%s.%N)
    sleep "$MEASURE"
    c1=$(cpu_ticks "$1"); u1=$(udp_in); o1=$(udp_out); s1=$(date +%s.%N)
    awk -v c0="$c0" -v c1="$c1" -v u0="$u0" -v u1="$u1" -v o0="$o0" -v o1="$o1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" \
        'BEGIN { w = s1 - s0; printf "%.1f %.0f %.0f\n", (c1 - c0) / hz / w * 100, (u1 - u0) / w, (o1 - o0) / w }'
}
finish_callers() { # $1: name; sets FIN="successful failed" (not in a subshell: it waits for SIPp)
    wait "$CPID" || true
    local stat; stat=$(ls -t "$WORK"/uac_caller_*_.csv | head -1)
    mv "$stat" "$WORK/stat-$1.csv"
    FIN="$(sipp_last "$WORK/stat-$1.csv" 'SuccessfulCall(C)') $(sipp_last "$WORK/stat-$1.csv" 'FailedCall(C)')"
}
show() {
    tail -1 "$WORK/results.txt" | awk -v n="$CALLS" '{
        printf "run %s %-9s relayed %6d packets/s (nominal %d; datagrams sent in the namespace %d/s); CPU %5.1f %% of a core; %6.0f packets/s per core; calls %d ok, %d failed\n",
            $1, $2, $4, n * 100, $5, $3, ($3 > 0 ? $4 / ($3 / 100) : 0), $6, $7 }'
}

echo "rtpengine vs verde: $CALLS calls set up at $RATE/s, tone both ways, held ${HOLD} ms; ${MEASURE} s measured;" \
    "$RUNS runs ($BIN, $(rtpengine --version 2>&1 | awk '{print $2; exit}'), loopback, $(nproc) cores)"
: > "$WORK/results.txt"
for run in $(seq 1 "$RUNS"); do
    # rtpengine (userspace) driven by Kamailio.
    rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:2223 \
        --port-min=30000 --port-max=39999 --foreground --log-stderr --log-level=6 \
        --pidfile="$WORK/kamrun/rtpengine.pid" > "$WORK/rtpengine-$run.log" 2>&1 &
    RPID=$!; pids+=($RPID)
    # Kamailio pings rtpengine once at start and leaves it disabled for a minute if it is not up.
    for _ in $(seq 1 100); do ss -lun | grep -q '127.0.0.1:2223 ' && break; sleep 0.1; done
    kamailio -f "$HERE/kamailio/rtpengine.cfg" -DD -E -m 256 -M 16 -Y "$WORK/kamrun" -P "$WORK/kamrun/k.pid" \
        > "$WORK/kamailio-rtpengine-$run.log" 2>&1 &
    KPID=$!; pids+=($KPID)
    sleep 1
    kill -0 "$RPID" 2>/dev/null || { echo "rtpengine did not start:" >&2; tail -20 "$WORK/rtpengine-$run.log" >&2; exit 1; }
    kill -0 "$KPID" 2>/dev/null || { echo "kamailio did not start:" >&2; tail -20 "$WORK/kamailio-rtpengine-$run.log" >&2; exit 1; }
    phones_start "rtpengine-$run"
    callers_start "rtpengine-$run"
    m=$(measure "$RPID")
    finish_callers "rtpengine-$run"
    echo "$run rtpengine $m $FIN" >> "$WORK/results.txt"
    show
    kill "$KPID" "$RPID" "$PHONES" 2>/dev/null || true
    wait "$KPID" "$RPID" "$PHONES" 2>/dev/null || true

    # verde's bridge.
    rm -rf "$WORK/data"; mkdir -p "$WORK/data"
    verde_start "verde-$run.log" --config "$WORK/bench.yaml" --flows "$WORK/flows" --media-ip 127.0.0.1 \
        --rtp-ports 20000-29999
    phones_start "verde-$run"
    sipp -sf "$HERE/bridge/uac_agent_login.xml" 127.0.0.1:5060 -i 127.0.0.1 -p 5081 -mp 45000 -key uas_port 5080 \
        -inf "$WORK/agents.csv" -m "$CALLS" -r 100 -l 200 -nostdin -timeout 120s > "$WORK/sipp-login-$run.out" 2>&1 \
        || { echo "agent logins failed:" >&2; tail -20 "$WORK/sipp-login-$run.out" >&2; exit 1; }
    calls_idle 60
    callers_start "verde-$run"
    m=$(measure "$VPID")
    finish_callers "verde-$run"
    echo "$run verde $m $FIN" >> "$WORK/results.txt"
    show
    verde_stop
    kill "$PHONES" 2>/dev/null || true; wait "$PHONES" 2>/dev/null || true
done

echo "--- medians over $RUNS runs ($CALLS calls, nominal $(( CALLS * 100 )) relayed packets/s) ---"
awk '
    function median(a, k,   i, j, t) {
        for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    { k = ++n[$2]; cpu[$2, k] = $3; pps[$2, k] = $4; per[$2, k] = ($3 > 0 ? $4 / ($3 / 100) : 0) }
    END {
        split("rtpengine verde", sides, " ")
        for (x = 1; x <= 2; x++) {
            s = sides[x]; k = n[s]; if (!k) continue
            for (i = 1; i <= k; i++) a[i] = cpu[s, i]; c[s] = median(a, k)
            for (i = 1; i <= k; i++) a[i] = pps[s, i]; p[s] = median(a, k)
            for (i = 1; i <= k; i++) a[i] = per[s, i]; q[s] = median(a, k)
            printf "%-9s relayed %6.0f packets/s, CPU %5.1f %% of a core, %6.0f packets/s per core\n", s, p[s], c[s], q[s]
        }
        if (q["rtpengine"] > 0) printf "ratio verde / rtpengine, packets/s per core: %.2f\n", q["verde"] / q["rtpengine"]
    }' "$WORK/results.txt"
echo "work files: $WORK"
awk -v n="$CALLS" '$6 != n || $7 != 0 { bad = 1 } END { exit bad }' "$WORK/results.txt"
