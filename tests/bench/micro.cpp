// tests/bench/micro — Google Benchmark micro-benchmarks of the backup's hot paths:
// Maildir folder scan, SHA-256 and keyed hashing, pack build, zstd, the base64
// filter of data packs, one GPGME
// encrypt+sign / decrypt+verify per 16 MiB pack, and a folder's tree as a full tree
// or a patch. Not run by ctest.
// Usage: build/tests/micro_bench [--benchmark_filter=…]
#include <benchmark/benchmark.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "agent/scan.hpp"
#include "support/gpg_home.hpp"
#include "vault/compress.hpp"
#include "vault/crypto.hpp"
#include "vault/direct_gpg.hpp"
#include "vault/format.hpp"
#include "vault/hash.hpp"
#include "vault/pack_filter.hpp"

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

// A pack plaintext shaped like the generated mail set's: body text from
// mail_like() and, for 55% of the bytes, attachments as base64 of random bytes in
// lines of 76 characters and CR LF (MIME, RFC 2045 §6.8).
Bytes mime_pack(std::size_t size) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string text = mail_like(size);
  std::mt19937_64 rng(7);
  std::string s = "RDPACK01";
  std::size_t t = 0;
  while (s.size() < size) {
    std::size_t n = 2000 + rng() % 6000;  // text part
    s.append(text, t % (size - n), n);
    t += n;
    s += "\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    for (std::size_t lines = 30 + rng() % 120; lines > 0; --lines) {
      for (int i = 0; i < 76; ++i) s.push_back(kAlphabet[rng() % 64]);
      s += "\r\n";
    }
  }
  s.resize(size);
  return Bytes(s.begin(), s.end());
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

