// agent/pick.hpp — choosing single messages for restore and export: by Message-ID
// (through the catalog's header summaries) or by Maildir unique name.
#pragma once

#include <cstdio>
#include <functional>
#include <string>

#include "agent/config.hpp"
#include "restore/select.hpp"
#include "vault/error.hpp"
#include "vault/format.hpp"

namespace reduit {

struct MessagePick {
  std::function<bool(const std::string& folder, const TreeEntry&)> pred;  // empty = every message
  std::string what;  // "Message-ID <x@y>" (for error messages)
  /// Set when the catalog chose the messages by Message-ID and a mailbox is named:
  /// picks them again from the headers of that mailbox in the vault (kNotFound when
  /// none carries it), for a catalog that knows the Message-ID only from other copies.
  std::function<MessagePick()> from_vault;
  /// Set with `from_vault`: true when the catalog does not name exactly the vault's
  /// index objects (it is behind the vault: restored from a copy, or another host's
  /// backups) or cannot be read. A current catalog has seen every backup: a copy it
  /// does not know is not in the vault. One listing of index/ and one catalog query.
  std::function<bool()> catalog_behind_vault;
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

/// Runs `act(pick)`; when it finds none of the picked messages (kNotFound) and the
/// catalog chose them while behind the vault (`pick.catalog_behind_vault`), picks
/// again from the vault's headers (a note on stderr unless `quiet`) and runs
/// `act` once more; a current catalog's kNotFound stands. `act` must throw
/// kNotFound before writing anything (restore, export and live restore check the
/// selection first).
template <class Act>
auto run_with_pick(MessagePick& pick, bool quiet, Act&& act) -> decltype(act(pick)) {
  try {
    return act(pick);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNotFound || !pick.from_vault || !pick.catalog_behind_vault()) throw;
    if (!quiet) {
      std::fprintf(stderr,
                   "reduit: note: the catalog knows %s only from other copies (another mailbox or "
                   "snapshot): read the headers of the mailbox from the vault\n",
                   pick.what.c_str());
    }
    pick = pick.from_vault();
    return act(pick);
  }
}

}  // namespace reduit
