// reduit backup — one backup run of every configured source (agent/backup.hpp).
#include "agent/backup.hpp"
#include "agent/cli.hpp"

namespace reduit::cli {

void add_backup(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("backup", "back up every configured mailbox to the vault (a new snapshot)");
  auto tags = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--tag", *tags, "tag recorded in the snapshot; repeatable");
  auto full = std::make_shared<bool>(false);
  cmd->add_flag("--full-scan", *full,
                "stat every message, also in folders whose directories are unchanged since the last run");
  cmd->callback([&g, &run, tags, full] {
    run = [&g, tags, full] {
      Config cfg = load_config(g.config_path);
      BackupOptions opts;
      opts.progress = want_progress(g);
      opts.tags = *tags;
      opts.full_scan = *full;
      BackupStats s = run_backup(cfg, opts);
      if (g.json) {
        print_json({{"snapshot", s.snapshot_id},
                    {"mailboxes", s.mailboxes},
                    {"folders", s.folders},
                    {"messages", s.messages},
                    {"files", s.files},
                    {"bytes", s.bytes},
                    {"files_read", s.files_read},
                    {"bytes_read", s.bytes_read},
                    {"files_uncached", s.files_uncached},
                    {"files_read_ahead", s.files_read_ahead},
                    {"blobs_new", s.blobs_new},
                    {"content_blobs_new", s.content_blobs_new},
                    {"bytes_new", s.bytes_new},
                    {"content_bytes_new", s.content_bytes_new},
                    {"trees_new", s.trees_new},
                    {"tree_patches", s.tree_patches},
                    {"trees_reused", s.trees_reused},
                    {"folders_unchanged", s.folders_unchanged},
                    {"data_packs", s.data_packs},
                    {"metadata_packs", s.metadata_packs},
                    {"data_bytes_uploaded", s.data_bytes_uploaded},
                    {"metadata_bytes_uploaded", s.metadata_bytes_uploaded},
                    {"packs_forgotten", s.packs_forgotten},
                    {"vanished", s.vanished},
                    {"folder_rescans", s.folder_rescans},
                    {"mail_crypt_messages", s.mail_crypt_messages},
                    {"delta_files", s.delta_files},
                    {"delta_bytes", s.delta_bytes},
                    {"rebased", s.rebased},
                    {"signatures_from_vault", s.signatures_from_vault},
                    {"seconds", s.seconds},
                    {"warnings", s.warnings}});
      } else {
        for (const auto& w : s.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
        {
          std::printf(
              "snapshot %s: %llu mailboxes, %llu messages (%s); read %llu files, new %s, uploaded %s in %.1f "
              "s\n",
              s.snapshot_id.substr(0, 8).c_str(), static_cast<unsigned long long>(s.mailboxes),
              static_cast<unsigned long long>(s.messages), human_bytes(s.bytes).c_str(),
              static_cast<unsigned long long>(s.files_read), human_bytes(s.bytes_new).c_str(),
              human_bytes(s.data_bytes_uploaded + s.metadata_bytes_uploaded).c_str(), s.seconds);
        }
      }
      return s.warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
