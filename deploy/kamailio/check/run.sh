#!/bin/bash
# End-to-end check of deploy/kamailio with two verde nodes, inside a private network namespace
# (nothing is bound on the host's interfaces). Needs: kamailio (Debian package), sipp, curl,
# python3, unshare; a debug build of verde (cargo build -p verde). Run from anywhere:
#     deploy/kamailio/check/run.sh
# It checks: callers hashed over both nodes; BYE through the record-route; a number that is
# not toll-free refused; agents' REGISTERs reaching their home node; an unknown source dropped;
# three wrong passwords banning the phone's address; a draining node's 503 and a dead node
# both failing over to the other node. Exit status 0 when every check passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin="$repo/target/debug/verde"
for tool in kamailio sipp curl python3 unshare; do
    command -v "$tool" > /dev/null || { echo "missing: $tool (apt-get install -y kamailio sip-tester curl)"; exit 2; }
done
[ -x "$bin" ] || { echo "missing: $bin (cargo build -p verde)"; exit 2; }

if [ "${1:-}" != "--inside" ]; then
    work=$(mktemp -d /tmp/verde-kamailio-check.XXXXXX)
    cp -r "$repo/deploy/kamailio/." "$work/"
    cp "$here"/*.xml "$work/"
    # The same kamailio.cfg, with its files in the scratch folder and logs on stderr.
    sed -e "s|^#!substdef \"!KAM_ETC!/etc/kamailio!g\"|#!substdef \"!KAM_ETC!$work!g\"|" \
        -e "s|unix:/run/kamailio/kamailio_ctl|unix:$work/kamailio_ctl|" \
        -e 's/^log_stderror=no/log_stderror=yes/' \
        "$repo/deploy/kamailio/kamailio.cfg" > "$work/kamailio.cfg"
    # Two nodes from deploy/verde.yaml: node a as shipped (agent 1001 given a known password),
    # node b on .12 with agent 2001.
    python3 - "$repo/deploy/verde.yaml" "$work" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
a = re.sub(r"ha1_md5: 20a36af608ed2015f11402d5e03e1d5f\n\s*ha1_sha256: \w+", "password: pw1001", src)
assert a != src, "agent 1001 not found in deploy/verde.yaml"
open(sys.argv[2] + "/node-a.yaml", "w").write(a)
b = src.replace("192.0.2.11", "192.0.2.12").replace("127.0.0.1:8080", "127.0.0.1:8081")
b = re.sub(r"agents:\n(.|\n)*?\nsupervisors:", 'agents:\n  - { id: "2001", password: pw2001, queues: [pensions] }\n\nsupervisors:', b)
open(sys.argv[2] + "/node-b.yaml", "w").write(b.replace("id: sup1", "id: sup2"))
PY
    echo "scratch folder: $work"
    exec unshare -rn "$0" --inside "$work" "$repo"
fi

set +e +o pipefail # from here each check reports by itself
work=$2
repo=$3
cd "$work"
fail=0
check() { # check NAME COMMAND...: runs the command, reports ok/FAILED
    local name=$1; shift
    if "$@"; then echo "ok      $name"; else echo "FAILED  $name"; fail=1; fi
}
quiet() { "$@" > /dev/null 2>&1; }
calls() { curl -s "127.0.0.1:$1/api/calls?limit=1000" | grep -o '"call_id"' | wc -l || true; }

ip link set lo up
for a in 192.0.2.10 192.0.2.11 192.0.2.12 198.51.100.2 10.20.0.5 192.0.2.99; do ip addr add "$a/32" dev lo; done
"$bin" --config node-a.yaml --data "$work/da" --flows "$repo/ivr-flows" --sounds "$repo/sounds" > node-a.log 2>&1 &
A=$!
"$bin" --config node-b.yaml --data "$work/db" --flows "$repo/ivr-flows" --sounds "$repo/sounds" > node-b.log 2>&1 &
B=$!
kamailio -DD -E -f "$work/kamailio.cfg" -P "$work/kamailio.pid" > kamailio.log 2>&1 &
K=$!
trap 'kill $A $B $K 2> /dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "verde ready" node-a.log && grep -q "verde ready" node-b.log && grep -q "Listening on" kamailio.log && break
    sleep 0.2
done
check "node a ready" grep -q "verde ready" node-a.log
check "node b ready" grep -q "verde ready" node-b.log
sleep 1
check "kamailio running" kill -0 $K

# 10 calls from the carrier to +39803164: each node takes some, all end with the caller's BYE.
sipp -sf uac.xml -s +39803164 192.0.2.10:5060 -i 198.51.100.2 -p 5070 -m 10 -r 10 -d 2000 -l 10 -timeout 20 > s1.out 2>&1 || true
sleep 0.5
na=$(calls 8080); nb=$(calls 8081)
echo "        calls finished: node a $na, node b $nb"
check "10 calls finished" test $((na + nb)) -eq 10
check "both nodes took calls" test "$na" -gt 0 -a "$nb" -gt 0
check "trunk seen by verde is kamailio" grep -q '"trunk":"kamailio"' <(curl -s '127.0.0.1:8080/api/calls?limit=1')
check "not toll-free: 404" bash -c "sipp -sn uac -s 0612345678 192.0.2.10:5060 -i 198.51.100.2 -p 5071 -m 1 -timeout 3 > s2.out 2>&1; grep -q 'not a toll-free number' kamailio.log"

check "agent 1001 registers" quiet sipp -sf reg.xml -s 1001 192.0.2.10:5060 -i 10.20.0.5 -p 5072 -au 1001 -ap pw1001 -m 1 -timeout 5
check "1001 registered on node a" grep -q '"id":"1001"[^}]*"registered":true' <(curl -s 127.0.0.1:8080/api/agents)
check "agent 2001 registers" quiet sipp -sf reg.xml -s 2001 192.0.2.10:5060 -i 10.20.0.5 -p 5073 -au 2001 -ap pw2001 -m 1 -timeout 5
check "2001 registered on node b" grep -q '"id":"2001"[^}]*"registered":true' <(curl -s 127.0.0.1:8081/api/agents)

check "unknown source gets no answer" bash -c "! sipp -sn uac -s 803164 192.0.2.10:5060 -i 192.0.2.99 -p 5074 -m 1 -timeout 3 > s5.out 2>&1; grep -q 'unknown source 192.0.2.99' kamailio.log"

for p in 5075 5076 5077; do
    sipp -sf reg.xml -s 1001 192.0.2.10:5060 -i 10.20.0.5 -p $p -au 1001 -ap wrong -m 1 -timeout 3 > /dev/null 2>&1 || true
done
check "3 wrong passwords ban the address" grep -q 'digest failures from 10.20.0.5' kamailio.log
check "banned address gets no answer" bash -c "! sipp -sf reg.xml -s 1001 192.0.2.10:5060 -i 10.20.0.5 -p 5078 -au 1001 -ap pw1001 -m 1 -timeout 3 > /dev/null 2>&1"

# Node a drains (SIGTERM while a call it took directly is up): its 503s go to node b.
sipp -sf uac.xml -s 803164 192.0.2.11:5060 -i 198.51.100.2 -p 5080 -m 1 -d 20000 -bg > /dev/null 2>&1
sleep 1
kill -TERM $A
sleep 0.5
check "node a draining: /health 503" test "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:8080/health)" = 503
before=$(calls 8081)
check "6 calls while a drains all answered" quiet sipp -sf uac.xml -s 803164 192.0.2.10:5060 -i 198.51.100.2 -p 5079 -m 6 -r 6 -d 300 -l 6 -timeout 20
check "node b took all 6" test $(($(calls 8081) - before)) -eq 6

kill -9 $A
sleep 0.5
before=$(calls 8081)
check "6 calls with node a dead all answered" quiet sipp -sf uac.xml -s 803164 192.0.2.10:5060 -i 198.51.100.2 -p 5081 -m 6 -r 6 -d 300 -l 6 -timeout 30
check "node b took all 6" test $(($(calls 8081) - before)) -eq 6

echo "logs: $work/{kamailio,node-a,node-b}.log"
exit $fail
