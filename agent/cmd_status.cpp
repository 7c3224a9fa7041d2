// reduit status — one screen: last backup against the RPO, next runs, last results,
// the last drill, vault usage, the oldest unverified pack, key expiry and warnings
// (from the config, the catalog and the agent's keyring; no vault access).
#include <date/tz.h>

#include <algorithm>

#include "agent/cli.hpp"
#include "agent/daemon.hpp"
#include "agent/metrics.hpp"
#include "vault/catalog.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"
#include "vault/hash.hpp"

namespace reduit::cli {

void add_status(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("status", "last backup vs RPO, next runs, last job results, warnings");
  cmd->callback([&g, &run] {
    run = [&g] {
      Config cfg = load_config(g.config_path);
      const date::time_zone* tz = schedule_zone(cfg.schedule);
      Catalog cat(cfg.state_dir);
      UnixSeconds now = clock_now_ns() / 1000000000;  // REDUIT_NOW in tests
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

      // The last drill (table drills, written by `reduit drill`).
      nlohmann::ordered_json drill = nullptr;
      if (cat.db().tableExists("drills")) {
        SQLite::Statement q(cat.db(),
                            "SELECT time_ns, passed, restore_seconds, mailbox, failures FROM drills "
                            "ORDER BY time_ns DESC LIMIT 1");
        if (q.executeStep()) {
          UnixSeconds t = q.getColumn(0).getInt64() / 1000000000;
          bool passed = q.getColumn(1).getInt() != 0;
          drill = {{"time", format_local(tz, t)},
                   {"passed", passed},
                   {"rto_seconds", q.getColumn(2).getDouble()},
                   {"mailbox", q.getColumn(3).getString()}};
          if (!passed) {
            std::string f = q.getColumn(4).getString();
            warnings.push_back("last drill FAILED (" + format_local(tz, t) +
                               "): " + f.substr(0, f.find('\n')));
          }
        }
      }
      if (drill.is_null() && std::any_of(cfg.schedule.jobs.begin(), cfg.schedule.jobs.end(),
                                         [](const JobConfig& j) { return j.name == "drill"; }))
        warnings.push_back("no restore drill recorded");

      Catalog::PackUsage usage = cat.pack_usage();
      nlohmann::ordered_json oldest = nullptr;
      if (usage.oldest_verified) {
        UnixSeconds t = usage.oldest_verified->time_ns / 1000000000;
        oldest = {{"pack", to_hex(usage.oldest_verified->pack).substr(0, 16)},
                  {"since", format_local(tz, t)},
                  {"age_seconds", now - t},
                  {"verified", usage.oldest_verified->how != "added"}};
      }

      std::vector<std::string> key_problems;
      std::vector<KeyExpiry> keys;
      try {
        keys = vault_key_expiries(cfg.gnupghome, cat, &key_problems);
      } catch (const Error& e) {
        key_problems.push_back(e.what());
      }
      for (const auto& p : key_problems) warnings.push_back("cannot read a key's expiry: " + p);
      nlohmann::ordered_json key_list = nlohmann::ordered_json::array();
      for (const auto& k : keys) {
        key_list.push_back(
            {{"fingerprint", k.fingerprint},
             {"role", k.role},
             {"expires", k.expires ? nlohmann::ordered_json(format_local(tz, k.expires)) : nullptr}});
        if (k.expires == 0) continue;
        if (k.expires <= now)
          warnings.push_back(k.role + " key " + k.fingerprint + " expired " + format_local(tz, k.expires));
        else if (k.expires - now < static_cast<std::int64_t>(cfg.alerts.key_expiry_days) * 86400)
          warnings.push_back(k.role + " key " + k.fingerprint + " expires " + format_local(tz, k.expires) +
                             ", in " + format_duration(k.expires - now));
      }

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
                    {"last_drill", drill},
                    {"vault", {{"packs", usage.packs}, {"bytes", usage.bytes}}},
                    {"oldest_unverified_pack", oldest},
                    {"keys", key_list},
                    {"jobs", jobs},
                    {"warnings", warnings}});
      } else {
        if (last_backup)
          std::printf("last backup  %s (%s ago; RPO %s: %s)\n", format_local(tz, last_backup->ended).c_str(),
                      format_duration(*age).c_str(), format_duration(cfg.schedule.rpo).c_str(),
                      *age <= cfg.schedule.rpo ? "ok" : "EXCEEDED");
        else
          std::printf("last backup  none recorded (RPO %s)\n", format_duration(cfg.schedule.rpo).c_str());
        std::printf("snapshots    %zu\n", snapshots);
        if (!drill.is_null())
          std::printf("last drill   %s %s (%s, RTO %.1f s)\n", drill["time"].get<std::string>().c_str(),
                      drill["passed"].get<bool>() ? "passed" : "FAILED",
                      drill["mailbox"].get<std::string>().c_str(), drill["rto_seconds"].get<double>());
        else
          std::printf("last drill   none recorded\n");
        std::printf("vault        %s in %llu packs\n", human_bytes(usage.bytes).c_str(),
                    static_cast<unsigned long long>(usage.packs));
        if (!oldest.is_null())
          std::printf("unverified   oldest pack %s %s %s (%s ago)\n",
                      oldest["pack"].get<std::string>().c_str(),
                      oldest["verified"].get<bool>() ? "last verified" : "added, never verified,",
                      oldest["since"].get<std::string>().c_str(),
                      format_duration(oldest["age_seconds"].get<std::int64_t>()).c_str());
        for (const auto& k : keys)
          std::printf("key          %-7s %s %s\n", k.role.c_str(), k.fingerprint.c_str(),
                      k.expires ? ("expires " + format_local(tz, k.expires)).c_str() : "never expires");
        std::printf("\n%-8s %-22s %-22s %s\n", "job", "next run", "last run", "result");
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
