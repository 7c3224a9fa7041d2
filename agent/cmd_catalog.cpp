// reduit catalog rebuild — recreate the local catalog from the vault alone.
#include "agent/cli.hpp"
#include "agent/session.hpp"
#include "restore/snapshots.hpp"

namespace reduit::cli {

void add_catalog(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("catalog", "manage the local catalog");
  cmd->require_subcommand(1);
  auto* rebuild = cmd->add_subcommand(
      "rebuild", "recreate the catalog from the vault (agent key or an archive key suffices)");
  auto home = std::make_shared<std::string>();
  rebuild->add_option("--gnupghome", *home, "GnuPG home to read the vault with (default: config)");
  rebuild->callback([&g, &run, home] {
    run = [&g, home] {
      Config cfg = load_config(g.config_path);
      Catalog catalog(cfg.state_dir);
      auto repo = open_repository(cfg, nullptr, *home);
      std::vector<std::string> problems;
      RebuildStats st = rebuild_catalog(cfg, *repo, catalog, &problems);
      for (const auto& p : problems) std::fprintf(stderr, "reduit: warning: %s\n", p.c_str());
      if (g.json) {
        print_json({{"catalog", catalog.path()},
                    {"packs", st.packs},
                    {"blobs", st.blobs},
                    {"indexes", st.indexes},
                    {"snapshots", st.snapshots},
                    {"audit_entries", st.audit_entries},
                    {"warnings", problems}});
      } else {
        std::printf("rebuilt %s: %llu packs, %llu blobs, %llu snapshots\n", catalog.path().c_str(),
                    static_cast<unsigned long long>(st.packs), static_cast<unsigned long long>(st.blobs),
                    static_cast<unsigned long long>(st.snapshots));
      }
      return problems.empty() ? 0 : 1;
    };
  });
}

}  // namespace reduit::cli
