#!/usr/bin/env bash
# SIP signalling throughput: verde (B2BUA: IVR answer, queue, agent leg) against Kamailio as a
# stateless proxy, with the same SIPp callers and the same SIPp agents' phones.
#
#   benches/load/kamailio-compare.sh [-r "RATES"] [-t SECONDS] [-d HOLD_MS] [-R RUNS]
#
#   -r  call rates tried in turn, in calls/s (default "500 1000 2000 3000 4000"); a side that
#       misses one is not tried at the next ones in that run
#   -t  seconds of calls at each rate (default 20)
#   -d  how long each caller stays after the answer (default 1000 ms)
#   -R  runs (default 3): figures are medians over the runs
#   -a  verde's agents (default: enough for the highest rate, 1.5 times over). verde's CPU per
#       call grows with the agents logged in (at 500/s: 2.5 ms with 7,250 agents, 1.7 ms with
#       2,750): size the pool for the rates verde can hold
#
# In a private network namespace (only lo; see common.sh), for each run:
#   kamailio: callers' SIPp (127.0.0.1:5090) -> Kamailio 127.0.0.1:5060 (benches/load/kamailio/
#     proxy.cfg: forward() of every request, replies back by their Via, no transaction state,
#     2 UDP workers) -> agents' SIPp 127.0.0.1:5080, answering at once;
#   verde: callers' SIPp -> verde 127.0.0.1:5060 (the bench flow: 800000001 answers into queue
#     `bench`, first-free, announcements off) -> verde's INVITE to a registered agent, whose
#     phone is the same agents' SIPp (agents registered with digest, logged in with *11).
# The callers' scenario and the phones' are the same both ways (benches/load/bridge/, no RTP:
# signalling only; verde still plays its queue's music to the caller until an agent answers).
# At each rate: calls attempted / failed, the rate achieved (answers/s), INVITE -> 200 OK p99 at
# the callers, and the CPU of Kamailio (main and worker processes) or verde (every thread) over
# the SIPp run, from /proc: % of one core and CPU milliseconds per call. A rate is held when
# under 0.1 % of its calls failed and the achieved rate is within 5 % of the one asked. Prints
# each run, then per rate the medians, each side's highest rate held, and the ratio
# verde / Kamailio of CPU per call at the rates both held.
# Note: SIPp runs on the same 2 cores and needs about as much CPU as a stateless proxy; a
# "highest rate" above what SIPp can drive is out of reach of this box.
# Needs: sipp, kamailio (Debian package), iproute2. VERDE_BIN=path uses that binary.
# Work files: target/load/kamailio-<ts>/.
set -euo pipefail

RATES="500 1000 2000 3000 4000" SECS=20 HOLD=1000 RUNS=3 AGENTS=
while getopts "r:t:d:R:a:h" o; do
    case "$o" in
        r) RATES=$OPTARG ;; t) SECS=$OPTARG ;; d) HOLD=$OPTARG ;; R) RUNS=$OPTARG ;; a) AGENTS=$OPTARG ;;
        *) sed -n '2,34p' "$0"; exit 2 ;;
    esac
done
WRAP=100
MAXRATE=$(tr ' ' '\n' <<<"$RATES" | sort -n | tail -1)
# Agents busy at once at the highest rate: RATE x (HOLD + WRAP), half as many again.
[ -n "$AGENTS" ] || AGENTS=$(( MAXRATE * (HOLD + WRAP + 100) * 3 / 2000 + 50 ))

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp kamailio)
load_enter_ns "$@"

# ---- inside the namespace ----
load_workdir "kamailio-$(load_ts)"
mkdir -p "$WORK/flows" "$WORK/kamrun"
cp "$HERE/bridge/flow.yaml" "$WORK/flows/"
sed '/rtp_stream=/d' "$HERE/bridge/uas_agent.xml" > "$WORK/uas_agent.xml"
# The callers' INVITE -> 200 OK timed (rtd 1): the achieved rate and the answer delay come from it.
sed -e '/rtp_stream=/d' -e '0,/<send retrans="500">/s//<send retrans="500" start_rtd="1">/' \
    -e '0,/<recv response="200"\/>/s//<recv response="200" rtd="1"\/>/' \
    "$HERE/bridge/uac_caller.xml" > "$WORK/uac_caller.xml"
grep -q 'rtd="1"' "$WORK/uac_caller.xml" || { echo "could not time the caller's INVITE in uac_caller.xml" >&2; exit 1; }
{
    printf 'sip:\n  max_calls: 30000\nqueues:\n'
    printf '  - { name: bench, strategy: first-free, wrap_up: %dms, ring_timeout: 10s, announce: { position: false, estimated_wait: false } }\n' "$WRAP"
    printf 'agents:\n'
    for i in $(seq 1 "$AGENTS"); do printf '  - { id: "k%d", password: bench, queues: [bench] }\n' "$i"; done
} > "$WORK/bench.yaml"
{ echo SEQUENTIAL; for i in $(seq 1 "$AGENTS"); do echo "k$i;[authentication username=k$i password=bench]"; done; } > "$WORK/agents.csv"

