// `reduit report` must-show 2: a year run on the controllable clock (REDUIT_NOW) —
// weekly backups with forget and prune every 4 weeks, a legal hold, a restore, a
// check, quarterly drills, one failed backup and one failed drill — gives a report
// whose figures the test computes itself from the scenario (never copied from the
// output); the failed backup and the failed drill appear as findings.
//
// Needs the audit hooks (docs/AUDIT.md events written by backup, drill, restore,
// check and hold): the report reads backups, drills, checks and access from the
// audit log.
#include <gtest/gtest.h>
#include <unistd.h>

#include "support/retention_site.hpp"
#include "vault/audit.hpp"

namespace {

// Weekly snapshots kept 13 weeks (91 days): longer than the private maximum (60
// days) plus the prune interval (28 days), so every private message expires while
// a kept snapshot holds it and prune records its deletion. (A message whose last
// snapshot is forgotten after its maximum is dropped by forget without an
// archive record, and its blobs go with the packs, without a `delete-message` row:
// see the report notes.)
const char* kPolicy = R"(name = "scenario"
time_zone = "UTC"
[snapshots]
keep-daily = 7
keep-weekly = 13
keep-monthly = 12
[[archive.class]]
name = "private"
folders = [".Private"]
minimum = "30d"
maximum = "60d"
basis = "date"
[[archive.class]]
name = "business"
folders = ["*"]
minimum = "10y"
basis = "financial-year-end"
[compliance]
rpo = "8d"
drill-every = "92d"
jurisdictions = ["CH"]
)";

std::string flip_byte(const std::string& path) {
  std::string orig = reduit::test::read_file(path), bad = orig;
  bad[bad.size() / 2] ^= 0x01;
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  reduit::test::write_file(path, bad);
  return orig;
}

std::string biggest_pack(const std::string& vault) {
  std::string best;
  std::uintmax_t size = 0;
  for (const auto& e : fs::recursive_directory_iterator(vault + "/packs"))
    if (e.is_regular_file() && e.file_size() > size) {
      size = e.file_size();
      best = e.path().string();
    }
  return best;
}

}  // namespace

