// agent/scan.hpp — mailbox discovery and the Maildir folder scan.
//
// Discovery walks a configured root with a layout template ("%d/%n",
// "%d/%n/Maildir", "*", "." …) and names each mailbox ("alice@example.ch" from %n
// and %d, else its relative path). A mailbox is a directory holding at least one
// Maildir folder (a directory with cur/ and new/; Maildir spec, Maildir++ and
// Dovecot's LAYOUT=fs nesting alike).
//
// The scan of one folder returns every regular file below it (except in tmp/, the
// in-progress deliveries, and in sub-directories that are folders themselves) with
// its stat. Files directly in cur/ and new/ not starting with '.' are messages,
// keyed by their unique name (the part before the ":2,"/"!2," info; MAILDIR.md).
// Maildir churn is normal: a directory whose mtime changed while it was listed is
// listed again and the listings merged; a file that vanished between listing and
// stat is looked up again by its unique name; two names for one inode (a rename in
// flight) are reported once. So a message that exists throughout a scan and is
// renamed at most once meanwhile is reported exactly once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vault/format.hpp"

namespace reduit {

struct MailboxSpec {
  std::string name;    // "alice@example.ch" or the relative path
  std::string source;  // configured root
  std::string rel;     // relative to the root ("" when the root is the mailbox)
  std::string abs;     // absolute directory
};

/// Layout template segments: a literal name, %d (domain), %n (local part), %u (a
/// whole user name), * (any directory). "." = the root itself is one mailbox.
/// Throws Error(kSource) when the root is missing or not a directory, or when it
/// holds no Maildir at all (with what was expected).
std::vector<MailboxSpec> discover_mailboxes(const std::string& root, const std::string& layout);

/// The unique name of a Maildir file name: the part before ':' (or before "!2,"/
/// "!1," on colon-hostile file systems); the whole name when it has no info.
std::string maildir_unique_name(const std::string& file_name);

struct ScannedEntry {
  EntryKind kind = EntryKind::kFile;
  std::string path;  // relative to the folder, e.g. "cur/123.M1P2.host,S=9:2,S"
  std::string key;   // cache key: unique name for messages, path otherwise
  std::uint64_t dev = 0, ino = 0, size = 0;
  std::int64_t mtime_ns = 0, ctime_ns = 0;
  std::uint32_t mode = 0;
};

struct ScannedFolder {
  std::string name;  // relative to the mailbox ("" = root)
  std::string abs;
  std::vector<ScannedEntry> entries;  // sorted by path
  std::vector<std::string> skipped;   // symlinks, sockets… (not backed up), relative paths
};

/// All folder names of a mailbox ("" first, then sorted).
std::vector<std::string> find_folders(const std::string& mailbox_abs);

/// Scans one folder; `folders` is the result of find_folders (their directories are
/// not descended into). Throws Error(kSource) when the folder cannot be read.
/// `with_messages` = false lists everything but the contents of cur/ and new/ (the
/// backup's fast path for a folder whose message directories did not change).
ScannedFolder scan_folder(const std::string& mailbox_abs, const std::string& folder,
                          const std::vector<std::string>& folders, bool with_messages = true);

/// The stat stamp of a Maildir folder's own directory and its cur/, new/ and tmp/
/// ("mtime_ns:ctime_ns:ino;" each). Any rename, delivery or deletion of a message
/// changes it. Empty when a directory is missing, or when a timestamp is within
/// `racy_ns` of `now_ns` (a change in the same clock tick could then go unseen).
std::string folder_stamp(const std::string& folder_abs, std::int64_t now_ns, std::int64_t racy_ns);

/// Finds the current path (relative to the folder) of the message with unique name
/// `uname` in cur/ or new/, or "" when it is gone. Used when a listed file vanished.
std::string resolve_message(const std::string& folder_abs, const std::string& uname);

}  // namespace reduit