PHONES=
phones_start() {
    sipp -sf "$WORK/uas_agent.xml" -i 127.0.0.1 -p 5080 -mp 40000 -buff_size 4194304 -nostdin \
        > "$WORK/sipp-phones-$1.out" 2>&1 &
    PHONES=$!; pids+=($PHONES)
    sleep 0.5
}
phones_stop() { kill "$PHONES" 2>/dev/null || true; wait "$PHONES" 2>/dev/null || true; }

# callers NAME RATE TARGET_PID TICKS_FN: one SIPp run, prints
# "attempted successful failed achieved_cps cpu_pct cpu_ms_per_call sipp_cpu_pct invite_200_p99_ms".
callers() {
    local name=$1 rate=$2 tpid=$3 fn=$4 calls=$(( $2 * SECS ))
    local c0 c1 s0 s1 g0 g1 rc=0
    c0=$("$fn" "$tpid"); s0=$(date +%s.%N)
    sipp -sf "$WORK/uac_caller.xml" -s 800000001 127.0.0.1:5060 -i 127.0.0.1 -p 5090 -mp 50000 \
        -r "$rate" -m "$calls" -d "$HOLD" -buff_size 4194304 -nostdin -recv_timeout 10000 \
        -trace_stat -fd 1 -trace_rtt -rtt_freq 100 -timeout "$(( SECS * 3 + 60 ))s" > "$WORK/sipp-$name.out" 2>&1 &
    local spid=$!; pids+=($spid)
    # SIPp's own CPU, read just before it exits (it is on the same cores).
    g0=0; g1=0
    while kill -0 "$spid" 2>/dev/null; do
        g1=$(cpu_ticks "$spid"); sleep 0.2
    done
    wait "$spid" || rc=$?
    c1=$("$fn" "$tpid"); s1=$(date +%s.%N)
    local stat; stat=$(ls -t "$WORK"/uac_caller_*_.csv | head -1)
    mv "$stat" "$WORK/stat-$name.csv"
    local tot ok fail
    tot=$(sipp_last "$WORK/stat-$name.csv" 'OutgoingCall(C)'); ok=$(sipp_last "$WORK/stat-$name.csv" 'SuccessfulCall(C)')
    fail=$(sipp_last "$WORK/stat-$name.csv" 'FailedCall(C)')
    local rtt; rtt=$(ls -t "$WORK"/uac_caller_*_rtt.csv | head -1)
    mv "$rtt" "$WORK/rtt-$name.csv"
    # Achieved: answers per second between the first and the last answer; p99 of INVITE -> 200.
    local ach p99
    ach=$(awk -F';' 'NR>1 && $3 == 1 {n++; if (n==1) a=$1; b=$1} END{ printf "%.0f", (n>1 && b>a) ? (n-1)*1000/(b-a) : 0 }' "$WORK/rtt-$name.csv")
    p99=$(awk -F';' 'NR>1 && $3 == 1 {print $2}' "$WORK/rtt-$name.csv" | sort -n | awk '{v[NR]=$1} END{ i=int(0.99*NR+0.999999); if (i<1) i=1; print (NR ? v[i] : "NA") }')
    awk -v t="$tot" -v o="$ok" -v f="$fail" -v c0="$c0" -v c1="$c1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" \
        -v ach="$ach" -v p99="$p99" -v g0="$g0" -v g1="$g1" 'BEGIN {
        w = s1 - s0; cpu = (c1 - c0) / hz
        printf "%d %d %d %s %.1f %.3f %.1f %s\n", t, o, f, ach, cpu / w * 100, (o > 0 ? cpu * 1000 / o : 0), (g1 - g0) / hz / w * 100, p99 }'
}

# The last rate was held: under 0.1 % failed and at least 95 % of the rate achieved. A side that
# did not hold a rate is not tried at higher ones in that run (they count as not held).
held() { tail -1 "$WORK/results.txt" | awk '{ exit !($4 > 0 && $6 / $4 < 0.001 && $7 >= 0.95 * $3) }'; }
show() {
    tail -1 "$WORK/results.txt" | awk '{ printf "run %s %-8s %5s/s: %7d calls, %7d ok, %5d failed; achieved %6.0f/s, INVITE->200 p99 %s ms; CPU %5.1f %% of a core = %.3f ms per call; SIPp caller %5.1f %%\n", $1, $2, $3, $4, $5, $6, $7, $11, $8, $9, $10 }'
}

