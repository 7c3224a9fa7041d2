#!/bin/bash
# tests/bench/restore_one.sh — restores of one mailbox, alternated between reduit
# builds and restic, against the vaults `tests/bench/compare.py --keep` left.
#
# Usage: tests/bench/restore_one.sh WORKDIR ROUNDS MAILBOX BIN...
#   WORKDIR  compare.py's --workdir (reduit.toml, sshd/, vault-restic, src)
#   ROUNDS   how many rounds
#   MAILBOX  user@domain, e.g. a.weber@example.ch (compare.py restores the first)
#   BIN      reduit binaries to compare (each round runs them in this order, then restic)
# Prints one line per run: "tool round wall_s user_s sys_s", then the medians.
#
# Every restore goes into a directory that never existed, and nothing is deleted
# while the rounds run: on ext4 without a journal (this machine's root file
# system), inodes freed in the last minute are skipped, one by one, when new ones
# are allocated (fs/ext4/ialloc.c, recently_deleted), so a restore into a
# directory just removed measures that scan (docs/PERFORMANCE.md, stop 27).
# The restored trees are removed at the end: leave a minute before the next run.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 5,10p "$0" >&2; exit 2; }
work=$(realpath "$1"); rounds=$2; mailbox=$3; shift 3
user=${mailbox%@*}; domain=${mailbox#*@}
port=$(awk '$1 == "Port" {print $2}' "$work/sshd/sshd_config")
pgrep -f "sshd -f $work/sshd/sshd_config" >/dev/null || /usr/sbin/sshd -f "$work/sshd/sshd_config"
ssh_opts="-p $port -i $work/sshd/client -o UserKnownHostsFile=$work/sshd/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
out=$(mktemp -d "$work/restore-one.XXXXXX")
times=$out/times
for i in $(seq "$rounds"); do
  for bin in "$@"; do
    sync
    /usr/bin/time -f "$(basename "$bin") $i %e %U %S" -a -o "$times" \
      "$bin" -c "$work/reduit.toml" -q restore --mailbox "$mailbox" --to "$out/$(basename "$bin").$i" >/dev/null
  done
  sync
  RESTIC_PASSWORD=bench-passphrase-not-secret RESTIC_CACHE_DIR="$work/restic-cache" \
    /usr/bin/time -f "restic $i %e %U %S" -a -o "$times" \
    restic -r "sftp:root@127.0.0.1:$work/vault-restic" -o "sftp.command=ssh $ssh_opts root@127.0.0.1 -s sftp" \
    --quiet restore latest --target "$out/restic.$i" --include "$work/src/$domain/$user" >/dev/null
done
cat "$times"
awk '{w[$1] = w[$1] " " $3} END {for (t in w) print t, w[t]}' "$times" | while read -r tool walls; do
  echo "$tool median wall $(tr ' ' '\n' <<<"$walls" | sort -n | awk '{a[NR] = $1} END {print (a[int((NR + 1) / 2)] + a[int(NR / 2) + 1]) / 2}') s"
done
rm -rf "$out"
