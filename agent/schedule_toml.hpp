// agent/schedule_toml.hpp — parsing of the [schedule] and [alerts] tables, for
// agent/config.cpp only (keeps toml++ out of the widely included headers).
#pragma once

#include <toml++/toml.h>

#include "agent/schedule.hpp"

namespace reduit {

/// Parses the [schedule] table; `origin` names the file in "FILE:LINE: message"
/// errors (Error(kUsage)).
ScheduleConfig parse_schedule_section(const std::string& origin, const toml::table& t);
/// Parses the [alerts] table (same error contract).
AlertConfig parse_alerts_section(const std::string& origin, const toml::table& t);

}  // namespace reduit
