// agent/pick.hpp — choosing single messages for restore and export: by Message-ID
// (through the catalog's header summaries) or by Maildir unique name.
#pragma once

#include <functional>
#include <string>

#include "agent/config.hpp"
#include "restore/select.hpp"
#include "vault/format.hpp"

namespace reduit {

struct MessagePick {
  std::function<bool(const std::string& folder, const TreeEntry&)> pred;  // empty = every message
  std::string what;  // "Message-ID <x@y>" (for error messages)
};

/// `unique_name` matches the part of a file name before its info (":2,…"), or the
/// whole file name. `message_id` (with or without <>) is looked up in the catalog
/// of `cfg`: the messages whose header summary carries it match, by SHA-256. When
/// the catalog does not know it (a host that never backed this mailbox up, a
/// rebuilt catalog) and `repo` is given, the header of every message of `where`
/// (snapshot, mailbox, folder) is read from the vault instead — which fetches the
/// mailbox's data packs and needs an archive key — and `note` says so.
/// Throws kUsage when both are given, kNotFound when no message carries the
/// Message-ID.
MessagePick pick_messages(const Config& cfg, const std::string& message_id, const std::string& unique_name,
                          Repository* repo = nullptr, const SelectRequest* where = nullptr,
                          std::string* note = nullptr);

}  // namespace reduit
