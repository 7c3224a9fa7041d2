// IMAP-exact backups and restores (issue 5), judged by Dovecot's own doveadm:
// UIDVALIDITY, UIDNEXT, UIDs, flags, keywords, INTERNALDATE, sizes and
// subscriptions survive backup → wipe → restore; hard links, owners, the
// uidlist/message cut, index files and mail_crypt detection.
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "agent/scan.hpp"
#include "support/harness.hpp"
#include "support/site.hpp"

namespace fs = std::filesystem;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;

namespace {

// doveadm on a Maildir as user nobody (doveadm refuses uid 0; PLATFORM.md). The
// index lives in memory; control files (dovecot-uidlist, dovecot-keywords) are the
// Maildir's own, so UIDs are judged from what was restored.
struct Doveadm {
  std::string home, maildir;
  RunResult run(std::vector<std::string> args, const std::string& stdin_file = "") const {
    std::vector<std::string> argv{"/usr/sbin/runuser",
                                  "-u",
                                  "nobody",
                                  "--",
                                  "/usr/bin/env",
                                  "HOME=" + home,
                                  "/usr/bin/doveadm",
                                  "-o",
                                  "mail_location=maildir:" + maildir + ":INDEX=MEMORY",
                                  "-o",
                                  "mail_uid=nobody",
                                  "-o",
                                  "mail_gid=nogroup"};
    argv.insert(argv.end(), args.begin(), args.end());
    if (stdin_file.empty()) return reduit::test::run_command(argv);
    std::string cmd;
    for (const auto& a : argv) cmd += "'" + a + "' ";
    return reduit::test::run_command({"/bin/sh", "-c", cmd + "< '" + stdin_file + "'"});
  }
  // What an IMAP client sees: per mailbox UIDVALIDITY/UIDNEXT/count, every
  // message's UID, flags (without \Recent), INTERNALDATE and size, and the
  // subscribed folders.
  std::string imap_view() const {
    std::string out;
    RunResult st = run({"-f", "tab", "mailbox", "status", "uidvalidity uidnext messages", "*"});
    EXPECT_EQ(st.status, 0) << st.err;
    out += st.out;
    RunResult f = run({"-f", "tab", "fetch", "mailbox uid flags date.received size.physical hdr.message-id",
                       "mailbox", "*", "ALL"});
    EXPECT_EQ(f.status, 0) << f.err;
    std::string fetched = f.out;
    for (std::size_t p; (p = fetched.find(" \\Recent")) != std::string::npos;) fetched.erase(p, 8);
    for (std::size_t p; (p = fetched.find("\\Recent")) != std::string::npos;) fetched.erase(p, 7);
    out += fetched;
    RunResult s = run({"mailbox", "list", "-s"});
    EXPECT_EQ(s.status, 0) << s.err;
    out += "subscribed:\n" + s.out;
    return out;
  }
};

std::vector<std::string> corpus_messages(std::size_t n) {
  std::vector<std::string> out;
  std::string corpus = reduit::test::corpus_dir();
  for (const auto& e : fs::directory_iterator(corpus + "/maildir/imap2json-dovecot/cur")) {
    out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  out.resize(std::min(n, out.size()));
  return out;
}

void chown_tree(const std::string& root, uid_t u, gid_t g) {
  ASSERT_EQ(lchown(root.c_str(), u, g), 0);
  for (const auto& e : fs::recursive_directory_iterator(root)) ASSERT_EQ(lchown(e.path().c_str(), u, g), 0);
}

struct stat stat_of(const std::string& p) {
  struct stat st {};
  EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
  return st;
}

// Every message file below a Maildir (path relative to it) → inode.
std::map<std::string, ino_t> message_inodes(const std::string& root) {
  std::map<std::string, ino_t> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    std::string parent = e.path().parent_path().filename();
    if (e.is_regular_file() && (parent == "cur" || parent == "new")) {
      out[fs::relative(e.path(), root).string()] = stat_of(e.path().string()).st_ino;
    }
  }
  return out;
}

bool skip_without_dovecot() {
  return !fs::exists("/usr/bin/doveadm") || reduit::test::corpus_dir().empty() || geteuid() != 0;
}

}  // namespace

