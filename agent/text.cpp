#include "agent/text.hpp"

#include <cstdio>
#include <ctime>

namespace reduit {

std::string human_bytes(std::uint64_t b) {
  char buf[64];
  if (b >= (1ull << 30))
    snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ull << 30));
  else if (b >= (1ull << 20))
    snprintf(buf, sizeof buf, "%.1f MiB", b / double(1ull << 20));
  else if (b >= 1024)
    snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else
    snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

std::string iso_time(std::int64_t ns) {
  time_t t = static_cast<time_t>(ns / 1000000000);
  tm tmv;
  gmtime_r(&t, &tmv);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  return buf;
}

}  // namespace reduit
