// agent/session.hpp — opening the vault and catalog a command needs.
#pragma once

#include <memory>
#include <string>

#include "agent/config.hpp"
#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

/// Opens the configured vault with the keyring `gnupghome` (empty = the config's).
/// The vault config is taken from the catalog when its stored bytes are unchanged
/// (one small read, no decryption), else decrypted and cached.
std::unique_ptr<Repository> open_repository(const Config& cfg, Catalog* catalog,
                                            const std::string& gnupghome_override = "");

struct RebuildStats {
  std::uint64_t packs = 0, blobs = 0, indexes = 0, snapshots = 0;
  std::uint64_t audit_entries = 0;  // taken from the vault's copy (import_audit_log)
};

/// Recreates the catalog from the vault: packs and blob locations from the index
/// objects, the snapshot cache, the vault config. Everything is read (and must
/// decrypt) before the old catalog is touched, so a failed rebuild changes nothing.
/// The stat cache starts empty. Damaged snapshots are skipped into `problems`.
/// An empty audit log is taken from the vault's copy, so the chain continues.
RebuildStats rebuild_catalog(const Config& cfg, Repository& repo, Catalog& catalog,
                             std::vector<std::string>* problems);

}  // namespace reduit
