// End-to-end retention tests with the real binary, real gpg keys, a real SQLite
// catalog and a controllable clock (REDUIT_NOW): must-show 3 and 4 of the retention
// issue (legal hold; crash at every prune step), forget's output, prune without an
// archive key, the lease. The 3-year simulation is tests/long/three_years_test.cpp.
#include <gtest/gtest.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include "retention/prune.hpp"
#include "support/retention_site.hpp"
#include "vault/audit.hpp"

// Must-show 3: a legal hold keeps a message past its maximum; releasing it lets the
// next prune delete it; both events are recorded.
TEST(Retention, LegalHoldKeepsAMessagePastItsMaximumUntilReleased) {
  RetentionSite rs;
  std::mt19937_64 rng(3);
  const std::int64_t t0 = at("2024-01-10T02:00:00Z");
  Msg held = rs.mailbox().deliver(".Private", t0 - kDayNs, 2000, rng);
  Msg other = rs.mailbox().deliver(".Private", t0 - 2 * kDayNs, 2000, rng);  // outside the hold's range
  Msg business = rs.mailbox().deliver("", t0 - kDayNs, 2000, rng);
  set_now(t0);
  rs.site().init();
  rs.ok({"backup"});
  nlohmann::json h = rs.ok({"hold", "add", "--mailbox", "alice@example.ch", "--folder", ".Private", "--from",
                            "2024-01-09", "--to", "2024-01-09", "--reason", "litigation 2024-17"});
  const std::string hold_id = h["id"];
  ASSERT_EQ(hold_id.size(), 12u);
  // A second hold on other dates covers nothing here.
  set_now(t0 + 60LL * 1000000000);
  rs.ok({"hold", "add", "--mailbox", "alice@example.ch", "--from", "2020-01-01", "--to", "2020-12-31",
         "--reason", "old case"});
  nlohmann::json list = rs.ok({"hold", "list"});
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["reason"], "litigation 2024-17");
  EXPECT_EQ(list[0]["from"], "2024-01-09T00:00:00Z");
  EXPECT_EQ(list[0]["to"], "2024-01-09T23:59:59Z");
  EXPECT_EQ(list[0]["released"], false);

  // The messages leave the mailbox; 2 years and a day later (past the 2y maximum)
  // daily backups go on.
  rs.mailbox().remove(held);
  rs.mailbox().remove(other);
  const std::int64_t t1 = at("2026-01-11T02:00:00Z");
  set_now(t1);
  rs.ok({"backup"});
  rs.ok({"forget"});
  nlohmann::json p = rs.prune();
  EXPECT_EQ(p["messages_expired"], 1) << p.dump();  // `other`; `held` is refused
  EXPECT_EQ(p["messages_held_past_maximum"], 1);
  {
    VaultContents v = decrypt_every_pack(rs.site());
    for (const auto& b : message_blobs(*v.repo, held.content)) EXPECT_TRUE(v.blobs.count(b));
    for (const auto& b : message_blobs(*v.repo, other.content)) EXPECT_FALSE(v.blobs.count(b));
  }
  TempDir out;
  rs.ok({"archive", "restore", "--mailbox", "alice@example.ch", "--to", out.path() + "/a", "--gnupghome",
         rs.archive_home()});
  EXPECT_EQ(restored_messages(out.path() + "/a"),
            (std::multiset<std::string>{sha_hex(held.content), sha_hex(business.content)}));
  auto refused = events(rs.site(), "refuse-delete-hold");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].object, "alice@example.ch/.Private/" + held.name.substr(0, held.name.find(':')));
  EXPECT_EQ(refused[0].klass, "private");
  EXPECT_EQ(refused[0].rule, "maximum 2y from date; hold " + hold_id);
  EXPECT_EQ(refused[0].detail, sha_hex(held.content));

  // Release: the next prune deletes it, everywhere.
  set_now(t1 + kDayNs);
  rs.ok({"hold", "release", hold_id, "--reason", "case closed"});
  list = rs.ok({"hold", "list"});
  EXPECT_EQ(list[0]["released"], true);
  EXPECT_EQ(list[0]["release_reason"], "case closed");
  p = rs.prune();
  EXPECT_EQ(p["messages_expired"], 1);
  EXPECT_EQ(p["messages_held_past_maximum"], 0);
  {
    VaultContents v = decrypt_every_pack(rs.site());
    for (const auto& b : message_blobs(*v.repo, held.content)) EXPECT_FALSE(v.blobs.count(b));
    for (const auto& b : message_blobs(*v.repo, business.content)) EXPECT_TRUE(v.blobs.count(b));
  }
  auto deleted = events(rs.site(), "delete-message");
  ASSERT_EQ(deleted.size(), 2u);
  EXPECT_EQ(deleted[0].detail, sha_hex(other.content));
  EXPECT_EQ(deleted[1].detail, sha_hex(held.content));
  EXPECT_EQ(deleted[1].rule, "maximum 2y from date");
  auto adds = events(rs.site(), "hold-add"), releases = events(rs.site(), "hold-release");
  ASSERT_EQ(adds.size(), 2u);
  ASSERT_EQ(releases.size(), 1u);
  EXPECT_EQ(adds[0].object, hold_id);
  EXPECT_EQ(adds[0].detail, "litigation 2024-17");
  EXPECT_EQ(releases[0].object, hold_id);
  EXPECT_EQ(releases[0].detail, "case closed");
  EXPECT_EQ(rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()}).status, 0);
}

