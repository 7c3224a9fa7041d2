// restore/prefetch.hpp — loading a restore's packs ahead of the thread that writes
// their blobs out.
//
// A restore fetches each pack it needs once: transfer, SHA-256 of the stored bytes,
// gpg decryption and signature check, zstd, the entry table, the HMAC id of every
// blob it takes. Done in line with writing the files, one core waits while the
// other works, and gpg's own start-up and pipes leave both idle part of the time.
// A PackPrefetcher fetches the packs on one thread ("reduit-fetch": the transport
// is not shared) and opens them on two more ("reduit-open", each with a Crypto of
// its own), up to `ahead` packs before the one the caller takes; the caller gets
// them in the order given.
//
// The opening threads find the blobs the caller asked for in each pack's entry
// table and check each against its HMAC id (Repository::blob_bytes), so the
// writing thread gets checked bytes. Blobs not asked for are not checked.
//
// Contract: while a PackPrefetcher exists, its threads are the only users of the
// Repository's transport; the caller may use only its const members (config,
// blob_bytes, blob_id). Memory: up to `ahead` packs beyond the one the caller holds
// (each its stored bytes and plaintext, ~1.5 × pack_size). Not copyable; the
// destructor stops the threads after the packs they are working on, so leaving a
// scope early (an error) is safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "vault/repository.hpp"

namespace reduit {

/// A pack to load and the blobs the caller takes from it.
struct PackRequest {
  Hash pack;
  std::vector<Hash> blobs;
};

/// A loaded pack; `blobs[i]` are the bytes of the request's blobs[i] (a view into
/// pack.plaintext, which moving the FetchedPack keeps valid), checked against its id.
struct FetchedPack {
  explicit FetchedPack(LoadedPack p) : pack(std::move(p)) {}
  FetchedPack(FetchedPack&&) = default;
  FetchedPack& operator=(FetchedPack&&) = default;
  FetchedPack(const FetchedPack&) = delete;  // a copy's views would point into the original
  FetchedPack& operator=(const FetchedPack&) = delete;

  LoadedPack pack;
  std::vector<std::string_view> blobs;
};

class PackPrefetcher {
 public:
  /// Starts loading the packs of `order`, in that order (one load per request).
  PackPrefetcher(Repository& repo, std::vector<PackRequest> order, std::size_t ahead = 2);
  ~PackPrefetcher();
  PackPrefetcher(const PackPrefetcher&) = delete;
  PackPrefetcher& operator=(const PackPrefetcher&) = delete;

  /// The next pack of `order`, waiting for it when needed. Rethrows what loading it
  /// threw (kVerify for a corrupt pack, a requested blob the pack does not hold or
  /// one that does not match its id; kKey, kUnreachable, …); no pack after a failed
  /// one is handed out. Calling it more often than `order` has packs is kInternal.
  FetchedPack next();

 private:
  static constexpr int kOpeners = 2;
  void fetch();
  void open();
  void fail(std::size_t at);  // records the current exception for position `at`; mu_ held

  Repository& repo_;
  const std::vector<PackRequest> order_;
  const std::size_t ahead_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::size_t, Bytes>> stored_;  // fetched, to open: (position, stored bytes)
  std::map<std::size_t, FetchedPack> ready_;          // opened, by position
  std::size_t fetched_ = 0, taken_ = 0;
  bool fetch_done_ = false, stop_ = false;
  std::size_t error_at_ = SIZE_MAX;  // the first position that failed
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

}  // namespace reduit
