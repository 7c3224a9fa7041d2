// reduit init — create a vault: config object with a fresh id key, encrypted to the
// archive keys and the agent key, signed by the agent key.
#include "agent/cli.hpp"
#include "vault/catalog.hpp"
#include "vault/crypto.hpp"
#include "vault/error.hpp"
#include "vault/repository.hpp"

namespace reduit::cli {

void add_init(CLI::App& app, Globals& g, Runner& run) {
  auto* cmd = app.add_subcommand("init", "create a new vault (its directory is created if needed)");
  struct Opts {
    std::string vault, signing_key, gnupghome;
    std::vector<std::string> recipients;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--vault", o->vault,
                  "vault URL: file:///path or sftp://user@host:port/path (default: config)");
  cmd->add_option("--recipient", o->recipients,
                  "archive key (fingerprint or e-mail); repeatable; only the public key is needed here");
  cmd->add_option("--signing-key", o->signing_key, "agent key that signs everything (secret key needed)");
  cmd->add_option("--gnupghome", o->gnupghome, "GnuPG home holding the agent secret key (default: config)");
  cmd->callback([&g, &run, o] {
    run = [&g, o] {
      Config cfg = load_config(g.config_path);
      if (!o->vault.empty()) cfg.vault_url = o->vault;
      if (!o->gnupghome.empty()) cfg.gnupghome = o->gnupghome;
      std::vector<std::string> recipients = o->recipients.empty() ? cfg.archive_keys : o->recipients;
      std::string agent = o->signing_key.empty() ? cfg.agent_key : o->signing_key;
      if (agent.empty()) {
        throw Error(ErrorCode::kUsage,
                    "init needs --signing-key (the agent key) or keys.agent_key in the config");
      }
      {
        // Resolve the keys before touching the vault: a wrong key leaves nothing behind.
        Crypto crypto(cfg.gnupghome);
        for (const auto& r : recipients) crypto.resolve_key(r, /*secret=*/false, /*for_encryption=*/true);
        crypto.resolve_key(agent, /*secret=*/true, /*for_encryption=*/true);
      }
      if (recipients.empty()) {
        throw Error(ErrorCode::kUsage, "init needs at least one --recipient (an archive key)");
      }
      auto transport = open_transport(cfg.vault_url, cfg.ssh, /*create=*/true);
      if (!transport->size(kConfigName) &&
          (!transport->list("").empty() || !transport->list_dirs("").empty())) {
        throw Error(ErrorCode::kUsage,
                    "vault directory " + transport->describe() +
                        " is not empty and holds no vault; give an empty or new directory");
      }
      Repository repo(std::move(transport), cfg.gnupghome);
      VaultConfig vc = repo.init(recipients, agent, cfg.pack_size, cfg.zstd_level);
      if (g.json) {
        print_json({{"vault", cfg.vault_url},
                    {"vault_id", vc.vault_id},
                    {"archive_keys", vc.archive_keys},
                    {"agent_key", vc.agent_key},
                    {"pack_size", vc.pack_size},
                    {"zstd_level", vc.zstd_level}});
      } else {
        std::printf("initialised vault %s at %s\n  archive keys: ", vc.vault_id.c_str(),
                    cfg.vault_url.c_str());
        for (const auto& k : vc.archive_keys) std::printf("%s ", k.c_str());
        std::printf("\n  agent key:    %s\n", vc.agent_key.c_str());
      }
      return 0;
    };
  });
}

}  // namespace reduit::cli
