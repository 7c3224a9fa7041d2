// Must-show 2 and 5 of the retention issue: a 3-year simulation with daily backups
// (its own test binary: it runs minutes, and ctest gives it a longer timeout).
#include <gtest/gtest.h>

#include "support/retention_site.hpp"

namespace {

struct SimMessage {
  Msg msg;
  int delivered = 0, removed = -1;  // sim days; -1 = still in the mailbox
};

struct SimPoint {
  int day;
  std::uint64_t vault_bytes, live_bytes, retained_bytes, snapshots;
  std::uint64_t data_bytes = 0;  // stored bytes of data packs (the rest is metadata)
};

// Stored bytes of the vault's data packs, by the kinds its indexes give.
std::uint64_t data_pack_bytes(const Site& site) {
  reduit::Repository repo(reduit::open_transport(site.url(), {}), site.keys().agent_home->path());
  repo.load_config();
  std::map<reduit::Hash, reduit::PackKind> kind;
  for (const auto& p : repo.load_indexes()) kind[p.id] = p.kind;
  std::uint64_t n = 0;
  for (const auto& [id, size] : repo.list_packs(/*with_sizes=*/true)) {
    auto it = kind.find(id);
    if (it != kind.end() && it->second == reduit::PackKind::kData) n += size;
  }
  return n;
}

}  // namespace

// Must-show 2 and 5: three years of daily backups at 03:00 Zurich time of a mailbox
// whose messages come and go (a third live a single day), the default snapshot
// schedule (daily 30, weekly 26, monthly 84), forget and prune every 4 weeks. INBOX is
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
  std::uint64_t index_written = 0, index_all = 0, index_last = 0;  // index objects, over every prune
  std::uint64_t snapshots = 0;
  for (int d = 0; d < days; ++d) {
    const std::int64_t now = start + d * kDayNs;
    // Mail that leaves today (deleted, or moved out by the user), then today's mail.
    for (SimMessage& m : all) {
      if (m.removed == d) rs.mailbox().remove(m.msg);
    }
    auto lifetime = [&](bool may_stay) {
      std::uint64_t r = rng() % 100;
      if (r < 33) return 1;                      // lives a single day
      if (may_stay && r >= 90) return -1;        // stays in the mailbox
      return 2 + static_cast<int>(rng() % 180);  // up to half a year
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
    if (d % 28 == 27 || d == days - 1) {
      RunResult f = rs.run({"forget"});
      ASSERT_EQ(f.status, 0) << "day " << d << ": " << f.err;
      snapshots = f.json()["kept"].get<std::uint64_t>();
      RunResult p = rs.run({"prune", "--archive-gnupghome", rs.archive_home()});
      ASSERT_EQ(p.status, 0) << "day " << d << ": " << p.err;
      {
        const nlohmann::json pj = p.json();
        const auto before = pj["index_objects_before"].get<std::uint64_t>();
        const auto kept = pj["index_objects_kept"].get<std::uint64_t>();
        index_written += pj["index_objects_written"].get<std::uint64_t>();
        // What rewriting every index object whenever a pack goes (before 2026-12-02) wrote.
        const auto packs = pj["packs_after"].get<std::uint64_t>();
        if (kept < before) {
          index_all += (packs + 63) / 64;
          // Kept objects name at least 32 packs, written ones 64 but the last.
          EXPECT_LE(kept + pj["index_objects_written"].get<std::uint64_t>(), packs / 32 + 1) << "day " << d;
        }
        index_last = kept + pj["index_objects_written"].get<std::uint64_t>();
      }
      retention_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      SimPoint pt{d, dir_bytes(rs.site().vault_dir()), 0, 0, snapshots};
      for (const SimMessage& m : all) {
        bool live = m.removed < 0 || m.removed > d;
        bool expired =
            m.msg.folder == ".Private" && reduit::add_duration(m.msg.date_ns, {2, 0, 0, 0}, zurich) <= now;
        if (live) pt.live_bytes += m.msg.content.size();
        if (live || !expired) pt.retained_bytes += m.msg.content.size();
      }
      pt.data_bytes = data_pack_bytes(rs.site());
      curve.push_back(pt);
    }
  }
  const std::int64_t end = start + (days - 1) * kDayNs;

  // Every message whose class still wants it restores; none past the maximum does.
  TempDir out;
  nlohmann::json a = rs.ok({"archive", "restore", "--mailbox", "alice@example.ch", "--to",
                            out.path() + "/all", "--gnupghome", rs.archive_home()});
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
    EXPECT_GT(gone.size(), 100u);  // the maximum really bit
    // Deterministic (seeded mail, fixed clock): 874 messages restore only because the
    // archive holds them; no kept snapshot does any more.
    EXPECT_EQ(a["from_archive_only"].get<int>(), 874);
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
  std::printf(
      "vault-size curve (every third prune, i.e. every 12 weeks; bytes):\n  %5s %10s %12s %12s %12s %12s\n",
      "day", "snapshots", "live mail", "retained", "data packs", "vault");
  for (std::size_t i = 0; i < curve.size(); ++i) {
    const SimPoint& p = curve[i];
    if (i % 3 == 2 || i + 1 == curve.size())
      std::printf("  %5d %10llu %12llu %12llu %12llu %12llu\n", p.day, (unsigned long long)p.snapshots,
                  (unsigned long long)p.live_bytes, (unsigned long long)p.retained_bytes,
                  (unsigned long long)p.data_bytes, (unsigned long long)p.vault_bytes);
    // Data packs hold each retained message once (zstd leaves ~80% of this random
    // text; OpenPGP adds a few hundred bytes a pack): never more than the retained
    // mail, however many snapshots refer to it. Metadata (a tree per changed folder
    // per kept snapshot, indexes, the archive) is bounded by the kept snapshots,
    // which the policy bounds (at most 30 + 26 + 84).
    EXPECT_LT(p.data_bytes, p.retained_bytes) << "day " << p.day;
    EXPECT_LE(p.snapshots, 30u + 26u + 84u);
  }
  std::printf("messages delivered %zu, retained %zu (%llu only in the archive), past the maximum %zu\n",
              all.size(), want.size(), (unsigned long long)a["from_archive_only"].get<std::uint64_t>(),
              gone.size());
  std::printf("index objects written by the prunes: %llu (rewriting every one: %llu); after the last: %llu\n",
              (unsigned long long)index_written, (unsigned long long)index_all,
              (unsigned long long)index_last);
  std::printf("simulated %d days: backups %.1f s, forget+prune %.1f s, total %.1f s\n", days, backup_s,
              retention_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count());
  unsetenv("REDUIT_NOW");
}
