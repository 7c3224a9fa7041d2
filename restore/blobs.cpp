#include "restore/blobs.hpp"

#include "vault/error.hpp"

namespace reduit {

namespace {

const char* type_name(BlobType t) {
  switch (t) {
    case BlobType::kHeader:
      return "header";
    case BlobType::kBody:
      return "body";
    case BlobType::kFile:
      return "file";
    case BlobType::kTree:
      return "tree";
    case BlobType::kDelta:
      return "delta";
    case BlobType::kSignature:
      return "signature";
  }
  return "unknown";
}

}  // namespace

std::string_view BlobFetcher::fetch(const Hash& id, BlobType type) {
  const IndexedBlob* pick = &index_.locate(id, present_);
  if (pick->type != type) {
    throw Error(ErrorCode::kVerify, "blob " + to_hex(id) + " is a " + type_name(pick->type) +
                                        " blob where a " + type_name(type) + " blob is expected");
  }
  const LoadedPack* pack = nullptr;
  for (const LoadedPack& p : packs_) {
    if (p.id == pick->pack) pack = &p;
  }
  if (!pack) {
    if (packs_.size() >= keep_) packs_.pop_front();
    packs_.push_back(repo_.load_pack(pick->pack));
    ++packs_fetched_;
    if (auto it = index_.packs().find(pick->pack); it != index_.packs().end())
      bytes_fetched_ += it->second.size;
    pack = &packs_.back();
  }
  for (const PackEntry& e : pack->entries) {
    if (e.id == id) {
      if (e.type != type) {
        throw Error(ErrorCode::kVerify, "pack " + to_hex(pack->id) + " holds blob " + to_hex(id) + " as a " +
                                            type_name(e.type) + " blob, not " + type_name(type));
      }
      return repo_.blob_bytes(*pack, e);
    }
  }
  throw Error(ErrorCode::kVerify,
              "pack " + to_hex(pick->pack) + " does not hold blob " + to_hex(id) + " named by the index");
}

}  // namespace reduit
