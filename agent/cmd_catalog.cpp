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
      catalog.reset();
      auto repo = open_repository(cfg, &catalog, *home);
      std::uint64_t packs = 0, blobs = 0;
      for (const IndexPack& p : repo->load_indexes()) {
        catalog.add_pack(p, /*indexed=*/true);
        ++packs;
        blobs += p.blobs.size();
      }
      auto snaps = list_snapshots(*repo, &catalog);
      if (g.json) {
        print_json(
            {{"catalog", catalog.path()}, {"packs", packs}, {"blobs", blobs}, {"snapshots", snaps.size()}});
      } else {
        std::printf("rebuilt %s: %llu packs, %llu blobs, %zu snapshots\n", catalog.path().c_str(),
                    static_cast<unsigned long long>(packs), static_cast<unsigned long long>(blobs),
                    snaps.size());
      }
      return 0;
    };
  });
}

}  // namespace reduit::cli