echo "kamailio vs verde: rates $RATES calls/s, ${SECS} s each, hold ${HOLD} ms, $RUNS runs;" \
    "$AGENTS agents for verde ($BIN, $(kamailio -v 2>/dev/null | head -1 | awk '{print $3}'), loopback, $(nproc) cores)"
: > "$WORK/results.txt"
for run in $(seq 1 "$RUNS"); do
    # Kamailio, stateless.
    phones_start "kam-$run"
    kamailio -f "$HERE/kamailio/proxy.cfg" -DD -E -m 256 -M 16 -Y "$WORK/kamrun" -P "$WORK/kamrun/k.pid" \
        > "$WORK/kamailio-$run.log" 2>&1 &
    KPID=$!; pids+=($KPID)
    for _ in $(seq 1 50); do [ "$(pgrep -c -P "$KPID" || true)" -ge 2 ] && break; sleep 0.1; done
    sleep 0.5
    for rate in $RATES; do
        echo "$run kamailio $rate $(callers "kam-$run-$rate" "$rate" "$KPID" tree_ticks)" >> "$WORK/results.txt"
        show
        held || break
    done
    kill "$KPID" 2>/dev/null || true; wait "$KPID" 2>/dev/null || true
    phones_stop

    # verde, IVR answer + queue + agent.
    rm -rf "$WORK/data"; mkdir -p "$WORK/data"
    verde_start "verde-$run.log" --config "$WORK/bench.yaml" --flows "$WORK/flows" --media-ip 127.0.0.1 \
        --rtp-ports 20000-29999
    phones_start "verde-$run"
    sipp -sf "$HERE/bridge/uac_agent_login.xml" 127.0.0.1:5060 -i 127.0.0.1 -p 5081 -mp 45000 -key uas_port 5080 \
        -inf "$WORK/agents.csv" -m "$AGENTS" -r 300 -l 600 -nostdin -timeout 300s > "$WORK/sipp-login-$run.out" 2>&1 \
        || { echo "agent logins failed:" >&2; tail -20 "$WORK/sipp-login-$run.out" >&2; exit 1; }
    calls_idle 120 # the logins' confirmation prompts are not part of the measure
    for rate in $RATES; do
        echo "$run verde $rate $(callers "verde-$run-$rate" "$rate" "$VPID" cpu_ticks)" >> "$WORK/results.txt"
        show
        held || break
        sleep 1 # the last agents wrap up
    done
    verde_stop
    phones_stop
done

echo "--- medians over $RUNS runs ---"
awk '
    function median(a, k,   i, j, t) {
        for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    { key = $2 " " $3; k = ++n[key]; cpu[key, k] = $8; ms[key, k] = $9; ach[key, k] = $7; p99[key, k] = $11
      held[key] += ($4 > 0 && $6 / $4 < 0.001 && $7 >= 0.95 * $3) ? 1 : 0
      if (!(($3) in seen)) { seen[$3] = 1; rates[++nr] = $3 } }
    END {
        for (x = 1; x <= 2; x++) {
            side = (x == 1 ? "kamailio" : "verde"); best[side] = 0
            for (r = 1; r <= nr; r++) {
                key = side " " rates[r]; k = n[key]; if (!k) continue
                for (i = 1; i <= k; i++) a[i] = cpu[key, i]; c = median(a, k)
                for (i = 1; i <= k; i++) a[i] = ms[key, i]; m = median(a, k); med[key] = m
                for (i = 1; i <= k; i++) a[i] = ach[key, i]; h = median(a, k)
                for (i = 1; i <= k; i++) a[i] = p99[key, i]; l = median(a, k)
                ok = (held[key] * 2 > k)
                if (ok && rates[r] + 0 > best[side]) best[side] = rates[r] + 0
                printf "%-8s %5s/s: achieved %6.0f/s, INVITE->200 p99 %s ms, CPU %5.1f %% of a core, %.3f ms per call; held in %d of %d runs\n", side, rates[r], h, l, c, m, held[key], k
                okr[key] = ok
            }
        }
        printf "highest rate held (<0.1 %% failed, >=95 %% of the rate): kamailio %s/s, verde %s/s", best["kamailio"], best["verde"]
        if (best["kamailio"] > 0) printf " (verde/kamailio %.2f)", best["verde"] / best["kamailio"]
        print ""
        for (r = 1; r <= nr; r++) {
            a1 = "kamailio " rates[r]; a2 = "verde " rates[r]
            if (okr[a1] && okr[a2] && med[a1] > 0)
                printf "CPU per call at %s/s: verde %.3f ms, kamailio %.3f ms: verde/kamailio %.1fx\n", rates[r], med[a2], med[a1], med[a2] / med[a1]
        }
    }' "$WORK/results.txt"
echo "work files: $WORK"
