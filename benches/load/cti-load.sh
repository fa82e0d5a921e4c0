#!/usr/bin/env bash
# CTI websocket load: agents' bars and supervisors' wallboards on /cti while SIPp drives calls
# through a queue, checking that events arrive in order, nothing is dropped, and the dispatch
# latency stays what it is without the websockets.
#
#   benches/load/cti-load.sh [-a AGENTS] [-s SUPERVISORS] [-r CALLS_PER_S] [-t SECONDS]
#                            [-d HOLD_MS] [-w WRAP_UP_MS] [-i INTERVAL_MS] [-m] [-n]
#
#   -a  agents (default 500)                  -s  supervisors (default 200)
#   -r  call rate (default 200/s)             -t  how long calls are started (default 60 s)
#   -d  how long a caller stays once answered (default 1000 ms)
#   -w  the queue's wrap-up (default 500 ms)  -i  supervisors' interval_ms (default 500; 0: none)
#   -m  stream a tone both ways (adds the RTP relay's load; off: this measures signaling)
#   -n  no websockets: the same SIP load alone, the reference for the dispatch latency
#
# In a private network namespace (only lo): a release verde with the bench flow (800000001 goes
# straight to queue `bench`, first-free), AGENTS agents a1..aN and SUPERVISORS supervisors
# sup1..supN (password bench). One SIPp registers every agent with digest and dials *11 for it
# (Contact: a second SIPp, the agents' phones, answering every offered call at once);
# verde-cti-load logs every agent and supervisor in on ws://127.0.0.1:8080/cti (supervisors
# subscribe to the wallboard); then a third SIPp places RATE calls/s for SECONDS s, each hanging
# up HOLD_MS after verde answers it. Prints:
#   - SIPp's calls attempted / successful / failed, and INVITE -> 200 OK from the caller's side
#     (the queue node answers at once, so that is the IVR's answer time, not the dispatch);
#   - dispatch latency: caller's INVITE -> verde's INVITE to the agent's phone, per call, from a
#     capture of INVITEs only (verde's /metrics has no dispatch figure); calls dispatched of sent;
#   - verde's CPU over the SIPp run; verde-cti-load's summary (its own CPU included).
# Run it twice, with and without -n, and compare the dispatch lines.
# Needs: sipp, dumpcap + tshark, iproute2 (tests/run.sh installs them), sox with -m.
# VERDE_BIN=path / CTI_LOAD_BIN=path use those binaries instead of building them (release).
# Work files go to target/load/cti-<timestamp>/.
set -euo pipefail

AGENTS=500 SUPS=200 RATE=200 SECS=60 HOLD=1000 WRAP=500 INTERVAL=500 MEDIA=0 NOWS=0
while getopts "a:s:r:t:d:w:i:mnh" o; do
    case "$o" in
        a) AGENTS=$OPTARG ;; s) SUPS=$OPTARG ;; r) RATE=$OPTARG ;; t) SECS=$OPTARG ;;
        d) HOLD=$OPTARG ;; w) WRAP=$OPTARG ;; i) INTERVAL=$OPTARG ;; m) MEDIA=1 ;; n) NOWS=1 ;;
        *) sed -n '2,31p' "$0"; exit 2 ;;
    esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp dumpcap tshark)
[ "$MEDIA" = 0 ] || LOAD_TOOLS+=(sox)
[ "$NOWS" = 1 ] || LOAD_PKGS=(verde-cti-load:CTI_LOAD_BIN)
load_enter_ns "$@"

# ---- inside the namespace ----
load_workdir "cti-$(load_ts)$([ "$NOWS" = 1 ] && echo -nows || true)"
mkdir -p "$WORK/flows"
LOAD="${CTI_LOAD_BIN:-$ROOT/target/release/verde-cti-load}"

# Scenarios: the bridge bench's, with the caller's INVITE -> 200 timed (rtd 1) and, unless -m,
# without the tone (the RTP relay would compete with the signaling measured here).
if [ "$MEDIA" = 1 ]; then
    sox -n -r 8000 -c 1 -t ul "$WORK/tone.ulaw" synth 4 sine 440 vol 0.5
    media=(-e "s|@TONE@|$WORK/tone.ulaw|")
else
    media=(-e '/rtp_stream=/d')
fi
sed "${media[@]}" "$HERE/bridge/uas_agent.xml" > "$WORK/uas_agent.xml"
sed "${media[@]}" -e '0,/<send retrans="500">/s//<send retrans="500" start_rtd="1">/' \
    -e '0,/<recv response="200"\/>/s//<recv response="200" rtd="1"\/>/' \
    "$HERE/bridge/uac_caller.xml" > "$WORK/uac_caller.xml"
