// reduit ls — the mailboxes of a snapshot, or the folders and files of one mailbox.
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "restore/snapshots.hpp"

namespace reduit::cli {

void add_ls(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("ls", "list a snapshot's mailboxes, or one mailbox's folders and messages");
  struct Opts {
    std::string snapshot, mailbox, home;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("snapshot", o->snapshot, "snapshot id (prefix) or 'latest'")->required();
  cmd->add_option("--mailbox", o->mailbox, "list this mailbox's folders and messages");
  cmd->add_option("--gnupghome", o->home, "GnuPG home to read the vault with (default: config)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog, o->home);
      std::vector<std::string> problems;
      std::vector<DamagedSnapshot> damaged;
      SnapshotRef s = find_snapshot(list_snapshots(*repo, &catalog, &problems, &damaged), o->snapshot, &damaged);
      for (const auto& p : problems) std::fprintf(stderr, "reduit: warning: %s\n", p.c_str());
      nlohmann::ordered_json out = nlohmann::ordered_json::array();
      if (o->mailbox.empty()) {
        for (const auto& m : s.snap.mailboxes) {
          std::uint64_t msgs = 0, bytes = 0;
          for (const auto& f : m.folders) {
            msgs += f.messages;
            bytes += f.bytes;
          }
          if (g.json) {
            out.push_back(
                {{"mailbox", m.name}, {"folders", m.folders.size()}, {"messages", msgs}, {"bytes", bytes}});
          } else {
            std::printf("%-40s %4zu folders %8llu messages %10s\n", m.name.c_str(), m.folders.size(),
                        static_cast<unsigned long long>(msgs), human_bytes(bytes).c_str());
          }
        }
      } else {
        const SnapshotMailbox& m = find_mailbox(s, o->mailbox);
        BlobIndex index(repo->load_indexes());
        TreeLoader trees(*repo, index);
        for (const auto& f : m.folders) {
          Tree t = trees.load(f.tree);
          for (const auto& e : t.entries) {
            if (e.kind == EntryKind::kDir) continue;
            std::string path = f.name.empty() ? e.path : f.name + "/" + e.path;
            if (g.json) {
              out.push_back({{"folder", f.name},
                             {"path", path},
                             {"kind", e.kind == EntryKind::kMessage ? "message" : "file"},
                             {"size", e.size},
                             {"mtime", iso_time(e.mtime_ns)},
                             {"sha256", to_hex(e.sha256)}});
            } else {
              std::printf("%10llu  %s  %s\n", static_cast<unsigned long long>(e.size),
                          iso_time(e.mtime_ns).c_str(), path.c_str());
            }
          }
        }
      }
      if (g.json) print_json(out);
      return problems.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