namespace {

const char* kFaultPolicy = R"(time_zone = "UTC"
[snapshots]
keep-last = 2
[[archive.class]]
name = "junk"
folders = [".Junk"]
[[archive.class]]
name = "private"
folders = [".Private"]
minimum = "1d"
maximum = "30d"
basis = "date"
[[archive.class]]
name = "business"
folders = ["*"]
minimum = "10y"
basis = "capture"
[prune]
repack-below = 0.5
)";

}  // namespace

// Must-show 4: prune killed after each of its steps in turn. Each time `check`
// passes, every snapshot left restores, and a second prune completes the job:
// the expired messages are gone from every pack and the business mail restores.
TEST(Retention, PruneKilledAfterEachStepLeavesAVaultThatChecksRestoresAndPrunesAgain) {
  RetentionSite rs(kFaultPolicy);
  fs::create_directories(rs.site().path("../mail/example.ch/alice/.Junk"));
  std::mt19937_64 rng(4);
  const std::int64_t t0 = at("2024-05-01T02:00:00Z");
  auto day = [&](int d) { return t0 + d * kDayNs; };
  for (const char* sub : {"cur", "new", "tmp"})
    fs::create_directories(rs.site().path("../mail/example.ch/alice/.Junk/") + sub);
  Msg a = rs.mailbox().deliver(".Private", day(0) - kDayNs, 4000, rng);
  Msg a2 = rs.mailbox().deliver(".Private", day(0) - kDayNs, 4000, rng);
  Msg b = rs.mailbox().deliver("", day(0) - kDayNs, 500, rng);
  set_now(day(0));
  rs.site().init();
  rs.ok({"backup"});
  Msg j1 = rs.mailbox().deliver(".Junk", day(1) - kDayNs, 3000, rng);
  rs.mailbox().remove(a);
  set_now(day(1));
  rs.ok({"backup"});
  Msg j2 = rs.mailbox().deliver(".Junk", day(2) - kDayNs, 3000, rng);
  rs.mailbox().remove(j1);
  set_now(day(2));
  rs.ok({"backup"});
  nlohmann::json f = rs.ok({"forget"});
  EXPECT_EQ(f["removed"], 1);
  EXPECT_EQ(f["archived_messages"], 3);  // a, a2, b from the first snapshot
  rs.mailbox().remove(j2);
  set_now(day(3));
  rs.ok({"backup"});
  set_now(day(4));
  rs.ok({"backup"});
  rs.mailbox().remove(a2);
  set_now(day(40));
  rs.ok({"backup"});
  f = rs.ok({"forget"});
  EXPECT_EQ(f["removed"], 3);  // d1, d2, d3
  EXPECT_EQ(f["kept"], 2);

  // The plan of a clean prune.
  nlohmann::json plan = rs.ok({"prune", "--dry-run", "--archive-gnupghome", rs.archive_home()});
  EXPECT_EQ(plan["messages_expired"], 2) << plan.dump();  // a (archive) and a2 (archive + a kept snapshot)
  EXPECT_EQ(plan["snapshots_rewritten"], 1);
  EXPECT_GE(plan["packs_repacked"].get<int>(), 1);
  const int deletes = plan["packs_deleted"].get<int>() + plan["packs_repacked"].get<int>() +
                      plan["packs_unindexed_deleted"].get<int>();
  ASSERT_GE(deletes, 3) << plan.dump();
  std::printf("clean prune plan: %s\n", plan.dump().c_str());

  const std::string vault = rs.site().vault_dir(), state = rs.site().path("state");
  TempDir saved;
  reduit::test::copy_tree(vault, saved.path() + "/vault");
  reduit::test::copy_tree(state, saved.path() + "/state");
  std::vector<std::string> faults{"prune:after-archive-write", "prune:after-snapshot-write",
                                  "prune:after-repack-upload", "prune:after-index-write",
                                  "prune:after-index-delete"};
  for (int i = 1; i <= deletes; ++i) faults.push_back("prune:after-pack-delete#" + std::to_string(i));
  faults.push_back("");  // and no fault at all
  for (const std::string& fault : faults) {
    SCOPED_TRACE(fault.empty() ? "no fault" : fault);
    fs::remove_all(vault);
    fs::remove_all(state);
    reduit::test::copy_tree(saved.path() + "/vault", vault);
    reduit::test::copy_tree(saved.path() + "/state", state);
    if (!fault.empty()) {
      setenv("REDUIT_FAULT", fault.c_str(), 1);
      RunResult crashed = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
      unsetenv("REDUIT_FAULT");
      ASSERT_EQ(crashed.status, 99) << crashed.err;
      EXPECT_NE(crashed.err.find("fault injected at " + fault.substr(0, fault.find('#'))), std::string::npos);
      // A crashed prune leaves its lease behind; the next run breaks it (same host, dead pid).
      RunResult c = rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()});
      EXPECT_EQ(c.status, 0) << c.out << c.err;
      RunResult snaps = rs.run({"snapshots"});
      ASSERT_EQ(snaps.status, 0) << snaps.err;
      for (const auto& s : snaps.json()) {
        TempDir to;
        RunResult r = rs.site().restore("alice@example.ch", to.path() + "/r", s["id"]);
        EXPECT_EQ(r.status, 0) << s["id"] << r.err;
        EXPECT_EQ(restored_messages(to.path() + "/r").size(), s["messages"].get<std::size_t>());
      }
    }
    RunResult again = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
    ASSERT_TRUE(again.status == 0 || again.status == 1) << again.err;  // 1: it broke the stale lease
    EXPECT_EQ(rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()}).status, 0);
    VaultContents v = decrypt_every_pack(rs.site());
    for (const Msg* m : {&a, &a2, &j1, &j2}) {
      for (const auto& blob : message_blobs(*v.repo, m->content))
        EXPECT_FALSE(v.blobs.count(blob)) << m->name;
    }
    TempDir out;
    rs.ok({"archive", "restore", "--mailbox", "alice@example.ch", "--to", out.path() + "/a", "--gnupghome",
           rs.archive_home()});
    EXPECT_EQ(restored_messages(out.path() + "/a"), (std::multiset<std::string>{sha_hex(b.content)}));
    // A third prune finds nothing left to do.
    nlohmann::json third = rs.prune();
    EXPECT_EQ(third["packs_deleted"], 0);
    EXPECT_EQ(third["packs_repacked"], 0);
    EXPECT_EQ(third["messages_expired"], 0);
  }
  unsetenv("REDUIT_NOW");
}

