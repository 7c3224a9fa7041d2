#!/usr/bin/env bash
# tests/bench/mailserver_vs_dovecot.sh — messages/s delivered into Maildir by
# `reduit mailserver` and by Dovecot's LMTP server, side by side on this machine,
# driven by Postfix's smtp-source over LMTP on loopback (docs/MAILSERVER.md,
# "Throughput").
#
# Usage: tests/bench/mailserver_vs_dovecot.sh [--messages N] [--sessions S] [--size BYTES] [--rounds R]
# Defaults: 10000 messages, 20 sessions, 1024-byte bodies, 3 rounds (median reported).
# Both write each message to tmp/, fsync it, move it into new/ and fsync new/:
# reduit always; Dovecot with mail_fsync = always (its default "optimized" also
# fsyncs files; "always" adds the directory syncs that reduit does). Dovecot keeps
# its normal index files (dovecot.index*, dovecot-uidlist), as it would in service.
# Needs root (Dovecot's master), a built build/reduit, postfix and dovecot-lmtpd
# (scripts/bootstrap installs them). Prints one line per round and a JSON summary.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
REDUIT=${REDUIT:-$here/build/reduit}
messages=10000 sessions=20 size=1024 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
W=$(mktemp -d /var/tmp/reduit-mailbench.XXXXXX)   # on the disk, not a tmpfs /tmp
chmod 755 "$W"
reduit_pid="" 
cleanup() {
  [ -n "$reduit_pid" ] && kill "$reduit_pid" 2>/dev/null || true
  [ -f "$W/dovecot/run/master.pid" ] && kill "$(cat "$W/dovecot/run/master.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# reduit
rport=$(free_port)
mkdir -p "$W/reduit-mail"
cat > "$W/reduit.toml" <<TOML
hostname = "bench.example.test"
lmtp_listen = ["127.0.0.1:$rport"]
mail_root = "$W/reduit-mail"
log_file = "$W/reduit.log"
domains = ["example.test"]
users = ["bench@example.test"]
[limits]
client_connection_rate_limit = 0
TOML
"$REDUIT" mailserver --config "$W/reduit.toml" & reduit_pid=$!

# Dovecot: its own master, config and base_dir; only the LMTP service.
dport=$(free_port)
mkdir -p "$W/dovecot/run" "$W/dovecot-mail"
chown nobody:nogroup "$W/dovecot-mail"
cat > "$W/dovecot/dovecot.conf" <<CONF
base_dir = $W/dovecot/run
state_dir = $W/dovecot/state
log_path = $W/dovecot/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:$W/dovecot-mail/%d/%n
mail_fsync = always
lmtp_rcpt_check_quota = no
passdb {
  driver = static
  args = nopassword=y
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$W/dovecot-mail/%d/%n
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $dport
  }
  process_min_avail = 2
}
service anvil {
  chroot =
}
CONF
mkdir -p "$W/dovecot/state"
dovecot -c "$W/dovecot/dovecot.conf"
for i in $(seq 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$rport),1); socket.create_connection(('127.0.0.1',$dport),1)" 2>/dev/null; then break; fi
  sleep 0.1
done

run() {  # name port maildir → seconds
  local t0 t1
  t0=$(date +%s.%N)
  smtp-source -L -d -s "$sessions" -m "$messages" -l "$size" -f sender@remote.example \
    -t bench@example.test "127.0.0.1:$2" >/dev/null
  t1=$(date +%s.%N)
  local n
  n=$(find "$3/new" -type f | wc -l)
  if [ "$n" -ne "$messages" ]; then echo "$1: $n messages in new/, expected $messages" >&2; exit 1; fi
  rm -rf "$3"
  python3 -c "print('%.3f' % ($t1 - $t0))"
}
declare -a rt dt
for r in $(seq "$rounds"); do
  a=$(run reduit "$rport" "$W/reduit-mail/example.test/bench")
  b=$(run dovecot "$dport" "$W/dovecot-mail/example.test/bench")
  rt+=("$a"); dt+=("$b")
  python3 -c "m=$messages; print('round $r: reduit %.0f msg/s (%.2f s), dovecot %.0f msg/s (%.2f s)' % (m/$a, $a, m/$b, $b))"
done
python3 - "$messages" "$sessions" "$size" "${rt[*]}" "${dt[*]}" <<'PY'
import json, statistics, sys
m, s, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = [float(x) for x in sys.argv[4].split()]
d = [float(x) for x in sys.argv[5].split()]
rr, dr = m / statistics.median(r), m / statistics.median(d)
print(f"median: reduit {rr:.0f} msg/s, dovecot {dr:.0f} msg/s, ratio reduit/dovecot {rr/dr:.2f}")
print(json.dumps({"messages": m, "sessions": s, "body_bytes": size, "reduit_msgs_per_s": round(rr),
                  "dovecot_msgs_per_s": round(dr), "ratio": round(rr / dr, 2),
                  "reduit_seconds": r, "dovecot_seconds": d}))
PY
