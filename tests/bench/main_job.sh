#!/usr/bin/env bash
# tests/bench/main_job.sh — figures for the main job on one Maildir tree, over a
# real sftp:// vault on a loopback sshd started here.
#
# Usage: tests/bench/main_job.sh --source DIR [--layout L] [--label NAME]
#        tests/bench/main_job.sh --generate N [--mailboxes M]   (scripts/gen-maildir)
# Prints: messages, raw bytes, stored bytes, first backup, no-change backup,
# restore of the largest mailbox (wall s, peak RSS from /usr/bin/time -v), and
# the same as JSON on the last line. Needs a built build/reduit.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
REDUIT=${REDUIT:-$here/build/reduit}
source_dir="" layout="%d/%n" label="" generate=0 mailboxes=50
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir=$2; shift 2 ;;
    --layout) layout=$2; shift 2 ;;
    --label) label=$2; shift 2 ;;
    --generate) generate=$2; shift 2 ;;
    --mailboxes) mailboxes=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
W=$(mktemp -d /tmp/rb.XXXXXX)
cleanup() {
  [ -f "$W/sshd.pid" ] && kill "$(cat "$W/sshd.pid")" 2>/dev/null || true
  gpgconf --homedir "$W/g" --kill all 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
if [ "$generate" -gt 0 ]; then
  source_dir=$W/mail
  "$here/scripts/gen-maildir" --out "$source_dir" --messages "$generate" --mailboxes "$mailboxes" --seed 1 >&2
  label=${label:-generated-$generate}
fi
[ -d "$source_dir" ] || { echo "--source DIR or --generate N" >&2; exit 2; }
label=${label:-$(basename "$source_dir")}

# sshd on loopback (PLATFORM.md recipe)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p -m 0755 /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$W/hostkey"; ssh-keygen -q -t ed25519 -N '' -f "$W/client"
cp "$W/client.pub" "$W/authorized_keys"; chmod 600 "$W/authorized_keys"
printf '%s\n' "Port $port" 'ListenAddress 127.0.0.1' "HostKey $W/hostkey" "PidFile $W/sshd.pid" \
  "AuthorizedKeysFile $W/authorized_keys" 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' \
  'PubkeyAuthentication yes' 'PermitRootLogin prohibit-password' 'UsePAM no' 'StrictModes no' \
  'Subsystem sftp internal-sftp' > "$W/sshd_config"
/usr/sbin/sshd -f "$W/sshd_config" -E "$W/sshd.log"
for _ in $(seq 50); do [ -f "$W/sshd.pid" ] && break; sleep 0.1; done
echo "[127.0.0.1]:$port $(cut -d' ' -f1-2 "$W/hostkey.pub")" > "$W/known_hosts"

mkdir -p -m 700 "$W/g"
gpg --homedir "$W/g" --batch --quiet --passphrase '' --quick-gen-key 'bench <bench@example.test>' future-default default never 2>/dev/null
cat > "$W/reduit.toml" <<TOML
state_dir = "$W/state"
[vault]
url = "sftp://$(id -un)@127.0.0.1:$port$W/vault"
ssh_key = "$W/client"
known_hosts = "$W/known_hosts"
[keys]
gnupghome = "$W/g"
[[source]]
root = "$source_dir"
layout = "$layout"
TOML
RC=("$REDUIT" --config "$W/reduit.toml" --json)
R() { "${RC[@]}" "$@"; }
timed() {  # timed NAME CMD… → prints wall seconds and peak RSS KiB; command output to $W/NAME.json
  local name=$1; shift
  /usr/bin/time -v -o "$W/$name.time" "$@" > "$W/$name.json"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$W/$name.time")
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$W/$name.time")
  echo "$wall $rss"
}
R init --recipient bench@example.test --signing-key bench@example.test > /dev/null
sync
read -r first_s first_rss < <(timed first "${RC[@]}" backup)
read -r second_s second_rss < <(timed second "${RC[@]}" backup)
largest=$(R ls latest | python3 -c 'import json,sys; m=json.load(sys.stdin); print(max(m, key=lambda x: x["bytes"])["mailbox"])')
read -r restore_s restore_rss < <(timed restore "${RC[@]}" restore --mailbox "$largest" --to "$W/restored")
python3 - "$W" "$label" "$first_s" "$first_rss" "$second_s" "$second_rss" "$largest" "$restore_s" "$restore_rss" <<'PY'
import json, os, sys
W, label = sys.argv[1], sys.argv[2]
first = json.load(open(f"{W}/first.json")); second = json.load(open(f"{W}/second.json"))
restore = json.load(open(f"{W}/restore.json"))
stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(f"{W}/vault") for f in fs)
r = dict(label=label, mailboxes=first["mailboxes"], messages=first["messages"], raw_bytes=first["bytes"],
         stored_bytes=stored, first_backup_s=float(sys.argv[3]), first_backup_peak_rss_kib=int(sys.argv[4]),
         nochange_backup_s=float(sys.argv[5]), nochange_peak_rss_kib=int(sys.argv[6]),
         nochange_uploaded_bytes=second["data_bytes_uploaded"] + second["metadata_bytes_uploaded"],
         largest_mailbox=sys.argv[7], largest_messages=restore["messages"], largest_bytes=restore["bytes"],
         restore_s=float(sys.argv[8]), restore_peak_rss_kib=int(sys.argv[9]))
print(f"{label}: {r['messages']} messages in {r['mailboxes']} mailboxes, {r['raw_bytes']/2**20:.1f} MiB raw -> "
      f"{stored/2**20:.1f} MiB stored ({r['raw_bytes']/stored:.2f}x)")
print(f"  first backup     {r['first_backup_s']:8.2f} s   peak RSS {r['first_backup_peak_rss_kib']/1024:7.1f} MiB")
print(f"  no-change backup {r['nochange_backup_s']:8.2f} s   peak RSS {r['nochange_peak_rss_kib']/1024:7.1f} MiB   uploaded {r['nochange_uploaded_bytes']} B")
print(f"  restore {r['largest_mailbox']} ({r['largest_messages']} msgs, {r['largest_bytes']/2**20:.1f} MiB) "
      f"{r['restore_s']:.2f} s   peak RSS {r['restore_peak_rss_kib']/1024:.1f} MiB")
print(json.dumps(r))
PY