// Must-show 1 and 5 (links): a mailbox Dovecot made — folders, flags, keywords,
// subscriptions, a hard-linked IMAP COPY — comes back with the same IMAP answers.
TEST(ImapExact, DovecotSeesTheSameMailboxAfterBackupWipeRestore) {
  if (skip_without_dovecot()) GTEST_SKIP() << "needs root, doveadm (dovecot-core) and the shared corpus";
  TempDir t;
  const std::string home = t.path() + "/home", maildir = t.path() + "/alice";
  fs::create_directories(home);
  fs::create_directories(maildir);
  chown_tree(t.path(), 65534, 65534);
  Doveadm d{home, maildir};
  for (const std::string& m : corpus_messages(4)) ASSERT_EQ(d.run({"save", "-m", "INBOX"}, m).status, 0);
  ASSERT_EQ(d.run({"mailbox", "create", "-s", "Archive"}).status, 0);
  ASSERT_EQ(d.run({"mailbox", "create", "Lists"}).status, 0);
  ASSERT_EQ(d.run({"flags", "add", "\\Seen $Label1 Work", "mailbox", "INBOX", "uid", "2"}).status, 0);
  ASSERT_EQ(d.run({"flags", "add", "\\Answered \\Flagged", "mailbox", "INBOX", "uid", "3"}).status, 0);
  // IMAP COPY with maildir_copy_with_hardlinks (Dovecot's default): one inode, two names.
  ASSERT_EQ(d.run({"copy", "Archive", "mailbox", "INBOX", "uid", "2"}).status, 0);
  ASSERT_EQ(d.run({"expunge", "mailbox", "INBOX", "uid", "4"}).status, 0);
  const std::string before = d.imap_view();
  ASSERT_NE(before.find("Archive\t1\t2\t"), std::string::npos) << before;
  ASSERT_NE(before.find("$Label1 Work"), std::string::npos) << before;
  std::map<std::string, ino_t> inodes = message_inodes(maildir);
  ASSERT_EQ(inodes.size(), 4u);
  std::set<ino_t> distinct;
  for (const auto& [p, i] : inodes) distinct.insert(i);
  ASSERT_EQ(distinct.size(), 3u) << "doveadm copy made no hard link";

  // The bytes a backup must store: every distinct file content once (the linked
  // message's two names are one content).
  std::set<std::string> contents;
  std::uint64_t distinct_bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(maildir)) {
    if (!e.is_regular_file() || e.path().parent_path().filename() == "tmp") continue;
    if (contents.insert(reduit::test::read_file(e.path().string())).second) distinct_bytes += e.file_size();
  }
  Site site({maildir}, ".");
  site.init();
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["messages"], 4);
  EXPECT_EQ(b["content_bytes_new"].get<std::uint64_t>(), distinct_bytes);

  fs::remove_all(maildir);
  RunResult r = site.restore("alice", maildir);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["hard_links"], 1);
  EXPECT_EQ(r.json()["messages"], 4);
  // Owners kept (restored as root): Dovecot's user can use the mailbox again.
  for (const auto& e : fs::recursive_directory_iterator(maildir)) {
    EXPECT_EQ(stat_of(e.path().string()).st_uid, 65534u) << e.path();
  }
  EXPECT_EQ(d.imap_view(), before);
  // The link is a link again.
  std::map<std::string, ino_t> after = message_inodes(maildir);
  ASSERT_EQ(after.size(), 4u);
  std::set<ino_t> distinct_after;
  for (const auto& [p, i] : after) distinct_after.insert(i);
  EXPECT_EQ(distinct_after.size(), 3u);
}

