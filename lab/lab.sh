#!/usr/bin/env bash
# lab.sh - composable network-namespace lab for pairs tests (run as root).
#
# Every node is a network namespace named PREFIX-NAME. Switches are Linux
# bridges living inside their own namespace; nodes are attached with veth pairs
# created directly inside the namespaces. Nothing is created on, attached to or
# changed on the host's own interfaces, so several labs (different prefixes)
# can run side by side and nothing leaves the machine.
#
# Usage: lab.sh [-p PREFIX] COMMAND ...
#   switch NAME                                   L2 segment: bridge br0 in PREFIX-NAME
#   host NAME SWITCH ADDR/LEN [GW]                end host, eth0 on SWITCH
#   router NAME LANSW LANADDR/LEN WANSW WANADDR/LEN [NATMODE [WANGW]]
#                                                 forwarding router, lan0 on LANSW, wan0 on WANSW
#   nat ROUTER MODE                               change a router's NAT mode
#   exec NAME CMD...                              run CMD in NAME's namespace (exec: PID is CMD's)
#   avahi NAME start|stop                         private avahi-daemon (+ dbus-daemon) in NAME
#   avahi-exec NAME CMD...                        run an avahi client against NAME's daemon
#   dns NAME [OPTION...]                          dnsmasq in NAME answering only its own records,
#                                                 given as dnsmasq options (host-record=..., txt-record=...)
#   resolver NAME IP                              NAME's resolver (resolv.conf) is IP; seen by
#                                                 programs started with exec
#   addr NAME ADDR/LEN                            one more address on host NAME's eth0
#   turn NAME start|stop                          coturn on host NAME: STUN + TURN on port 3478 of
#                                                 each of its addresses (two addresses: RFC 5780
#                                                 NAT behaviour discovery works); user test/test123,
#                                                 realm pairs.test
#   delay NAME MS|off                             delay every packet of host NAME's eth0 by MS, both
#                                                 ways (NFQUEUE + delay.py: no netem needed)
#   upnp ROUTER start STUNIP | upnp ROUTER stop   miniupnpd (UPnP IGD, NAT-PMP, PCP) on ROUTER's LAN;
#                                                 STUNIP: a coturn with two addresses (miniupnpd
#                                                 checks its WAN with STUN before mapping)
#   lan N [SUBNET]                                switch "lan" + hosts h1..hN at SUBNET.(10+i)/24
#   down                                          kill the lab's processes, delete its namespaces
#   status                                        show nodes, addresses, NAT modes, daemons
# NATMODE: none | portrestricted (default) | symmetric | fullcone | restricted
# Env: LAB_PREFIX (default pl; -p wins), LAB_RUN (state base dir, default /tmp/pairs-lab)
set -Eeuo pipefail
ERR_SEEN=""
trap '[ -n "$ERR_SEEN" ] || { ERR_SEEN=1; printf "lab.sh: error: command failed: %s (in %s)\n" "$BASH_COMMAND" "${FUNCNAME[*]:0:2}" >&2; }' ERR

LAB_NAT_MODES="none portrestricted symmetric fullcone restricted"
P="${LAB_PREFIX:-pl}"
RUN_BASE="${LAB_RUN:-/tmp/pairs-lab}"
RUN=""   # set in main once the prefix is known
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CREATING=""   # node being built; removed again if the command fails half-way

# ------------------------------------------------------------------ helpers
log()  { printf '[lab %s] %s\n' "$P" "$*" >&2; }
die()  { printf 'lab.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -Eeuo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }
need_cmds() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "missing command: $c"; done
}

