// Snapshot retention rules against restic's own vectors (must-show 1 of the
// retention issue), the policy file, durations, and calendar buckets across the
// Europe/Zurich DST changes.
#include <date/tz.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "retention/keep_policy.hpp"
#include "retention/policy.hpp"
#include "support/harness.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"

namespace fs = std::filesystem;
using namespace reduit;

namespace {

std::string peer_dir() {
  return fs::path(REDUIT_SOURCE_DIR).parent_path().string() + "/shared/peer-tests/restic-forget";
}

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  return nlohmann::json::parse(in);
}

std::optional<KeepDuration> opt_duration(const nlohmann::json& j) {
  if (j.is_null()) return std::nullopt;
  return KeepDuration::parse(j.get<std::string>(), "case");
}

std::int64_t instant(const std::string& s) {
  auto t = parse_instant(s);
  if (!t) throw std::runtime_error("bad instant " + s);
  return *t;
}

}  // namespace

TEST(RetentionRules, EveryResticCaseKeepsExactlyTheExpectedSnapshotsWithReasons) {
  const std::string dir = peer_dir();
  // Like the corpus, the peer tests are beside the project in CI, not in a user's clone.
  if (!fs::exists(dir))
    GTEST_SKIP() << "restic's cases (../shared/peer-tests/restic-forget) are not beside this checkout";
  ASSERT_TRUE(fs::exists(dir + "/snapshots.json")) << dir;
  nlohmann::json snaps = load_json(dir + "/snapshots.json");
  std::vector<KeepInput> input;
  for (const auto& s : snaps["snapshots"]) {
    ASSERT_EQ(s["index"].get<std::size_t>(), input.size());
    input.push_back({instant(s["time"]), s["tags"].get<std::vector<std::string>>()});
  }
  ASSERT_EQ(input.size(), 103u);
  // Any "now" after the newest snapshot gives these results (README rule 3).
  const std::int64_t now = instant("2026-01-01T00:00:00Z");
  const date::time_zone* utc = date::locate_zone("UTC");

  std::size_t cases = 0;
  for (const auto& entry : fs::directory_iterator(dir + "/cases")) {
    nlohmann::json c = load_json(entry.path());
    SCOPED_TRACE(entry.path().filename().string());
    const auto& pj = c["policy"];
    KeepPolicy p;
    p.last = pj["keep_last"];
    p.hourly = pj["keep_hourly"];
    p.daily = pj["keep_daily"];
    p.weekly = pj["keep_weekly"];
    p.monthly = pj["keep_monthly"];
    p.yearly = pj["keep_yearly"];
    p.within = opt_duration(pj["keep_within"]);
    p.within_hourly = opt_duration(pj["keep_within_hourly"]);
    p.within_daily = opt_duration(pj["keep_within_daily"]);
    p.within_weekly = opt_duration(pj["keep_within_weekly"]);
    p.within_monthly = opt_duration(pj["keep_within_monthly"]);
    p.within_yearly = opt_duration(pj["keep_within_yearly"]);
    for (const auto& l : pj["keep_tags"]) p.tags.push_back(l.get<std::vector<std::string>>());

    std::vector<KeepDecision> got = apply_keep_policy(input, p, now, utc);
    ASSERT_EQ(got.size(), input.size());
    // Evaluation order is restic's order.
    std::vector<std::size_t> order;
    for (const auto& d : got) order.push_back(d.input);
    EXPECT_EQ(order, snaps["restic_order"].get<std::vector<std::size_t>>());

    std::vector<std::size_t> keep, remove;
    std::vector<const KeepDecision*> kept;
    for (const auto& d : got) {
      (d.keep ? keep : remove).push_back(d.input);
      if (d.keep) kept.push_back(&d);
    }
    EXPECT_EQ(keep, c["keep"].get<std::vector<std::size_t>>());
    EXPECT_EQ(remove, c["remove"].get<std::vector<std::size_t>>());
    ASSERT_EQ(kept.size(), c["reasons"].size());
    for (std::size_t i = 0; i < kept.size(); ++i) {
      const auto& r = c["reasons"][i];
      EXPECT_EQ(kept[i]->input, r["index"].get<std::size_t>());
      EXPECT_EQ(kept[i]->reasons, r["matches"].get<std::vector<std::string>>()) << "index " << r["index"];
      const auto& cn = r["counters"];
      KeepCounters want{cn["last"], cn["hourly"], cn["daily"], cn["weekly"], cn["monthly"], cn["yearly"]};
      EXPECT_EQ(kept[i]->counters, want) << "index " << r["index"];
    }
    ++cases;
  }
  EXPECT_EQ(cases, 27u);  // every file in cases/
}

