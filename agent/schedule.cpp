#include "agent/schedule.hpp"

#include <arpa/inet.h>
#include <date/tz.h>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "agent/config.hpp"
#include "agent/schedule_toml.hpp"
#include "vault/error.hpp"
#include "vault/toml_read.hpp"

namespace reduit {

namespace {

using namespace std::chrono;

[[noreturn]] void usage(const std::string& msg) {
  throw Error(ErrorCode::kUsage, msg);
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool parse_hhmm(const std::string& w, int& h, int& m) {
  if (w.size() != 5 || w[2] != ':') return false;
  for (int i : {0, 1, 3, 4})
    if (!std::isdigit(static_cast<unsigned char>(w[i]))) return false;
  h = (w[0] - '0') * 10 + (w[1] - '0');
  m = (w[3] - '0') * 10 + (w[4] - '0');
  return h < 24 && m < 60;
}

const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

// First local time strictly after `t` among the candidate local days from `t`'s local
// date on, for calendars with one fixed wall-clock time per matching day.
template <typename Match>
UnixSeconds next_daily(const Calendar& c, const date::time_zone* tz, UnixSeconds t, Match&& match) {
  auto lt = tz->to_local(sys_seconds(seconds(t)));
  auto day = date::floor<date::days>(lt) - date::days(1);
  for (int i = 0; i < 800; ++i, day += date::days(1)) {
    if (!match(date::year_month_day(date::sys_days(day.time_since_epoch())),
               date::weekday(date::sys_days(day.time_since_epoch())))) {
      continue;
    }
    date::local_seconds when = day + hours(c.hour) + minutes(c.minute);
    // earliest: an ambiguous time fires at its first instance; a nonexistent one at
    // the end of the gap (date/tz returns the transition for both choices).
    auto s = tz->to_sys(when, date::choose::earliest).time_since_epoch().count();
    if (s > t) return s;
  }
  throw Error(ErrorCode::kInternal, "no occurrence of '" + c.text + "' within 800 days");
}

using toml_read::at;
using toml_read::bad;

std::string str(const std::string& origin, const toml::node& n, const std::string& key) {
  return toml_read::expanded_string(origin, n, key);
}

// Runs `f` and prefixes a kUsage message with FILE:LINE and the key.
template <typename F>
auto located(const std::string& origin, const toml::node& n, const std::string& key, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kUsage) throw;
    bad(at(origin, n), "'" + key + "': " + e.what());
  }
}

std::vector<std::string> str_array(const std::string& origin, const toml::node& n, const std::string& key) {
  return toml_read::string_array(origin, n, key, true);
}

const std::vector<std::string>& known_jobs() {
  static const std::vector<std::string> k{"backup", "prune", "check", "drill", "report"};
  return k;
}

std::vector<std::vector<std::string>> default_steps(const std::string& job) {
  if (job == "backup") return {{"backup"}};
  if (job == "prune") return {{"forget"}, {"prune"}};
  if (job == "check") return {{"check"}};
  if (job == "drill") return {{"drill", "--random"}};
  if (job == "report") return {{"report"}};
  return {};
}

bool valid_job_name(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  for (char ch : s)
    if (!(std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) ||
          ch == '-' || ch == '_'))
      return false;
  return true;
}

