// The agent: calendar arithmetic (DST in Europe/Zurich), [schedule] validation, the
// scheduler on a virtual clock (issue 7 must-show 1), and the real daemon running
// real `reduit backup`/`check` children with sd_notify, metrics (must-show 4),
// SIGHUP, SIGTERM and an alert e-mail to a local SMTP sink.
#include <SQLiteCpp/SQLiteCpp.h>
#include <date/tz.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include "agent/config.hpp"
#include "agent/daemon.hpp"
#include "agent/schedule.hpp"
#include "restore/imap_judge.hpp"
#include "support/mailserver.hpp"
#include "support/site.hpp"
#include "support/sshd.hpp"
#include "vault/catalog.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"

using namespace reduit;
using namespace reduit::test;

namespace {

const date::time_zone* zurich() {
  return date::locate_zone("Europe/Zurich");
}

UnixSeconds local(const std::string& s) {
  return parse_local_time(s, zurich());
}

std::string next_str(const std::string& cal, const std::string& after) {
  return format_local(zurich(), next_occurrence(parse_calendar(cal), zurich(), local(after)));
}

std::string config_error(const std::string& text) {
  try {
    parse_config(text, "site.toml");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUsage);
    return e.what();
  }
  return "";
}

const char* kBase = "state_dir = \"/var/lib/reduit\"\n[vault]\nurl = \"file:///srv/v\"\n";

// A delivered message (LF line ends, as Maildir stores it): unfolded header fields
// and body lines.
struct Mail {
  std::vector<std::pair<std::string, std::string>> fields;
  std::vector<std::string> body_lines;
  std::string header(const std::string& name) const {
    for (const auto& [n, v] : fields)
      if (n == name) return v;
    return "<no " + name + ">";
  }
};

Mail parse_mail(const std::string& text) {
  Mail m;
  std::size_t end = text.find("\n\n");
  std::string head = text.substr(0, end), body = end == std::string::npos ? "" : text.substr(end + 2);
  std::istringstream in(head);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t') && !m.fields.empty()) {
      m.fields.back().second += " " + line.substr(line.find_first_not_of(" \t"));
    } else if (auto c = line.find(": "); c != std::string::npos) {
      m.fields.emplace_back(line.substr(0, c), line.substr(c + 2));
    }
  }
  std::istringstream b(body);
  for (std::string line; std::getline(b, line);) m.body_lines.push_back(line);
  return m;
}

