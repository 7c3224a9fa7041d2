// reduit status — one screen: last backup against the RPO, next runs, last results,
// warnings (from the config and the catalog's job history; no vault access).
#include <date/tz.h>

#include <chrono>

#include "agent/cli.hpp"
#include "agent/daemon.hpp"
#include "vault/catalog.hpp"

namespace reduit::cli {

void add_status(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("status", "last backup vs RPO, next runs, last job results, warnings");
  cmd->callback([&g, &run] {
    run = [&g] {
      Config cfg = load_config(g.config_path);
      const date::time_zone* tz = schedule_zone(cfg.schedule);
      Catalog cat(cfg.state_dir);
      UnixSeconds now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
      // The agent's start as recorded; a catalog the agent never ran on counts from now.
      auto since_meta = cat.get_meta("agent.since");
      UnixSeconds since = since_meta ? std::stoll(*since_meta) : now;
      std::vector<std::string> warnings;
      std::optional<JobRun> last_backup;
      for (auto& r : cat.job_runs("backup", 1000))
        if ((r.exit_code == 0 || r.exit_code == 1) && r.summary != kInterrupted) last_backup = r;
      std::optional<std::int64_t> age;
      if (last_backup) age = now - last_backup->ended;
      if (!last_backup)
        warnings.push_back("no successful backup recorded by the agent");
      else if (*age > cfg.schedule.rpo)
        warnings.push_back("last good backup is " + format_duration(*age) + " old, over the RPO of " +
                           format_duration(cfg.schedule.rpo));
      if (cfg.schedule.jobs.empty()) warnings.push_back("[schedule] has no jobs: the agent runs nothing");
      nlohmann::ordered_json jobs = nlohmann::ordered_json::array();
      for (const auto& j : cfg.schedule.jobs) {
        DueJob d = next_due(j, tz, cat, since, now);
        auto hist = cat.job_runs(j.name, 1);
        nlohmann::ordered_json e = {{"job", j.name},
                                    {"when", j.when.text},
                                    {"next", format_local(tz, d.run_at)},
                                    {"overdue", d.missed}};
        if (!hist.empty()) {
          const JobRun& r = hist.back();
          e["last_scheduled"] = format_local(tz, r.scheduled);
          e["last_ended"] = format_local(tz, r.ended);
          e["last_exit"] = r.exit_code;
          e["last_attempt"] = r.attempt;
          bool ok = r.exit_code == 0 || r.exit_code == 1;
          if (!ok && r.summary != kInterrupted)
            warnings.push_back("last " + j.name + " failed (exit " + std::to_string(r.exit_code) + ", " +
                               format_local(tz, r.ended) + ")");
        }
        jobs.push_back(e);
      }
      std::size_t snapshots = cat.snapshot_rows().size();
      if (g.json) {
        nlohmann::ordered_json lb = nullptr;
        if (last_backup)
          lb = {{"ended", format_local(tz, last_backup->ended)},
                {"age_seconds", *age},
                {"within_rpo", *age <= cfg.schedule.rpo}};
        print_json({{"time_zone", tz->name()},
                    {"rpo_seconds", cfg.schedule.rpo},
                    {"last_backup", lb},
                    {"snapshots", snapshots},
                    {"jobs", jobs},
                    {"warnings", warnings}});
      } else {
        if (last_backup)
          std::printf("last backup  %s (%s ago; RPO %s: %s)\n", format_local(tz, last_backup->ended).c_str(),
                      format_duration(*age).c_str(), format_duration(cfg.schedule.rpo).c_str(),
                      *age <= cfg.schedule.rpo ? "ok" : "EXCEEDED");
        else
          std::printf("last backup  none recorded (RPO %s)\n", format_duration(cfg.schedule.rpo).c_str());
        std::printf("snapshots    %zu\n\n%-8s %-22s %-22s %s\n", snapshots, "job", "next run", "last run",
                    "result");
        for (const auto& e : jobs) {
          std::string last = e.contains("last_ended") ? e["last_ended"].get<std::string>() : "-";
          std::string res = !e.contains("last_exit") ? "-"
                            : (e["last_exit"] == 0 || e["last_exit"] == 1)
                                ? "ok"
                                : "FAILED (exit " + std::to_string(e["last_exit"].get<int>()) + ")";
          std::printf("%-8s %-22s %-22s %s\n", e["job"].get<std::string>().c_str(),
                      (e["next"].get<std::string>() + (e["overdue"].get<bool>() ? "*" : "")).c_str(),
                      last.c_str(), res.c_str());
        }
        for (const auto& w : warnings) std::printf("WARNING: %s\n", w.c_str());
      }
      return warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
