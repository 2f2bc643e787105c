#!/usr/bin/env bash
# selftest.sh - build a small lab and check it behaves (run as root).
#
#   a1 --+                                        +-- b1
#   a2 --+-[lan1]-- r1 --+----[wan]----+-- r2 --[lan2]
#   a3 --+                |             |
#   192.168.1.0/24        s1 .10        192.168.2.0/24
#                   203.0.113.0/24 (r1 .1, r2 .2)
#
# Usage: selftest.sh [PREFIX]   (default st, at most 11 chars; a second lab PREFIX + "x" is used too)
# Env: SELFTEST_KEEP=1 leaves the lab up at the end.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
P=${1:-st}
P2=${P}x
LABSH="$HERE/lab.sh"
PROBE="$HERE/probe.py"
TMP=""
FAILS=0
START=$(date +%s.%N)

lab()  { "$LABSH" -p "$P" "$@"; }
labq() { "$LABSH" -p "$P" "$@" 2>/dev/null; }
# python without any wrapper script (shims cost ~0.1 s per call)
PY=$(python3 -c 'import sys; print(sys.executable)')
probe() { local n=$1; shift; labq exec "$n" "$PY" "$PROBE" "$@"; }
# bgprobe OUT NODE ARGS... : probe in the background, BG = the probe's own PID
# (a plain command put in the background, and lab.sh exec execs: no wrapper left)
bgprobe() { local o=$1 n=$2; shift 2; "$LABSH" -p "$P" exec "$n" "$PY" "$PROBE" "$@" > "$o" 2>/dev/null & BG=$!; }

