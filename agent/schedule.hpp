// agent/schedule.hpp — the [schedule] and [alerts] config sections and calendar
// arithmetic for the agent (docs/CLI.md "[schedule]", docs/AGENT.md).
//
// A calendar expression names local wall-clock times in the schedule's time zone:
//   hourly [:MM]              every hour at minute MM (default :00)
//   daily [HH:MM]             every day (default 00:00)
//   weekly [Sun..Sat] [HH:MM] once a week (default Mon 00:00)
//   monthly [D] [HH:MM]       day D = 1..28 of every month (default 1 00:00)
//   quarterly [HH:MM]         1 Jan, 1 Apr, 1 Jul, 1 Oct (default 00:00)
// Time zones come from the system tz database through Howard Hinnant's date/tz
// (USE_OS_TZDB). DST: a local time that does not exist (spring forward) fires at the
// end of the gap; one that exists twice (fall back) fires once, at the first.
// Errors: every parse failure is Error(kUsage) "FILE:LINE: message".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace date {
class time_zone;
}

namespace reduit {

/// Unix time in seconds (UTC).
using UnixSeconds = std::int64_t;

struct Calendar {
  enum class Kind { kHourly, kDaily, kWeekly, kMonthly, kQuarterly };
  Kind kind = Kind::kDaily;
  int hour = 0, minute = 0;
  int weekday = 1;   // 0 = Sunday … 6 = Saturday (weekly)
  int day = 1;       // 1..28 (monthly)
  std::string text;  // as written
};

/// Parses a calendar expression (grammar above). Throws Error(kUsage) with a message
/// that the caller prefixes with FILE:LINE.
Calendar parse_calendar(const std::string& text);

/// The first occurrence of `c` strictly after `t`, in zone `tz`.
UnixSeconds next_occurrence(const Calendar& c, const date::time_zone* tz, UnixSeconds t);

/// Parses "26h", "30m", "90s", "2d", "1h30m" → seconds (>= 0). Throws Error(kUsage).
std::int64_t parse_duration(const std::string& text);
/// 93784 → "1d2h3m4s"; 0 → "0s".
std::string format_duration(std::int64_t seconds);

/// One scheduled job: every occurrence runs `steps` (each a `reduit` argument list,
/// run as `/proc/self/exe [--config F] --json ARGS…`, in order, stopping at the first
/// failure), or the absolute program `exec` instead when it is set.
struct JobConfig {
  std::string name;
  Calendar when;
  std::int64_t random_delay = 0;  // seconds; a fixed per-occurrence delay in [0, random_delay]
  std::vector<std::vector<std::string>> steps;
  std::vector<std::string> exec;
  int retries = 3;                 // extra attempts after a retryable failure (exit 3 or 4)
  std::int64_t retry_delay = 300;  // seconds before the first retry; doubled each time
};

struct ScheduleConfig {
  std::string timezone;          // IANA name; "" = the system zone (date::current_zone)
  std::int64_t rpo = 26 * 3600;  // seconds: alert when the last good backup is older
  std::string metrics_file;      // Prometheus textfile; "" = none
  // GET /metrics over HTTP from the agent process: a loopback address and port
  // ("127.0.0.1:9321", "[::1]:9321"); "" = none. Only 127.0.0.0/8 and ::1 are accepted.
  std::string metrics_listen;
  std::vector<JobConfig> jobs;  // in run-priority order (backup, prune, check, drill, report, others)
};

/// [alerts]: e-mail through an SMTP relay (libcurl), e.g. smtp_url = "smtp://127.0.0.1:25".
struct AlertConfig {
  std::string smtp_url;  // "" = alerts go to the log only
  std::string from;
  std::vector<std::string> to;
  std::string subject_prefix = "[reduit]";
  int key_expiry_days = 30;  // alert this many days before a vault key expires; 0 = never
};

/// A loopback listen address: host (numeric, without brackets) and port.
struct ListenAddress {
  std::string host;
  int port = 0;
  bool ipv6 = false;
};
/// Parses "127.0.0.1:9321" or "[::1]:9321"; only 127.0.0.0/8 and ::1 are accepted.
/// Throws Error(kUsage) naming what is wrong (the caller adds FILE:LINE).
ListenAddress parse_loopback_listen(const std::string& text);

/// The zone named by `s.timezone` (or the system zone). Throws Error(kUsage).
const date::time_zone* schedule_zone(const ScheduleConfig& s);

/// The fixed delay (0..job.random_delay seconds) of the occurrence at `scheduled`:
/// a hash of job name and time, so a restart or a simulation picks the same one.
std::int64_t occurrence_delay(const JobConfig& job, UnixSeconds scheduled);

/// "2024-03-31 03:00 CEST" in zone `tz`.
std::string format_local(const date::time_zone* tz, UnixSeconds t);

}  // namespace reduit
