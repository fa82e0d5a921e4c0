#!/usr/bin/env bash
# Soak: callers through an IVR menu (DTMF), the queue and an agent, at a steady rate for a long
# time; verde's memory must stay flat and no call may fail.
#
#   benches/load/soak.sh [-r CALLS_PER_S] [-t SECONDS] [-a AGENTS] [-i RSS_SAMPLE_S]
#                        [-d HOLD_MS] [-w WARMUP_S]
#
#   -r  call rate (default 100/s)             -t  how long calls are started (default 1800 s)
#   -a  agents (default: enough for RATE x (hold + wrap-up), 1.5 times over, at least 50)
#   -i  seconds between samples of verde's RSS and CPU (default 10)
#   -d  how long a caller stays after verde answers (default 2500 ms: menu, queue, agent)
#   -w  seconds at the start left out of the plateau (default: a tenth of -t, 10..120 s)
#
# In a private network namespace (only lo; see common.sh): a release verde with the soak flow
# (benches/load/soak/flow.yaml: 800000002 plays a menu prompt, key 1 goes to queue `soak`,
# first-free, 500 ms wrap-up; no key or another key hangs up) and AGENTS agents. One SIPp
# registers every agent with digest and dials *11 for it (Contact: a second SIPp, the agents'
# phones, answering every offered call at once); a third SIPp places RATE calls/s for SECONDS s:
# INVITE, ACK, key 1 by RFC 4733 300 ms in (barge-in), stay HOLD_MS, BYE.
# Every RSS_SAMPLE_S seconds verde's VmRSS, CPU (utime + stime over the interval) and active calls
# go to WORK/rss.csv. Prints:
#   - calls attempted / successful / failed (SIPp), calls an agent answered (verde's counter of
#     200 OKs to its INVITEs to agents' phones), achieved rate, INVITE -> 200 OK p50/p99;
#   - RSS at the start, middle and end of the plateau, and its slope (least squares over the
#     plateau's samples, and over its second half) in MB per 10 minutes; verde's CPU over the
#     plateau in % of one core.
#   - calls whose record (verde's log) shows path menu -> q and an agent's answer.
# Exit status 1 when a call failed or a caller did not reach an agent through the menu.
# Needs: sipp, iproute2. VERDE_BIN=path uses that binary. Work files: target/load/soak-<ts>/.
set -euo pipefail

RATE=100 SECS=1800 AGENTS= SAMPLE=10 HOLD=2500 WARM=
while getopts "r:t:a:i:d:w:h" o; do
    case "$o" in
        r) RATE=$OPTARG ;; t) SECS=$OPTARG ;; a) AGENTS=$OPTARG ;; i) SAMPLE=$OPTARG ;;
        d) HOLD=$OPTARG ;; w) WARM=$OPTARG ;;
        *) sed -n '2,28p' "$0"; exit 2 ;;
    esac
done
WRAP=500
# An agent is busy from its answer (about 350 ms after the caller's) to the caller's BYE, then
# wraps up: RATE x (HOLD + WRAP) agents at once, half as many again so the queue never waits.
[ -n "$AGENTS" ] || AGENTS=$(( RATE * (HOLD + WRAP) * 3 / 2000 + 50 ))
[ -n "$WARM" ] || { WARM=$(( SECS / 10 )); [ "$WARM" -ge 10 ] || WARM=10; [ "$WARM" -le 120 ] || WARM=120; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp)
load_enter_ns "$@"

# ---- inside the namespace ----
load_workdir "soak-$(load_ts)"
mkdir -p "$WORK/flows"
cp "$HERE/soak/flow.yaml" "$WORK/flows/"
sed '/rtp_stream=/d' "$HERE/bridge/uas_agent.xml" > "$WORK/uas_agent.xml"
{
    printf 'sip:\n  max_calls: 30000\nqueues:\n'
    printf '  - { name: soak, strategy: first-free, wrap_up: %dms, ring_timeout: 10s, announce: { position: false, estimated_wait: false } }\n' "$WRAP"
    printf 'agents:\n'
    for i in $(seq 1 "$AGENTS"); do printf '  - { id: "s%d", password: soak, queues: [soak] }\n' "$i"; done
} > "$WORK/soak.yaml"
{ echo SEQUENTIAL; for i in $(seq 1 "$AGENTS"); do echo "s$i;[authentication username=s$i password=soak]"; done; } > "$WORK/agents.csv"

