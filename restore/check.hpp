// restore/check.hpp — vault verification (`reduit check [--read-data]`).
//
// Structure check (always): the config opens; every snapshot and index object
// opens and its SHA-256 matches its name; every tree of every snapshot loads; every
// blob a tree names is in an index, and its pack is in the vault with the indexed
// size. --read-data also downloads every pack and checks its SHA-256 against its
// name (no key needed); packs the keyring can decrypt (metadata with the agent key,
// all packs with an archive key) are opened and every blob checked against its
// HMAC id. Each problem names the object and the mailboxes it affects.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

struct CheckProblem {
  std::string object;                  // e.g. "packs/ab/ab12…", "snapshots/…"
  std::string problem;                 // one line
  std::vector<std::string> mailboxes;  // affected mailboxes (snapshot id prefix: name)
};

struct CheckReport {
  std::uint64_t snapshots = 0, indexes = 0, packs = 0, trees = 0, blobs_referenced = 0;
  std::uint64_t packs_read = 0, bytes_read = 0, packs_decrypted = 0;
  std::uint64_t incomplete_uploads = 0;  // leftovers in tmp/ from interrupted uploads (harmless)
  std::uint64_t unreferenced_packs = 0;  // in the vault, in no index (from an interrupted run)
  std::vector<CheckProblem> problems;
  bool ok() const { return problems.empty(); }
};

/// `catalog` (optional): with read_data, each pack read back intact (SHA-256 name,
/// and its blobs when the keyring opens it) is recorded in pack_verified ("check").
CheckReport check_vault(Repository& repo, bool read_data, bool progress, Catalog* catalog = nullptr);

}  // namespace reduit
