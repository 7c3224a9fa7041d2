#include "restore/snapshots.hpp"

#include <algorithm>

#include "vault/error.hpp"

namespace reduit {

std::vector<SnapshotRef> list_snapshots(Repository& repo, Catalog* cache, std::vector<std::string>* problems,
                                        std::vector<DamagedSnapshot>* damaged) {
  std::map<std::string, std::string> cached;
  if (cache) {
    for (auto& [id, json] : cache->snapshot_rows()) cached[id] = json;
  }
  std::vector<SnapshotRef> out;
  std::vector<std::string> ids;
  for (const Hash& h : repo.list_objects("snapshots")) {
    std::string id = to_hex(h);
    ids.push_back(id);
    Bytes plain;
    SnapshotRef r;
    try {
      if (auto it = cached.find(id); it != cached.end()) {
        plain.assign(it->second.begin(), it->second.end());
      } else {
        plain = repo.get_object("snapshots", h);
      }
      r = SnapshotRef{id, decode_snapshot(plain)};
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kVerify && e.code() != ErrorCode::kNotFound) throw;
      std::string what = e.what();
      if (what.find(id) == std::string::npos) what = "snapshots/" + id + ": " + what;
      if (problems) problems->push_back("skipped damaged snapshot: " + what);
      if (damaged) damaged->push_back(DamagedSnapshot{id, what});
      ids.pop_back();
      continue;
    }
    if (cache && !cached.count(id)) cache->add_snapshot(id, r.snap, std::string(plain.begin(), plain.end()));
    out.push_back(std::move(r));
  }
  if (cache) cache->remove_snapshots_not_in(ids);
  std::sort(out.begin(), out.end(), [](const SnapshotRef& a, const SnapshotRef& b) {
    return a.snap.time_ns != b.snap.time_ns ? a.snap.time_ns < b.snap.time_ns : a.id < b.id;
  });
  return out;
}

SnapshotRef find_snapshot(const std::vector<SnapshotRef>& all, const std::string& spec,
                          const std::vector<DamagedSnapshot>* damaged) {
  // A prefix (4 digits or more) of a snapshot list_snapshots() left out: damaged,
  // not absent.
  auto refuse_damaged = [&] {
    if (!damaged || spec.size() < 4) return;
    for (const DamagedSnapshot& d : *damaged) {
      if (d.id.rfind(spec, 0) != 0) continue;
      throw Error(ErrorCode::kVerify, "snapshot '" + spec + "' is damaged (" + d.problem +
                                          "): 'reduit check' names what else it affects; the other "
                                          "snapshots still restore (see 'reduit snapshots')");
    }
  };
  if (all.empty()) {
    refuse_damaged();
    throw Error(ErrorCode::kNotFound, "the vault has no snapshots yet");
  }
  if (spec == "latest") return all.back();
  if (spec.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw Error(ErrorCode::kUsage,
                "snapshot id '" + spec + "' is not hex (give an id from 'reduit snapshots', or 'latest')");
  }
  if (spec.size() < 4)
    throw Error(ErrorCode::kUsage,
                "snapshot id '" + spec + "' is too short (give at least 4 hex digits, or 'latest')");
  const SnapshotRef* found = nullptr;
  for (const auto& s : all) {
    if (s.id.rfind(spec, 0) == 0) {
      if (found) throw Error(ErrorCode::kUsage, "snapshot id '" + spec + "' is ambiguous; give more digits");
      found = &s;
    }
  }
  if (!found) {
    refuse_damaged();
    throw Error(ErrorCode::kNotFound, "no snapshot '" + spec + "' in the vault (see 'reduit snapshots')");
  }
  return *found;
}

const SnapshotMailbox& find_mailbox(const SnapshotRef& s, const std::string& name) {
  for (const auto& m : s.snap.mailboxes) {
    if (m.name == name) return m;
  }
  std::string names;
  for (const auto& m : s.snap.mailboxes) {
    if (names.size() > 200) {
      names += ", …";
      break;
    }
    names += (names.empty() ? "" : ", ") + m.name;
  }
  throw Error(ErrorCode::kNotFound,
              "snapshot " + s.id.substr(0, 8) + " has no mailbox '" + name + "' (it has: " + names + ")");
}

BlobIndex::BlobIndex(std::vector<IndexPack> packs) {
  for (IndexPack& p : packs) {
    for (const PackEntry& e : p.blobs) {
      blobs_.push_back(IndexedBlob{e.id, p.id, e.type, e.offset, e.length});
    }
    p.blobs.clear();
    p.blobs.shrink_to_fit();
    packs_[p.id] = std::move(p);
  }
  std::sort(blobs_.begin(), blobs_.end(),
            [](const IndexedBlob& a, const IndexedBlob& b) { return a.id < b.id; });
}

BlobIndex::BlobIndex(Catalog& catalog, Repository& repo) : catalog_(&catalog), repo_(&repo) {
  for (IndexPack& p : catalog.indexed_packs()) packs_[p.id] = std::move(p);
}

bool BlobIndex::fall_back_to_vault() const {
  if (!catalog_) return false;
  load_vault_indexes();
  return true;
}