/// Messages of a Maildir's new/ whose Subject is `subject`, waiting up to 30 s for
/// `want` of them.
std::vector<std::string> wait_for_mail(const std::string& maildir, const std::string& subject,
                                       std::size_t want) {
  std::vector<std::string> out;
  for (int i = 0; i < 300; ++i) {
    out.clear();
    for (const auto& [name, text] : maildir_new(maildir))
      if (parse_mail(text).header("Subject") == subject) out.push_back(text);
    if (out.size() >= want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return out;
}

}  // namespace

TEST(Schedule, CalendarOccurrencesInZurichAcrossDst) {
  EXPECT_EQ(next_str("daily 02:00", "2024-01-01T00:00"), "2024-01-01 02:00 CET");
  EXPECT_EQ(next_str("daily 02:00", "2024-01-01T02:00"), "2024-01-02 02:00 CET");  // strictly after
  // Spring forward (31 March 2024, 02:00 → 03:00): 02:30 does not exist, fires at 03:00.
  EXPECT_EQ(next_str("daily 02:30", "2024-03-30T12:00"), "2024-03-31 03:00 CEST");
  EXPECT_EQ(next_str("daily 02:30", "2024-03-31T12:00"), "2024-04-01 02:30 CEST");
  // Fall back (27 October 2024, 03:00 → 02:00): 02:30 exists twice, fires once (CEST).
  EXPECT_EQ(next_str("daily 02:30", "2024-10-26T12:00"), "2024-10-27 02:30 CEST");
  EXPECT_EQ(next_str("daily 02:30", "2024-10-27T02:40"), "2024-10-28 02:30 CET");
  EXPECT_EQ(next_str("weekly Sun 03:00", "2024-01-01T00:00"), "2024-01-07 03:00 CET");
  EXPECT_EQ(next_str("weekly", "2024-01-01T00:00"), "2024-01-08 00:00 CET");  // Monday 00:00
  EXPECT_EQ(next_str("monthly 15 04:00", "2024-02-15T04:00"), "2024-03-15 04:00 CET");
  EXPECT_EQ(next_str("monthly", "2024-02-15T04:00"), "2024-03-01 00:00 CET");
  EXPECT_EQ(next_str("quarterly", "2024-01-01T00:00"), "2024-04-01 00:00 CEST");
  EXPECT_EQ(next_str("quarterly 05:00", "2024-10-01T05:00"), "2025-01-01 05:00 CET");
  EXPECT_EQ(next_str("hourly :15", "2024-01-01T10:15"), "2024-01-01 11:15 CET");
  // Hourly counts real hours: 25 on the fall-back day, 23 on the spring-forward day.
  for (auto [day, next_day, want] : {std::tuple{"2024-10-27T00:00", "2024-10-28T00:00", 25},
                                     std::tuple{"2024-03-31T00:00", "2024-04-01T00:00", 23}}) {
    Calendar h = parse_calendar("hourly");
    int n = 0;
    for (UnixSeconds t = local(day) - 1; (t = next_occurrence(h, zurich(), t)) < local(next_day);) ++n;
    EXPECT_EQ(n, want) << day;
  }
}

TEST(Schedule, DurationsAndDelays) {
  EXPECT_EQ(parse_duration("26h"), 93600);
  EXPECT_EQ(parse_duration("1h30m"), 5400);
  EXPECT_EQ(parse_duration("2d"), 172800);
  EXPECT_EQ(format_duration(93784), "1d2h3m4s");
  EXPECT_EQ(error_code_of([] { parse_duration("26"); }), ErrorCode::kUsage);
  EXPECT_EQ(error_code_of([] { parse_duration("3w"); }), ErrorCode::kUsage);
  JobConfig j;
  j.name = "backup";
  j.random_delay = 1800;
  UnixSeconds t = local("2024-01-01T02:00");
  std::int64_t d = occurrence_delay(j, t);
  EXPECT_EQ(d, occurrence_delay(j, t));  // fixed per occurrence
  EXPECT_GE(d, 0);
  EXPECT_LE(d, 1800);
}

TEST(Schedule, ConfigErrorsNameFileAndLine) {
  EXPECT_EQ(config_error(std::string(kBase) + "[schedule]\nbackup = \"daily 2:00\"\n"),
            "site.toml:5: 'schedule.backup': '2:00' in \"daily 2:00\" is not a time HH:MM (00:00..23:59)");
  EXPECT_EQ(config_error(std::string(kBase) + "[schedule]\nprune = \"weekly Sonday 03:00\"\n"),
            "site.toml:5: 'schedule.prune': 'Sonday' in \"weekly Sonday 03:00\" is not a weekday (Sun, Mon, "
            "Tue, Wed, Thu, Fri, Sat)");
  EXPECT_EQ(
      config_error(std::string(kBase) + "[schedule]\ncheck = \"monthly 31 04:00\"\n"),
      "site.toml:5: 'schedule.check': day '31' in \"monthly 31 04:00\" must be 1..28 (every month has it)");
  EXPECT_EQ(
      config_error(std::string(kBase) + "[schedule]\ndrill = \"yearly\"\n"),
      "site.toml:5: 'schedule.drill': unknown calendar \"yearly\" (use hourly [:MM], daily HH:MM, weekly "
      "Sun HH:MM, monthly D HH:MM, quarterly [HH:MM])");
  EXPECT_EQ(config_error(std::string(kBase) + "[schedule]\ntimezone = \"Europe/Zurch\"\n"),
            "site.toml:5: 'schedule.timezone': time zone 'Europe/Zurch': Europe/Zurch not found in timezone "
            "database");
  EXPECT_EQ(
      config_error(std::string(kBase) + "[schedule]\nrpo = \"26 hours\"\n"),
      "site.toml:5: 'schedule.rpo': \"26 hours\" is not a duration (use e.g. \"26h\", \"30m\", \"90s\", "
      "\"2d\", \"1h30m\")");
  EXPECT_EQ(config_error(std::string(kBase) + "[schedule]\nmirror = \"daily 01:00\"\n"),
            "site.toml:5: job 'mirror' is not a built-in job (backup, prune, check, drill, report): give it "
            "'command' or 'exec'");
  EXPECT_EQ(
      config_error(std::string(kBase) + "[schedule.backup]\nwhen = \"daily 01:00\"\nrandom = \"5m\"\n"),
      "site.toml:6: unknown key 'schedule.backup.random' (known: when, random_delay, retries, retry_delay, "
      "command, exec)");
  EXPECT_EQ(config_error(std::string(kBase) + "[schedule.backup]\nrandom_delay = \"5m\"\n"),
            "site.toml:4: [schedule.backup] needs 'when' (e.g. \"daily 02:00\")");
  EXPECT_EQ(config_error(std::string(kBase) + "[schedule]\nmetrics_listen = \"0.0.0.0:9321\"\n"),
            "site.toml:5: 'schedule.metrics_listen': \"0.0.0.0:9321\": only loopback addresses (127.0.0.0/8, "
            "::1) are accepted");
  EXPECT_EQ(
      config_error(std::string(kBase) + "[schedule]\nmetrics_listen = \"[::]:9321\"\n"),
      "site.toml:5: 'schedule.metrics_listen': \"[::]:9321\": only loopback addresses (127.0.0.0/8, ::1) "
      "are accepted");
  EXPECT_EQ(
      config_error(std::string(kBase) + "[schedule]\nmetrics_listen = \"localhost:9321\"\n"),
      "site.toml:5: 'schedule.metrics_listen': \"localhost:9321\": 'localhost' is not a numeric address "
      "(use 127.0.0.1 or [::1])");
  EXPECT_EQ(config_error(std::string(kBase) + "[schedule]\nmetrics_listen = \"127.0.0.1:70000\"\n"),
            "site.toml:5: 'schedule.metrics_listen': \"127.0.0.1:70000\": port '70000' must be 1..65535");
  EXPECT_EQ(config_error(std::string(kBase) + "[alerts]\nkey_expiry_days = \"30d\"\n"),
            "site.toml:5: 'alerts.key_expiry_days' must be an integer");
  EXPECT_EQ(parse_config(std::string(kBase) + "[schedule]\nmetrics_listen = \"[::1]:9321\"\n[alerts]\n"
                                              "key_expiry_days = 14\n",
                         "site.toml")
                .alerts.key_expiry_days,
            14);
  EXPECT_EQ(parse_config(kBase, "site.toml").alerts.key_expiry_days, 30);
  EXPECT_EQ(config_error(std::string(kBase) + "[alerts]\nsmtp_url = \"http://x\"\n"),
            "site.toml:5: 'alerts.smtp_url' must be smtp://host[:port] or smtps://host[:port]");

  Config c = parse_config(std::string(kBase) + R"([schedule]
timezone = "Europe/Zurich"
rpo = "26h"
report = "monthly 2 06:00"
backup = "daily 02:00"
[schedule.prune]
when = "weekly Sun 03:00"
random_delay = "15m"
[schedule.mirror]
when = "hourly"
exec = ["/usr/bin/rsync", "-a", "/a", "/b"]
)",
                          "site.toml");
  ASSERT_EQ(c.schedule.jobs.size(), 4u);
  EXPECT_EQ(c.schedule.jobs[0].name, "backup");  // priority order, not file order
  EXPECT_EQ(c.schedule.jobs[1].name, "prune");
  EXPECT_EQ(c.schedule.jobs[1].steps, (std::vector<std::vector<std::string>>{{"forget"}, {"prune"}}));
  EXPECT_EQ(c.schedule.jobs[1].random_delay, 900);
  EXPECT_EQ(c.schedule.jobs[2].name, "report");
  EXPECT_EQ(c.schedule.jobs[3].name, "mirror");
  EXPECT_EQ(c.schedule.jobs[3].exec[0], "/usr/bin/rsync");
  EXPECT_EQ(c.schedule.rpo, 93600);
}

namespace {

const char* kSeedSchedule = R"([schedule]
timezone = "Europe/Zurich"
backup = "daily 02:00"
prune = "weekly Sun 03:00"
check = "monthly 1 04:00"
drill = "quarterly 05:00"
)";

// "STARTED job SCHEDULED" per attempt, from `agent run --simulate --json`.
std::vector<std::string> simulate(const Site& site, const std::vector<std::string>& extra, std::string* err) {
  std::vector<std::string> args{"agent", "run", "--simulate", "2024-01-01T00:00..2024-04-30T00:00"};
  args.insert(args.end(), extra.begin(), extra.end());
  RunResult r = site.reduit(args);
  EXPECT_EQ(r.status, 0) << r.err;
  *err = r.err;
  std::vector<std::string> out;
  if (r.status != 0) return out;
  const nlohmann::json j = r.json();  // (a temporary's ["runs"] would dangle in the loop)
  for (const auto& e : j["runs"]) {
    out.push_back(e["started"].get<std::string>() + " " + e["job"].get<std::string>() + " " +
                  e["scheduled"].get<std::string>() + " #" + std::to_string(e["attempt"].get<int>()) +
                  " exit " + std::to_string(e["exit"].get<int>()));
  }
  return out;
}

// The seed schedule written out day by day, independently of the scheduler.
std::vector<std::string> expected_seed_runs() {
  std::vector<std::string> want;
  using namespace date;
  for (sys_days d = 2024_y / January / 1; d < sys_days(2024_y / April / 30); d += days(1)) {
    year_month_day ymd(d);
    char day[16];
    std::snprintf(day, sizeof day, "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
    std::string zone = (d >= sys_days(2024_y / March / 31)) ? "CEST" : "CET";
    auto at = [&](const std::string& hhmm) { return std::string(day) + " " + hhmm + " " + zone; };
    // 31 March: 02:00 does not exist (clocks jump to 03:00); the backup runs at 03:00.
    std::string backup = d == sys_days(2024_y / March / 31) ? at("03:00") : at("02:00");
    want.push_back(backup + " backup " + backup + " #1 exit 0");
    if (weekday(d) == Sunday) want.push_back(at("03:00") + " prune " + at("03:00") + " #1 exit 0");
    if (static_cast<unsigned>(ymd.day()) == 1u)
      want.push_back(at("04:00") + " check " + at("04:00") + " #1 exit 0");
    if (static_cast<unsigned>(ymd.day()) == 1u && (static_cast<unsigned>(ymd.month()) - 1) % 3 == 0)
      want.push_back(at("05:00") + " drill " + at("05:00") + " #1 exit 0");
  }
  return want;
}

}  // namespace

