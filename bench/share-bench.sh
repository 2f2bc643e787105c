#!/usr/bin/env bash
# Shared folders: `pairs share` / `pairs sync` / `pairs get` of a share against rsync (rsyncd) and
# syncthing, between two lab hosts: two network namespaces joined by one veth pair (10.78.0.1 and
# 10.78.0.2, no route out), each side's upload shaped with tbf (1 Gbit/s unless RATE_MBIT says
# otherwise; this kernel has no netem). Needs root. Everything runs in tmpfs (WORK).
#
#   bench/share-bench.sh [--quick] [small] [big] [first] [--no-syncthing] [--no-rsync]
#
#   small  10,000 files of 100 B-20 KiB in 100 directories: BLAKE3 (b3sum) over them, `pairs share`
#          until in step (publish), initial sync (pairs, rsync, syncthing), then an edit on A until
#          its content is on B, 20 times (pairs; syncthing with fsWatcherDelayS=1)
#   big    one 1 GiB file: b3sum, publish, initial sync (pairs, rsync, syncthing)
#   first  100,000 tiny files shared by A; `pairs get TICKET ONE/PATH -o OUT` on B from nothing
#          (its wall time includes catching up with the share's log), 3 runs; rsync of the same path
#   (default: all three; --quick: 1,000 small files, 64 MiB, 10,000 tiny files, 5 edits)
#
# Environment: PAIRS_BIN (a pairs binary to use instead of building one), WORK (/dev/shm/pairs-share-bench),
# RATE_MBIT (1000), SMALL_FILES, BIG_MIB, TINY_FILES, EDITS, GETS (3), TIMEOUT (seconds per wait, 900),
# KEEP=1 (leave WORK and its logs behind), B3SUM_ROOT (../bench-tools).
#
# Installs rsync and syncthing (apt) and b3sum (cargo install, into B3SUM_ROOT) when missing. No service
# is started on the host: rsyncd and syncthing run only inside the lab's namespaces, syncthing with
# global and local discovery, relays, NAT traversal, usage and crash reports off and static addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

QUICK=0
SYNCTHING=1
RSYNC=1
PARTS=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --no-syncthing) SYNCTHING=0 ;;
        --no-rsync) RSYNC=0 ;;
        -h|--help) usage 0 ;;
        small|big|first) PARTS+=("$arg") ;;
        *) echo "share-bench: unknown argument $arg" >&2; usage 2 ;;
    esac