TEST(RetentionRules, DurationsParseAndPrintNormalised) {
  EXPECT_EQ(KeepDuration::parse("1y1d1m", "x").str(), "1y1m1d");
  EXPECT_EQ(KeepDuration::parse("13d23h", "x").str(), "13d23h");
  EXPECT_EQ(KeepDuration::parse("2d5d", "x").str(), "5d");  // a repeated unit replaces
  EXPECT_EQ(KeepDuration::parse("10y", "x"), (KeepDuration{10, 0, 0, 0}));
  for (const char* badd : {"", "1w", "-1d", "1.5d", "d", "10", "1y 2m"}) {
    EXPECT_EQ(test::error_code_of([&] { KeepDuration::parse(badd, "x"); }), ErrorCode::kUsage) << badd;
  }
}

// Buckets are local calendar days/weeks in the policy's zone. Europe/Zurich
// switches to summer time on 2024-03-31 (02:00 → 03:00) and back on 2024-10-27
// (03:00 → 02:00). Two backups on one local day across the change are one bucket;
// in UTC they would not be.
TEST(RetentionRules, DailyBucketsFollowLocalDaysAcrossZurichDstChanges) {
  const date::time_zone* zurich = find_time_zone("Europe/Zurich");
  const date::time_zone* utc = find_time_zone("UTC");
  // Local times: 2024-03-30 23:30 CET (22:30Z), 2024-03-31 00:30 CET (23:30Z on the 30th),
  // 2024-03-31 23:30 CEST (21:30Z), 2024-10-27 00:30 CEST (22:30Z on the 26th),
  // 2024-10-27 23:30 CET (22:30Z).
  std::vector<KeepInput> in{{instant("2024-03-30T22:30:00Z"), {}},
                            {instant("2024-03-30T23:30:00Z"), {}},
                            {instant("2024-03-31T21:30:00Z"), {}},
                            {instant("2024-10-26T22:30:00Z"), {}},
                            {instant("2024-10-27T22:30:00Z"), {}}};
  KeepPolicy p;
  p.daily = -1;
  auto kept = [&](const date::time_zone* tz) {
    std::vector<std::size_t> k;
    for (const auto& d : apply_keep_policy(in, p, instant("2025-01-01T00:00:00Z"), tz))
      if (d.keep) k.push_back(d.input);
    return k;
  };
  // Zurich days: 03-30 {0}, 03-31 {1, 2} (newest 2 kept), 10-27 {3, 4} (newest 4 kept),
  // and 0 is also the oldest. In UTC, 0 and 1 share 03-30 and 3 is alone on 10-26.
  EXPECT_EQ(kept(zurich), (std::vector<std::size_t>{4, 2, 0}));
  EXPECT_EQ(kept(utc), (std::vector<std::size_t>{4, 3, 2, 1, 0}));

  // keep-within 1d measured back from 2024-03-31 12:00 CEST (10:00Z) crosses the
  // 23-hour day: the window starts 2024-03-30 12:00 CET = 11:00Z, 23 h earlier.
  KeepPolicy w;
  w.within = KeepDuration::parse("1d", "x");
  std::vector<KeepInput> around{{instant("2024-03-31T10:00:00Z"), {}},
                                {instant("2024-03-30T11:00:01Z"), {}},
                                {instant("2024-03-30T11:00:00Z"), {}},
                                {instant("2024-03-30T10:30:00Z"), {}}};
  std::vector<bool> keep;
  for (const auto& d : apply_keep_policy(around, w, instant("2025-01-01T00:00:00Z"), zurich))
    keep.push_back(d.keep);
  EXPECT_EQ(keep, (std::vector<bool>{true, true, false, false}));  // on the threshold is outside

  // Calendar durations across DST: 2024-03-30 12:00 CET + 1d = 2024-03-31 12:00 CEST (23 h later).
  EXPECT_EQ(add_duration(instant("2024-03-30T11:00:00Z"), KeepDuration{0, 0, 1, 0}, zurich),
            instant("2024-03-31T10:00:00Z"));
}

TEST(RetentionRules, WeeklyBucketsAreIsoWeeksInTheZone) {
  const date::time_zone* zurich = find_time_zone("Europe/Zurich");
  // 2023-01-01 (Sunday) 23:30 local is 2022-W52; 2023-01-02 00:30 local (23:30Z on the 1st) is 2023-W01.
  std::vector<KeepInput> in{{instant("2023-01-01T22:30:00Z"), {}}, {instant("2023-01-01T23:30:00Z"), {}}};
  KeepPolicy p;
  p.weekly = 5;
  std::vector<std::string> reasons;
  for (const auto& d : apply_keep_policy(in, p, instant("2024-01-01T00:00:00Z"), zurich))
    reasons.push_back(d.reasons.empty() ? "-" : d.reasons[0]);
  EXPECT_EQ(reasons, (std::vector<std::string>{"weekly snapshot", "weekly snapshot"}));
  for (const auto& d : apply_keep_policy(in, p, instant("2024-01-01T00:00:00Z"), find_time_zone("UTC")))
    reasons.push_back(d.reasons.empty() ? "-" : d.reasons[0]);
  // In UTC both are Sunday 2023-01-01 (2022-W52): the older is kept only as the oldest.
  EXPECT_EQ(reasons[2], "weekly snapshot");
  EXPECT_EQ(reasons[3], "oldest weekly snapshot");
}