// forget on the command line: restic's reasons per snapshot, --dry-run changes
// nothing, grouping per host; the policy file's errors carry FILE:LINE.
TEST(Retention, ForgetShowsReasonsAndDryRunChangesNothing) {
  RetentionSite rs("time_zone = \"Europe/Zurich\"\n[snapshots]\nkeep-daily = 3\nkeep-weekly = 2\n");
  std::mt19937_64 rng(5);
  // Backups at 23:30 UTC: 00:30 the next day in Zurich (CEST), so local days decide.
  std::vector<std::int64_t> times{at("2024-06-02T23:30:00Z"), at("2024-06-03T23:30:00Z"),
                                  at("2024-06-04T21:00:00Z"), at("2024-06-04T23:30:00Z")};
  for (std::size_t i = 0; i < times.size(); ++i) {
    rs.mailbox().deliver("", times[i] - 3600LL * 1000000000, 100, rng);
    set_now(times[i]);
    if (i == 0) rs.site().init();
    rs.ok({"backup"});
  }
  nlohmann::json dry = rs.ok({"forget", "--dry-run"});
  ASSERT_EQ(dry["groups"].size(), 1u);
  const auto& g = dry["groups"][0];
  EXPECT_EQ(g["host"], reduit::local_hostname());
  // Zurich days: 06-03 {0}, 06-04 {1 at 01:30, 2 at 23:00}, 06-05 {3}; all in ISO week 2024-W23 (in UTC,
  // 0 would be Sunday 06-02, W22). The weekly rule has a count left at the oldest.
  ASSERT_EQ(g["keep"].size(), 3u);
  EXPECT_EQ(g["keep"][0]["time"], "2024-06-04T23:30:00Z");
  EXPECT_EQ(g["keep"][0]["reasons"], (nlohmann::json{"daily snapshot", "weekly snapshot"}));
  EXPECT_EQ(g["keep"][1]["time"], "2024-06-04T21:00:00Z");
  EXPECT_EQ(g["keep"][1]["reasons"], (nlohmann::json{"daily snapshot"}));
  EXPECT_EQ(g["keep"][2]["time"], "2024-06-02T23:30:00Z");
  EXPECT_EQ(g["keep"][2]["reasons"], (nlohmann::json{"daily snapshot", "oldest weekly snapshot"}));
  ASSERT_EQ(g["remove"].size(), 1u);
  EXPECT_EQ(g["remove"][0]["time"], "2024-06-03T23:30:00Z");
  EXPECT_EQ(rs.ok({"snapshots"}).size(), 4u);  // the dry run deleted nothing
  nlohmann::json real = rs.ok({"forget"});
  EXPECT_EQ(real["removed"], 1);
  EXPECT_EQ(rs.ok({"snapshots"}).size(), 3u);
  auto forgotten = events(rs.site(), "forget-snapshot");
  ASSERT_EQ(forgotten.size(), 1u);
  EXPECT_EQ(forgotten[0].object, g["remove"][0]["id"]);

  // A bad policy file is a usage error naming its line.
  std::string bad = rs.site().path("bad.toml");
  reduit::test::write_file(bad, "[snapshots]\nkeep-daily = 3\nkeep-hourly = \"lots\"\n");
  RunResult r = rs.run({"forget", "--policy", bad});
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.json()["error"]["message"],
            bad + ":3: 'keep-hourly' must be a non-negative integer or \"unlimited\"");
  unsetenv("REDUIT_NOW");
}

