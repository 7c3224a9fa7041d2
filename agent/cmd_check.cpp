// reduit check — verify the vault's structure, and with --read-data every pack.
#include "agent/audit_record.hpp"
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "restore/check.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

void add_check(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("check", "verify the vault (exit 6 when anything is wrong)");
  struct Opts {
    bool read_data = false;
    std::string home;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_flag("--read-data", o->read_data, "also download and verify every pack");
  cmd->add_option("--gnupghome", o->home, "GnuPG home (an archive key also verifies data packs' blobs)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      auto repo = open_repository(cfg, nullptr, o->home);
      Catalog catalog(cfg.state_dir);  // records the packs --read-data found intact
      CheckReport r = check_vault(*repo, o->read_data, want_progress(g), &catalog);
      auto audit_warnings = audit_record_best_effort(
          cfg, repo.get(), "check",
          {{"result", r.ok() ? "ok" : "failed"},
           {"read_data", o->read_data},
           {"packs_total", r.packs},
           {"packs_read", r.packs_read},
           {"bytes_read", r.bytes_read},
           {"snapshots", r.snapshots},
           {"problems", r.problems.size()},
           {"first_problem", r.problems.empty()
                                 ? std::string()
                                 : r.problems.front().object + ": " + r.problems.front().problem}},
          reading_key(*repo));
      for (const auto& w : audit_warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json) {
        nlohmann::ordered_json probs = nlohmann::ordered_json::array();
        for (const auto& p : r.problems)
          probs.push_back({{"object", p.object}, {"problem", p.problem}, {"mailboxes", p.mailboxes}});
        print_json({{"ok", r.ok()},
                    {"snapshots", r.snapshots},
                    {"indexes", r.indexes},
                    {"packs", r.packs},
                    {"trees", r.trees},
                    {"blobs_referenced", r.blobs_referenced},
                    {"packs_read", r.packs_read},
                    {"bytes_read", r.bytes_read},
                    {"packs_decrypted", r.packs_decrypted},
                    {"incomplete_uploads", r.incomplete_uploads},
                    {"unreferenced_packs", r.unreferenced_packs},
                    {"problems", probs}});
      } else {
        for (const auto& p : r.problems) {
          std::string mbs;
          for (const auto& m : p.mailboxes) mbs += (mbs.empty() ? "" : ", ") + m;
          std::fprintf(stderr, "reduit: check: %s: %s%s\n", p.object.c_str(), p.problem.c_str(),
                       mbs.empty() ? "" : (" (affects " + mbs + ")").c_str());
        }
        std::printf("%s: %llu snapshots, %llu packs, %llu trees, %llu blob references%s; %zu problem(s)\n",
                    r.ok() ? "ok" : "FAILED", static_cast<unsigned long long>(r.snapshots),
                    static_cast<unsigned long long>(r.packs), static_cast<unsigned long long>(r.trees),
                    static_cast<unsigned long long>(r.blobs_referenced),
                    o->read_data ? (", read " + std::to_string(r.packs_read) + " packs (" +
                                    human_bytes(r.bytes_read) + ")")
                                       .c_str()
                                 : "",
                    r.problems.size());
        if (r.unreferenced_packs || r.incomplete_uploads) {
          std::printf(
              "note: %llu pack(s) in no index and %llu incomplete upload(s) from interrupted runs "
              "(harmless)\n",
              static_cast<unsigned long long>(r.unreferenced_packs),
              static_cast<unsigned long long>(r.incomplete_uploads));
        }
      }
      return r.ok() ? 0 : exit_status(ErrorCode::kVerify);
    };
  });
}

}  // namespace reduit::cli
