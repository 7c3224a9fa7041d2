// retention/walk.hpp — walking the messages of snapshots for retention decisions.
//
// Locates trees through the catalog when it names exactly the vault's index
// objects (catalog_matches_vault), else through the vault's indexes, loaded once
// (lazily); loads every tree at most once; the agent key suffices (trees are
// metadata). Tree blobs are kept in the catalog (table
// `tree_cache`, tree id → the blob's JSON as stored, a full tree or a patch, checked
// against the id's HMAC when read), so a weekly forget or monthly prune decrypts
// only the metadata packs written since the last one. Message Date headers come
// from the catalog (MessageDates); 0 when the catalog never saw the message.
#pragma once

#include <functional>
#include <map>
#include <memory>

#include "restore/snapshots.hpp"
#include "retention/archive.hpp"

namespace reduit {

struct MessageRef {
  const std::string& mailbox;
  const std::string& folder;
  const TreeEntry* entry;  // kind kMessage
  std::int64_t date_ns;    // Date header, 0 = unknown
};

class VaultWalker {
 public:
  VaultWalker(Repository& repo, Catalog& catalog);
  /// Calls `f` for every message of every folder of `s`.
  void for_each_message(const SnapshotRef& s, const std::function<void(const MessageRef&)>& f);
  /// The decoded tree `id`, patches applied (cached; `bases` names the tree blobs
  /// it was built from).
  const Tree& tree(const Hash& id);
  /// The vault's blob locations (loaded at the first call): the catalog's when it
  /// names exactly the vault's index objects, falling back to the index objects at
  /// the first lookup it cannot answer (BlobIndex); else the index objects.
  const BlobIndex& index();
  /// Forgets the loaded index (after new index objects were written).
  void reset_index();
  MessageDates& dates() { return dates_; }

 private:
  Bytes raw_tree(const Hash& id);

  Repository& repo_;
  Catalog& catalog_;
  MessageDates dates_;
  std::unique_ptr<BlobIndex> index_;
  std::unique_ptr<TreeLoader> loader_;
  std::map<Hash, Tree> trees_;
};

}  // namespace reduit