// Without an archive secret key prune cannot open data packs: it deletes whole
// packs only and reports what waits for a repack. A live lease stops it (exit 3);
// a lease left by a dead process on this host is broken (exit 1, a warning).
TEST(Retention, PruneWithoutArchiveKeyReportsWhatWaitsAndRespectsTheLease) {
  RetentionSite rs(kFaultPolicy);
  std::mt19937_64 rng(6);
  const std::int64_t t0 = at("2024-05-01T02:00:00Z");
  Msg a = rs.mailbox().deliver(".Private", t0 - kDayNs, 4000, rng);
  Msg b = rs.mailbox().deliver("", t0 - kDayNs, 500, rng);
  set_now(t0);
  rs.site().init();
  rs.ok({"backup"});
  set_now(t0 + kDayNs);
  rs.ok({"backup"});
  rs.mailbox().remove(a);  // a stays in the day-1 snapshot, which keep-last 2 keeps
  set_now(t0 + 40 * kDayNs);
  rs.ok({"backup"});
  rs.ok({"forget"});
  nlohmann::json p = rs.ok({"prune"});
  EXPECT_EQ(p["messages_expired"], 1);
  EXPECT_EQ(p["packs_waiting"], 1);  // the data pack holding a and b
  EXPECT_EQ(p["waiting_expired_blobs"], 2);
  {
    VaultContents v = decrypt_every_pack(rs.site());
    for (const auto& blob : message_blobs(*v.repo, a.content)) EXPECT_TRUE(v.blobs.count(blob));
  }
  ASSERT_EQ(events(rs.site(), "wait-repack").size(), 1u);
  EXPECT_EQ(events(rs.site(), "wait-repack")[0].rule, "holds expired messages");

  // A lease held by a live process elsewhere: refused with exit 3, nothing changed.
  const std::string lease = rs.site().vault_dir() + "/locks/lease";
  fs::create_directories(rs.site().vault_dir() + "/locks");
  auto now_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  reduit::test::write_file(
      lease,
      "{\"purpose\":\"backup\",\"host\":\"other-host\",\"pid\":4242,\"started\":" + std::to_string(now_s) +
          ",\"renewed\":" + std::to_string(now_s) + ",\"ttl\":900,\"nonce\":\"abc\"}");
  RunResult locked = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
  EXPECT_EQ(locked.status, 3) << locked.err;
  EXPECT_NE(locked.err.find("vault is locked by backup on other-host pid 4242"), std::string::npos)
      << locked.err;
  // The same lease from a dead pid on this host is stale: broken, and prune repacks.
  reduit::test::write_file(lease, "{\"purpose\":\"backup\",\"host\":\"" + reduit::local_hostname() +
                                      "\",\"pid\":999999,\"started\":" + std::to_string(now_s) +
                                      ",\"renewed\":" + std::to_string(now_s) +
                                      ",\"ttl\":900,\"nonce\":\"abc\"}");
  RunResult broke = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
  EXPECT_EQ(broke.status, 1) << broke.err;
  EXPECT_EQ(broke.json()["warnings"],
            (nlohmann::json{"broke a stale vault lease left by an interrupted run"}));
  EXPECT_EQ(broke.json()["packs_repacked"], 1);
  EXPECT_EQ(broke.json()["packs_waiting"], 0);
  VaultContents v = decrypt_every_pack(rs.site());
  for (const auto& blob : message_blobs(*v.repo, a.content)) EXPECT_FALSE(v.blobs.count(blob));
  for (const auto& blob : message_blobs(*v.repo, b.content)) EXPECT_TRUE(v.blobs.count(blob));
  unsetenv("REDUIT_NOW");
}

