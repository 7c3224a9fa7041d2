// agent/mbox.hpp — mbox sources and the files that change in place.
//
// An mbox source is a [[source]] with layout = "mbox": its root is one mbox file
// (e.g. /var/mail/alice) or a directory of them (e.g. /var/mail). It becomes one
// pseudo-mailbox named after the root's last component, with one folder ("") whose
// tree holds every mbox file as a `file` entry (FORMAT.md §7): regular files
// directly in the directory, except dot-files and `*.lock` (mbox lock files,
// mbox(5)); a single-file root holds just that file. Restoring the pseudo-mailbox
// writes the files into the target directory under their own names.
//
// Files that change in place — Dovecot's dovecot-uidlist, dovecot-keywords,
// dovecot.index*, dovecot.list.index*, subscriptions, maildirsize (Dovecot
// "Maildir Mailbox Format"; MAILDIR.md) and every file of an mbox source — are
// stored as librsync deltas (vault/delta.hpp). Messages never are: they are
// immutable.
#pragma once

#include <string>

#include "agent/scan.hpp"

namespace reduit {

inline constexpr const char* kMboxLayout = "mbox";

/// The pseudo-mailbox of an mbox source. Throws Error(kSource) when `root` is
/// neither a regular file nor a readable directory.
MailboxSpec discover_mbox(const std::string& root);

/// The mbox files of the pseudo-mailbox `m` of source `root`, as kFile entries of
/// folder "" (keyed by their names); symlinks and special files go to `skipped`.
/// Throws Error(kSource) when the directory cannot be read.
ScannedFolder scan_mbox(const MailboxSpec& m, const std::string& root);

/// True for the Dovecot control and index files that change in place, by the last
/// component of `path` (a path relative to a Maildir folder).
bool is_changing_file(const std::string& path);

}  // namespace reduit
