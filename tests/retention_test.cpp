// End-to-end retention tests with the real binary, real gpg keys, a real SQLite
// catalog and a controllable clock (REDUIT_NOW): must-show 2–5 of the retention
// issue (3-year simulation and vault-size curve, legal hold, crash at every prune
// step), plus forget's output and the policy errors on the command line.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "retention/policy.hpp"
#include "support/harness.hpp"
#include "support/site.hpp"
#include "vault/clock.hpp"
#include "vault/format.hpp"
#include "vault/repository.hpp"

namespace fs = std::filesystem;
using reduit::test::RunResult;
using reduit::test::Site;
using reduit::test::TempDir;

namespace {

constexpr std::int64_t kDayNs = 86400LL * 1000000000;

std::string iso(std::int64_t ns) {
  std::time_t t = ns / 1000000000;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string rfc5322(std::int64_t ns) {
  std::time_t t = ns / 1000000000;
  char buf[48];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", std::gmtime(&t));
  return buf;
}

std::int64_t at(const std::string& s) {
  return *reduit::parse_instant(s);
}

// Sets REDUIT_NOW for every reduit run until the next call.
void set_now(std::int64_t ns) {
  setenv("REDUIT_NOW", iso(ns).c_str(), 1);
}

struct Msg {
  std::string folder;  // "" = INBOX
  std::string name;    // file name in cur/
  std::string content;
  std::int64_t date_ns;
};

// One mailbox alice@example.ch under root/example.ch/alice with INBOX and .Private.
class Mailbox {
 public:
  explicit Mailbox(const std::string& root) : dir_(root + "/example.ch/alice") {
    for (const char* f : {"", "/.Private"}) {
      for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(dir_ + f + "/" + d);
    }
    reduit::test::write_file(dir_ + "/.Private/maildirfolder", "");
  }
  // Delivers a message dated `date_ns`; `pad` bytes of incompressible body.
  Msg deliver(const std::string& folder, std::int64_t date_ns, std::size_t pad, std::mt19937_64& rng) {
    std::string uname = std::to_string(date_ns / 1000000000) + ".M" + std::to_string(++seq_) + "P1.sim";
    std::string body;
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    for (std::size_t i = 0; i < pad; ++i) body += kChars[rng() % 64];
    std::string content = "From: bob@example.org\nTo: alice@example.ch\nDate: " + rfc5322(date_ns) +
                          "\nMessage-ID: <" + uname + "@sim>\nSubject: message " + std::to_string(seq_) +
                          "\n\nBody of message " + std::to_string(seq_) + "\n" + body + "\n";
    Msg m{folder, uname + ":2,S", content, date_ns};
    std::string path = file(m);
    reduit::test::write_file(path, content);
    timespec ts[2] = {{date_ns / 1000000000, 0}, {date_ns / 1000000000, 0}};
    utimensat(AT_FDCWD, path.c_str(), ts, 0);
    return m;
  }
  void remove(const Msg& m) { fs::remove(file(m)); }
  std::string file(const Msg& m) const {
    return dir_ + (m.folder.empty() ? "" : "/" + m.folder) + "/cur/" + m.name;
  }

 private:
  std::string dir_;
  int seq_ = 0;
};

std::string sha_hex(const std::string& s) {
  return reduit::to_hex(reduit::sha256(s));
}

// SHA-256 of every message file restored below `dir`.
std::multiset<std::string> restored_messages(const std::string& dir) {
  std::multiset<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string parent = e.path().parent_path().filename();
    if (e.is_regular_file() && (parent == "cur" || parent == "new"))
      out.insert(sha_hex(reduit::test::read_file(e.path())));
  }
  return out;
}

std::uint64_t dir_bytes(const std::string& dir) {
  std::uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// Every blob id stored in any pack of the vault, by decrypting every pack with the
// archive key; also returns the vault's id key so expected ids can be computed.
struct VaultContents {
  std::set<reduit::Hash> blobs;
  std::size_t packs = 0;
  std::unique_ptr<reduit::Repository> repo;
};
VaultContents decrypt_every_pack(const Site& site) {
  VaultContents v;
  v.repo = std::make_unique<reduit::Repository>(reduit::open_transport(site.url(), {}),
                                                site.keys().archive_home->path());
  v.repo->load_config();
  for (const auto& [id, size] : v.repo->list_packs()) {
    reduit::LoadedPack p = v.repo->load_pack(id);
    for (const auto& e : p.entries) v.blobs.insert(v.repo->blob_bytes(p, e).empty() ? e.id : e.id);
    ++v.packs;
  }
  return v;
}

// The blob ids of a message (header block, body) under the vault's id key.
std::vector<reduit::Hash> message_blobs(const reduit::Repository& repo, const std::string& content) {
  std::size_t hl = reduit::header_block_length(content);
  std::vector<reduit::Hash> out{repo.blob_id(content.data(), hl)};
  if (hl < content.size()) out.push_back(repo.blob_id(content.data() + hl, content.size() - hl));
  return out;
}

struct Event {
  std::string action, object, klass, rule, detail;
};
std::vector<Event> events(const Site& site, const std::string& action) {
  SQLite::Database db(site.path("state/catalog.sqlite"), SQLite::OPEN_READONLY);
  SQLite::Statement q(db, "SELECT action, object, class, rule, detail FROM retention_events WHERE action=? "
                          "ORDER BY rowid");
  q.bind(1, action);
  std::vector<Event> out;
  while (q.executeStep()) {
    out.push_back({q.getColumn(0).getString(), q.getColumn(1).getString(), q.getColumn(2).getString(),
                   q.getColumn(3).getString(), q.getColumn(4).getString()});
  }
  return out;
}

const char* kSimPolicy = R"(name = "simulation"
time_zone = "Europe/Zurich"
[snapshots]
keep-daily = 30
keep-weekly = 26
keep-monthly = 84
[[archive.class]]
name = "private"
mailboxes = ["*"]
folders = [".Private"]
minimum = "1y"
maximum = "2y"
basis = "date"
[[archive.class]]
name = "business"
folders = ["*"]
minimum = "10y"
basis = "financial-year-end"
[prune]
repack-below = 0.5
)";

class RetentionSite {
 public:
  RetentionSite(const std::string& policy_text = kSimPolicy) {
    policy_ = tmp_.path() + "/policy.toml";
    reduit::test::write_file(policy_, policy_text);
    site_ = std::make_unique<Site>(std::vector<std::string>{tmp_.path() + "/mail"}, "%d/%n", "", "",
                                   "policy = \"" + policy_ + "\"");
    mailbox_ = std::make_unique<Mailbox>(tmp_.path() + "/mail");
  }
  Site& site() { return *site_; }
  Mailbox& mailbox() { return *mailbox_; }
  RunResult run(const std::vector<std::string>& args) { return site_->reduit(args); }
  nlohmann::json ok(const std::vector<std::string>& args) {
    RunResult r = run(args);
    EXPECT_EQ(r.status, 0) << r.err << r.out;
    return r.status == 0 ? r.json() : nlohmann::json::object();
  }
  nlohmann::json prune() {
    return ok({"prune", "--archive-gnupghome", site_->keys().archive_home->path()});
  }
  std::string archive_home() const { return site_->keys().archive_home->path(); }

