#include "restore/maildir_name.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <set>

#include "vault/hash.hpp"

namespace reduit {

namespace {

std::optional<std::uint64_t> field(std::string_view unique, std::string_view key) {
  std::size_t p = 0;
  while ((p = unique.find(key, p)) != std::string_view::npos) {
    std::size_t v = p + key.size();
    std::size_t e = v;
    while (e < unique.size() && unique[e] >= '0' && unique[e] <= '9') ++e;
    if (e > v && e - v <= 19 && (e == unique.size() || unique[e] == ',')) {
      return std::stoull(std::string(unique.substr(v, e - v)));
    }
    p = v;
  }
  return std::nullopt;
}

}  // namespace

MaildirName parse_maildir_name(std::string_view name) {
  MaildirName out;
  std::size_t sep = name.find(':');
  if (sep == std::string_view::npos) {
    for (const char* s : {"!2,", ";2,"}) {
      std::size_t p = name.find(s);
      if (p != std::string_view::npos) {
        sep = p;
        break;
      }
    }
  }
  out.unique = std::string(name.substr(0, sep));
  if (sep != std::string_view::npos) {
    std::string_view rest = name.substr(sep + 1);
    if (rest.substr(0, 2) == "2,") {
      out.has_info = true;
      out.info = std::string(rest.substr(2));
    }
  }
  out.size = field(out.unique, ",S=");
  out.vsize = field(out.unique, ",W=");
  return out;
}

std::string fresh_unique_name(std::int64_t now_ns, const std::string& host) {
  static std::atomic<std::uint64_t> seq{0};
  std::string h;
  for (char c : host) {
    if (c == '/')
      h += "\\057";
    else if (c == ':')
      h += "\\072";
    else
      h += c;
  }
  if (h.empty()) h = "localhost";
  Hash r = random_hash();
  char buf[128];
  // Zero-padded M (microseconds) and Q (counter): names made one after another sort
  // in that order both as strings and by Dovecot's time comparison.
  snprintf(buf, sizeof buf, "%lld.M%06lldP%ldQ%06llu", static_cast<long long>(now_ns / 1000000000),
           static_cast<long long>(now_ns / 1000 % 1000000), static_cast<long>(getpid()),
           static_cast<unsigned long long>(++seq));
  return std::string(buf) + "R" + to_hex(r.data(), 8) + "." + h;
}

std::vector<std::string> parse_dovecot_keywords(std::string_view text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    std::string_view line =
        text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::size_t sp = line.find(' ');
    if (sp == 0 || sp == std::string_view::npos || sp > 2 || sp + 1 >= line.size()) continue;
    std::string_view num = line.substr(0, sp);
    if (num.find_first_not_of("0123456789") != std::string_view::npos) continue;
    int n = std::stoi(std::string(num));
    if (n >= 26) continue;
    if (out.size() <= static_cast<std::size_t>(n)) out.resize(static_cast<std::size_t>(n) + 1);
    out[static_cast<std::size_t>(n)] = std::string(line.substr(sp + 1));
  }
  return out;
}

std::string format_dovecot_keywords(const std::vector<std::string>& keywords) {
  std::string out;
  for (std::size_t i = 0; i < keywords.size(); ++i) {
    if (!keywords[i].empty()) out += std::to_string(i) + " " + keywords[i] + "\n";
  }
  return out;
}

std::string remap_keywords(std::string_view info, const std::vector<std::string>& from,
                           std::vector<std::string>& to, std::vector<std::string>* dropped) {
  std::set<char> flags;
  for (char c : info) {
    if (c >= 'a' && c <= 'z') {
      std::size_t i = static_cast<std::size_t>(c - 'a');
      if (i >= from.size() || from[i].empty()) {
        if (dropped) dropped->push_back(std::string("keyword letter '") + c + "' (not in dovecot-keywords)");
        continue;
      }
      const std::string& name = from[i];
      auto it = std::find(to.begin(), to.end(), name);
      if (it == to.end()) {
        auto hole = std::find(to.begin(), to.end(), std::string());
        if (hole != to.end()) {
          *hole = name;
          it = hole;
        } else if (to.size() < 26) {
          to.push_back(name);
          it = to.end() - 1;
        } else {
          if (dropped) dropped->push_back("keyword " + name + " (the folder already has 26)");
          continue;
        }
      }
      flags.insert(static_cast<char>('a' + (it - to.begin())));
    } else if (c > ' ' && c < 127) {
      flags.insert(c);
    }
  }
  return std::string(flags.begin(), flags.end());
}

}  // namespace reduit