JobConfig parse_job(const std::string& origin, const std::string& name, const toml::node& v) {
  JobConfig j;
  j.name = name;
  if (!valid_job_name(name)) bad(at(origin, v), "job name '" + name + "' must be [a-z0-9_-]{1,32}");
  j.steps = default_steps(name);
  bool has_when = false, has_command = false;
  if (v.is_string()) {
    j.when = located(origin, v, "schedule." + name, [&] { return parse_calendar(str(origin, v, name)); });
    has_when = true;
  } else if (const toml::table* t = v.as_table()) {
    for (const auto& [k, n] : *t) {
      std::string key(k.str()), full = "schedule." + name + "." + key;
      if (key == "when") {
        j.when = located(origin, n, full, [&] { return parse_calendar(str(origin, n, full)); });
        has_when = true;
      } else if (key == "random_delay") {
        j.random_delay = located(origin, n, full, [&] { return parse_duration(str(origin, n, full)); });
      } else if (key == "retry_delay") {
        j.retry_delay = located(origin, n, full, [&] { return parse_duration(str(origin, n, full)); });
        if (j.retry_delay < 1) bad(at(origin, n), "'" + full + "' must be at least 1s");
      } else if (key == "retries") {
        auto r = n.value<std::int64_t>();
        if (!r || *r < 0 || *r > 20) bad(at(origin, n), "'" + full + "' must be an integer 0..20");
        j.retries = static_cast<int>(*r);
      } else if (key == "command") {
        // ["forget", "--x"] is one step; [["forget"], ["prune"]] are steps in order.
        const toml::array* a = n.as_array();
        if (!a || a->empty()) bad(at(origin, n), "'" + full + "' must be a non-empty array");
        j.steps.clear();
        if ((*a)[0].is_array()) {
          for (const auto& e : *a) {
            auto step = str_array(origin, e, full);
            if (step.empty()) bad(at(origin, e), "'" + full + "': a step is empty");
            j.steps.push_back(std::move(step));
          }
        } else {
          j.steps.push_back(str_array(origin, n, full));
        }
        has_command = true;
      } else if (key == "exec") {
        j.exec = str_array(origin, n, full);
        if (j.exec.empty() || j.exec[0].empty() || j.exec[0][0] != '/')
          bad(at(origin, n), "'" + full + "' must start with an absolute program path");
        has_command = true;
      } else {
        bad(at(origin, n),
            "unknown key '" + full + "' (known: when, random_delay, retries, retry_delay, command, exec)");
      }
    }
  } else {
    bad(at(origin, v), "'schedule." + name + "' must be a calendar string or a table");
  }
  if (!has_when) bad(at(origin, v), "[schedule." + name + "] needs 'when' (e.g. \"daily 02:00\")");
  if (!has_command && j.steps.empty()) {
    bad(at(origin, v), "job '" + name +
                           "' is not a built-in job (backup, prune, check, drill, report): give it "
                           "'command' or 'exec'");
  }
  return j;
}

}  // namespace

Calendar parse_calendar(const std::string& text) {
  Calendar c;
  c.text = text;
  auto w = words(text);
  if (w.empty()) usage("empty calendar expression");
  const std::string& k = w[0];
  std::size_t i = 1;
  auto time_at = [&](std::size_t idx) {
    if (idx >= w.size()) return;
    if (!parse_hhmm(w[idx], c.hour, c.minute))
      usage("'" + w[idx] + "' in \"" + text + "\" is not a time HH:MM (00:00..23:59)");
    ++i;
  };
  if (k == "hourly") {
    c.kind = Calendar::Kind::kHourly;
    if (w.size() > 1) {
      const std::string& m = w[1];
      if (m.size() != 3 || m[0] != ':' || !std::isdigit(static_cast<unsigned char>(m[1])) ||
          !std::isdigit(static_cast<unsigned char>(m[2])) || std::stoi(m.substr(1)) > 59) {
        usage("'" + m + "' in \"" + text + "\" is not a minute :MM (:00..:59)");
      }
      c.minute = std::stoi(m.substr(1));
      ++i;
    }
  } else if (k == "daily") {
    c.kind = Calendar::Kind::kDaily;
    time_at(1);
  } else if (k == "weekly") {
    c.kind = Calendar::Kind::kWeekly;
    if (w.size() > 1 && w[1].find(':') == std::string::npos) {
      auto it = std::find(std::begin(kDays), std::end(kDays), w[1]);
      if (it == std::end(kDays))
        usage("'" + w[1] + "' in \"" + text + "\" is not a weekday (Sun, Mon, Tue, Wed, Thu, Fri, Sat)");
      c.weekday = static_cast<int>(it - std::begin(kDays));
      ++i;
    }
    time_at(i);
  } else if (k == "monthly") {
    c.kind = Calendar::Kind::kMonthly;
    if (w.size() > 1 && w[1].find(':') == std::string::npos) {
      bool digits = !w[1].empty() && w[1].size() <= 2 &&
                    std::all_of(w[1].begin(), w[1].end(), [](char ch) { return std::isdigit(ch); });
      c.day = digits ? std::stoi(w[1]) : 0;
      if (c.day < 1 || c.day > 28)
        usage("day '" + w[1] + "' in \"" + text + "\" must be 1..28 (every month has it)");
      ++i;
    }
    time_at(i);
  } else if (k == "quarterly") {
    c.kind = Calendar::Kind::kQuarterly;
    time_at(1);
  } else {
    usage("unknown calendar \"" + text +
          "\" (use hourly [:MM], daily HH:MM, weekly Sun HH:MM, monthly D HH:MM, quarterly [HH:MM])");
  }
  if (i < w.size()) usage("unexpected '" + w[i] + "' in \"" + text + "\"");
  return c;
}

