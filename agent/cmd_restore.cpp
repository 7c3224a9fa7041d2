// reduit restore — one mailbox (or folder) from a snapshot into a new directory.
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "restore/restore.hpp"
#include "vault/error.hpp"

namespace reduit::cli {

void add_restore(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand(
      "restore", "restore a mailbox (or one folder) from a snapshot into a new, empty directory");
  struct Opts {
    RestoreRequest req;
    std::string home;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--snapshot", o->req.snapshot, "snapshot id (prefix) or 'latest'")->default_val("latest");
  auto* mailbox =
      cmd->add_option("--mailbox", o->req.mailbox, "mailbox name as shown by 'reduit ls SNAPSHOT'");
  auto* all = cmd->add_flag("--all", o->req.all,
                            "every mailbox, each at its path below the source root (disaster recovery)");
  mailbox->excludes(all);
  cmd->add_option("--folder", o->req.folder, "only this folder (e.g. .Archive) and its subfolders");
  cmd->add_option("--to", o->req.dest, "destination directory (must not exist or be empty)")->required();
  cmd->add_option("--owner", o->req.owner,
                  "owner of restored files: keep (as backed up; root only), none (yours), or USER:GROUP "
                  "(e.g. vmail:vmail); default keep as root, else none");
  cmd->add_option("--gnupghome", o->home,
                  "GnuPG home holding an archive secret key (default: config's, or $GNUPGHOME)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      if (o->req.mailbox.empty() && !o->req.all) {
        throw Error(ErrorCode::kUsage, "restore needs --mailbox M (see 'reduit ls latest') or --all");
      }
      Config cfg = load_config(g.config_path);
      auto repo = open_repository(cfg, nullptr, o->home);
      o->req.progress = want_progress(g);
      RestoreStats s = restore_mailbox(*repo, o->req);
      for (const auto& w : s.warnings) std::fprintf(stderr, "reduit: warning: %s\n", w.c_str());
      if (g.json) {
        print_json({{"snapshot", s.snapshot_id},
                    {"mailbox", s.mailbox},
                    {"to", o->req.dest},
                    {"folders", s.folders},
                    {"messages", s.messages},
                    {"files", s.files},
                    {"dirs", s.dirs},
                    {"hard_links", s.hard_links},
                    {"bytes", s.bytes},
                    {"packs_fetched", s.packs_fetched},
                    {"bytes_fetched", s.bytes_fetched},
                    {"seconds", s.seconds},
                    {"warnings", s.warnings}});
      } else {
        std::printf(
            "restored %s from snapshot %s to %s: %llu messages, %llu other files (%s) in %.1f s, fetched "
            "%llu packs (%s)\n",
            s.mailbox.c_str(), s.snapshot_id.substr(0, 8).c_str(), o->req.dest.c_str(),
            static_cast<unsigned long long>(s.messages), static_cast<unsigned long long>(s.files),
            human_bytes(s.bytes).c_str(), s.seconds, static_cast<unsigned long long>(s.packs_fetched),
            human_bytes(s.bytes_fetched).c_str());
      }
      return s.warnings.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
