// Restore drills (issue 7, must-show 2): a drill passes on a good vault; after one
// flipped byte in a pack holding the mailbox, or a deleted pack, it fails and names
// the first message that cannot come back. Results are recorded in the catalog.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "restore/imap_judge.hpp"
#include "support/harness.hpp"
#include "support/site.hpp"

namespace fs = std::filesystem;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;

namespace {

// Two mailboxes; alice's messages are large enough that her data pack is the
// biggest file of the vault.
void make_mail(const std::string& root) {
  for (const char* user : {"alice", "bob"}) {
    const std::string m = root + "/example.ch/" + user;
    for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(m + "/" + d);
    for (int i = 0; i < 5; ++i) {
      // Incompressible (random letters), so the data pack outweighs the trees.
      std::mt19937 rng(static_cast<unsigned>(i + (std::string(user) == "alice" ? 0 : 100)));
      std::string body(std::string(user) == "alice" ? 20000 : 200, ' ');
      for (char& c : body) c = static_cast<char>('a' + rng() % 26);
      reduit::test::write_file(
          m + "/cur/170000000" + std::to_string(i) + ".M" + std::to_string(i) + "P1.mx:2,S",
          "Subject: " + std::string(user) + " " + std::to_string(i) + "\n\n" + body + "\n");
    }
    reduit::test::write_file(m + "/dovecot-uidlist",
                             "3 V1 N6\n1 :1700000000.M0P1.mx\n2 :1700000001.M1P1.mx\n"
                             "3 :1700000002.M2P1.mx\n4 :1700000003.M3P1.mx\n"
                             "5 :1700000004.M4P1.mx\n");
  }
}

std::string biggest_pack(const std::string& vault) {
  std::string best;
  std::uintmax_t size = 0;
  for (const auto& e : fs::recursive_directory_iterator(vault + "/packs")) {
    if (e.is_regular_file() && e.file_size() > size) {
      size = e.file_size();
      best = e.path().string();
    }
  }
  return best;
}

// Each site drills in its own scratch directory, so "nothing is left behind" is
// checked there and not in a /tmp shared with other tests running at once.
// doveadm (the drill's judge) runs as nobody when we are root: the site directory
// (a 0700 TempDir) is opened for traversal as /tmp would be.
RunResult drill(const Site& site, const std::vector<std::string>& extra) {
  fs::create_directories(site.path("scratch"));
  fs::permissions(site.path(""), fs::perms::others_exec, fs::perm_options::add);
  std::vector<std::string> args{"drill", "--gnupghome", site.keys().archive_home->path(), "--scratch",
                                site.path("scratch")};
  args.insert(args.end(), extra.begin(), extra.end());
  return site.reduit(args);
}

}  // namespace

