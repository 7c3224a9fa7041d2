// reduit forget — apply the policy's snapshot rules (retention/forget.hpp): print
// every snapshot kept, with restic's reasons, and every snapshot removed; archive
// the messages the removed ones hold that their class still wants; delete them.
#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "retention/forget.hpp"
#include "vault/clock.hpp"

namespace reduit::cli {

void add_forget(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("forget", "apply the snapshot retention rules of the policy");
  struct Opts {
    bool dry_run = false;
    std::string policy;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_flag("-n,--dry-run", o->dry_run, "only show what would be kept and removed");
  cmd->add_option("--policy", o->policy,
                  "policy file (default: the config's 'policy', else the shipped default)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      Policy policy = load_policy(o->policy.empty() ? cfg.policy : o->policy);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog);
      ForgetResult r = run_forget(*repo, catalog, policy, clock_now_ns(), o->dry_run);
      if (!o->dry_run) {
        nlohmann::ordered_json removed = nlohmann::ordered_json::array();
        for (const auto& grp : r.groups)
          for (const auto& s : grp.snapshots)
            if (!s.keep) removed.push_back(s.id);
        nlohmann::ordered_json data{
            {"policy", policy.origin},
            {"policy_digest", to_hex(sha256(read_policy_text(o->policy.empty() ? cfg.policy : o->policy)))},
            {"removed", removed},
            {"kept", r.kept},
            {"archived_messages", r.archived_messages}};
        data.update(retention_run_evidence(catalog, r.run));
        data["retention_run"] = r.run;
        for (auto& w : audit_record(cfg, catalog, repo.get(), "forget", data, repo->config().agent_key))
          r.warnings.push_back(std::move(w));
      }
      if (g.json) {
        nlohmann::ordered_json groups = nlohmann::ordered_json::array();
        for (const auto& grp : r.groups) {
          nlohmann::ordered_json keep = nlohmann::ordered_json::array(),
                                 remove = nlohmann::ordered_json::array();
          for (const auto& s : grp.snapshots) {
            if (s.keep)
              keep.push_back({{"id", s.id}, {"time", iso_time(s.time_ns)}, {"reasons", s.reasons}});
            else
              remove.push_back({{"id", s.id}, {"time", iso_time(s.time_ns)}});
          }
          groups.push_back({{"host", grp.host},
                            {"sources", grp.sources},
                            {"tags", grp.tags},
                            {"keep", keep},
                            {"remove", remove}});
        }
        print_json({{"dry_run", o->dry_run},
                    {"policy", policy.origin},
                    {"groups", groups},
                    {"kept", r.kept},
                    {"removed", r.removed},
                    {"archived_messages", r.archived_messages},
                    {"messages_deleted", r.messages_deleted},
                    {"archive_object", r.archive_object},
                    {"warnings", r.warnings}});
      } else {
        for (const auto& w : r.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
        for (const auto& grp : r.groups) {
          std::string src;
          for (const auto& s : grp.sources) src += (src.empty() ? "" : ", ") + s;
          std::printf("host %s, source %s:\n", grp.host.c_str(), src.c_str());
          for (const auto& s : grp.snapshots) {
            std::string why;
            for (const auto& x : s.reasons) why += (why.empty() ? "" : ", ") + x;
            std::printf("  %-6s %s %s  %s\n", s.keep ? "keep" : "remove", s.id.substr(0, 8).c_str(),
                        iso_time(s.time_ns).c_str(), why.c_str());
          }
        }
        std::printf("%s%llu snapshot(s) kept, %llu removed; %llu message(s) archived, %llu leave the vault\n",
                    o->dry_run ? "dry run: " : "", static_cast<unsigned long long>(r.kept),
                    static_cast<unsigned long long>(r.removed),
                    static_cast<unsigned long long>(r.archived_messages),
                    static_cast<unsigned long long>(r.messages_deleted));
      }
      return r.warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
