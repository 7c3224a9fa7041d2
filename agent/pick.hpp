// agent/pick.hpp — choosing single messages for restore and export: by Message-ID
// (through the catalog's header summaries) or by Maildir unique name.
#pragma once

#include <functional>
#include <string>

#include "agent/config.hpp"
#include "vault/format.hpp"

namespace reduit {

struct MessagePick {
  std::function<bool(const std::string& folder, const TreeEntry&)> pred;  // empty = every message
  std::string what;  // "Message-ID <x@y>" (for error messages)
};

/// `unique_name` matches the part of a file name before its info (":2,…"), or the
/// whole file name. `message_id` (with or without <>) is looked up in the catalog
/// of `cfg`: the messages whose header summary carries it match, by SHA-256.
/// Throws kUsage when both are given, kNotFound when the catalog records no
/// message with that Message-ID (it knows messages backed up from this host).
MessagePick pick_messages(const Config& cfg, const std::string& message_id, const std::string& unique_name);

}  // namespace reduit
