// agent/text.hpp — how sizes and times are shown to people.
#pragma once

#include <cstdint>
#include <string>

namespace reduit {

/// "1.5 MiB"-style binary sizes ("512 B", "3.0 KiB", "1.5 MiB", "2.00 GiB").
std::string human_bytes(std::uint64_t bytes);
/// UTC ISO 8601 ("2026-11-30T05:00:00Z") from nanoseconds since the epoch.
std::string iso_time(std::int64_t ns);

}  // namespace reduit
