// reduit prune — enforce archive maximums and collect garbage (retention/prune.hpp).
#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "retention/prune.hpp"
#include "vault/clock.hpp"

namespace reduit::cli {

void add_prune(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand(
      "prune", "delete what no kept snapshot, archived message or legal hold needs; repack half-empty packs");
  struct Opts {
    bool dry_run = false;
    std::string policy, archive_home;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_flag("-n,--dry-run", o->dry_run, "only show what would be deleted and repacked");
  cmd->add_option("--policy", o->policy,
                  "policy file (default: the config's 'policy', else the shipped default)");
  cmd->add_option(
      "--archive-gnupghome", o->archive_home,
      "GnuPG home with an archive secret key: lets prune repack data packs (without it, only whole "
      "packs are deleted and the rest is reported as waiting)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      Policy policy = load_policy(o->policy.empty() ? cfg.policy : o->policy);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog);
      std::unique_ptr<Repository> reader;
      if (!o->archive_home.empty()) {
        reader = std::make_unique<Repository>(open_transport(cfg.vault_url, cfg.ssh), o->archive_home,
                                              repo->config().agent_key);
        reader->set_config(repo->config());
      }
      PruneResult r = run_prune(*repo, reader.get(), catalog, policy, clock_now_ns(), o->dry_run);
      if (!o->dry_run) {
        nlohmann::ordered_json data{{"policy", policy.origin}};
        data.update(retention_run_evidence(catalog, r.run));
        data.update(
            nlohmann::ordered_json{{"packs_deleted", r.packs_deleted},
                                   {"packs_repacked", r.packs_repacked},
                                   {"bytes_freed", r.bytes_before - std::min(r.bytes_before, r.bytes_after)},
                                   {"retention_run", r.run}});
        for (auto& w : audit_record(cfg, catalog, repo.get(), "prune", data, repo->config().agent_key))
          r.warnings.push_back(std::move(w));
      }
      if (g.json) {
        print_json({{"dry_run", o->dry_run},
                    {"policy", policy.origin},
                    {"snapshots", r.snapshots},
                    {"snapshots_rewritten", r.snapshots_rewritten},
                    {"archive_records", r.archive_records},
                    {"messages_expired", r.messages_expired},
                    {"expired_by_class", r.expired_by_class},
                    {"messages_held_past_maximum", r.messages_held_past_maximum},
                    {"blobs_live", r.blobs_live},
                    {"packs_before", r.packs_before},
                    {"packs_after", r.packs_after},
                    {"packs_deleted", r.packs_deleted},
                    {"packs_repacked", r.packs_repacked},
                    {"packs_written", r.packs_written},
                    {"packs_unindexed_deleted", r.packs_unindexed_deleted},
                    {"packs_waiting", r.packs_waiting},
                    {"waiting", r.waiting},
                    {"waiting_expired_blobs", r.waiting_expired_blobs},
                    {"bytes_before", r.bytes_before},
                    {"bytes_after", r.bytes_after},
                    {"bytes_deleted", r.bytes_deleted},
                    {"bytes_written", r.bytes_written},
                    {"index_objects_before", r.index_objects_before},
                    {"index_objects_kept", r.index_objects_kept},
                    {"index_objects_written", r.index_objects_written},
                    {"warnings", r.warnings}});
      } else {
        for (const auto& w : r.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
        std::printf(
            "%s%llu message(s) past their maximum deleted, %llu kept by a legal hold; %llu snapshot(s) "
            "rewritten\n",
            o->dry_run ? "dry run: " : "", static_cast<unsigned long long>(r.messages_expired),
            static_cast<unsigned long long>(r.messages_held_past_maximum),
            static_cast<unsigned long long>(r.snapshots_rewritten));
        std::printf(
            "packs: %llu deleted, %llu repacked into %llu, %llu from interrupted runs; vault %s -> %s\n",
            static_cast<unsigned long long>(r.packs_deleted),
            static_cast<unsigned long long>(r.packs_repacked),
            static_cast<unsigned long long>(r.packs_written),
            static_cast<unsigned long long>(r.packs_unindexed_deleted), human_bytes(r.bytes_before).c_str(),
            human_bytes(r.bytes_after).c_str());
        if (!o->dry_run) {
          std::printf("index objects: %llu before, %llu kept as they were, %llu written\n",
                      static_cast<unsigned long long>(r.index_objects_before),
                      static_cast<unsigned long long>(r.index_objects_kept),
                      static_cast<unsigned long long>(r.index_objects_written));
        }
        if (r.packs_waiting) {
          std::printf(
              "waiting: %llu data pack(s) need a repack (%llu expired blob(s) among them); run prune with "
              "--archive-gnupghome\n",
              static_cast<unsigned long long>(r.packs_waiting),
              static_cast<unsigned long long>(r.waiting_expired_blobs));
        }
      }
      return r.warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