# names end up in interface names (v-NAME <= 15 chars) and namespace names
check_name() {
  [[ $1 =~ ^[A-Za-z0-9_]{1,13}$ ]] || die "bad name '$1' (letters, digits, _; at most 13 chars)"
}
check_cidr() {
  [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || die "bad address '$1' (want A.B.C.D/LEN)"
}
check_ip() {
  [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "bad gateway '$1' (want A.B.C.D)"
}

ns()  { printf '%s-%s' "$P" "$1"; }
nsx() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
ipn() { local n=$1; shift; ip -n "$(ns "$n")" "$@"; }
ns_exists() { [ -e "/run/netns/$(ns "$1")" ]; }
need_node() { ns_exists "$1" || die "no node '$1' in lab '$P'"; }
# all namespaces of this prefix (prefixes cannot contain '-', so this is exact)
lab_namespaces() { ip netns list 2>/dev/null | awk -v p="$P-" 'index($1, p) == 1 { print $1 }'; }

# per-node metadata: $RUN/nodes/NAME holds KEY=VALUE lines
meta_set() { # NAME KEY VALUE
  local f="$RUN/nodes/$1"
  mkdir -p "$RUN/nodes"
  { [ -f "$f" ] && grep -v "^$2=" "$f" || true; echo "$2=$3"; } > "$f.tmp"
  mv "$f.tmp" "$f"
}
meta_get() { # NAME KEY
  local f="$RUN/nodes/$1"
  [ -f "$f" ] && sed -n "s/^$2=//p" "$f" | tail -1
  return 0
}
need_kind() { # NAME KIND
  need_node "$1"
  [ "$(meta_get "$1" kind)" = "$2" ] || die "'$1' is not a $2"
}

# ------------------------------------------------------------------ building blocks
ns_create() { # NAME KIND
  local n=$1 kind=$2
  check_name "$n"
  ns_exists "$n" && die "node '$n' already exists in lab '$P'"
  mkdir -p "$RUN/nodes"
  # concurrent first-time `ip netns add` calls (parallel labs) can race on the
  # /run/netns mount set-up: serialise just that step across all labs
  mkdir -p "$RUN_BASE"
  flock "$RUN_BASE/.netns.lock" ip netns add "$(ns "$n")"
  CREATING=$n
  meta_set "$n" kind "$kind"
  ipn "$n" link set lo up
  # IPv6 link-local must be usable at once: no duplicate address detection wait
  sysctl_ns "$n" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

sysctl_ns() { # NAME KEY=VAL...
  local n=$1; shift
  nsx "$n" sysctl -qw "$@" >/dev/null
}

# veth between a switch and a node: switch side v-NODE enslaved to br0,
# node side IFNAME. Both ends are created inside their namespaces.
link_to_switch() { # SWITCH NODE IFNAME
  local sw=$1 n=$2 ifn=$3
  need_kind "$sw" switch
  ipn "$sw" link add "v-$n" type veth peer name "$ifn" netns "$(ns "$n")"
  ipn "$sw" link set "v-$n" master br0
  ipn "$sw" link set "v-$n" up
  ipn "$n" link set "$ifn" up
}

cmd_switch() { # NAME
  [ $# = 1 ] || die "usage: switch NAME"
  local n=$1
  ns_create "$n" switch
  # the switch itself has no IP presence at all
  sysctl_ns "$n" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ipn "$n" link add br0 type bridge stp_state 0 mcast_snooping 0
  # br_netfilter: without these, bridged frames would traverse netfilter hooks
  local k
  for k in iptables ip6tables arptables; do
    nsx "$n" sysctl -qw "net.bridge.bridge-nf-call-$k=0" >/dev/null 2>&1 || true
  done
  ipn "$n" link set br0 up
  log "switch $n"
}

cmd_host() { # NAME SWITCH ADDR/LEN [GW]
  [ $# = 3 ] || [ $# = 4 ] || die "usage: host NAME SWITCH ADDR/LEN [GW]"
  local n=$1 sw=$2 addr=$3 gw=${4:-}
  check_cidr "$addr"; [ -z "$gw" ] || check_ip "$gw"
  need_kind "$sw" switch
  ns_create "$n" host
  meta_set "$n" switch "$sw"; meta_set "$n" addr "$addr"
  link_to_switch "$sw" "$n" eth0
  ipn "$n" link set lo multicast on
  ipn "$n" link set eth0 multicast on
  ipn "$n" addr add "$addr" dev eth0
  ipn "$n" route add 224.0.0.0/4 dev eth0
  [ -z "$gw" ] || { ipn "$n" route add default via "$gw"; meta_set "$n" gw "$gw"; }
  log "host $n on $sw: $addr${gw:+ gw $gw}"
}

cmd_router() { # NAME LANSW LANADDR/LEN WANSW WANADDR/LEN [NATMODE [WANGW]]
  [ $# -ge 5 ] && [ $# -le 7 ] ||
    die "usage: router NAME LANSWITCH LANADDR/LEN WANSWITCH WANADDR/LEN [NATMODE [WANGW]]"
  local n=$1 lsw=$2 laddr=$3 wsw=$4 waddr=$5 mode=${6:-portrestricted} wgw=${7:-}
  check_cidr "$laddr"; check_cidr "$waddr"; [ -z "$wgw" ] || check_ip "$wgw"
  nat_mode_valid "$mode"
  need_kind "$lsw" switch; need_kind "$wsw" switch
  [ "$lsw" != "$wsw" ] || die "router: LAN and WAN switch must differ"
  ns_create "$n" router
  meta_set "$n" lan "$lsw"; meta_set "$n" lanaddr "$laddr"
  meta_set "$n" wan "$wsw"; meta_set "$n" wanaddr "$waddr"
  link_to_switch "$lsw" "$n" lan0
  link_to_switch "$wsw" "$n" wan0
  ipn "$n" addr add "$laddr" dev lan0
  ipn "$n" addr add "$waddr" dev wan0
  [ -z "$wgw" ] || { ipn "$n" route add default via "$wgw"; meta_set "$n" gw "$wgw"; }
  # IPv4 forwarding only; IPv6 forwarding stays off. Multicast is never routed
  # (no mroute daemon) and the filter table drops it explicitly as well.
  sysctl_ns "$n" net.ipv4.ip_forward=1
  router_apply "$n" "$mode"
  log "router $n: lan0 $laddr on $lsw, wan0 $waddr on $wsw, nat $mode"
}

# ------------------------------------------------------------------ router rulesets
# Two nftables tables per router namespace:
#   inet labfw  - mode independent: drop unsolicited WAN input to the router,
#                 never forward multicast/broadcast.
#   ip labnat   - one function per NAT mode below (nat_MODE WANIP), replaced
#                 atomically by `nat ROUTER MODE`.
router_fw_ruleset() {
  cat <<'EOF'
table inet labfw {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan0" ct state established,related accept
    # Answers from a STUN server's other address and port (RFC 5780 CHANGE-REQUEST): miniupnpd's
    # check that its WAN is unfiltered before it maps a reserved address.
    iifname "wan0" udp sport { 3478, 3479 } accept
    iifname "wan0" icmp type echo-request accept
    iifname "wan0" meta l4proto ipv6-icmp accept
    # Home-router behaviour. It also matters for NAT: an accepted unsolicited
    # packet would leave a conntrack entry that breaks port preservation of a
    # later outbound flow to that peer (hole punching then fails).
    iifname "wan0" drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    meta pkttype { broadcast, multicast } drop
    ip daddr 224.0.0.0/4 drop
    ip6 daddr ff00::/8 drop
  }
}
EOF
}

# Common part of the filtering NATs: only replies and DNATed (mapped) flows
# may enter from the WAN side.
nat_forward_filter() {
  cat <<'EOF'
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan0" ct state established,related accept
    iifname "wan0" ct status dnat accept
    iifname "wan0" drop
  }
EOF
}

# none: plain router, no translation, no filtering of forwarded traffic.
nat_none() {
  echo 'table ip labnat {'
  echo '}'
}

# port-restricted cone: SNAT to the WAN address keeping the source port
# (endpoint-independent mapping); conntrack gives address+port dependent filtering.
nat_portrestricted() {
  cat <<EOF
table ip labnat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" snat ip to $1
  }
$(nat_forward_filter)
}
EOF
}

# symmetric: a fresh random external port for every new 5-tuple.
nat_symmetric() {
  cat <<EOF
table ip labnat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" snat ip to $1 random
  }
$(nat_forward_filter)
}
EOF
}

