// mailserver/address.hpp — envelope addresses: the Path syntax of RFC 5321 §4.1.2,
// its length limits (§4.5.3.1.1–3) and the SMTPUTF8 extension of it (RFC 6531 §3.3).
//
// Pure functions on strings; nothing here touches the network or the filesystem.
#pragma once

#include <string>
#include <string_view>

namespace reduit::mail {

/// A parsed mailbox. `local` is unquoted ("john doe" for "\"john doe\"@x");
/// `domain` is as written (an address literal keeps its brackets).
struct Mailbox {
  std::string local;
  std::string domain;
  bool non_ascii = false;  // a UTF-8 octet appears (needs SMTPUTF8)
  std::string text() const { return domain.empty() ? local : local + "@" + domain; }
};

enum class PathError {
  kNone,
  kSyntax,   // 501 5.1.3 (RFC 3463: bad mailbox address syntax; malformed UTF-8 too)
  kTooLong,  // 501 5.1.3: path, local part or domain over the RFC 5321 §4.5.3.1 limits
};

/// Parses a Path "<...>" at the start of `s` (RFC 5321 §4.1.2: Path / "<>" when
/// `allow_null`), skipping a source route "@a,@b:" (§4.1.1.3 says to ignore it).
/// On success returns kNone, sets `*mailbox` (empty local and domain for "<>") and
/// `*rest` to what follows the ">" (the ESMTP parameters). Non-ASCII octets are
/// accepted when they form valid UTF-8 (RFC 6531); the caller decides whether
/// SMTPUTF8 permits them. A bare "postmaster" (any case, no domain) is accepted as
/// RFC 5321 §4.5.1 requires; its `domain` is then empty.
PathError parse_path(std::string_view s, bool allow_null, Mailbox* mailbox, std::string_view* rest);

/// ASCII lower-casing (domains are case-insensitive, RFC 5321 §2.4; reduit also
/// matches local parts without regard to ASCII case, as Postfix does).
std::string ascii_lower(std::string_view s);

/// True when `s` is well-formed UTF-8 (RFC 3629), without overlongs or surrogates.
bool valid_utf8(std::string_view s);

}  // namespace reduit::mail