TEST(Drill, PassesOnAGoodVaultAndNamesTheMessageAfterAFlippedByteOrADeletedPack) {
  TempDir mail;
  make_mail(mail.path());
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();

  RunResult good = drill(site, {"--mailbox", "alice@example.ch", "--pack-share", "1"});
  ASSERT_EQ(good.status, 0) << good.err;
  nlohmann::json g = good.json();
  EXPECT_EQ(g["passed"], true);
  EXPECT_EQ(g["mailbox"], "alice@example.ch");
  EXPECT_EQ(g["messages"], 5);
  EXPECT_EQ(g["files"], 1);  // dovecot-uidlist
  EXPECT_EQ(g["bytes"].get<std::uint64_t>(),
            fs::file_size(mail.path() + "/example.ch/alice/dovecot-uidlist") +
                5 * (std::string("Subject: alice 0\n\n").size() + 20001));
  EXPECT_EQ(g["packs_verified"], g["packs_total"]);  // --pack-share 1: every pack
  EXPECT_EQ(g["failures"], nlohmann::json::array());
  EXPECT_GT(g["bytes_fetched"].get<std::uint64_t>(), 0u);

  // The random draw is repeatable from its seed.
  RunResult r1 = drill(site, {"--seed", "7", "--pack-share", "0"});
  RunResult r2 = drill(site, {"--seed", "7", "--pack-share", "0"});
  ASSERT_EQ(r1.status, 0) << r1.err;
  EXPECT_EQ(r1.json()["mailbox"], r2.json()["mailbox"]);
  EXPECT_EQ(r1.json()["seed"], 7);

  // One flipped byte in the pack holding alice's messages.
  const std::string pack = biggest_pack(site.vault_dir());
  {
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(200);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x01);
    f.seekp(200);
    f.write(&c, 1);
  }
  RunResult flipped = drill(site, {"--mailbox", "alice@example.ch", "--pack-share", "0"});
  EXPECT_EQ(flipped.status, 6) << flipped.err;
  nlohmann::json f = flipped.json();
  EXPECT_EQ(f["passed"], false);
  ASSERT_GE(f["failures"].size(), 2u);
  const std::string pack_id = fs::path(pack).filename().string().substr(0, 16);
  EXPECT_EQ(f["failures"][0].get<std::string>().rfind(
                "message cur/1700000000.M0P1.mx:2,S cannot be restored: pack " + pack_id + ": ", 0),
            0u)
      << f["failures"][0];
  EXPECT_NE(flipped.err.find("reduit: drill: message cur/1700000000.M0P1.mx:2,S cannot be restored"),
            std::string::npos)
      << flipped.err;

  // The pack deleted instead.
  fs::remove(pack);
  RunResult gone = drill(site, {"--mailbox", "alice@example.ch", "--pack-share", "0"});
  EXPECT_EQ(gone.status, 6) << gone.err;
  EXPECT_EQ(gone.json()["failures"][0], "message cur/1700000000.M0P1.mx:2,S cannot be restored: pack " +
                                            pack_id + " is missing from the vault");

  // Every drill is in the catalog, with its verdict.
  SQLite::Database db(site.path("state/catalog.sqlite"));
  SQLite::Statement q(db, "SELECT mailbox, passed FROM drills ORDER BY rowid");
  std::vector<std::string> rows;
  while (q.executeStep())
    rows.push_back(q.getColumn(0).getString() + " " + std::to_string(q.getColumn(1).getInt()));
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0], "alice@example.ch 1");
  EXPECT_EQ(rows[3], "alice@example.ch 0");
  EXPECT_EQ(rows[4], "alice@example.ch 0");
  // Nothing is left in the scratch space.
  EXPECT_TRUE(fs::is_empty(site.path("scratch")));
}

// The rolling share: 1/N of the packs per drill, continuing where the last stopped,
// so N drills verify every pack; a corrupt pack outside the drilled mailbox is found.
TEST(Drill, RollingPackShareCoversTheVaultAndFindsCorruptionElsewhere) {
  TempDir mail;
  make_mail(mail.path());
  // 4 KiB packs: each of alice's messages closes a pack; bob's share the last one.
  Site site({mail.path()}, "%d/%n", "", "", "[pack]\nsize = \"4KiB\"");
  site.init();
  site.backup();
  RunResult first = drill(site, {"--mailbox", "bob@example.ch", "--pack-share", "2"});
  ASSERT_EQ(first.status, 0) << first.err;
  const int total = first.json()["packs_total"];
  ASSERT_GE(total, 2);
  EXPECT_EQ(first.json()["packs_verified"], (total + 1) / 2);
  // Corrupt alice's data pack; bob's drills still restore, and the rolling share
  // finds the corruption within two drills.
  const std::string pack = biggest_pack(site.vault_dir());
  {
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.write("X", 1);
  }
  int failed = 0;
  for (int i = 0; i < 2; ++i) {
    RunResult r = drill(site, {"--mailbox", "bob@example.ch", "--pack-share", "2"});
    if (r.status == 6) {
      ++failed;
      EXPECT_NE(r.json()["failures"][0].get<std::string>().find(
                    "pack " + fs::path(pack).filename().string().substr(0, 16) + " fails verification"),
                std::string::npos)
          << r.out;
    } else {
      EXPECT_EQ(r.status, 0) << r.err;
    }
  }
  // Two drills of ceil(n/2) packs each, continuing from the first: every pack was
  // verified once more, so the corrupt one was seen (twice when the windows wrap onto it).
  EXPECT_GE(failed, 1);
}

