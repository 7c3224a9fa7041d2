// Damage and mistakes found by trying reduit as a new admin would: each test holds
// the input that once went wrong.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
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

std::vector<std::string> objects(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string first_mailbox(const Site& site) {
  RunResult r = site.reduit({"ls", "latest"});
  EXPECT_LE(r.status, 1) << r.err;  // 1: listed, with a damaged snapshot reported
  return r.json()[0]["mailbox"];
}

}  // namespace

// One truncated snapshot object used to make every listing and restore fail.
TEST(Robustness, DamagedSnapshotIsSkippedAndOthersStillRestore) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 60, 2, 21);
  Site site({mail.path()}, "%d/%n");
  site.init();
  std::string good = site.backup()["snapshot"];
  reduit::test::write_file(mail.path() + "/example.ch/extra-file", "x");
  std::string bad = site.backup()["snapshot"];
  fs::resize_file(site.vault_dir() + "/snapshots/" + bad, 100);
  fs::remove_all(site.path("state"));  // no cached copy to hide the damage

  RunResult list = site.reduit({"snapshots"});
  EXPECT_EQ(list.status, 1) << list.err;
  ASSERT_EQ(list.json().size(), 1u);
  EXPECT_EQ(list.json()[0]["id"], good);
  EXPECT_NE(list.err.find("skipped damaged snapshot: snapshots/" + bad), std::string::npos) << list.err;

  RunResult r = site.restore(first_mailbox(site), site.path("out"), good.substr(0, 8));
  EXPECT_EQ(r.status, 1) << r.err;  // restored, with the damaged snapshot reported
  EXPECT_EQ(r.json()["warnings"].size(), 1u);
  EXPECT_GT(r.json()["messages"].get<int>(), 0);
  // The damaged one asked for by id: damaged (exit 6), not "no such snapshot" (8).
  for (const std::vector<std::string>& cmd :
       {std::vector<std::string>{"restore", "--snapshot", bad.substr(0, 8), "--mailbox", first_mailbox(site),
                                 "--to", site.path("out-bad"), "--gnupghome", site.keys().archive_home->path()},
        std::vector<std::string>{"ls", bad.substr(0, 8)}}) {
    RunResult damaged = site.reduit(cmd);
    EXPECT_EQ(damaged.status, 6) << cmd[0] << ": " << damaged.err;
    EXPECT_NE(damaged.err.find("snapshot '" + bad.substr(0, 8) + "' is damaged (snapshots/" + bad),
              std::string::npos)
        << damaged.err;
    EXPECT_NE(damaged.err.find("): 'reduit check' names what else it affects; the other snapshots still "
                               "restore (see 'reduit snapshots')"),
              std::string::npos)
        << damaged.err;
  }
  EXPECT_FALSE(fs::exists(site.path("out-bad")));

  RunResult rebuild = site.reduit({"catalog", "rebuild"});
  EXPECT_EQ(rebuild.status, 1) << rebuild.err;
  EXPECT_EQ(rebuild.json()["snapshots"], 1);
}

// A catalog rebuild that failed (no key) used to empty the catalog, and the next
// backup then uploaded everything again.
TEST(Robustness, FailedCatalogRebuildChangesNothing) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 80, 2, 22);
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  RunResult r = site.reduit({"catalog", "rebuild", "--gnupghome", site.keys().empty_home->path()});
  EXPECT_EQ(r.status, 5) << r.err;
  nlohmann::json b = site.backup();
  EXPECT_EQ(b["files_read"], 0);
  EXPECT_EQ(b["data_bytes_uploaded"], 0);
}

// A lost state dir used to make the next backup upload the whole vault again.
TEST(Robustness, BackupWithALostStateDirReusesTheVault) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 80, 2, 23);
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json first = site.backup();
  fs::remove_all(site.path("state"));
  RunResult r = site.reduit({"backup"});
  ASSERT_EQ(r.status, 1) << r.err;
  nlohmann::json b = r.json();
  EXPECT_EQ(b["content_blobs_new"], 0);
  EXPECT_EQ(b["data_bytes_uploaded"], 0);
  EXPECT_EQ(b["files_read"], first["files"]);
  ASSERT_EQ(b["warnings"].size(), 1u);
  EXPECT_NE(b["warnings"][0].get<std::string>().find("rebuilt its pack index from the vault"),
            std::string::npos);
}

