// retention/keep_policy.hpp — snapshot retention rules with exactly `restic
// forget`'s semantics (restic internal/data/snapshot_policy.go, ApplyPolicy; the
// vectors in ../shared/peer-tests/restic-forget are the test).
//
// Pure computation: a list of snapshot times and tags in, a keep/remove decision
// with reasons out. No I/O. Calendar buckets (hour, day, ISO 8601 week, month,
// year) are computed in the given IANA time zone (Howard Hinnant's date/tz over the
// system tzdata), so a day is a local calendar day, also across DST changes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace date {
class time_zone;
}

namespace reduit {

/// A keep-within duration "NyNmNdNh" (years, months, days, hours; any order; a
/// repeated unit replaces the earlier one). Years, months and days are subtracted
/// as calendar fields of the reference's local date, hours as 3600 s steps.
struct KeepDuration {
  int years = 0, months = 0, days = 0, hours = 0;
  /// Throws Error(kUsage) naming `what` for anything else ("", "1w", "-1d", "1.5d").
  static KeepDuration parse(const std::string& text, const std::string& what);
  /// Normalised form: order y m d h, zero parts left out ("1y1d1m" → "1y1m1d"); "0h" when all zero.
  std::string str() const;
  bool operator==(const KeepDuration&) const = default;
};

/// A count: 0 = off, -1 = unlimited, else how many buckets to keep.
struct KeepPolicy {
  int last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0;
  std::optional<KeepDuration> within, within_hourly, within_daily, within_weekly, within_monthly,
      within_yearly;
  std::vector<std::vector<std::string>> tags;  // OR of lists; each list is an AND of tags
  /// True when no rule is set (restic refuses to apply such a policy).
  bool empty() const;
};

struct KeepInput {
  std::int64_t time_ns = 0;  // UTC instant
  std::vector<std::string> tags;
};

/// Remaining counts of the six count rules (last, hourly, daily, weekly, monthly,
/// yearly) after a snapshot was evaluated; 0 = off or used up, -1 = unlimited.
using KeepCounters = std::array<int, 6>;

struct KeepDecision {
  std::size_t input = 0;  // index into the input list
  bool keep = false;
  std::vector<std::string> reasons;  // e.g. "daily snapshot", "oldest yearly snapshot", "within 1m"
  KeepCounters counters{};           // set for kept snapshots
};

/// Applies `policy` to one group of snapshots. Returns one decision per input, in
/// evaluation order: newest first, ties in input order. `now_ns` only decides which
/// snapshots are "in the future" (they cannot be the keep-within reference).
/// `tz` = the zone whose calendar defines the buckets (nullptr = UTC).
std::vector<KeepDecision> apply_keep_policy(const std::vector<KeepInput>& snapshots, const KeepPolicy& policy,
                                            std::int64_t now_ns, const date::time_zone* tz);

/// The zone named `name` ("Europe/Zurich"), or the system's zone for "" (from
/// /etc/localtime; UTC when that is missing). Throws Error(kUsage) for an unknown name.
const date::time_zone* find_time_zone(const std::string& name);

}  // namespace reduit
