#include "vault/clock.hpp"

#include <cstdlib>
#include <ctime>

#include "vault/error.hpp"
#include "vault/repository.hpp"

namespace reduit {

namespace {
// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}
}  // namespace

std::optional<std::int64_t> parse_instant(const std::string& t) {
  if (t.empty()) return std::nullopt;
  if (t.find_first_not_of("0123456789") == std::string::npos) {
    if (t.size() > 12) return std::nullopt;
    return std::stoll(t) * 1000000000;
  }
  int y, mo, d, h, mi, s, n = 0;
  if (std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 || n != 19)
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return std::nullopt;
  std::size_t i = 19;
  std::int64_t frac = 0;
  if (i < t.size() && t[i] == '.') {
    std::int64_t scale = 100000000;
    ++i;
    std::size_t digits = 0;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
      frac += (t[i] - '0') * scale;
      scale /= 10;
      ++i;
      ++digits;
    }
    if (digits == 0 || digits > 9) return std::nullopt;
  }
  std::int64_t offset = 0;
  if (i < t.size() && (t[i] == 'Z' || t[i] == 'z') && i + 1 == t.size()) {
    offset = 0;
  } else if (i + 6 == t.size() && (t[i] == '+' || t[i] == '-') && t[i + 3] == ':') {
    int oh = std::atoi(t.substr(i + 1, 2).c_str()), om = std::atoi(t.substr(i + 4, 2).c_str());
    offset = (oh * 3600 + om * 60) * (t[i] == '-' ? -1 : 1);
  } else {
    return std::nullopt;
  }
  std::int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset;
  return secs * 1000000000 + frac;
}

std::int64_t clock_now_ns() {
  const char* v = std::getenv("REDUIT_NOW");
  if (!v || !*v) return now_ns();
  auto t = parse_instant(v);
  if (!t) {
    throw Error(ErrorCode::kUsage,
                std::string("REDUIT_NOW='") + v +
                    "' is not an RFC 3339 instant (2026-03-29T01:30:00Z) or epoch seconds");
  }
  return *t;
}

}  // namespace reduit