 private:
  TempDir tmp_;
  std::string policy_;
  std::unique_ptr<Site> site_;
  std::unique_ptr<Mailbox> mailbox_;
};

}  // namespace

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
  rs.ok({"hold", "add", "--mailbox", "alice@example.ch", "--from", "2020-01-01", "--to", "2020-12-31", "--reason",
         "old case"});
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

struct SimMessage {
  Msg msg;
  int delivered = 0, removed = -1;  // sim days; -1 = still in the mailbox
};

struct SimPoint {
  int day;
  std::uint64_t vault_bytes, live_bytes, retained_bytes, snapshots;
};

}  // namespace

// Must-show 2 and 5: three years of daily backups at 03:00 Zurich time of a mailbox
// whose messages come and go (a third live a single day), the default snapshot
// schedule (daily 30, weekly 26, monthly 84), forget every week, prune every 4 weeks. INBOX is
// business correspondence (10y minimum from the end of the financial year);
// .Private has a 1y minimum and a 2y maximum from its Date header.
TEST(Retention, ThreeYearsOfDailyBackupsKeepEveryMessageForItsMinimumAndNothingPastItsMaximum) {
  const date::time_zone* zurich = reduit::find_time_zone("Europe/Zurich");
  const int days = std::getenv("REDUIT_SIM_DAYS") ? std::atoi(std::getenv("REDUIT_SIM_DAYS")) : 3 * 365;
  RetentionSite rs;
  std::mt19937_64 rng(2024);
  const std::int64_t start = at("2023-01-01T02:00:00Z");
  std::vector<SimMessage> all;
  std::vector<SimPoint> curve;
  auto t_begin = std::chrono::steady_clock::now();
  double backup_s = 0, retention_s = 0;
  std::uint64_t snapshots = 0;
  for (int d = 0; d < days; ++d) {
    const std::int64_t now = start + d * kDayNs;
    // Mail that leaves today (deleted, or moved out by the user), then today's mail.
    for (SimMessage& m : all) {
      if (m.removed == d) rs.mailbox().remove(m.msg);
    }
    auto lifetime = [&](bool may_stay) {
      std::uint64_t r = rng() % 100;
      if (r < 33) return 1;                            // lives a single day
      if (may_stay && r >= 90) return -1;               // stays in the mailbox
      return 2 + static_cast<int>(rng() % 180);         // up to half a year
    };
    for (int i = 0; i < 2; ++i) {
      SimMessage m{rs.mailbox().deliver("", now - 3600LL * 1000000000 * (1 + i), 1500, rng), d, -1};
      int life = lifetime(true);
      m.removed = life < 0 ? -1 : d + life;
      all.push_back(m);
    }
    if (d % 2 == 0) {
      SimMessage m{rs.mailbox().deliver(".Private", now - 1800LL * 1000000000, 1500, rng), d, -1};
      m.removed = d + lifetime(false);
      all.push_back(m);
    }
    set_now(now);
    auto t0 = std::chrono::steady_clock::now();
    if (d == 0) rs.site().init();
    RunResult b = rs.run({"backup"});
    ASSERT_EQ(b.status, 0) << "day " << d << ": " << b.err;
    auto t1 = std::chrono::steady_clock::now();
    backup_s += std::chrono::duration<double>(t1 - t0).count();
    if (d % 7 == 6 || d == days - 1) {
      RunResult f = rs.run({"forget"});
      ASSERT_EQ(f.status, 0) << "day " << d << ": " << f.err;
      snapshots = f.json()["kept"].get<std::uint64_t>();
    }
    if (d % 28 == 27 || d == days - 1) {
      RunResult p = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
      ASSERT_EQ(p.status, 0) << "day " << d << ": " << p.err;
      retention_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      SimPoint pt{d, dir_bytes(rs.site().vault_dir()), 0, 0, snapshots};
      for (const SimMessage& m : all) {
        bool live = m.removed < 0 || m.removed > d;
        bool expired = m.msg.folder == ".Private" && reduit::add_duration(m.msg.date_ns, {2, 0, 0, 0}, zurich) <= now;
        if (live) pt.live_bytes += m.msg.content.size();
        if (live || !expired) pt.retained_bytes += m.msg.content.size();
      }
      curve.push_back(pt);
    }
  }
  const std::int64_t end = start + (days - 1) * kDayNs;

  // Every message whose class still wants it restores; none past the maximum does.
  TempDir out;
  nlohmann::json a = rs.ok({"archive", "restore", "--mailbox", "alice@example.ch", "--to", out.path() + "/all",
                            "--gnupghome", rs.archive_home()});
  std::multiset<std::string> restored = restored_messages(out.path() + "/all");
  std::set<std::string> want, gone;
  std::vector<const SimMessage*> expired;
  for (const SimMessage& m : all) {
    bool past_max =
        m.msg.folder == ".Private" && reduit::add_duration(m.msg.date_ns, {2, 0, 0, 0}, zurich) <= end;
    (past_max ? gone : want).insert(sha_hex(m.msg.content));
    if (past_max) expired.push_back(&m);
  }
  std::set<std::string> restored_set(restored.begin(), restored.end());
  EXPECT_EQ(restored.size(), restored_set.size());  // one copy each
  EXPECT_EQ(restored_set, want);
  EXPECT_EQ(a["messages"], want.size());
  if (days >= 3 * 365) {
    EXPECT_GT(gone.size(), 100u);                         // the maximum really bit
    EXPECT_GT(a["from_archive_only"].get<int>(), 1000);  // the archive, not the snapshots, kept most
  }
  // Past-maximum messages: in no pack (every pack decrypted), and in the deletion records.
  VaultContents v = decrypt_every_pack(rs.site());
  std::size_t still_stored = 0;
  for (const SimMessage* m : expired) {
    for (const auto& b : message_blobs(*v.repo, m->msg.content)) still_stored += v.blobs.count(b);
  }
  EXPECT_EQ(still_stored, 0u);
  std::set<std::string> recorded;
  for (const Event& e : events(rs.site(), "delete-message")) {
    EXPECT_EQ(e.klass, "private");
    EXPECT_EQ(e.rule, "maximum 2y from date");
    recorded.insert(e.detail);
  }
  EXPECT_EQ(recorded, gone);
  EXPECT_EQ(rs.run({"check", "--read-data", "--gnupghome", rs.archive_home()}).status, 0);

  // Stored bytes follow the retained data, not the number of snapshots.
  std::printf("vault-size curve (every third prune, i.e. every 12 weeks; bytes):\n  %5s %10s %12s %12s %12s\n", "day", "snapshots",
              "live mail", "retained", "vault");
  for (std::size_t i = 0; i < curve.size(); ++i) {
    const SimPoint& p = curve[i];
    if (i % 3 == 2 || i + 1 == curve.size())
      std::printf("  %5d %10llu %12llu %12llu %12llu\n", p.day, (unsigned long long)p.snapshots,
                  (unsigned long long)p.live_bytes, (unsigned long long)p.retained_bytes,
                  (unsigned long long)p.vault_bytes);
    // Messages are ~1.7 KB of base64-like text (zstd leaves ~80%); metadata (trees,
    // indexes, snapshots, archive) is the rest. Bounded by the data, whatever the
    // snapshot count.
    EXPECT_LT(p.vault_bytes, p.retained_bytes + (4u << 20)) << "day " << p.day;
  }
  std::printf("simulated %d days: backups %.1f s, forget+prune %.1f s, total %.1f s\n", days, backup_s, retention_s,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count());
  unsetenv("REDUIT_NOW");
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
  for (const char* sub : {"cur", "new", "tmp"}) fs::create_directories(rs.site().path("../mail/example.ch/alice/.Junk/") + sub);
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
      for (const auto& blob : message_blobs(*v.repo, m->content)) EXPECT_FALSE(v.blobs.count(blob)) << m->name;
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
  std::vector<std::int64_t> times{at("2024-06-02T23:30:00Z"), at("2024-06-03T23:30:00Z"), at("2024-06-04T21:00:00Z"),
                                  at("2024-06-04T23:30:00Z")};
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
  auto now_s = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  reduit::test::write_file(lease, "{\"purpose\":\"backup\",\"host\":\"other-host\",\"pid\":4242,\"started\":" +
                                      std::to_string(now_s) + ",\"renewed\":" + std::to_string(now_s) +
                                      ",\"ttl\":900,\"nonce\":\"abc\"}");
  RunResult locked = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
  EXPECT_EQ(locked.status, 3) << locked.err;
  EXPECT_NE(locked.err.find("vault is locked by backup on other-host pid 4242"), std::string::npos) << locked.err;
  // The same lease from a dead pid on this host is stale: broken, and prune repacks.
  reduit::test::write_file(lease, "{\"purpose\":\"backup\",\"host\":\"" + reduit::local_hostname() +
                                      "\",\"pid\":999999,\"started\":" + std::to_string(now_s) +
                                      ",\"renewed\":" + std::to_string(now_s) + ",\"ttl\":900,\"nonce\":\"abc\"}");
  RunResult broke = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
  EXPECT_EQ(broke.status, 1) << broke.err;
  EXPECT_EQ(broke.json()["warnings"], (nlohmann::json{"broke a stale vault lease left by an interrupted run"}));
  EXPECT_EQ(broke.json()["packs_repacked"], 1);
  EXPECT_EQ(broke.json()["packs_waiting"], 0);
  VaultContents v = decrypt_every_pack(rs.site());
  for (const auto& blob : message_blobs(*v.repo, a.content)) EXPECT_FALSE(v.blobs.count(blob));
  for (const auto& blob : message_blobs(*v.repo, b.content)) EXPECT_TRUE(v.blobs.count(blob));
  unsetenv("REDUIT_NOW");
}
