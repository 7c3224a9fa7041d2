// reduit archive restore — every retained message of a mailbox, from kept
// snapshots and the message archive (retention/archive_restore.hpp).
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "retention/archive_restore.hpp"

namespace reduit::cli {

void add_archive(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("archive", "the message archive");
  cmd->require_subcommand(1);
  struct Opts {
    std::string mailbox, folder, to, home;
  };
  auto o = std::make_shared<Opts>();
  auto* rs = cmd->add_subcommand(
      "restore", "restore every message of a mailbox the vault retains (kept snapshots and the archive)");
  rs->add_option("--mailbox", o->mailbox, "mailbox name")->required();
  rs->add_option("--folder", o->folder, "only this folder and its subfolders");
  rs->add_option("--to", o->to, "destination directory (absent or empty)")->required();
  rs->add_option("--gnupghome", o->home, "GnuPG home with an archive secret key");
  rs->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      auto repo = open_repository(cfg, nullptr, o->home);
      ArchiveRestoreStats s = restore_archive(*repo, o->mailbox, o->folder, 0, 0, o->to);
      if (g.json) {
        print_json({{"mailbox", o->mailbox},
                    {"messages", s.messages},
                    {"from_archive_only", s.from_archive_only},
                    {"folders", s.folders},
                    {"bytes", s.bytes},
                    {"packs_fetched", s.packs_fetched}});
      } else {
        std::printf("restored %llu message(s) of %s into %s (%llu only in the archive)\n",
                    static_cast<unsigned long long>(s.messages), o->mailbox.c_str(), o->to.c_str(),
                    static_cast<unsigned long long>(s.from_archive_only));
      }
      return 0;
    };
  });
}

}  // namespace reduit::cli