// A failed restore used to leave a half-written target that blocked the retry.
TEST(Robustness, FailedRestoreLeavesNothingAndTheRetryWorks) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 60, 1, 24);
  Site site({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"64KiB\"\n");
  site.init();
  site.backup();
  std::string name = first_mailbox(site);
  std::string to = site.path("out");
  // No archive key: refused before anything is written.
  RunResult r =
      site.reduit({"restore", "--mailbox", name, "--to", to, "--gnupghome", site.keys().agent_home->path()});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_NE(r.err.find("no archive secret key"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(to));
  // A corrupt data pack met half-way: what was written is removed again.
  std::vector<std::string> packs;
  for (const auto& e : fs::recursive_directory_iterator(site.vault_dir() + "/packs")) {
    if (e.is_regular_file()) packs.push_back(e.path());
  }
  std::sort(packs.begin(), packs.end(),
            [](const std::string& a, const std::string& b) { return fs::file_size(a) > fs::file_size(b); });
  std::string victim = packs[1], saved = reduit::test::read_file(victim);
  std::string damaged = saved;
  damaged[damaged.size() / 2] ^= 0x40;
  reduit::test::write_file(victim, damaged);
  fs::create_directories(to);  // an existing empty target stays, emptied again
  r = site.restore(name, to);
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_TRUE(fs::exists(to));
  EXPECT_TRUE(fs::is_empty(to));
  reduit::test::write_file(victim, saved);
  r = site.restore(name, to);
  EXPECT_EQ(r.status, 0) << r.err;
}

// A deleted index object: restore says the vault is damaged (6, not "not found");
// the next backup notices and writes an index naming every pack again.
TEST(Robustness, DeletedIndexIsNoticedAndRewritten) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 60, 2, 25);
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  std::vector<std::string> idx = objects(site.vault_dir() + "/index");
  ASSERT_EQ(idx.size(), 1u);
  fs::remove(idx[0]);
  std::string name = first_mailbox(site);
  RunResult r = site.restore(name, site.path("out1"));
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_NE(r.err.find("is not in any index of the vault"), std::string::npos) << r.err;
  EXPECT_EQ(site.reduit({"check"}).status, 6);
  r = site.reduit({"backup"});
  ASSERT_EQ(r.status, 1) << r.err;
  EXPECT_NE(
      r.json()["warnings"][0].get<std::string>().find("index object(s) known to the catalog are missing"),
      std::string::npos);
  EXPECT_EQ(r.json()["data_bytes_uploaded"], 0);
  EXPECT_EQ(objects(site.vault_dir() + "/index").size(), 1u);
  RunResult c = site.reduit({"check"});
  EXPECT_EQ(c.status, 0) << c.out;
  r = site.restore(name, site.path("out2"));
  EXPECT_EQ(r.status, 0) << r.err;
}

// Flags toggled continuously during backups: a message renamed twice between the
// scan's look-up and its read was once dropped from the snapshot.
TEST(Robustness, MessagesWhoseFlagsKeepChangingAreNeverDropped) {
  TempDir mail;
  std::string m = mail.path() + "/example.ch/toggle";
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
  std::vector<std::string> unames;
  for (int i = 0; i < 200; ++i) {
    unames.push_back("1700000000.M" + std::to_string(i) + "P9.mx");
    reduit::test::write_file(m + "/cur/" + unames.back() + ":2,S", "Subject: t\n\n" + std::to_string(i));
  }
  Site site({mail.path()}, "%d/%n");
  site.init();
  std::atomic<bool> stop{false};
  std::thread toggler([&] {
    std::vector<bool> flagged(unames.size(), false);
    while (!stop) {
      for (std::size_t i = 0; i < unames.size() && !stop; ++i) {
        std::string from = m + "/cur/" + unames[i] + (flagged[i] ? ":2,FS" : ":2,S");
        std::string to = m + "/cur/" + unames[i] + (flagged[i] ? ":2,S" : ":2,FS");
        std::error_code ec;
        fs::rename(from, to, ec);
        if (!ec) flagged[i] = !flagged[i];
      }
    }
  });
  for (int round = 0; round < 6; ++round) {
    // Every backup's stat cache misses for renamed files, so reads race the renames.
    fs::remove_all(site.path("state"));
    RunResult r = site.reduit({"backup"});
    ASSERT_LE(r.status, 1) << r.err;
    EXPECT_EQ(r.json()["messages"], 200) << "round " << round;
  }
  stop = true;
  toggler.join();
  RunResult ls = site.reduit({"ls", "latest", "--mailbox", "toggle@example.ch"});
  std::set<std::string> seen;
  for (const auto& e : ls.json()) {
    std::string p = e["path"];
    seen.insert(reduit::maildir_unique_name(p.substr(p.find('/') + 1)));
  }
  EXPECT_EQ(seen.size(), 200u);
}

