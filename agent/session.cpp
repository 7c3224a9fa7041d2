#include "agent/session.hpp"

#include "agent/audit_record.hpp"

#include <nlohmann/json.hpp>

#include "restore/snapshots.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

// Caches the vault config (it holds the id key) so later runs need no decryption.
void remember_config(const Config& cfg, Repository& repo, Catalog& catalog) {
  Bytes stored = repo.transport().get(kConfigName);
  catalog.set_meta("vault_config", encode_config(repo.config()));
  catalog.set_meta("vault_config_sha256", to_hex(sha256(stored.data(), stored.size())));
  catalog.set_meta("vault_url", cfg.vault_url);
  catalog.set_meta("vault_id", repo.config().vault_id);
}

}  // namespace

std::unique_ptr<Repository> open_repository(const Config& cfg, Catalog* catalog,
                                            const std::string& gnupghome_override) {
  std::string home = gnupghome_override.empty() ? cfg.gnupghome : gnupghome_override;
  auto repo = std::make_unique<Repository>(open_transport(cfg.vault_url, cfg.ssh), home, cfg.agent_key);
  if (catalog) {
    auto cached = catalog->get_meta("vault_config");
    auto cached_hash = catalog->get_meta("vault_config_sha256");
    auto cached_url = catalog->get_meta("vault_url");
    if (cached && cached_hash && cached_url && *cached_url == cfg.vault_url) {
      Bytes stored;
      try {
        stored = repo->transport().get(kConfigName);
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kNotFound) throw;
      }
      if (!stored.empty() && to_hex(sha256(stored.data(), stored.size())) == *cached_hash) {
        repo->set_config(decode_config(Bytes(cached->begin(), cached->end())));
        return repo;
      }
    }
  }
  repo->load_config();
  if (catalog) {
    if (auto old = catalog->get_meta("vault_id"); old && *old != repo->config().vault_id) {
      // A different vault at this URL: nothing cached about the old one is valid.
      catalog->reset();
    }
    remember_config(cfg, *repo, *catalog);
  }
  return repo;
}

RebuildStats rebuild_catalog(const Config& cfg, Repository& repo, Catalog& catalog,
                             std::vector<std::string>* problems) {
  RebuildStats st;
  std::vector<Hash> index_ids;
  std::vector<IndexPack> packs = repo.load_indexes(&index_ids);
  std::vector<SnapshotRef> snaps = list_snapshots(repo, nullptr, problems);
  catalog.reset();
  remember_config(cfg, repo, catalog);
  for (const IndexPack& p : packs) {
    catalog.add_pack(p, /*indexed=*/true);
    ++st.packs;
    st.blobs += p.blobs.size();
  }
  catalog.merge_blobs();
  for (const Hash& id : index_ids) catalog.add_index(id);
  for (const SnapshotRef& s : snaps) catalog.add_snapshot(s.id, s.snap, encode_snapshot(s.snap));
  st.indexes = index_ids.size();
  st.snapshots = snaps.size();
  st.audit_entries = import_audit_log(repo, catalog, problems);
  return st;
}

}  // namespace reduit
