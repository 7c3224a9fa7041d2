#!/usr/bin/env python3
"""tests/bench/compare.py — reduit side by side with restic, Borg, duplicity and rsync.

One command generates the data (scripts/gen-maildir), starts its own sshd on a
loopback port, runs every tool on the same data to a vault on that sshd, and prints
a table plus JSON. Not part of the test suite; docs/PERFORMANCE.md shows how to run
it and the latest results.

Per scenario and tool it records wall time, CPU time (user+sys of the tool and its
children), peak RSS (largest process of the tool's tree, from wait4 via
/usr/bin/time -v), bytes sent to and received from the SSH server (nftables
counters on the sshd port, so every tool is counted the same way, headers
included), the vault's size on disk, and the ratio reduit / tool.

Scenarios: 1 first backup; 2 second backup, nothing changed; 3 churn: 1% new
messages + 10% flag changes + 2% deletions; 4 restore one mailbox (the first of
the mailboxes, sorted) from the latest snapshot; 5 restore everything. Peak memory
on the 1,000,000-message set is scenario 1's RSS with --large.

Limits beside them: `find SRC -printf '%i %s %T@ %C@\\n'` (the stat walk any
incremental backup needs) and `tar -cf - SRC | zstd -3 > /dev/null` (read and
compress everything).

Needs root (sshd, nft) and: restic borgbackup duplicity python3-paramiko rsync
nftables (scripts/bootstrap --bench installs them).

Usage: tests/bench/compare.py [--messages 100000 | --large] [--mailboxes 50]
       [--tools reduit,restic,borg,duplicity,rsync] [--rounds N] [--workdir DIR] [--json FILE]
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REDUIT = os.environ.get("REDUIT", os.path.join(ROOT, "build", "reduit"))
PASS = "bench-passphrase-not-secret"


def run(cmd, env=None, cwd=None, check=True):
    """Runs cmd under /usr/bin/time -v; returns dict(wall, cpu, rss_kib, rc)."""
    tf = tempfile.NamedTemporaryFile(prefix="rbtime.", delete=False)
    tf.close()
    full = ["/usr/bin/time", "-v", "-o", tf.name] + cmd
    t0 = time.monotonic()
    p = subprocess.run(full, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    text = open(tf.name).read()
    os.unlink(tf.name)
    if check and p.returncode != 0:
        sys.stderr.write(p.stdout.decode(errors="replace")[-3000:] + p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    def field(name):
        m = re.search(re.escape(name) + r": ([0-9.]+)", text)
        return float(m.group(1)) if m else 0.0
    return {"wall": wall, "cpu": field("User time (seconds)") + field("System time (seconds)"),
            "rss_kib": int(field("Maximum resident set size (kbytes)")), "rc": p.returncode,
            "stdout": p.stdout.decode(errors="replace")}


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


class Sshd:
    def __init__(self, work):
        self.dir = os.path.join(work, "sshd")
        os.makedirs(self.dir, exist_ok=True)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for k in ("hostkey", "client"):
            if not os.path.exists(f"{self.dir}/{k}"):
                sh(f"ssh-keygen -q -t ed25519 -N '' -f {self.dir}/{k}")
        shutil.copy(f"{self.dir}/client.pub", f"{self.dir}/authorized_keys")
        os.chmod(f"{self.dir}/authorized_keys", 0o600)
        cfg = [f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.dir}/hostkey",
               f"PidFile {self.dir}/sshd.pid", f"AuthorizedKeysFile {self.dir}/authorized_keys",
               "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
               "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", "MaxStartups 100",
               "Subsystem sftp internal-sftp"]
        open(f"{self.dir}/sshd_config", "w").write("\n".join(cfg) + "\n")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{self.dir}/sshd_config"],
                                     stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/log", "w"),
                                     start_new_session=True)
        for _ in range(100):
            if "Server listening" in open(f"{self.dir}/log").read():
                break
            time.sleep(0.1)
        hostpub = open(f"{self.dir}/hostkey.pub").read().split()[:2]
        self.known_hosts = f"{self.dir}/known_hosts"
        open(self.known_hosts, "w").write(f"[127.0.0.1]:{self.port} {' '.join(hostpub)}\n")
        self.key = f"{self.dir}/client"
        self.ssh_opts = (f"-p {self.port} -i {self.key} -o UserKnownHostsFile={self.known_hosts} "
                         "-o StrictHostKeyChecking=yes -o BatchMode=yes")
        # nftables byte counters on the sshd port: every tool measured the same way.
        sh("nft delete table inet rdbench 2>/dev/null || true")
        sh("nft add table inet rdbench")
        sh("nft add chain inet rdbench input '{ type filter hook input priority 0; }'")
        sh(f"nft add rule inet rdbench input tcp dport {self.port} counter")
        sh(f"nft add rule inet rdbench input tcp sport {self.port} counter")

    def counters(self):
        out = subprocess.run("nft list table inet rdbench", shell=True, capture_output=True, text=True).stdout
        vals = [int(x) for x in re.findall(r"counter packets \d+ bytes (\d+)", out)]
        return vals[0], vals[1]  # (to server, from server)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        sh("nft delete table inet rdbench 2>/dev/null || true")


def median_round(samples):
    """The sample of median wall time (the lower middle one for an even count), with
    every sample's wall time in "rounds", in the order they ran."""
    chosen = dict(sorted(samples, key=lambda m: m["wall"])[(len(samples) - 1) // 2])
    chosen["rounds"] = [m["wall"] for m in samples]
    return chosen


class Tool:
    name = "?"

    def __init__(self, bench):
        self.b = bench
        self.repo = os.path.join(bench.work, "vault-" + self.name)

    def measure(self, scenario, cmd, env=None, cwd=None):
        sh("sync")  # the previous run's writeback must not land in this run's time
        before = self.b.sshd.counters()
        r = run(cmd, env=env, cwd=cwd)
        after = self.b.sshd.counters()
        r["sent"] = after[0] - before[0]
        r["received"] = after[1] - before[1]
        r["vault"] = du(self.repo)
        r.pop("stdout", None)
        return r


class Reduit(Tool):
    name = "reduit"

    def setup(self):
        b = self.b
        self.gnupg = b.gnupg
        self.config = os.path.join(b.work, "reduit.toml")
        open(self.config, "w").write(f'''state_dir = "{b.work}/reduit-state"
[vault]
url = "sftp://root@127.0.0.1:{b.sshd.port}{self.repo}"
ssh_key = "{b.sshd.key}"
known_hosts = "{b.sshd.known_hosts}"
[keys]
gnupghome = "{self.gnupg}"
[[source]]
root = "{b.src}"
layout = "%d/%n"
''')
        shutil.rmtree(f"{b.work}/reduit-state", ignore_errors=True)
        run([REDUIT, "-c", self.config, "-q", "init", "--recipient", b.fpr, "--signing-key", b.fpr])

    def backup(self, scenario):
        return self.measure(scenario, [REDUIT, "-c", self.config, "-q", "backup"])

    def restore_mailbox(self, domain, user, out):
        return self.measure("restore-one", [REDUIT, "-c", self.config, "-q", "restore", "--mailbox",
                                            f"{user}@{domain}", "--to", out])

    def restore_all(self, out):
        return self.measure("restore-all", [REDUIT, "-c", self.config, "-q", "restore", "--all", "--to", out])


class Restic(Tool):
    name = "restic"

    def env(self):
        e = dict(os.environ, RESTIC_PASSWORD=PASS, RESTIC_CACHE_DIR=f"{self.b.work}/restic-cache")
        return e

    def base(self):
        return ["restic", "-r", f"sftp:root@127.0.0.1:{self.repo}", "-o",
                f"sftp.command=ssh {self.b.sshd.ssh_opts} root@127.0.0.1 -s sftp", "--quiet"]

    def setup(self):
        shutil.rmtree(f"{self.b.work}/restic-cache", ignore_errors=True)
        run(self.base() + ["init"], env=self.env())

    def backup(self, scenario):
        return self.measure(scenario, self.base() + ["backup", self.b.src], env=self.env())

    def restore_mailbox(self, domain, user, out):
        return self.measure("restore-one", self.base() + ["restore", "latest", "--target", out, "--include",
                                                          f"{self.b.src}/{domain}/{user}"], env=self.env())

    def restore_all(self, out):
        return self.measure("restore-all", self.base() + ["restore", "latest", "--target", out], env=self.env())


class Borg(Tool):
    name = "borg"

    def env(self):
        return dict(os.environ, BORG_PASSPHRASE=PASS, BORG_RSH=f"ssh {self.b.sshd.ssh_opts.replace('-p ' + str(self.b.sshd.port) + ' ', '')}",
                    BORG_CACHE_DIR=f"{self.b.work}/borg-cache", BORG_CONFIG_DIR=f"{self.b.work}/borg-config",
                    BORG_SECURITY_DIR=f"{self.b.work}/borg-sec", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                    BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def url(self):
        return f"ssh://root@127.0.0.1:{self.b.sshd.port}{self.repo}"

    def setup(self):
        for d in ("borg-cache", "borg-config", "borg-sec"):
            shutil.rmtree(f"{self.b.work}/{d}", ignore_errors=True)
        self.n = 0
        run(["borg", "init", "--encryption=repokey-blake2", self.url()], env=self.env())

    def backup(self, scenario):
        self.n += 1
        return self.measure(scenario, ["borg", "create", "--compression", "zstd,3", f"{self.url()}::s{self.n}",
                                       self.b.src], env=self.env())

    def restore_mailbox(self, domain, user, out):
        os.makedirs(out, exist_ok=True)
        return self.measure("restore-one", ["borg", "extract", f"{self.url()}::s{self.n}",
                                            f"{self.b.src.lstrip('/')}/{domain}/{user}"], env=self.env(), cwd=out)

    def restore_all(self, out):
        os.makedirs(out, exist_ok=True)
        return self.measure("restore-all", ["borg", "extract", f"{self.url()}::s{self.n}"], env=self.env(), cwd=out)


class Duplicity(Tool):
    name = "duplicity"

    def env(self):
        return dict(os.environ, GNUPGHOME=self.b.gnupg, PASSPHRASE="", HOME=f"{self.b.work}/dup-home")

    def common(self):
        return ["--encrypt-key", self.b.fpr, "--gpg-options=--trust-model=always", "--archive-dir",
                f"{self.b.work}/dup-cache",
                f"--ssh-options=-oIdentityFile={self.b.sshd.key} -oUserKnownHostsFile={self.b.sshd.known_hosts}"]

    def url(self):
        return f"sftp://root@127.0.0.1:{self.b.sshd.port}/{self.repo}"

    def setup(self):
        os.makedirs(f"{self.b.work}/dup-home", exist_ok=True)
        shutil.rmtree(f"{self.b.work}/dup-cache", ignore_errors=True)
        self.first = True

    def backup(self, scenario):
        kind = "full" if self.first else "incremental"
        self.first = False
        return self.measure(scenario, ["duplicity", kind] + self.common() + [self.b.src, self.url()], env=self.env())

    def restore_mailbox(self, domain, user, out):
        return self.measure("restore-one", ["duplicity", "restore"] + self.common() +
                            ["--file-to-restore", f"{domain}/{user}", self.url(), out], env=self.env())

    def restore_all(self, out):
        return self.measure("restore-all", ["duplicity", "restore"] + self.common() + [self.url(), out],
                            env=self.env())


class Rsync(Tool):
    name = "rsync"

    def setup(self):
        pass

    def cmd(self, src, dst):
        return ["rsync", "-a", "--delete", "-e", f"ssh {self.b.sshd.ssh_opts.replace('-p ', '-p ')}", src, dst]

    def backup(self, scenario):
        return self.measure(scenario, self.cmd(self.b.src + "/", f"root@127.0.0.1:{self.repo}/"))

    def restore_mailbox(self, domain, user, out):
        os.makedirs(out, exist_ok=True)
        return self.measure("restore-one", self.cmd(f"root@127.0.0.1:{self.repo}/{domain}/{user}/", out + "/"))

    def restore_all(self, out):
        os.makedirs(out, exist_ok=True)
        return self.measure("restore-all", self.cmd(f"root@127.0.0.1:{self.repo}/", out + "/"))


TOOLS = {"reduit": Reduit, "restic": Restic, "borg": Borg, "duplicity": Duplicity, "rsync": Rsync}


def churn(src, seed, work):
    """1% new messages (copies with new unique names of random messages), 10% flag
    changes, 2% deletions; deterministic for a seed. Every step is journaled first in
    WORK/churn-undo.json (deleted files are moved to WORK/churn-attic), so that
    undo_churn() gives the next run in the same --workdir the same data."""
    rnd = random.Random(seed)
    msgs = []
    for d, _, files in os.walk(src):
        if os.path.basename(d) in ("cur", "new"):
            msgs += [os.path.join(d, f) for f in files if not f.startswith(".")]
    msgs.sort()
    n = len(msgs)
    rnd.shuffle(msgs)
    new, flags, dels = msgs[: n // 100], msgs[n // 100: n // 100 + n // 10], msgs[n // 100 + n // 10: n // 100 + n // 10 + n // 50]
    attic = os.path.join(work, "churn-attic")
    os.makedirs(attic, exist_ok=True)
    created, renamed, moved = [], [], []
    for i, m in enumerate(new):
        size = len(b"X-Churn: %d\n" % i) + os.path.getsize(m)
        created.append(os.path.join(os.path.dirname(os.path.dirname(m)), "new", f"1800000000.M{i}P1.churn,S={size}"))
    for m in flags:
        base = os.path.basename(m)
        d = os.path.dirname(m)
        if os.path.basename(d) == "new":
            renamed.append([m, os.path.join(os.path.dirname(d), "cur", base + ":2,S")])
        else:
            u, _, fl = base.partition(":2,")
            renamed.append([m, os.path.join(d, u + ":2," + "".join(sorted(set(fl) ^ {"F"})))])
    for i, m in enumerate(dels):
        moved.append([m, os.path.join(attic, str(i))])
    # Nothing is overwritten: every target must be free (undo deletes what churn created).
    taken = [t for t in created + [to for _, to in renamed] + [to for _, to in moved] if os.path.lexists(t)]
    if taken:
        sys.exit(f"compare.py: churn target {taken[0]} already exists ({len(taken)} in all); "
                 f"remove {src} to generate the set again")
    journal = os.path.join(work, "churn-undo.json")
    with open(journal + ".tmp", "w") as f:
        json.dump({"created": created, "renamed": renamed, "moved": moved}, f)
    os.replace(journal + ".tmp", journal)
    added = 0
    concat = tempfile.NamedTemporaryFile(prefix="rdchurn.", delete=False)
    for i, m in enumerate(new):
        data = b"X-Churn: %d\n" % i + open(m, "rb").read()
        with open(created[i], "xb") as f:
            f.write(data)
        concat.write(data)
        added += len(data)
    concat.close()
    # What the new mail costs compressed (zstd -3 over all of it): the floor for
    # bytes an incremental backup must send.
    compressed = int(subprocess.run(f"zstd -q -3 -c {concat.name} | wc -c", shell=True, capture_output=True,
                                    text=True).stdout)
    os.unlink(concat.name)
    for old, to in renamed:
        os.rename(old, to)
    for m, to in moved:
        if os.path.exists(m):
            os.rename(m, to)
    return {"new": len(new), "new_bytes": added, "new_bytes_zstd3": compressed, "flag_changes": len(flags),
            "deleted": len(dels)}


def undo_churn(work):
    """Undoes what churn() journaled (also a churn that stopped half way); returns
    whether there was anything to undo."""
    path = os.path.join(work, "churn-undo.json")
    if not os.path.exists(path):
        return False
    j = json.load(open(path))
    # A step whose folder is gone (the set removed to be generated again) is skipped.
    for f in j["created"]:
        if os.path.exists(f):
            os.unlink(f)
    for old, to in j["renamed"]:
        if os.path.exists(to) and not os.path.lexists(old):
            os.rename(to, old)
    for m, at in j["moved"]:
        if os.path.exists(at) and os.path.isdir(os.path.dirname(m)) and not os.path.lexists(m):
            os.rename(at, m)
    os.unlink(path)
    attic = os.path.join(work, "churn-attic")
    if os.path.isdir(attic):
        if os.listdir(attic):
            print(f"compare.py: {attic} still holds messages that could not go back; left there",
                  file=sys.stderr)
        else:
            os.rmdir(attic)
    return True


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir or tempfile.mkdtemp(prefix="rdcmp.", dir="/var/tmp")
        os.makedirs(self.work, exist_ok=True)
        self.src = os.path.join(self.work, "src")

    def prepare(self):
        if undo_churn(self.work):
            print(f"undid the churn of the last run in {self.work}", file=sys.stderr, flush=True)
        if not os.path.isdir(self.src):
            n = 1_000_000 if self.args.large else self.args.messages
            sh(f"{ROOT}/scripts/gen-maildir --out {self.src} --messages {n} --mailboxes {self.args.mailboxes} --seed 1",
               stdout=subprocess.DEVNULL)
        self.mailboxes = sorted((d, u) for d in os.listdir(self.src) for u in os.listdir(os.path.join(self.src, d)))
        self.gnupg = os.path.join(self.work, "g")
        if not os.path.isdir(self.gnupg):
            os.makedirs(self.gnupg, mode=0o700)
            sh(f"gpg --homedir {self.gnupg} --batch --quiet --passphrase '' --quick-gen-key "
               "'bench <bench@example.test>' future-default default never", stderr=subprocess.DEVNULL)
        out = subprocess.run(["gpg", "--homedir", self.gnupg, "--with-colons", "--list-keys", "bench@example.test"],
                             capture_output=True, text=True).stdout
        self.fpr = re.search(r"^fpr:+([0-9A-F]{40}):", out, re.M).group(1)
        self.sshd = Sshd(self.work)

    def limits(self):
        sh("sync")
        f = run(["/bin/sh", "-c", f"find {self.src} -printf '%i %s %T@ %C@\\n' > /dev/null"])
        t = run(["/bin/sh", "-c", f"tar -cf - {self.src} | zstd -q -3 > /dev/null"])
        return {"stat_walk": f["wall"], "tar_zstd": t["wall"]}

    def main(self):
        self.prepare()
        tools = [TOOLS[t](self) for t in self.args.tools.split(",")]
        results = {t.name: {} for t in tools}
        def fresh(t):  # an empty vault (and cache) for tool t
            shutil.rmtree(t.repo, ignore_errors=True)
            os.makedirs(t.repo, exist_ok=True) if t.name == "rsync" else None
            t.setup()
        for t in tools:
            fresh(t)
        limits = self.limits()
        messages = sum(1 for dd, _, fs in os.walk(self.src) for f in fs if os.path.basename(dd) in ("cur", "new"))
        src_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(self.src) for f in fs)
        # First backups: --rounds rounds, the tools alternated within each, every
        # round into a new vault; the round of median wall time is the figure, and
        # every round's wall time is kept. One sample per tool let a minute when this
        # shared host's disk or CPU stalled decide a ratio (docs/PERFORMANCE.md).
        firsts = {t.name: [] for t in tools}
        for r in range(self.args.rounds):
            for t in tools:
                if r:
                    fresh(t)
                print(f"[{t.name}] first backup, round {r + 1}/{self.args.rounds}…", file=sys.stderr, flush=True)
                firsts[t.name].append(t.backup("first"))
        for t in tools:
            results[t.name]["first"] = median_round(firsts[t.name])
        for t in tools:
            print(f"[{t.name}] nochange backup…", file=sys.stderr, flush=True)
            results[t.name]["nochange"] = t.backup("nochange")
        ch = churn(self.src, 7, self.work)
        churned = time.monotonic()
        for t in tools:
            print(f"[{t.name}] churn backup…", file=sys.stderr, flush=True)
            results[t.name]["churn"] = t.backup("churn")
        d, u = self.mailboxes[0]
        # Restores create thousands of inodes. On ext4 without a journal, inodes freed
        # in the last minute are skipped one by one when new ones are allocated
        # (fs/ext4/ialloc.c, recently_deleted), so a restore right after another
        # tool's restored tree was removed pays for those files (docs/PERFORMANCE.md,
        # stop 27). Every tool's restore-one runs first, a minute after the churn's
        # deletions, and their trees stay until the end; each restore-all's tree is
        # removed at once (a whole set per tool would not fit beside --large), and the
        # next restore waits out the minute.
        # Restores of one mailbox run --rounds rounds too, alternated, each into a
        # new directory that stays until the end (nothing is removed between them).
        removed = churned
        ones = []
        singles = {t.name: [] for t in tools}
        for what, rounds in (("restore-one", self.args.rounds), ("restore-all", 1)):
            for r in range(rounds):
                for t in tools:
                    out = os.path.join(self.work, f"out-{t.name}-{what}" + (f"-{r + 1}" if r else ""))
                    if os.path.lexists(out):  # left by a run that was stopped
                        shutil.rmtree(out, ignore_errors=True)
                        removed = time.monotonic()
                    time.sleep(max(0.0, 65 - (time.monotonic() - removed)))
                    print(f"[{t.name}] {what}" + (f", round {r + 1}/{rounds}" if rounds > 1 else "") + "…",
                          file=sys.stderr, flush=True)
                    if what == "restore-one":
                        singles[t.name].append(t.restore_mailbox(d, u, out))
                        ones.append(out)
                    else:
                        results[t.name][what] = t.restore_all(out)
                        shutil.rmtree(out, ignore_errors=True)
                        removed = time.monotonic()
            if what == "restore-one":
                for t in tools:
                    results[t.name][what] = median_round(singles[t.name])
        for out in ones:
            shutil.rmtree(out, ignore_errors=True)
        self.sshd.stop()
        subprocess.run(["gpgconf", "--homedir", self.gnupg, "--kill", "all"], check=False)
        report = {"machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
                  "messages": messages,
                  "source_bytes": src_bytes, "mailboxes": len(self.mailboxes), "restored_mailbox": f"{u}@{d}",
                  "churn": ch, "limits": limits, "results": results}
        report["goals"] = self.goals(report)
        self.print_table(report)
        if self.args.json:
            json.dump(report, open(self.args.json, "w"), indent=1)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            undo_churn(self.work)
        return report

    @staticmethod
    def goals(r):
        """The issue's goals as measured ratios (reduit / other); None when a tool is missing."""
        res = r["results"]
        red = res.get("reduit", {})
        def ratio(scen, tool, key="wall"):
            try:
                return red[scen][key] / res[tool][scen][key]
            except (KeyError, ZeroDivisionError):
                return None
        g = {
            "first backup wall / restic (goal <= 0.5)": ratio("first", "restic"),
            "first backup wall / borg (goal <= 0.33)": ratio("first", "borg"),
            "first backup wall / duplicity (goal <= 0.2)": ratio("first", "duplicity"),
            "vault after first / restic (goal <= 0.8)": ratio("first", "restic", "vault"),
            "vault after first / borg (goal <= 0.8)": ratio("first", "borg", "vault"),
            "no-change wall / stat walk (goal <= 2)": (red["nochange"]["wall"] / r["limits"]["stat_walk"]) if red else None,
            "no-change wall / restic (goal <= 0.5)": ratio("nochange", "restic"),
            "churn bytes sent / new mail zstd-3 (goal <= 1.2)":
                (red["churn"]["sent"] / r["churn"]["new_bytes_zstd3"]) if red else None,
            "restore one mailbox wall / restic (goal <= 0.5)": ratio("restore-one", "restic"),
        }
        return g

    @staticmethod
    def print_table(r):
        res = r["results"]
        print(f"\n{r['messages']} messages, {r['source_bytes']/2**20:.0f} MiB, {r['mailboxes']} mailboxes; "
              f"limits: stat walk {r['limits']['stat_walk']:.2f} s, tar|zstd -3 {r['limits']['tar_zstd']:.2f} s")
        hdr = f"{'scenario':12} {'tool':10} {'wall s':>8} {'cpu s':>8} {'RSS MiB':>8} {'sent MiB':>9} {'recv MiB':>9} {'vault MiB':>9} {'reduit/tool':>11}"
        print(hdr)
        for scen in ("first", "nochange", "churn", "restore-one", "restore-all"):
            base = res.get("reduit", {}).get(scen)
            for tool, v in res.items():
                m = v.get(scen)
                if not m:
                    continue
                ratio = f"{base['wall']/m['wall']:.2f}" if base and m["wall"] > 0 else "-"
                print(f"{scen:12} {tool:10} {m['wall']:8.2f} {m['cpu']:8.2f} {m['rss_kib']/1024:8.1f} "
                      f"{m['sent']/2**20:9.1f} {m['received']/2**20:9.1f} {m['vault']/2**20:9.1f} {ratio:>11}")
        for scen in ("first", "restore-one"):
            walls = {tool: v[scen]["rounds"] for tool, v in res.items() if len(v.get(scen, {}).get("rounds", [])) > 1}
            if walls:
                print(f"{scen} rounds (wall s, in order; the median is above): " +
                      "; ".join(f"{tool} " + ", ".join(f"{w:.2f}" for w in ws) for tool, ws in walls.items()))
        print(f"churn: {r['churn']['new']} new messages ({r['churn']['new_bytes']/2**20:.1f} MiB, "
              f"{r['churn']['new_bytes_zstd3']/2**20:.1f} MiB zstd-3), {r['churn']['flag_changes']} flag changes, "
              f"{r['churn']['deleted']} deletions")
        for k, v in Bench.goals(r).items():
            print(f"  {k}: {'-' if v is None else f'{v:.2f}'}")


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--large", action="store_true", help="the 1,000,000-message small-file set")
    p.add_argument("--mailboxes", type=int, default=50)
    p.add_argument("--tools", default="reduit,restic,borg,duplicity,rsync")
    p.add_argument("--workdir", help="reuse/keep data here (default: a new dir under /var/tmp)")
    p.add_argument("--rounds", type=int,
                   help="rounds of the first backup and of the one-mailbox restore, tools alternated; "
                        "the median round is reported (default 3; 1 with --large)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--json", help="write the report as JSON to this file")
    a = p.parse_args()
    if a.rounds is None:
        a.rounds = 1 if a.large else 3
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    return a


if __name__ == "__main__":
    Bench(parse()).main()
