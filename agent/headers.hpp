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