// Dovecot's doveadm judges the restored mailbox inside the drill: it agrees (UIDs
// from the restored dovecot-uidlist, \Seen, sizes) and the drill records that it
// ran; without doveadm on PATH the drill says why it did not run.
TEST(Drill, DoveadmJudgesTheRestoredMailbox) {
  if (reduit::find_doveadm().empty()) GTEST_SKIP() << "doveadm (dovecot-core) is not on PATH";
  if (geteuid() == 0 && access("/usr/sbin/runuser", X_OK) != 0)
    GTEST_SKIP() << "running as root without /usr/sbin/runuser (doveadm refuses uid 0)";
  TempDir mail;
  make_mail(mail.path());
  Site site({mail.path()}, "%d/%n");
  site.init();
  site.backup();
  RunResult r = drill(site, {"--mailbox", "alice@example.ch", "--pack-share", "0"});
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = r.json();
  EXPECT_EQ(j["passed"], true);
  EXPECT_EQ(j["judge"],
            (nlohmann::json{{"ran", true}, {"tool", "doveadm"}, {"folders", 1}, {"messages", 5}}));

  RunResult without = site.reduit({"drill", "--gnupghome", site.keys().archive_home->path(), "--mailbox",
                                   "bob@example.ch", "--pack-share", "0"});
  ASSERT_EQ(without.status, 0) << without.err;
  EXPECT_EQ(without.json()["judge"]["ran"], true);
  std::string shut_reason;
  if (geteuid() == 0) {
    // A scratch directory nobody cannot reach: the judge says so instead of
    // reporting every message as unseen (what it did before this check).
    TempDir closed;  // 0700
    fs::create_directories(closed.path() + "/scratch");
    RunResult shut =
        site.reduit({"drill", "--gnupghome", site.keys().archive_home->path(), "--mailbox", "bob@example.ch",
                     "--pack-share", "0", "--scratch", closed.path() + "/scratch"});
    ASSERT_EQ(shut.status, 0) << shut.err;
    shut_reason = "doveadm runs as nobody, who cannot enter " + closed.path() +
                  " (mode 0700): give --scratch a directory others may traverse, e.g. /var/tmp";
    EXPECT_EQ(shut.json()["judge"], (nlohmann::json{{"ran", false}, {"reason", shut_reason}}));
  }
  // A PATH with GnuPG's tools (GPGME looks them up there) but no doveadm.
  TempDir bin;
  for (const char* tool : {"gpg", "gpgconf", "gpg-agent", "gpgsm"})
    if (access((std::string("/usr/bin/") + tool).c_str(), X_OK) == 0)
      fs::create_symlink(std::string("/usr/bin/") + tool, bin / tool);
  RunResult no_path = reduit::test::run_command(
      {"/usr/bin/env", "PATH=" + bin.path(), reduit::test::reduit_binary(), "--config", site.config(),
       "--json", "drill", "--gnupghome", site.keys().archive_home->path(), "--mailbox", "bob@example.ch",
       "--pack-share", "0"});
  ASSERT_EQ(no_path.status, 0) << no_path.err;
  EXPECT_EQ(no_path.json()["judge"], (nlohmann::json{{"ran", false}, {"reason", "doveadm is not on PATH"}}));

  SQLite::Database db(site.path("state/catalog.sqlite"));
  SQLite::Statement q(db, "SELECT mailbox, judge, judge_messages, judge_reason FROM drills ORDER BY rowid");
  std::vector<std::string> rows;
  while (q.executeStep()) {
    std::string row = q.getColumn(0).getString();
    for (int c = 1; c < 4; ++c)
      row += " " + (q.getColumn(c).isNull() ? std::string("NULL") : q.getColumn(c).getString());
    rows.push_back(row);
  }
  std::vector<std::string> expected{"alice@example.ch doveadm 5 NULL", "bob@example.ch doveadm 5 NULL"};
  if (geteuid() == 0) expected.push_back("bob@example.ch NULL NULL " + shut_reason);
  expected.push_back("bob@example.ch NULL NULL doveadm is not on PATH");
  EXPECT_EQ(rows, expected);
}

