// mailserver/directory.cpp — recipient resolution and mailbox paths (directory.hpp).
#include "mailserver/directory.hpp"

#include <algorithm>

#include "mailserver/address.hpp"

namespace reduit::mail {

Directory::Directory(std::vector<std::string> domains, std::vector<std::string> users,
                     std::map<std::string, std::vector<std::string>> aliases)
    : domains_(domains.begin(), domains.end()), users_(users.begin(), users.end()) {
  for (auto& [addr, targets] : aliases) {
    std::sort(targets.begin(), targets.end());
    targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
    aliases_[ascii_lower(addr)] = targets;
  }
  if (!domains.empty()) first_domain_ = domains.front();
}

Directory::Lookup Directory::resolve(const std::string& local, const std::string& domain) const {
  Lookup out;
  std::string d = ascii_lower(domain);
  if (d.empty()) {
    if (first_domain_.empty()) return out;  // kUnknownUser
    d = first_domain_;
  }
  if (!domains_.count(d)) {
    out.verdict = Verdict::kNotOurDomain;
    return out;
  }
  std::string addr = ascii_lower(local) + "@" + d;
  if (auto it = aliases_.find(addr); it != aliases_.end()) {
    out.verdict = Verdict::kLocal;
    out.users = it->second;
  } else if (users_.count(addr)) {
    out.verdict = Verdict::kLocal;
    out.users = {addr};
  } else {
    out.verdict = Verdict::kUnknownUser;
  }
  return out;
}

std::string mailbox_path(const std::string& root, const std::string& layout, const std::string& user) {
  std::size_t at = user.rfind('@');
  std::string local = user.substr(0, at), domain = at == std::string::npos ? "" : user.substr(at + 1);
  std::string out = root;
  std::size_t start = 0;
  while (start <= layout.size()) {
    std::size_t slash = layout.find('/', start);
    std::string seg = layout.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!seg.empty() && seg != ".") {
      if (seg == "%d")
        seg = domain;
      else if (seg == "%n")
        seg = local;
      else if (seg == "%u")
        seg = user;
      out += "/" + seg;
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return out;
}

std::string check_delivery_layout(const std::string& layout) {
  bool d = false, n = false, u = false;
  std::size_t start = 0;
  while (start <= layout.size()) {
    std::size_t slash = layout.find('/', start);
    std::string seg = layout.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (seg == "%d") {
      d = true;
    } else if (seg == "%n") {
      n = true;
    } else if (seg == "%u") {
      u = true;
    } else if (seg == "*") {
      return "'*' matches any directory when reading, but cannot name one to deliver into";
    } else if (!seg.empty() && seg != ".") {
      if (seg.find('%') != std::string::npos)
        return "unknown placeholder in '" + seg + "' (use %d, %n or %u)";
      if (std::string why = check_path_segment(seg); !why.empty()) return why;
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (!u && !(d && n)) return "needs %u, or both %d and %n, so that every user has a mailbox of its own";
  return "";
}

std::string check_path_segment(const std::string& s) {
  if (s.empty()) return "an empty name";
  if (s.front() == '.') return "'" + s + "' starts with '.'";
  if (s.find('/') != std::string::npos) return "'" + s + "' contains '/'";
  if (s.find('\0') != std::string::npos) return "a NUL character";
  return "";
}

}  // namespace reduit::mail
