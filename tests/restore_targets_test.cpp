// Restore targets of the IMAP-exact issue: restore into a live mailbox (judged by
// Dovecot's doveadm), single messages, exports read back by Python's mailbox
// module, and reduit find. Real binary, real gpg keys, real doveadm and python3.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "support/harness.hpp"
#include "support/site.hpp"
#include "vault/hash.hpp"
#include "vault/repository.hpp"

namespace fs = std::filesystem;
using reduit::test::read_file;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;
using reduit::test::write_file;

namespace {

std::string sha_hex(const std::string& s) {
  return reduit::to_hex(reduit::sha256(s));
}

// Reads exports back with Python's mailbox module and prints, per file, the SHA-256
// of every message. mailbox.mbox hands out the bytes between From_ lines as they
// are (it does not undo any quoting: it reads mboxo and mboxrd alike), so the
// script undoes the mboxrd quoting itself (one '>' off every line matching
// ^>+From ) before hashing; .eml files are parsed by mailbox.Message and hashed.
const char* kPythonReader = R"py(
import hashlib, json, mailbox, os, re, sys
out = {"mbox": {}, "eml": {}, "from_lines": {}, "message_ids": {}}
unquote = re.compile(rb"^>(>*From )", re.M)
for path in sys.argv[1:]:
    if path.endswith(".mbox") or os.path.isfile(path) and not path.endswith(".eml"):
        box = mailbox.mbox(path, create=False)
        hs = []
        for key in box.keys():
            raw = box.get_bytes(key)
            hs.append(hashlib.sha256(unquote.sub(rb"\1", raw)).hexdigest())
            msg = box.get_message(key)
            out["from_lines"].setdefault(path, []).append(msg.get_from())
            out["message_ids"].setdefault(path, []).append(msg["Message-ID"])
        out["mbox"][path] = hs
    else:
        for root, dirs, files in os.walk(path):
            for f in sorted(files):
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    data = fh.read()
                with open(p, "rb") as fh:
                    msg = mailbox.Message(fh)
                out["eml"].setdefault(os.path.relpath(p, path), hashlib.sha256(data).hexdigest())
                out["message_ids"].setdefault(path, []).append(msg["Message-ID"])
print(json.dumps(out))
)py";

nlohmann::json python_read(const std::vector<std::string>& paths) {
  TempDir d;
  write_file(d / "read.py", kPythonReader);
  std::vector<std::string> argv{"/usr/bin/python3", d / "read.py"};
  argv.insert(argv.end(), paths.begin(), paths.end());
  RunResult r = reduit::test::run_command(argv);
  EXPECT_EQ(r.status, 0) << r.err;
  return r.json();
}

void set_mtime(const std::string& p, std::int64_t sec) {
  timespec t[2] = {{sec, 0}, {sec, 0}};
  utimensat(AT_FDCWD, p.c_str(), t, 0);
}

// A Maildir++ mailbox of tricky messages, by hand.
struct Tricky {
  std::string root;                          // the mailbox
  std::map<std::string, std::string> files;  // path below root → bytes
};

Tricky make_tricky(const std::string& mail) {
  Tricky t;
  t.root = mail + "/example.ch/alice";
  for (const std::string f : {"", "/.Archive", "/.Odd"}) {
    for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(t.root + f + "/" + d);
  }
  write_file(t.root + "/.Archive/maildirfolder", "");
  write_file(t.root + "/.Odd/maildirfolder", "");
  t.files["cur/1700000001.M1P1.mx,S=0:2,S"] =
      "Return-Path: <bounce+alice@lists.example.org>\nFrom: List <list@example.org>\nTo: alice@example.ch\n"
      "Subject: From lines\nMessage-ID: <from-lines@example.org>\n\n"
      "From here on, quoting matters.\n>From one level\n>>From two levels\nFrom\nFromage\n >From not at "
      "start\n"
      "From the last line\n";
  t.files["cur/1700000002.M2P1.mx:2,RS"] =
      "From: Bob <bob@example.ch>\r\nTo: alice@example.ch\r\nSubject: CRLF\r\nMessage-ID: "
      "<crlf@example.ch>\r\n\r\n"
      "Line one\r\nFrom a CRLF line\r\n\r\n";
  t.files["new/1700000003.M3P1.mx"] =
      "Return-Path: <>\nFrom: MAILER-DAEMON@example.ch\nSubject: bounce\nMessage-ID: <bounce@example.ch>\n\n"
      "ends with blank lines\n\n\n";
  t.files[".Archive/cur/1600000000.M4P1.mx:2,S"] =
      "From: Carol <carol@example.ch>\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\nMessage-ID: "
      "<archive@example.ch>\n"
      "Date: Sun, 13 Sep 2020 12:26:40 +0000\n\nold mail\n";
  t.files[".Odd/cur/1700000005.M5P1.mx:2,"] =
      "Subject: no newline\nMessage-ID: <odd@example.ch>\n\nno final newline";
  for (const auto& [p, b] : t.files) {
    write_file(t.root + "/" + p, b);
    set_mtime(t.root + "/" + p, std::stoll(p.substr(p.rfind('/') + 1, 10)));  // INTERNALDATE = name's epoch
  }
  return t;
}

}  // namespace

