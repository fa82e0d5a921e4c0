#!/usr/bin/env bash
# SIPp load test for verde.
#
#   benches/load/sipp-load.sh [-r CALLS_PER_S] [-t SECONDS] [-d HOLD_MS] [-n NUMBER] [-s SAMPLE_S]
#
#   -r  call rate (default 50)            -t  how long calls are started (default 10 s)
#   -d  how long each call listens before SIPp hangs up (default 2000 ms: the prompt is heard)
#   -n  number dialled (default 803164)   -s  seconds of traffic captured to time the first RTP
#                                             packet of each call (default 3; 0 disables)
#
# Builds a release verde (cargo build --release -p verde), then runs everything inside a private
# network namespace with only lo (unshare -n; needs root, or unprivileged user namespaces): verde
# on 127.0.0.1:5060 / HTTP 127.0.0.1:8080, SIPp as the trunk (-buff_size 4194304 so UDP drops
# at high rates do not turn into 32 s Timer B failures). Prints:
#   - calls attempted / successful / failed and the successful call rate achieved;
#   - INVITE -> 200 OK p50/p99 (SIPp response-time tracing, rtd 1 in uac_load.xml);
#   - INVITE -> first RTP packet from verde p50/p99, measured from a dumpcap capture of the first
#     SAMPLE_S seconds (SIPp cannot time RTP itself): per Call-ID, the INVITE's time and the
#     first packet from the RTP port verde put in its SDP answer.
# Needs: sipp (sip-tester), dumpcap + tshark, iproute2. tests/run.sh installs them.
# Work files go to target/load/<timestamp>/ (kept: verde.log, SIPp CSVs, capture).
# VERDE_BIN=path runs that binary instead of building target/release/verde.
set -euo pipefail

RATE=50 SECS=10 HOLD=2000 DID=803164 SAMPLE=3
while getopts "r:t:d:n:s:h" o; do
    case "$o" in
        r) RATE=$OPTARG ;; t) SECS=$OPTARG ;; d) HOLD=$OPTARG ;; n) DID=$OPTARG ;; s) SAMPLE=$OPTARG ;;
        *) sed -n '2,24p' "$0"; exit 2 ;;
    esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp dumpcap tshark)
load_enter_ns "$@"

# ---- inside the namespace ----
load_workdir "$(load_ts)"
SIP=127.0.0.1:5060 MEDIA_PORT=16000
# Enough RTP ports for every call alive at once (rate x hold), twice over for ports being freed.
NEED=$(( RATE * (HOLD / 1000 + 2) * 4 + 100 ))
RTP_HIGH=$(( 20000 + (NEED > 40000 ? 40000 : NEED) ))

# Capacity is what is measured here, not the default guard rail of 2000 concurrent calls.
printf 'sip:\n  max_calls: 30000\n' > "$WORK/load.yaml"
verde_start verde.log --config "$WORK/load.yaml" --media-ip 127.0.0.1 \
    --rtp-ports "20000-$RTP_HIGH" --flows "$ROOT/ivr-flows"

if [ "$SAMPLE" != 0 ]; then
    dumpcap -i lo -P -q -a "duration:$SAMPLE" -f "udp and (port 5060 or portrange 20000-$RTP_HIGH)" \
        -w "$WORK/sample.pcap" 2> "$WORK/dumpcap.log" &
    pids+=($!)
    for _ in $(seq 1 100); do grep -q "Capturing on" "$WORK/dumpcap.log" && break; sleep 0.1; done
    grep -q "Capturing on" "$WORK/dumpcap.log" || { cat "$WORK/dumpcap.log" >&2; exit 1; }
fi

CALLS=$(( RATE * SECS ))
echo "load: $CALLS calls at $RATE/s to $DID, each held ${HOLD} ms ($BIN, loopback, $(nproc) cores)"
set +e
sipp -sf "$HERE/uac_load.xml" -s "$DID" "$SIP" -i 127.0.0.1 -p 5070 -mp "$MEDIA_PORT" \
    -r "$RATE" -m "$CALLS" -d "$HOLD" -buff_size 4194304 -nostdin \
    -trace_stat -fd 1 -trace_rtt -rtt_freq 1 -timeout "$(( SECS + HOLD / 1000 + 60 ))s" \
    > "$WORK/sipp.out" 2>&1
SIPP_RC=$?
set -e

