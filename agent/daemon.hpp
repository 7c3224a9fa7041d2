// agent/daemon.hpp — `reduit agent run`: the scheduler that runs every job of
// [schedule] as a one-shot child of the same binary, one at a time.
//
// Each occurrence of a job runs as `/proc/self/exe [--config F] --json ARGS…` (its
// `command` steps, in order), or as its `exec` program. History (one catalog row per
// attempt, vault/catalog.hpp JobRun) decides what is due:
//   - anacron: an occurrence missed while the agent was down runs once at start
//     (the latest missed occurrence; older ones are not replayed);
//   - an attempt that exits 3 (vault locked) or 4 (vault unreachable) is retried
//     after retry_delay, 2×retry_delay, … while the retry starts before the job's
//     next occurrence, at most `retries` times; then the occurrence is failed;
//   - any other non-zero exit but 1 (warnings) fails the occurrence at once;
//   - a failed occurrence alerts ([alerts]) and never stops later occurrences;
//   - an attempt cut short by the agent's own SIGTERM is recorded with summary
//     kInterrupted and does not count: its occurrence runs again at next start.
// Signals: SIGTERM/SIGINT forward SIGTERM to the running child, wait for it, and
// return; SIGHUP reloads the config file (kept when the new one is invalid).
// systemd: READY=1 after start-up, STATUS= after every job, STOPPING=1 at the end
// (sd_notify; a no-op without $NOTIFY_SOCKET).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agent/config.hpp"
#include "vault/catalog.hpp"

namespace reduit {

/// The summary recorded for an attempt stopped by the agent's own shutdown.
inline constexpr const char* kInterrupted = "{\"interrupted\":\"agent stopping\"}";

/// When a job runs next: `scheduled` is the calendar occurrence (the history key),
/// `run_at` the time it starts (occurrence + fixed random delay, or now when it was
/// missed). `missed` is true when the occurrence is already past at `now`.
struct DueJob {
  const JobConfig* job = nullptr;
  UnixSeconds scheduled = 0, run_at = 0;
  bool missed = false;
};

/// The next occurrence of `job` to run at `now`, from its history in `cat` (or from
/// `since`, the agent's first start, when it has none).
DueJob next_due(const JobConfig& job, const date::time_zone* tz, Catalog& cat, UnixSeconds since,
                UnixSeconds now);

/// The agent's first start (catalog meta "agent.since"), recorded as `now` when absent.
UnixSeconds agent_since(Catalog& cat, UnixSeconds now);

struct AgentOptions {
  std::string config_path;  // "" = built-in demo config (then SIGHUP has nothing to reload)
  // --simulate: a virtual clock from sim_from to sim_to; no sleeping. The agent is
  // "down" (not running; restarted at the end) during each `down` interval.
  bool simulate = false;
  UnixSeconds sim_from = 0, sim_to = 0;
  std::vector<std::pair<UnixSeconds, UnixSeconds>> down;
  bool execute = false;   // simulate: really run the jobs (else record exit 0, summary {"simulated":true})
  std::string sim_state;  // simulate: catalog directory; "" = a temporary one, removed
};

/// Runs the agent until SIGTERM (or the end of the simulation). Returns the attempts
/// run, oldest first (the simulation's result; empty for a real run). Throws
/// Error(kUsage) for a config without jobs.
std::vector<JobRun> run_agent(const Config& cfg, const AgentOptions& opt);

/// Parses "YYYY-MM-DDTHH:MM" as local time in `tz`. Throws Error(kUsage).
UnixSeconds parse_local_time(const std::string& text, const date::time_zone* tz);

}  // namespace reduit