// forget killed after writing the archive and after its first snapshot delete: the
// vault checks, the archive holds each message once, and the rerun finishes.
TEST(Retention, ForgetKilledAfterEachStepArchivesEachMessageOnceAndFinishesOnRerun) {
  for (const std::string fault : {"forget:after-archive-write", "forget:after-snapshot-delete#1"}) {
    SCOPED_TRACE(fault);
    RetentionSite rs(kFaultPolicy);
    std::mt19937_64 rng(7);
    const std::int64_t t0 = at("2024-05-01T02:00:00Z");
    std::vector<Msg> msgs;
    for (int d = 0; d < 4; ++d) {
      msgs.push_back(rs.mailbox().deliver("", t0 + d * kDayNs - 3600LL * 1000000000, 300, rng));
      if (d > 0) rs.mailbox().remove(msgs[d - 1]);  // each message lives one day
      set_now(t0 + d * kDayNs);
      if (d == 0) rs.site().init();
      rs.ok({"backup"});
    }
    setenv("REDUIT_FAULT", fault.c_str(), 1);
    RunResult crashed = rs.run({"forget"});
    unsetenv("REDUIT_FAULT");
    ASSERT_EQ(crashed.status, 99) << crashed.err;
    EXPECT_EQ(rs.run({"check"}).status, 0);
    RunResult again = rs.run({"forget"});
    ASSERT_EQ(again.status, 1) << again.err;  // broke the crashed run's lease
    EXPECT_EQ(again.json()["kept"], 2);
    EXPECT_EQ(rs.ok({"snapshots"}).size(), 2u);
    EXPECT_EQ(rs.run({"check"}).status, 0);
    // The two forgotten snapshots held msgs[0] and msgs[1]: archived once each.
    EXPECT_EQ(events(rs.site(), "archive-message").size(), 2u);
    TempDir out;
    nlohmann::json a = rs.ok({"archive", "restore", "--mailbox", "alice@example.ch", "--to",
                              out.path() + "/a", "--gnupghome", rs.archive_home()});
    EXPECT_EQ(a["from_archive_only"], 2);
    std::multiset<std::string> want;
    for (const Msg& m : msgs) want.insert(sha_hex(m.content));
    EXPECT_EQ(restored_messages(out.path() + "/a"), want);
  }
  unsetenv("REDUIT_NOW");
}

// A message past its maximum that is still in the mailbox: prune deletes it from
// the vault (rewriting the snapshots), and the next backup, whose caches must not
// name the deleted blobs, stores it again: the vault checks and restores.
TEST(Retention, MessageStillInTheMailboxPastItsMaximumIsDeletedAndBackedUpAgainConsistently) {
  RetentionSite rs(kFaultPolicy);
  std::mt19937_64 rng(8);
  const std::int64_t t0 = at("2024-05-01T02:00:00Z");
  Msg a = rs.mailbox().deliver(".Private", t0 - kDayNs, 3000, rng);
  Msg b = rs.mailbox().deliver("", t0 - kDayNs, 300, rng);
  set_now(t0);
  rs.site().init();
  rs.ok({"backup"});
  set_now(t0 + 40 * kDayNs);
  rs.ok({"backup"});
  nlohmann::json p = rs.prune();
  EXPECT_EQ(p["messages_expired"], 1);
  EXPECT_EQ(p["snapshots_rewritten"], 2);
  {
    VaultContents v = decrypt_every_pack(rs.site());
    for (const auto& blob : message_blobs(*v.repo, a.content)) EXPECT_FALSE(v.blobs.count(blob));
  }
  set_now(t0 + 41 * kDayNs);
  nlohmann::json bk = rs.ok({"backup"});
  EXPECT_EQ(bk["messages"], 2);
  EXPECT_EQ(rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()}).status, 0);
  TempDir out;
  ASSERT_EQ(rs.site().restore("alice@example.ch", out.path() + "/r").status, 0);
  EXPECT_EQ(restored_messages(out.path() + "/r"),
            (std::multiset<std::string>{sha_hex(a.content), sha_hex(b.content)}));
  unsetenv("REDUIT_NOW");
}

// A file stored as a librsync delta chain (a growing dovecot-uidlist) keeps its
// whole chain and its base's signature through forget and prune: the kept
// snapshot restores it byte for byte and the vault checks. Found when merging
// retention with the delta work: prune counted only header/body/blob ids.
TEST(Retention, PruneKeepsTheDeltaChainsOfKeptSnapshots) {
  RetentionSite rs(kFaultPolicy);
  std::mt19937_64 rng(9);
  const std::string uidlist = rs.mailbox().dir() + "/dovecot-uidlist";
  std::string text = "3 V1700000000 N1 Gabc\n";
  std::int64_t t = at("2024-05-01T02:00:00Z");
  for (int day = 0; day < 4; ++day) {
    // 600 records (21 KiB, above delta.min_size) first, then 100 more each day.
    static int uid = 0;
    for (int i = 0; i < (day == 0 ? 600 : 100); ++i, ++uid)
      text += std::to_string(uid + 1) + " :1700000000.M" + std::to_string(uid) + "P1.sim,S=1234\n";
    reduit::test::write_file(uidlist, text);
    rs.mailbox().deliver("", t - 3600LL * 1000000000, 100, rng);
    set_now(t);
    if (day == 0) rs.site().init();
    nlohmann::json b = rs.ok({"backup"});
    EXPECT_EQ(b["delta_files"], day == 0 ? 0 : 1) << "day " << day;
    t += kDayNs;
  }
  auto distinct_trees = [&] {
    SQLite::Database db(rs.site().path("state/catalog.sqlite"));
    return db.execAndGet("SELECT COUNT(DISTINCT tree) FROM tree_messages").getInt();
  };
  EXPECT_EQ(distinct_trees(), 4);  // one INBOX tree per day (a new message each day)
  rs.ok({"forget"});               // keep-last 2: the chain's base is only in forgotten snapshots
  nlohmann::json p = rs.prune();
  // `find` forgets the message locations of forgotten snapshots' trees.
  EXPECT_EQ(distinct_trees(), 2);
  EXPECT_GT(p["packs_deleted"].get<int>() + p["packs_repacked"].get<int>(), 0) << p;
  RunResult check = rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()});
  EXPECT_EQ(check.status, 0) << check.err << check.out;
  TempDir out;
  RunResult r = rs.site().restore("alice@example.ch", out.path() + "/alice");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(sha_hex(reduit::test::read_file(out.path() + "/alice/dovecot-uidlist")), sha_hex(text));
  unsetenv("REDUIT_NOW");
}