// Must show 6: Python's mailbox module reads the exported mbox and EML files; each
// message's bytes hash equal to the original.
TEST(RestoreTargets, ExportsReadByPythonMailboxHashEqualToTheOriginals) {
  TempDir mail;
  Tricky t = make_tricky(mail.path());
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  const std::string home = site.keys().archive_home->path();
  auto exp = [&](std::vector<std::string> args) {
    std::vector<std::string> a{"export", "--mailbox", "alice@example.ch", "--gnupghome", home};
    a.insert(a.end(), args.begin(), args.end());
    return site.reduit(a);
  };

  // One folder as one mbox file.
  RunResult r = exp({"--folder", "INBOX", "--format", "mbox", "--to", site.path("inbox.mbox")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["messages"], 3);
  // The whole mailbox as a directory of mbox files, and as .eml files.
  r = exp({"--format", "mbox", "--to", site.path("all-mbox")});
  ASSERT_EQ(r.status, 1) << r.err;  // the .Odd message has no final newline: warned
  EXPECT_EQ(r.json()["warnings"],
            nlohmann::json::array({"1 message(s) did not end with a newline; mbox added one (the eml format "
                                   "keeps every byte)"}));
  EXPECT_EQ(r.json()["files"], nlohmann::json::array({"INBOX.mbox", "Archive.mbox", "Odd.mbox"}));
  r = exp({"--format", "eml", "--to", site.path("all-eml")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["messages"], 5);

  nlohmann::json py = python_read({site.path("inbox.mbox"), site.path("all-mbox/INBOX.mbox"),
                                   site.path("all-mbox/Archive.mbox"), site.path("all-eml")});
  std::multiset<std::string> inbox, archive, all;
  for (const auto& [p, b] : t.files) {
    all.insert(sha_hex(b));
    if (p[0] != '.') inbox.insert(sha_hex(b));
    if (p.rfind(".Archive/", 0) == 0) archive.insert(sha_hex(b));
  }
  auto as_set = [](const nlohmann::json& a) {
    std::multiset<std::string> s;
    for (const auto& h : a) s.insert(h.get<std::string>());
    return s;
  };
  EXPECT_EQ(as_set(py["mbox"][site.path("inbox.mbox")]), inbox);
  EXPECT_EQ(as_set(py["mbox"][site.path("all-mbox/INBOX.mbox")]), inbox);
  EXPECT_EQ(as_set(py["mbox"][site.path("all-mbox/Archive.mbox")]), archive);
  std::multiset<std::string> eml;
  for (const auto& [name, h] : py["eml"].items()) eml.insert(h.get<std::string>());
  EXPECT_EQ(eml, all);
  // One .eml per message, in a directory per folder, named by the unique name.
  EXPECT_TRUE(py["eml"].contains("INBOX/1700000001.M1P1.mx,S=0.eml")) << py["eml"].dump();
  EXPECT_TRUE(py["eml"].contains("Archive/1600000000.M4P1.mx.eml")) << py["eml"].dump();
  // From_ lines: envelope sender from Return-Path (MAILER-DAEMON for <> or none),
  // date = INTERNALDATE (the file's mtime), asctime in UTC.
  std::multiset<std::string> from_lines;
  for (const auto& f : py["from_lines"][site.path("inbox.mbox")]) from_lines.insert(f.get<std::string>());
  EXPECT_EQ(from_lines, (std::multiset<std::string>{"bounce+alice@lists.example.org Tue Nov 14 22:13:21 2023",
                                                    "MAILER-DAEMON Tue Nov 14 22:13:22 2023",
                                                    "MAILER-DAEMON Tue Nov 14 22:13:23 2023"}));
  // The quoting itself, byte for byte (mboxrd: every ^>*From  line gets one '>').
  std::string mbox = read_file(site.path("inbox.mbox"));
  EXPECT_NE(
      mbox.find("\n\n>From here on, quoting matters.\n>>From one level\n>>>From two levels\nFrom\nFromage\n"
                " >From not at start\n>From the last line\n\n"),
      std::string::npos)
      << mbox;
  EXPECT_NE(mbox.find("Line one\r\n>From a CRLF line\r\n\r\n\n"), std::string::npos) << mbox;
}

TEST(RestoreTargets, ExportRefusesExistingTargetsAndWritesNothingOutside) {
  TempDir mail;
  make_tricky(mail.path());
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  const std::string home = site.keys().archive_home->path();
  write_file(site.path("taken.mbox"), "keep me");
  RunResult r = site.reduit({"export", "--mailbox", "alice@example.ch", "--folder", "INBOX", "--format",
                             "mbox", "--to", site.path("taken.mbox"), "--gnupghome", home});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("exists; give a new file name"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(site.path("taken.mbox")), "keep me");
  write_file(site.path("full/other"), "x");
  r = site.reduit({"export", "--mailbox", "alice@example.ch", "--format", "eml", "--to", site.path("full"),
                   "--gnupghome", home});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(std::distance(fs::directory_iterator(site.path("full")), fs::directory_iterator()), 1);
  // An unknown folder: exit 8, nothing created.
  r = site.reduit({"export", "--mailbox", "alice@example.ch", "--folder", ".Nope", "--format", "eml", "--to",
                   site.path("nope"), "--gnupghome", home});
  EXPECT_EQ(r.status, 8) << r.err;
  EXPECT_FALSE(fs::exists(site.path("nope")));
  // Without an archive key: exit 5 and the target is not left behind.
  r = site.reduit({"export", "--mailbox", "alice@example.ch", "--folder", "INBOX", "--format", "mbox", "--to",
                   site.path("nokey.mbox")});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_FALSE(fs::exists(site.path("nokey.mbox")));
}

namespace {

// Dovecot's doveadm on a Maildir, without a daemon: as nobody (doveadm refuses
// uid 0), with the Maildir's own control files (so UIDs come from its
// dovecot-uidlist) and the Maildir++ quota. The same prefix is what reduit runs.
struct Dovecot {
  TempDir home;
  std::string maildir;
  std::vector<std::string> prefix() const {
    return {"/usr/sbin/runuser",
            "-u",
            "nobody",
            "--",
            "/usr/bin/env",
            "HOME=" + home.path(),
            "/usr/bin/doveadm",
            "-o",
            "mail_location=maildir:" + maildir,
            "-o",
            "mail_plugins=quota",
            "-o",
            "plugin/quota=maildir"};
  }
  std::string prefix_string() const {
    std::string s;
    for (const auto& a : prefix()) s += (s.empty() ? "" : " ") + a;
    return s;
  }
  RunResult run(const std::vector<std::string>& args, const std::string& stdin_file = "") const {
    std::vector<std::string> argv = prefix();
    argv.insert(argv.end(), args.begin(), args.end());
    if (!stdin_file.empty()) {
      // doveadm save reads the message on stdin.
      std::string cmd;
      for (const auto& a : argv) cmd += "'" + a + "' ";
      return reduit::test::run_command({"/bin/sh", "-c", cmd + "< '" + stdin_file + "'"});
    }
    return reduit::test::run_command(argv);
  }
  void save(const std::string& mailbox, const std::string& message) const {
    std::string f = home / "msg.eml";
    write_file(f, message);
    chmod(f.c_str(), 0644);
    RunResult r = run({"save", "-m", mailbox}, f);
    ASSERT_EQ(r.status, 0) << r.out << r.err;
  }
  void ok(const std::vector<std::string>& args) const {
    RunResult r = run(args);
    ASSERT_EQ(r.status, 0) << r.out << r.err;
  }
  // mailbox → uid → "message-id flags" (without \Recent, which is per session).
  std::map<std::string, std::map<int, std::string>> messages() const {
    RunResult r = run({"-f", "tab", "fetch", "mailbox uid hdr.message-id flags", "ALL"});
    EXPECT_EQ(r.status, 0) << r.err;
    std::map<std::string, std::map<int, std::string>> out;
    std::istringstream in(r.out);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::size_t s = 0;
      for (std::size_t t; (t = line.find('\t', s)) != std::string::npos; s = t + 1)
        f.push_back(line.substr(s, t - s));
      f.push_back(line.substr(s));
      if (f.size() < 4) continue;
      std::string flags = std::regex_replace(f[3], std::regex("\\\\Recent ?"), "");
      while (!flags.empty() && flags.back() == ' ') flags.pop_back();
      out[f[0]][std::stoi(f[1])] = flags.empty() ? f[2] : f[2] + " " + flags;
    }
    return out;
  }
  // mailbox → "uidvalidity uidnext"
  std::map<std::string, std::string> status() const {
    RunResult r = run({"-f", "tab", "mailbox", "status", "uidvalidity uidnext", "*"});
    EXPECT_EQ(r.status, 0) << r.err;
    std::map<std::string, std::string> out;
    std::istringstream in(r.out);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::size_t t = line.find('\t');
      if (t != std::string::npos) out[line.substr(0, t)] = line.substr(t + 1);
    }
    return out;
  }
};

std::string message(int n, const std::string& subject) {
  return "From: Bob <bob@example.ch>\nTo: alice@example.ch\nSubject: " + subject + "\nMessage-ID: <m" +
         std::to_string(n) + "@example.ch>\nDate: Thu, 1 Oct 2026 12:0" + std::to_string(n) +
         ":00 +0000\n\nbody " + std::to_string(n) + "\n";
}

}  // namespace