verde_start verde.log --config "$WORK/soak.yaml" --flows "$WORK/flows" --media-ip 127.0.0.1 \
    --rtp-ports 20000-29999
agents_in() { { http_get /api/agents 2>/dev/null || true; } | { grep -o "\"state\":\"$1\"" || true; } | wc -l; }

sipp -sf "$WORK/uas_agent.xml" -i 127.0.0.1 -p 5080 -mp 40000 -buff_size 4194304 -nostdin \
    > "$WORK/sipp-agents.out" 2>&1 &
pids+=($!)
sleep 0.5
sipp -sf "$HERE/bridge/uac_agent_login.xml" 127.0.0.1:5060 -i 127.0.0.1 -p 5081 -mp 45000 -key uas_port 5080 \
    -inf "$WORK/agents.csv" -m "$AGENTS" -r 200 -l 400 -nostdin -timeout 300s > "$WORK/sipp-login.out" 2>&1 \
    || { echo "agent logins failed:" >&2; tail -20 "$WORK/sipp-login.out" >&2; exit 1; }
# The ACD publishes its view within 50 ms of a change; the last logins may still be in flight.
for _ in $(seq 1 150); do ready=$(agents_in ready); [ "$ready" -lt "$AGENTS" ] || break; sleep 0.2; done
echo "agents ready: $ready of $AGENTS (registered with digest, logged in with *11)"
[ "$ready" -eq "$AGENTS" ] || { echo "not every agent is ready" >&2; exit 1; }
calls_idle 120 # the logins' confirmation prompts end before the soak starts

# Sampler: elapsed_s;rss_kb;cpu_pct (over the interval);calls_active.
echo "elapsed_s;rss_kb;cpu_pct;calls_active" > "$WORK/rss.csv"
(
    s0=$(date +%s.%N); t_prev=$(cpu_ticks "$VPID"); s_prev=$s0
    while kill -0 "$VPID" 2>/dev/null; do
        sleep "$SAMPLE"
        t=$(cpu_ticks "$VPID"); s=$(date +%s.%N)
        echo "$(awk -v a="$s0" -v b="$s" 'BEGIN{printf "%.1f", b-a}');$(rss_kb "$VPID");$(cpu_pct "$t_prev" "$t" "$s_prev" "$s");$(metric verde_calls_active)" >> "$WORK/rss.csv"
        t_prev=$t; s_prev=$s
    done
) &
pids+=($!)

CALLS=$(( RATE * SECS ))
answered0=$(metric 'verde_sip_responses_received_total{code="200",method="INVITE"}')
echo "soak: $CALLS calls at $RATE/s for ${SECS} s, menu + key 1 + queue + agent, held ${HOLD} ms;" \
    "$AGENTS agents; samples every ${SAMPLE} s, plateau from ${WARM} s ($BIN, loopback, $(nproc) cores)"
set +e
sipp -sf "$HERE/soak/uac_ivr_caller.xml" -s 800000002 127.0.0.1:5060 -i 127.0.0.1 -p 5090 -mp 50000 \
    -r "$RATE" -m "$CALLS" -d "$HOLD" -buff_size 4194304 -nostdin \
    -trace_stat -fd 10 -trace_rtt -rtt_freq 100 -timeout "$(( SECS + HOLD / 1000 + 120 ))s" \
    > "$WORK/sipp-callers.out" 2>&1
SIPP_RC=$?
set -e
# Let the last agents' legs end and one more sample land.
sleep $(( SAMPLE + 1 ))
answered=$(( $(metric 'verde_sip_responses_received_total{code="200",method="INVITE"}') - answered0 ))
http_get /metrics > "$WORK/metrics.txt" 2>/dev/null || true
# Stopped before its log is read: the last call records reach the log on the way out.
verde_stop

STAT=$(ls "$WORK"/uac_ivr_caller_*_.csv 2>/dev/null | head -1 || true)
RTT=$(ls "$WORK"/uac_ivr_caller_*_rtt.csv 2>/dev/null | head -1 || true)
[ -n "$STAT" ] || { echo "SIPp wrote no statistics (exit $SIPP_RC):" >&2; tail -20 "$WORK/sipp-callers.out" >&2; exit 1; }
TOTAL=$(sipp_last "$STAT" 'OutgoingCall(C)'); OK=$(sipp_last "$STAT" 'SuccessfulCall(C)'); FAIL=$(sipp_last "$STAT" 'FailedCall(C)')
pct() { grep . | sort -n | awk -v q="$1" '{v[NR]=$1} END{ if (NR==0) {print "n/a"; exit} i=int(q*NR+0.999999); if (i<1) i=1; if (i>NR) i=NR; printf "%.1f", v[i] }'; }