// The index plan (FORMAT.md §12.4 step 4): full untouched objects stay; touched and
// small ones are replaced and their staying packs carried, each pack once.
TEST(Retention, IndexPlanKeepsFullUntouchedObjectsAndCarriesTheRest) {
  auto h = [](int n) {
    reduit::Hash x{};
    x[0] = static_cast<std::uint8_t>(n >> 8);
    x[1] = static_cast<std::uint8_t>(n);
    return x;
  };
  auto object = [&](int id, int first_pack, int count) {
    reduit::IndexObject o;
    o.id = h(60000 + id);
    for (int i = 0; i < count; ++i)
      o.packs.push_back(reduit::IndexPack{h(first_pack + i), 100, reduit::PackKind::kData, {}});
    return o;
  };
  std::vector<reduit::IndexObject> objects{
      object(1, 0, 64),    // full, untouched: kept
      object(2, 100, 40),  // 40 packs, pack 120 deleted: replaced
      object(3, 200, 32),  // exactly half full, untouched: kept
      object(4, 300, 31),  // untouched but small: replaced (merged)
      object(5, 400, 3),   // a nightly backup's: replaced
      object(6, 10, 40),   // names packs 10..49 again (object 1 lists them first), untouched: replaced
  };
  std::set<reduit::Hash> stays;
  for (const auto& o : objects) {
    for (const auto& p : o.packs) stays.insert(p.id);
  }
  stays.erase(h(120));
  stays.erase(h(401));
  reduit::IndexPlan plan = reduit::plan_indexes(objects, stays);
  EXPECT_EQ(plan.keep, (std::vector<reduit::Hash>{h(60001), h(60003)}));
  EXPECT_EQ(plan.replace, (std::vector<reduit::Hash>{h(60002), h(60004), h(60005), h(60006)}));
  std::vector<reduit::Hash> carry;
  for (int i = 100; i < 140; ++i) {
    if (i != 120) carry.push_back(h(i));
  }
  for (int i = 300; i < 331; ++i) carry.push_back(h(i));
  carry.push_back(h(400));
  carry.push_back(h(402));  // and nothing of object 6: object 1, kept, names its packs
  EXPECT_EQ(plan.carry, carry);
  // An object naming a pack twice (a foreign or damaged index) is rewritten, naming
  // it once; a full object naming again a pack first listed by a replaced one too.
  std::vector<reduit::IndexObject> twice{object(7, 500, 40), object(8, 600, 3), object(9, 602, 40)};
  twice[0].packs.push_back(twice[0].packs[5]);  // pack 505 again
  std::set<reduit::Hash> all;
  for (const auto& o : twice) {
    for (const auto& p : o.packs) all.insert(p.id);
  }
  plan = reduit::plan_indexes(twice, all);
  EXPECT_EQ(plan.keep, (std::vector<reduit::Hash>{}));
  EXPECT_EQ(plan.replace, (std::vector<reduit::Hash>{h(60007), h(60008), h(60009)}));
  carry.clear();
  for (int i = 500; i < 540; ++i) carry.push_back(h(i));
  for (int i = 600; i < 642; ++i) carry.push_back(h(i));  // 602 once: object 8 lists it first
  EXPECT_EQ(plan.carry, carry);
  // Nothing stays: every object is replaced, nothing carried.
  plan = reduit::plan_indexes(objects, {});
  EXPECT_EQ(plan.keep.size(), 0u);
  EXPECT_EQ(plan.replace.size(), 6u);
  EXPECT_EQ(plan.carry.size(), 0u);
}

