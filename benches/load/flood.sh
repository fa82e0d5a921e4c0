#!/usr/bin/env bash
# Flood test for verde's per-source limits: legitimate trunk calls keep succeeding while
# garbage and scanners hammer the SIP port.
#
#   benches/load/flood.sh [-r CALLS_PER_S] [-t SECONDS] [-d HOLD_MS] [-g GARBAGE_PPS] [-S SOURCES]
#                         [-R SCANNER_REGISTERS_PER_S] [-B]
#
#   -r  legitimate call rate from the trunk 127.0.0.1 (default 20)
#   -t  seconds of each phase (default 30)     -d  how long each call listens (default 2000 ms)
#   -g  malformed UDP packets per second (default 20000)
#   -S  how many source addresses the garbage comes from, 127.0.1.1 upwards (default 4; use
#       e.g. 5000 to see a spoofed-looking flood churn the source table)
#   -R  REGISTERs per second from each of two scanners (default 500): 127.0.0.2 guessing
#       passwords with a phone's User-Agent, 127.0.0.4 announcing itself as friendly-scanner
#   -B  skip the baseline phase
#
# Two phases with the same verde: a baseline (calls only), then the flood (calls + garbage +
# scanners). For each: calls attempted / successful (%), verde's CPU (utime+stime from
# /proc/PID/stat over the phase, in % of one core). For the flood also: garbage packets actually
# sent, packets verde dropped by reason (verde_sip_throttled_total), responses the scanners got,
# and the "SIP source throttled" log lines.
#
# Runs inside a private network namespace (unshare -n, as sipp-load.sh). Builds a release verde
# unless VERDE_BIN is set. Needs sipp, python3, iproute2. Work files: target/load/flood-<ts>/.
set -euo pipefail

RATE=20 SECS=30 HOLD=2000 GPPS=20000 SOURCES=4 SRATE=500 BASELINE=1
while getopts "r:t:d:g:S:R:Bh" o; do
    case "$o" in
        r) RATE=$OPTARG ;; t) SECS=$OPTARG ;; d) HOLD=$OPTARG ;; g) GPPS=$OPTARG ;;
        S) SOURCES=$OPTARG ;; R) SRATE=$OPTARG ;; B) BASELINE=0 ;;
        *) sed -n '2,24p' "$0"; exit 2 ;;
    esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp python3)
load_enter_ns "$@"

# ---- inside the namespace ----
load_workdir "flood-$(load_ts)"
SIP_PORT=5060 SIP=127.0.0.1:5060
NEED=$(( RATE * (HOLD / 1000 + 2) * 4 + 100 ))
RTP_HIGH=$(( 20000 + (NEED > 40000 ? 40000 : NEED) ))

printf 'sip:\n  max_calls: 30000\n' > "$WORK/flood.yaml"
verde_start verde.log --config "$WORK/flood.yaml" --media-ip 127.0.0.1 \
    --rtp-ports "20000-$RTP_HIGH" --flows "$ROOT/ivr-flows"
VERDE_PID=$VPID