void BlobIndex::load_vault_indexes() const {
  BlobIndex vault(repo_->load_indexes());
  blobs_ = std::move(vault.blobs_);
  packs_ = std::move(vault.packs_);
  catalog_ = nullptr;
}

std::span<const IndexedBlob> BlobIndex::find(const Hash& id) const {
  if (catalog_) {
    auto it = looked_up_.find(id);
    if (it == looked_up_.end()) {
      std::optional<std::pair<Hash, PackEntry>> loc;
      try {
        loc = catalog_->find_indexed_blob(id);
      } catch (const Error&) {
        // A damaged catalog (kIo from SQLite): the vault's index objects answer.
      }
      if (!loc) {
        load_vault_indexes();
        return find(id);
      }
      const PackEntry& e = loc->second;
      it = looked_up_.emplace(id, IndexedBlob{id, loc->first, e.type, e.offset, e.length}).first;
    }
    return {&it->second, 1};
  }
  auto lo = std::lower_bound(blobs_.begin(), blobs_.end(), id,
                             [](const IndexedBlob& b, const Hash& h) { return b.id < h; });
  auto hi = lo;
  while (hi != blobs_.end() && hi->id == id) ++hi;
  return {lo, hi};
}

const IndexedBlob& BlobIndex::locate(const Hash& id, const std::map<Hash, std::uint64_t>* present) const {
  std::span<const IndexedBlob> locs = find(id);
  if (catalog_ && present && !present->count(locs.front().pack)) {
    load_vault_indexes();  // the catalog's pack is gone: the vault may name another
    locs = find(id);
  }
  if (locs.empty())
    throw Error(ErrorCode::kVerify, "blob " + to_hex(id) + " is not in any index of the vault");
  if (present) {
    for (const IndexedBlob& l : locs)
      if (present->count(l.pack)) return l;
  }
  return locs.front();
}

bool catalog_matches_vault(Catalog& catalog, Repository& repo) {
  std::optional<std::string> vault_id = catalog.get_meta("vault_id");
  if (!vault_id || *vault_id != repo.config().vault_id) return false;
  std::vector<Hash> known = catalog.index_ids(), held = repo.list_objects("index");
  std::sort(known.begin(), known.end());
  std::sort(held.begin(), held.end());
  return !held.empty() && known == held;
}

BlobIndex open_blob_index(Repository& repo, Catalog* catalog) {
  if (catalog) {
    try {
      if (catalog_matches_vault(*catalog, repo)) return BlobIndex(*catalog, repo);
    } catch (const Error&) {
      // kIo from a damaged catalog file: read the vault's index objects below.
    }
  }
  return BlobIndex(repo.load_indexes());
}

Tree TreeLoader::load(const Hash& tree_id) {
  auto raw = [this](const Hash& id) { return load_raw(id); };
  if (!share_chains_) return resolve_tree(tree_id, raw);
  // Resolved trees are kept so that the snapshots of one folder share their chain;
  // bounded (all snapshots of a big vault would not fit in memory).
  constexpr std::size_t kMaxResolvedEntries = 1 << 20;
  if (resolved_entries_ > kMaxResolvedEntries) {
    resolved_.clear();
    resolved_entries_ = 0;
  }
  std::size_t before = resolved_.size();
  Tree t = resolve_tree(tree_id, raw, resolved_);
  resolved_entries_ += t.entries.size() * (resolved_.size() - before);  // about: a chain's trees are alike
  return t;
}

Bytes TreeLoader::load_raw(const Hash& tree_id) {
  if (cache_) {
    try {
      std::optional<Bytes> text = cache_->cached_tree(tree_id);
      if (text && repo_.blob_id(text->data(), text->size()) == tree_id) return std::move(*text);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kIo) throw;
      cache_ = nullptr;
    }
  }
  auto locs = index_.find(tree_id);
  if (locs.empty()) {
    throw Error(
        ErrorCode::kVerify,
        "tree " + to_hex(tree_id) + " is not in any index of the vault (damaged vault: run reduit check)");
  }
  std::string last_error;
  for (const IndexedBlob& loc : locs) {
    try {
      auto it =
          std::find_if(packs_.begin(), packs_.end(), [&](const LoadedPack& p) { return p.id == loc.pack; });
      if (it == packs_.end()) {
        LoadedPack p = repo_.load_pack(loc.pack);
        ++packs_fetched_;
        bytes_fetched_ += index_.packs().count(loc.pack) ? index_.packs().at(loc.pack).size : 0;
        if (packs_.size() >= kKeepPacks) packs_.pop_front();
        packs_.push_back(std::move(p));
        it = std::prev(packs_.end());
      }
      for (const PackEntry& e : it->entries) {
        if (e.id == tree_id && e.type == BlobType::kTree) {
          std::string_view v = repo_.blob_bytes(*it, e);
          return Bytes(v.begin(), v.end());
        }
      }
      last_error = "pack " + to_hex(loc.pack) + " does not hold tree " + to_hex(tree_id);
    } catch (const Error& e) {
      last_error = e.what();
    }
  }
  if (index_.fall_back_to_vault()) return load_raw(tree_id);  // the catalog's location was wrong
  throw Error(ErrorCode::kVerify, "cannot load tree " + to_hex(tree_id) + ": " + last_error);
}

}  // namespace reduit
