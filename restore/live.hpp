// restore/live.hpp — restore into a live mailbox under a new Maildir++ folder,
// touching nothing else (MAILDIR.md; Dovecot's "Maildir Mailbox Format").
//
// The selection (a mailbox, a folder and its subfolders, or chosen messages) goes
// into a new folder `.Restored-YYYY-MM-DD` (or `.NAME`) of the live mailbox; each
// restored folder F becomes `.Restored-…` (the root, INBOX) or `.Restored-….F`.
// What a live mailbox needs and a plain restore does not:
//   - fresh unique names (Maildir spec delivery names), so Dovecot never sees a
//     name it listed before as expunged, and no stale mbsync `,U=`; the `,S=`/`,W=`
//     sizes and the info flags are kept (the bytes are the same);
//   - keyword letters remapped by name: letter n means line n of the folder's
//     dovecot-keywords, so each letter is translated through the source folder's
//     keyword list into the new folder's (names missing there are added; 26 at
//     most, more are dropped with a warning);
//   - no dovecot-uidlist and no index files: Dovecot gives the new messages new
//     UIDs; no existing message, UID or folder changes;
//   - `maildirfolder` in each new folder; files and directories owned like the
//     mailbox root (when run as root), messages keep their mode and mtime
//     (INTERNALDATE);
//   - the new folders subscribed when the mailbox keeps a `subscriptions` file,
//     written under Dovecot's dot-lock (`subscriptions.lock`, then rename);
//   - `doveadm force-resync` of the new folders and `doveadm quota recalc`, when a
//     doveadm command is given and found; their failures are warnings.
// The folders are assembled in the mailbox's tmp/ and renamed into place (never
// over an existing name), so Dovecot sees each complete or not at all; a failed
// restore removes what it made.
// Errors: kSource (live mailbox missing or not a Maildir), kUsage (bad or taken
// folder name), kNotFound, kVerify, kKey, kIo.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "restore/select.hpp"

namespace reduit {

struct LiveRestoreRequest {
  SelectRequest select;
  std::string live_dir;     // "" = the snapshot's <source>/<path> of the mailbox
  std::string folder_name;  // "" = "Restored-<local date>" (then -2, -3… when taken)
  /// The doveadm command line, e.g. {"doveadm", "%c", "-u", "%u"}: "%c" is replaced by
  /// the doveadm command ("force-resync", "quota recalc"; appended when absent), "%u"
  /// by the mailbox name; the command's arguments follow. Empty = do not run doveadm.
  std::vector<std::string> doveadm;
  bool progress = false;
};

struct LiveRestoreStats {
  std::string snapshot_id, mailbox, live_dir;
  std::string folder;                        // directory name, e.g. ".Restored-2026-10-01"
  std::string imap_name;                     // e.g. "Restored-2026-10-01"
  std::vector<std::string> folders_created;  // directory names
  std::uint64_t messages = 0, bytes = 0;
  std::uint64_t packs_fetched = 0, bytes_fetched = 0;
  bool subscribed = false;
  std::vector<std::string> doveadm_ran;  // commands that succeeded
  std::string doveadm_note;              // e.g. "doveadm not found"
  double seconds = 0;
  std::vector<std::string> warnings;
};

LiveRestoreStats restore_into_live(Repository& repo, const LiveRestoreRequest& req);

/// Checks a --folder-name: one Maildir++ level (no '.', '/', control characters),
/// 1–200 bytes, not INBOX; a leading '.' is dropped. Throws kUsage.
std::string check_folder_name(const std::string& name);

}  // namespace reduit
