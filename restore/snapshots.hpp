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

/// A snapshot object list_snapshots() left out: corrupt, or failing verification.
struct DamagedSnapshot {
  std::string id;       // 64 hex digits (the object's name under snapshots/)
  std::string problem;  // what is wrong, naming snapshots/<id>
};

/// Every readable snapshot in the vault, oldest first. `cache` (optional) avoids
/// decrypting snapshots already decoded once; it is also brought up to date. A
/// snapshot object that is corrupt or cannot be verified is left out, described in
/// `problems` ("skipped damaged snapshot: …", one line each) and, when `damaged` is
/// given, listed there, so one damaged object never hides the others. A key problem
/// (nothing decryptable at all) still throws kKey.
std::vector<SnapshotRef> list_snapshots(Repository& repo, Catalog* cache, std::vector<std::string>* problems,
                                        std::vector<DamagedSnapshot>* damaged = nullptr);

/// Resolves "latest" or a unique hex prefix (at least 4 digits). Throws kNotFound
/// when none matches, kUsage when a prefix is ambiguous, kVerify when only a
/// snapshot of `damaged` (list_snapshots() left it out) matches.
SnapshotRef find_snapshot(const std::vector<SnapshotRef>& all, const std::string& spec,
                          const std::vector<DamagedSnapshot>* damaged = nullptr);

/// Finds a mailbox by exact name; kNotFound lists the names that exist.
const SnapshotMailbox& find_mailbox(const SnapshotRef& s, const std::string& name);

/// Blob locations, sorted by blob id: every one the vault's index objects name, or,
/// on the host that made the backups, the catalog's copy of them.
///
/// The catalog (vault/catalog.hpp) records every pack and blob it uploads and the
/// index objects naming them; when its index objects are exactly the vault's
/// (catalog_matches_vault), its `blobs` table holds the locations those objects
/// hold, and a restore reads them with one SQLite lookup per blob instead of
/// downloading, decrypting and sorting every index object (7.5 MB and 220,000
/// locations for 100,000 messages, docs/PERFORMANCE.md). Such an index falls back
/// to the vault's index objects, loaded once, at the first lookup the catalog
/// cannot answer (a blob it does not know, whose pack is not in `present`, a tree
/// its pack does not hold, or a catalog error such as a damaged database file).
/// Every blob read is still checked against its HMAC id, so a wrong location is a
/// kVerify error, never wrong mail. Lookups from the catalog fill a cache: such an
/// index must be used by one thread at a time.
class BlobIndex {
 public:
  explicit BlobIndex(std::vector<IndexPack> packs);
  /// Locations from `catalog`; `repo` loads the vault's index objects if the
  /// catalog cannot answer. Both must outlive the index.
  BlobIndex(Catalog& catalog, Repository& repo);
  /// All known locations of `id` (several after a re-upload), possibly none.
  std::span<const IndexedBlob> find(const Hash& id) const;
  /// The location to read `id` from: the first whose pack is in `present` (packs in
  /// the vault; a blob re-uploaded after its pack went missing has several), else
  /// the first. Throws kVerify when no index names `id`.
  const IndexedBlob& locate(const Hash& id, const std::map<Hash, std::uint64_t>* present) const;
  const std::map<Hash, IndexPack>& packs() const { return packs_; }
  /// True while every lookup so far was answered by the catalog.
  bool from_catalog() const { return catalog_ != nullptr; }
  /// True when any lookup was answered by the catalog (even if the index has since
  /// fallen back to the vault's index objects).
  bool used_catalog() const { return !looked_up_.empty(); }
  /// Leaves the catalog for the vault's index objects (loads them); false when the
  /// index already reads them. For a caller that found a catalog location wrong.
  bool fall_back_to_vault() const;

 private:
  void load_vault_indexes() const;  // catalog -> vault; keeps looked_up_ (spans into it stay valid)

  mutable std::vector<IndexedBlob> blobs_;
  mutable std::map<Hash, IndexPack> packs_;  // blobs vectors emptied (kept in blobs_)
  mutable Catalog* catalog_ = nullptr;
  Repository* repo_ = nullptr;
  mutable std::map<Hash, IndexedBlob> looked_up_;  // answers from the catalog
};

/// True when `catalog` describes this vault (the vault id it recorded) and names
/// exactly the index objects the vault holds: then its blob locations are the
/// vault's (BlobIndex). One listing of index/ and one catalog query.
bool catalog_matches_vault(Catalog& catalog, Repository& repo);

/// The vault's blob locations: the catalog's (BlobIndex(catalog, repo)) when
/// `catalog` is given and catalog_matches_vault, else the vault's index objects,
/// downloaded and decrypted. A catalog that cannot be read (kIo) is not needed.
BlobIndex open_blob_index(Repository& repo, Catalog* catalog);

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
  /// Reads tree blobs from `catalog`'s tree_cache before the vault (the patches
  /// every backup writes, the trees forget and prune walked): a row is used only
  /// when its bytes give the id (Repository::blob_id), and a catalog that cannot be
  /// read (kIo) is left for the vault's packs. `catalog` must outlive the loader.
  void use_tree_cache(Catalog* catalog) { cache_ = catalog; }
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
  Catalog* cache_ = nullptr;       // use_tree_cache
  std::map<Hash, Tree> resolved_;  // with share_chains_: resolved trees, reused along a chain
  std::size_t resolved_entries_ = 0;
};

}  // namespace reduit
