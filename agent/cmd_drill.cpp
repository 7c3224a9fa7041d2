// reduit drill — restore a mailbox from the vault into scratch space and prove it
// came back intact (restore/drill.hpp).
#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "restore/drill.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

void add_drill(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand(
      "drill",
      "restore drill: restore a (random) mailbox from the vault into scratch space, verify every "
      "message against the manifest, verify a rolling share of the vault's packs, record the result");
  struct Opts {
    DrillRequest req;
    bool random = false;
    std::uint64_t seed = 0;
    std::string home;
  };
  auto o = std::make_shared<Opts>();
  auto* mailbox =
      cmd->add_option("--mailbox", o->req.mailbox, "the mailbox to drill (default: one at random)");
  auto* random = cmd->add_flag("--random", o->random, "draw the mailbox at random (the default)");
  mailbox->excludes(random);
  cmd->add_option("--snapshot", o->req.snapshot, "latest, oldest, random, or a snapshot id (prefix)")
      ->default_val("latest");
  auto* seed =
      cmd->add_option("--seed", o->seed, "seed of the random draws (printed by every drill, to repeat it)");
  cmd->add_option("--scratch", o->req.scratch,
                  "directory for the scratch restore (default: $TMPDIR or /tmp)");
  cmd->add_option("--pack-share", o->req.pack_share,
                  "also verify 1/N of the vault's packs, continuing after the last drill's (0 = none)")
      ->default_val(30);
  cmd->add_option("--gnupghome", o->home,
                  "GnuPG home holding an archive secret key (default: config's, or $GNUPGHOME)");
  cmd->callback([&g, &run, o, seed] {
    run = [&g, o, seed] {
      if (seed->count()) o->req.seed = o->seed;
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog, o->home);
      o->req.progress = want_progress(g);
      DrillResult r = run_drill(*repo, &catalog, o->req);
      for (const auto& w : audit_record(cfg, catalog, repo.get(), "drill",
                                        {{"result", r.passed ? "passed" : "failed"},
                                         {"mailbox", r.mailbox},
                                         {"snapshot", r.snapshot_id},
                                         {"seed", r.seed},
                                         {"messages", r.messages},
                                         {"rto_s", r.restore_seconds},
                                         {"bytes_fetched", r.bytes_fetched},
                                         {"packs_verified", r.packs_verified},
                                         {"packs_total", r.packs_total},
                                         {"failure", r.failures.empty() ? "" : r.failures.front()}},
                                        reading_key(*repo)))
        r.warnings.push_back(w);
      for (const auto& w : r.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json) {
        print_json({{"passed", r.passed},
                    {"seed", r.seed},
                    {"snapshot", r.snapshot_id},
                    {"mailbox", r.mailbox},
                    {"folders", r.folders},
                    {"messages", r.messages},
                    {"files", r.files},
                    {"bytes", r.bytes},
                    {"packs_fetched", r.packs_fetched},
                    {"bytes_fetched", r.bytes_fetched},
                    {"restore_seconds", r.restore_seconds},
                    {"packs_verified", r.packs_verified},
                    {"packs_total", r.packs_total},
                    {"seconds", r.seconds},
                    {"judge", r.judge_ran ? nlohmann::json{{"ran", true},
                                                           {"tool", r.judge},
                                                           {"folders", r.judge_folders},
                                                           {"messages", r.judge_messages}}
                                          : nlohmann::json{{"ran", false}, {"reason", r.judge_reason}}},
                    {"failures", r.failures},
                    {"warnings", r.warnings}});
      } else if (r.passed) {
        std::printf(
            "drill passed: %s from snapshot %s (seed %llu): %llu messages, %llu other files (%s) restored "
            "and "
            "verified in %.1f s (RTO), %llu packs fetched (%s); %llu of %llu packs verified\n",
            r.mailbox.c_str(), r.snapshot_id.substr(0, 8).c_str(), static_cast<unsigned long long>(r.seed),
            static_cast<unsigned long long>(r.messages), static_cast<unsigned long long>(r.files),
            human_bytes(r.bytes).c_str(), r.restore_seconds, static_cast<unsigned long long>(r.packs_fetched),
            human_bytes(r.bytes_fetched).c_str(), static_cast<unsigned long long>(r.packs_verified),
            static_cast<unsigned long long>(r.packs_total));
      } else {
        std::printf("drill FAILED: %s from snapshot %s (seed %llu)\n", r.mailbox.c_str(),
                    r.snapshot_id.substr(0, 8).c_str(), static_cast<unsigned long long>(r.seed));
      }
      if (!r.passed) {
        for (const auto& f : r.failures) std::fprintf(stderr, "reduit: drill: %s\n", f.c_str());
        return exit_status(ErrorCode::kVerify);
      }
      return r.warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