// Restore as another owner (a new host's vmail user) and as the restoring user.
TEST(ImapExact, OwnerIsKeptOrMapped) {
  if (geteuid() != 0) GTEST_SKIP() << "changing owners needs root";
  TempDir mail;
  const std::string m = mail.path() + "/example.ch/bob";
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
  reduit::test::write_file(m + "/cur/1700000000.M1P1.mx:2,S", "Subject: a\n\nA\n");
  reduit::test::write_file(m + "/dovecot-uidlist", "3 V1 N2\n1 :1700000000.M1P1.mx\n");
  chown_tree(mail.path() + "/example.ch", 5000, 5001);
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  TempDir out;
  RunResult keep = site.reduit({"restore", "--mailbox", "bob@example.ch", "--to", out.path() + "/keep",
                                "--gnupghome", site.keys().archive_home->path()});
  ASSERT_EQ(keep.status, 0) << keep.err;
  for (const char* p : {"", "/cur", "/cur/1700000000.M1P1.mx:2,S", "/dovecot-uidlist"}) {
    struct stat st = stat_of(out.path() + "/keep" + p);
    EXPECT_EQ(st.st_uid, 5000u) << p;
    EXPECT_EQ(st.st_gid, 5001u) << p;
  }
  RunResult mapped = site.reduit({"restore", "--mailbox", "bob@example.ch", "--to", out.path() + "/mapped",
                                  "--owner", "8:12", "--gnupghome", site.keys().archive_home->path()});
  ASSERT_EQ(mapped.status, 0) << mapped.err;
  for (const char* p : {"", "/cur", "/new", "/cur/1700000000.M1P1.mx:2,S", "/dovecot-uidlist"}) {
    struct stat st = stat_of(out.path() + "/mapped" + p);
    EXPECT_EQ(st.st_uid, 8u) << p;
    EXPECT_EQ(st.st_gid, 12u) << p;
  }
  RunResult none = site.reduit({"restore", "--mailbox", "bob@example.ch", "--to", out.path() + "/none",
                                "--owner", "none", "--gnupghome", site.keys().archive_home->path()});
  ASSERT_EQ(none.status, 0) << none.err;
  EXPECT_EQ(stat_of(out.path() + "/none/cur/1700000000.M1P1.mx:2,S").st_uid, 0u);
  RunResult bad =
      site.reduit({"restore", "--mailbox", "bob@example.ch", "--to", out.path() + "/bad", "--owner",
                   "no-such-user-here:x", "--gnupghome", site.keys().archive_home->path()});
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_NE(bad.err.find("no user 'no-such-user-here'"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(out.path() + "/bad"));
}

// The uidlist and the messages are one cut: while Dovecot holds its uidlist lock
// (a save between renaming into the folder and listing it), the folder is scanned
// again; a lock that never goes away ends in a warning after five scans.
TEST(ImapExact, FolderIsScannedAgainWhileTheUidlistIsLocked) {
  TempDir mail;
  const std::string m = mail.path() + "/example.ch/carol";
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
  reduit::test::write_file(m + "/cur/1700000000.M1P1.mx:2,S", "Subject: a\n\nA\n");
  reduit::test::write_file(m + "/dovecot-uidlist", "3 V1 N2\n1 :1700000000.M1P1.mx\n");
  reduit::test::write_file(m + "/dovecot-uidlist.lock", "");
  Site site({mail.path()}, "%d/%n");
  site.init();
  RunResult locked = site.reduit({"backup"});
  EXPECT_EQ(locked.status, 1) << locked.err;  // done, with a warning
  EXPECT_EQ(locked.json()["folder_rescans"], 4);
  EXPECT_EQ(locked.json()["messages"], 1);
  EXPECT_NE(locked.json()["warnings"][0].get<std::string>().find("kept changing during 5 scans"),
            std::string::npos);
  fs::remove(m + "/dovecot-uidlist.lock");
  reduit::test::write_file(m + "/new/1700000001.M2P1.mx", "Subject: b\n\nB\n");
  RunResult clean = site.reduit({"backup"});
  EXPECT_EQ(clean.status, 0) << clean.err;
  EXPECT_EQ(clean.json()["folder_rescans"], 0);
  EXPECT_EQ(clean.json()["messages"], 2);
}

// Must-show 2: flags renamed and messages moved new/ → cur/ at a high rate while
// Dovecot delivers: the backup succeeds, every message is in it exactly once, and
// the restored uidlist names exactly the restored messages.
TEST(ImapExact, ChurnAndDeliveriesDuringTheBackupKeepUidlistAndMessagesOneCut) {
  if (skip_without_dovecot()) GTEST_SKIP() << "needs root, doveadm (dovecot-core) and the shared corpus";
  TempDir t;
  const std::string home = t.path() + "/home", maildir = t.path() + "/dave";
  fs::create_directories(home);
  fs::create_directories(maildir);
  chown_tree(t.path(), 65534, 65534);
  Doveadm d{home, maildir};
  std::vector<std::string> msgs = corpus_messages(5);
  // 400 delivered messages (written as a delivery agent does, then listed by
  // Dovecot), so a scan takes long enough for deliveries to land in it.
  for (const char* sub : {"/cur", "/new", "/tmp"}) {
    fs::create_directories(maildir + sub);
    ASSERT_EQ(lchown((maildir + sub).c_str(), 65534, 65534), 0);
  }
  for (int i = 0; i < 400; ++i) {
    std::string name = "/new/1700000000.M" + std::to_string(i) + "P1.mx";
    fs::copy_file(msgs[i % msgs.size()], maildir + name);
    ASSERT_EQ(lchown((maildir + name).c_str(), 65534, 65534), 0);
  }
  ASSERT_EQ(d.run({"mailbox", "status", "messages", "INBOX"}).status, 0);
  Site site({maildir}, ".");
  site.init();
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    // Flag renames in cur/ and new/ → cur/ moves, as a client does.
    unsigned n = 0;
    while (!stop) {
      for (const char* sub : {"new", "cur"}) {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(maildir + "/" + sub, ec)) {
          std::string name = e.path().filename();
          std::string uname = reduit::maildir_unique_name(name);
          std::string to = maildir + "/cur/" + uname + ((++n % 2) ? ":2,S" : ":2,FS");
          fs::rename(e.path(), to, ec);
        }
      }
    }
  });
  std::atomic<int> delivered{0};
  std::thread deliver([&] {
    while (!stop) {
      if (d.run({"save", "-m", "INBOX"}, msgs[delivered % msgs.size()]).status == 0) ++delivered;
    }
  });
  for (int round = 0; round < 3; ++round) {
    fs::remove_all(site.path("state"));  // every file read again, racing the renames
    RunResult r = site.reduit({"backup"});
    // Exit 1 only for the notice that the lost catalog was rebuilt from the vault.
    ASSERT_LE(r.status, 1) << r.err;
    for (const auto& w : r.json()["warnings"]) {
      EXPECT_NE(w.get<std::string>().find("rebuilt its pack index"), std::string::npos) << w;
    }
  }
  stop = true;
  deliver.join();
  churn.join();
  EXPECT_GT(delivered, 0);
  TempDir out;
  RunResult r = site.restore("dave", out.path() + "/dave");
  ASSERT_EQ(r.status, 0) << r.err;
  std::multiset<std::string> restored;
  for (const auto& e : fs::recursive_directory_iterator(out.path() + "/dave")) {
    std::string parent = e.path().parent_path().filename();
    if (e.is_regular_file() && (parent == "cur" || parent == "new"))
      restored.insert(reduit::maildir_unique_name(e.path().filename()));
  }
  std::set<std::string> unique(restored.begin(), restored.end());
  EXPECT_EQ(unique.size(), restored.size()) << "a message is in the snapshot twice";
  std::set<std::string> listed;
  std::ifstream uidlist(out.path() + "/dave/dovecot-uidlist");
  std::string line;
  std::getline(uidlist, line);  // header
  while (std::getline(uidlist, line)) {
    std::string name = line.substr(line.find(':') + 1);
    listed.insert(reduit::maildir_unique_name(name));
  }
  std::vector<std::string> only_listed, only_stored;
  std::set_difference(listed.begin(), listed.end(), unique.begin(), unique.end(),
                      std::back_inserter(only_listed));
  std::set_difference(unique.begin(), unique.end(), listed.begin(), listed.end(),
                      std::back_inserter(only_stored));
  // No restored message is missing from its uidlist (none gets a new UID)...
  EXPECT_EQ(only_stored, std::vector<std::string>{}) << "in the snapshot, not in the uidlist";
  // ...and the uidlist names nothing else but deliveries Dovecot had listed
  // without their file in new/ or cur/ at the cut (they are in the mailbox now; on
  // restore Dovecot forgets a listed name it cannot find, as for an expunge).
  std::set<std::string> live;
  for (const auto& e : fs::recursive_directory_iterator(maildir)) {
    std::string parent = e.path().parent_path().filename();
    if (e.is_regular_file() && (parent == "cur" || parent == "new"))
      live.insert(reduit::maildir_unique_name(e.path().filename()));
  }
  for (const std::string& n : only_listed) EXPECT_EQ(live.count(n), 1u) << n;
  EXPECT_GE(unique.size(), 400u);
}

