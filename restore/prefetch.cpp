#include "restore/prefetch.hpp"

#include <pthread.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "vault/direct_gpg.hpp"
#include "vault/error.hpp"

namespace reduit {

PackPrefetcher::PackPrefetcher(Repository& repo, std::vector<PackRequest> order, std::size_t ahead)
    : repo_(repo), order_(std::move(order)), ahead_(std::max<std::size_t>(ahead, 1)) {
  if (order_.empty()) return;
  threads_.reserve(1 + kOpeners);
  try {
    threads_.emplace_back([this] { fetch(); });
    for (int i = 0; i < kOpeners; ++i) threads_.emplace_back([this] { open(); });
  } catch (...) {  // e.g. no thread left under RLIMIT_NPROC: stop the ones started
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    throw;
  }
}

PackPrefetcher::~PackPrefetcher() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void PackPrefetcher::fail(std::size_t at) {
  if (at < error_at_) {
    error_at_ = at;
    error_ = std::current_exception();
  }
}

void PackPrefetcher::fetch() {
  pthread_setname_np(pthread_self(), "reduit-fetch");
  for (std::size_t i = 0; i < order_.size(); ++i) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || fetched_ - taken_ < ahead_; });
      if (stop_ || error_at_ < i) break;
    }
    try {
      Bytes stored = repo_.fetch_pack(order_[i].pack);
      std::lock_guard<std::mutex> g(mu_);
      stored_.emplace_back(i, std::move(stored));
      ++fetched_;
    } catch (...) {
      std::lock_guard<std::mutex> g(mu_);
      fail(i);
      break;
    }
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> g(mu_);
  fetch_done_ = true;
  cv_.notify_all();
}

void PackPrefetcher::open() {
  pthread_setname_np(pthread_self(), "reduit-open");
  std::unique_ptr<Crypto> crypto;  // made by the first job, so a failure is that job's
  // Packs are decrypted by a gpg this thread starts, without GPGME's relay; what it
  // does not accept goes to `crypto` (vault/direct_gpg.hpp).
  std::unique_ptr<DirectGpg> gpg;
  bool gpg_tried = false;
  while (true) {
    std::pair<std::size_t, Bytes> job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !stored_.empty() || fetch_done_; });
      if (stop_ || stored_.empty()) return;
      job = std::move(stored_.front());
      stored_.pop_front();
    }
    const PackRequest& req = order_[job.first];
    try {
      if (!crypto) crypto = std::make_unique<Crypto>(repo_.gnupghome());
      if (!gpg_tried) {
        gpg_tried = true;
        gpg = DirectGpg::start();
      }
      FetchedPack f(open_pack(*crypto, repo_.config(), req.pack, job.second, gpg.get()));
      Bytes().swap(job.second);
      std::vector<const PackEntry*> by_id;
      by_id.reserve(f.pack.entries.size());
      for (const PackEntry& e : f.pack.entries) by_id.push_back(&e);
      std::sort(by_id.begin(), by_id.end(),
                [](const PackEntry* a, const PackEntry* b) { return a->id < b->id; });
      f.blobs.reserve(req.blobs.size());
      for (const Hash& id : req.blobs) {
        auto it = std::lower_bound(by_id.begin(), by_id.end(), id,
                                   [](const PackEntry* e, const Hash& h) { return e->id < h; });
        if (it == by_id.end() || (*it)->id != id) {
          throw Error(ErrorCode::kVerify, "pack " + to_hex(req.pack) + " does not hold blob " + to_hex(id) +
                                              " named by the index");
        }
        f.blobs.push_back(repo_.blob_bytes(f.pack, **it));
      }
      std::lock_guard<std::mutex> g(mu_);
      ready_.emplace(job.first, std::move(f));
    } catch (...) {
      std::lock_guard<std::mutex> g(mu_);
      fail(job.first);
    }
    cv_.notify_all();
  }
}

FetchedPack PackPrefetcher::next() {
  std::unique_lock<std::mutex> lk(mu_);
  if (taken_ >= order_.size())
    throw Error(ErrorCode::kInternal, "restore asked for more packs than it planned");
  cv_.wait(lk, [&] { return ready_.count(taken_) || error_at_ <= taken_; });
  if (error_at_ <= taken_) std::rethrow_exception(error_);
  auto it = ready_.find(taken_);
  FetchedPack f = std::move(it->second);
  ready_.erase(it);
  ++taken_;
  lk.unlock();
  cv_.notify_all();
  return f;
}

}  // namespace reduit
