// tests/bench/pack_compression — how reduit's packs compress, against the alternatives.
//
// Reads every file under the given directories, splits messages into header and
// body blobs exactly as the backup does, fills 16 MiB packs, and compares:
//   reduit: what reduit stores: PackWriter's layout (header blobs together after
//           the others), the base64 filter (vault/pack_filter.hpp, FORMAT.md §5.1)
//           and vault/compress.cpp's frame (window = the pack)
//   grouped: the same without the filter (what reduit stored from 2026-11-30's
//           stop 15 to 2026-12-01's stop 18)
//   whole:  one frame per pack, blobs in the order added, zstd's default window
//           for the level (what reduit stored before stop 15)
//   blob:   one frame per blob (the alternative: blob-level random access)
// Both pack modes carry the same entry table (pseudo-random 32-byte ids, as keyed
// blob ids are); per-blob frames carry none.
// Prints stored bytes, ratio and compression MB/s for zstd levels 1, 3 and 9.
// Usage: pack_compression DIR…   (e.g. ../shared/corpus/maildir)
#include <zstd.h>

#include "vault/compress.hpp"
#include "vault/format.hpp"
#include "vault/pack_filter.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<std::string> blobs;
  std::vector<bool> is_header;
  std::size_t raw = 0;
  for (int i = 1; i < argc; ++i) {
    for (const auto& e : fs::recursive_directory_iterator(argv[i])) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      std::string m = ss.str();
      std::size_t hl = reduit::header_block_length(m);
      blobs.push_back(m.substr(0, hl));
      is_header.push_back(true);
      if (hl < m.size()) {
        blobs.push_back(m.substr(hl));
        is_header.push_back(false);
      }
      raw += m.size();
    }
  }
  std::vector<reduit::Hash> ids(blobs.size());
  std::mt19937_64 rng(1);
  for (auto& id : ids) {
    for (auto& byte : id) byte = static_cast<std::uint8_t>(rng());
  }
  std::printf("%zu blobs, %.1f MiB\n", blobs.size(), raw / 1048576.0);
  std::printf("%-6s %-8s %12s %8s %10s\n", "level", "mode", "stored", "ratio", "MB/s");
  for (int level : {1, 3, 9}) {
    for (const char* mode : {"reduit", "grouped", "whole", "blob"}) {
      std::size_t stored = 0;
      auto t0 = std::chrono::steady_clock::now();
      if (std::string(mode) == "reduit" || std::string(mode) == "grouped") {
        const bool filtered = std::string(mode) == "reduit";
        reduit::PackWriter w(reduit::PackKind::kData, (16u << 20) + (1u << 20));
        reduit::Bytes scratch;
        auto flush = [&] {
          if (w.empty()) return;
          reduit::Bytes pack = w.finish();
          if (filtered) reduit::filter_pack(pack, scratch);
          stored += reduit::zstd_compress_view(pack, level).size();
        };
        for (std::size_t i = 0; i < blobs.size(); ++i) {
          w.add(is_header[i] ? reduit::BlobType::kHeader : reduit::BlobType::kBody, ids[i], blobs[i].data(),
                blobs[i].size());
          if (w.size() >= (16u << 20)) flush();
        }
        flush();
      } else {
        bool whole = std::string(mode) == "whole";
        std::string pack, table;  // the former layout: magic, blobs in order, table, count, magic
        std::uint64_t count = 0;
        std::vector<char> out;
        auto put_u64 = [](std::string& to, std::uint64_t v) {
          for (int k = 0; k < 8; ++k) to.push_back(static_cast<char>(v >> (8 * k)));
        };
        auto flush = [&] {
          if (pack.empty()) return;
          pack += table;
          put_u64(pack, count);
          pack += "RDPACK01";
          out.resize(ZSTD_compressBound(pack.size()));
          stored += ZSTD_compress(out.data(), out.size(), pack.data(), pack.size(), level);
          pack.clear();
          table.clear();
          count = 0;
        };
        for (std::size_t i = 0; i < blobs.size(); ++i) {
          const std::string& b = blobs[i];
          if (whole) {
            if (pack.empty()) pack = "RDPACK01";
            table.push_back(static_cast<char>(is_header[i] ? 1 : 2));
            table.append(reinterpret_cast<const char*>(ids[i].data()), 32);
            put_u64(table, pack.size());
            put_u64(table, b.size());
            ++count;
            pack += b;
            if (pack.size() >= (16u << 20)) flush();
          } else {
            out.resize(ZSTD_compressBound(b.size()));
            stored += ZSTD_compress(out.data(), out.size(), b.data(), b.size(), level);
          }
        }
        flush();
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%-6d %-8s %12zu %8.3f %10.0f\n", level, mode, stored, double(raw) / double(stored),
                  raw / 1e6 / s);
    }
  }
}