elapsed() { awk -v a="$(date +%s.%N)" -v b="$START" 'BEGIN { printf "%.1f", a - b }'; }
pass() { printf 'PASS  %s  [%ss]\n' "$1" "$(elapsed)"; }
fail() { printf 'FAIL  %s%s  [%ss]\n' "$1" "${2:+ ($2)}" "$(elapsed)"; FAILS=$((FAILS + 1)); }
check() { # DESC CMD... : PASS when CMD succeeds
  local d=$1; shift
  if "$@" >/dev/null 2>&1; then pass "$d"; else fail "$d"; fi
}
check_not() { # DESC CMD... : PASS when CMD fails
  local d=$1; shift
  if "$@" >/dev/null 2>&1; then fail "$d"; else pass "$d"; fi
}
ping1() { labq exec "$1" ping -n -c1 -W1 "$2"; }
noping() { labq exec "$1" ping -n -c1 -W0.4 "$2"; }   # for pings that must fail
wait_line() { # FILE PATTERN [TRIES x 50ms]
  local i
  for i in $(seq "${3:-60}"); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
# a zombie counts as gone (PID 1 may reap orphans late)
gone() {
  local st
  st=$(sed -n 's/.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)
  [ -z "$st" ] || [ "$st" = Z ]
}
ns_count() { ip netns list | awk -v p="$1-" 'index($1, p) == 1' | wc -l; }

cleanup() {
  jobs -p | xargs -r kill 2>/dev/null
  if [ "${SELFTEST_KEEP:-0}" != 1 ]; then
    "$LABSH" -p "$P2" down 2>/dev/null
    "$LABSH" -p "$P" down 2>/dev/null
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
}

[[ $P =~ ^[A-Za-z0-9]{1,11}$ ]] || { echo "selftest.sh: error: PREFIX: letters and digits, at most 11" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "selftest.sh: error: must run as root" >&2; exit 1; }
for c in ping timeout avahi-publish avahi-browse; do
  command -v "$c" >/dev/null || { echo "selftest.sh: error: missing command: $c" >&2; exit 1; }
done
trap cleanup EXIT
TMP=$(mktemp -d)
lab down 2>/dev/null; "$LABSH" -p "$P2" down 2>/dev/null

# ------------------------------------------------------------------ build
build() {
  lab switch lan1 && lab switch wan && lab switch lan2 &&
  lab host a1 lan1 192.168.1.10/24 192.168.1.1 &&
  lab host a2 lan1 192.168.1.11/24 192.168.1.1 &&
  lab host a3 lan1 192.168.1.12/24 192.168.1.1 &&
  lab router r1 lan1 192.168.1.1/24 wan 203.0.113.1/24 &&
  lab router r2 lan2 192.168.2.1/24 wan 203.0.113.2/24 &&
  lab host b1 lan2 192.168.2.10/24 192.168.2.1 &&
  lab host s1 wan 203.0.113.10/24
} 2>"$TMP/build.log"
if build; then pass "build lab '$P'"; else fail "build lab '$P'" "$(tail -1 "$TMP/build.log")"; exit 1; fi

# ------------------------------------------------------------------ avahi
# Runs in the background while the other sections run (avahi needs ~1 s to start,
# ~1 s to probe the service name and ~1 s per browse); its report is printed later.
avahi_section() {
  # a1 publishes right after its daemon is up (the subshell execs into avahi-publish)
  (
    "$LABSH" -p "$P" avahi a1 start > "$TMP/avahi-a1.start" 2>&1 || exit 1
    exec "$LABSH" -p "$P" avahi-exec a1 avahi-publish -s test _pairs._udp 4242 id=x
  ) > "$TMP/publish" 2>&1 &
  local pub=$! av2 found=0 want p left=""
  "$LABSH" -p "$P" avahi a2 start > "$TMP/avahi-a2.start" 2>&1 &
  av2=$!
  if wait_line "$TMP/publish" Established 150; then pass "avahi start a1 + avahi-publish test _pairs._udp 4242"
  else fail "avahi start a1 + publish" "$(tail -1 "$TMP/avahi-a1.start") $(tail -1 "$TMP/publish")"; fi
  wait "$av2" && pass "avahi start a2" || fail "avahi start a2" "$(tail -1 "$TMP/avahi-a2.start")"
  want='^=;eth0;IPv4;test;_pairs\._udp;local;a1\.local;192\.168\.1\.10;4242;"id=x"$'
  for _ in 1 2 3 4; do
    labq avahi-exec a2 timeout 5 avahi-browse -rpt _pairs._udp > "$TMP/browse" 2>&1
    grep -q "$want" "$TMP/browse" && { found=1; break; }
    sleep 0.2
  done
  [ $found = 1 ] && pass "avahi: a2 browses a1's _pairs._udp test:4242 id=x" ||
    fail "avahi: a2 browses a1's service" "$(tr '\n' ' ' < "$TMP/browse")"
  kill "$pub" 2>/dev/null; wait "$pub" 2>/dev/null
  labq avahi a2 stop
  for p in $(ip netns pids "$P-a2"); do gone "$p" || left="$left $p"; done
  if [ -z "$left" ]; then pass "avahi stop a2 leaves no process in $P-a2"
  else fail "avahi stop a2 leaves no process in $P-a2" "$(ps -o pid=,stat=,args= -p "${left# }" | tr '\n' ' ')"; fi
}
avahi_section > "$TMP/avahi.out" 2>&1 &
AVSEC=$!

# ------------------------------------------------------------------ unicast
check "a1 -> a2 ping" ping1 a1 192.168.1.11
check "a2 -> a1 ping" ping1 a2 192.168.1.10
ll_a2=$(ip -n "$P-a2" -6 -o addr show dev eth0 scope link | awk '{ print $4 }' | cut -d/ -f1)
check "a1 -> a2 IPv6 link-local ping ($ll_a2)" ping1 a1 "$ll_a2%eth0"

# ------------------------------------------------------------------ multicast
# link-local group (mDNS-like) and a TTL-8 admin-scoped group: both must stay on lan1
MC=""
for n in a2 a3 b1; do
  bgprobe "$TMP/mc-$n" "$n" mrecv 224.0.0.251,239.255.77.77 5399 5
  MC="$MC $BG"
done
for n in a2 a3 b1; do wait_line "$TMP/mc-$n" ready || fail "multicast receiver $n ready"; done
probe a1 msend 224.0.0.251 5399 3 1
probe a1 msend 239.255.77.77 5399 3 8
sleep 0.2
# shellcheck disable=SC2086
kill $MC 2>/dev/null; wait $MC 2>/dev/null
for n in a2 a3; do
  check "multicast 224.0.0.251 a1 -> $n" grep -q "got 224.0.0.251 192.168.1.10" "$TMP/mc-$n"
  check "multicast 239.255.77.77 a1 -> $n" grep -q "got 239.255.77.77 192.168.1.10" "$TMP/mc-$n"
done
check_not "multicast a1 -> b1 (other LAN) not received" grep -q got "$TMP/mc-b1"

# ------------------------------------------------------------------ NAT / routing
check "b1 -> r1 WAN 203.0.113.1 ping" ping1 b1 203.0.113.1
check "a1 -> r2 WAN 203.0.113.2 ping" ping1 a1 203.0.113.2
# give r2 a route into lan1, so the packets really reach r1 and its NAT must drop them
labq exec r2 ip route add 192.168.1.0/24 via 203.0.113.1
check_not "b1 -> a1 192.168.1.10 direct ping blocked by r1" noping b1 192.168.1.10
# a UDP service on r1 itself: answers on the LAN side, unsolicited WAN input is dropped
bgprobe "$TMP/echo-r1" r1 echo 7100 5
ECHOR=$BG
wait_line "$TMP/echo-r1" ready || fail "echo server on r1"
probe a1 natprobe 0 192.168.1.1:7100 0 > "$TMP/r1-lan"
check "a1 -> r1 LAN-side UDP service answers" grep -q '^mapped 192.168.1.10:' "$TMP/r1-lan"
probe s1 natprobe 0 203.0.113.1:7100 0 > "$TMP/r1-wan"
check "s1 -> r1 WAN-side UDP (unsolicited input) dropped" grep -q '^mapped none' "$TMP/r1-wan"
kill "$ECHOR" 2>/dev/null; wait "$ECHOR" 2>/dev/null

# NAT behaviour per mode, seen from s1 (echo servers on 7000 and 7002):
#   mapping  = what s1 sees for a1:LPORT, for two different server ports
#   inbound  = does a1:LPORT get datagrams from s1:7001 (same IP) / from r2 (other IP)
labq exec s1 ip route add 192.168.1.0/24 via 203.0.113.1   # only used in mode "none"
bgprobe "$TMP/echo7000" s1 echo 7000 30
ECHO1=$BG
bgprobe "$TMP/echo7002" s1 echo 7002 30
ECHO2=$BG
wait_line "$TMP/echo7000" ready && wait_line "$TMP/echo7002" ready || fail "echo servers on s1"
nat_case() { # MODE LPORT EXPECT_MAP(preserve|random|none) EXPECT_SAMEIP(y|n) EXPECT_OTHERIP(y|n)
  local mode=$1 lp=$2 emap=$3 esame=$4 eother=$5 out="$TMP/nat-$1" m1 m2 tgt ok=1 why=""
  lab nat r1 "$mode" 2>/dev/null || { fail "nat $mode: apply"; return; }
  bgprobe "$out" a1 natprobe "$lp" 203.0.113.10:7000 5
  local pid=$BG
  wait_line "$out" mapped 40
  m1=$(awk '$1 == "mapped" { print $2; exit }' "$out")
  tgt=$m1
  probe s1 send 7001 "$tgt"
  probe b1 send 0 "$tgt"
  sleep 0.2
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  # a second flow from the same LAN port to another server port
  probe a1 natprobe "$lp" 203.0.113.10:7002 0 > "$out.2"
  m2=$(awk '$1 == "mapped" { print $2; exit }' "$out.2")
  case $emap in
    preserve) [ "$m1" = "203.0.113.1:$lp" ] && [ "$m2" = "$m1" ] || { ok=0; why="mapping $m1 / $m2"; } ;;
    random)   [ "${m1%:*}" = 203.0.113.1 ] && [ "${m2%:*}" = 203.0.113.1 ] && [ "$m1" != "$m2" ] ||
                { ok=0; why="mapping $m1 / $m2"; } ;;
    none)     [ "$m1" = "192.168.1.10:$lp" ] || { ok=0; why="mapping $m1"; } ;;
  esac
  local gs=n go=n
  grep -q '^from 203.0.113.10:7001$' "$out" && gs=y
  grep -q '^from 203.0.113.2:' "$out" && go=y
  [ "$gs" = "$esame" ] || { ok=0; why="$why inbound-same-ip=$gs"; }
  [ "$go" = "$eother" ] || { ok=0; why="$why inbound-other-ip=$go"; }
  if [ $ok = 1 ]; then pass "nat $mode (mapping $emap, inbound same-ip=$esame other-ip=$eother)"
  else fail "nat $mode" "${why# }"; fi
}
nat_case portrestricted 40001 preserve n n
nat_case restricted     40002 preserve y n
nat_case fullcone       40003 preserve y y
nat_case symmetric      40004 random   n n
nat_case none           40005 none     y y
lab nat r1 portrestricted 2>/dev/null
kill "$ECHO1" "$ECHO2" 2>/dev/null; wait "$ECHO1" "$ECHO2" 2>/dev/null

