// restore/blobs.hpp — fetching single blobs from the vault by id, and rebuilding
// files stored as librsync delta chains (docs/FORMAT.md §4.1).
//
// A BlobFetcher finds a blob through the vault's indexes (preferring a pack that is
// still in the vault), loads its pack (keeping the last few loaded), checks the
// pack entry's type and the blob's HMAC id, and returns a view of its bytes.
// Metadata blobs (trees, signatures) need the agent key or an archive key; data
// blobs (files, deltas) an archive key. Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>

#include "restore/snapshots.hpp"
#include "vault/delta.hpp"

namespace reduit {

class BlobFetcher {
 public:
  /// `present` (optional): packs in the vault; a location in a missing pack is
  /// tried only when no other exists. `keep` = packs held in memory at once.
  BlobFetcher(Repository& repo, const BlobIndex& index,
              const std::map<Hash, std::uint64_t>* present = nullptr, std::size_t keep = 4)
      : repo_(repo), index_(index), present_(present), keep_(keep) {}

  /// The bytes of blob `id`, valid until the next call. Throws kVerify when no
  /// index names it, when its pack entry has another type than `type`, or when the
  /// pack or blob fails verification; kKey when no key can open its pack.
  std::string_view fetch(const Hash& id, BlobType type);
  BlobFetch as_function() {
    return [this](const Hash& id, BlobType t) { return fetch(id, t); };
  }
  std::uint64_t packs_fetched() const { return packs_fetched_; }
  std::uint64_t bytes_fetched() const { return bytes_fetched_; }

 private:
  Repository& repo_;
  const BlobIndex& index_;
  const std::map<Hash, std::uint64_t>* present_;
  std::size_t keep_;
  std::deque<LoadedPack> packs_;  // most recently loaded last
  std::uint64_t packs_fetched_ = 0, bytes_fetched_ = 0;
};

}  // namespace reduit
