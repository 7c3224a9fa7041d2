// reduit agent run — the scheduler daemon (agent/daemon.hpp), or with --simulate a
// dry run of the schedule against a virtual clock.
#include <date/tz.h>

#include "agent/cli.hpp"
#include "agent/daemon.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

namespace {

std::pair<UnixSeconds, UnixSeconds> parse_range(const std::string& s, const date::time_zone* tz,
                                                const std::string& opt) {
  auto p = s.find("..");
  if (p == std::string::npos)
    throw Error(ErrorCode::kUsage, opt + " '" + s + "' is not FROM..TO (YYYY-MM-DDTHH:MM..YYYY-MM-DDTHH:MM)");
  UnixSeconds a = parse_local_time(s.substr(0, p), tz), b = parse_local_time(s.substr(p + 2), tz);
  if (b <= a) throw Error(ErrorCode::kUsage, opt + " '" + s + "': TO must be after FROM");
  return {a, b};
}

}  // namespace

void add_agent(CLI::App& app, Globals& g, Runner& run) {
  auto* agent = app.add_subcommand("agent", "the scheduler daemon that runs every job of [schedule]");
  agent->require_subcommand(1);
  auto* cmd = agent->add_subcommand("run", "run jobs on schedule in the foreground (systemd Type=notify)");
  struct Opts {
    std::string simulate;
    std::vector<std::string> down;
    bool execute = false;
    std::string state;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option(
      "--simulate", o->simulate,
      "FROM..TO (local times YYYY-MM-DDTHH:MM): run the schedule on a virtual clock, no sleeping; "
      "prints the attempts");
  cmd->add_option("--down", o->down, "FROM..TO: with --simulate, the agent is not running then (repeatable)");
  cmd->add_flag("--execute", o->execute, "with --simulate, really run the jobs (else record them as exit 0)");
  cmd->add_option("--state", o->state, "with --simulate, keep the simulated history in this directory");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      AgentOptions opt;
      opt.config_path = g.config_path;
      if (o->simulate.empty()) {
        if (!o->down.empty() || o->execute || !o->state.empty())
          throw Error(ErrorCode::kUsage, "--down, --execute and --state need --simulate");
        run_agent(cfg, opt);
        return 0;
      }
      const date::time_zone* tz = schedule_zone(cfg.schedule);
      opt.simulate = true;
      std::tie(opt.sim_from, opt.sim_to) = parse_range(o->simulate, tz, "--simulate");
      for (const auto& d : o->down) opt.down.push_back(parse_range(d, tz, "--down"));
      opt.execute = o->execute;
      opt.sim_state = o->state;
      auto runs = run_agent(cfg, opt);
      if (g.json) {
        nlohmann::ordered_json a = nlohmann::ordered_json::array();
        for (const auto& r : runs) {
          a.push_back({{"job", r.job},
                       {"scheduled", format_local(tz, r.scheduled)},
                       {"started", format_local(tz, r.started)},
                       {"attempt", r.attempt},
                       {"exit", r.exit_code}});
        }
        print_json({{"runs", a}});
      } else {
        for (const auto& r : runs) {
          std::printf("%s  %-8s scheduled %s  attempt %d  exit %d\n", format_local(tz, r.started).c_str(),
                      r.job.c_str(), format_local(tz, r.scheduled).c_str(), r.attempt, r.exit_code);
        }
      }
      return 0;
    };
  });
}

}  // namespace reduit::cli
