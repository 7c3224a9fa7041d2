// mailserver/address.cpp — RFC 5321 §4.1.2 Path parsing (see address.hpp).
#include "mailserver/address.hpp"

namespace reduit::mail {

namespace {

// RFC 5321 §4.5.3.1: local part 64 octets, domain 255, path 256 (with the brackets).
constexpr std::size_t kMaxLocal = 64, kMaxDomain = 255, kMaxPath = 256;

bool is_atext(unsigned char c) {
  if (c >= 0x80) return true;  // UTF-8 octet; checked as a whole by valid_utf8 (RFC 6531 §3.3)
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '/':
    case '=':
    case '?':
    case '^':
    case '_':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_let_dig(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

// Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str] (§4.1.2),
// U-labels allowed (RFC 6531 §3.3). Or an address-literal "[...]" (§4.1.3).
bool valid_domain(std::string_view d) {
  if (d.empty()) return false;
  if (d.front() == '[') {
    if (d.size() < 3 || d.back() != ']') return false;
    for (char c : d.substr(1, d.size() - 2)) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u < 33 || u > 126 || c == '[' || c == ']' || c == '\\') return false;
    }
    return true;
  }
  std::size_t start = 0;
  while (true) {
    std::size_t dot = d.find('.', start);
    std::string_view label =
        d.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63) return false;
    if (!is_let_dig(label.front()) || !is_let_dig(label.back())) return false;
    for (char c : label) {
      if (!is_let_dig(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

}  // namespace

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int n;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (int k = 1; k <= n; ++k) {
      unsigned char t = static_cast<unsigned char>(s[i + k]);
      if ((t & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (t & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

PathError parse_path(std::string_view s, bool allow_null, Mailbox* mailbox, std::string_view* rest) {
  *mailbox = Mailbox{};
  if (s.empty() || s.front() != '<') return PathError::kSyntax;
  // Find the closing '>' outside a quoted string.
  std::size_t close = std::string_view::npos;
  bool quoted = false;
  for (std::size_t j = 1; j < s.size(); ++j) {
    if (quoted && s[j] == '\\') {
      ++j;
      continue;
    }
    if (s[j] == '"') quoted = !quoted;
    if (!quoted && s[j] == '>') {
      close = j;
      break;
    }
  }
  if (close == std::string_view::npos) return PathError::kSyntax;
  if (close + 1 > kMaxPath) return PathError::kTooLong;
  std::string_view inner = s.substr(1, close - 1);
  *rest = s.substr(close + 1);
  if (inner.empty()) return allow_null ? PathError::kNone : PathError::kSyntax;
  // A-d-l ":" (source route), obsolete and ignored (§4.1.1.3, Appendix C).
  if (inner.front() == '@') {
    std::size_t colon = inner.find(':');
    if (colon == std::string_view::npos) return PathError::kSyntax;
    inner = inner.substr(colon + 1);
  }
  std::string local;
  std::size_t at;
  if (!inner.empty() && inner.front() == '"') {
    // Quoted-string = DQUOTE *QcontentSMTP DQUOTE; quoted-pairSMTP = "\" %d32-126.
    std::size_t j = 1;
    for (; j < inner.size() && inner[j] != '"'; ++j) {
      unsigned char c = static_cast<unsigned char>(inner[j]);
      if (c == '\\') {
        if (++j >= inner.size()) return PathError::kSyntax;
        c = static_cast<unsigned char>(inner[j]);
        if (c < 32 || c > 126) return PathError::kSyntax;
      } else if ((c < 32 || c == 127) || c == '"') {
        return PathError::kSyntax;
      }
      local += static_cast<char>(c);
    }
    if (j >= inner.size()) return PathError::kSyntax;
    at = j + 1;
    if (at < inner.size() && inner[at] != '@') return PathError::kSyntax;
  } else {
    at = inner.find('@');
    std::string_view dot_string = inner.substr(0, at);
    // Dot-string = Atom *("." Atom)
    if (dot_string.empty() || dot_string.front() == '.' || dot_string.back() == '.' ||
        dot_string.find("..") != std::string_view::npos) {
      return PathError::kSyntax;
    }
    for (char c : dot_string) {
      if (c != '.' && !is_atext(static_cast<unsigned char>(c))) return PathError::kSyntax;
    }
    local = std::string(dot_string);
  }
  if (local.size() > kMaxLocal) return PathError::kTooLong;
  if (at == std::string_view::npos || at >= inner.size()) {
    // Only <Postmaster> may come without a domain (§4.5.1).
    if (ascii_lower(local) != "postmaster" || allow_null) return PathError::kSyntax;
    mailbox->local = local;
    return PathError::kNone;
  }
  std::string_view domain = inner.substr(at + 1);
  if (domain.size() > kMaxDomain) return PathError::kTooLong;
  if (!valid_domain(domain)) return PathError::kSyntax;
  if (!valid_utf8(local) || !valid_utf8(domain)) return PathError::kSyntax;
  mailbox->local = std::move(local);
  mailbox->domain = std::string(domain);
  for (unsigned char c : mailbox->local + mailbox->domain) mailbox->non_ascii |= c >= 0x80;
  return PathError::kNone;
}

}  // namespace reduit::mail