echo "calls attempted:   $TOTAL"
echo "calls successful:  $OK"
echo "calls failed:      $FAIL   (sipp exit $SIPP_RC)"
echo "agent answered:    $answered (verde's INVITEs to agents' phones answered 200)"
# Every call must have gone through the menu (key 1) into the queue: the record's path says so.
ivr=$(grep 'call ended disposition=answered-agent' "$WORK/verde.log" | grep -c 'path=\["menu", "q"\]' || true)
echo "IVR -> queue:      $ivr calls ended answered by an agent with path menu -> q"
echo "callers' records:  $(grep 'call ended' "$WORK/verde.log" | grep -v 'path=\["say", "end"\]' | sed -n 's/.*disposition=\([^ ]*\).*/\1/p' | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')"
if [ -n "$RTT" ]; then
    awk -F';' 'NR>1 && $3 == 1 {n++; if (n==1) a=$1; b=$1} END{ if (n>1 && b>a) printf "achieved:          %.1f answered calls/s (%d answers over %.1f s)\n", (n-1)*1000/(b-a), n, (b-a)/1000 }' "$RTT"
    v=$(awk -F';' 'NR>1 && $3 == 1 {print $2}' "$RTT")
    echo "INVITE->200 OK:    p50 $(pct 0.5 <<<"$v") ms  p99 $(pct 0.99 <<<"$v") ms  max $(pct 1 <<<"$v") ms"
fi
# Plateau: samples from WARM s to the end of the calls (SECS + HOLD).
awk -F';' -v w="$WARM" -v e="$(( SECS + HOLD / 1000 ))" 'NR > 1 && $1 >= w && $1 <= e { n++; t[n]=$1; r[n]=$2/1024; c+=$3 }
    END {
        if (n < 2) { print "plateau:           too few samples (lengthen -t or shorten -i)"; exit }
        for (i = 1; i <= n; i++) { sx += t[i]; sy += r[i] }
        mx = sx / n; my = sy / n
        for (i = 1; i <= n; i++) { sxy += (t[i]-mx)*(r[i]-my); sxx += (t[i]-mx)^2 }
        m = int((n + 1) / 2)
        printf "RSS on the plateau: start %.1f MB (%.0f s), middle %.1f MB (%.0f s), end %.1f MB (%.0f s); min %.1f, max %.1f\n", r[1], t[1], r[m], t[m], r[n], t[n], min(r, n), max(r, n)
        printf "RSS slope:         %+.2f MB per 10 min (least squares over %d samples)\n", sxy / sxx * 600, n
        # Tables sized by the rate (transactions kept 32 s, live calls) reach their size in the
        # first minutes; growth that goes on in the second half is what a leak looks like.
        h = m; k = n - h + 1; sx = 0; sy = 0; sxy = 0; sxx = 0
        for (i = h; i <= n; i++) { sx += t[i]; sy += r[i] }
        mx = sx / k; my = sy / k
        for (i = h; i <= n; i++) { sxy += (t[i]-mx)*(r[i]-my); sxx += (t[i]-mx)^2 }
        if (k > 1 && sxx > 0) printf "RSS slope, 2nd half: %+.2f MB per 10 min (from %.0f s, %d samples)\n", sxy / sxx * 600, t[h], k
        printf "verde CPU:         %.1f %% of one core on the plateau (mean of %d samples)\n", c / n, n
    }
    function min(a, k,  i, v) { v = a[1]; for (i = 2; i <= k; i++) if (a[i] < v) v = a[i]; return v }
    function max(a, k,  i, v) { v = a[1]; for (i = 2; i <= k; i++) if (a[i] > v) v = a[i]; return v }' "$WORK/rss.csv"
echo "verde log:         $(grep -c ' ERROR ' "$WORK/verde.log" || true) ERROR, $(grep -c ' WARN ' "$WORK/verde.log" || true) WARN lines"
echo "RSS samples:       $WORK/rss.csv"
echo "work files: $WORK"
[ "$SIPP_RC" -eq 0 ] && [ "${FAIL:-1}" -eq 0 ] && [ "$answered" -eq "${TOTAL:-0}" ] && [ "$ivr" -eq "${TOTAL:-0}" ]
