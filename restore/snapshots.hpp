// restore/snapshots.hpp — reading snapshots and trees back from a vault.
//
// Everything here reads the vault itself (never the catalog's stat cache), so it
// works on a fresh host given the vault URL and a key that can open metadata (the
// agent key or an archive key).
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

struct SnapshotRef {
  std::string id;  // 64 hex digits
  Snapshot snap;
};

/// Every readable snapshot in the vault, oldest first. `cache` (optional) avoids
/// decrypting snapshots already decoded once; it is also brought up to date. A
/// snapshot object that is corrupt or cannot be verified is left out and described
/// in `problems` (one line each), so one damaged object never hides the others.
/// A key problem (nothing decryptable at all) still throws kKey.
std::vector<SnapshotRef> list_snapshots(Repository& repo, Catalog* cache, std::vector<std::string>* problems);

/// Resolves "latest" or a unique hex prefix (at least 4 digits). Throws kNotFound
/// when none matches, kUsage when a prefix is ambiguous.
SnapshotRef find_snapshot(const std::vector<SnapshotRef>& all, const std::string& spec);

/// Finds a mailbox by exact name; kNotFound lists the names that exist.
const SnapshotMailbox& find_mailbox(const SnapshotRef& s, const std::string& name);

/// Every blob location named by the vault's index objects, sorted by blob id.
class BlobIndex {
 public:
  explicit BlobIndex(std::vector<IndexPack> packs);
  /// All known locations of `id` (several after a re-upload), possibly none.
  std::span<const IndexedBlob> find(const Hash& id) const;
  /// The location to read `id` from: the first whose pack is in `present` (packs in
  /// the vault; a blob re-uploaded after its pack went missing has several), else
  /// the first. Throws kVerify when no index names `id`.
  const IndexedBlob& locate(const Hash& id, const std::map<Hash, std::uint64_t>* present) const;
  const std::map<Hash, IndexPack>& packs() const { return packs_; }

 private:
  std::vector<IndexedBlob> blobs_;
  std::map<Hash, IndexPack> packs_;  // blobs vectors emptied (kept in blobs_)
};

/// Loads trees through their metadata packs, keeping the last few packs decrypted.
class TreeLoader {
 public:
  /// `share_chains`: keep resolved trees (up to about a million entries) so that
  /// walking many snapshots resolves each folder's chain once — for check and find;
  /// a restore of one snapshot needs each tree once and keeps none.
  TreeLoader(Repository& repo, const BlobIndex& index, bool share_chains = false)
      : repo_(repo), index_(index), share_chains_(share_chains) {}
  /// The resolved tree (patches applied, FORMAT.md §7.1). Throws kVerify when no
  /// index names it or a blob of its chain, or when one is corrupt.
  Tree load(const Hash& tree_id);
  /// The plaintext of the tree blob `tree_id` (a full tree or a patch), as stored.
  Bytes load_raw(const Hash& tree_id);
  std::uint64_t bytes_fetched() const { return bytes_fetched_; }
  std::uint64_t packs_fetched() const { return packs_fetched_; }

 private:
  // Metadata packs kept decrypted (a pack's trees are read together, and a folder's
  // patches sit in the packs of the snapshots just before): the last few only, so
  // walking a million-message snapshot does not hold all of its trees' packs.
  static constexpr std::size_t kKeepPacks = 4;
  Repository& repo_;
  const BlobIndex& index_;
  std::deque<LoadedPack> packs_;  // most recently loaded last
  std::uint64_t bytes_fetched_ = 0, packs_fetched_ = 0;
  bool share_chains_;
  std::map<Hash, Tree> resolved_;  // with share_chains_: resolved trees, reused along a chain
  std::size_t resolved_entries_ = 0;
};

}  // namespace reduit