// A prune rewrites only the index objects it touches (and merges the small ones):
// the first backup's object of 40+ packs survives a prune that expires a message of
// a later backup, and the vault still checks and restores.
TEST(Retention, PruneKeepsAFullIndexObjectItDoesNotTouch) {
  std::string policy = kFaultPolicy;
  policy.replace(policy.find("keep-last = 2"), 13, "keep-last = 9");
  RetentionSite rs(policy, "[pack]\nsize = 4096\n");
  std::mt19937_64 rng(12);
  const std::int64_t t0 = at("2024-05-01T02:00:00Z");
  std::vector<Msg> inbox;
  for (int i = 0; i < 40; ++i) inbox.push_back(rs.mailbox().deliver("", t0 - kDayNs, 5000, rng));
  set_now(t0);
  rs.site().init();
  rs.ok({"backup"});
  auto index_objects = [&] {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(rs.site().vault_dir() + "/index"))
      names.insert(e.path().filename().string());
    return names;
  };
  const std::set<std::string> first = index_objects();
  ASSERT_EQ(first.size(), 1u);  // 40 data packs (one message each: pack.size 4096) and the trees
  Msg p1 = rs.mailbox().deliver(".Private", t0, 5000, rng);
  set_now(t0 + kDayNs);
  rs.ok({"backup"});
  rs.mailbox().remove(p1);
  set_now(t0 + 2 * kDayNs);
  rs.ok({"backup"});
  set_now(t0 + 40 * kDayNs);  // p1 is past the private class's 30-day maximum
  const std::size_t before = index_objects().size();
  // Killed between writing the new index object and deleting the replaced ones, or
  // just after: the vault checks, and the next prune finishes.
  const std::string vault = rs.site().vault_dir(), state = rs.site().path("state");
  TempDir saved;
  reduit::test::copy_tree(vault, saved.path() + "/vault");
  reduit::test::copy_tree(state, saved.path() + "/state");
  for (const char* fault : {"prune:after-index-write", "prune:after-index-delete"}) {
    SCOPED_TRACE(fault);
    setenv("REDUIT_FAULT", fault, 1);
    RunResult crashed = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
    unsetenv("REDUIT_FAULT");
    ASSERT_EQ(crashed.status, 99) << crashed.err;
    EXPECT_EQ(index_objects().count(*first.begin()), 1u);
    RunResult c = rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()});
    EXPECT_EQ(c.status, 0) << c.out << c.err;
    RunResult again = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
    ASSERT_TRUE(again.status == 0 || again.status == 1) << again.err;  // 1: it broke the stale lease
    EXPECT_EQ(index_objects().count(*first.begin()), 1u);
    EXPECT_EQ(index_objects().size(), 2u);
    EXPECT_EQ(rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()}).status, 0);
    fs::remove_all(vault);
    fs::remove_all(state);
    reduit::test::copy_tree(saved.path() + "/vault", vault);
    reduit::test::copy_tree(saved.path() + "/state", state);
  }
  nlohmann::json p = rs.prune();
  EXPECT_EQ(p["messages_expired"], 1) << p.dump();
  EXPECT_EQ(p["snapshots_rewritten"], 1);
  // The rewritten snapshot's trees came with an index object of their own.
  EXPECT_EQ(p["index_objects_before"], before + 1);
  EXPECT_EQ(p["index_objects_kept"], 1);
  EXPECT_EQ(p["index_objects_written"], 1);
  std::set<std::string> after = index_objects();
  EXPECT_EQ(after.size(), 2u);
  EXPECT_EQ(after.count(*first.begin()), 1u);
  {
    VaultContents v = decrypt_every_pack(rs.site());
    for (const auto& b : message_blobs(*v.repo, p1.content)) EXPECT_FALSE(v.blobs.count(b));
    for (const Msg& m : inbox) {
      for (const auto& b : message_blobs(*v.repo, m.content)) EXPECT_TRUE(v.blobs.count(b)) << m.name;
    }
  }
  RunResult check = rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()});
  EXPECT_EQ(check.status, 0) << check.err << check.out;
  std::multiset<std::string> want;
  for (const Msg& m : inbox) want.insert(sha_hex(m.content));
  RunResult snaps = rs.run({"snapshots"});
  ASSERT_EQ(snaps.status, 0) << snaps.err;
  ASSERT_EQ(snaps.json().size(), 3u);
  for (const auto& s : snaps.json()) {
    TempDir out;
    RunResult r = rs.site().restore("alice@example.ch", out.path() + "/alice", s["id"]);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(restored_messages(out.path() + "/alice"), want) << s["id"];
  }
  // Nothing left to do: every object stays.
  nlohmann::json again = rs.prune();
  EXPECT_EQ(again["index_objects_before"], 2);
  EXPECT_EQ(again["index_objects_kept"], 2);
  EXPECT_EQ(again["index_objects_written"], 0);
  EXPECT_EQ(index_objects(), after);
  unsetenv("REDUIT_NOW");
}

