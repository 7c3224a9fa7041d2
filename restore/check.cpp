#include "restore/check.hpp"

#include <map>
#include <memory>
#include <set>

#include "restore/snapshots.hpp"
#include "vault/clock.hpp"
#include "vault/delta.hpp"
#include "vault/direct_gpg.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

bool indexed_as(const BlobIndex& index, const Hash& id, BlobType type) {
  for (const IndexedBlob& l : index.find(id)) {
    if (l.type == type) return true;
  }
  return false;
}

// A delta blob must parse and name an indexed basis of the right type (a full copy
// under the first link, a delta above it); a signature blob must parse and name an
// indexed full copy (docs/FORMAT.md §4.1, §4.2). Patching is left to restore, which
// checks every link's SHA-256.
void check_links(const PackEntry& e, std::string_view bytes, const BlobIndex& index) {
  if (e.type == BlobType::kDelta) {
    DeltaHeader h = decode_delta_blob(bytes);
    BlobType want = h.depth == 1 ? BlobType::kFile : BlobType::kDelta;
    if (!indexed_as(index, h.basis, want)) {
      throw Error(ErrorCode::kVerify, "delta blob " + to_hex(e.id) + " names basis " + to_hex(h.basis) +
                                          ", which no index holds as a " +
                                          (want == BlobType::kFile ? "file" : "delta") + " blob");
    }
  } else if (e.type == BlobType::kSignature) {
    SignatureHeader h = decode_signature_blob(bytes);
    if (!indexed_as(index, h.file, BlobType::kFile)) {
      throw Error(ErrorCode::kVerify, "signature blob " + to_hex(e.id) + " describes " + to_hex(h.file) +
                                          ", which no index holds as a file blob");
    }
  }
}

}  // namespace

CheckReport check_vault(Repository& repo, bool read_data, bool progress, Catalog* catalog) {
  CheckReport r;
  auto problem = [&](const std::string& obj, std::string what, std::vector<std::string> mbs = {}) {
    if (what.rfind(obj + ": ", 0) == 0) what = what.substr(obj.size() + 2);  // said once is enough
    r.problems.push_back({obj, what, std::move(mbs)});
  };

  std::map<Hash, std::uint64_t> packs = repo.list_packs(/*with_sizes=*/true);
  r.packs = packs.size();
  r.incomplete_uploads = repo.transport().list("tmp").size();

  // Indexes.
  std::vector<IndexPack> all;
  for (const Hash& id : repo.list_objects("index")) {
    ++r.indexes;
    try {
      for (auto& p : decode_index(repo.get_object("index", id))) all.push_back(std::move(p));
    } catch (const Error& e) {
      problem(index_name(id), e.what());
    }
  }
  std::set<Hash> indexed_packs;
  for (const auto& p : all) {
    indexed_packs.insert(p.id);
    auto it = packs.find(p.id);
    if (it != packs.end() && it->second != p.size) {
      problem(pack_name(p.id),
              "size " + std::to_string(it->second) + " differs from the indexed " + std::to_string(p.size));
    }
  }
  for (const auto& [id, size] : packs) {
    if (!indexed_packs.count(id)) ++r.unreferenced_packs;
  }
  BlobIndex index(std::move(all));

  // Snapshots → trees → blobs; remember which mailboxes use which pack.
  std::map<Hash, std::set<std::string>> users;  // pack → "snap:mailbox"
  TreeLoader trees(repo, index, /*share_chains=*/true);
  std::set<Hash> seen_trees;
  std::vector<Hash> snapshot_ids = repo.list_objects("snapshots");
  for (const Hash& sid : snapshot_ids) {
    ++r.snapshots;
    Snapshot snap;
    try {
      snap = decode_snapshot(repo.get_object("snapshots", sid));
    } catch (const Error& e) {
      problem(snapshot_name(sid), e.what());
      continue;
    }
    std::string sp = to_hex(sid).substr(0, 8);
    for (const auto& mb : snap.mailboxes) {
      std::string who = sp + ":" + mb.name;
      for (const auto& f : mb.folders) {
        auto use = [&](const Hash& blob, const std::string& what) {
          ++r.blobs_referenced;
          auto locs = index.find(blob);
          bool any = false;
          for (const auto& l : locs) {
            users[l.pack].insert(who);
            any = any || packs.count(l.pack);
          }
          if (!any) {
            problem(what,
                    locs.empty() ? "blob " + to_hex(blob) + " is in no index"
                                 : "blob " + to_hex(blob) + " is only in packs missing from the vault",
                    {who});
          }
        };
        use(f.tree, "tree of folder '" + f.name + "' in " + who);
        Tree t;
        try {
          t = trees.load(f.tree);
        } catch (const Error& e) {
          problem("tree " + to_hex(f.tree), e.what(), {who});
          continue;
        }
        if (seen_trees.insert(f.tree).second) ++r.trees;
        for (const auto& e : t.entries) {
          std::string what = who + "/" + (f.name.empty() ? "" : f.name + "/") + e.path;
          if (e.header) use(*e.header, what);
          if (e.body) use(*e.body, what);
          if (e.blob) use(*e.blob, what);
          if (e.delta) use(*e.delta, what);
          for (const Hash& link : e.chain) use(link, what);
          if (e.signature) use(*e.signature, what);
        }
      }
    }
  }

  if (read_data) {
    std::uint64_t n = 0;
    // Packs decrypted by a gpg started directly; what it does not accept is decided
    // by the Crypto, with its messages (vault/direct_gpg.hpp).
    std::unique_ptr<DirectGpg> gpg = DirectGpg::start();
    for (const auto& [id, size] : packs) {
      ++n;
      if (progress)
        fprintf(stderr, "\r\033[Kreading packs: %llu/%zu", static_cast<unsigned long long>(n), packs.size());
      std::vector<std::string> affected(users[id].begin(), users[id].end());
      Bytes stored;
      try {
        stored = repo.transport().get(pack_name(id));
      } catch (const Error& e) {
        problem(pack_name(id), e.what(), affected);
        continue;
      }
      ++r.packs_read;
      r.bytes_read += stored.size();
      if (sha256(stored.data(), stored.size()) != id) {
        problem(pack_name(id), "corrupt: its bytes do not match its SHA-256 name", affected);
        continue;
      }
      const std::size_t problems_before = r.problems.size();
      try {
        LoadedPack p = open_pack(repo.crypto(), repo.config(), id, stored, gpg.get());
        for (const auto& e : p.entries) {
          std::string_view bytes = repo.blob_bytes(p, e);
          check_links(e, bytes, index);
        }
        ++r.packs_decrypted;
      } catch (const Error& e) {
        // Without an archive secret key data packs cannot be opened: that is not a fault.
        if (e.code() != ErrorCode::kKey) problem(pack_name(id), e.what(), affected);
      }
      if (catalog && r.problems.size() == problems_before)
        catalog->mark_pack_verified(id, clock_now_ns(), "check");
    }
    if (progress) fprintf(stderr, "\r\033[K");
  }
  return r;
}

}  // namespace reduit
