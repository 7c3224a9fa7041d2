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
#include <optional>
#include <string>
#include <vector>

#include "vault/format.hpp"

namespace reduit {

struct MailboxSpec {
  std::string name;            // "alice@example.ch" or the relative path
  std::string source;          // configured root
  std::string rel;             // relative to the root ("" when the root is the mailbox)
  std::string abs;             // absolute directory
  bool dovecot_index = false;  // back up Dovecot's index files (dovecot.index*) with each folder
};

/// Dovecot index file names ("dovecot.index", ".log", ".log.2", ".cache",
/// "dovecot.list.index*"): caches Dovecot rebuilds (MAILDIR.md), optional in a backup.
bool is_dovecot_index(const std::string& file_name);

/// Layout template segments: a literal name, %d (domain), %n (local part), %u (a
/// whole user name), * (any directory). "." = the root itself is one mailbox.
/// Throws Error(kSource) when the root is missing or not a directory, or when it
/// holds no Maildir at all (with what was expected).
std::vector<MailboxSpec> discover_mailboxes(const std::string& root, const std::string& layout);

/// Several templates at once (a layout profile): the union of their mailboxes; a
/// mailbox matched at two depths (%d/%n and %d/%n/Maildir) is the deeper directory.
/// Segments may mix literals, '*' and placeholders ("vmail*", "%n-*"). Two
/// directories with one address: the last in path order keeps it, the others are
/// named "<address>#<relative path>". `profile` = "iredmail" also requires the
/// three hash directories to be the local part's first letters.
std::vector<MailboxSpec> discover_mailboxes(const std::string& root, const std::vector<std::string>& layouts,
                                            const std::string& profile = "");

/// The templates of a named layout profile (MAILDIR.md, "Where mail lives"):
///   postfix-dovecot    %d/%n/Maildir, %d/%n
///   iredmail           vmail*/%d/<c1>/<c2>/<c3>/%n-<timestamp>/Maildir (root /var/vmail or vmail1)
///   mailinabox         mail/mailboxes/%d/%n (root /home/user-data, or the mailboxes dir)
///   mailcow            %d/%n/Maildir (root /var/vmail; the index volume is not mail)
///   docker-mailserver  %d/%n (root /var/mail)
/// Throws Error(kUsage) naming the known profiles for any other name.
std::vector<std::string> layout_profile(const std::string& profile);
const std::vector<std::string>& layout_profile_names();

/// The unique name of a Maildir file name: the part before ':' (or before "!2,"/
/// "!1," on colon-hostile file systems); the whole name when it has no info.
std::string maildir_unique_name(const std::string& file_name);

/// A Maildir file name taken apart (MAILDIR.md, "Names and delivery"). Names are
/// stored verbatim; this is for reading them, never for rewriting a stored name.
struct MaildirName {
  std::string unique;                  // before the info separator (the stat-cache key)
  char separator = 0;                  // ':' (standard), '!' or ';' (colon-hostile), 0 = no info
  std::string info;                    // after the separator, e.g. "2,FRSab"
  std::string flags;                   // the "2," info's standard flags (upper case, as written)
  std::string keywords;                // the "2," info's Dovecot keyword letters a–z
  std::optional<std::uint64_t> size;   // ",S=<physical size>" (Dovecot)
  std::optional<std::uint64_t> vsize;  // ",W=<size with CRLF line ends>" (Dovecot)
  std::optional<std::uint64_t> uid;    // ",U=<uid>" (mbsync)
};
MaildirName parse_maildir_name(const std::string& file_name);

struct ScannedEntry {
  EntryKind kind = EntryKind::kFile;
  std::string path;  // relative to the folder, e.g. "cur/123.M1P2.host,S=9:2,S"
  std::string key;   // cache key: unique name for messages, path otherwise
  std::uint64_t dev = 0, ino = 0, size = 0, nlink = 1;
  std::int64_t mtime_ns = 0, ctime_ns = 0;
  std::uint32_t mode = 0, uid = 0, gid = 0;
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
/// `with_index` = false leaves Dovecot's index files (is_dovecot_index) out.
ScannedFolder scan_folder(const std::string& mailbox_abs, const std::string& folder,
                          const std::vector<std::string>& folders, bool with_messages = true,
                          bool with_index = true);

/// The stat stamp of a Maildir folder's own directory and its cur/, new/ and tmp/
/// ("mtime_ns:ctime_ns:ino;" each). Any rename, delivery or deletion of a message
/// changes it. Empty when a directory is missing, or when a timestamp is within
/// `racy_ns` of `now_ns` (a change in the same clock tick could then go unseen).
std::string folder_stamp(const std::string& folder_abs, std::int64_t now_ns, std::int64_t racy_ns);

/// Finds the current path (relative to the folder) of the message with unique name
/// `uname` in cur/ or new/, or "" when it is gone. Used when a listed file vanished.
std::string resolve_message(const std::string& folder_abs, const std::string& uname);

}  // namespace reduit
