#!/usr/bin/env bash
# CPU and memory per WebRTC call against per SIP call: N concurrent browser-free WebRTC calls
# (verde-webrtc-load: ICE + DTLS + SRTP over loopback, through /webrtc), then N concurrent SIP
# calls from SIPp, both into the same IVR with the same media, while verde's CPU and RSS are read.
#
#   benches/load/webrtc-load.sh [-n CALLS] [-d HOLD_S] [-w WINDOW_S] [-R RUNS] [-c CODEC]
#                               [-k DTMF_AFTER_S] [-N NUMBER]
#
#   -n  concurrent calls of each kind (default 50)
#   -d  how long each call is held once connected/answered (default 30 s)
#   -w  measurement window (default 20 s): it starts SETTLE (3 s) after the last call is up
#       and must end before the first hangup (ramp + settle + window + 2 <= hold)
#   -R  runs (default 3): figures are medians over the runs
#   -c  WebRTC codec: pcmu (default; no transcoding), pcma, opus (verde transcodes both ways)
#   -k  seconds after connecting when each caller presses 1 (default 4: after the welcome)
#   -N  number called (default 803164, ivr-flows/inps.yaml)
#
# Both kinds of call do the same thing: the caller streams a 440 Hz tone as 20 ms G.711 frames
# (Opus with -c opus), presses 1 with RFC 4733 after DTMF_AFTER_S (the language menu), hears the
# prompts (language_selected, privacy, service menu) and hangs up after HOLD_S. SIP callers
# replay a generated pcap (play_pcap_audio: tone + the digit, one RTP stream) from SIPp.
# Each phase gets a fresh verde (release build, default configuration plus raised limits:
# sip.max_calls, webrtc.max_calls_per_ip, calls_per_minute_per_ip), in a private network
# namespace with only lo (unshare -n; root or unprivileged user namespaces). Measured over the
# window, from /proc/PID/stat (utime + stime, every thread) and /proc/PID/status (VmRSS):
#   - verde's CPU in % of one core, and per call (divided by CALLS);
#   - verde's RSS growth from idle to the window's end, per call;
#   - the load generator's own CPU (verde-webrtc-load or SIPp: they share the 2 cores);
# then prints each run, the medians and WebRTC/SIP ratios. Checked per phase: calls ok/failed,
# the callers that heard prompts (WebRTC: the tool's check; SIP: verde's rtp_sent), the calls
# whose IVR path shows the digit (verde's log: lang_it), /health's calls at both window ends,
# ERROR lines and per-call WARN lines in verde's log. Exit status 1 when any call failed.
# Needs: sipp (sip-tester), python3, iproute2. tests/run.sh installs sipp.
# VERDE_BIN=path / WEBRTC_LOAD_BIN=path use those binaries instead of building them (release).
# Work files go to target/load/webrtc-<timestamp>/ (kept: logs, tool outputs, SIPp CSVs).
set -euo pipefail

CALLS=50 HOLD=30 WINDOW=20 RUNS=3 CODEC=pcmu DTMF_AFTER=4 DID=803164
while getopts "n:d:w:R:c:k:N:h" o; do
    case "$o" in
        n) CALLS=$OPTARG ;; d) HOLD=$OPTARG ;; w) WINDOW=$OPTARG ;; R) RUNS=$OPTARG ;;
        c) CODEC=$OPTARG ;; k) DTMF_AFTER=$OPTARG ;; N) DID=$OPTARG ;;
        *) sed -n '2,36p' "$0"; exit 2 ;;
    esac
done
SETTLE=3
RAMP_MS=20
case "$CODEC" in pcmu|pcma|opus) ;; *) echo "-c: pcmu, pcma or opus" >&2; exit 2 ;; esac
if [ $(( CALLS * RAMP_MS / 1000 + SETTLE + WINDOW + 2 )) -gt "$HOLD" ]; then
    echo "the window must end before the first hangup: ramp + $SETTLE + WINDOW + 2 <= HOLD" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
LOAD_TOOLS=(sipp python3)
LOAD_PKGS=(verde-webrtc-load:WEBRTC_LOAD_BIN)
load_enter_ns "$@"

# ---- inside the namespace ----
load_workdir "webrtc-$(load_ts)"
LOAD="${WEBRTC_LOAD_BIN:-$ROOT/target/release/verde-webrtc-load}"

