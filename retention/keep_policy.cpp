// retention/keep_policy.cpp — restic's ApplyPolicy, rule for rule (see the
// README of ../shared/peer-tests/restic-forget for the semantics it must match).
#include "retention/keep_policy.hpp"

#include <date/date.h>
#include <date/iso_week.h>
#include <date/tz.h>

#include <algorithm>
#include <numeric>

#include "vault/error.hpp"

namespace reduit {

namespace {

using namespace std::chrono;
using date::local_days;
using Ns = nanoseconds;

date::local_time<Ns> to_local(std::int64_t ns, const date::time_zone* tz) {
  date::sys_time<Ns> sys{Ns{ns}};
  if (!tz) return date::local_time<Ns>{sys.time_since_epoch()};
  return tz->to_local(sys);
}

std::int64_t to_instant(date::local_time<Ns> lt, const date::time_zone* tz) {
  if (!tz) return lt.time_since_epoch().count();
  return tz->to_sys(lt, date::choose::earliest).time_since_epoch().count();
}

enum Kind { kLast, kHourly, kDaily, kWeekly, kMonthly, kYearly };
const char* const kKindNames[] = {"last", "hourly", "daily", "weekly", "monthly", "yearly"};

// The calendar key of a bucket kind (restic's bucketer functions): comparable only
// for equality with the key of the snapshot the rule kept last.
std::int64_t bucket_key(Kind kind, std::int64_t ns, std::size_t position, const date::time_zone* tz) {
  auto lt = to_local(ns, tz);
  auto ld = date::floor<date::days>(lt);
  date::year_month_day ymd{ld};
  std::int64_t y = static_cast<int>(ymd.year());
  std::int64_t m = static_cast<unsigned>(ymd.month());
  std::int64_t d = static_cast<unsigned>(ymd.day());
  switch (kind) {
    case kLast:
      return static_cast<std::int64_t>(position);
    case kHourly:
      return ((y * 100 + m) * 100 + d) * 100 + duration_cast<hours>(lt - ld).count();
    case kDaily:
      return (y * 100 + m) * 100 + d;
    case kWeekly: {
      iso_week::year_weeknum_weekday w{ld};
      return static_cast<std::int64_t>(static_cast<int>(w.year())) * 100 + static_cast<unsigned>(w.weeknum());
    }
    case kMonthly:
      return y * 100 + m;
    case kYearly:
      return y;
  }
  return 0;
}

// The start (exclusive) of a keep-within window measured back from `ref_ns`.
std::int64_t window_start(std::int64_t ref_ns, const KeepDuration& d, const date::time_zone* tz) {
  auto lt = to_local(ref_ns, tz);
  auto ld = date::floor<date::days>(lt);
  auto tod = lt - ld;
  date::year_month_day ymd{ld};
  // Months carry into years first, then the day rolls (time.Date normalisation).
  std::int64_t total = static_cast<std::int64_t>(static_cast<int>(ymd.year())) * 12 +
                       (static_cast<unsigned>(ymd.month()) - 1) - d.months - 12LL * d.years;
  std::int64_t y = total >= 0 ? total / 12 : -((-total + 11) / 12);
  unsigned m = static_cast<unsigned>(total - y * 12) + 1;
  local_days day = local_days{date::year{static_cast<int>(y)} / date::month{m} / date::day{1}} +
                   date::days{static_cast<int>(static_cast<unsigned>(ymd.day())) - 1 - d.days};
  return to_instant(day + tod, tz) - static_cast<std::int64_t>(d.hours) * 3600 * 1000000000LL;
}

bool has_tags(const KeepInput& s, const std::vector<std::string>& list) {
  for (const std::string& tag : list) {
    if (tag.empty() && s.tags.empty()) return true;
    if (std::find(s.tags.begin(), s.tags.end(), tag) == s.tags.end()) return false;
  }
  return true;
}

std::string tag_list_string(const std::vector<std::string>& list) {
  std::string out = "[";
  for (std::size_t i = 0; i < list.size(); ++i) out += (i ? ", " : "") + list[i];
  return out + "]";
}

}  // namespace

KeepDuration KeepDuration::parse(const std::string& text, const std::string& what) {
  KeepDuration d;
  auto bad = [&]() {
    return Error(ErrorCode::kUsage, what + ": '" + text +
                                        "' is not a duration: numbers with units y (years), m (months), d "
                                        "(days), h (hours), e.g. 1y6m or 14d");
  };
  if (text.empty()) throw bad();
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    if (j == i || j == text.size() || j - i > 6) throw bad();
    int n = std::stoi(text.substr(i, j - i));
    switch (text[j]) {
      case 'y':
        d.years = n;
        break;
      case 'm':
        d.months = n;
        break;
      case 'd':
        d.days = n;
        break;
      case 'h':
        d.hours = n;
        break;
      default:
        throw bad();
    }
    i = j + 1;
  }
  return d;
}