cp "$HERE/bridge/uac_agent_login.xml" "$WORK/"
grep -q 'rtd="1"' "$WORK/uac_caller.xml" || { echo "could not time the caller's INVITE in uac_caller.xml" >&2; exit 1; }
cp "$HERE/bridge/flow.yaml" "$WORK/flows/"
{
    printf 'sip:\n  max_calls: 30000\nqueues:\n'
    printf '  - { name: bench, strategy: first-free, wrap_up: %dms, ring_timeout: 10s, announce: { position: false, estimated_wait: false } }\n' "$WRAP"
    printf 'agents:\n'
    for i in $(seq 1 "$AGENTS"); do printf '  - { id: "a%d", password: bench, queues: [bench] }\n' "$i"; done
    if [ "$SUPS" -gt 0 ]; then printf 'supervisors:\n'; else printf 'supervisors: []\n'; fi
    for i in $(seq 1 "$SUPS"); do printf '  - { id: "sup%d", password: bench }\n' "$i"; done
} > "$WORK/bench.yaml"
{ echo SEQUENTIAL; for i in $(seq 1 "$AGENTS"); do echo "a$i;[authentication username=a$i password=bench]"; done; } > "$WORK/agents.csv"

verde_start verde.log --config "$WORK/bench.yaml" --flows "$WORK/flows" --rtp-ports 20000-29999
get() { http_get "$@"; }
agents_in() { { get /api/agents 2>/dev/null || true; } | { grep -o "\"state\":\"$1\"" || true; } | wc -l; }

# The agents' phones, then their registrations and *11 logins.
sipp -sf "$WORK/uas_agent.xml" -i 127.0.0.1 -p 5080 -mp 40000 -buff_size 4194304 -nostdin \
    > "$WORK/sipp-agents.out" 2>&1 &
pids+=($!)
sleep 0.5
sipp -sf "$WORK/uac_agent_login.xml" 127.0.0.1:5060 -i 127.0.0.1 -p 5081 -mp 45000 -key uas_port 5080 \
    -inf "$WORK/agents.csv" -m "$AGENTS" -r 100 -l 300 -nostdin -timeout 180s > "$WORK/sipp-login.out" 2>&1 \
    || { echo "agent logins failed:" >&2; tail -20 "$WORK/sipp-login.out" >&2; exit 1; }
ready=$(agents_in ready)
echo "agents ready: $ready of $AGENTS (registered and logged in with *11)"

# The websockets: every agent's bar and every supervisor's wallboard, logged in before the calls.
if [ "$NOWS" = 0 ]; then
    # The window is ended by SIGTERM once SIPp is done; the duration is only a backstop.
    "$LOAD" --url "ws://$HTTP/cti" --agents "$AGENTS" --agent-prefix a --agent-password bench \
        --supervisors "$SUPS" --supervisor-prefix sup --supervisor-password bench \
        --interval-ms "$INTERVAL" --duration $(( SECS * 4 + HOLD / 1000 + 300 )) \
        > "$WORK/cti-load.out" 2>&1 &
    LPID=$!; pids+=($LPID)
    for _ in $(seq 1 1800); do
        grep -q '^connected:' "$WORK/cti-load.out" && break
        kill -0 "$LPID" 2>/dev/null || break
        sleep 0.1
    done
    grep '^connected:' "$WORK/cti-load.out" || { echo "verde-cti-load did not connect:" >&2; tail -30 "$WORK/cti-load.out" >&2; exit 1; }
fi

# INVITEs only ("INVI" at the start of the UDP payload): callers' to verde, verde's to the agents.
dumpcap -i lo -q -f 'udp and udp[8:4] = 0x494e5649' -w "$WORK/invites.pcapng" 2> "$WORK/dumpcap.log" &
DPID=$!; pids+=($DPID)
for _ in $(seq 1 100); do grep -q "Capturing on" "$WORK/dumpcap.log" && break; sleep 0.1; done
grep -q "Capturing on" "$WORK/dumpcap.log" || { cat "$WORK/dumpcap.log" >&2; exit 1; }

CALLS=$(( RATE * SECS ))
echo "load: $CALLS calls at $RATE/s, each held ${HOLD} ms, wrap-up ${WRAP} ms; $AGENTS agents;" \
    "$([ "$NOWS" = 1 ] && echo "no websockets" || echo "$AGENTS agent + $SUPS supervisor websockets (interval_ms $INTERVAL)")" \
    "($(nproc) cores, media $([ "$MEDIA" = 1 ] && echo on || echo off))"
