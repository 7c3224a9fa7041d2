// vault/clock.hpp — the clock seam: what "now" is for snapshot times and retention.
//
// Production reads CLOCK_REALTIME. Tests and simulations set REDUIT_NOW to an RFC
// 3339 UTC instant ("2026-03-29T01:30:00Z", fraction allowed) or to seconds since
// the epoch ("1774747800"); every snapshot time, retention window and deletion
// record then uses that instant. Leases and racy-timestamp checks keep using the
// real clock (now_ns() in vault/repository.hpp): they guard against real processes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace reduit {

/// Nanoseconds since the epoch (UTC): REDUIT_NOW when set, else the real clock.
/// Throws Error(kUsage) when REDUIT_NOW is set but malformed.
std::int64_t clock_now_ns();

/// Parses "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)" (RFC 3339 §5.6) or plain
/// seconds since the epoch; nullopt when malformed.
std::optional<std::int64_t> parse_instant(const std::string& text);

}  // namespace reduit