// Must show 4: restore one deleted message into a live mailbox that has since
// received mail and changed flags: it appears exactly once under the restore
// folder, with its keywords; no existing UID changes (checked through Dovecot).
TEST(RestoreTargets, DeletedMessageRestoredIntoLiveMailboxOnceWithKeywordsAndNoUidChanges) {
  TempDir mail;
  Dovecot dv;
  dv.maildir = mail.path() + "/example.ch/alice";
  fs::create_directories(dv.maildir);
  ASSERT_EQ(
      reduit::test::run_command({"/bin/chown", "-R", "nobody:nogroup", mail.path(), dv.home.path()}).status,
      0);
  // A mailbox Dovecot made: INBOX with three messages, Work with one, keywords
  // (INBOX's dovecot-keywords: 0 $Junk, 1 $Label1, 2 Important), subscriptions.
  for (int i = 1; i <= 3; ++i) dv.save("INBOX", message(i, "message " + std::to_string(i)));
  dv.ok({"mailbox", "create", "Work"});
  dv.save("Work", message(9, "work"));
  dv.ok({"mailbox", "subscribe", "INBOX", "Work"});
  dv.ok({"flags", "add", "$Junk", "mailbox", "INBOX", "uid", "1"});
  dv.ok({"flags", "add", "\\Seen $Label1 Important", "mailbox", "INBOX", "uid", "2"});
  ASSERT_EQ(read_file(dv.maildir + "/dovecot-keywords"), "0 $Junk\n1 $Label1\n2 Important\n");

  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();

  // Since the backup: message 2 deleted, new mail delivered, flags changed.
  auto received = [&](const std::string& mailbox, const std::string& uid) {
    RunResult r = dv.run({"-f", "flow", "fetch", "date.received", "mailbox", mailbox, "uid", uid});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
  };
  const std::string m2_received = received("INBOX", "2");
  ASSERT_NE(m2_received.find("date.received="), std::string::npos) << m2_received;
  dv.ok({"expunge", "mailbox", "INBOX", "uid", "2"});
  dv.save("INBOX", message(4, "arrived later"));
  dv.ok({"flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "1"});
  const auto before = dv.messages();
  const auto status_before = dv.status();
  ASSERT_EQ(before.at("INBOX").size(), 3u);
  ASSERT_EQ(before.at("INBOX").at(1), "<m1@example.ch> \\Answered $Junk");

  RunResult r =
      site.reduit({"restore", "--mailbox", "alice@example.ch", "--into-live", "--message-id", "m2@example.ch",
                   "--doveadm", dv.prefix_string() + " %c", "--gnupghome", site.keys().archive_home->path()});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  nlohmann::json j = r.json();
  const std::string folder = j["imap_name"];
  EXPECT_TRUE(std::regex_match(folder, std::regex("Restored-[0-9]{4}-[0-9]{2}-[0-9]{2}"))) << folder;
  EXPECT_EQ(j["messages"], 1);
  EXPECT_EQ(j["subscribed"], true);
  EXPECT_EQ(j["doveadm"].size(), 2u) << j.dump();
  EXPECT_EQ(j["live_mailbox"], dv.maildir);

  // Dovecot's view: every existing message keeps its UID and flags, every folder
  // its UIDVALIDITY and UIDNEXT; the message is back exactly once, with keywords.
  auto after = dv.messages();
  auto status_after = dv.status();
  for (const auto& [mb, uids] : before) EXPECT_EQ(after[mb], uids) << mb;
  for (const auto& [mb, st] : status_before) EXPECT_EQ(status_after[mb], st) << mb;
  ASSERT_EQ(after.size(), before.size() + 1) << "expected one new folder";
  EXPECT_EQ(after[folder], (std::map<int, std::string>{{1, "<m2@example.ch> \\Seen $Label1 Important"}}));
  EXPECT_EQ(received(folder, "1"), m2_received);  // INTERNALDATE kept
  int copies = 0;
  for (const auto& [mb, uids] : after) {
    for (const auto& [uid, v] : uids) copies += v.rfind("<m2@example.ch> ", 0) == 0;
  }
  EXPECT_EQ(copies, 1);

  // On disk: a Maildir++ folder of its own, keyword letters of its own keyword list,
  // a fresh unique name keeping S=/W=, the INTERNALDATE, the mailbox's owner.
  const std::string dir = dv.maildir + "/." + folder;
  EXPECT_TRUE(fs::exists(dir + "/maildirfolder"));
  EXPECT_EQ(read_file(dir + "/dovecot-keywords"), "0 $Label1\n1 Important\n");
  // doveadm save delivered into new/ (with info: Maildir allows it); it stays there.
  EXPECT_TRUE(fs::is_empty(dir + "/cur"));
  std::vector<fs::path> cur(fs::directory_iterator(dir + "/new"), fs::directory_iterator());
  ASSERT_EQ(cur.size(), 1u);
  std::string name = cur[0].filename();
  EXPECT_TRUE(std::regex_match(
      name, std::regex("[0-9]+\\.M[0-9]+P[0-9]+Q[0-9]+R[0-9a-f]{16}\\.[^,]+,S=[0-9]+,W=[0-9]+:2,Sab")))
      << name;
  struct stat st;
  ASSERT_EQ(stat(cur[0].c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(read_file(cur[0]), message(2, "message 2"));
  std::string subs = read_file(dv.maildir + "/subscriptions");
  EXPECT_EQ(subs, "V\t2\n\nINBOX\nWork\n" + folder + "\n");

  // A second restore of the same message gets a folder of its own (-2); a named
  // folder that exists is refused and nothing changes.
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--into-live", "--unique-name",
                   name.substr(0, name.find(':')), "--doveadm", "none", "--gnupghome",
                   site.keys().archive_home->path()});
  EXPECT_EQ(r.status, 8) << r.err;  // the fresh name is not in the snapshot
  // (doveadm failing is a warning: the mail is in place; exit 1.)
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--into-live", "--message-id",
                   "<m2@example.ch>", "--doveadm", "/bin/false %c -u %u", "--gnupghome",
                   site.keys().archive_home->path()});
  ASSERT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.json()["imap_name"], folder + "-2");
  EXPECT_EQ(r.json()["warnings"][0],
            "'/bin/false force-resync -u alice@example.ch " + folder + "-2' failed (exit 1)");
  // (no doveadm at all: a note, not a warning.)
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--into-live", "--message-id",
                   "<m2@example.ch>", "--folder-name", "Again", "--doveadm", "/nonexistent/doveadm %c",
                   "--gnupghome", site.keys().archive_home->path()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["doveadm_note"],
            "/nonexistent/doveadm not found: Dovecot picks the folder up at its next sync");
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--into-live", "--folder-name", "Work",
                   "--doveadm", "none", "--gnupghome", site.keys().archive_home->path()});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("folder .Work already exists"), std::string::npos) << r.err;
  for (const std::string bad : {"../evil", "a/b", "a.b", "INBOX", ""}) {
    r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--into-live", "--folder-name", bad,
                     "--doveadm", "none", "--gnupghome", site.keys().archive_home->path()});
    EXPECT_EQ(r.status, 2) << bad << ": " << r.out << r.err;
  }
  EXPECT_FALSE(fs::exists(mail.path() + "/example.ch/evil"));
  auto final_view = dv.messages();
  EXPECT_EQ(final_view.size(), before.size() + 3);
  EXPECT_EQ(final_view["Again"],
            (std::map<int, std::string>{{1, "<m2@example.ch> \\Seen $Label1 Important"}}));
  for (const auto& [mb, uids] : before) EXPECT_EQ(final_view[mb], uids) << mb;
}