// Dovecot's index files: left out by default (Dovecot rebuilds them), or backed up
// with their folder when dovecot_index = true.
TEST(ImapExact, IndexFilesAreLeftOutUnlessAskedFor) {
  TempDir mail;
  const std::string m = mail.path() + "/example.ch/erin";
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
  reduit::test::write_file(m + "/cur/1700000000.M1P1.mx:2,S", "Subject: a\n\nA\n");
  for (const char* f :
       {"dovecot.index", "dovecot.index.log", "dovecot.index.cache", "dovecot.list.index.log"})
    reduit::test::write_file(m + "/" + f, std::string("index ") + f);
  reduit::test::write_file(m + "/dovecot-uidlist", "3 V1 N2\n1 :1700000000.M1P1.mx\n");
  for (bool with_index : {false, true}) {
    Site site({mail.path()}, "%d/%n", "", "", "", with_index ? "dovecot_index = true" : "");
    site.init();
    nlohmann::json b = site.backup();
    EXPECT_EQ(b["files"], with_index ? 6 : 2);
    TempDir out;
    ASSERT_EQ(site.restore("erin@example.ch", out.path() + "/r").status, 0);
    EXPECT_EQ(fs::exists(out.path() + "/r/dovecot.index.cache"), with_index);
    EXPECT_EQ(fs::exists(out.path() + "/r/dovecot.list.index.log"), with_index);
    EXPECT_TRUE(fs::exists(out.path() + "/r/dovecot-uidlist"));
  }
}