# Agents busy at once: each call holds one for about HOLD + WRAP. Short of agents, callers queue
# and the dispatch figure becomes the queue's wait.
busy=$(( RATE * (HOLD + WRAP + 100) / 1000 ))
[ "$busy" -lt "$AGENTS" ] || echo "warning: about $busy agents needed at once, $AGENTS configured: callers will wait in line" >&2
ticks() { cpu_ticks "$VPID"; }
t0=$(ticks); s0=$(date +%s.%N)
set +e
sipp -sf "$WORK/uac_caller.xml" -s 800000001 127.0.0.1:5060 -i 127.0.0.1 -p 5090 -mp 50000 \
    -r "$RATE" -m "$CALLS" -d "$HOLD" -buff_size 4194304 -nostdin \
    -trace_stat -fd 1 -trace_rtt -rtt_freq 1 -timeout "$(( SECS * 3 + HOLD / 1000 + 60 ))s" \
    > "$WORK/sipp-callers.out" 2>&1
SIPP_RC=$?
set -e
t1=$(ticks); s1=$(date +%s.%N)
if [ "$NOWS" = 0 ]; then
    kill -TERM "$LPID" 2>/dev/null || true
    LOAD_RC=0; wait "$LPID" || LOAD_RC=$?
fi
sleep 0.5
kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true

STAT=$(ls "$WORK"/uac_caller_*_.csv 2>/dev/null | head -1 || true)
RTT=$(ls "$WORK"/uac_caller_*_rtt.csv 2>/dev/null | head -1 || true)
[ -n "$STAT" ] || { echo "SIPp wrote no statistics (exit $SIPP_RC):" >&2; tail -20 "$WORK/sipp-callers.out" >&2; exit 1; }
last() { sipp_last "$STAT" "$1"; }
TOTAL=$(last 'OutgoingCall(C)'); OK=$(last 'SuccessfulCall(C)'); FAIL=$(last 'FailedCall(C)')
pct() { grep . | sort -n | awk -v q="$1" '{v[NR]=$1} END{ if (NR==0) {print "n/a"; exit} i=int(q*NR+0.999999); if (i<1) i=1; if (i>NR) i=NR; printf "%.1f", v[i] }'; }

echo "--- SIP ---"
echo "calls attempted:   $TOTAL"
echo "calls successful:  $OK"
echo "calls failed:      $FAIL   (sipp exit $SIPP_RC)"
if [ -n "$RTT" ]; then
    v=$(awk -F';' 'NR>1 && $3 == 1 {print $2}' "$RTT")
    echo "caller answered:   INVITE->200 OK p50 $(pct 0.5 <<<"$v") ms  p99 $(pct 0.99 <<<"$v") ms  max $(pct 1 <<<"$v") ms ($(grep -c . <<<"$v") calls)"
fi
# time|destination port|From user: the agent leg's From carries the caller's number.
tshark -r "$WORK/invites.pcapng" -d udp.port==5080,sip -d udp.port==5060,sip -Y 'sip.Method == "INVITE"' \
    -T fields -E separator='|' -e frame.time_epoch -e udp.dstport -e sip.from.user \
    2>/dev/null > "$WORK/invites.txt" || true
d=$(awk -F'|' '
    $2 == 5060 && $3 ~ /^06/ && !($3 in c) { c[$3] = $1 }
    $2 == 5080 && !($3 in a) { a[$3] = $1 }
    END { for (k in a) if (k in c) printf "%.3f\n", (a[k] - c[k]) * 1000 }' "$WORK/invites.txt")
callers=$(awk -F'|' '$2 == 5060 && $3 ~ /^06/' "$WORK/invites.txt" | cut -d'|' -f3 | sort -u | wc -l)
echo "dispatch latency:  caller INVITE->agent INVITE p50 $(pct 0.5 <<<"$d") ms  p99 $(pct 0.99 <<<"$d") ms  max $(pct 1 <<<"$d") ms ($(grep -c . <<<"$d") of $callers calls dispatched)"
awk -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" 'BEGIN {
    printf "verde CPU:         %.2f s over the %.1f s SIPp run = %.1f %% of one core\n", (t1 - t0) / hz, s1 - s0, (t1 - t0) / hz / (s1 - s0) * 100 }'
echo "agents ready after the run: $(agents_in ready) of $AGENTS"
LOAD_STATUS=0
if [ "$NOWS" = 0 ]; then
    echo "--- CTI ---"
    grep '^connected:' "$WORK/cti-load.out"
    sed -n '/^--- verde-cti-load summary ---/,$p' "$WORK/cti-load.out" | tail -n +2
    LOAD_STATUS=$LOAD_RC
fi
echo "verde log:         $(grep -c 'too slow' "$WORK/verde.log" || true) CTI connections closed as too slow, $(grep -c ' ERROR ' "$WORK/verde.log" || true) errors"
echo "work files: $WORK"
[ "$SIPP_RC" -eq 0 ] && [ "${FAIL:-1}" -eq 0 ] && [ "$LOAD_STATUS" -eq 0 ]
