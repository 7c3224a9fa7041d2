// mailserver/config.cpp — parsing and validation of the mail server config (config.hpp).
//
// TOML reading with FILE:LINE errors: vault/toml_read.hpp (shared with the agent).
#include "mailserver/config.hpp"

#include <arpa/inet.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "mailserver/address.hpp"
#include "mailserver/directory.hpp"
#include "vault/error.hpp"
#include "vault/toml_read.hpp"

namespace reduit::mail {

namespace {

using toml_read::at;
using toml_read::bad;
using toml_read::each_key;
using toml_read::get_bool;
using toml_read::get_size;

std::string get_string(const std::string& origin, const toml::node& n, const std::string& key) {
  return toml_read::expanded_string(origin, n, key);
}

unsigned get_uint(const std::string& origin, const toml::node& n, const std::string& key, std::int64_t lo,
                  std::int64_t hi) {
  return static_cast<unsigned>(toml_read::get_int(origin, n, key, lo, hi));
}

std::vector<std::string> get_strings(const std::string& origin, const toml::node& n, const std::string& key) {
  return toml_read::string_array(origin, n, key, true);
}

const toml::table& table_of(const std::string& origin, const toml::node& n, const std::string& name) {
  return toml_read::table_of(origin, n, "[" + name + "]");
}

// "local@domain" in lower case with both parts usable as directory names.
std::string user_address(const std::string& where, const std::string& text, const std::string& what) {
  Mailbox m;
  std::string_view rest;
  if (parse_path("<" + text + ">", false, &m, &rest) != PathError::kNone || m.domain.empty() ||
      m.domain.front() == '[') {
    bad(where, what + " \"" + text + "\" is not an address like \"alice@example.ch\"");
  }
  for (const std::string& part : {m.local, m.domain}) {
    if (std::string why = check_path_segment(part); !why.empty()) {
      bad(where, what + " \"" + text + "\" cannot name a mailbox directory: " + why);
    }
  }
  return ascii_lower(m.local) + "@" + ascii_lower(m.domain);
}

std::string local_hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

}  // namespace

std::string ListenAddress::text() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool parse_listen_address(const std::string& text, ListenAddress* out) {
  std::string host, port;
  if (!text.empty() && text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return false;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    unsigned char buf[16];
    if (inet_pton(AF_INET6, host.c_str(), buf) != 1) return false;
  } else {
    std::size_t colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    unsigned char buf[4];
    if (inet_pton(AF_INET, host.c_str(), buf) != 1) return false;
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return false;
  unsigned long p = std::stoul(port);
  if (p > 65535) return false;  // 0 = any free port (tests)
  out->host = host;
  out->port = static_cast<std::uint16_t>(p);
  return true;
}

MailServerConfig parse_mailserver_config(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw Error(ErrorCode::kUsage,
                origin + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  MailServerConfig c;
  c.origin = origin;
  std::map<std::string, std::pair<std::vector<std::string>, std::string>> raw_aliases;  // → targets, where
  std::vector<std::pair<std::string, std::string>> raw_users;                           // text, where
  auto listen = [&](const toml::node& n, const std::string& key) {
    std::vector<ListenAddress> out;
    for (const std::string& s : get_strings(origin, n, key)) {
      ListenAddress a;
      if (!parse_listen_address(s, &a)) {
        bad(at(origin, n), "'" + key + "' entry \"" + s +
                               "\" is not a numeric address and port like \"127.0.0.1:25\" or \"[::1]:24\"");
      }
      out.push_back(a);
    }
    return out;
  };
  each_key(origin, root, "",
           {"hostname", "smtp_listen", "lmtp_listen", "log_file", "mail_root", "layout", "domains", "users",
            "aliases", "tls", "limits"},
           [&](const std::string& key, const toml::node& v) {
             if (key == "hostname") {
               c.hostname = get_string(origin, v, key);
               if (c.hostname.empty() || c.hostname.find_first_of(" \t\r\n/") != std::string::npos) {
                 bad(at(origin, v), "'hostname' must be a host name without spaces");
               }
             } else if (key == "smtp_listen") {
               c.smtp_listen = listen(v, key);
             } else if (key == "lmtp_listen") {
               c.lmtp_listen = listen(v, key);
             } else if (key == "log_file") {
               c.log_file = get_string(origin, v, key);
             } else if (key == "mail_root") {
               c.mail_root = get_string(origin, v, key);
               if (c.mail_root.empty() || c.mail_root.front() != '/') {
                 bad(at(origin, v), "'mail_root' must be an absolute path");
               }
               while (c.mail_root.size() > 1 && c.mail_root.back() == '/') c.mail_root.pop_back();
             } else if (key == "layout") {
               c.layout = get_string(origin, v, key);
               if (std::string why = check_delivery_layout(c.layout); !why.empty()) {
                 bad(at(origin, v), "'layout' = \"" + c.layout + "\": " + why);
               }
             } else if (key == "domains") {
               for (const std::string& d : get_strings(origin, v, key)) {
                 std::string lower = ascii_lower(d);
                 Mailbox m;
                 std::string_view rest;
                 std::string why = check_path_segment(lower);
                 if (why.empty() && (parse_path("<x@" + lower + ">", false, &m, &rest) != PathError::kNone ||
                                     lower.front() == '[')) {
                   why = "not a domain name";
                 }
                 if (!why.empty()) bad(at(origin, v), "domain \"" + d + "\": " + why);
                 c.domains.push_back(lower);
               }
             } else if (key == "users") {
               const toml::array* a = v.as_array();
               if (!a) bad(at(origin, v), "'users' must be an array of strings");
               for (const auto& e : *a) raw_users.push_back({get_string(origin, e, key), at(origin, e)});
             } else if (key == "aliases") {
               for (const auto& [k, n] : table_of(origin, v, "aliases")) {
                 std::vector<std::string> targets;
                 if (n.is_string())
                   targets.push_back(get_string(origin, n, "aliases"));
                 else
                   targets = get_strings(origin, n, "aliases." + std::string(k.str()));
                 raw_aliases[std::string(k.str())] = {targets, at(origin, n)};
               }
             } else if (key == "tls") {
               each_key(origin, table_of(origin, v, "tls"), "tls", {"certificate", "private_key", "require"},
                        [&](const std::string& k, const toml::node& n) {
                          if (k == "certificate")
                            c.tls.certificate = get_string(origin, n, k);
                          else if (k == "private_key")
                            c.tls.private_key = get_string(origin, n, k);
                          else
                            c.tls.require = get_bool(origin, n, k);
                        });
               if (c.tls.certificate.empty() != c.tls.private_key.empty()) {
                 bad(at(origin, v), "[tls] needs both 'certificate' and 'private_key'");
               }
               if (c.tls.require && c.tls.certificate.empty()) {
                 bad(at(origin, v), "'tls.require' = true needs a certificate and private key");
               }
             } else if (key == "limits") {
               Limits& l = c.limits;
               each_key(
                   origin, table_of(origin, v, "limits"), "limits",
                   {"message_size_limit", "recipient_limit", "recipient_overshoot_limit", "max_connections",
                    "client_connection_rate_limit", "client_connection_rate_time_unit", "command_timeout",
                    "data_timeout", "error_limit", "delivery_threads", "shutdown_timeout"},
                   [&](const std::string& k, const toml::node& n) {
                     if (k == "message_size_limit") {
                       l.message_size_limit = get_size(origin, n, k);
                       if (l.message_size_limit < 1024 || l.message_size_limit > (1ull << 30)) {
                         bad(at(origin, n), "'limits.message_size_limit' must be between 1KiB and 1GiB");
                       }
                     } else if (k == "recipient_limit") {
                       l.recipient_limit = get_uint(origin, n, k, 1, 100000);
                     } else if (k == "recipient_overshoot_limit") {
                       l.recipient_overshoot_limit = get_uint(origin, n, k, 0, 1000000);
                     } else if (k == "max_connections") {
                       l.max_connections = get_uint(origin, n, k, 1, 100000);
                     } else if (k == "client_connection_rate_limit") {
                       l.client_connection_rate_limit = get_uint(origin, n, k, 0, 1000000);
                     } else if (k == "client_connection_rate_time_unit") {
                       l.client_connection_rate_time_unit = get_uint(origin, n, k, 1, 86400);
                     } else if (k == "command_timeout") {
                       l.command_timeout = get_uint(origin, n, k, 1, 86400);
                     } else if (k == "data_timeout") {
                       l.data_timeout = get_uint(origin, n, k, 1, 86400);
                     } else if (k == "error_limit") {
                       l.error_limit = get_uint(origin, n, k, 1, 100000);
                     } else if (k == "delivery_threads") {
                       l.delivery_threads = get_uint(origin, n, k, 1, 256);
                     } else if (k == "shutdown_timeout") {
                       l.shutdown_timeout = get_uint(origin, n, k, 0, 86400);
                     }
                   });
             }
           });
  if (c.mail_root.empty()) throw Error(ErrorCode::kUsage, origin + ": 'mail_root' is required");
  if (c.smtp_listen.empty() && c.lmtp_listen.empty()) {
    throw Error(ErrorCode::kUsage, origin + ": nothing to listen on: set 'smtp_listen' and/or 'lmtp_listen'");
  }
  if (c.domains.empty()) throw Error(ErrorCode::kUsage, origin + ": 'domains' is required");
  std::set<std::string> domains(c.domains.begin(), c.domains.end());
  std::set<std::string> users;
  for (const auto& [text, where] : raw_users) {
    std::string u = user_address(where, text, "user");
    if (!domains.count(u.substr(u.find('@') + 1))) bad(where, "user \"" + text + "\" is not in 'domains'");
    if (!users.insert(u).second) bad(where, "user \"" + text + "\" is listed twice");
    c.users.push_back(u);
  }
  for (const auto& [addr, entry] : raw_aliases) {
    const auto& [targets, where] = entry;
    std::string a = user_address(where, addr, "alias");
    if (!domains.count(a.substr(a.find('@') + 1))) bad(where, "alias \"" + addr + "\" is not in 'domains'");
    if (users.count(a)) bad(where, "alias \"" + addr + "\" is also a user");
    if (targets.empty()) bad(where, "alias \"" + addr + "\" has no users");
    for (const std::string& t : targets) {
      std::string u = user_address(where, t, "alias target");
      if (!users.count(u)) bad(where, "alias \"" + addr + "\" → \"" + t + "\": not a configured user");
      c.aliases[a].push_back(u);
    }
  }
  if (c.hostname.empty()) c.hostname = local_hostname();
  return c;
}

MailServerConfig load_mailserver_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(ErrorCode::kUsage, "cannot read config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_mailserver_config(ss.str(), path);
}

}  // namespace reduit::mail
