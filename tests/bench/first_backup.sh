#!/bin/bash
# tests/bench/first_backup.sh — one first backup (file://; sftp:// with SSHD below)
# into a fresh vault and state dir, timed by /usr/bin/time: the A/B measurement
# of docs/PERFORMANCE.md (run it alternately with two builds on the same data).
#
# usage: tests/bench/first_backup.sh REDUIT SRC GNUPGHOME FINGERPRINT WORKDIR [TAG]
#   REDUIT       the reduit binary to measure
#   SRC          a Maildir tree in the %d/%n layout (scripts/gen-maildir --out SRC)
#   GNUPGHOME    a GnuPG home holding FINGERPRINT's secret key (no passphrase)
#   WORKDIR      emptied and used for the vault, the state dir and the config
# prints: TAG WALL s wall USER user SYS sys MAXRSS KiB (CPU of the process tree,
# helpers and gpg included; peak RSS of its largest process, the backup itself).
# Set PERF="perf record -g -o FILE --" to profile the run. Set SSHD=DIR (the sshd/
# folder of a `tests/bench/compare.py --keep` work dir) for an sftp:// vault on
# that loopback sshd instead (started if it is not running), as the harness
# measures; the line printed then ends with "MINFLT minflt" (minor page faults).
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '6,16p' "$0" >&2
  exit 2
fi
bin=$1 src=$2 home=$3 fpr=$4 work=$5 tag=${6:-run}
rm -rf "$work"
mkdir -p "$work"
vault="url = \"file://$work/vault\""
if [ -n "${SSHD:-}" ]; then
  sshd_dir=$(realpath "$SSHD")
  port=$(awk '$1 == "Port" {print $2}' "$sshd_dir/sshd_config")
  pgrep -f "sshd -f $sshd_dir/sshd_config" >/dev/null || /usr/sbin/sshd -f "$sshd_dir/sshd_config"
  vault="url = \"sftp://root@127.0.0.1:$port$work/vault\"
ssh_key = \"$sshd_dir/client\"
known_hosts = \"$sshd_dir/known_hosts\""
fi
cat > "$work/reduit.toml" <<EOT
state_dir = "$work/state"
[vault]
$vault
[keys]
gnupghome = "$home"
[[source]]
root = "$src"
layout = "%d/%n"
EOT
"$bin" -c "$work/reduit.toml" -q init --recipient "$fpr" --signing-key "$fpr" >/dev/null
sync
${PERF:-} /usr/bin/time -f "$tag %e s wall %U user %S sys %M KiB${SSHD:+ %R minflt}" "$bin" -c "$work/reduit.toml" -q backup >/dev/null
