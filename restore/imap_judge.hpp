// restore/imap_judge.hpp — Dovecot's doveadm as an independent judge of a restored
// Maildir mailbox: what an IMAP client would see (UIDs, flags, sizes) must be what
// the manifest says.
//
// doveadm reads the mailbox with its index in memory and the Maildir's own control
// files (dovecot-uidlist, dovecot-keywords), so UIDs come from what was restored
// (PLATFORM.md "Dovecot as the judge"). It refuses uid 0: as root the mailbox is
// handed to `nobody` (chown) and doveadm runs through runuser; so the mailbox must be
// scratch space that may change owner and gain Dovecot's control files afterwards.
// Folders must be Maildir++ (`.Name` below the root, "" = INBOX); mailbox names are
// the folder names without the leading dot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reduit {

struct JudgeFolder {
  std::string name;  // "" = INBOX, else ".Name" (Maildir++)
  struct Message {
    std::string path;  // relative to the folder: "cur/<name>" or "new/<name>"
    std::uint64_t size = 0;
  };
  std::vector<Message> messages;  // as the manifest lists them
};

struct JudgeResult {
  bool ran = false;
  std::string reason;                       // why it did not run ("" when it ran)
  std::uint64_t folders = 0, messages = 0;  // what doveadm listed
  std::vector<std::string> failures;        // one line per disagreement, naming the message
};

/// Judges the restored mailbox at `maildir` against `folders`: every manifest
/// message is listed by doveadm once, in its mailbox, with its size
/// (size.physical, bytes), its flags (the name's info: D F R S T as \Draft \Flagged
/// \Answered \Seen \Deleted, a–z as the folder's dovecot-keywords; \Recent ignored)
/// and, when the folder's dovecot-uidlist names it, that UID; doveadm lists nothing
/// else. Does not run (ran = false, with the reason) when `doveadm_path` is empty,
/// a folder is not Maildir++, or as root without user `nobody`. A doveadm that fails
/// to run is a failure (its stderr's last line).
JudgeResult judge_with_doveadm(const std::string& doveadm_path, const std::string& maildir,
                               const std::vector<JudgeFolder>& folders);

/// The absolute path of `doveadm` on $PATH, or "" when absent.
std::string find_doveadm();

}  // namespace reduit
