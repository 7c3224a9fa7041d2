// retention/archive_restore.hpp — `reduit restore --archive`: every message of a
// mailbox that the vault still retains, whether a kept snapshot or the archive
// holds it (the message-level view an auditor or a user asks for: "everything
// alice had in 2024", also mail deleted from the mailbox long ago).
//
// Messages are gathered from the archive records and from every snapshot's trees,
// one copy per (folder, unique name, SHA-256) — the name (flags) of the newest
// sighting — and written as Maildir under DEST/<folder>/{cur,new}/ with their
// mtimes. Each file is checked against its SHA-256. Needs an archive secret key.
// Errors: kUsage (DEST not empty), kNotFound (no such mailbox anywhere), kVerify, kKey.
#pragma once

#include <cstdint>
#include <string>

#include "vault/repository.hpp"

namespace reduit {

struct ArchiveRestoreStats {
  std::uint64_t messages = 0, from_archive_only = 0, bytes = 0, folders = 0, packs_fetched = 0;
};

/// `folder` "" = every folder; else that folder and its subfolders. `from_ns`/`to_ns`
/// (0 = open) select by the message's mtime (IMAP INTERNALDATE).
ArchiveRestoreStats restore_archive(Repository& repo, const std::string& mailbox, const std::string& folder,
                                    std::int64_t from_ns, std::int64_t to_ns, const std::string& dest);

}  // namespace reduit
