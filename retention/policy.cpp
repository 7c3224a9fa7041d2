#include "retention/policy.hpp"

#include <date/date.h>
#include <date/tz.h>
#include <fnmatch.h>

#include <cctype>

#include <toml++/toml.h>
#include <fstream>
#include <sstream>

#include "retention/default_policy.hpp"
#include "vault/error.hpp"
#include "vault/toml_read.hpp"

namespace reduit {

namespace {

using toml_read::at;
using toml_read::bad;
using toml_read::each_key;

std::string get_string(const std::string& origin, const toml::node& n, const std::string& key) {
  return toml_read::raw_string(origin, n, key);
}

std::vector<std::string> get_strings(const std::string& origin, const toml::node& n, const std::string& key) {
  return toml_read::string_array(origin, n, key, false);
}

// A count rule: a non-negative integer or "unlimited" (-1).
int get_count(const std::string& origin, const toml::node& n, const std::string& key) {
  if (auto s = n.value<std::string>()) {
    if (*s == "unlimited") return -1;
    bad(at(origin, n), "'" + key + "' must be a non-negative integer or \"unlimited\"");
  }
  auto v = n.value<std::int64_t>();
  if (!v || *v < 0 || *v > 1000000)
    bad(at(origin, n), "'" + key + "' must be a non-negative integer or \"unlimited\"");
  return static_cast<int>(*v);
}

KeepDuration get_duration(const std::string& origin, const toml::node& n, const std::string& key) {
  return KeepDuration::parse(get_string(origin, n, key), at(origin, n) + ": '" + key + "'");
}

const toml::table& as_table(const std::string& origin, const toml::node& n, const std::string& what) {
  return toml_read::table_of(origin, n, what);
}

// Months compare first, then days: a duration is "shorter" in calendar terms.
bool shorter(const KeepDuration& a, const KeepDuration& b) {
  auto key = [](const KeepDuration& d) {
    return std::tuple(d.years * 12 + d.months, d.days + d.hours / 24, d.hours % 24);
  };
  return key(a) < key(b);
}

}  // namespace

const char* basis_name(RetentionBasis b) {
  switch (b) {
    case RetentionBasis::kDate:
      return "date";
    case RetentionBasis::kCapture:
      return "capture";
    case RetentionBasis::kFinancialYearEnd:
      return "financial-year-end";
  }
  return "?";
}

const ArchiveClass* Policy::classify(const std::string& mailbox, const std::string& folder) const {
  const std::string f = folder.empty() ? "INBOX" : folder;
  auto any = [](const std::vector<std::string>& pats, const std::string& s) {
    for (const auto& p : pats) {
      if (fnmatch(p.c_str(), s.c_str(), 0) == 0) return true;
    }
    return false;
  };
  for (const ArchiveClass& c : classes) {
    if (any(c.mailboxes, mailbox) && any(c.folders, f)) return &c;
  }
  return nullptr;
}

Policy parse_policy(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw Error(ErrorCode::kUsage,
                origin + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  Policy p;
  p.origin = origin;
  const toml::node* snapshots_node = nullptr;
  each_key(
      origin, root, "", {"name", "time_zone", "legal_basis", "snapshots", "archive", "prune", "compliance"},
      [&](const std::string& key, const toml::node& v) {
        if (key == "name") {
          p.name = get_string(origin, v, key);
        } else if (key == "time_zone") {
          p.time_zone = get_string(origin, v, key);
          if (!p.time_zone.empty()) {
            try {
              find_time_zone(p.time_zone);
            } catch (const Error& e) {
              bad(at(origin, v), e.what());
            }
          }
        } else if (key == "legal_basis") {
          p.legal_basis = get_string(origin, v, key);
        } else if (key == "snapshots") {
          snapshots_node = &v;
          KeepPolicy& k = p.snapshots;
          each_key(origin, as_table(origin, v, "[snapshots]"), "snapshots",
                   {"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly",
                    "keep-within", "keep-within-hourly", "keep-within-daily", "keep-within-weekly",
                    "keep-within-monthly", "keep-within-yearly", "keep-tag", "group-by"},
                   [&](const std::string& kk, const toml::node& n) {
                     if (kk == "keep-last") k.last = get_count(origin, n, kk);
                     if (kk == "keep-hourly") k.hourly = get_count(origin, n, kk);
                     if (kk == "keep-daily") k.daily = get_count(origin, n, kk);
                     if (kk == "keep-weekly") k.weekly = get_count(origin, n, kk);
                     if (kk == "keep-monthly") k.monthly = get_count(origin, n, kk);
                     if (kk == "keep-yearly") k.yearly = get_count(origin, n, kk);
                     if (kk == "keep-within") k.within = get_duration(origin, n, kk);
                     if (kk == "keep-within-hourly") k.within_hourly = get_duration(origin, n, kk);
                     if (kk == "keep-within-daily") k.within_daily = get_duration(origin, n, kk);
                     if (kk == "keep-within-weekly") k.within_weekly = get_duration(origin, n, kk);
                     if (kk == "keep-within-monthly") k.within_monthly = get_duration(origin, n, kk);
                     if (kk == "keep-within-yearly") k.within_yearly = get_duration(origin, n, kk);
                     if (kk == "keep-tag") {
                       // Each string "a,b" is one AND-list; several strings are OR (restic --keep-tag).
                       for (const std::string& s : get_strings(origin, n, kk)) {
                         std::vector<std::string> list;
                         std::stringstream ss(s);
                         for (std::string t; std::getline(ss, t, ',');) {
                           auto b = t.find_first_not_of(' '), e = t.find_last_not_of(' ');
                           list.push_back(b == std::string::npos ? "" : t.substr(b, e - b + 1));
                         }
                         if (list.empty()) list.push_back("");
                         k.tags.push_back(std::move(list));
                       }
                     }
                     if (kk == "group-by") {
                       p.group_by = get_strings(origin, n, kk);
                       for (const auto& g : p.group_by) {
                         if (g != "host" && g != "source" && g != "tags")
                           bad(at(origin, n),
                               "'group-by' entries are \"host\", \"source\" or \"tags\", not \"" + g + "\"");
                       }
                     }
                   });
        } else if (key == "archive") {
          each_key(
              origin, as_table(origin, v, "[archive]"), "archive", {"financial-year-end", "class"},
              [&](const std::string& kk, const toml::node& n) {
                if (kk == "financial-year-end") {
                  std::string s = get_string(origin, n, kk);
                  unsigned m = 0, d = 0;
                  int used = 0;
                  if (std::sscanf(s.c_str(), "%2u-%2u%n", &m, &d, &used) != 2 || used != 5 ||
                      !date::year_month_day{date::year{2001}, date::month{m}, date::day{d}}.ok()) {
                    bad(at(origin, n),
                        "'financial-year-end' must be MM-DD (a day of a non-leap year), not \"" + s + "\"");
                  }
                  p.fy_end_month = m;
                  p.fy_end_day = d;
                  return;
                }
                const toml::array* a = n.as_array();
                if (!a) bad(at(origin, n), "classes are written [[archive.class]] (an array of tables)");
                for (const auto& e : *a) {
                  ArchiveClass c;
                  each_key(
                      origin, as_table(origin, e, "[[archive.class]]"), "archive.class",
                      {"name", "label", "legal-basis", "mailboxes", "folders", "minimum", "maximum", "basis"},
                      [&](const std::string& ck, const toml::node& cn) {
                        if (ck == "name") c.name = get_string(origin, cn, ck);
                        if (ck == "label") c.label = get_string(origin, cn, ck);
                        if (ck == "legal-basis") c.legal_basis = get_string(origin, cn, ck);
                        if (ck == "mailboxes") c.mailboxes = get_strings(origin, cn, ck);
                        if (ck == "folders") c.folders = get_strings(origin, cn, ck);
                        if (ck == "minimum") c.minimum = get_duration(origin, cn, ck);
                        if (ck == "maximum") c.maximum = get_duration(origin, cn, ck);
                        if (ck == "basis") {
                          std::string b = get_string(origin, cn, ck);
                          if (b == "date")
                            c.basis = RetentionBasis::kDate;
                          else if (b == "capture")
                            c.basis = RetentionBasis::kCapture;
                          else if (b == "financial-year-end")
                            c.basis = RetentionBasis::kFinancialYearEnd;
                          else
                            bad(at(origin, cn),
                                "'basis' is \"date\", \"capture\" or \"financial-year-end\", "
                                "not \"" +
                                    b + "\"");
                        }
                      });
                  if (c.name.empty()) bad(at(origin, e), "[[archive.class]] needs a 'name'");
                  for (const auto& other : p.classes) {
                    if (other.name == c.name)
                      bad(at(origin, e), "archive class '" + c.name + "' is defined twice");
                  }
                  if (c.minimum && c.maximum && shorter(*c.maximum, *c.minimum)) {
                    bad(at(origin, e), "archive class '" + c.name + "': maximum " + c.maximum->str() +
                                           " is shorter than its minimum " + c.minimum->str());
                  }
                  p.classes.push_back(std::move(c));
                }
              });
        } else if (key == "compliance") {
          ComplianceRules& r = p.compliance;
          each_key(
              origin, as_table(origin, v, "[compliance]"), "compliance",
              {"rpo", "backup-success", "drill-every", "check-every", "jurisdictions"},
              [&](const std::string& kk, const toml::node& n) {
                if (kk == "rpo") r.rpo = get_duration(origin, n, kk);
                if (kk == "drill-every") r.drill_every = get_duration(origin, n, kk);
                if (kk == "check-every") r.check_every = get_duration(origin, n, kk);
                if (kk == "backup-success") {
                  auto d = n.value<double>();
                  if (!d || *d < 0 || *d > 1) bad(at(origin, n), "'backup-success' must be a number 0..1");
                  r.backup_success = *d;
                }
                if (kk == "jurisdictions") {
                  r.jurisdictions = get_strings(origin, n, kk);
                  for (const auto& j : r.jurisdictions) {
                    if (j.size() != 2 || !std::isupper(static_cast<unsigned char>(j[0])) ||
                        !std::isupper(static_cast<unsigned char>(j[1])))
                      bad(at(origin, n),
                          "'jurisdictions' are ISO 3166-1 alpha-2 codes such as \"CH\", not \"" + j + "\"");
                  }
                }
              });
        } else if (key == "prune") {
          each_key(origin, as_table(origin, v, "[prune]"), "prune", {"repack-below"},
                   [&](const std::string& kk, const toml::node& n) {
                     auto d = n.value<double>();
                     if (!d || *d < 0 || *d > 1) bad(at(origin, n), "'repack-below' must be a number 0..1");
                     p.repack_below = *d;
                   });
        }
      });
  if (p.snapshots.empty()) {
    bad(snapshots_node ? at(origin, *snapshots_node) : origin,
        "no snapshot rule: set at least one keep-* in [snapshots] (reduit never forgets every snapshot)");
  }
  return p;
}

std::string read_policy_text(const std::string& path) {
  if (path.empty()) return kDefaultPolicyText;
  std::ifstream in(path);
  if (!in) throw Error(ErrorCode::kUsage, "cannot read policy file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Policy load_policy(const std::string& path) {
  return parse_policy(read_policy_text(path), path.empty() ? kDefaultPolicyOrigin : path);
}

std::int64_t add_duration(std::int64_t from_ns, const KeepDuration& d, const date::time_zone* tz) {
  using namespace std::chrono;
  using Ns = nanoseconds;
  date::sys_time<Ns> sys{Ns{from_ns}};
  date::local_time<Ns> lt = tz ? tz->to_local(sys) : date::local_time<Ns>{sys.time_since_epoch()};
  auto ld = date::floor<date::days>(lt);
  auto tod = lt - ld;
  date::year_month_day ymd{ld};
  std::int64_t total = static_cast<std::int64_t>(static_cast<int>(ymd.year())) * 12 +
                       (static_cast<unsigned>(ymd.month()) - 1) + d.months + 12LL * d.years;
  std::int64_t y = total >= 0 ? total / 12 : -((-total + 11) / 12);
  unsigned m = static_cast<unsigned>(total - y * 12) + 1;
  date::local_days day = date::local_days{date::year{static_cast<int>(y)} / date::month{m} / date::day{1}} +
                         date::days{static_cast<int>(static_cast<unsigned>(ymd.day())) - 1 + d.days};
  date::local_time<Ns> out = day + tod;
  std::int64_t ns =
      tz ? tz->to_sys(out, date::choose::latest).time_since_epoch().count() : out.time_since_epoch().count();
  return ns + static_cast<std::int64_t>(d.hours) * 3600 * 1000000000LL;
}

std::int64_t retention_start(const Policy& p, RetentionBasis basis, std::int64_t date_ns,
                             std::int64_t captured_ns) {
  if (basis == RetentionBasis::kCapture || date_ns == 0) {
    if (basis != RetentionBasis::kFinancialYearEnd) return captured_ns;
    date_ns = captured_ns;
  }
  if (basis == RetentionBasis::kDate) return date_ns;
  // End of the financial year holding date_ns: 24:00 local time on its last day.
  const date::time_zone* tz = find_time_zone(p.time_zone);
  using Ns = std::chrono::nanoseconds;
  auto lt = tz->to_local(date::sys_time<Ns>{Ns{date_ns}});
  date::year_month_day ymd{date::floor<date::days>(lt)};
  date::month_day end{date::month{p.fy_end_month}, date::day{p.fy_end_day}};
  date::year y = ymd.year();
  if (date::month_day{ymd.month(), ymd.day()} > end) ++y;
  date::local_days last{y / end.month() / end.day()};
  return tz->to_sys(date::local_time<Ns>{last + date::days{1}}, date::choose::earliest)
      .time_since_epoch()
      .count();
}

}  // namespace reduit