// The judge itself, on a Maildir and a manifest that disagree: each disagreement
// names the message.
TEST(Drill, DoveadmJudgeNamesEachDisagreement) {
  const std::string doveadm = reduit::find_doveadm();
  if (doveadm.empty()) GTEST_SKIP() << "doveadm (dovecot-core) is not on PATH";
  TempDir scratch;
  const std::string m = scratch / "mailbox";
  for (const char* d : {"cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"})
    fs::create_directories(m + "/" + d);
  reduit::test::write_file(m + "/cur/1700000000.M1P1.mx:2,FS", "Subject: a\n\nhello\n");
  reduit::test::write_file(m + "/cur/1700000001.M2P1.mx:2,", "Subject: b\n\nhello there\n");
  reduit::test::write_file(m + "/.Sent/cur/1700000002.M3P1.mx:2,RSa", "Subject: c\n\nx\n");
  reduit::test::write_file(m + "/dovecot-uidlist", "3 V1 N8\n5 :1700000000.M1P1.mx\n7 :1700000001.M2P1.mx\n");
  reduit::test::write_file(m + "/.Sent/dovecot-uidlist", "3 V2 N4\n3 :1700000002.M3P1.mx\n");
  reduit::test::write_file(m + "/.Sent/dovecot-keywords", "0 $Forwarded\n");
  std::vector<reduit::JudgeFolder> agree{
      {"", {{"cur/1700000000.M1P1.mx:2,FS", 18}, {"cur/1700000001.M2P1.mx:2,", 24}}},
      {".Sent", {{"cur/1700000002.M3P1.mx:2,RSa", 14}}}};
  reduit::JudgeResult ok = reduit::judge_with_doveadm(doveadm, m, agree);
  ASSERT_TRUE(ok.ran) << ok.reason;
  EXPECT_EQ(ok.failures, std::vector<std::string>{});
  EXPECT_EQ(ok.folders, 2u);
  EXPECT_EQ(ok.messages, 3u);

  // The manifest says other flags, another size, and a message Dovecot does not see.
  std::vector<reduit::JudgeFolder> differ{{"",
                                           {{"cur/1700000000.M1P1.mx:2,S", 18},
                                            {"cur/1700000001.M2P1.mx:2,", 25},
                                            {"cur/1700000009.M9P1.mx:2,", 3}}},
                                          {".Sent", {{"cur/1700000002.M3P1.mx:2,RSa", 14}}}};
  reduit::JudgeResult bad = reduit::judge_with_doveadm(doveadm, m, differ);
  ASSERT_TRUE(bad.ran) << bad.reason;
  EXPECT_EQ(
      bad.failures,
      (std::vector<std::string>{
          "message cur/1700000000.M1P1.mx:2,S: doveadm sees flags (\\Flagged \\Seen), the manifest's name "
          "says (\\Seen)",
          "message cur/1700000001.M2P1.mx:2,: doveadm sees 24 bytes, the manifest says 25",
          "message cur/1700000009.M9P1.mx:2, is not seen by doveadm in mailbox INBOX"}));

  // A dovecot-uidlist that names another UID than the one Dovecot assigned earlier
  // cannot happen within one read; a non-Maildir++ folder is not judged.
  reduit::JudgeResult fs_layout = reduit::judge_with_doveadm(doveadm, m, {{"Sent", {}}});
  EXPECT_FALSE(fs_layout.ran);
  EXPECT_EQ(fs_layout.reason, "folder 'Sent' is not a Maildir++ folder");
}
