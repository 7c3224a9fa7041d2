// tests/bench/pack_compression — whole-pack vs per-blob zstd on real mail.
//
// Reads every file under the given directories, splits messages into header and
// body blobs exactly as the backup does, fills 16 MiB packs, and compares:
//   whole: one zstd frame per pack (what reduit stores)
//   blob:  one zstd frame per blob (the alternative: blob-level random access)
// Prints stored bytes, ratio and compression MB/s for zstd levels 1, 3 and 9.
// Usage: pack_compression DIR…   (e.g. ../shared/corpus/maildir)
#include <zstd.h>

#include "vault/format.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::vector<std::string> blobs;
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
      if (hl < m.size()) blobs.push_back(m.substr(hl));
      raw += m.size();
    }
  }
  std::printf("%zu blobs, %.1f MiB\n", blobs.size(), raw / 1048576.0);
  std::printf("%-6s %-6s %12s %8s %10s\n", "level", "mode", "stored", "ratio", "MB/s");
  for (int level : {1, 3, 9}) {
    for (int whole = 1; whole >= 0; --whole) {
      std::size_t stored = 0;
      auto t0 = std::chrono::steady_clock::now();
      std::string pack;
      std::vector<char> out;
      auto flush = [&] {
        if (pack.empty()) return;
        out.resize(ZSTD_compressBound(pack.size()));
        stored += ZSTD_compress(out.data(), out.size(), pack.data(), pack.size(), level);
        pack.clear();
      };
      for (const auto& b : blobs) {
        if (whole) {
          pack += b;
          if (pack.size() >= (16u << 20)) flush();
        } else {
          out.resize(ZSTD_compressBound(b.size()));
          stored += ZSTD_compress(out.data(), out.size(), b.data(), b.size(), level);
        }
      }
      flush();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%-6d %-6s %12zu %8.3f %10.0f\n", level, whole ? "whole" : "blob", stored,
                  double(raw) / double(stored), raw / 1e6 / s);
    }
  }
}
