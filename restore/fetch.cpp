#include "restore/fetch.hpp"

#include <cstring>
#include <map>
#include <string>

#include "restore/prefetch.hpp"
#include "vault/error.hpp"

namespace reduit {

void require_archive_key(Repository& repo) {
  std::string keys;
  for (const std::string& k : repo.config().archive_keys) {
    if (repo.crypto().has_secret_key(k)) return;
    keys += (keys.empty() ? "" : ", ") + k;
  }
  throw Error(ErrorCode::kKey, "cannot decrypt mail: no archive secret key (" + keys +
                                   ") in this GnuPG home; give the one that holds it with --gnupghome");
}

void fetch_entries(Repository& repo, const BlobIndex& index, const std::vector<const TreeEntry*>& entries,
                   const std::function<void(std::size_t, std::string_view)>& done, FetchStats* stats,
                   const std::function<void(std::size_t, std::size_t)>& progress) {
  struct Part {
    std::size_t entry;
    std::uint64_t offset;
  };
  struct Pending {
    std::string bytes;
    int parts_left = 0;
  };
  std::vector<Pending> pending(entries.size());
  std::map<Hash, std::vector<Part>> need;
  std::vector<Hash> blob_order;  // first need first
  auto want = [&](const Hash& id, std::size_t i, std::uint64_t offset) {
    auto [it, fresh] = need.try_emplace(id);
    if (fresh) blob_order.push_back(id);
    it->second.push_back({i, offset});
    ++pending[i].parts_left;
  };
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const TreeEntry& e = *entries[i];
    if (e.kind == EntryKind::kMessage && e.header) {
      want(*e.header, i, 0);
      if (e.body) {
        auto hl = index.find(*e.header);
        if (hl.empty())
          throw Error(ErrorCode::kVerify,
                      "blob " + to_hex(*e.header) + " of " + e.path + " is not in any index");
        want(*e.body, i, hl.front().length);
      }
    } else if (e.kind == EntryKind::kFile && e.blob) {
      want(*e.blob, i, 0);
    }
  }
  auto finish = [&](std::size_t i) {
    const TreeEntry& e = *entries[i];
    std::string& b = pending[i].bytes;
    if (b.size() != e.size || sha256(b) != e.sha256) {
      throw Error(ErrorCode::kVerify, "restored " + e.path + " does not match the manifest's SHA-256");
    }
    done(i, b);
    std::string().swap(b);
  };
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (pending[i].parts_left == 0) finish(i);
  }
  if (need.empty()) return;

  // A blob may be indexed in several packs (re-uploaded after one went missing):
  // take one that is still in the vault.
  std::map<Hash, std::uint64_t> present = repo.list_packs();
  std::vector<PackRequest> plan;  // in the order the entries first need them
  std::map<Hash, std::size_t> plan_of;
  for (const Hash& id : blob_order) {
    const Hash& pack = index.locate(id, &present).pack;
    auto [it, fresh] = plan_of.try_emplace(pack, plan.size());
    if (fresh) plan.push_back({pack, {}});
    plan[it->second].blobs.push_back(id);
  }
  std::size_t packs_done = 0;
  PackPrefetcher prefetch(repo, plan);  // loads and checks ahead while `done` writes
  for (const PackRequest& wanted : plan) {
    const FetchedPack fetched = prefetch.next();
    if (stats) {
      ++stats->packs_fetched;
      if (auto it = index.packs().find(wanted.pack); it != index.packs().end())
        stats->bytes_fetched += it->second.size;
    }
    for (std::size_t b = 0; b < wanted.blobs.size(); ++b) {
      const Hash& id = wanted.blobs[b];
      std::string_view bytes = fetched.blobs[b];
      for (const Part& part : need[id]) {
        Pending& p = pending[part.entry];
        std::uint64_t end = part.offset + bytes.size();
        if (end > entries[part.entry]->size) {
          throw Error(ErrorCode::kVerify, "blob " + to_hex(id) + " overruns " + entries[part.entry]->path);
        }
        if (p.bytes.size() < end) p.bytes.resize(entries[part.entry]->size);
        std::memcpy(p.bytes.data() + part.offset, bytes.data(), bytes.size());
        if (--p.parts_left == 0) finish(part.entry);
      }
    }
    ++packs_done;
    if (progress) progress(packs_done, plan.size());
  }
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (pending[i].parts_left != 0)
      throw Error(ErrorCode::kInternal, "fetch left " + entries[i]->path + " incomplete");
  }
}

}  // namespace reduit