# full cone: port-preserving SNAT; after SNAT (priority srcnat+10) the mapping
# proto.external-port -> internal addr.port is learned into a dynamic map, and
# unsolicited inbound packets from ANY remote are DNATed through it.
nat_fullcone() {
  cat <<EOF
table ip labnat {
  map cone {
    type inet_proto . inet_service : ipv4_addr . inet_service
    flags dynamic,timeout; timeout 300s
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan0" meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @cone
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" snat ip to $1
  }
  chain learn {
    type filter hook postrouting priority srcnat + 10; policy accept;
    oifname "wan0" ct direction original meta l4proto { tcp, udp } update @cone { meta l4proto . th sport : ct original ip saddr . ct original proto-src }
  }
$(nat_forward_filter)
}
EOF
}

# (address-)restricted cone: like full cone, but the map key also holds the
# remote address the LAN host has sent to; only that address may come in.
nat_restricted() {
  cat <<EOF
table ip labnat {
  map cone {
    type inet_proto . inet_service . ipv4_addr : ipv4_addr . inet_service
    flags dynamic,timeout; timeout 300s
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan0" meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport . ip saddr map @cone
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" snat ip to $1
  }
  chain learn {
    type filter hook postrouting priority srcnat + 10; policy accept;
    oifname "wan0" ct direction original meta l4proto { tcp, udp } update @cone { meta l4proto . th sport . ip daddr : ct original ip saddr . ct original proto-src }
  }
$(nat_forward_filter)
}
EOF
}

