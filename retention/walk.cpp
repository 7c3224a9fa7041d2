#include "retention/walk.hpp"

namespace reduit {

const BlobIndex& VaultWalker::index() {
  if (!index_) {
    index_ = std::make_unique<BlobIndex>(repo_.load_indexes());
    loader_ = std::make_unique<TreeLoader>(repo_, *index_);
  }
  return *index_;
}

void VaultWalker::reset_index() {
  loader_.reset();
  index_.reset();
}

const Tree& VaultWalker::tree(const Hash& id) {
  auto it = trees_.find(id);
  if (it != trees_.end()) return it->second;
  index();
  return trees_.emplace(id, loader_->load(id)).first->second;
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