TEST(ReportYear, EveryFigureMatchesTheScenarioAndFailuresAreFindings) {
  TempDir tmp;
  const std::string policy = tmp.path() + "/policy.toml";
  reduit::test::write_file(policy, kPolicy);
  const std::string mail = tmp.path() + "/mail";
  Mailbox mb(mail);
  Site site({mail}, "%d/%n", "", "operator = \"Vault AG\"\njurisdiction = \"CH\"",
            "policy = \"" + policy + "\"\n[organisation]\nname = \"Example AG\"\ncountry = \"CH\"\n");
  std::mt19937_64 rng(2025);
  auto day = [](int d) { return at("2025-01-01T02:00:00Z") + d * kDayNs; };
  auto run_ok = [&](const std::vector<std::string>& args) {
    RunResult r = site.reduit(args);
    EXPECT_EQ(r.status, 0) << args[0] << ": " << r.err;
    return r;
  };
  const std::string archive_home = site.keys().archive_home->path();

  struct Private {
    Msg msg;
    int delivered;
    bool removed = false, destroyed = false;
  };
  std::vector<Msg> inbox;
  std::vector<Private> priv;
  std::vector<std::int64_t> good_backups, failed_backups, prunes;
  std::vector<std::int64_t> drills_passed, drills_failed;
  std::vector<reduit::Hash> destroyed;
  std::uint64_t destroyed_bytes = 0, refused = 0;
  std::string hold_id;
  int forget_runs = 0;  // forget runs that removed a snapshot (only those are logged)
  const int kFailedBackupDay = 140, kFailedDrillDay = 200;

  set_now(day(0));
  site.init();
  for (int d = 0; d <= 364; d += 7) {
    // Mail of the week: one business message, one private one (removed after two weeks).
    inbox.push_back(mb.deliver("", day(d) - 3600LL * 1000000000, 400, rng));
    priv.push_back({mb.deliver(".Private", day(d) - 3600LL * 1000000000, 300, rng), d});
    for (auto& p : priv)
      if (!p.removed && d >= p.delivered + 14) {
        mb.remove(p.msg);
        p.removed = true;
      }
    set_now(day(d));
    if (d == kFailedBackupDay) {
      fs::rename(mail, mail + ".away");  // the mail store is not mounted: exit 7
      EXPECT_EQ(site.reduit({"backup"}).status, 7);
      fs::rename(mail + ".away", mail);
      failed_backups.push_back(day(d));
    } else {
      run_ok({"backup"});
      good_backups.push_back(day(d));
    }
    if (d == 14) {  // a legal hold on the private message of day 7 (dated 2025-01-08 01:00 UTC)
      set_now(day(d) + 600LL * 1000000000);
      hold_id = run_ok({"hold", "add", "--mailbox", "alice@example.ch", "--folder", ".Private", "--from",
                        "2025-01-08", "--to", "2025-01-08", "--reason", "case 2025-3"})
                    .json()["id"];
    }
    if (d > 0 && d % 28 == 0) {
      set_now(day(d) + 3600LL * 1000000000);
      if (run_ok({"forget"}).json()["removed"].get<int>() > 0) ++forget_runs;
      run_ok({"prune", "--archive-gnupghome", archive_home});
      const std::int64_t t = day(d) + 3600LL * 1000000000;
      prunes.push_back(t);
      // Ground truth: a private message is destroyed by the first prune at or after
      // its Date + 60 days, unless the hold covers it (then each prune refuses once).
      for (auto& p : priv) {
        if (p.destroyed || p.msg.date_ns + 60 * kDayNs > t) continue;
        if (p.delivered == 7) {
          ++refused;
          continue;
        }
        p.destroyed = true;
        destroyed.push_back(reduit::sha256(p.msg.content));
        destroyed_bytes += p.msg.content.size();
      }
    }
    if (d == 77 || d == 168 || d == 259 || d == 350) {  // quarterly drills
      set_now(day(d) + 7200LL * 1000000000);
      run_ok({"drill", "--mailbox", "alice@example.ch", "--pack-share", "0", "--gnupghome", archive_home});
      drills_passed.push_back(day(d) + 7200LL * 1000000000);
    }
    if (d == kFailedDrillDay + 3) {  // one drill on a damaged pack, repaired afterwards
      const std::string pack = biggest_pack(site.vault_dir());
      std::string orig = flip_byte(pack);
      set_now(day(d) + 9000LL * 1000000000);
      EXPECT_EQ(site.reduit({"drill", "--mailbox", "alice@example.ch", "--pack-share", "0", "--gnupghome",
                             archive_home})
                    .status,
                6);
      drills_failed.push_back(day(d) + 9000LL * 1000000000);
      reduit::test::write_file(pack, orig);
    }
    if (d == 182) {
      set_now(day(d) + 9000LL * 1000000000);
      TempDir to;
      run_ok({"restore", "--mailbox", "alice@example.ch", "--to", to.path() + "/r", "--gnupghome",
              archive_home});
      run_ok({"check"});
    }
  }
  set_now(at("2026-01-05T09:00:00Z"));
  const std::string out = tmp.path() + "/report.json";
  RunResult rr = site.reduit({"report", "--period", "2025", "--format", "json", "--out", out});
  EXPECT_EQ(rr.status, 1) << rr.err;  // findings not met
  nlohmann::json r = nlohmann::json::parse(reduit::test::read_file(out));
  // The same report as HTML, kept beside the test's working directory for a human look.
  fs::create_directories("report-screenshots");
  const std::string html = (fs::current_path() / "report-screenshots" / "year-2025.html").string();
  EXPECT_EQ(site.reduit({"report", "--period", "2025", "--out", html}).status, 1);
  std::printf("[ report ] %s\n", html.c_str());
  {
    // The HTML prints the JSON's figures.
    const std::string h = reduit::test::read_file(html);
    auto kv = [&](const std::string& k, const std::string& v) {
      EXPECT_NE(h.find("<th>" + k + "</th><td class=\"n\">" + v + "</td>"), std::string::npos)
          << k << " " << v;
    };
    kv("messages_destroyed", std::to_string(r["deletions"]["messages_destroyed"].get<int>()));
    kv("worst_gap_seconds", std::to_string(14 * 86400));
    kv("failed", "1");
    EXPECT_NE(h.find(r["deletions"]["merkle_root"].get<std::string>()), std::string::npos);
  }
  // The year's JSON validates against the schema; its HTML renders without errors.
  if (access("/usr/bin/python3", X_OK) == 0) {
    reduit::test::write_file(tmp.path() + "/v.py",
                             "import json,sys,jsonschema\n"
                             "jsonschema.Draft202012Validator(json.load(open(sys.argv[1]))).validate("
                             "json.load(open(sys.argv[2])))\n");
    RunResult v = reduit::test::run_command({"/usr/bin/python3", tmp.path() + "/v.py",
                                             reduit::test::source_dir() + "/docs/report-schema.json", out});
    EXPECT_EQ(v.status, 0) << v.err;
    RunResult c = reduit::test::run_command({"/usr/bin/python3",
                                             reduit::test::source_dir() + "/tests/support/render_html.py",
                                             html, html + ".png"});
    if (c.status != 77) {
      EXPECT_EQ(c.status, 0) << c.out << c.err;
    }
  }

  // Availability: backups.
  const auto& b = r["availability"]["backups"];
  EXPECT_EQ(b["source"], "audit_log");
  EXPECT_EQ(b["runs"], good_backups.size() + failed_backups.size());
  EXPECT_EQ(b["ok"], good_backups.size());
  EXPECT_EQ(b["failed"], 1);
  EXPECT_EQ(b["rpo_seconds"], 8 * 86400);
  EXPECT_EQ(b["worst_gap"]["seconds"], 14 * 86400);
  EXPECT_EQ(b["worst_gap"]["from"], iso(day(kFailedBackupDay - 7)));
  EXPECT_EQ(b["worst_gap"]["to"], iso(day(kFailedBackupDay + 7)));
  std::vector<std::string> failed_times;
  for (const auto& x : b["list"])
    if (x["result"] != "ok") failed_times.push_back(x["time"]);
  EXPECT_EQ(failed_times, std::vector<std::string>{iso(day(kFailedBackupDay))});

  // Drills: pseudonymised mailbox, results.
  reduit::Repository repo(reduit::open_transport(site.url(), {}), archive_home);
  repo.load_config();
  const std::string pseudonym =
      "mailbox-" +
      reduit::to_hex(reduit::hmac_sha256(repo.config().id_key, "alice@example.ch", 16)).substr(0, 8);
  const auto& dr = r["availability"]["drills"];
  EXPECT_EQ(dr["runs"], drills_passed.size() + drills_failed.size());
  EXPECT_EQ(dr["passed"], drills_passed.size());
  EXPECT_EQ(dr["failed"], 1);
  for (const auto& x : dr["list"]) {
    EXPECT_EQ(x["mailbox"], pseudonym);
    if (x["result"] != "passed") {
      EXPECT_EQ(x["time"], iso(drills_failed[0]));
    }
  }

  // Deletion evidence: exactly the expired private messages, with their Merkle root.
  const auto& del = r["deletions"];
  EXPECT_EQ(del["prune_runs"], prunes.size());
  EXPECT_EQ(del["forget_runs"], forget_runs);
  EXPECT_EQ(del["messages_destroyed"], destroyed.size());
  EXPECT_EQ(del["message_bytes_destroyed"], destroyed_bytes);
  EXPECT_EQ(del["merkle_root"], reduit::to_hex(reduit::merkle_root(destroyed)));
  ASSERT_EQ(del["by_rule"].size(), 1u);
  EXPECT_EQ(del["by_rule"][0]["class"], "private");
  EXPECT_EQ(del["by_rule"][0]["rule"], "maximum 60d from date");
  EXPECT_EQ(del["by_rule"][0]["merkle_root"], reduit::to_hex(reduit::merkle_root(destroyed)));
  EXPECT_EQ(del["refused"].size(), refused);
  for (const auto& x : del["refused"]) EXPECT_EQ(x["sha256"], sha_hex(priv[1].msg.content));

  // Retention state: the hold, the newest snapshot's INBOX.
  ASSERT_EQ(r["retention"]["holds"].size(), 1u);
  EXPECT_EQ(r["retention"]["holds"][0]["id"], hold_id);
  EXPECT_EQ(r["retention"]["holds"][0]["active"], true);
  EXPECT_EQ(r["retention"]["holds"][0]["reason"], "case 2025-3");
  std::uint64_t inbox_bytes = 0;
  for (const auto& m : inbox) inbox_bytes += m.content.size();
  bool saw_business = false;
  for (const auto& m : r["retention"]["mailboxes"]) {
    if (m["class"] != "business") continue;
    saw_business = true;
    EXPECT_EQ(m["messages"], inbox.size());
    EXPECT_EQ(m["bytes"], inbox_bytes);
    EXPECT_EQ(m["oldest"], iso(inbox.front().date_ns));
    EXPECT_EQ(m["newest"], iso(inbox.back().date_ns));
  }
  EXPECT_TRUE(saw_business);

  // Integrity and access.
  EXPECT_EQ(r["integrity"]["checks"], 1);
  EXPECT_EQ(r["integrity"]["checks_failed"], 0);
  EXPECT_EQ(r["integrity"]["audit_chain_ok"], true);
  int restores = 0, hold_sets = 0;
  for (const auto& a : r["access"]) {
    if (a["event"] == "restore") {
      ++restores;
      EXPECT_EQ(a["time"], iso(day(182) + 9000LL * 1000000000));
    }
    if (a["event"] == "hold-set") ++hold_sets;
  }
  EXPECT_EQ(restores, 1);
  EXPECT_EQ(hold_sets, 1);

  // Findings: the failed backup and the failed drill are "not met" with their row.
  std::map<std::string, nlohmann::json> f;
  for (const auto& x : r["findings"]["list"]) f[x["id"]] = x;
  EXPECT_EQ(f["backup-failures"]["status"], "not met");
  ASSERT_EQ(f["backup-failures"]["evidence"].size(), 1u) << f["backup-failures"];
  ASSERT_EQ(f["drill-failures"]["evidence"].size(), 1u) << f["drill-failures"];
  EXPECT_EQ(f["backup-failures"]["evidence"][0].get<std::string>().find(iso(day(kFailedBackupDay))), 22u)
      << f["backup-failures"];
  EXPECT_EQ(f["backup-rpo"]["status"], "not met");
  EXPECT_EQ(f["drill-failures"]["status"], "not met");
  EXPECT_NE(f["drill-failures"]["evidence"][0].get<std::string>().find(iso(drills_failed[0])),
            std::string::npos);
  EXPECT_EQ(f["drill-every"]["status"], "met");  // days 77, 168, 259, 350: never 92 days apart
  EXPECT_EQ(f["vault-jurisdiction"]["status"], "met");
  EXPECT_EQ(f["retention-maximum"]["status"], "met");
  EXPECT_EQ(f["audit-chain"]["status"], "met");
  EXPECT_EQ(f["snapshot-rules"]["status"], "met");
  EXPECT_EQ(f["snapshot-rules"]["actual"], std::to_string(prunes.size()) + " forget run(s), " +
                                               std::to_string(del["snapshots_forgotten"].get<int>()) +
                                               " snapshots forgotten");
  unsetenv("REDUIT_NOW");
}