# Capacity is measured here, not the guard rails: one address places every web call.
cat > "$WORK/load.yaml" <<EOF
sip:
  max_calls: 1000
webrtc:
  max_calls: 1000
  max_calls_per_ip: 1000
  calls_per_minute_per_ip: 1000000
EOF

# The SIP caller's media: the tool's stream, as a pcap SIPp replays (PCMU PT 0, the digit as
# telephone-event PT 101 at DTMF_AFTER, 100 ms + 3 end copies, audio paused meanwhile).
python3 - "$WORK/caller.pcap" "$HOLD" "$DTMF_AFTER" <<'EOF'
import math, struct, sys
path, hold, dtmf_after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def ulaw(s):
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), 32635) + 0x84
    exp = 7
    while exp > 0 and not (s & (0x4000 >> (7 - exp))):
        exp -= 1
    return ~(sign | (exp << 4) | ((s >> (exp + 3)) & 0x0F)) & 0xFF
tone = bytes(ulaw(int(math.sin(i * 2 * math.pi * 440 / 8000) * 8000)) for i in range(8000))
slots = int(hold * 50)
digit = int(dtmf_after * 50) if dtmf_after >= 0 else -1
out = [struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)]
for n in range(slots):
    i = n - digit
    if digit >= 0 and 0 <= i < 8:
        dur = (min(i, 4) + 1) * 160
        payload = bytes([1, (0x80 if i >= 4 else 0) | 10, dur >> 8, dur & 0xFF])
        head = struct.pack('!BBHII', 0x80, 101 | (0x80 if i == 0 else 0), n & 0xFFFF, digit * 160, 0x51B0CA11)
    else:
        at = (n * 160) % 8000
        payload = tone[at:at + 160]
        head = struct.pack('!BBHII', 0x80, 0x80 if n == 0 else 0, n & 0xFFFF, n * 160, 0x51B0CA11)
    rtp = head + payload
    ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28 + len(rtp), 0, 0x4000, 64, 17, 0,
                               bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])))
    s = sum(struct.unpack('!10H', bytes(ip)))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    ip[10:12] = struct.pack('!H', ~s & 0xFFFF)
    frame = bytes(12) + b'\x08\x00' + bytes(ip) + struct.pack('!HHHH', 10000, 10002, 8 + len(rtp), 0) + rtp
    us = n * 20000
    out.append(struct.pack('<IIII', us // 1000000, us % 1000000, len(frame), len(frame)) + frame)
open(path, 'wb').write(b''.join(out))
EOF
sed "s|<pause/>|<nop><action><exec play_pcap_audio=\"$WORK/caller.pcap\"/></action></nop>\\n  <pause/>|" \
    "$HERE/uac_load.xml" > "$WORK/uac_media.xml"
grep -q play_pcap_audio "$WORK/uac_media.xml" || { echo "could not add the caller's media to uac_load.xml" >&2; exit 1; }

get() { http_get "$@"; }
health_calls() { { get /health 2>/dev/null || true; } | grep -o '"calls":[0-9]*' | cut -d: -f2; }
ticks() { cpu_ticks "$1"; }

start_verde() { # $1: log name
    rm -rf "$WORK/data"; mkdir -p "$WORK/data"
    verde_start "$1" --config "$WORK/load.yaml" --media-ip 127.0.0.1 --rtp-ports 20000-29999 \
        --flows "$ROOT/ivr-flows"
    sleep 1 # idle RSS after start-up, not during it
}
stop_verde() { verde_stop; }
# Over the window: verde's and the generator's CPU ticks, verde's RSS and /health's calls.
# Prints "cpu_pct gen_pct rss_idle_kb rss_kb calls_start calls_end".
measure() { # $1: generator pid, $2: idle rss
    local v0 g0 v1 g1 c0 c1 s0 s1
    c0=$(health_calls); v0=$(ticks "$VPID"); g0=$(ticks "$1"); s0=$(date +%s.%N)
    sleep "$WINDOW"
    v1=$(ticks "$VPID"); g1=$(ticks "$1"); s1=$(date +%s.%N); c1=$(health_calls)
    awk -v v0="$v0" -v v1="$v1" -v g0="$g0" -v g1="$g1" -v s0="$s0" -v s1="$s1" -v hz="$HZ" \
        -v r0="$2" -v r1="$(rss_kb "$VPID")" -v c0="${c0:-?}" -v c1="${c1:-?}" \
        'BEGIN { w = s1 - s0; printf "%.2f %.2f %d %d %s %s\n", (v1-v0)/hz/w*100, (g1-g0)/hz/w*100, r0, r1, c0, c1 }'
}
# IVR paths in a verde log: calls ended, those whose path went through the digit's branch,
# those that sent the caller RTP; then ERROR lines and a call's WARN lines.
ivr_check() {
    local ended digit rtp errors warns
    ended=$(grep -c 'call ended' "$1" || true)
    digit=$(grep 'call ended' "$1" | grep -c '"lang_it"' || true)
    rtp=$(grep 'call ended' "$1" | grep -Ec 'rtp_sent=[1-9]' || true)
    errors=$(grep -c ' ERROR ' "$1" || true)
    warns=$(grep -c ' WARN call{' "$1" || true)
    echo "$ended $digit $rtp $errors $warns"
}

webrtc_phase() { # $1: run
    start_verde "verde-webrtc-$1.log"
    local idle; idle=$(rss_kb "$VPID")
    "$LOAD" --url "ws://$HTTP/webrtc" --number "$DID" --calls "$CALLS" --hold "$HOLD" --codec "$CODEC" \
        --dtmf-after "$DTMF_AFTER" --ramp-ms "$RAMP_MS" > "$WORK/webrtc-$1.out" 2>&1 &
    local lpid=$!; pids+=($lpid)
    for _ in $(seq 1 600); do
        grep -q '^connected:' "$WORK/webrtc-$1.out" && break
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^connected:' "$WORK/webrtc-$1.out" || { echo "verde-webrtc-load did not get its calls up:" >&2; tail -30 "$WORK/webrtc-$1.out" >&2; exit 1; }
    sleep "$SETTLE"
    local m; m=$(measure "$lpid" "$idle")
    local rc=0; wait "$lpid" || rc=$?
    stop_verde
    local ok fail p50 p99
    ok=$(sed -n 's/^calls: *\([0-9]*\) ok, \([0-9]*\) failed.*/\1/p' "$WORK/webrtc-$1.out")
    fail=$(sed -n 's/^calls: *\([0-9]*\) ok, \([0-9]*\) failed.*/\2/p' "$WORK/webrtc-$1.out")
    p50=$(sed -n 's/^connect: *p50 \([0-9]*\) ms .*/\1/p' "$WORK/webrtc-$1.out")
    p99=$(sed -n 's/^connect: .* p99 \([0-9]*\) ms .*/\1/p' "$WORK/webrtc-$1.out")
    local heard; heard=$(sed -n 's/^audio: *\([0-9]*\) of .*/\1/p' "$WORK/webrtc-$1.out")
    # run kind cpu gen rss_idle rss calls0 calls1 ok fail p50 p99 heard ended digit rtp errors warns rc
    echo "$1 webrtc $m ${ok:-0} ${fail:-$CALLS} ${p50:-NA} ${p99:-NA} ${heard:-0} $(ivr_check "$WORK/verde-webrtc-$1.log") $rc" >> "$WORK/results.txt"
}

sip_phase() { # $1: run
    start_verde "verde-sip-$1.log"
    local idle; idle=$(rss_kb "$VPID")
    sipp -sf "$WORK/uac_media.xml" -s "$DID" 127.0.0.1:5060 -i 127.0.0.1 -p 5070 -mp 16000 \
        -r "$CALLS" -rp 1000 -m "$CALLS" -l "$CALLS" -d $(( HOLD * 1000 )) -buff_size 4194304 -nostdin \
        -trace_stat -fd 1 -trace_rtt -rtt_freq 1 -timeout "$(( HOLD + 60 ))s" \
        > "$WORK/sipp-$1.out" 2>&1 &
    local spid=$!; pids+=($spid)
    for _ in $(seq 1 100); do
        [ "$(health_calls)" = "$CALLS" ] && break
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.1
    done
    [ "$(health_calls)" = "$CALLS" ] || echo "warning: verde has $(health_calls) calls, not $CALLS, when the SIP window starts" >&2
    sleep "$SETTLE"
    local m; m=$(measure "$spid" "$idle")
    local rc=0; wait "$spid" || rc=$?
    stop_verde
    local stat ok fail p50 p99
    stat=$(ls "$WORK"/uac_media_*_.csv 2>/dev/null | head -1 || true)
    last() { awk -F';' -v name="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==name) c=i; next} {v=$c} END{print v}' "$stat"; }
    ok=$(last 'SuccessfulCall(C)'); fail=$(last 'FailedCall(C)')
    local rtt; rtt=$(ls "$WORK"/uac_media_*_rtt.csv 2>/dev/null | head -1 || true)
    local v=""; [ -z "$rtt" ] || v=$(awk -F';' 'NR>1 && $3 == 1 {print $2}' "$rtt")
    p50=$(pct 0.5 <<<"$v"); p99=$(pct 0.99 <<<"$v")
    # SIPp keeps one CSV per run: move it aside so the next run's is found.
    mkdir -p "$WORK/sipp-$1"; mv "$WORK"/uac_media_* "$WORK/sipp-$1/" 2>/dev/null || true
    local e; e=$(ivr_check "$WORK/verde-sip-$1.log")
    echo "$1 sip $m ${ok:-0} ${fail:-$CALLS} $p50 $p99 $(awk '{print $3}' <<<"$e") $e $rc" >> "$WORK/results.txt"
}
pct() { grep . | sort -n | awk -v q="$1" '{v[NR]=$1} END{ if (NR==0) {print "NA"; exit} i=int(q*NR+0.999999); if (i<1) i=1; if (i>NR) i=NR; printf "%.0f", v[i] }'; }

echo "load: $CALLS concurrent WebRTC calls ($CODEC) then $CALLS SIP calls (PCMU) to $DID, each held ${HOLD} s," \
    "digit 1 after ${DTMF_AFTER} s; window ${WINDOW} s from ${SETTLE} s after the last call is up; $RUNS runs" \
    "($BIN, loopback, $(nproc) cores)"
: > "$WORK/results.txt"
for r in $(seq 1 "$RUNS"); do
    webrtc_phase "$r"
    sip_phase "$r"
    tail -2 "$WORK/results.txt" | awk -v n="$CALLS" '{
        printf "run %s %-6s verde %5.1f %% core = %.3f %%/call, RSS %5.1f -> %5.1f MB = %4.0f kB/call; generator %5.1f %%; %s/%s ok (%s failed); %s p50 %s p99 %s ms; prompts heard %s, digit seen by the IVR %s of %s ended; /health calls %s..%s; verde log %s ERROR, %s call WARN\n",
            $1, $2, $3, $3 / n, $5 / 1024, $6 / 1024, ($6 - $5) / n, $4, $9, n, $10, ($2 == "sip" ? "INVITE->200" : "connect"), $11, $12, $13, $15, $14, $7, $8, $17, $18 }'
done

echo "--- medians over $RUNS runs ($CALLS calls each) ---"
awk -v n="$CALLS" '
    function median(a, k,   i, j, t) {
        for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    { k = ++cnt[$2]; cpu[$2, k] = $3; gen[$2, k] = $4; mem[$2, k] = ($6 - $5) / n }
    END {
        split("webrtc sip", kinds, " ")
        for (x = 1; x <= 2; x++) {
            kind = kinds[x]; k = cnt[kind]; if (!k) continue
            for (i = 1; i <= k; i++) { a[i] = cpu[kind, i] }; c[kind] = median(a, k)
            for (i = 1; i <= k; i++) { a[i] = gen[kind, i] }; g[kind] = median(a, k)
            for (i = 1; i <= k; i++) { a[i] = mem[kind, i] }; m[kind] = median(a, k)
            printf "%-6s verde CPU %6.1f %% of a core = %.3f %% per call;  RSS %4.0f kB per call;  generator %5.1f %%\n", kind, c[kind], c[kind] / n, m[kind], g[kind]
        }
        if (c["sip"] > 0) printf "ratio  WebRTC/SIP CPU per call: %.2f", c["webrtc"] / c["sip"]
        if (m["sip"] > 0) printf ";  RSS per call: %.2f", m["webrtc"] / m["sip"]
        print ""
    }' "$WORK/results.txt"
echo "work files: $WORK"
# A run with failed calls is not a measurement of a working system: say so in the exit status.
awk -v n="$CALLS" '$9 != n || $10 != 0 || $19 != 0 { bad = 1 } END { exit bad }' "$WORK/results.txt"