UnixSeconds next_occurrence(const Calendar& c, const date::time_zone* tz, UnixSeconds t) {
  switch (c.kind) {
    case Calendar::Kind::kHourly: {
      // Every real hour (twice through a repeated hour, not at all in a skipped one
      // only when the zone skips whole hours): step through UTC quarter hours, as
      // every zone offset in use is a multiple of 15 minutes.
      UnixSeconds s = t - ((t % 900) + 900) % 900;
      for (int i = 0; i < 4 * 30; ++i, s += 900) {
        if (s <= t) continue;
        auto lt = tz->to_local(sys_seconds(seconds(s)));
        auto tod = lt - date::floor<hours>(lt);
        if (tod == minutes(c.minute)) return s;
      }
      throw Error(ErrorCode::kInternal, "no hourly occurrence found");
    }
    case Calendar::Kind::kDaily:
      return next_daily(c, tz, t, [](date::year_month_day, date::weekday) { return true; });
    case Calendar::Kind::kWeekly:
      return next_daily(c, tz, t, [&](date::year_month_day, date::weekday wd) {
        return wd.c_encoding() == static_cast<unsigned>(c.weekday);
      });
    case Calendar::Kind::kMonthly:
      return next_daily(c, tz, t, [&](date::year_month_day ymd, date::weekday) {
        return static_cast<unsigned>(ymd.day()) == static_cast<unsigned>(c.day);
      });
    case Calendar::Kind::kQuarterly:
      return next_daily(c, tz, t, [](date::year_month_day ymd, date::weekday) {
        return static_cast<unsigned>(ymd.day()) == 1 && (static_cast<unsigned>(ymd.month()) - 1) % 3 == 0;
      });
  }
  throw Error(ErrorCode::kInternal, "bad calendar kind");
}

std::int64_t parse_duration(const std::string& text) {
  if (text.empty()) usage("empty duration (use e.g. \"26h\", \"30m\", \"1h30m\")");
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t j = i;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
    if (j == i || j == text.size() || j - i > 9)
      usage("\"" + text + "\" is not a duration (use e.g. \"26h\", \"30m\", \"90s\", \"2d\", \"1h30m\")");
    std::int64_t n = std::stoll(text.substr(i, j - i)), unit = 0;
    switch (text[j]) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86400;
        break;
      default:
        usage("\"" + text + "\" is not a duration (use e.g. \"26h\", \"30m\", \"90s\", \"2d\", \"1h30m\")");
    }
    total += n * unit;
    i = j + 1;
  }
  return total;
}

std::string format_duration(std::int64_t s) {
  if (s == 0) return "0s";
  std::string out = s < 0 ? "-" : "";
  s = s < 0 ? -s : s;
  const std::pair<std::int64_t, const char*> units[] = {{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}};
  for (auto [u, name] : units) {
    if (s >= u) {
      out += std::to_string(s / u) + name;
      s %= u;
    }
  }
  return out;
}

const date::time_zone* schedule_zone(const ScheduleConfig& s) {
  try {
    return s.timezone.empty() ? date::current_zone() : date::locate_zone(s.timezone);
  } catch (const std::exception& e) {
    usage("time zone '" + s.timezone + "': " + e.what());
  }
}

std::int64_t occurrence_delay(const JobConfig& job, UnixSeconds scheduled) {
  if (job.random_delay <= 0) return 0;
  // FNV-1a of the name, then splitmix64 with the time: stable across builds.
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : job.name) h = (h ^ ch) * 1099511628211ull;
  std::uint64_t z = h ^ static_cast<std::uint64_t>(scheduled);
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<std::int64_t>(z % static_cast<std::uint64_t>(job.random_delay + 1));
}

std::string format_local(const date::time_zone* tz, UnixSeconds t) {
  return date::format("%F %R %Z", date::make_zoned(tz, sys_seconds(seconds(t))));
}

