// restore/export.hpp — messages of a snapshot as mbox (mboxrd) or as .eml files.
//
// mbox follows RFC 4155 in its mboxrd form: each message is preceded by a From_
// line `From <envelope sender> <asctime UTC of the message's INTERNALDATE>` (the
// sender is the Return-Path address; `<>` or none gives MAILER-DAEMON), every line
// of the message matching `^>*From ` gets one more '>', and an empty line follows
// the message. Readers undo the quoting by removing one '>' from lines matching
// `^>+From `; the message bytes then come back exactly, provided the message ends
// with a newline (mbox cannot represent one that does not: a newline is added and
// a warning names the count). The eml format writes each message's bytes as they
// are, one file each, with the message's INTERNALDATE as mtime.
//
// Layout at `dest`: with `one_folder` (that folder only, no subfolders) mbox
// is one file and eml one flat directory; without, `dest` is a directory with one
// `<folder>.mbox` file (or `<folder>/` directory of .eml files) per folder, named
// by the IMAP name ("INBOX", "Archive.2023"). File names are made safe (letters,
// digits and `.,_=+-@` kept, anything else `_`; never a leading '.'), created
// exclusively below `dest` and never followed through symlinks, so nothing is
// written outside `dest`. `dest` must not exist (mbox file) or be absent or empty
// (directories); a failed export removes what it wrote.
// Errors: kUsage (destination exists / not empty), kNotFound, kVerify, kKey, kIo.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "restore/select.hpp"

namespace reduit {

enum class ExportFormat { kMbox, kEml };

struct ExportRequest {
  SelectRequest select;     // select.subfolders is ignored
  bool one_folder = false;  // exactly select.folder ("" = the root): the flat layout
  ExportFormat format = ExportFormat::kMbox;
  std::string dest;
  bool progress = false;
};

struct ExportStats {
  std::string snapshot_id, mailbox;
  std::vector<std::string> files;  // written, relative to dest ("" = dest itself)
  std::uint64_t messages = 0, bytes = 0;
  std::uint64_t packs_fetched = 0, bytes_fetched = 0;
  double seconds = 0;
  std::vector<std::string> warnings;
};

ExportStats export_messages(Repository& repo, const ExportRequest& req);

/// The mboxrd record of one message (From_ line, quoted message, empty line).
/// `mtime_ns` is the INTERNALDATE; `added_newline` is set when the message did not
/// end with '\n'.
std::string mboxrd_record(std::string_view message, std::int64_t mtime_ns, bool* added_newline);

/// The envelope sender for a From_ line: the Return-Path address, else
/// "MAILER-DAEMON" (also for `<>` and for values holding white space).
std::string envelope_sender(std::string_view header_block);

/// A file name safe in any directory: see the header comment. Never empty.
std::string safe_file_name(std::string_view name);

/// The IMAP-style name of a folder: "" → "INBOX", ".Archive.2023" → "Archive.2023",
/// "Archive/2023" → "Archive.2023".
std::string folder_display_name(const std::string& folder);

}  // namespace reduit