# The scanners: REGISTER, then a wrong answer to the challenge; a silenced one moves on after
# 300 ms without an answer.
scanner_xml() {
    cat > "$WORK/scanner-$1.xml" <<EOF
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="scanner">
  <send><![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:100@[remote_ip]>;tag=[pid]S[call_number]
      To: <sip:100@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:100@[local_ip]:[local_port]>
      User-Agent: $2
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="401" auth="true" timeout="300" ontimeout="done"/>
  <send><![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:100@[remote_ip]>;tag=[pid]S[call_number]
      To: <sip:100@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:100@[local_ip]:[local_port]>
      [authentication username=100 password=123456]
      User-Agent: $2
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="403" timeout="300" ontimeout="done"/>
  <label id="done"/>
</scenario>
EOF
}
scanner_xml guess "Yealink SIP-T46S 66.86.0.15"
scanner_xml friendly "friendly-scanner"

# Malformed UDP at a fixed rate, paced per 5 ms tick, round-robin over SOURCES bound addresses.
cat > "$WORK/garbage.py" <<'EOF'
import socket, sys, time
pps, secs, sources, port = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(sources):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.%d.%d" % (1 + i // 250, 1 + i % 250), 0))
    s.setblocking(False)
    socks.append(s)
payload = [b"\x16\x03\x01\x00\xa5 garbage %d \r\nVia: nonsense\r\n\r\n" % i for i in range(64)]
dst, tick = ("127.0.0.1", port), 0.005
per_tick, sent, n = pps * tick, 0, 0
start = time.perf_counter()
while True:
    now = time.perf_counter() - start
    if now >= secs:
        break
    due = int(now / tick + 1) * per_tick
    while sent < due:
        try:
            socks[n % len(socks)].sendto(payload[n % 64], dst)
        except BlockingIOError:
            pass
        sent += 1; n += 1
    time.sleep(max(0.0, (int(now / tick) + 1) * tick - (time.perf_counter() - start)))
print(sent, "%.1f" % (time.perf_counter() - start))
EOF


# Legit calls for one phase; prints "attempted successful failed cpu%".
calls_phase() {
    local name=$1 calls=$(( RATE * SECS ))
    local t0 c0 t1 c1
    t0=$(date +%s.%N); c0=$(cpu_ticks "$VERDE_PID")
    set +e
    sipp -sf "$HERE/uac_load.xml" -s 803164 "$SIP" -i 127.0.0.1 -p 5070 -mp 16000 \
        -r "$RATE" -m "$calls" -d "$HOLD" -buff_size 4194304 -nostdin -trace_stat -fd 1 \
        -timeout "$(( SECS + HOLD / 1000 + 60 ))s" > "$WORK/sipp-$name.out" 2>&1
    set -e
    t1=$(date +%s.%N); c1=$(cpu_ticks "$VERDE_PID")
    local stat; stat=$(ls -t "$WORK"/uac_load_*_.csv | head -1)
    mv "$stat" "$WORK/stat-$name.csv"
    last() { sipp_last "$WORK/stat-$name.csv" "$1"; }
    echo "$(last 'OutgoingCall(C)') $(last 'SuccessfulCall(C)') $(last 'FailedCall(C)') $(cpu_pct "$c0" "$c1" "$t0" "$t1")"
}

report() {
    read -r total ok fail cpu <<<"$2"
    awk -v n="$1" -v t="$total" -v o="$ok" -v f="$fail" -v c="$cpu" 'BEGIN{printf "%-9s calls %s, successful %s (%.2f %%), failed %s; verde CPU %s %% of one core\n", n, t, o, (t>0?100*o/t:0), f, c}'
}

echo "flood: $RATE calls/s for ${SECS} s per phase, hold ${HOLD} ms; garbage ${GPPS} pps from ${SOURCES} source(s); scanners ${SRATE} REGISTER/s x 2 ($BIN, $(nproc) cores)"
if [ "$BASELINE" = 1 ]; then
    BASE=$(calls_phase baseline)
    report baseline "$BASE"
fi

# The flood runs a little longer than the calls so every call meets it.
FLOOD_SECS=$(( SECS + HOLD / 1000 + 2 ))
python3 "$WORK/garbage.py" "$GPPS" "$FLOOD_SECS" "$SOURCES" "$SIP_PORT" > "$WORK/garbage.out" &
pids+=($!); GPID=$!
SCAN_CALLS=$(( SRATE * FLOOD_SECS ))
for s in guess:127.0.0.2:5072 friendly:127.0.0.4:5074; do
    IFS=: read -r kind addr port <<<"$s"
    sipp -sf "$WORK/scanner-$kind.xml" "$SIP" -i "$addr" -p "$port" -r "$SRATE" -m "$SCAN_CALLS" \
        -l "$SRATE" -buff_size 4194304 -nostdin -trace_stat -trace_msg -message_file "$WORK/scanner-$kind-msg.log" \
        -timeout "$(( FLOOD_SECS + 30 ))s" > "$WORK/scanner-$kind.out" 2>&1 &
    pids+=($!)
done
sleep 1
FLOOD=$(calls_phase flood)
wait "$GPID" || true
report flood "$FLOOD"
[ -s "$WORK/garbage.out" ] || { echo "the garbage sender failed (see above; -S needs that many file descriptors: ulimit -n)" >&2; exit 1; }
read -r gsent gsecs < "$WORK/garbage.out"
echo "garbage sent: ${gsent:-?} packets in ${gsecs:-?} s ($(awk -v n="${gsent:-0}" -v s="${gsecs:-1}" 'BEGIN{printf "%.0f", n/s}') pps)"
for kind in guess friendly; do
    for _ in $(seq 1 100); do grep -q "Statistics" "$WORK/scanner-$kind.out" 2>/dev/null && break; sleep 0.5; done
    s=$(grep -c "message sent" "$WORK/scanner-$kind-msg.log" || true)
    r=$(grep -c "message received" "$WORK/scanner-$kind-msg.log" || true)
    echo "scanner $kind: sent $s REGISTERs, got $r responses"
done
echo "dropped by verde (verde_sip_throttled_total):"
http_get /metrics | grep '^verde_sip_throttled_total' | sed 's/^/  /' || echo "  (none)"
echo "malformed reaching the parser: $(http_get /metrics | awk '/^verde_sip_malformed_total/{print $2}')"
echo "throttle log lines: $(grep -c 'SIP source throttled' "$WORK/verde.log" || true)"
grep 'SIP source throttled' "$WORK/verde.log" | head -8 | sed 's/^/  /'
echo "work files: $WORK"