// Deletion evidence for messages that leave with a forgotten snapshot: one whose
// class has no minimum (kept only while a snapshot holds it) and one whose class
// maximum was already over. Before, forget recorded neither (no archive record was
// needed) and the blobs left with the next prune, so reports under-counted what
// was destroyed. Found by the year report scenario.
TEST(Retention, ForgetRecordsEveryMessageThatLeavesTheVaultWithItsSnapshots) {
  RetentionSite rs(R"(name = "evidence"
time_zone = "UTC"
[snapshots]
keep-last = 1
[[archive.class]]
name = "junk"
folders = [".Junk"]
[[archive.class]]
name = "private"
folders = [".Private"]
minimum = "1d"
maximum = "2d"
basis = "date"
[[archive.class]]
name = "business"
folders = ["*"]
minimum = "10y"
basis = "date"
)");
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(rs.mailbox().dir() + "/.Junk/" + d);
  reduit::test::write_file(rs.mailbox().dir() + "/.Junk/maildirfolder", "");
  std::mt19937_64 rng(11);
  const std::int64_t t0 = at("2025-03-10T02:00:00Z");
  Msg junk = rs.mailbox().deliver(".Junk", t0 - kDayNs, 500, rng);
  Msg priv = rs.mailbox().deliver(".Private", t0 - 10 * kDayNs, 500, rng);
  Msg biz = rs.mailbox().deliver("", t0 - 10 * kDayNs, 500, rng);
  set_now(t0);
  rs.site().init();
  rs.ok({"backup"});
  rs.mailbox().remove(junk);
  rs.mailbox().remove(priv);
  rs.mailbox().remove(biz);
  set_now(t0 + 3600LL * 1000000000);
  rs.ok({"backup"});
  nlohmann::json f = rs.ok({"forget"});
  EXPECT_EQ(f["removed"], 1);
  EXPECT_EQ(f["archived_messages"], 1);  // biz: 10 years
  EXPECT_EQ(f["messages_deleted"], 2);

  std::vector<Event> del = events(rs.site(), "delete-message");
  ASSERT_EQ(del.size(), 2u);
  std::map<std::string, Event> by_class;
  for (const auto& e : del) by_class[e.klass] = e;
  ASSERT_EQ(by_class.count("junk"), 1u);
  ASSERT_EQ(by_class.count("private"), 1u);
  const std::string uj = junk.name.substr(0, junk.name.find(':')),
                    up = priv.name.substr(0, priv.name.find(':'));
  EXPECT_EQ(by_class["junk"].object, "alice@example.ch/.Junk/" + uj);
  EXPECT_EQ(by_class["junk"].rule, "no archive minimum: kept while a snapshot holds it");
  EXPECT_EQ(by_class["junk"].detail, sha_hex(junk.content));
  EXPECT_EQ(by_class["private"].object, "alice@example.ch/.Private/" + up);
  EXPECT_EQ(by_class["private"].rule, "maximum 2d from date over when its last snapshot was forgotten");
  EXPECT_EQ(by_class["private"].detail, sha_hex(priv.content));

  // The audit entry carries the count and the Merkle root of what left.
  nlohmann::json a = rs.ok({"audit", "show", "--event", "forget"});
  ASSERT_EQ(a.size(), 1u);
  const nlohmann::json& d = a[0]["data"];
  EXPECT_EQ(d["messages_destroyed"], 2);
  EXPECT_EQ(
      d["destroyed_root"],
      reduit::to_hex(reduit::merkle_root({reduit::sha256(junk.content), reduit::sha256(priv.content)})));
  EXPECT_EQ(d["by_rule"],
            (nlohmann::json{{"no archive minimum: kept while a snapshot holds it", 1},
                            {"maximum 2d from date over when its last snapshot was forgotten", 1}}));
  unsetenv("REDUIT_NOW");
}

// A forget that removes nothing, on a catalog that has never had a retention run:
// its audit entry says so (it failed with "no such table: retention_events" on day
// 27 of the three-year simulation).
TEST(Retention, ForgetThatRemovesNothingIsAuditedWithEmptyEvidence) {
  RetentionSite rs;
  std::mt19937_64 rng(3);
  const std::int64_t t0 = at("2025-01-06T02:00:00Z");
  rs.mailbox().deliver("", t0 - kDayNs, 100, rng);
  set_now(t0);
  rs.site().init();
  rs.ok({"backup"});
  nlohmann::json f = rs.ok({"forget"});
  EXPECT_EQ(f["removed"], 0);
  EXPECT_EQ(f["messages_deleted"], 0);
  nlohmann::json a = rs.ok({"audit", "show", "--event", "forget"});
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]["data"]["messages_destroyed"], 0);
  EXPECT_EQ(a[0]["data"]["destroyed_root"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(a[0]["data"]["retention_run"], 0);
  EXPECT_EQ(a[0]["data"]["removed"], nlohmann::json::array());
  unsetenv("REDUIT_NOW");
}
