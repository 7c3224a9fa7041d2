// restore/fetch.hpp — the bytes of chosen tree entries, fetched from the vault and
// verified, one complete file at a time (for exports and restores into a live
// mailbox, which do not write the vault's file names).
//
// Packs are fetched once each, in the order the entries first need them (so
// entries come out roughly in the order given), up to two ahead of `done` on a
// thread of their own (restore/prefetch.hpp); every pack is checked as
// Repository::load_pack does, every blob against its HMAC id, and every assembled
// file against the manifest's size and SHA-256 before it is handed out. A file
// whose header and body sit in different packs is held in memory until both have
// arrived. Needs an archive secret key (data packs are encrypted to those only).
// Errors: kKey (no archive secret key), kVerify (blob missing from every index, a
// pack without the blob its index names, a file that does not hash as recorded).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "restore/snapshots.hpp"

namespace reduit {

/// Throws kKey unless the keyring holds the secret half of an archive key.
void require_archive_key(Repository& repo);

struct FetchStats {
  std::uint64_t packs_fetched = 0, bytes_fetched = 0;  // stored bytes
};

/// Calls `done(i, bytes)` once for every entries[i] (messages and files; an entry
/// without content gets empty bytes). `bytes` is valid during the call only.
/// `progress(packs_done, packs_total)` after each pack (may be empty).
void fetch_entries(Repository& repo, const BlobIndex& index, const std::vector<const TreeEntry*>& entries,
                   const std::function<void(std::size_t, std::string_view)>& done, FetchStats* stats,
                   const std::function<void(std::size_t, std::size_t)>& progress = {});

}  // namespace reduit
