// agent/headers.hpp — the catalog's per-message header summary.
//
// Extracts Message-ID, Date, From, To and Subject from a message's header block
// (RFC 5322 §2.2: unfolds continuation lines, first occurrence wins) and decodes
// RFC 2047 encoded-words and raw 8-bit bytes to UTF-8 with GMime. Never throws on
// malformed mail: a field that is missing or undecodable is returned empty or as
// found.
#pragma once

#include <string>
#include <string_view>

namespace reduit {

struct HeaderSummary {
  std::string message_id, date, from, to, subject;
};

HeaderSummary summarize_headers(std::string_view header_block);

}  // namespace reduit

#include <cstdint>
#include <optional>

namespace reduit {

/// Seconds since the epoch of an RFC 5322 §3.3 date ("Tue, 1 Oct 2026 12:00:00
/// +0200"; obsolete forms too, via GMime); nullopt when it cannot be read.
std::optional<std::int64_t> header_date_seconds(const std::string& date);

}  // namespace reduit
