#include "retention/walk.hpp"

namespace reduit {

const BlobIndex& VaultWalker::index() {
  if (!index_) {
    // On the backup host the catalog knows where every tree is (as for restore): a
    // tree not in tree_cache then costs one metadata pack, not a download and
    // decryption of every index object first.
    index_ = std::make_unique<BlobIndex>(open_blob_index(repo_, &catalog_));
    loader_ = std::make_unique<TreeLoader>(repo_, *index_);
  }
  return *index_;
}

void VaultWalker::reset_index() {
  loader_.reset();
  index_.reset();
}

VaultWalker::VaultWalker(Repository& repo, Catalog& catalog)
    : repo_(repo), catalog_(catalog), dates_(catalog) {}

const Tree& VaultWalker::tree(const Hash& id) {
  auto it = trees_.find(id);
  if (it != trees_.end()) return it->second;
  return resolve_tree(
      id, [this](const Hash& h) { return raw_tree(h); }, trees_);
}

// The tree blob's plaintext as stored (a full tree or a patch): from the cache
// when its bytes still give the id, else from the vault (then cached).
Bytes VaultWalker::raw_tree(const Hash& id) {
  if (std::optional<Bytes> text = catalog_.cached_tree(id);
      text && repo_.blob_id(text->data(), text->size()) == id)
    return std::move(*text);
  index();
  Bytes text = loader_->load_raw(id);
  SQLite::Statement ins(catalog_.db(), "INSERT OR REPLACE INTO tree_cache VALUES(?,?)");
  ins.bind(1, id.data(), 32);
  ins.bind(2, text.data(), static_cast<int>(text.size()));
  ins.exec();
  return text;
}

void VaultWalker::for_each_message(const SnapshotRef& s, const std::function<void(const MessageRef&)>& f) {
  for (const SnapshotMailbox& mb : s.snap.mailboxes) {
    for (const SnapshotFolder& fo : mb.folders) {
      for (const TreeEntry& e : tree(fo.tree).entries) {
        if (e.kind != EntryKind::kMessage) continue;
        f(MessageRef{mb.name, fo.name, &e, dates_.date_ns(e.sha256)});
      }
    }
  }
}

}  // namespace reduit
