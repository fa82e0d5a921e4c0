#!/usr/bin/env bash
# RTP relay load for verde's B2BUA bridge, with SIPp on both sides.
#
#   benches/load/bridge-load.sh [-a AGENTS] [-r CALLS_PER_S] [-d HOLD_MS] [-m MEASURE_S]
#
#   -a  agents, i.e. bridged calls at the plateau (default 100)
#   -r  rate at which callers arrive (default 20/s)
#   -d  how long each caller stays (default 30000 ms)
#   -m  seconds of CPU measured on the plateau (default 10)
#
# In a private network namespace (only lo): a release verde with a bench flow (800000001 goes
# straight to queue `bench`, first-free) and AGENTS agents. One SIPp registers every agent with
# digest and dials *11 for each (their Contact points at a second SIPp, the agents' phones,
# which answers every offered call and streams a tone). A third SIPp places AGENTS callers
# that stream a tone too: once every caller is bridged, verde relays 50 packets/s in each
# direction per call. The script samples verde's CPU time (/proc/PID/stat) over MEASURE_S
# seconds on the plateau and prints bridged calls, relayed packets/s, CPU per 100 bridged
# calls and packets/s per core. VERDE_BIN=path uses that binary.
set -euo pipefail

AGENTS=100 RATE=20 HOLD=30000 MEASURE=10
while getopts "a:r:d:m:h" o; do
    case "$o" in
        a) AGENTS=$OPTARG ;; r) RATE=$OPTARG ;; d) HOLD=$OPTARG ;; m) MEASURE=$OPTARG ;;
        *) sed -n '2,20p' "$0"; exit 2 ;;
    esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp sox)
load_enter_ns "$@"

load_workdir "bridge-$(load_ts)"
mkdir -p "$WORK/flows"

sox -n -r 8000 -c 1 -t ul "$WORK/tone.ulaw" synth 4 sine 440 vol 0.5
cp "$HERE/bridge/flow.yaml" "$WORK/flows/"
for f in uas_agent uac_caller uac_agent_login; do
    sed "s|@TONE@|$WORK/tone.ulaw|" "$HERE/bridge/$f.xml" > "$WORK/$f.xml"
done
{
    printf 'sip:\n  max_calls: 20000\nqueues:\n'
    printf '  - { name: bench, strategy: first-free, wrap_up: 1s, ring_timeout: 10s, announce: { position: false, estimated_wait: false } }\n'
    printf 'agents:\n'
    for i in $(seq 1 "$AGENTS"); do printf '  - { id: "%d", password: bench, queues: [bench] }\n' $((2000 + i)); done
} > "$WORK/bench.yaml"
{ echo SEQUENTIAL; for i in $(seq 1 "$AGENTS"); do echo "$((2000 + i));[authentication username=$((2000 + i)) password=bench]"; done; } > "$WORK/agents.csv"

verde_start verde.log --config "$WORK/bench.yaml" --flows "$WORK/flows" --rtp-ports 20000-29999
get() { http_get "$@"; }
# Agents in a state, from /api/agents (0 when none: grep finding nothing is not an error here).
agents_in() { { get /api/agents 2>/dev/null || true; } | { grep -o "\"state\":\"$1\"" || true; } | wc -l; }

# The agents' phones, then their registrations and logins.
sipp -sf "$WORK/uas_agent.xml" -i 127.0.0.1 -p 5080 -mp 40000 -buff_size 4194304 -nostdin \
    > "$WORK/sipp-agents.out" 2>&1 &
pids+=($!)
sleep 0.5
sipp -sf "$WORK/uac_agent_login.xml" 127.0.0.1:5060 -i 127.0.0.1 -p 5081 -mp 45000 -key uas_port 5080 \
    -inf "$WORK/agents.csv" -m "$AGENTS" -r 50 -l 200 -nostdin -timeout 120s > "$WORK/sipp-login.out" 2>&1 \
    || { echo "agent logins failed:" >&2; tail -20 "$WORK/sipp-login.out" >&2; exit 1; }
ready=$(agents_in ready)
echo "agents ready: $ready of $AGENTS"

# Callers: AGENTS of them, each staying HOLD ms.
sipp -sf "$WORK/uac_caller.xml" -s 800000001 127.0.0.1:5060 -i 127.0.0.1 -p 5090 -mp 50000 \
    -r "$RATE" -m "$AGENTS" -d "$HOLD" -buff_size 4194304 -nostdin -timeout "$(( HOLD / 1000 + 60 ))s" \
    > "$WORK/sipp-callers.out" 2>&1 &
CPID=$!; pids+=($CPID)

# Plateau: every agent on a call.
for _ in $(seq 1 $(( AGENTS / RATE * 10 + 100 ))); do
    oncall=$(agents_in oncall)
    [ "$oncall" -ge "$AGENTS" ] && break
    sleep 0.1
done
echo "bridged calls on the plateau: $oncall"
ticks() { cpu_ticks "$VPID"; }
t0=$(ticks); s0=$(date +%s.%N)
sleep "$MEASURE"
t1=$(ticks); s1=$(date +%s.%N)
oncall2=$(agents_in oncall)
awk -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" -v n="$oncall" -v n2="$oncall2" 'BEGIN {
    cpu = (t1 - t0) / hz / (s1 - s0) * 100
    pps = (n < n2 ? n : n2) * 100
    printf "bridged calls:     %d (still %d at the end of the window)\n", n, n2
    printf "relayed packets/s: %d (50 per direction per call)\n", pps
    printf "verde CPU:         %.1f %% of one core over %.1f s\n", cpu, s1 - s0
    if (n > 0) printf "CPU per 100 bridged calls: %.1f %% of a core\n", cpu * 100 / n
    if (cpu > 0) printf "relayed packets/s per core: %d\n", pps / (cpu / 100)
}'
wait "$CPID" || true
grep -E "Successful call|Failed call" "$WORK/sipp-callers.out" | tail -2
echo "work files: $WORK"