nat_mode_valid() {
  case " $LAB_NAT_MODES " in
    *" $1 "*) ;;
    *) die "unknown NAT mode '$1' (one of: $LAB_NAT_MODES)" ;;
  esac
}

# Flush the router's conntrack table (old flows would keep their old mapping).
# Plain nfnetlink request (IPCTNL_MSG_CT_DELETE without attributes), so the
# conntrack tool is not needed.
ct_flush() { # NODE
  nsx "$1" python3 - <<'EOF'
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)   # NETLINK_NETFILTER
body = struct.pack("=BBH", socket.AF_INET, 0, 0)            # nfgenmsg
hdr = struct.pack("=IHHII", 16 + len(body), (1 << 8) | 2, 0x1 | 0x4, 1, 0)
s.sendto(hdr + body, (0, 0))
r = s.recv(4096)
err = struct.unpack("=i", r[16:20])[0]
if err not in (0, -2):   # -ENOENT: table already empty
    raise SystemExit("conntrack flush failed: errno %d" % -err)
EOF
}

router_apply() { # ROUTER MODE
  local r=$1 mode=$2 wan
  nat_mode_valid "$mode"
  wan=$(meta_get "$r" wanaddr); wan=${wan%/*}
  [ -n "$wan" ] || die "router '$r' has no WAN address recorded"
  {
    nsx "$r" nft list table inet labfw >/dev/null 2>&1 || router_fw_ruleset
    nsx "$r" nft list table ip labnat >/dev/null 2>&1 && echo "delete table ip labnat"
    "nat_$mode" "$wan"
  } | nsx "$r" nft -f -
  ct_flush "$r"
  meta_set "$r" nat "$mode"
}

cmd_nat() { # ROUTER MODE
  [ $# = 2 ] || die "usage: nat ROUTER MODE"
  need_kind "$1" router
  router_apply "$1" "$2"
  log "nat $1 -> $2"
}

# ------------------------------------------------------------------ avahi
# /run is shared by all network namespaces, so each avahi-daemon gets its own
# mount namespace with a private tmpfs on /run (pid file, socket, a private
# system dbus-daemon) and an empty /etc/avahi/services. Clients join it with
# nsenter -m -n (avahi-exec).
avahi_dir() { printf '%s/avahi-%s' "$RUN" "$1"; }
avahi_pid() { # NAME -> pid of a live avahi-daemon, or fail
  local f pid
  f="$(avahi_dir "$1")/pid"
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = avahi-daemon ] && alive "$pid" || return 1
  echo "$pid"
}

avahi_conf() { # NAME IFACE
  cat <<EOF
[server]
host-name=$1
domain-name=local
use-ipv4=yes
use-ipv6=${LAB_AVAHI_IPV6:-no}
allow-interfaces=$2
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
enable-reflector=no
[rlimits]
EOF
}

avahi_start() { # NAME
  local n=$1 d ifn pid
  need_cmds avahi-daemon dbus-daemon unshare
  need_node "$n"
  if pid=$(avahi_pid "$n"); then log "avahi already running in $n (pid $pid)"; return 0; fi
  case $(meta_get "$n" kind) in
    host) ifn=eth0 ;; router) ifn=lan0 ;; *) die "avahi: '$n' is not a host or router" ;;
  esac
  d=$(avahi_dir "$n")
  rm -rf "$d"; mkdir -p "$d"
  avahi_conf "$n" "$ifn" > "$d/avahi-daemon.conf"
  # ip netns exec -> unshare -> bash -> avahi-daemon all exec: $! is the daemon
  ip netns exec "$(ns "$n")" unshare -m --propagation private bash -c '
    set -e
    mount -t tmpfs -o mode=0755 lab-run /run
    mkdir -p /run/dbus /run/avahi-daemon
    chown avahi:avahi /run/avahi-daemon
    mount -t tmpfs -o mode=0755 lab-services /etc/avahi/services
    dbus-daemon --system --fork --print-pid > "$1/dbus.pid"
    exec avahi-daemon --no-chroot --no-rlimits -f "$1/avahi-daemon.conf"
  ' lab-avahi "$d" > "$d/log" 2>&1 < /dev/null &
  echo $! > "$d/pid"
  local i
  for i in $(seq 100); do
    grep -q 'Server startup complete' "$d/log" 2>/dev/null && break
    alive "$(cat "$d/pid")" || break
    sleep 0.05
  done
  grep -q 'Server startup complete' "$d/log" 2>/dev/null || {
    avahi_stop "$n" || true
    die "avahi-daemon in $n did not start: $(tail -1 "$d/log" 2>/dev/null)"
  }
  log "avahi in $n (pid $(cat "$d/pid"), host-name $n, iface $ifn)"
}

avahi_stop() { # NAME
  local n=$1 d pid mnt p pids=""
  d=$(avahi_dir "$n")
  [ -d "$d" ] || return 0
  if pid=$(avahi_pid "$n"); then
    # everything sharing the daemon's private mount namespace inside this node:
    # the daemon, its dbus-daemon and any avahi-exec clients
    mnt=$(readlink "/proc/$pid/ns/mnt")
    for p in $(ip netns pids "$(ns "$n")" 2>/dev/null); do
      [ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" = "$mnt" ] && pids="$pids $p"
    done
  fi
  # a dbus-daemon left behind by a daemon that died early
  p=$(cat "$d/dbus.pid" 2>/dev/null || true)
  if [[ $p =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = dbus-daemon ] &&
     ip netns pids "$(ns "$n")" 2>/dev/null | grep -qx "$p"; then
    pids="$pids $p"
  fi
  # shellcheck disable=SC2086
  kill_pids $pids
  rm -rf "$d"
}

cmd_avahi() { # NAME start|stop
  [ $# = 2 ] || die "usage: avahi NAME start|stop"
  case $2 in
    start) avahi_start "$1" ;;
    stop)  need_node "$1"; avahi_stop "$1" ;;
    *) die "usage: avahi NAME start|stop" ;;
  esac
}

cmd_avahi_exec() { # NAME CMD...
  [ $# -ge 2 ] || die "usage: avahi-exec NAME CMD..."
  local n=$1 pid; shift
  need_node "$n"
  pid=$(avahi_pid "$n") || die "no avahi running in '$n' (lab.sh avahi $n start)"
  exec nsenter -t "$pid" -m -n -- "$@"
}

# ------------------------------------------------------------------ DNS
cmd_dns() { # NAME [DNSMASQ-OPTION...]
  [ $# -ge 1 ] || die "usage: dns NAME [OPTION...]"
  local n=$1 dir opt; shift
  need_node "$n"
  need_cmds dnsmasq
  dir="$RUN/dns-$n"
  mkdir -p "$dir"
  # An authoritative island: no upstream servers, no /etc/hosts, only the records given.
  {
    echo "no-resolv"
    echo "no-hosts"
    echo "no-poll"
    echo "bind-dynamic"
    echo "except-interface=lo"
    echo "pid-file=$dir/dnsmasq.pid"
    for opt in "$@"; do echo "$opt"; done
  } > "$dir/dnsmasq.conf"
  nsx "$n" dnsmasq --conf-file="$dir/dnsmasq.conf" --user=root --group=root \
    || die "dns: dnsmasq did not start in '$n'"
  log "dnsmasq in $n"
}

cmd_resolver() { # NAME IP
  [ $# = 2 ] || die "usage: resolver NAME IP"
  need_node "$1"; check_ip "$2"
  # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc: the node's own resolv.conf.
  mkdir -p "/etc/netns/$(ns "$1")"
  printf 'nameserver %s\noptions timeout:1 attempts:2\n' "$2" > "/etc/netns/$(ns "$1")/resolv.conf"
}

# ------------------------------------------------------------------ TURN, UPnP
cmd_addr() { # NAME ADDR/LEN
  [ $# = 2 ] || die "usage: addr NAME ADDR/LEN"
  need_kind "$1" host; check_cidr "$2"
  ipn "$1" addr add "$2" dev eth0
}

daemon_pid() { # FILE -> pid of a live process recorded in FILE, or fail
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  alive "$pid" || return 1
  echo "$pid"
}

turn_start() { # NAME
  local n=$1 dir ips ip i
  need_cmds turnserver ss
  need_kind "$n" host
  dir="$RUN/turn-$n"
  if daemon_pid "$dir/pid" >/dev/null; then log "coturn already running in $n"; return 0; fi
  ips=$(ipn "$n" -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }')
  [ -n "$ips" ] || die "turn: '$n' has no IPv4 address"
  mkdir -p "$dir"
  {
    echo "listening-port=3478"
    for ip in $ips; do echo "listening-ip=$ip"; done
    echo "relay-ip=$(echo "$ips" | head -1)"
    echo "min-port=49152"
    echo "max-port=49999"
    echo "realm=pairs.test"
    echo "fingerprint"
    echo "lt-cred-mech"
    echo "user=test:test123"
    echo "no-tls"
    echo "no-dtls"
    echo "no-cli"
    echo "allow-loopback-peers"
    # The lab lives in documentation and private ranges, which coturn refuses as peers by default.
    echo "allowed-peer-ip=0.0.0.0-255.255.255.255"
    echo "userdb=$dir/turndb.sqlite"
    echo "pidfile=$dir/turnserver.pidfile"
    echo "log-file=$dir/turnserver.log"
    echo "simple-log"
    echo "no-stdout-log"
  } > "$dir/turnserver.conf"
  ip netns exec "$(ns "$n")" turnserver -c "$dir/turnserver.conf" > "$dir/out" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  for i in $(seq 100); do
    nsx "$n" ss -lun 2>/dev/null | grep -q ':3478 ' && break
    alive "$(cat "$dir/pid")" || break
    sleep 0.05
  done
  daemon_pid "$dir/pid" >/dev/null && nsx "$n" ss -lun | grep -q ':3478 ' ||
    die "coturn in $n did not start: $(tail -3 "$dir/out" "$dir/turnserver.log" 2>/dev/null)"
  log "coturn in $n on $(echo $ips) port 3478 (user test/test123, realm pairs.test)"
}

turn_stop() { # NAME
  local pid
  if pid=$(daemon_pid "$RUN/turn-$1/pid"); then kill_pids "$pid"; fi
  rm -rf "$RUN/turn-$1"
}

cmd_turn() { # NAME start|stop
  [ $# = 2 ] || die "usage: turn NAME start|stop"
  case $2 in
    start) turn_start "$1" ;;
    stop) need_node "$1"; turn_stop "$1" ;;
    *) die "usage: turn NAME start|stop" ;;
  esac
}

upnp_start() { # ROUTER STUNIP
  local r=$1 stun=$2 dir lan i
  need_cmds miniupnpd
  need_kind "$r" router; check_ip "$stun"
  dir="$RUN/upnp-$r"
  if daemon_pid "$dir/pid" >/dev/null; then log "miniupnpd already running in $r"; return 0; fi
  lan=$(meta_get "$r" lanaddr); lan=${lan%/*}
  mkdir -p "$dir"
  # miniupnpd's own chains, hooked in ahead of the lab's NAT.
  nsx "$r" nft delete table inet miniupnpd 2>/dev/null || true
  nsx "$r" nft -f - <<'EOF'
table inet miniupnpd {
  chain forward { type filter hook forward priority filter - 5; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority dstnat - 5; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority srcnat - 5; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
EOF
  cat > "$dir/miniupnpd.conf" <<EOF
ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
notify_interval=30
clean_ruleset_interval=600
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07$(printf '%x' "$(( ${#r} % 16 ))")
friendly_name=pairs lab $r
# miniupnpd refuses reserved WAN addresses (203.0.113.0/24 is one) unless STUN shows the WAN is
# unfiltered, which needs a server with RFC 5780 CHANGE-REQUEST: coturn with two addresses.
ext_perform_stun=yes
ext_stun_host=$stun
ext_stun_port=3478
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
lease_file=$dir/leases
allow 1024-65535 ${lan%.*}.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
  ip netns exec "$(ns "$r")" miniupnpd -d -f "$dir/miniupnpd.conf" -P "$dir/miniupnpd.pidfile" \
    > "$dir/log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  # The STUN self-check takes up to 3 rounds of 3 s when answers are missing.
  for i in $(seq 240); do
    grep -qE 'Listening for NAT-PMP|EXITING' "$dir/log" && break
    alive "$(cat "$dir/pid")" || break
    sleep 0.05
  done
  daemon_pid "$dir/pid" >/dev/null && grep -q 'Listening for NAT-PMP' "$dir/log" ||
    die "miniupnpd in $r did not start: $(tail -3 "$dir/log")"
  grep -q 'Port forwarding is now enabled' "$dir/log" ||
    log "WARNING: miniupnpd in $r says port forwarding is disabled (see $dir/log)"
  log "miniupnpd in $r (UPnP IGD, NAT-PMP, PCP on lan0)"
}

upnp_stop() { # ROUTER
  local pid
  if pid=$(daemon_pid "$RUN/upnp-$1/pid"); then kill_pids "$pid"; fi
  nsx "$1" nft delete table inet miniupnpd 2>/dev/null || true
  rm -rf "$RUN/upnp-$1"
}

cmd_upnp() { # ROUTER start STUNIP | ROUTER stop
  case ${2:-} in
    start) [ $# = 3 ] || die "usage: upnp ROUTER start STUNIP"; upnp_start "$1" "$3" ;;
    stop) [ $# = 2 ] || die "usage: upnp ROUTER stop"; need_node "$1"; upnp_stop "$1" ;;
    *) die "usage: upnp ROUTER start STUNIP | upnp ROUTER stop" ;;
  esac
}

# ------------------------------------------------------------------ link delay
# The kernel may lack sch_netem: packets of the host's eth0 go through NFQUEUE (iptables mangle, the
# host has no conntrack) to delay.py, which lets each go after the delay. Both directions.
delay_start() { # NAME MS
  local n=$1 ms=$2 dir i
  need_cmds iptables
  need_kind "$n" host
  [[ $ms =~ ^[0-9]+$ ]] || die "delay: MS must be a number of milliseconds"
  delay_stop "$n"
  dir="$RUN/delay-$n"
  mkdir -p "$dir"
  ip netns exec "$(ns "$n")" python3 "$HERE/delay.py" "$ms" 100 101 > "$dir/log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  for i in $(seq 100); do
    grep -q ready "$dir/log" 2>/dev/null && break
    alive "$(cat "$dir/pid")" || break
    sleep 0.05
  done
  grep -q ready "$dir/log" 2>/dev/null || die "delay in $n did not start: $(tail -2 "$dir/log")"
  nsx "$n" iptables -t mangle -A OUTPUT -o eth0 -j NFQUEUE --queue-num 100 --queue-bypass
  nsx "$n" iptables -t mangle -A PREROUTING -i eth0 -j NFQUEUE --queue-num 101 --queue-bypass
  log "delay $n: ${ms} ms each way on eth0"
}

delay_stop() { # NAME
  local pid
  nsx "$1" iptables -t mangle -F OUTPUT 2>/dev/null || true
  nsx "$1" iptables -t mangle -F PREROUTING 2>/dev/null || true
  if pid=$(daemon_pid "$RUN/delay-$1/pid"); then kill_pids "$pid"; fi
  rm -rf "$RUN/delay-$1"
}

cmd_delay() { # NAME MS|off
  [ $# = 2 ] || die "usage: delay NAME MS|off"
  case $2 in
    off) need_node "$1"; delay_stop "$1" ;;
    *) delay_start "$1" "$2" ;;
  esac
}

# ------------------------------------------------------------------ misc commands
cmd_exec() { # NAME CMD...
  [ $# -ge 2 ] || die "usage: exec NAME CMD..."
  local n=$1; shift
  need_node "$n"
  exec ip netns exec "$(ns "$n")" "$@"
}

cmd_lan() { # N [SUBNET]
  [ $# = 1 ] || [ $# = 2 ] || die "usage: lan N [SUBNET]"
  local cnt=$1 sub=${2:-10.0.1} i
  [[ $cnt =~ ^[0-9]+$ ]] && [ "$cnt" -ge 1 ] && [ "$cnt" -le 200 ] || die "lan: N must be 1..200"
  sub=${sub%/24}; sub=${sub%.0}
  [[ $sub =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "lan: SUBNET must look like 10.0.1 or 10.0.1.0/24"
  cmd_switch lan
  for i in $(seq "$cnt"); do cmd_host "h$i" lan "$sub.$((10 + i))/24"; done
}

# a zombie counts as gone: orphans are reaped by PID 1, which can take a while
alive() {
  local st
  st=$(sed -n 's/.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

kill_pids() { # PID... : TERM, wait up to $KILL_GRACE x 50 ms (default 2 s), then KILL
  [ $# -gt 0 ] || return 0
  local p i left
  kill "$@" 2>/dev/null || true
  for i in $(seq "${KILL_GRACE:-40}"); do
    left=""
    for p in "$@"; do alive "$p" && left="$left $p"; done
    [ -z "$left" ] && return 0
    sleep 0.05
  done
  # shellcheck disable=SC2086
  kill -9 $left 2>/dev/null || true
  for i in $(seq 20); do
    left=""
    for p in "$@"; do alive "$p" && left="$left $p"; done
    [ -z "$left" ] && return 0
    sleep 0.05
  done
}

cmd_down() {
  [ $# = 0 ] || die "usage: down"
  local nsn pids="" p
  # only processes living in this prefix's namespaces (started via this lab)
  for nsn in $(lab_namespaces); do
    for p in $(ip netns pids "$nsn" 2>/dev/null); do pids="$pids $p"; done
  done
  # short grace: the lab's network is about to vanish anyway (avahi-daemon
  # alone would spend ~1 s on goodbye packets); stop things first if needed
  # shellcheck disable=SC2086
  KILL_GRACE=10 kill_pids $pids
  for nsn in $(lab_namespaces); do
    ip netns del "$nsn" 2>/dev/null || true
    rm -rf "/etc/netns/$nsn"
  done
  rm -rf "$RUN"
  local left; left=$(lab_namespaces)
  [ -z "$left" ] || die "down: namespaces still present: $left"
}

cmd_status() {
  local nsn n kind extra pid
  local all; all=$(lab_namespaces | sort)
  [ -n "$all" ] || { echo "lab $P: no namespaces"; return 0; }
  for nsn in $all; do
    n=${nsn#"$P"-}
    kind=$(meta_get "$n" kind); extra=""
    case $kind in
      router) extra=" nat=$(meta_get "$n" nat)" ;;
    esac
    if pid=$(avahi_pid "$n"); then extra="$extra avahi=$pid"; fi
    echo "== $nsn (${kind:-?}$extra)"
    ip -n "$nsn" -br addr | awk '$1 != "lo" { print "   " $0 }'
  done
}

# a node whose creation failed is deleted again (its veth peers in the switch
# namespaces go with it), so a failed command leaves no half-built node
rollback() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "$CREATING" ]; then
    ip netns del "$(ns "$CREATING")" 2>/dev/null || true
    rm -f "$RUN/nodes/$CREATING"
  fi
  return "$rc"
}

main() {
  while [ $# -gt 0 ]; do
    case $1 in
      -p) [ $# -ge 2 ] || die "-p needs a PREFIX"; P=$2; shift 2 ;;
      -h|--help) usage ;;
      --) shift; break ;;
      -*) die "unknown option '$1'" ;;
      *) break ;;
    esac
  done
  [[ $P =~ ^[A-Za-z0-9]{1,12}$ ]] || die "bad prefix '$P' (letters and digits, at most 12)"
  RUN="$RUN_BASE/$P"
  local c=${1:-}
  [ -n "$c" ] || usage
  shift
  case $c in
    -h|--help|help) usage ;;
  esac
  need_root
  need_cmds ip nft sysctl flock awk python3
  trap rollback EXIT
  case $c in
    switch) cmd_switch "$@" ;;
    host) cmd_host "$@" ;;
    router) cmd_router "$@" ;;
    nat) cmd_nat "$@" ;;
    exec) cmd_exec "$@" ;;
    avahi) cmd_avahi "$@" ;;
    avahi-exec) cmd_avahi_exec "$@" ;;
    dns) cmd_dns "$@" ;;
    resolver) cmd_resolver "$@" ;;
    addr) cmd_addr "$@" ;;
    turn) cmd_turn "$@" ;;
    upnp) cmd_upnp "$@" ;;
    delay) cmd_delay "$@" ;;
    lan) cmd_lan "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    *) die "unknown command '$c' (see lab.sh --help)" ;;
  esac
}

main "$@"