TEST(RetentionPolicy, ShippedDefaultIsTheSeedSchedule) {
  Policy p = load_policy("");
  EXPECT_EQ(p.snapshots.daily, 30);
  EXPECT_EQ(p.snapshots.weekly, 26);
  EXPECT_EQ(p.snapshots.monthly, 84);
  EXPECT_EQ(p.snapshots.last + p.snapshots.hourly + p.snapshots.yearly, 0);
  ASSERT_EQ(p.classes.size(), 2u);
  EXPECT_EQ(p.classify("alice@example.ch", ".Junk")->name, "junk");
  const ArchiveClass* c = p.classify("alice@example.ch", "");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->name, "business-correspondence");
  EXPECT_EQ(c->minimum->str(), "10y");
  EXPECT_EQ(c->basis, RetentionBasis::kFinancialYearEnd);
  // The file in policies/ is what is compiled in.
  Policy f = load_policy(std::string(REDUIT_SOURCE_DIR) + "/policies/default.toml");
  EXPECT_EQ(f.classes.size(), 2u);
  EXPECT_EQ(f.snapshots.monthly, 84);
}

TEST(RetentionPolicy, ErrorsNameFileAndLine) {
  auto err = [](const std::string& text) {
    try {
      parse_policy(text, "p.toml");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUsage);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(err("[snapshots]\nkeep-daily = 3\nkeep-dialy = 4\n"),
            "p.toml:3: unknown key 'snapshots.keep-dialy' (known: keep-last, keep-hourly, keep-daily, "
            "keep-weekly, keep-monthly, keep-yearly, keep-within, keep-within-hourly, keep-within-daily, "
            "keep-within-weekly, keep-within-monthly, keep-within-yearly, keep-tag, group-by)");
  EXPECT_EQ(err("[snapshots]\nkeep-daily = -2\n"),
            "p.toml:2: 'keep-daily' must be a non-negative integer or \"unlimited\"");
  EXPECT_EQ(err("[snapshots]\nkeep-within = \"2w\"\n"),
            "p.toml:2: 'keep-within': '2w' is not a duration: numbers with units y (years), m (months), d "
            "(days), h (hours), e.g. 1y6m or 14d");
  EXPECT_EQ(err("time_zone = \"Europe/Zürich\"\n[snapshots]\nkeep-last = 1\n"),
            "p.toml:1: unknown time zone 'Europe/Zürich' (an IANA name like Europe/Zurich)");
  EXPECT_EQ(err("[snapshots]\nkeep-last = 1\n[[archive.class]]\nname = \"a\"\nminimum = \"10y\"\n"
                "maximum = \"2y\"\n"),
            "p.toml:3: archive class 'a': maximum 2y is shorter than its minimum 10y");
  EXPECT_EQ(err("[snapshots]\n"),
            "p.toml:1: no snapshot rule: set at least one keep-* in [snapshots] (reduit never forgets "
            "every snapshot)");
  EXPECT_EQ(err("[snapshots]\nkeep-last = 1\n[archive]\nfinancial-year-end = \"02-29\"\n"),
            "p.toml:4: 'financial-year-end' must be MM-DD (a day of a non-leap year), not \"02-29\"");
  Policy ok = parse_policy("[snapshots]\nkeep-last = \"unlimited\"\nkeep-tag = [\"a, b\", \"\"]\n", "p.toml");
  EXPECT_EQ(ok.snapshots.last, -1);
  EXPECT_EQ(ok.snapshots.tags, (std::vector<std::vector<std::string>>{{"a", "b"}, {""}}));
}

TEST(RetentionPolicy, RetentionStartsAtTheConfiguredBasis) {
  Policy p = parse_policy(
      "time_zone = \"Europe/Zurich\"\n[snapshots]\nkeep-last = 1\n[archive]\nfinancial-year-end = "
      "\"06-30\"\n",
      "p.toml");
  const std::int64_t date = instant("2024-03-10T09:00:00Z"), capture = instant("2024-03-11T02:00:00Z");
  EXPECT_EQ(retention_start(p, RetentionBasis::kDate, date, capture), date);
  EXPECT_EQ(retention_start(p, RetentionBasis::kDate, 0, capture), capture);  // no Date header
  EXPECT_EQ(retention_start(p, RetentionBasis::kCapture, date, capture), capture);
  // FY ends 30 June: 2024-07-01 00:00 CEST = 2024-06-30T22:00Z.
  EXPECT_EQ(retention_start(p, RetentionBasis::kFinancialYearEnd, date, capture),
            instant("2024-06-30T22:00:00Z"));
  EXPECT_EQ(retention_start(p, RetentionBasis::kFinancialYearEnd, instant("2024-07-01T10:00:00Z"), capture),
            instant("2025-06-30T22:00:00Z"));
  // 10 years from a leap day rolls like time.AddDate: 2024-02-29 + 10y = 2034-03-01.
  EXPECT_EQ(add_duration(instant("2024-02-29T11:00:00Z"), KeepDuration{10, 0, 0, 0}, find_time_zone("UTC")),
            instant("2034-03-01T11:00:00Z"));
}