ListenAddress parse_loopback_listen(const std::string& text) {
  ListenAddress a;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find("]:");
    if (close == std::string::npos) usage("\"" + text + "\" is not [ADDRESS]:PORT");
    a.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    a.ipv6 = true;
    if (a.host != "::1") usage("\"" + text + "\": only loopback addresses (127.0.0.0/8, ::1) are accepted");
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) usage("\"" + text + "\" is not ADDRESS:PORT (e.g. \"127.0.0.1:9321\")");
    a.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    unsigned char buf[4];
    if (inet_pton(AF_INET, a.host.c_str(), buf) != 1)
      usage("\"" + text + "\": '" + a.host + "' is not a numeric address (use 127.0.0.1 or [::1])");
    if (buf[0] != 127) usage("\"" + text + "\": only loopback addresses (127.0.0.0/8, ::1) are accepted");
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(port) < 1 || std::stoi(port) > 65535)
    usage("\"" + text + "\": port '" + port + "' must be 1..65535");
  a.port = std::stoi(port);
  return a;
}

ScheduleConfig parse_schedule_section(const std::string& origin, const toml::table& t) {
  ScheduleConfig s;
  for (const auto& [k, n] : t) {
    std::string key(k.str());
    if (key == "timezone") {
      s.timezone = str(origin, n, "schedule.timezone");
      located(origin, n, "schedule.timezone", [&] { return schedule_zone(s); });
    } else if (key == "rpo") {
      s.rpo =
          located(origin, n, "schedule.rpo", [&] { return parse_duration(str(origin, n, "schedule.rpo")); });
      if (s.rpo < 60) bad(at(origin, n), "'schedule.rpo' must be at least 1m");
    } else if (key == "metrics_file") {
      s.metrics_file = str(origin, n, "schedule.metrics_file");
      if (s.metrics_file.empty() || s.metrics_file[0] != '/')
        bad(at(origin, n), "'schedule.metrics_file' must be an absolute path");
    } else if (key == "metrics_listen") {
      s.metrics_listen = str(origin, n, "schedule.metrics_listen");
      located(origin, n, "schedule.metrics_listen", [&] { return parse_loopback_listen(s.metrics_listen); });
    } else if (n.is_table() || n.is_string()) {
      s.jobs.push_back(parse_job(origin, key, n));
    } else {
      bad(at(origin, n),
          "unknown key 'schedule." + key +
              "' (known: timezone, rpo, metrics_file, metrics_listen, and jobs: backup, prune, check, "
              "drill, report or any name with 'command'/'exec')");
    }
  }
  auto rank = [](const std::string& name) {
    auto it = std::find(known_jobs().begin(), known_jobs().end(), name);
    return static_cast<int>(it - known_jobs().begin());
  };
  std::stable_sort(s.jobs.begin(), s.jobs.end(), [&](const JobConfig& a, const JobConfig& b) {
    return rank(a.name) != rank(b.name) ? rank(a.name) < rank(b.name) : a.name < b.name;
  });
  return s;
}

AlertConfig parse_alerts_section(const std::string& origin, const toml::table& t) {
  AlertConfig a;
  for (const auto& [k, n] : t) {
    std::string key(k.str()), full = "alerts." + key;
    if (key == "smtp_url") {
      a.smtp_url = str(origin, n, full);
      if (a.smtp_url.rfind("smtp://", 0) != 0 && a.smtp_url.rfind("smtps://", 0) != 0)
        bad(at(origin, n), "'alerts.smtp_url' must be smtp://host[:port] or smtps://host[:port]");
    } else if (key == "from") {
      a.from = str(origin, n, full);
    } else if (key == "to") {
      a.to = str_array(origin, n, full);
    } else if (key == "subject_prefix") {
      a.subject_prefix = str(origin, n, full);
    } else if (key == "key_expiry_days") {
      a.key_expiry_days = static_cast<int>(toml_read::get_int(origin, n, full, 0, 3650));
    } else {
      bad(at(origin, n),
          "unknown key '" + full + "' (known: smtp_url, from, to, subject_prefix, key_expiry_days)");
    }
  }
  if (!a.smtp_url.empty() && (a.from.empty() || a.to.empty()))
    throw Error(ErrorCode::kUsage, origin + ": [alerts] with 'smtp_url' needs 'from' and 'to'");
  return a;
}

}  // namespace reduit