TEST(Robustness, CliMistakesGiveDocumentedExitCodes) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 20, 1, 26);
  // A symlink in cur/ is skipped with a warning that names it.
  std::string cur = mail.path() + "/example.ch/" +
                    fs::directory_iterator(mail.path() + "/example.ch")->path().filename().string() + "/cur";
  fs::create_symlink("/etc/passwd", cur + "/1700000000.M1P1.evil:2,S");
  Site site({mail.path()}, "%d/%n");
  // A vault directory that was never initialised: a usage error, not "not found".
  fs::create_directories(site.vault_dir());
  RunResult r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("is not initialised"), std::string::npos) << r.err;
  site.init();
  r = site.reduit({"backup"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.json()["warnings"][0].get<std::string>().find("cur/1700000000.M1P1.evil:2,S"),
            std::string::npos);
  // Global options after the subcommand.
  r = reduit::test::run_command(
      {reduit::test::reduit_binary(), "snapshots", "--config", site.config(), "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json().size(), 1u);
  // Usage errors under --json are JSON too.
  r = reduit::test::run_command({reduit::test::reduit_binary(), "--json", "bogus"});
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.json()["error"]["code"], "usage");
  // A snapshot id that is not hex.
  r = site.reduit({"ls", "xyz!"});
  EXPECT_EQ(r.status, 2) << r.err;
  // init into a directory that holds something else.
  TempDir other;
  reduit::test::write_file(other.path() + "/precious.txt", "keep me");
  r = site.reduit({"init", "--vault", "file://" + other.path(), "--recipient", site.keys().archive_fpr,
                   "--signing-key", site.keys().agent_fpr});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_EQ(objects(other.path()).size(), 1u);
  // init with a key that does not exist leaves no vault directory behind.
  r = site.reduit({"init", "--vault", "file://" + other.path() + "/new-vault", "--recipient",
                   "nobody@nowhere.invalid", "--signing-key", site.keys().agent_fpr});
  EXPECT_EQ(r.status, 5) << r.err;
  EXPECT_FALSE(fs::exists(other.path() + "/new-vault"));
}

// Folder directories keep their mode and mtime (they are not entries of any tree).
TEST(Robustness, RestoredFolderDirectoriesKeepModeAndMtime) {
  TempDir mail;
  std::string m = mail.path() + "/example.ch/dirs";
  for (const char* d : {"cur", "new", "tmp", ".Archive/cur", ".Archive/new", ".Archive/tmp"}) {
    fs::create_directories(m + "/" + d);
  }
  reduit::test::write_file(m + "/.Archive/cur/1.M1P1.h:2,S", "Subject: a\n\nb");
  chmod((m + "/.Archive").c_str(), 0750);
  timespec t[2] = {{1600000000, 123}, {1600000000, 123}};
  utimensat(AT_FDCWD, (m + "/.Archive").c_str(), t, 0);
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  RunResult r = site.restore("dirs@example.ch", site.path("out"));
  ASSERT_EQ(r.status, 0) << r.err;
  struct stat st;
  ASSERT_EQ(stat(site.path("out/.Archive").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123);
}

// The no-change fast path: folders whose cur/, new/ and tmp/ stamps are unchanged
// keep their trees without a stat of their messages — and any change is still seen.
TEST(FolderFastPath, UnchangedFoldersAreSkippedAndEveryKindOfChangeIsSeen) {
  TempDir mail;
  reduit::test::generate_maildir(mail.path(), 300, 3, 27);
  std::string box = mail.path() + "/example.ch/" +
                    fs::directory_iterator(mail.path() + "/example.ch")->path().filename().string();
  // Directory times younger than 2 s are not trusted (same-tick changes could hide).
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  Site site({mail.path()}, "%d/%n");
  site.init();
  nlohmann::json first = site.backup();
  EXPECT_EQ(first["folders_unchanged"], 0);
  nlohmann::json second = site.backup();
  EXPECT_EQ(second["folders_unchanged"], first["folders"]);
  EXPECT_EQ(second["files"], first["files"]);
  EXPECT_EQ(second["messages"], first["messages"]);
  EXPECT_EQ(second["trees_new"], 0);

  // A flag change in the mailbox root's cur/: only that folder is rescanned.
  std::string renamed;
  for (const auto& e : fs::directory_iterator(box + "/cur")) {
    renamed = e.path().string();
    break;
  }
  fs::rename(renamed, renamed + "T");  // add the T (trashed) flag
  // A control file rewritten in place (no directory change), in the same folder.
  std::ofstream(box + "/dovecot-uidlist", std::ios::app) << "9999 :appended\n";
  nlohmann::json third = site.backup();
  EXPECT_EQ(third["folders_unchanged"], first["folders"].get<int>() - 1);
  EXPECT_EQ(third["trees_new"], 1);
  EXPECT_EQ(third["content_blobs_new"], 1);  // the uidlist; the renamed message is metadata
  EXPECT_EQ(third["messages"], first["messages"]);

  // --full-scan ignores the stamps.
  RunResult full = site.reduit({"backup", "--full-scan"});
  ASSERT_EQ(full.status, 0) << full.err;
  EXPECT_EQ(full.json()["folders_unchanged"], 0);
  EXPECT_EQ(full.json()["files_read"], 0);
  EXPECT_EQ(full.json()["trees_new"], 0);

  std::string name = box.substr(box.rfind('/') + 1) + "@example.ch";
  RunResult r = site.restore(name, site.path("out"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto a = reduit::test::tree_facts(box), b = reduit::test::tree_facts(site.path("out"));
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [p, f] : a) EXPECT_EQ(f.sha256, b[p].sha256) << p;
}