// As the backup builds packs: one writer, its buffer handed back after each pack
// (agent/backup.cpp), so this times the copies, not fresh pages.
static void BM_PackBuild16MiB(benchmark::State& state) {
  std::string blob = mail_like(10 << 10);
  PackWriter w(PackKind::kData, (16u << 20) + (1u << 20));
  Bytes recycled;
  for (auto _ : state) {
    Hash id{};
    while (w.size() < (16u << 20)) {
      id[0]++;
      w.add(BlobType::kBody, id, blob.data(), blob.size());
    }
    recycled = w.finish(std::move(recycled));
    benchmark::DoNotOptimize(recycled.data());
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

// The base64 filter of data packs (FORMAT.md §5.1) on a 16 MiB MIME-shaped pack;
// the copy of the pack into the buffer it rewrites is outside the timing.
static void BM_PackFilter16MiB(benchmark::State& state) {
  const Bytes pack = mime_pack(16 << 20);
  Bytes work, scratch;
  std::size_t out = 0;
  for (auto _ : state) {
    state.PauseTiming();
    work = pack;
    state.ResumeTiming();
    filter_pack(work, scratch);
    out = work.size();
  }
  state.SetBytesProcessed(state.iterations() * (16 << 20));
  state.counters["filtered"] = double(out) / double(pack.size());
}
BENCHMARK(BM_PackFilter16MiB)->Unit(benchmark::kMillisecond);

static void BM_PackUnfilter16MiB(benchmark::State& state) {
  Bytes filtered = mime_pack(16 << 20), scratch;
  filter_pack(filtered, scratch);
  for (auto _ : state) benchmark::DoNotOptimize(unfilter_pack(filtered));
  state.SetBytesProcessed(state.iterations() * (16 << 20));
}
BENCHMARK(BM_PackUnfilter16MiB)->Unit(benchmark::kMillisecond);

// zstd-3 of the same pack as it is (0) and filtered (1): the time and ratio that
// the filter changes.
static void BM_ZstdMimePack16MiB(benchmark::State& state) {
  Bytes in = mime_pack(16 << 20), scratch;
  if (state.range(0)) filter_pack(in, scratch);
  std::size_t out = 0;
  for (auto _ : state) out = zstd_compress_view(in, 3).size();
  state.SetBytesProcessed(state.iterations() * (16 << 20));
  state.counters["stored"] = double(out) / double(16 << 20);
}
BENCHMARK(BM_ZstdMimePack16MiB)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

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

// The same encrypt+sign of a 16 MiB pack by a gpg started directly, reading and
// writing shared memory (vault/direct_gpg.hpp: how PackSealer seals): the anchor
// is BM_GpgmePack16MiB/0, run beside it. The copy into the shared memory stands
// for zstd writing its frame there and is timed too.
static void BM_DirectGpgPack16MiB(benchmark::State& state) {
  static reduit::test::GpgHome home;
  static std::string fpr = home.generate_key("Bench <bench@example.test>");
  Crypto crypto(home.path());
  const SealKeys keys = crypto.seal_keys({fpr}, fpr);
  std::unique_ptr<DirectGpg> gpg = DirectGpg::start();
  std::string s = mail_like(16 << 20);
  Bytes sealed;
  for (auto _ : state) {
    std::memcpy(gpg->input(s.size()).data(), s.data(), s.size());
    sealed = gpg->encrypt_sign(s.size(), keys, std::move(sealed));
  }
  state.SetBytesProcessed(state.iterations() * (16 << 20));
  state.SetLabel("encrypt+sign");
}
BENCHMARK(BM_DirectGpgPack16MiB)->Unit(benchmark::kMillisecond)->Iterations(5);

// A folder of n messages, and the same folder after a night: every tenth message
// flagged (renamed), one in a hundred new, two in a hundred deleted.
std::pair<Tree, Tree> folder_before_after(int n) {
  std::mt19937_64 rng(7);
  auto entry = [&](int i, const std::string& flags) {
    TreeEntry e;
    e.kind = EntryKind::kMessage;
    e.path = "cur/" + std::to_string(1700000000 + i) + ".M" + std::to_string(i) + "P1.mx,S=9000:2," + flags;
    e.mode = 0600;
    e.mtime_ns = 1700000000000000000 + i;
    e.size = 9000;
    for (auto& b : e.sha256) b = static_cast<std::uint8_t>(rng());
    Hash h, d;
    for (auto& b : h) b = static_cast<std::uint8_t>(rng());
    for (auto& b : d) b = static_cast<std::uint8_t>(rng());
    e.header = h;
    e.body = d;
    e.uid = e.gid = 5000;
    return e;
  };
  Tree before, after;
  for (int i = 0; i < n; ++i) {
    TreeEntry e = entry(i, "");
    before.entries.push_back(e);
    if (i % 50 == 1) continue;  // deleted
    if (i % 10 == 0) e.path += "S";
    after.entries.push_back(e);
  }
  for (int i = n; i < n + n / 100; ++i) after.entries.push_back(entry(i, ""));
  auto by_path = [](const TreeEntry& a, const TreeEntry& b) { return a.path < b.path; };
  std::sort(before.entries.begin(), before.entries.end(), by_path);
  std::sort(after.entries.begin(), after.entries.end(), by_path);
  return {before, after};
}

// The night's tree as a full tree: what a churn backup sent before tree patches.
static void BM_TreeEncodeFull(benchmark::State& state) {
  auto [before, after] = folder_before_after(static_cast<int>(state.range(0)));
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::string text = encode_tree(after);
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  }
  const std::string text = encode_tree(after);
  state.counters["plaintext_bytes"] = static_cast<double>(bytes);
  state.counters["zstd3_bytes"] =
      static_cast<double>(zstd_compress(Bytes(text.begin(), text.end()), 3).size());
}
BENCHMARK(BM_TreeEncodeFull)->Arg(10000)->Unit(benchmark::kMillisecond);

// The backup's work for a patch once the previous entries are read from the
// catalog: diff and encode (FORMAT.md §7.1).
static void BM_TreePatchMake(benchmark::State& state) {
  auto [before, after] = folder_before_after(static_cast<int>(state.range(0)));
  std::string patch;
  for (auto _ : state) {
    patch = encode_tree(make_tree_patch(before, Hash{}, after));
    benchmark::DoNotOptimize(patch);
  }
  state.counters["plaintext_bytes"] = static_cast<double>(patch.size());
  state.counters["zstd3_bytes"] =
      static_cast<double>(zstd_compress(Bytes(patch.begin(), patch.end()), 3).size());
}
BENCHMARK(BM_TreePatchMake)->Arg(10000)->Unit(benchmark::kMillisecond);

// A reader's work: decode the base and the patch (JSON) and apply it.
static void BM_TreePatchResolve(benchmark::State& state) {
  auto [before, after] = folder_before_after(static_cast<int>(state.range(0)));
  const Hash base_id = sha256("base"), patch_id = sha256("patch");
  const std::string b = encode_tree(before), p = encode_tree(make_tree_patch(before, base_id, after));
  std::map<Hash, Bytes> blobs{{base_id, Bytes(b.begin(), b.end())}, {patch_id, Bytes(p.begin(), p.end())}};
  for (auto _ : state) {
    Tree t = resolve_tree(patch_id, [&](const Hash& id) { return blobs.at(id); });
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_TreePatchResolve)->Arg(10000)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