# ------------------------------------------------------------------ delay
ping_ms() { # FROM IP -> round trip in whole ms
  lab exec "$1" ping -n -c1 -W3 "$2" 2>/dev/null | sed -n 's/.*time=\([0-9]*\).*/\1/p'
}
if lab delay a2 100 2>"$TMP/delay.log"; then
  rtt=$(ping_ms a1 192.168.1.11)
  if [ -n "$rtt" ] && [ "$rtt" -ge 195 ] && [ "$rtt" -lt 400 ]; then pass "delay a2 100: a1 -> a2 round trip ${rtt} ms"
  else fail "delay a2 100: a1 -> a2 round trip" "${rtt:-none} ms"; fi
  lab delay a2 off 2>/dev/null
  rtt=$(ping_ms a1 192.168.1.11)
  if [ -n "$rtt" ] && [ "$rtt" -lt 50 ]; then pass "delay a2 off: round trip ${rtt} ms"
  else fail "delay a2 off: round trip" "${rtt:-none} ms"; fi
else
  fail "delay a2 100" "$(tail -1 "$TMP/delay.log")"
fi

# ------------------------------------------------------------------ avahi report
wait "$AVSEC"
cat "$TMP/avahi.out"
FAILS=$((FAILS + $(grep -c '^FAIL' "$TMP/avahi.out")))