// Must-show 1.
TEST(Agent, Simulate120DaysMatchesTheSchedule) {
  Site site({"/nonexistent"}, "%d/%n", "", "", kSeedSchedule);
  std::vector<std::string> want = expected_seed_runs();
  ASSERT_EQ(want.size(), 120u + 17u + 4u + 2u);
  std::string err;
  std::vector<std::string> got = simulate(site, {}, &err);
  ASSERT_EQ(got, want);
  EXPECT_EQ(err.find("RPO exceeded"), std::string::npos) << err;
  EXPECT_EQ(got[0], "2024-01-01 02:00 CET backup 2024-01-01 02:00 CET #1 exit 0");

  // Down from Friday 9 Feb 12:00 to Monday 12 Feb 12:00: backups of 10, 11 and 12 Feb
  // and Sunday's prune are missed; at restart the latest backup and the prune run once.
  std::vector<std::string> down_want;
  bool restarted = false;
  for (const auto& w : want) {
    std::string started = w.substr(0, 20);
    if (started > "2024-02-09 12:00 CET" && started < "2024-02-12 12:00 CET") continue;
    if (started > "2024-02-12 12:00 CET" && !restarted) {
      down_want.push_back("2024-02-12 12:00 CET backup 2024-02-12 02:00 CET #1 exit 0");
      down_want.push_back("2024-02-12 12:00 CET prune 2024-02-11 03:00 CET #1 exit 0");
      restarted = true;
    }
    down_want.push_back(w);
  }
  ASSERT_EQ(down_want.size(), want.size() - 4 + 2);
  TempDir state;
  std::vector<std::string> got_down =
      simulate(site, {"--down", "2024-02-09T12:00..2024-02-12T12:00", "--state", state.path()}, &err);
  EXPECT_EQ(got_down, down_want);
  // At restart the last good backup is older than the RPO (default 26h): one alert.
  EXPECT_NE(err.find("reduit-agent: ALERT: RPO exceeded: the last good backup ended 2024-02-09 02:00 CET, "
                     "3d10h ago; the RPO is 1d2h\n"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("RPO exceeded"), err.rfind("RPO exceeded"));
  // The history is in the catalog, one row per attempt.
  Catalog cat(state.path());
  EXPECT_EQ(cat.job_runs("", 1000).size(), down_want.size());
  EXPECT_EQ(cat.job_runs("prune", 1000).size(), 17u);  // Feb 11 missed, run once at restart
}

TEST(Agent, FailedRunsRetryWithinTheirWindowAndNeverStopLaterRuns) {
  // `reachable` fails with exit 4 (vault unreachable): retried after 10m, then 20m,
  // then failed; the next day runs again. `drill` is given a bad option: exit 2
  // (usage), not retryable, recorded failed; later runs go on.
  Site site({"/nonexistent"}, "%d/%n", "", "", R"([schedule]
timezone = "Europe/Zurich"
[schedule.drill]
when = "daily 05:00"
command = [["drill", "--random", "--pack-share", "every-other"]]
[schedule.reachable]
when = "daily 02:00"
exec = ["/bin/sh", "-c", "exit 4"]
retries = 2
retry_delay = "10m"
)");
  RunResult r =
      site.reduit({"agent", "run", "--simulate", "2024-01-01T00:00..2024-01-03T00:00", "--execute"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> got;
  const nlohmann::json j = r.json();
  for (const auto& e : j["runs"])
    got.push_back(e["started"].get<std::string>() + " " + e["job"].get<std::string>() + " #" +
                  std::to_string(e["attempt"].get<int>()) + " exit " + std::to_string(e["exit"].get<int>()));
  EXPECT_EQ(got, (std::vector<std::string>{
                     "2024-01-01 02:00 CET reachable #1 exit 4", "2024-01-01 02:10 CET reachable #2 exit 4",
                     "2024-01-01 02:30 CET reachable #3 exit 4", "2024-01-01 05:00 CET drill #1 exit 2",
                     "2024-01-02 02:00 CET reachable #1 exit 4", "2024-01-02 02:10 CET reachable #2 exit 4",
                     "2024-01-02 02:30 CET reachable #3 exit 4", "2024-01-02 05:00 CET drill #1 exit 2"}));
  EXPECT_NE(r.err.find(
                "ALERT: job reachable scheduled 2024-01-01 02:00 CET failed after 3 attempt(s), last exit 4"),
            std::string::npos)
      << r.err;
  EXPECT_NE(
      r.err.find("ALERT: job drill scheduled 2024-01-02 05:00 CET failed after 1 attempt(s), last exit 2"),
      std::string::npos)
      << r.err;
}

// sshd stopped at the scheduled backup (issue 7, must-show 3, on the virtual clock
// with the real `reduit backup` over SFTP): exit 4, retried at +5m, +10m, +20m, then
// failed with an ALERT e-mailed through the project's own mail server into a local
// Maildir; sshd back, the next day's backup succeeds and mails nothing.
TEST(Agent, UnreachableVaultRetriesThenFailsAndTheNextDaySucceeds) {
  TempDir mail, vault, state;
  generate_maildir(mail.path(), 20, 2, 5);
  TestSshd sshd;
  MailServerProcess mx;
  Site site(
      {mail.path()}, "%d/%n",
      "sftp://" + sshd.user() + "@127.0.0.1:" + std::to_string(sshd.port()) + vault.path() + "/v",
      "ssh_key = \"" + sshd.client_key_path() + "\"\nknown_hosts = \"" + sshd.known_hosts_path() + "\"\n",
      "[schedule]\ntimezone = \"Europe/Zurich\"\n[schedule.backup]\nwhen = \"daily 02:00\"\n"
      "retry_delay = \"5m\"\n[alerts]\nsmtp_url = \"smtp://127.0.0.1:" +
          std::to_string(mx.smtp_port()) +
          "\"\nfrom = \"reduit@mail1.example\"\nto = [\"alice@example.test\"]\n");
  site.init();
  sshd.stop();
  auto day = [&](const std::string& range, std::string* err) {
    RunResult r = site.reduit({"agent", "run", "--simulate", range, "--execute", "--state", state.path()});
    EXPECT_EQ(r.status, 0) << r.err;
    *err = r.err;
    std::vector<std::string> got;
    const nlohmann::json j = r.json();
    for (const auto& e : j["runs"])
      got.push_back(e["started"].get<std::string>() + " " + e["job"].get<std::string>() + " #" +
                    std::to_string(e["attempt"].get<int>()) + " exit " +
                    std::to_string(e["exit"].get<int>()));
    return got;
  };
  std::string err;
  EXPECT_EQ(day("2024-01-01T00:00..2024-01-02T00:00", &err),
            (std::vector<std::string>{
                "2024-01-01 02:00 CET backup #1 exit 4", "2024-01-01 02:05 CET backup #2 exit 4",
                "2024-01-01 02:15 CET backup #3 exit 4", "2024-01-01 02:35 CET backup #4 exit 4"}));
  EXPECT_NE(
      err.find("reduit-agent: ALERT: job backup scheduled 2024-01-01 02:00 CET failed after 4 attempt(s), "
               "last exit 4: {\"error\":{\"code\":\"vault-unreachable\""),
      std::string::npos)
      << err;
  EXPECT_EQ(err.find("cannot send alert e-mail"), std::string::npos) << err;

  // The alert, as the mail server delivered it (250 only after fsync in new/).
  auto inbox = maildir_new(mx.maildir("alice@example.test"));
  ASSERT_EQ(inbox.size(), 1u) << mx.log();
  const std::string& msg = inbox.begin()->second;
  Mail m = parse_mail(msg);
  EXPECT_EQ(m.header("Return-Path"), "<reduit@mail1.example>");
  EXPECT_EQ(m.header("Delivered-To"), "alice@example.test");
  EXPECT_EQ(m.header("From"), "reduit@mail1.example");
  EXPECT_EQ(m.header("To"), "alice@example.test");
  EXPECT_EQ(m.header("Subject"), "[reduit] backup failed");
  EXPECT_EQ(m.header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_TRUE(std::regex_match(
      m.header("Date"), std::regex(R"([A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000)")))
      << m.header("Date");
  ASSERT_GE(m.body_lines.size(), 4u) << msg;
  EXPECT_EQ(m.body_lines[0],
            "job backup scheduled 2024-01-01 02:00 CET failed after 4 attempt(s), last exit 4");
  EXPECT_EQ(m.body_lines[1], "");
  EXPECT_EQ(m.body_lines[2], "Last attempt's output:");
  auto summary = nlohmann::json::parse(m.body_lines[3], nullptr, false);
  ASSERT_TRUE(summary.is_object()) << m.body_lines[3];
  EXPECT_EQ(summary["error"]["code"], "vault-unreachable");
  // The file's size is the ,S= of its name (Maildir delivery by the mail server).
  EXPECT_NE(inbox.begin()->first.find(",S=" + std::to_string(msg.size()) + ","), std::string::npos)
      << inbox.begin()->first;

  sshd.start();
  EXPECT_EQ(day("2024-01-02T00:00..2024-01-03T00:00", &err),
            (std::vector<std::string>{"2024-01-02 02:00 CET backup #1 exit 0"}));
  Catalog cat(state.path());
  auto runs = cat.job_runs("backup", 10);
  ASSERT_EQ(runs.size(), 5u);
  EXPECT_EQ(nlohmann::json::parse(runs[4].summary)["messages"], 20);
  EXPECT_EQ(site.reduit({"snapshots"}).json().size(), 1u);
  EXPECT_EQ(maildir_new(mx.maildir("alice@example.test")).size(), 1u);  // no second alert
}

namespace {

// A datagram socket standing in for systemd's $NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{300, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~NotifySocket() { close(fd_); }
  /// Reads messages until one contains `what`; returns it ("" on timeout).
  std::string wait_for(const std::string& what) {
    char buf[4096];
    for (;;) {
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n < 0) return "";
      std::string m(buf, static_cast<std::size_t>(n));
      seen += m + "\n";
      if (m.find(what) != std::string::npos) return m;
    }
  }
  std::string seen;

 private:
  std::string path_;
  int fd_ = -1;
};

// Kills a spawned process (if still running) when the test ends early.
struct Reaper {
  pid_t pid;
  ~Reaper() {
    if (pid > 0 && waitpid(pid, nullptr, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

}  // namespace

// The real daemon: catch-up runs of real `reduit backup`, `check --read-data` and
// `drill` at start, alert e-mails delivered by the project's mail server, metrics
// matching the catalog in the file and over HTTP (must-show 4), SIGHUP with a broken
// config, SIGTERM.
TEST(Agent, DaemonRunsMissedJobsAlertsWritesMetricsAndStops) {
  TempDir mail, work;
  generate_maildir(mail.path(), 40, 2, 3);
  MailServerProcess mx;
  const int http_port = free_port();
  std::string schedule =
      "[schedule]\ntimezone = \"Europe/Zurich\"\nrpo = \"26h\"\nmetrics_file = \"" + work / "reduit.prom" +
      "\"\nmetrics_listen = \"127.0.0.1:" + std::to_string(http_port) +
      "\"\nbackup = \"daily 02:00\"\n"
      "[schedule.check]\nwhen = \"monthly 1 04:00\"\ncommand = [[\"check\", \"--read-data\"]]\n"
      "[schedule.drill]\nwhen = \"daily 05:00\"\ncommand = [[\"drill\", \"--random\", \"--seed\", \"7\", "
      "\"--pack-share\", \"2\", \"--gnupghome\", \"" +
      SiteKeys::get().archive_home->path() +
      "\"]]\n"
      "[schedule.report]\nwhen = \"daily 06:00\"\nexec = [\"/bin/sh\", \"-c\", \"echo no "
      "relay >&2; exit 9\"]\n"
      "[alerts]\nsmtp_url = \"smtp://127.0.0.1:" +
      std::to_string(mx.smtp_port()) + "\"\nfrom = \"reduit@mail1.example\"\nto = [\"alice@example.test\"]\n";
  Site site({mail.path()}, "%d/%n", "", "", schedule);
  site.init();
  UnixSeconds now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  {
    // The agent first started 40 days ago and has run nothing since: each job has
    // missed occurrences and runs once now.
    Catalog cat(site.path("state"));
    cat.set_meta("agent.since", std::to_string(now - 40 * 86400));
  }
  NotifySocket notify(work / "notify");
  setenv("NOTIFY_SOCKET", (work / "notify").c_str(), 1);
  pid_t agent = spawn_command({reduit_binary(), "--config", site.config(), "agent", "run"},
                              work / "agent.out", work / "agent.err");
  Reaper reap_agent{agent};
  unsetenv("NOTIFY_SOCKET");
  EXPECT_EQ(notify.wait_for("READY=1"), "READY=1\nSTATUS=waiting for the next job");
  EXPECT_NE(notify.wait_for("STATUS=last: report FAILED (exit 9)"), "") << notify.seen;

  // Alert e-mails delivered into alice's Maildir by the mail server: the RPO (no
  // good backup for 40 days when the agent started), then the failed report.
  const std::string inbox = mx.maildir("alice@example.test");
  auto rpo = wait_for_mail(inbox, "[reduit] backup older than the RPO", 1);
  ASSERT_EQ(rpo.size(), 1u) << mx.log();
  Mail rm = parse_mail(rpo[0]);
  EXPECT_EQ(rm.header("From"), "reduit@mail1.example");
  EXPECT_EQ(rm.header("To"), "alice@example.test");
  ASSERT_EQ(rm.body_lines.size(), 2u) << rpo[0];
  EXPECT_EQ(rm.body_lines[1], "");
  EXPECT_TRUE(std::regex_match(
      rm.body_lines[0],
      std::regex(
          R"(the last good backup ended \d{4}-\d\d-\d\d \d\d:\d\d CES?T, 40d(\d+[hms])* ago; the RPO is 1d2h)")))
      << rm.body_lines[0];
  auto failed = wait_for_mail(inbox, "[reduit] report failed", 1);
  ASSERT_EQ(failed.size(), 1u) << mx.log();
  Mail fm = parse_mail(failed[0]);
  EXPECT_EQ(fm.header("Return-Path"), "<reduit@mail1.example>");
  EXPECT_EQ(fm.header("Delivered-To"), "alice@example.test");
  EXPECT_EQ(fm.header("From"), "reduit@mail1.example");
  EXPECT_EQ(fm.header("To"), "alice@example.test");
  ASSERT_EQ(fm.body_lines.size(), 5u) << failed[0];
  EXPECT_EQ(fm.body_lines[1], "");
  EXPECT_EQ(fm.body_lines[4], "");
  EXPECT_TRUE(std::regex_match(
      fm.body_lines[0],
      std::regex(
          R"(job report scheduled \d{4}-\d\d-\d\d 06:00 CES?T failed after 1 attempt\(s\), last exit 9)")))
      << fm.body_lines[0];
  EXPECT_EQ(fm.body_lines[2], "Last attempt's output:");
  EXPECT_EQ(fm.body_lines[3], "{\"stderr\":\"no relay\"}");
  EXPECT_EQ(maildir_new(inbox).size(), 2u);

  // History: backup, check, drill, report, one attempt each.
  Catalog cat(site.path("state"));
  auto runs = cat.job_runs("", 100);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].job, "backup");
  EXPECT_EQ(runs[0].exit_code, 0);
  EXPECT_EQ(runs[1].job, "check");
  EXPECT_EQ(runs[1].exit_code, 0);
  EXPECT_EQ(runs[2].job, "drill");
  EXPECT_EQ(runs[2].exit_code, 0) << runs[2].summary;
  EXPECT_EQ(runs[3].job, "report");
  EXPECT_EQ(runs[3].exit_code, 9);
  auto backup_json = nlohmann::json::parse(runs[0].summary);
  EXPECT_EQ(backup_json["messages"], 40);
  auto check_json = nlohmann::json::parse(runs[1].summary);
  EXPECT_EQ(check_json["ok"], true);
  auto drill_json = nlohmann::json::parse(runs[2].summary);
  EXPECT_EQ(drill_json["passed"], true);
  EXPECT_EQ(drill_json["seed"], 7);
  if (!find_doveadm().empty()) {
    EXPECT_EQ(drill_json["judge"]["ran"], true) << runs[2].summary;
    EXPECT_EQ(drill_json["judge"]["messages"], drill_json["messages"]);
  }

  // What the catalog holds, read with SQL here (not through the code under test).
  SQLite::Database db(site.path("state") + "/catalog.sqlite", SQLite::OPEN_READONLY);
  SQLite::Statement dq(db, "SELECT time_ns, passed, restore_seconds FROM drills");
  ASSERT_TRUE(dq.executeStep());
  const std::int64_t drill_ns = dq.getColumn(0).getInt64();
  const double drill_rto = dq.getColumn(2).getDouble();
  EXPECT_EQ(dq.getColumn(1).getInt(), 1);
  EXPECT_FALSE(dq.executeStep());  // one drill
  SQLite::Statement pq(db, "SELECT count(*), sum(size) FROM packs");
  ASSERT_TRUE(pq.executeStep());
  const std::int64_t packs = pq.getColumn(0).getInt64(), bytes = pq.getColumn(1).getInt64();
  EXPECT_EQ(packs, check_json["packs"].get<std::int64_t>());
  // check --read-data verified every pack, then the drill re-verified half of them
  // (ceil(packs / 2)): the oldest verification is check's of a pack the drill skipped.
  SQLite::Statement vq(
      db,
      "SELECT count(*), sum(how = 'check'), sum(how = 'drill'), min(time_ns) FROM pack_verified v "
      "JOIN packs p ON p.id = v.pack");
  ASSERT_TRUE(vq.executeStep());
  EXPECT_EQ(vq.getColumn(0).getInt64(), packs);
  EXPECT_EQ(vq.getColumn(2).getInt64(), (packs + 1) / 2);
  EXPECT_EQ(vq.getColumn(1).getInt64(), packs - (packs + 1) / 2);
  const std::int64_t oldest_s = vq.getColumn(3).getInt64() / 1000000000;

  // Must-show 4: the metrics file parses with prometheus_client's parser; its values
  // are the catalog's.
  std::string metrics_path = work / "reduit.prom";
  write_file(work / "parse.py", R"py(
import sys, json, math, urllib.request
from prometheus_client.parser import text_string_to_metric_families
if sys.argv[1].startswith("http://"):
    with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
        assert r.status == 200, r.status
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", r.headers["Content-Type"]
        text = r.read().decode()
else:
    text = open(sys.argv[1]).read()
out = {}
for fam in text_string_to_metric_families(text):
    assert fam.type == "gauge", fam.name
    for s in fam.samples:
        key = s.name + "".join("{%s=%s}" % kv for kv in sorted(s.labels.items()))
        out[key] = "+Inf" if math.isinf(s.value) else s.value
print(json.dumps(out, sort_keys=True))
)py");
  RunResult p = run_command({"/usr/bin/python3", work / "parse.py", metrics_path});
  ASSERT_EQ(p.status, 0) << p.err;
  auto m = nlohmann::json::parse(p.out);
  auto val = [&](const std::string& k) {
    return m.contains(k) && m[k].is_number() ? m[k].get<double>() : -1.0;
  };
  EXPECT_EQ(val("reduit_job_last_success_timestamp_seconds{job=backup}"), runs[0].ended);
  EXPECT_EQ(val("reduit_job_last_success_duration_seconds{job=backup}"), runs[0].ended - runs[0].started);
  EXPECT_EQ(val("reduit_job_last_exit_code{job=backup}"), 0);
  EXPECT_EQ(val("reduit_job_last_success_timestamp_seconds{job=check}"), runs[1].ended);
  EXPECT_EQ(val("reduit_job_last_success_timestamp_seconds{job=drill}"), runs[2].ended);
  EXPECT_EQ(val("reduit_job_last_exit_code{job=report}"), 9);
  EXPECT_EQ(val("reduit_job_last_run_timestamp_seconds{job=report}"), runs[3].ended);
  EXPECT_FALSE(m.contains("reduit_job_last_success_timestamp_seconds{job=report}"));
  EXPECT_EQ(val("reduit_backup_last_bytes_added"), backup_json["bytes_new"].get<double>());
  EXPECT_EQ(val("reduit_backup_last_messages"), 40);
  EXPECT_EQ(val("reduit_snapshots"), static_cast<double>(cat.snapshot_rows().size()));
  EXPECT_EQ(val("reduit_snapshots"), 1);
  EXPECT_EQ(val("reduit_rpo_seconds"), 93600);
  EXPECT_EQ(val("reduit_drill_last_passed"), 1);
  EXPECT_EQ(val("reduit_drill_last_rto_seconds"), drill_rto);
  EXPECT_EQ(val("reduit_drill_last_rto_seconds"), drill_json["restore_seconds"].get<double>());
  EXPECT_EQ(val("reduit_drill_last_timestamp_seconds"), static_cast<double>(drill_ns) / 1e9);
  EXPECT_EQ(val("reduit_vault_packs"), packs);
  EXPECT_EQ(val("reduit_vault_bytes"), bytes);
  EXPECT_EQ(val("reduit_oldest_unverified_pack_timestamp_seconds"), oldest_s);
  // The age is now - that time, "now" being when the metrics were rendered: not
  // before the last job (report) ended, not after the file was written. (It was
  // asserted within 1 s of the file's mtime; a loaded CI machine took longer.)
  struct stat st {};
  ASSERT_EQ(stat(metrics_path.c_str(), &st), 0);
  const double age = val("reduit_oldest_unverified_pack_age_seconds");
  EXPECT_GE(age, static_cast<double>(runs[3].ended - oldest_s)) << age;
  EXPECT_LE(age, static_cast<double>(st.st_mtime - oldest_s)) << age;
  const SiteKeys& keys = SiteKeys::get();
  EXPECT_EQ(m["reduit_key_expiry_timestamp_seconds{fingerprint=" + keys.archive_fpr + "}{role=archive}"],
            "+Inf")
      << p.out;
  EXPECT_EQ(m["reduit_key_expiry_timestamp_seconds{fingerprint=" + keys.agent_fpr + "}{role=agent}"], "+Inf")
      << p.out;
  // The audit log's gauges are the catalog's audit tables.
  {
    SQLite::Database adb(site.path("state") + "/catalog.sqlite", SQLite::OPEN_READONLY);
    const double last = static_cast<double>(adb.execAndGet("SELECT max(seq) FROM audit_log").getInt64());
    SQLite::Statement h(
        adb, "SELECT seq, time_ns FROM audit_heads WHERE signature != '' ORDER BY seq DESC LIMIT 1");
    ASSERT_TRUE(h.executeStep());
    SQLite::Statement c(adb, "SELECT value FROM audit_state WHERE key LIKE 'replicated.%'");
    ASSERT_TRUE(c.executeStep());
    EXPECT_GE(last, 4.0);  // at least the first run's change events and a backup
    EXPECT_EQ(val("reduit_audit_entries"), last);
    EXPECT_EQ(val("reduit_audit_unsealed_entries"), last - static_cast<double>(h.getColumn(0).getInt64()));
    EXPECT_EQ(val("reduit_audit_last_sealed_timestamp_seconds"),
              static_cast<double>(h.getColumn(1).getInt64() / 1000000000));
    EXPECT_EQ(val("reduit_audit_uncopied_entries"), last - std::stod(c.getColumn(0).getString()));
  }
  // 4 jobs × 3 last-run series + 3 good jobs × 2 success series + 4 backup/snapshot/RPO
  // + 3 drill + 2 vault + 2 oldest-unverified + 4 audit + 2 keys.
  EXPECT_EQ(m.size(), 12u + 6u + 4u + 3u + 2u + 2u + 4u + 2u) << p.out;

  // The same over HTTP on loopback (GET /metrics), parsed the same way.
  RunResult h = run_command(
      {"/usr/bin/python3", work / "parse.py", "http://127.0.0.1:" + std::to_string(http_port) + "/metrics"});
  ASSERT_EQ(h.status, 0) << h.err;
  auto hm = nlohmann::json::parse(h.out);
  hm.erase("reduit_oldest_unverified_pack_age_seconds");  // "now" moved on
  m.erase("reduit_oldest_unverified_pack_age_seconds");
  EXPECT_EQ(hm, m);
  // Anything else: the status line of each answer (raw requests, one per connection).
  write_file(work / "http.py", R"py(
import socket, sys
for req in sys.argv[2:]:
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
    c.sendall(req.encode().decode("unicode_escape").encode("latin-1"))
    data = b""
    while True:
        b = c.recv(65536)
        if not b: break
        data += b
    c.close()
    print(data.split(b"\r\n")[0].decode())
)py");
  RunResult other =
      run_command({"/usr/bin/python3", work / "http.py", std::to_string(http_port),
                   "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n",
                   "POST /metrics HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\n\\r\\n",
                   "GET /metrics HTTP/1.1\\r\\nX-Big: " + std::string(9000, 'a') + "\\r\\n\\r\\n",
                   "nonsense\\r\\n\\r\\n"});
  ASSERT_EQ(other.status, 0) << other.err;
  EXPECT_EQ(other.out,
            "HTTP/1.1 404 Not Found\nHTTP/1.1 405 Method Not Allowed\nHTTP/1.1 431 Request Header Fields Too "
            "Large\nHTTP/1.1 400 Bad Request\n");

  // status: one screen, and --json.
  RunResult s = site.reduit({"status"});
  EXPECT_EQ(s.status, 1) << s.err;  // a warning: the last report failed
  auto sj = s.json();
  EXPECT_EQ(sj["rpo_seconds"], 93600);
  EXPECT_EQ(sj["last_backup"]["within_rpo"], true);
  EXPECT_EQ(sj["snapshots"], 1);
  EXPECT_EQ(sj["last_drill"]["passed"], true);
  EXPECT_EQ(sj["last_drill"]["rto_seconds"].get<double>(), drill_rto);
  EXPECT_EQ(sj["last_drill"]["time"], format_local(zurich(), drill_ns / 1000000000));
  EXPECT_EQ(sj["vault"]["packs"], packs);
  EXPECT_EQ(sj["vault"]["bytes"], bytes);
  EXPECT_EQ(sj["oldest_unverified_pack"]["since"], format_local(zurich(), oldest_s));
  EXPECT_EQ(sj["oldest_unverified_pack"]["verified"], true);
  ASSERT_EQ(sj["keys"].size(), 2u);
  EXPECT_EQ(sj["keys"][0]["role"], "archive");
  EXPECT_EQ(sj["keys"][0]["expires"], nullptr);
  ASSERT_EQ(sj["jobs"].size(), 4u);
  EXPECT_EQ(sj["jobs"][0]["job"], "backup");
  EXPECT_EQ(sj["jobs"][0]["last_exit"], 0);
  EXPECT_EQ(sj["jobs"][0]["overdue"], false);
  EXPECT_EQ(sj["jobs"][3]["last_exit"], 9);
  ASSERT_EQ(sj["warnings"].size(), 1u) << sj.dump();
  EXPECT_EQ(sj["warnings"][0].get<std::string>().rfind("last report failed (exit 9, ", 0), 0u);
  RunResult text = run_command({reduit_binary(), "--config", site.config(), "status"});
  EXPECT_NE(text.out.find("RPO 1d2h: ok)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("last drill   " + format_local(zurich(), drill_ns / 1000000000) + " passed ("),
            std::string::npos)
      << text.out;

  // SIGHUP with a broken config keeps the running one.
  std::string good_config = read_file(site.config());
  write_file(site.config(), good_config + "\n[schedule.bogus]\nwhen = \"daily 25:00\"\n");
  kill(agent, SIGHUP);
  for (int i = 0; i < 300 && read_file(work / "agent.err").find("SIGHUP") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_NE(read_file(work / "agent.err").find("SIGHUP: keeping the running config: "), std::string::npos)
      << read_file(work / "agent.err");
  write_file(site.config(), good_config);
  kill(agent, SIGHUP);
  for (int i = 0; i < 300 && read_file(work / "agent.err").find("SIGHUP: reloaded") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_NE(read_file(work / "agent.err").find("SIGHUP: reloaded " + site.config() + " (4 job(s))"),
            std::string::npos);

  kill(agent, SIGTERM);
  EXPECT_EQ(notify.wait_for("STOPPING=1"), "STOPPING=1");
  int st_agent = 0;
  waitpid(agent, &st_agent, 0);
  EXPECT_TRUE(WIFEXITED(st_agent));
  EXPECT_EQ(WEXITSTATUS(st_agent), 0);
}

// SIGTERM while a job runs: the job gets SIGTERM, the agent waits for it and exits 0;
// the attempt is recorded as interrupted and its occurrence runs again at next start.
TEST(Agent, SigtermStopsTheRunningJobAndItRunsAgainAtStart) {
  TempDir work;
  std::string flag = work / "flag";
  Site site({"/nonexistent"}, "%d/%n", "", "",
            "[schedule]\ntimezone = \"Europe/Zurich\"\n[schedule.slow]\nwhen = \"daily 02:00\"\n"
            "exec = [\"/bin/sh\", \"-c\", \"test -e " +
                flag + " && exit 0; exec sleep 300\"]\n");
  UnixSeconds now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  UnixSeconds missed;
  {
    Catalog cat(site.path("state"));
    cat.set_meta("agent.since", std::to_string(now - 2 * 86400));
    // The occurrence the agent will catch up: the latest 02:00 at or before now.
    missed = next_occurrence(parse_calendar("daily 02:00"), zurich(), now - 86400 - 1);
  }
  NotifySocket notify(work / "notify");
  auto start = [&](const std::string& tag) {
    setenv("NOTIFY_SOCKET", (work / "notify").c_str(), 1);
    pid_t p = spawn_command({reduit_binary(), "--config", site.config(), "agent", "run"},
                            work / (tag + ".out"), work / (tag + ".err"));
    unsetenv("NOTIFY_SOCKET");
    return p;
  };
  pid_t agent = start("first");
  Reaper reap{agent};
  EXPECT_NE(notify.wait_for("STATUS=running slow"), "") << notify.seen;
  kill(agent, SIGTERM);
  EXPECT_EQ(notify.wait_for("STOPPING=1"), "STOPPING=1");
  int st = 0;
  waitpid(agent, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_NE(read_file(work / "first.err").find("stopping: forwarding SIGTERM to job pid "),
            std::string::npos);
  {
    Catalog cat(site.path("state"));
    auto runs = cat.job_runs("", 10);
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs[0].exit_code, 128 + SIGTERM);
    EXPECT_EQ(runs[0].summary, kInterrupted);
    EXPECT_EQ(runs[0].scheduled, missed);
  }
  write_file(flag, "");
  pid_t again = start("second");
  Reaper reap_again{again};
  EXPECT_NE(notify.wait_for("STATUS=last: slow ok"), "") << notify.seen;
  kill(again, SIGTERM);
  waitpid(again, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  Catalog cat(site.path("state"));
  auto runs = cat.job_runs("", 10);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[1].scheduled, missed);  // the same occurrence, run again
  EXPECT_EQ(runs[1].exit_code, 0);
}

TEST(Agent, SystemdUnitsVerify) {
  if (access("/usr/bin/systemd-analyze", X_OK) != 0) GTEST_SKIP() << "systemd-analyze is not installed";
  // The shipped units name /usr/bin/reduit; verify checks that ExecStart exists, so
  // check copies that name the binary under test.
  TempDir dir;
  std::vector<std::string> argv{"/usr/bin/systemd-analyze", "verify", "--man=no"};
  for (const char* unit : {"reduit-agent.service", "reduit-backup.service", "reduit-backup.timer",
                           "reduit-prune.service", "reduit-prune.timer", "reduit-check.service",
                           "reduit-check.timer", "reduit-drill.service", "reduit-drill.timer"}) {
    std::string text = read_file(source_dir() + "/docs/systemd/" + unit);
    ASSERT_FALSE(text.empty()) << unit;
    for (std::size_t p; (p = text.find("/usr/bin/reduit ")) != std::string::npos;)
      text.replace(p, 15, reduit_binary());
    write_file(dir / unit, text);
    argv.push_back(dir / unit);
  }
  RunResult r = run_command(argv);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
}

namespace {

// The expiry (Unix s, 0 = never) of `fpr`'s primary key as gpg lists it.
std::int64_t gpg_expiry(GpgHome& home, const std::string& fpr) {
  std::istringstream in(home.gpg({"--with-colons", "--list-keys", fpr}));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("pub:", 0) != 0) continue;
    std::vector<std::string> f;
    std::stringstream ls(line);
    for (std::string x; std::getline(ls, x, ':');) f.push_back(x);
    return f.size() > 6 && !f[6].empty() ? std::stoll(f[6]) : 0;
  }
  return -1;
}

}  // namespace

// Key expiry (issue 7): an archive key created with a 10-day expiry; the agent,
// started at chosen instants (REDUIT_NOW), alerts once when the expiry is less than
// key_expiry_days away, not again after a restart, and again after the key is
// renewed and the new expiry comes near. The metric follows the keyring.
TEST(Agent, KeyExpiryAlertsOnceAndRearmsWhenTheKeyIsRenewed) {
  TempDir work, mail;
  GpgHome home;
  home.gpg({"--quick-gen-key", "Archive 10d <archive10d@example.test>", "future-default", "default", "10d"});
  std::string archive;
  {
    std::istringstream in(home.gpg({"--with-colons", "--list-keys", "archive10d@example.test"}));
    for (std::string line; std::getline(in, line);)
      if (line.rfind("fpr:", 0) == 0 && archive.empty()) archive = line.substr(12, 40);
  }
  ASSERT_EQ(archive.size(), 40u);
  const std::string agent_key = home.generate_key("Agent <agent@example.test>");
  const std::int64_t expires = gpg_expiry(home, archive);
  ASSERT_GT(expires, 0);
  ASSERT_EQ(gpg_expiry(home, agent_key), 0);

  MailServerProcess mx;
  for (const char* d : {"cur", "new", "tmp"})
    std::filesystem::create_directories(mail / ("example.test/bob/" + std::string(d)));
  const std::string config =
      write_config(work.path(), "file://" + work / "vault", home.path(), {mail.path()}, "%d/%n", "", "", "");
  // [schedule] and [alerts] after the generated tables.
  write_file(
      config,
      read_file(config) + "[schedule]\ntimezone = \"Europe/Zurich\"\nmetrics_file = \"" +
          work / "reduit.prom" +
          "\"\n[schedule.noop]\nwhen = \"quarterly\"\nexec = [\"/bin/true\"]\n"
          "[alerts]\nsmtp_url = \"smtp://127.0.0.1:" +
          std::to_string(mx.smtp_port()) +
          "\"\nfrom = \"reduit@mail1.example\"\nto = [\"alice@example.test\"]\nkey_expiry_days = 30\n");
  auto reduit = [&](const std::vector<std::string>& args, const std::string& now) {
    std::vector<std::string> argv{"/usr/bin/env", "REDUIT_NOW=" + now, reduit_binary(), "--config", config,
                                  "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv);
  };
  const std::string real_now = std::to_string(clock_now_ns() / 1000000000);
  ASSERT_EQ(reduit({"init", "--recipient", archive, "--signing-key", agent_key}, real_now).status, 0);
  RunResult b = reduit({"backup"}, real_now);  // caches the vault config in the catalog
  ASSERT_EQ(b.status, 0) << b.err;

  // Starts the agent at `now` (Unix s), waits until it is up, stops it; its stderr.
  NotifySocket notify(work / "notify");
  int starts = 0;
  auto agent_at = [&](std::int64_t now) {
    const std::string tag = "agent" + std::to_string(++starts);
    setenv("NOTIFY_SOCKET", (work / "notify").c_str(), 1);
    setenv("REDUIT_NOW", std::to_string(now).c_str(), 1);
    pid_t pid = spawn_command({reduit_binary(), "--config", config, "agent", "run"}, work / (tag + ".out"),
                              work / (tag + ".err"));
    unsetenv("NOTIFY_SOCKET");
    unsetenv("REDUIT_NOW");
    Reaper reap{pid};
    EXPECT_EQ(notify.wait_for("READY=1"), "READY=1\nSTATUS=waiting for the next job");
    kill(pid, SIGTERM);
    EXPECT_EQ(notify.wait_for("STOPPING=1"), "STOPPING=1");
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
    return read_file(work / (tag + ".err"));
  };
  auto metric = [&](const std::string& fpr, const std::string& role) {
    std::string want =
        "reduit_key_expiry_timestamp_seconds{fingerprint=\"" + fpr + "\",role=\"" + role + "\"} ";
    std::string text = read_file(work / "reduit.prom");
    auto p = text.find(want);
    return p == std::string::npos ? std::string("<none>")
                                  : text.substr(p + want.size(), text.find('\n', p) - p - want.size());
  };
  const std::string inbox = mx.maildir("alice@example.test");
  const std::string subject =
      "[reduit] archive key " + archive.substr(24) + " expires " + format_local(zurich(), expires);

  // 40 days before: nothing to say; the metric has both keys.
  std::string err = agent_at(expires - 40 * 86400);
  EXPECT_EQ(err.find("ALERT"), std::string::npos) << err;
  EXPECT_EQ(metric(archive, "archive"), std::to_string(expires));
  EXPECT_EQ(metric(agent_key, "agent"), "+Inf");
  EXPECT_EQ(maildir_new(inbox).size(), 0u);

  // 20 days before: one alert, logged and mailed.
  err = agent_at(expires - 20 * 86400);
  EXPECT_NE(err.find("reduit-agent: ALERT: key expiry: the archive key " + archive +
                     " of the vault expires " + format_local(zurich(), expires) + ", in 20d\n"),
            std::string::npos)
      << err;
  auto mails = wait_for_mail(inbox, subject, 1);
  ASSERT_EQ(mails.size(), 1u) << mx.log();
  Mail km = parse_mail(mails[0]);
  EXPECT_EQ(km.header("From"), "reduit@mail1.example");
  EXPECT_EQ(km.header("To"), "alice@example.test");
  ASSERT_GE(km.body_lines.size(), 3u);
  EXPECT_EQ(km.body_lines[0], "the archive key " + archive + " of the vault expires " +
                                  format_local(zurich(), expires) + ", in 20d.");
  EXPECT_EQ(km.body_lines[2],
            "Backups cannot encrypt to an expired archive key. Extend it where its secret key is kept (gpg "
            "--quick-set-expire " +
                archive + " 1y) and import the public key into the agent's keyring.");

  // A restart a day later: already said.
  err = agent_at(expires - 19 * 86400);
  EXPECT_EQ(err.find("ALERT: key expiry"), std::string::npos) << err;
  EXPECT_EQ(maildir_new(inbox).size(), 1u);
  RunResult st = reduit({"status"}, std::to_string(expires - 19 * 86400));
  EXPECT_EQ(st.status, 1);
  EXPECT_NE(st.json()["warnings"].dump().find("archive key " + archive + " expires " +
                                              format_local(zurich(), expires) + ", in 19d"),
            std::string::npos)
      << st.out;

  // Renewed for 60 days: the metric follows, no alert at the same instant...
  home.gpg({"--quick-set-expire", archive, "60d"});
  const std::int64_t renewed = gpg_expiry(home, archive);
  ASSERT_GT(renewed, expires);
  err = agent_at(expires - 19 * 86400);
  EXPECT_EQ(err.find("ALERT: key expiry"), std::string::npos) << err;
  EXPECT_EQ(metric(archive, "archive"), std::to_string(renewed));
  // ...and one alert when the new expiry is 5 days away.
  err = agent_at(renewed - 5 * 86400);
  EXPECT_NE(err.find("reduit-agent: ALERT: key expiry: the archive key " + archive +
                     " of the vault expires " + format_local(zurich(), renewed) + ", in 5d\n"),
            std::string::npos)
      << err;
  EXPECT_EQ(
      wait_for_mail(
          inbox, "[reduit] archive key " + archive.substr(24) + " expires " + format_local(zurich(), renewed),
          1)
          .size(),
      1u);
  EXPECT_EQ(maildir_new(inbox).size(), 2u);
}

// The default drill job (`drill --random`, no --gnupghome) decrypts with the config's
// keyring: the child reads the same config. Here that keyring holds the agent key
// and an archive secret key, as on a site that drills on the mail host.
TEST(Agent, DefaultDrillJobUsesTheConfigsKeyring) {
  TempDir work, mail, state;
  GpgHome home;
  const std::string archive = home.generate_key("Archive <archive@example.test>");
  const std::string agent_key = home.generate_key("Agent <agent@example.test>");
  write_file(mail / "example.test/bob/cur/1700000000.M1P1.mx:2,S", "Subject: hi\n\nbody\n");
  for (const char* d : {"new", "tmp"})
    std::filesystem::create_directories(mail / ("example.test/bob/" + std::string(d)));
  const std::string config =
      write_config(work.path(), "file://" + work / "vault", home.path(), {mail.path()}, "%d/%n");
  write_file(
      config,
      read_file(config) +
          "[schedule]\ntimezone = \"Europe/Zurich\"\nbackup = \"daily 02:00\"\ndrill = \"daily 05:00\"\n");
  RunResult init = run_command(
      {reduit_binary(), "--config", config, "init", "--recipient", archive, "--signing-key", agent_key});
  ASSERT_EQ(init.status, 0) << init.err;
  RunResult r = run_command({reduit_binary(), "--config", config, "--json", "agent", "run", "--simulate",
                             "2024-01-01T00:00..2024-01-02T00:00", "--execute", "--state", state.path()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.json()["runs"].size(), 2u) << r.out;
  Catalog cat(state.path());
  auto drills = cat.job_runs("drill", 10);
  ASSERT_EQ(drills.size(), 1u);
  EXPECT_EQ(drills[0].exit_code, 0) << drills[0].summary;
  auto j = nlohmann::json::parse(drills[0].summary);
  EXPECT_EQ(j["passed"], true);
  EXPECT_EQ(j["mailbox"], "bob@example.test");
  EXPECT_EQ(j["messages"], 1);
}