done
[ ${#PARTS[@]} -gt 0 ] || PARTS=(small big first)

if [ "$QUICK" = 1 ]; then
    : "${SMALL_FILES:=1000}" "${BIG_MIB:=64}" "${TINY_FILES:=10000}" "${EDITS:=5}"
else
    : "${SMALL_FILES:=10000}" "${BIG_MIB:=1024}" "${TINY_FILES:=100000}" "${EDITS:=20}"
fi
: "${RATE_MBIT:=1000}" "${GETS:=3}" "${TIMEOUT:=900}"
WORK=${WORK:-/dev/shm/pairs-share-bench}
NS_A=psb-a NS_B=psb-b
IP_A=10.78.0.1 IP_B=10.78.0.2
ST_KEY=share-bench-key
PY=/usr/bin/python3

log() { printf 'share-bench: %s\n' "$*" >&2; }
die() { printf 'share-bench: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tc)"
[ -x "$PY" ] || die "needs $PY"
for tool in ip tc jq diff setsid; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

# --- tools --------------------------------------------------------------------------------------
missing=()
[ "$RSYNC" = 0 ] || command -v rsync >/dev/null || missing+=(rsync)
[ "$SYNCTHING" = 0 ] || command -v syncthing >/dev/null || missing+=(syncthing)
if [ ${#missing[@]} -gt 0 ]; then
    # Debian starts services on install unless policy-rc.d forbids it: nothing may run on the host.
    if ! { [ -x /usr/sbin/policy-rc.d ] && /usr/sbin/policy-rc.d >/dev/null 2>&1; [ $? -eq 101 ]; }; then
        die "install ${missing[*]} first, or put a /usr/sbin/policy-rc.d that exits 101 (no service may start on the host)"
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
B3SUM_ROOT=${B3SUM_ROOT:-$ROOT/../bench-tools}
B3SUM=$(command -v b3sum || true)
if [ -z "$B3SUM" ]; then
    B3SUM=$B3SUM_ROOT/bin/b3sum
    if [ ! -x "$B3SUM" ]; then
        log "installing b3sum (one-off)"
        CARGO_TARGET_DIR=${B3SUM_TARGET:-$ROOT/../target-b3sum} \
            cargo install --quiet --locked b3sum --root "$B3SUM_ROOT" || die "cargo install b3sum failed"
    fi
fi
if [ -z "${PAIRS_BIN:-}" ]; then
    log "building pairs (release)"
    cargo build --release --quiet -p pairs || die "cargo build --release -p pairs failed"
    PAIRS_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/pairs
fi
[ -x "$PAIRS_BIN" ] || die "no pairs binary at $PAIRS_BIN"
PAIRS_BIN=$(realpath "$PAIRS_BIN")

# --- lab and cleanup ----------------------------------------------------------------------------
PIDS=()
CHILD=
cleanup() {
    local rc=$?
    set +e
    [ -z "$CHILD" ] || kill -TERM "$CHILD" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    sleep 0.3
    for ns in $NS_A $NS_B; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    sleep 0.2
    for ns in $NS_A $NS_B; do ip netns del "$ns" 2>/dev/null; done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in $NS_A $NS_B; do   # left over from an interrupted run of this script
    if ip netns list | grep -qw "^$ns"; then
        for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns"
    fi
done
rm -rf "$WORK"
mkdir -p "$WORK/logs"
ip netns add $NS_A
ip netns add $NS_B
ip -n $NS_A link set lo up
ip -n $NS_B link set lo up
ip -n $NS_A link add eth0 type veth peer name eth0 netns $NS_B
ip -n $NS_A addr add $IP_A/24 dev eth0
ip -n $NS_B addr add $IP_B/24 dev eth0
ip -n $NS_A link set eth0 up
ip -n $NS_B link set eth0 up
# tbf: a burst of 4 ms at the rate (at least 32 KiB, so GSO packets pass whole), 50 ms of queue.
burst=$(( RATE_MBIT * 1000000 / 8 / 250 ))
[ $burst -ge 32768 ] || burst=32768
for ns in $NS_A $NS_B; do
    tc -n $ns qdisc add dev eth0 root tbf rate "${RATE_MBIT}mbit" burst $burst latency 50ms
done
ip netns exec $NS_B ping -c1 -W2 $IP_A >/dev/null || die "the lab's veth does not pass packets"

# --- helpers (Python, written into WORK) --------------------------------------------------------
cat >"$WORK/helper.py" <<'EOF'
import json, math, os, random, statistics, subprocess, sys, time, urllib.request
import xml.etree.ElementTree as ET

def make_small(root, n):
    """n files of 100 B-20 KiB in n/100 directories (random bytes)."""
    n = int(n)
    rng = random.Random(1)
    dirs = max(1, n // 100)
    total = 0
    for i in range(n):
        d = os.path.join(root, f"dir{i % dirs:03d}")
        os.makedirs(d, exist_ok=True)
        size = rng.randint(100, 20 * 1024)
        with open(os.path.join(d, f"file{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(size))
        total += size
    print(total)

def make_tiny(root, n):
    """n files of 10-100 bytes, 100 to a directory."""
    n = int(n)
    rng = random.Random(2)
    total = 0
    for i in range(n):
        d = os.path.join(root, f"d{i // 100:04d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        data = os.urandom(rng.randint(5, 50)).hex().encode()
        with open(os.path.join(d, f"f{i % 100:02d}.txt"), "wb") as f:
            f.write(data)
        total += len(data)
    print(total)

def pairs_wait(pairs, home, folder, files, timeout):
    """Until the running node in HOME says FOLDER is in step with FILES files and nothing pending."""
    env = dict(os.environ, PAIRS_HOME=home, PAIRS_ISOLATED="1")
    folder = os.path.realpath(folder)
    files = int(files)
    deadline = time.monotonic() + float(timeout)
    last = None
    while True:
        out = subprocess.run([pairs, "share", "ls", "--json"], env=env, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            s = json.loads(line)["status"]
            if os.path.realpath(s["dir"]) == folder:
                last = s
                if s["in_step"] and s["pending"] == 0 and s["files"] == files and not s.get("error"):
                    return 0
        if time.monotonic() > deadline:
            last = {k: v for k, v in (last or {}).items() if k not in ("rejected", "kept_local")}
            print(f"pairs never got in step with {files} files in {timeout} s; last status: {last}", file=sys.stderr)
            return 1
        time.sleep(0.05)

def same_tree(a, b, timeout):
    """Until B holds A's files (names and contents; syncthing's marker and pairs' parts aside)."""
    deadline = time.monotonic() + float(timeout)
    while True:
        r = subprocess.run(["diff", "-rq", "--exclude=.stfolder", "--exclude=.stignore", a, b],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return 0
        if time.monotonic() > deadline:
            lines = (r.stdout + r.stderr).splitlines()
            print(f"{b} never matched {a}: {len(lines)} differences, e.g. {lines[:3]}", file=sys.stderr)
            return 1
        time.sleep(0.1)

def edit_latency(adir, bdir, n, timeout=30.0, gap=1.0):
    """Writes a new content to A/edit-latency.txt, polls B's copy every 2 ms; one warm-up, then N samples."""
    pa, pb = os.path.join(adir, "edit-latency.txt"), os.path.join(bdir, "edit-latency.txt")
    samples = []
    for i in range(-1, int(n)):
        content = f"edit {i} {os.urandom(8).hex()}\n".encode()
        t0 = time.monotonic()
        with open(pa, "wb") as f:
            f.write(content)
        while True:
            try:
                with open(pb, "rb") as f:
                    if f.read() == content:
                        break
            except FileNotFoundError:
                pass
            if time.monotonic() - t0 > timeout:
                print(f"edit {i} never arrived in {timeout} s", file=sys.stderr)
                return 1
            time.sleep(0.002)
        if i >= 0:
            samples.append(time.monotonic() - t0)
        time.sleep(gap)
    s = sorted(samples)
    p90 = s[max(0, math.ceil(0.9 * len(s)) - 1)]
    print(json.dumps({"median": statistics.median(s), "p90": p90, "min": s[0], "max": s[-1],
                      "samples": [round(x, 4) for x in samples]}))
    return 0

# syncthing, through its REST API on 127.0.0.1:8384 of the namespace this runs in.
NOPROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def st(key, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:8384" + path, data=data, method=method,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with NOPROXY.open(req, timeout=30) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else None

def st_config(home, ip):
    """Options before the first start: nothing leaves the lab, nothing is announced, plain TCP."""
    path = os.path.join(home, "config.xml")
    tree = ET.parse(path)
    opts = tree.getroot().find("options")
    for k, v in {"globalAnnounceEnabled": "false", "localAnnounceEnabled": "false",
                 "relaysEnabled": "false", "natEnabled": "false", "urAccepted": "-1",
                 "crashReportingEnabled": "false", "startBrowser": "false",
                 "autoUpgradeIntervalH": "0", "setLowPriority": "false",
                 "listenAddress": f"tcp://{ip}:22000"}.items():
        for el in opts.findall(k):
            el.text = v
    tree.write(path)

def st_up(key, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if st(key, "GET", "/rest/system/ping").get("ping") == "pong":
                return 0
        except Exception as e:
            if time.monotonic() > deadline:
                print(f"syncthing's API never answered: {e}", file=sys.stderr)
                return 1
        time.sleep(0.1)

def st_device(key, dev, ip):
    st(key, "POST", "/rest/config/devices",
       {"deviceID": dev, "name": ip, "addresses": [f"tcp://{ip}:22000"]})

def st_folder(key, path, dev_a, dev_b, delay):
    st(key, "POST", "/rest/config/folders",
       {"id": "bench", "label": "bench", "path": path, "type": "sendreceive",
        "fsWatcherEnabled": True, "fsWatcherDelayS": int(delay), "rescanIntervalS": 3600,
        "devices": [{"deviceID": dev_a}, {"deviceID": dev_b}]})

def st_pending(key, timeout):
    """Until the other device offers the folder (they are connected and it may be accepted)."""
    deadline = time.monotonic() + float(timeout)
    while True:
        if st(key, "GET", "/rest/cluster/pending/folders"):
            return 0
        if time.monotonic() > deadline:
            print("syncthing never offered the folder to B (not connected?)", file=sys.stderr)
            return 1
        time.sleep(0.05)

def st_wait(key, files, timeout):
    """Until the folder is idle with FILES files locally and nothing needed."""
    files = int(files)
    deadline = time.monotonic() + float(timeout)
    last = None
    while True:
        try:
            last = st(key, "GET", "/rest/db/status?folder=bench")
            if (last["state"] == "idle" and last["needTotalItems"] == 0
                    and last["localFiles"] == files and last["globalFiles"] == files):
                return 0
        except Exception as e:
            last = str(e)
        if time.monotonic() > deadline:
            if isinstance(last, dict):
                last = {k: last.get(k) for k in ("state", "localFiles", "globalFiles", "needTotalItems", "error")}
            print(f"syncthing's folder never held {files} files in {timeout} s; last: {last}", file=sys.stderr)
            return 1
        time.sleep(0.1)

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {"make-small": make_small, "make-tiny": make_tiny, "pairs-wait": pairs_wait,
          "same-tree": same_tree, "edit-latency": edit_latency, "st-config": st_config,
          "st-up": st_up, "st-device": st_device, "st-folder": st_folder,
          "st-pending": st_pending, "st-wait": st_wait}[cmd]
    sys.exit(fn(*args) or 0)
EOF
# Helpers run in the background and are waited for, so that an interrupt reaches the traps at once.
helper() { "$PY" "$WORK/helper.py" "$@" & CHILD=$!; wait $CHILD; }
helper_in() { local ns=$1; shift; ip netns exec "$ns" "$PY" "$WORK/helper.py" "$@" & CHILD=$!; wait $CHILD; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

RESULTS=$WORK/results.txt
: >"$RESULTS"
result() { printf '%s\n' "$*" | tee -a "$RESULTS" >&2; }

ns_of() { [ "$1" = a ] && echo $NS_A || echo $NS_B; }
ip_of() { [ "$1" = a ] && echo $IP_A || echo $IP_B; }

# pairs SIDE HOME ARGS...: the pairs CLI on host SIDE (a or b) with data directory HOME.
pairs_on() {
    local side=$1 home=$2
    shift 2
    ip netns exec "$(ns_of "$side")" env PAIRS_HOME="$home" PAIRS_ISOLATED=1 "$PAIRS_BIN" "$@"
}

# start_node SIDE HOME NAME: `pairs node` on SIDE, until its control socket answers.
start_node() {
    local side=$1 home=$2 name=$3
    mkdir -p "$home"
    setsid ip netns exec "$(ns_of "$side")" env PAIRS_HOME="$home" PAIRS_ISOLATED=1 \
        "$PAIRS_BIN" node --bind "$(ip_of "$side"):0" \
        </dev/null >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" &
    PIDS+=($!)
    local pid=$! i
    for i in $(seq 300); do
        grep -q "control socket" "$WORK/logs/$name.err" 2>/dev/null && return 0
        kill -0 $pid 2>/dev/null || die "pairs node ($name) exited: $(tail -3 "$WORK/logs/$name.err")"
        sleep 0.1
    done
    die "pairs node ($name) did not open its control socket in 30 s: $(tail -3 "$WORK/logs/$name.err")"
}

# stop_all: ends every process this script started (their process groups), then anything left in the lab.
stop_all() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    PIDS=()
    for ns in $NS_A $NS_B; do
        for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
    done
}

# b3sum_rate NAME BYTES PATH...: BLAKE3 over the files, all threads and one thread.
B3_ALL= B3_ONE=
b3sum_rate() {
    local bytes=$1 t
    shift
    t=$(now); find "$@" -type f -print0 | xargs -0 "$B3SUM" >/dev/null; B3_ALL=$(since "$t")
    t=$(now); find "$@" -type f -print0 | xargs -0 "$B3SUM" --num-threads 1 >/dev/null; B3_ONE=$(since "$t")
}

# pairs_publish_and_sync NAME SRC FILES BYTES [edit]: A's node shares a copy of SRC (timed until in step),
# B's node syncs it (timed until in step, then checked with diff -r); optionally the edit latency.
PUB= SYNC= TICKET=
pairs_publish_and_sync() {
    local name=$1 src=$2 files=$3 bytes=$4 edit=${5:-} t
    local ha=$WORK/$name-pairs-home-a hb=$WORK/$name-pairs-home-b
    local a=$WORK/$name-pairs-a b=$WORK/$name-pairs-b
    cp -a "$src" "$a"
    start_node a "$ha" "$name-node-a"
    start_node b "$hb" "$name-node-b"
    t=$(now)
    TICKET=$(pairs_on a "$ha" share "$a" --json 2>>"$WORK/logs/$name-share.err" | jq -r .ticket) ||
        die "pairs share $a failed: $(tail -3 "$WORK/logs/$name-share.err")"
    helper pairs-wait "$PAIRS_BIN" "$ha" "$a" "$files" "$TIMEOUT" || die "pairs share ($name) never got in step"
    PUB=$(since "$t")
    result "  pairs share (publish, A): $PUB s, $(calc %.0f "$bytes / 1e6 / $PUB") MB/s"
    t=$(now)
    pairs_on b "$hb" sync "$TICKET" "$b" >/dev/null 2>>"$WORK/logs/$name-sync.err" ||
        die "pairs sync failed: $(tail -3 "$WORK/logs/$name-sync.err")"
    helper pairs-wait "$PAIRS_BIN" "$hb" "$b" "$files" "$TIMEOUT" || die "pairs sync ($name) never got in step"
    SYNC=$(since "$t")
    helper same-tree "$a" "$b" 0 || {
        log "B's node says in step but its folder differs from A's: waiting for the files themselves"
        helper same-tree "$a" "$b" "$TIMEOUT" || die "pairs sync ($name): B's folder never matched"
        SYNC=$(since "$t")
    }
    result "  pairs sync (B, until in step and equal): $SYNC s"
    if [ -n "$edit" ]; then
        local out
        helper edit-latency "$a" "$b" "$EDITS" >"$WORK/logs/$name-pairs-edits.json" || die "pairs: an edit never arrived"
        out=$(cat "$WORK/logs/$name-pairs-edits.json")
        result "  pairs edit on A -> content on B ($EDITS edits): median $(jq -r '.median*1000|round' <<<"$out") ms, p90 $(jq -r '.p90*1000|round' <<<"$out") ms, max $(jq -r '.max*1000|round' <<<"$out") ms"
    fi
    stop_all
    rm -rf "$a" "$b" "$ha" "$hb"
}

RSYNC_T=
rsync_run() {
    local name=$1 src=$2 t
    local b=$WORK/$name-rsync-b
    cat >"$WORK/rsyncd.conf" <<EOF2
use chroot = no
pid file = $WORK/rsyncd.pid
[mod]
    path = $src
    read only = yes
    uid = root
    gid = root
EOF2
    rm -f "$WORK/rsyncd.pid"
    setsid ip netns exec $NS_A rsync --daemon --no-detach --config="$WORK/rsyncd.conf" --address=$IP_A \
        --port=873 --log-file="$WORK/logs/rsyncd.log" </dev/null >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        ip netns exec $NS_B rsync rsync://$IP_A/ >/dev/null 2>&1 && break
        sleep 0.1
    done
    ip netns exec $NS_B rsync rsync://$IP_A/ >/dev/null 2>&1 || die "rsyncd did not start: $(tail -3 "$WORK/logs/rsyncd.log")"
    t=$(now)
    ip netns exec $NS_B rsync -a "rsync://$IP_A/mod/" "$b/" || die "rsync failed"
    RSYNC_T=$(since "$t")
    helper same-tree "$src" "$b" 0 || die "rsync: B's copy differs"
    result "  rsync -a (rsyncd on A, B pulls): $RSYNC_T s"
    stop_all
    rm -rf "$b"
}

# syncthing_run NAME SRC FILES [edit]: two instances, devices by address, the folder added on A (timed
# scan), then accepted on B (timed until B's folder is complete); optionally the edit latency.
ST_T= ST_SCAN=
syncthing_run() {
    local name=$1 src=$2 files=$3 edit=${4:-} side home dev t
    local a=$WORK/$name-st-a b=$WORK/$name-st-b
    declare -A id
    cp -a "$src" "$a"
    mkdir -p "$b"
    for side in a b; do
        home=$WORK/st-home-$side
        rm -rf "$home"
        ip netns exec "$(ns_of $side)" syncthing generate --home="$home" --no-default-folder \
            --skip-port-probing >"$WORK/logs/st-generate-$side.log" 2>&1 || die "syncthing generate failed"
        id[$side]=$(grep -o 'Device ID: [A-Z0-9-]*' "$WORK/logs/st-generate-$side.log" | head -1 | cut -d' ' -f3)
        [ -n "${id[$side]}" ] || die "no syncthing device id in $WORK/logs/st-generate-$side.log"
        helper st-config "$home" "$(ip_of $side)"
        setsid ip netns exec "$(ns_of $side)" env HOME="$home" STNOUPGRADE=1 STNORESTART=1 \
            syncthing serve --home="$home" --no-browser --no-restart --no-upgrade \
            --gui-address=127.0.0.1:8384 --gui-apikey=$ST_KEY \
            </dev/null >"$WORK/logs/$name-st-$side.log" 2>&1 &
        PIDS+=($!)
    done
    helper_in $NS_A st-up $ST_KEY || die "syncthing on A: $(tail -3 "$WORK/logs/$name-st-a.log")"
    helper_in $NS_B st-up $ST_KEY || die "syncthing on B: $(tail -3 "$WORK/logs/$name-st-b.log")"
    helper_in $NS_A st-device $ST_KEY "${id[b]}" $IP_B
    helper_in $NS_B st-device $ST_KEY "${id[a]}" $IP_A
    t=$(now)
    helper_in $NS_A st-folder $ST_KEY "$a" "${id[a]}" "${id[b]}" 1
    helper_in $NS_A st-wait $ST_KEY "$files" "$TIMEOUT" || die "syncthing on A never finished its scan"
    ST_SCAN=$(since "$t")
    result "  syncthing scan (A, folder added until idle): $ST_SCAN s"
    helper_in $NS_B st-pending $ST_KEY 60 || die "syncthing: B was never offered the folder"
    t=$(now)
    helper_in $NS_B st-folder $ST_KEY "$b" "${id[a]}" "${id[b]}" 1
    helper_in $NS_B st-wait $ST_KEY "$files" "$TIMEOUT" || die "syncthing never completed on B"
    ST_T=$(since "$t")
    helper same-tree "$a" "$b" 0 || {
        log "syncthing says complete but B's folder differs: waiting for the files themselves"
        helper same-tree "$a" "$b" "$TIMEOUT" || die "syncthing: B's folder never matched"
        ST_T=$(since "$t")
    }
    result "  syncthing (B accepts the folder until complete): $ST_T s"
    if [ -n "$edit" ]; then
        local out
        helper edit-latency "$a" "$b" "$EDITS" >"$WORK/logs/$name-st-edits.json" || die "syncthing: an edit never arrived"
        out=$(cat "$WORK/logs/$name-st-edits.json")
        result "  syncthing edit on A -> content on B (fsWatcherDelayS=1, $EDITS edits): median $(jq -r '.median*1000|round' <<<"$out") ms, p90 $(jq -r '.p90*1000|round' <<<"$out") ms, max $(jq -r '.max*1000|round' <<<"$out") ms"
    fi
    stop_all
    rm -rf "$a" "$b" "$WORK/st-home-a" "$WORK/st-home-b"
}

# ratio LABEL PAIRS_SECONDS OTHER_SECONDS
ratio() {
    result "  pairs vs $1: $(calc %.2f "$3 / $2")x the speed ($2 s against $3 s)"
}

sync_part() {
    local name=$1 src=$2 files=$3 bytes=$4 edit=${5:-}
    local mb
    mb=$(calc %.1f "$bytes / 1e6")
    result ""
    result "== $name: $files file(s), $mb MB, $RATE_MBIT Mbit/s tbf each way =="
    b3sum_rate "$bytes" "$src"
    result "  b3sum, all threads: $B3_ALL s, $(calc %.0f "$bytes / 1e6 / $B3_ALL") MB/s; one thread: $B3_ONE s, $(calc %.0f "$bytes / 1e6 / $B3_ONE") MB/s"
    pairs_publish_and_sync "$name" "$src" "$files" "$bytes" "$edit"
    result "  pairs share add speed / b3sum: $(calc %.2f "$B3_ALL / $PUB") (all threads), $(calc %.2f "$B3_ONE / $PUB") (one thread)  [goal >= 0.8]"
    if [ "$RSYNC" = 1 ]; then
        rsync_run "$name" "$src"
    fi
    if [ "$SYNCTHING" = 1 ]; then
        syncthing_run "$name" "$src" "$files" "$edit"
    fi
    result "  -- initial sync, $name: pairs $SYNC s ($(calc %.0f "$bytes * 8 / 1e6 / $SYNC") Mbit/s)"
    [ "$RSYNC" = 0 ] || ratio rsync "$SYNC" "$RSYNC_T"
    [ "$SYNCTHING" = 0 ] || ratio syncthing "$SYNC" "$ST_T"
}

log "pairs $("$PAIRS_BIN" --version 2>/dev/null | head -1) at $PAIRS_BIN; rsync $(rsync --version | head -1 | awk '{print $3}'); $(syncthing --version 2>/dev/null | awk '{print "syncthing", $2}'); $("$B3SUM" --version)"
log "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"

for part in "${PARTS[@]}"; do
    case "$part" in
    small)
        src=$WORK/data-small
        log "writing $SMALL_FILES small files"
        bytes=$(helper make-small "$src" "$SMALL_FILES")
        sync_part "small" "$src" "$SMALL_FILES" "$bytes" edit
        rm -rf "$src"
        ;;
    big)
        src=$WORK/data-big
        mkdir -p "$src"
        log "writing a $BIG_MIB MiB file"
        head -c $(( BIG_MIB << 20 )) /dev/urandom >"$src/big.bin"
        sync_part "big" "$src" 1 $(( BIG_MIB << 20 ))
        rm -rf "$src"
        ;;
    first)
        src=$WORK/data-tiny
        log "writing $TINY_FILES tiny files"
        bytes=$(helper make-tiny "$src" "$TINY_FILES")
        want=$(( TINY_FILES / 2 ))
        want=$(printf 'd%04d/f%02d.txt' $(( want / 100 )) $(( want % 100 )))
        result ""
        result "== first byte: one file of a $TINY_FILES-file share, $RATE_MBIT Mbit/s tbf =="
        ha=$WORK/first-home-a a=$WORK/first-a
        cp -a "$src" "$a"
        start_node a "$ha" first-node-a
        t=$(now)
        TICKET=$(pairs_on a "$ha" share "$a" --json 2>>"$WORK/logs/first-share.err" | jq -r .ticket) ||
            die "pairs share failed: $(tail -3 "$WORK/logs/first-share.err")"
        helper pairs-wait "$PAIRS_BIN" "$ha" "$a" "$TINY_FILES" "$TIMEOUT" || die "pairs share (first) never got in step"
        result "  pairs share (publish $TINY_FILES files, A): $(since "$t") s"
        gets=()
        for i in $(seq "$GETS"); do
            hb=$WORK/first-home-b-$i out=$WORK/first-out-$i
            mkdir -p "$hb"
            t=$(now)
            pairs_on b "$hb" get "$TICKET" "$want" -o "$out" --bind $IP_B:0 --json \
                >"$WORK/logs/first-get-$i.out" 2>"$WORK/logs/first-get-$i.err" ||
                die "pairs get failed: $(tail -3 "$WORK/logs/first-get-$i.err")"
            g=$(since "$t")
            cmp -s "$a/$want" "$out/$want" || die "pairs get wrote $out/$want wrong or not at all"
            gets+=("$g")
            rm -rf "$hb" "$out"
        done
        result "  pairs get TICKET $want (B, no node, fresh data directory), $GETS runs: ${gets[*]} s  [goal <= 1 s]"
        if [ "$RSYNC" = 1 ]; then
            stop_all
            rsync_once() {
                cat >"$WORK/rsyncd.conf" <<EOF2
use chroot = no
[mod]
    path = $a
    read only = yes
    uid = root
    gid = root
EOF2
                setsid ip netns exec $NS_A rsync --daemon --no-detach --config="$WORK/rsyncd.conf" \
                    --address=$IP_A --port=873 --log-file="$WORK/logs/rsyncd.log" </dev/null >/dev/null 2>&1 &
                PIDS+=($!)
                for _ in $(seq 100); do
                    ip netns exec $NS_B rsync rsync://$IP_A/ >/dev/null 2>&1 && break
                    sleep 0.1
                done
                t=$(now)
                ip netns exec $NS_B rsync "rsync://$IP_A/mod/$want" "$WORK/first-rsync.out" || die "rsync of one path failed"
                result "  rsync rsync://A/mod/$want (reference): $(since "$t") s"
            }
            rsync_once
        fi
        stop_all
        rm -rf "$src" "$a" "$ha"
        ;;
    esac
done

result ""
log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== summary =="
cat "$RESULTS"