# ------------------------------------------------------------------ second lab
if "$LABSH" -p "$P2" lan 2 192.168.1 2>"$TMP/lan2.log"; then pass "second lab '$P2' (lan 2) up alongside"
else fail "second lab '$P2' up" "$(tail -1 "$TMP/lan2.log")"; fi
check "lab $P2: h1 -> h2 ping" "$LABSH" -p "$P2" exec h1 ping -n -c1 -W1 192.168.1.12
check "lab $P still works: a1 -> a2 ping" ping1 a1 192.168.1.11
n_before=$(ns_count "$P")
"$LABSH" -p "$P2" down 2>/dev/null
check "lab $P2 down leaves no $P2- namespace" test "$(ns_count "$P2")" = 0
check "lab $P2 down leaves lab $P intact ($n_before namespaces)" test "$(ns_count "$P")" = "$n_before"

# ------------------------------------------------------------------ down
avahi_a1=$(cat "${LAB_RUN:-/tmp/pairs-lab}/$P/avahi-a1/pid" 2>/dev/null)
lab down 2>/dev/null
check "down leaves no $P- namespace" test "$(ns_count "$P")" = 0
check "down removes the run dir" test ! -e "${LAB_RUN:-/tmp/pairs-lab}/$P"
pid_gone() { [ -n "$1" ] && gone "$1"; }
check "down killed a1's avahi-daemon ($avahi_a1)" pid_gone "$avahi_a1"
lab down 2>/dev/null && pass "down is idempotent" || fail "down is idempotent"

printf '%s: %d failure(s), %s s\n' "$([ $FAILS = 0 ] && echo PASS || echo FAIL)" "$FAILS" "$(elapsed)"
[ $FAILS = 0 ]