// Mailboxes encrypted at rest by Dovecot's mail_crypt: every run warns until the
// key directory is in the backup set; then the keys are in the snapshot.
TEST(ImapExact, MailCryptWithoutKeysWarnsEveryRun) {
  TempDir mail, keys;
  const std::string m = mail.path() + "/example.ch/frank";
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
  reduit::test::write_file(m + "/cur/1700000000.M1P1.mx:2,S", std::string("CRYPTED\x03\x07", 9) + "opaque");
  reduit::test::write_file(keys.path() + "/ecprivkey.pem", "-----BEGIN PRIVATE KEY-----\nk\n");
  Site site({mail.path()}, "%d/%n");
  site.init();
  for (int run = 0; run < 2; ++run) {  // the second run reads nothing and still warns
    RunResult r = site.reduit({"backup"});
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_EQ(r.json()["mail_crypt_messages"], run == 0 ? 1 : 0);
    ASSERT_EQ(r.json()["warnings"].size(), 1u);
    EXPECT_NE(r.json()["warnings"][0].get<std::string>().find("frank@example.ch holds messages encrypted by "
                                                              "Dovecot's mail_crypt"),
              std::string::npos);
  }
  Site with_keys({mail.path()}, "%d/%n", "", "", "", "mail_crypt_keys = \"" + keys.path() + "\"");
  with_keys.init();
  RunResult r = with_keys.reduit({"backup"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["mailboxes"], 2);
  TempDir out;
  RunResult k = with_keys.restore("mail_crypt-keys", out.path() + "/k");
  ASSERT_EQ(k.status, 0) << k.err;
  EXPECT_EQ(reduit::test::read_file(out.path() + "/k/ecprivkey.pem"), "-----BEGIN PRIVATE KEY-----\nk\n");
}
