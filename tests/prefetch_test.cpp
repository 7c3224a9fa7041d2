// PackPrefetcher (restore/prefetch.hpp): packs fetched on one thread and opened on
// two, handed out in the order asked, with the asked-for blobs checked; failures
// surface at the pack that failed, after the packs before it.
#include "restore/prefetch.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <string>
#include <utility>

#include "support/harness.hpp"
#include "support/site.hpp"
#include "vault/error.hpp"

namespace {

using reduit::Error;
using reduit::ErrorCode;
using reduit::FetchedPack;
using reduit::Hash;
using reduit::LoadedPack;
using reduit::PackPrefetcher;
using reduit::PackRequest;
using reduit::Repository;
using reduit::test::Site;
using reduit::test::TempDir;

// What next() throws, as (code, message); (kInternal, "no error") when it returns.
std::pair<ErrorCode, std::string> next_error(PackPrefetcher& prefetch) {
  try {
    prefetch.next();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {ErrorCode::kInternal, "no error"};
}

// A vault of many small packs (4 KiB), opened with the archive key.
class Prefetch : public ::testing::Test {
 protected:
  void SetUp() override {
    reduit::test::generate_maildir(mail_.path(), 40, 2, 5);
    site_ = std::make_unique<Site>(std::vector<std::string>{mail_.path()}, "%d/%n", "", "",
                                   "[pack]\nsize = \"4KiB\"\n");
    site_->init();
    site_->backup();
    repo_ = std::make_unique<Repository>(reduit::open_transport(site_->url(), {}),
                                         site_->keys().archive_home->path());
    repo_->load_config();
    for (const auto& [id, size] : repo_->list_packs()) packs_.push_back(id);
    ASSERT_GE(packs_.size(), 30u);
  }

  // Every pack, last name first, with all of its blobs in reverse table order.
  std::vector<PackRequest> every_blob_of_every_pack() {
    std::vector<PackRequest> order;
    for (auto it = packs_.rbegin(); it != packs_.rend(); ++it) {
      PackRequest r{*it, {}};
      for (const auto& e : repo_->load_pack(*it).entries) r.blobs.insert(r.blobs.begin(), e.id);
      order.push_back(std::move(r));
    }
    return order;
  }

  TempDir mail_;
  std::unique_ptr<Site> site_;
  std::unique_ptr<Repository> repo_;
  std::vector<Hash> packs_;  // sorted by id
};

TEST_F(Prefetch, HandsOutPacksInTheOrderAskedWithEachAskedBlobsBytes) {
  const std::vector<PackRequest> order = every_blob_of_every_pack();
  // Each asked blob's bytes as the repository gives them when asked directly
  // (before any prefetcher runs: its threads own repo_ while it lives).
  std::map<Hash, std::vector<std::string>> expected;
  for (const PackRequest& want : order) {
    LoadedPack direct = repo_->load_pack(want.pack);
    for (const Hash& id : want.blobs) {
      auto e = std::find_if(direct.entries.begin(), direct.entries.end(),
                            [&](const reduit::PackEntry& x) { return x.id == id; });
      ASSERT_NE(e, direct.entries.end());
      expected[want.pack].emplace_back(repo_->blob_bytes(direct, *e));
    }
  }
  for (std::size_t ahead : {1u, 3u, 8u}) {
    PackPrefetcher prefetch(*repo_, order, ahead);
    for (const PackRequest& want : order) {
      FetchedPack got = prefetch.next();
      ASSERT_EQ(got.pack.id, want.pack) << "ahead " << ahead;
      ASSERT_EQ(got.blobs.size(), want.blobs.size());
      for (std::size_t i = 0; i < want.blobs.size(); ++i) {
        EXPECT_EQ(got.blobs[i], expected[want.pack][i]);
        EXPECT_EQ(repo_->blob_id(got.blobs[i].data(), got.blobs[i].size()), want.blobs[i]);
      }
    }
    EXPECT_EQ(
        next_error(prefetch),
        std::make_pair(ErrorCode::kInternal, std::string("restore asked for more packs than it planned")));
  }
}

TEST_F(Prefetch, ABlobThePackDoesNotHoldFailsAtThatPackAfterThePacksBefore) {
  std::vector<PackRequest> order = every_blob_of_every_pack();
  order.resize(6);
  const Hash stranger = order[5].blobs.front();  // a blob of another pack
  order[2].blobs.push_back(stranger);
  PackPrefetcher prefetch(*repo_, order);
  EXPECT_EQ(prefetch.next().pack.id, order[0].pack);
  EXPECT_EQ(prefetch.next().pack.id, order[1].pack);
  const auto failure =
      std::make_pair(ErrorCode::kVerify, "pack " + reduit::to_hex(order[2].pack) + " does not hold blob " +
                                             reduit::to_hex(stranger) + " named by the index");
  EXPECT_EQ(next_error(prefetch), failure);
  // Nothing after a failed pack is handed out.
  EXPECT_EQ(next_error(prefetch), failure);
}

TEST_F(Prefetch, ACorruptPackFailsAtItsPosition) {
  std::vector<PackRequest> order = every_blob_of_every_pack();
  order.resize(4);
  const std::string hex = reduit::to_hex(order[1].pack);
  const std::string path = site_->vault_dir() + "/packs/" + hex.substr(0, 2) + "/" + hex;
  std::string bytes = reduit::test::read_file(path);
  bytes[bytes.size() / 2] ^= 0x20;
  reduit::test::write_file(path, bytes);
  PackPrefetcher prefetch(*repo_, order);
  EXPECT_EQ(prefetch.next().pack.id, order[0].pack);
  EXPECT_EQ(next_error(prefetch),
            std::make_pair(ErrorCode::kVerify,
                           "pack " + hex + " is corrupt: its bytes do not match its SHA-256 name"));
}

TEST_F(Prefetch, LeavingBeforeTheLastPackStopsItsThreads) {
  std::vector<PackRequest> order = every_blob_of_every_pack();
  for (int copies = 0; copies < 3; ++copies)
    order.insert(order.end(), order.begin(), order.begin() + static_cast<std::ptrdiff_t>(packs_.size()));
  ASSERT_EQ(order.size(), 4 * packs_.size());
  {
    PackPrefetcher prefetch(*repo_, order);
    EXPECT_EQ(prefetch.next().pack.id, order[0].pack);
  }  // the destructor stops the threads after the packs they are on
  // The repository is the caller's again: it loads a pack on this thread.
  EXPECT_EQ(repo_->load_pack(packs_[0]).id, packs_[0]);
}

TEST_F(Prefetch, NoPacksStartsNoThreadAndAskingIsAnError) {
  PackPrefetcher prefetch(*repo_, {});
  EXPECT_EQ(reduit::test::error_code_of([&] { prefetch.next(); }), ErrorCode::kInternal);
}

}  // namespace