namespace {

std::string mail_text(const std::string& from, const std::string& subject, const std::string& mid,
                      const std::string& date) {
  return "From: " + from + "\nTo: Alice <alice@example.ch>\nSubject: " + subject + "\nMessage-ID: <" + mid +
         ">\nDate: " + date + "\n\nHello.\n";
}

std::set<std::string> field_of(const nlohmann::json& results, const char* key) {
  std::set<std::string> out;
  for (const auto& r : results) out.insert(r[key].get<std::string>());
  return out;
}

}  // namespace

TEST(RestoreTargets, FindLocatesMessagesAcrossSnapshotsAndRestoreTakesOne) {
  TempDir mail;
  const std::string m = mail.path() + "/example.ch/alice";
  for (const std::string f : {"", "/.Archive"}) {
    for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + f + "/" + d);
  }
  write_file(m + "/cur/1780000001.M1P1.mx,S=1:2,S",
             mail_text("Bob <bob@example.ch>", "Quarterly REPORT", "q3@example.ch",
                       "Thu, 1 Oct 2026 09:00:00 +0200"));
  write_file(m + "/cur/1780000002.M2P1.mx:2,",
             mail_text("Carol <carol@example.org>", "Lunch?", "lunch@example.org",
                       "Fri, 2 Oct 2026 11:00:00 +0000"));
  write_file(m + "/new/1780000003.M3P1.mx",
             mail_text("=?UTF-8?Q?J=C3=BCrg?= <juerg@example.ch>",
                       "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", "gruss@example.ch", "Sat, 3 Oct 2026 08:00:00 +0000"));
  write_file(
      m + "/.Archive/cur/1600000000.M4P1.mx:2,S",
      mail_text("Bob <bob@example.ch>", "Old report", "old@example.ch", "Sun, 13 Sep 2020 12:26:40 +0000"));
  write_file(m + "/dovecot-uidlist",
             "3 V1 N4 G0\n1 :1780000001.M1P1.mx,S=1\n2 :1780000002.M2P1.mx\n3 :1780000003.M3P1.mx\n");
  write_file(m + "/dovecot.index", "index bytes");
  Site site({mail.path()}, "%d/%n");
  site.init();
  const std::string first = site.backup()["snapshot"];
  // Between the snapshots: a flag change (rename) and a deletion.
  fs::rename(m + "/cur/1780000001.M1P1.mx,S=1:2,S", m + "/cur/1780000001.M1P1.mx,S=1:2,FS");
  fs::remove(m + "/cur/1780000002.M2P1.mx:2,");
  const std::string second = site.backup()["snapshot"];
  auto find = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "find");
    return site.reduit(args);
  };

  RunResult r = find({"--message-id", "q3@example.ch"});
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = r.json();
  ASSERT_EQ(j.size(), 1u) << j.dump();
  EXPECT_EQ(j[0]["mailbox"], "alice@example.ch");
  EXPECT_EQ(j[0]["folder"], "");
  EXPECT_EQ(j[0]["unique_name"], "1780000001.M1P1.mx,S=1");
  EXPECT_EQ(j[0]["path"], "cur/1780000001.M1P1.mx,S=1:2,FS");  // as named in the newest snapshot
  EXPECT_EQ(j[0]["message_id"], "<q3@example.ch>");
  EXPECT_EQ(j[0]["time"], "2026-10-01T07:00:00Z");
  EXPECT_EQ(j[0]["from"], "Bob <bob@example.ch>");
  EXPECT_EQ(j[0]["subject"], "Quarterly REPORT");
  EXPECT_EQ(j[0]["snapshots"], nlohmann::json::array({first, second}));
  EXPECT_EQ(find({"--message-id", "<q3@example.ch>"}).json(), j);

  EXPECT_EQ(field_of(find({"--subject", "report"}).json(), "message_id"),
            (std::set<std::string>{"<q3@example.ch>", "<old@example.ch>"}));
  EXPECT_EQ(field_of(find({"--subject", "Grüße"}).json(), "message_id"),
            (std::set<std::string>{"<gruss@example.ch>"}));
  EXPECT_EQ(field_of(find({"--from", "BOB@"}).json(), "message_id"),
            (std::set<std::string>{"<q3@example.ch>", "<old@example.ch>"}));
  EXPECT_EQ(field_of(find({"--since", "2026-10-02", "--until", "2026-10-02"}).json(), "message_id"),
            (std::set<std::string>{"<lunch@example.org>"}));
  EXPECT_EQ(field_of(find({"--until", "2021-01-01T00:00"}).json(), "message_id"),
            (std::set<std::string>{"<old@example.ch>"}));
  EXPECT_EQ(field_of(find({"--folder", ".Archive"}).json(), "message_id"),
            (std::set<std::string>{"<old@example.ch>"}));
  EXPECT_EQ(find({"--folder", "INBOX"}).json().size(), 3u);
  EXPECT_EQ(find({"--snapshot", "latest"}).json().size(), 3u);  // the deleted one is only in the first
  nlohmann::json deleted = find({"--message-id", "lunch@example.org"}).json();
  ASSERT_EQ(deleted.size(), 1u);
  EXPECT_EQ(deleted[0]["snapshots"], nlohmann::json::array({first}));
  // Nothing found, an unknown mailbox, a bad date: exit 8, 8, 2.
  r = find({"--message-id", "nobody@nowhere"});
  EXPECT_EQ(r.status, 8) << r.out;
  EXPECT_NE(r.err.find("no message matches"), std::string::npos) << r.err;
  EXPECT_EQ(find({"--mailbox", "eve@example.ch"}).status, 8);
  EXPECT_EQ(find({"--since", "1 Oct"}).status, 2);
  // Text output names what restore needs.
  r = reduit::test::run_command({reduit::test::reduit_binary(), "--config", site.config(), "find",
                                 "--message-id", "lunch@example.org"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("unique name 1780000002.M2P1.mx  <lunch@example.org>  in 1 snapshot(s): " +
                       first.substr(0, 8)),
            std::string::npos)
      << r.out;

  // Restore one message into a new directory: the message (name, bytes, mtime) and
  // its folder's control files; not the index (it describes the other messages).
  const std::string home = site.keys().archive_home->path();
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--unique-name", "1780000001.M1P1.mx,S=1",
                   "--to", site.path("one"), "--gnupghome", home});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["messages"], 1);
  auto facts = reduit::test::tree_facts(site.path("one"));
  std::set<std::string> names;
  for (const auto& [p, f] : facts) names.insert(p);
  EXPECT_EQ(names, (std::set<std::string>{"cur/1780000001.M1P1.mx,S=1:2,FS", "dovecot-uidlist"}));
  auto orig = reduit::test::tree_facts(m);
  EXPECT_EQ(facts["cur/1780000001.M1P1.mx,S=1:2,FS"].sha256, orig["cur/1780000001.M1P1.mx,S=1:2,FS"].sha256);
  EXPECT_EQ(facts["cur/1780000001.M1P1.mx,S=1:2,FS"].mtime_ns,
            orig["cur/1780000001.M1P1.mx,S=1:2,FS"].mtime_ns);
  // The deleted message by Message-ID: not in the latest snapshot (exit 8), in the first.
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--message-id", "lunch@example.org", "--to",
                   site.path("two"), "--gnupghome", home});
  EXPECT_EQ(r.status, 8) << r.err;
  EXPECT_NE(
      r.err.find("no message with Message-ID <lunch@example.org> in mailbox alice@example.ch of snapshot " +
                 second.substr(0, 8)),
      std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(site.path("two")));
  r = site.reduit({"restore", "--snapshot", first.substr(0, 8), "--mailbox", "alice@example.ch",
                   "--message-id", "lunch@example.org", "--to", site.path("two"), "--gnupghome", home});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_file(site.path("two/cur/1780000002.M2P1.mx:2,")),
            mail_text("Carol <carol@example.org>", "Lunch?", "lunch@example.org",
                      "Fri, 2 Oct 2026 11:00:00 +0000"));
  // A Message-ID the catalog never saw: the headers are read from the vault; not
  // there either: exit 8, nothing written.
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--message-id", "ghost@example.ch", "--to",
                   site.path("three"), "--gnupghome", home});
  EXPECT_EQ(r.status, 8) << r.err;
  EXPECT_NE(
      r.err.find("no message with Message-ID <ghost@example.ch> in mailbox alice@example.ch of snapshot "
                 "latest (read from the vault: the catalog on this host did not know it)"),
      std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(site.path("three")));
  // A destination that is not empty: refused, untouched.
  write_file(site.path("busy/keep"), "keep");
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--unique-name", "1780000001.M1P1.mx,S=1",
                   "--to", site.path("busy"), "--gnupghome", home});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(std::distance(fs::directory_iterator(site.path("busy")), fs::directory_iterator()), 1);
  // A symbolic link to an empty directory: refused, named as a link, nothing written.
  fs::create_directories(site.path("empty"));
  fs::create_directory_symlink(site.path("empty"), site.path("link"));
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--unique-name", "1780000001.M1P1.mx,S=1",
                   "--to", site.path("link"), "--gnupghome", home});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("restore target " + site.path("link") +
                       " is a symbolic link; give the directory it points to, or a new one (restore never "
                       "writes through a link)"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(fs::is_empty(site.path("empty")));

  // A lost catalog: after `catalog rebuild`, find reads the folder trees from the
  // vault again; the header summaries are gone until the next backup (warned).
  fs::remove_all(site.path("state"));
  ASSERT_EQ(site.reduit({"catalog", "rebuild"}).status, 0);
  r = find({"--mailbox", "alice@example.ch"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("4 message(s) have no header summary"), std::string::npos) << r.err;
  EXPECT_EQ(field_of(r.json(), "unique_name"),
            (std::set<std::string>{"1780000001.M1P1.mx,S=1", "1780000002.M2P1.mx", "1780000003.M3P1.mx",
                                   "1600000000.M4P1.mx"}));
  site.backup();
  EXPECT_EQ(find({"--message-id", "q3@example.ch"}).json()[0]["snapshots"].size(), 3u);

  // A fresh host (own empty catalog, only the archive key): --message-id reads the
  // headers from the vault.
  TempDir fresh;
  std::string cfg = reduit::test::write_config(fresh.path(), site.url(), home, {}, "");
  r = reduit::test::run_command({reduit::test::reduit_binary(), "--config", cfg, "--json", "restore",
                                 "--snapshot", first.substr(0, 8), "--mailbox", "alice@example.ch",
                                 "--message-id", "lunch@example.org", "--to", fresh.path() + "/out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("does not know Message-ID <lunch@example.org>: read the headers of mailbox "
                       "alice@example.ch from the vault"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.json()["messages"], 1);
  EXPECT_TRUE(fs::exists(fresh.path() + "/out/cur/1780000002.M2P1.mx:2,"));

  // A catalog file that is not a database: the vault's headers answer too; the
  // restore cannot be written to the audit log (a warning, exit 1).
  write_file(fresh.path() + "/state/catalog.sqlite", std::string(8192, 'x'));
  r = reduit::test::run_command({reduit::test::reduit_binary(), "--config", cfg, "--json", "restore",
                                 "--snapshot", first.substr(0, 8), "--mailbox", "alice@example.ch",
                                 "--message-id", "lunch@example.org", "--to", fresh.path() + "/out2"});
  ASSERT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("reduit: note: the catalog could not be read ("), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("): read the headers of mailbox alice@example.ch from the vault"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.json()["messages"], 1);
  ASSERT_EQ(r.json()["warnings"].size(), 1u);
  EXPECT_EQ(r.json()["warnings"][0].get<std::string>().rfind("could not write the audit log (", 0), 0u);
  EXPECT_EQ(read_file(fresh.path() + "/out2/cur/1780000002.M2P1.mx:2,"),
            read_file(fresh.path() + "/out/cur/1780000002.M2P1.mx:2,"));
  // Without a mailbox to read, the error names the way out.
  r = reduit::test::run_command({reduit::test::reduit_binary(), "--config", cfg, "restore", "--all",
                                 "--message-id", "lunch@example.org", "--to", fresh.path() + "/out3"});
  EXPECT_EQ(r.status, 9) << r.err;
  EXPECT_NE(r.err.find("(--message-id is looked up in the catalog; with --mailbox the vault is read instead; "
                       "'reduit catalog rebuild' recreates the catalog)"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(fresh.path() + "/out3"));
}

// A catalog older than the vault knows a Message-ID only from another copy (here
// bob's; the same message, with other headers, reached alice in a backup the
// catalog has not seen): restore and export of alice's copy read the headers from
// the vault instead of saying it is not there.
TEST(RestoreTargets, MessageIdKnownToAnOlderCatalogOnlyFromAnotherCopyIsReadFromTheVault) {
  TempDir mail;
  for (const char* u : {"alice", "bob"}) {
    for (const char* d : {"cur", "new", "tmp"})
      fs::create_directories(mail.path() + "/example.ch/" + u + "/" + d);
  }
  write_file(mail.path() + "/example.ch/bob/cur/1780000001.M1P1.mx:2,S",
             mail_text("Carol <carol@example.org>", "Minutes", "minutes@example.org",
                       "Fri, 2 Oct 2026 11:00:00 +0000"));
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  fs::copy_file(site.path("state/catalog.sqlite"), site.path("catalog.old"));
  const std::string alices =
      "Delivered-To: alice@example.ch\n" + mail_text("Carol <carol@example.org>", "Minutes",
                                                     "minutes@example.org", "Fri, 2 Oct 2026 11:00:00 +0000");
  write_file(mail.path() + "/example.ch/alice/cur/1780000002.M2P1.mx:2,", alices);
  site.backup();
  auto use_catalog = [&](const std::string& copy) {
    fs::copy_file(site.path(copy), site.path("state/catalog.sqlite"), fs::copy_options::overwrite_existing);
  };
  fs::copy_file(site.path("state/catalog.sqlite"), site.path("catalog.new"));
  use_catalog("catalog.old");

  const std::string home = site.keys().archive_home->path();
  RunResult r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--message-id",
                             "minutes@example.org", "--to", site.path("out"), "--gnupghome", home});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(
      r.err.find("reduit: note: the catalog knows Message-ID <minutes@example.org> only from other "
                 "copies (another mailbox or snapshot): read the headers of the mailbox from the vault"),
      std::string::npos)
      << r.err;
  EXPECT_EQ(r.json()["messages"], 1);
  EXPECT_EQ(read_file(site.path("out/cur/1780000002.M2P1.mx:2,")), alices);
  r = site.reduit({"export", "--mailbox", "alice@example.ch", "--message-id", "minutes@example.org",
                   "--format", "eml", "--to", site.path("eml"), "--gnupghome", home});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["messages"], 1);
  // Alice's copy deleted in a later backup: not found, after reading the vault.
  use_catalog("catalog.new");
  fs::remove(mail.path() + "/example.ch/alice/cur/1780000002.M2P1.mx:2,");
  site.backup();
  use_catalog("catalog.old");
  r = site.reduit({"restore", "--mailbox", "alice@example.ch", "--message-id", "minutes@example.org", "--to",
                   site.path("out3"), "--gnupghome", home});
  EXPECT_EQ(r.status, 8) << r.err;
  EXPECT_NE(
      r.err.find("no message with Message-ID <minutes@example.org> in mailbox alice@example.ch of snapshot "
                 "latest (read from the vault: none of the catalog's copies of it is in this mailbox)"),
      std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(site.path("out3")));
}

