// reduit snapshots — list the vault's snapshots (decrypted with the agent key or an
// archive key; decoded snapshots are cached in the catalog).
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "restore/snapshots.hpp"

namespace reduit::cli {

void add_snapshots(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("snapshots", "list the snapshots in the vault, oldest first");
  auto home = std::make_shared<std::string>();
  cmd->add_option("--gnupghome", *home, "GnuPG home to read the vault with (default: config)");
  cmd->callback([&g, &run, home] {
    run = [&g, home] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, &catalog, *home);
      std::vector<std::string> problems;
      std::vector<SnapshotRef> all = list_snapshots(*repo, &catalog, &problems);
      for (const auto& p : problems) std::fprintf(stderr, "reduit: warning: %s\n", p.c_str());
      if (g.json) {
        nlohmann::ordered_json arr = nlohmann::ordered_json::array();
        for (const auto& s : all) {
          arr.push_back({{"id", s.id},
                         {"time", iso_time(s.snap.time_ns)},
                         {"host", s.snap.host},
                         {"tags", s.snap.tags},
                         {"mailboxes", s.snap.mailboxes.size()},
                         {"messages", s.snap.messages},
                         {"bytes", s.snap.bytes}});
        }
        print_json(arr);
      } else {
        std::printf("%-10s %-20s %-16s %9s %10s %10s\n", "ID", "TIME (UTC)", "HOST", "MAILBOXES", "MESSAGES",
                    "SIZE");
        for (const auto& s : all) {
          std::printf("%-10s %-20s %-16s %9zu %10llu %10s\n", s.id.substr(0, 8).c_str(),
                      iso_time(s.snap.time_ns).c_str(), s.snap.host.c_str(), s.snap.mailboxes.size(),
                      static_cast<unsigned long long>(s.snap.messages), human_bytes(s.snap.bytes).c_str());
        }
        std::printf("%zu snapshot(s)\n", all.size());
      }
      return problems.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