std::string KeepDuration::str() const {
  std::string s;
  if (years) s += std::to_string(years) + "y";
  if (months) s += std::to_string(months) + "m";
  if (days) s += std::to_string(days) + "d";
  if (hours) s += std::to_string(hours) + "h";
  return s.empty() ? "0h" : s;
}

bool KeepPolicy::empty() const {
  return !last && !hourly && !daily && !weekly && !monthly && !yearly && !within && !within_hourly &&
         !within_daily && !within_weekly && !within_monthly && !within_yearly && tags.empty();
}

std::vector<KeepDecision> apply_keep_policy(const std::vector<KeepInput>& in, const KeepPolicy& p,
                                            std::int64_t now_ns, const date::time_zone* tz) {
  std::vector<std::size_t> order(in.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return in[a].time_ns > in[b].time_ns; });

  // The keep-within reference: the newest snapshot strictly before now. When every
  // snapshot is in the future, restic's zero time: every window holds everything.
  std::optional<std::int64_t> ref;
  for (std::size_t i : order) {
    if (in[i].time_ns < now_ns) {
      ref = in[i].time_ns;
      break;
    }
  }
  auto inside = [&](const std::optional<KeepDuration>& d, std::int64_t t) {
    return !ref || t > window_start(*ref, *d, tz);
  };

  struct Count {
    int left;
    std::optional<std::int64_t> last_key;
  };
  std::array<Count, 6> counts{
      {{p.last, {}}, {p.hourly, {}}, {p.daily, {}}, {p.weekly, {}}, {p.monthly, {}}, {p.yearly, {}}}};
  const std::array<const std::optional<KeepDuration>*, 5> within_rules{
      &p.within_hourly, &p.within_daily, &p.within_weekly, &p.within_monthly, &p.within_yearly};
  std::array<std::optional<std::int64_t>, 5> within_last{};

  std::vector<KeepDecision> out;
  out.reserve(in.size());
  for (std::size_t pos = 0; pos < order.size(); ++pos) {
    const KeepInput& s = in[order[pos]];
    const bool oldest = pos + 1 == order.size();
    KeepDecision d;
    d.input = order[pos];
    for (const auto& list : p.tags) {
      if (has_tags(s, list)) d.reasons.push_back("has tags " + tag_list_string(list));
    }
    if (p.within && inside(p.within, s.time_ns)) d.reasons.push_back("within " + p.within->str());
    for (int k = kLast; k <= kYearly; ++k) {
      Count& c = counts[k];
      if (c.left == 0) continue;
      std::int64_t key = bucket_key(static_cast<Kind>(k), s.time_ns, pos, tz);
      bool new_bucket = !c.last_key || *c.last_key != key;
      if (new_bucket || oldest) {
        d.reasons.push_back(std::string(new_bucket ? "" : "oldest ") + kKindNames[k] + " snapshot");
        c.last_key = key;
        if (c.left > 0) --c.left;
      }
    }
    for (int k = 0; k < 5; ++k) {
      const auto& rule = *within_rules[k];
      if (!rule || !inside(rule, s.time_ns)) continue;
      std::int64_t key = bucket_key(static_cast<Kind>(k + 1), s.time_ns, pos, tz);
      bool new_bucket = !within_last[k] || *within_last[k] != key;
      if (new_bucket || oldest) {
        d.reasons.push_back(std::string(new_bucket ? "" : "oldest ") + kKindNames[k + 1] + " within " +
                            rule->str());
        within_last[k] = key;
      }
    }
    d.keep = !d.reasons.empty();
    for (int k = 0; k < 6; ++k) d.counters[k] = counts[k].left;
    out.push_back(std::move(d));
  }
  return out;
}

const date::time_zone* find_time_zone(const std::string& name) {
  try {
    if (name.empty()) return date::current_zone();
    return date::locate_zone(name);
  } catch (const std::exception& e) {
    if (name.empty()) return date::locate_zone("Etc/UTC");
    throw Error(ErrorCode::kUsage, "unknown time zone '" + name + "' (an IANA name like Europe/Zurich)");
  }
}

}  // namespace reduit