STAT=$(ls "$WORK"/uac_load_*_.csv 2>/dev/null | head -1 || true)
RTT=$(ls "$WORK"/uac_load_*_rtt.csv 2>/dev/null | head -1 || true)
[ -n "$STAT" ] || { echo "SIPp wrote no statistics (exit $SIPP_RC):" >&2; tail -20 "$WORK/sipp.out" >&2; exit 1; }

# Last line of the cumulative statistics, columns looked up by name.
last() { sipp_last "$STAT" "$1"; }
TOTAL=$(last 'OutgoingCall(C)'); OK=$(last 'SuccessfulCall(C)'); FAIL=$(last 'FailedCall(C)')
pct() { grep . | sort -n | awk -v q="$1" '{v[NR]=$1} END{ if (NR==0) {print "n/a"; exit} i=int(q*(NR-1)+0.5)+1; printf "%.1f", v[i] }'; }

echo "calls attempted:   $TOTAL"
echo "calls successful:  $OK"
echo "calls failed:      $FAIL   (sipp exit $SIPP_RC)"
if [ -n "$RTT" ]; then
    # rtt.csv: Date_ms (when the 200 OK arrived, from SIPp's start);response_time_ms;rtd_no.
    # Achieved rate: answered calls per second between the first and the last answer.
    awk -F';' 'NR>1 && $3 == 1 {n++; if (n==1) a=$1; b=$1} END{ if (n>1 && b>a) printf "achieved:          %.1f answered calls/s (%d answers over %.1f s)\n", (n-1)*1000/(b-a), n, (b-a)/1000 }' "$RTT"
    v=$(awk -F';' 'NR>1 && $3 == 1 {print $2}' "$RTT")
    echo "INVITE->200 OK:    p50 $(pct 0.5 <<<"$v") ms  p99 $(pct 0.99 <<<"$v") ms  ($(grep -c . <<<"$v") calls; SIPp's resolution is 1 ms)"
fi
if [ "$SAMPLE" != 0 ]; then
    wait "${pids[1]}" 2>/dev/null || true
    # INVITE times and answer ports per Call-ID, then first RTP per source port after that time.
    tshark -r "$WORK/sample.pcap" -d "udp.port==5060,sip" -Y 'sip.CSeq.method == "INVITE"' \
        -T fields -E separator='|' -e frame.time_epoch -e sip.Method -e sip.Status-Code -e sip.Call-ID \
        -e sdp.media.port 2>/dev/null > "$WORK/sip.txt" || true
    tshark -r "$WORK/sample.pcap" -Y "udp.srcport >= 20000 && udp.srcport <= $RTP_HIGH && udp.dstport == $MEDIA_PORT" \
        -T fields -E separator='|' -e frame.time_epoch -e udp.srcport 2>/dev/null > "$WORK/rtp.txt" || true
    # sip.txt: time|method|status|call-id|media port ; rtp.txt: time|verde's RTP port
    v=$(awk -F'|' '
        FNR == NR {
            if ($2 == "INVITE" && !($4 in inv)) inv[$4] = $1
            else if ($3 == "200" && $5 != "") port[$4] = $5
            next
        }
        { times[$2] = times[$2] " " $1 }
        END {
            for (c in inv) if (c in port) {
                n = split(times[port[c]], t, " ")
                for (i = 1; i <= n; i++) if (t[i] >= inv[c]) { printf "%.3f\n", (t[i] - inv[c]) * 1000; break }
            }
        }' "$WORK/sip.txt" "$WORK/rtp.txt")
    w=$(awk -F'|' '$2 == "INVITE" && !($4 in inv) {inv[$4]=$1} $3 == "200" && ($4 in inv) && !($4 in ok) {ok[$4]=1; printf "%.3f\n", ($1-inv[$4])*1000}' "$WORK/sip.txt")
    echo "INVITE->200 OK:    p50 $(pct 0.5 <<<"$w") ms  p99 $(pct 0.99 <<<"$w") ms  ($(grep -c . <<<"$w") calls in the first ${SAMPLE} s, from the capture)"
    echo "INVITE->first RTP: p50 $(pct 0.5 <<<"$v") ms  p99 $(pct 0.99 <<<"$v") ms  ($(grep -c . <<<"$v") calls in the first ${SAMPLE} s)"
fi
echo "work files: $WORK"
# A run with failed calls is not a measurement of a working system: say so in the exit status.
[ "$SIPP_RC" -eq 0 ] && [ "${FAIL:-1}" -eq 0 ]