// A folder and its subfolder into the live mailbox: each lands below the new
// folder, Dovecot lists and subscribes both, keywords follow their names per folder.
TEST(RestoreTargets, FolderWithSubfolderIntoLiveMailboxKeepsTheHierarchy) {
  TempDir mail;
  Dovecot dv;
  dv.maildir = mail.path() + "/example.ch/bob";
  fs::create_directories(dv.maildir);
  ASSERT_EQ(
      reduit::test::run_command({"/bin/chown", "-R", "nobody:nogroup", mail.path(), dv.home.path()}).status,
      0);
  dv.save("INBOX", message(1, "inbox"));
  dv.ok({"mailbox", "create", "Archive", "Archive.2023"});
  dv.ok({"mailbox", "subscribe", "INBOX", "Archive", "Archive.2023"});
  dv.save("Archive", message(2, "archived"));
  dv.save("Archive.2023", message(3, "archived 2023"));
  dv.save("Archive.2023", message(4, "archived 2023 too"));
  dv.ok({"flags", "add", "Project $Forwarded", "mailbox", "Archive.2023", "uid", "2"});
  dv.ok({"flags", "add", "$Forwarded", "mailbox", "Archive", "uid", "1"});
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  const auto before = dv.messages();
  const std::string subscriptions = read_file(dv.maildir + "/subscriptions");

  RunResult r = site.reduit({"restore", "--mailbox", "bob@example.ch", "--folder", ".Archive", "--into-live",
                             "--folder-name", "Back", "--doveadm", dv.prefix_string() + " %c", "--gnupghome",
                             site.keys().archive_home->path()});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  nlohmann::json j = r.json();
  EXPECT_EQ(j["folders_created"], nlohmann::json::array({".Back.Archive", ".Back.Archive.2023"}));
  EXPECT_EQ(j["messages"], 3);
  EXPECT_EQ(j["doveadm"][0], dv.prefix_string() + " force-resync Back*");
  auto after = dv.messages();
  for (const auto& [mb, uids] : before) EXPECT_EQ(after[mb], uids) << mb;
  EXPECT_EQ(after["Back.Archive"], (std::map<int, std::string>{{1, "<m2@example.ch> $Forwarded"}}));
  EXPECT_EQ(after["Back.Archive.2023"],
            (std::map<int, std::string>{{1, "<m3@example.ch>"}, {2, "<m4@example.ch> Project $Forwarded"}}));
  ASSERT_EQ(subscriptions.rfind("V\t2\n\n", 0), 0u) << subscriptions;
  EXPECT_EQ(read_file(dv.maildir + "/subscriptions"), subscriptions + "Back\tArchive\nBack\tArchive\t2023\n");
  // Dovecot's own list of subscribed folders.
  RunResult list = dv.run({"mailbox", "list", "-s"});
  std::set<std::string> subscribed;
  std::istringstream lines(list.out);
  for (std::string l; std::getline(lines, l);) subscribed.insert(l);
  EXPECT_EQ(subscribed,
            (std::set<std::string>{"INBOX", "Archive", "Archive.2023", "Back.Archive", "Back.Archive.2023"}));

  // Hostile or wrong targets: a live mailbox that is not there, or not a Maildir.
  for (const std::string& bad : {mail.path() + "/nope", mail.path() + "/example.ch"}) {
    r = site.reduit({"restore", "--mailbox", "bob@example.ch", "--into-live", "--to", bad, "--doveadm",
                     "none", "--gnupghome", site.keys().archive_home->path()});
    EXPECT_EQ(r.status, 7) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("is not a Maildir"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(mail.path() + "/nope"));
}

// A damaged pack found half-way: the live mailbox and the export target are left
// exactly as they were (no new folder, nothing in tmp/, no partial file).
TEST(RestoreTargets, FailedLiveRestoreAndExportLeaveNothingBehind) {
  TempDir mail;
  Tricky t = make_tricky(mail.path());
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  auto before = reduit::test::tree_facts(t.root);
  // Damage the data pack only: trees still load, so the restore gets as far as
  // writing messages before it finds the damage.
  reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().archive_home->path());
  repo.load_config();
  int damaged = 0;
  for (const auto& p : repo.load_indexes()) {
    if (p.kind != reduit::PackKind::kData) continue;
    std::string path = site.vault_dir() + "/" + reduit::pack_name(p.id);
    std::string bytes = read_file(path);
    bytes[bytes.size() / 2] ^= 0x01;
    fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
    write_file(path, bytes);
    ++damaged;
  }
  ASSERT_EQ(damaged, 1);
  const std::string home = site.keys().archive_home->path();
  RunResult r = site.reduit(
      {"restore", "--mailbox", "alice@example.ch", "--into-live", "--doveadm", "none", "--gnupghome", home});
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_EQ(reduit::test::tree_facts(t.root).size(), before.size());
  std::vector<std::string> left;
  for (const auto& e : fs::recursive_directory_iterator(t.root)) left.push_back(e.path());
  for (const auto& p : left) {
    EXPECT_EQ(p.find("Restored"), std::string::npos) << p;
    EXPECT_EQ(p.find(".reduit-restore"), std::string::npos) << p;
  }
  r = site.reduit({"export", "--mailbox", "alice@example.ch", "--format", "eml", "--to", site.path("out"),
                   "--gnupghome", home});
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_FALSE(fs::exists(site.path("out")));
  r = site.reduit({"export", "--mailbox", "alice@example.ch", "--folder", "INBOX", "--format", "mbox", "--to",
                   site.path("out.mbox"), "--gnupghome", home});
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_FALSE(fs::exists(site.path("out.mbox")));
}
