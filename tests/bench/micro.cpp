// tests/bench/micro — Google Benchmark micro-benchmarks of the backup's hot paths:
// Maildir folder scan, SHA-256 and keyed hashing, pack build, zstd, and one GPGME
// encrypt+sign / decrypt+verify per 16 MiB pack. Not run by ctest.
// Usage: build/tests/micro_bench [--benchmark_filter=…]
#include <benchmark/benchmark.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "agent/scan.hpp"
#include "support/gpg_home.hpp"
#include "vault/compress.hpp"
#include "vault/crypto.hpp"
#include "vault/format.hpp"
#include "vault/hash.hpp"

namespace fs = std::filesystem;
using namespace reduit;

namespace {

// Mail-like bytes: header lines and prose from a small vocabulary (compresses ~4–5×,
// like text mail), with every fourth 64 KiB block random (attachments).
std::string mail_like(std::size_t size) {
  static const char* words[] = {"Rechnung", "meeting",  "the",    "und",     "Projekt", "please",
                                "find",     "attached", "Grüsse", "regards", "Offerte", "pour",
                                "le",       "Termin",   "update", "Bern"};
  std::mt19937_64 rng(42);
  std::string s;
  s.reserve(size);
  while (s.size() < size) {
    if ((s.size() / 65536) % 4 == 3) {
      for (int i = 0; i < 1024 && s.size() < size; ++i) s.push_back(static_cast<char>(rng()));
    } else {
      s += words[rng() % 16];
      s += (rng() % 12 == 0) ? '\n' : ' ';
    }
  }
  s.resize(size);
  return s;
}

class MaildirFixture {
 public:
  explicit MaildirFixture(int n) {
    dir_ = fs::temp_directory_path() / ("reduit-micro-" + std::to_string(n));
    fs::remove_all(dir_);
    for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(dir_ / d);
    for (int i = 0; i < n; ++i) {
      std::ofstream(dir_ / "cur" / ("1700000000.M" + std::to_string(i) + "P1.host,S=10:2,S"))
          << "Subject: x\n\nbody\n";
    }
  }
  ~MaildirFixture() { fs::remove_all(dir_); }
  std::string path() const { return dir_.string(); }

 private:
  fs::path dir_;
};

}  // namespace

static void BM_ScanFolder(benchmark::State& state) {
  MaildirFixture m(static_cast<int>(state.range(0)));
  std::vector<std::string> folders = find_folders(m.path());
  for (auto _ : state) benchmark::DoNotOptimize(scan_folder(m.path(), "", folders));
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_ScanFolder)->Arg(10000)->Unit(benchmark::kMillisecond);

static void BM_Sha256(benchmark::State& state) {
  std::string buf = mail_like(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(sha256(buf.data(), buf.size()));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Sha256)->Arg(10 << 10)->Arg(1 << 20);

static void BM_HmacBlobId(benchmark::State& state) {
  std::string buf = mail_like(static_cast<std::size_t>(state.range(0)));
  Hash key = random_hash();
  for (auto _ : state) benchmark::DoNotOptimize(hmac_sha256(key, buf.data(), buf.size()));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_HmacBlobId)->Arg(2 << 10)->Arg(10 << 10)->Arg(1 << 20);

static void BM_PackBuild16MiB(benchmark::State& state) {
  std::string blob = mail_like(10 << 10);
  for (auto _ : state) {
    PackWriter w(PackKind::kData);
    Hash id{};
    while (w.size() < (16u << 20)) {
      id[0]++;
      w.add(BlobType::kBody, id, blob.data(), blob.size());
    }
    benchmark::DoNotOptimize(w.finish());
  }
  state.SetBytesProcessed(state.iterations() * (16 << 20));
}
BENCHMARK(BM_PackBuild16MiB)->Unit(benchmark::kMillisecond);

static void BM_Zstd16MiB(benchmark::State& state) {
  std::string s = mail_like(16 << 20);
  Bytes in(s.begin(), s.end());
  std::size_t out = 0;
  for (auto _ : state) out = zstd_compress(in, static_cast<int>(state.range(0))).size();
  state.SetBytesProcessed(state.iterations() * (16 << 20));
  state.counters["ratio"] = double(in.size()) / double(out);
}
BENCHMARK(BM_Zstd16MiB)->Arg(1)->Arg(3)->Unit(benchmark::kMillisecond);

static void BM_GpgmePack16MiB(benchmark::State& state) {
  static reduit::test::GpgHome home;
  static std::string fpr = home.generate_key("Bench <bench@example.test>");
  Crypto crypto(home.path());
  std::string s = mail_like(16 << 20);
  Bytes in(s.begin(), s.end());
  Bytes sealed;
  for (auto _ : state) {
    if (state.range(0) == 0) {
      sealed = crypto.encrypt_sign(in, {fpr}, fpr);
    } else {
      state.PauseTiming();
      if (sealed.empty()) sealed = crypto.encrypt_sign(in, {fpr}, fpr);
      state.ResumeTiming();
      benchmark::DoNotOptimize(crypto.decrypt_verify(sealed, fpr));
    }
  }
  state.SetBytesProcessed(state.iterations() * (16 << 20));
  state.SetLabel(state.range(0) == 0 ? "encrypt+sign" : "decrypt+verify");
}
BENCHMARK(BM_GpgmePack16MiB)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(5);

BENCHMARK_MAIN();
