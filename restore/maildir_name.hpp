// restore/maildir_name.hpp — reading and writing Maildir file names for restores
// into a live mailbox (MAILDIR.md "Names and delivery").
//
// A name is `<unique>[<sep>2,<info>]`: the unique part holds no ':' and does not
// start with '.'; <sep> is ':' (Maildir spec), or '!' / ';' on colon-hostile file
// systems; <info> is the flags in ASCII order — upper case D F P R S T system
// flags, lower case a–z Dovecot keywords (letter n = line n of the folder's
// dovecot-keywords). The unique part may carry extensions after commas: Dovecot's
// `,S=<bytes>` and `,W=<bytes with CRLF>`, mbsync's `,U=<uid>`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace reduit {

struct MaildirName {
  std::string unique;  // everything before the separator, extensions included
  bool has_info = false;
  std::string info;                          // the flags after "2," (empty when none)
  std::optional<std::uint64_t> size, vsize;  // ,S= and ,W= when present and numeric
};

/// Splits a file name (no directory). The info is recognised after ":2,", and
/// after "!2," or ";2," when the name holds no ':'.
MaildirName parse_maildir_name(std::string_view name);

/// A fresh unique name for a delivery by this process, as the Maildir spec asks:
/// `<secs>.M<usec>P<pid>Q<seq>R<16 hex random>.<host>` with '/' and ':' in the
/// host written as \057 and \072. Unique across processes and calls.
std::string fresh_unique_name(std::int64_t now_ns, const std::string& host);

/// The keyword list of a dovecot-keywords file ("<n> <name>" lines, n < 26);
/// index = letter - 'a', "" for unused indexes. Malformed lines are skipped.
std::vector<std::string> parse_dovecot_keywords(std::string_view text);
/// The inverse: "<n> <name>\n" for every non-empty entry.
std::string format_dovecot_keywords(const std::vector<std::string>& keywords);

/// Rewrites `info` (flags) from the keyword letters of `from` to those of `to`,
/// matching keywords by name and appending names missing from `to` (at most 26).
/// System flags are kept; the result is in ASCII order without duplicates. A
/// letter with no name in `from`, or a name that does not fit into `to`, is
/// dropped and named in `dropped`.
std::string remap_keywords(std::string_view info, const std::vector<std::string>& from,
                           std::vector<std::string>& to, std::vector<std::string>* dropped);

}  // namespace reduit
