// mailserver/config.hpp — the mail server's TOML configuration (docs/MAILSERVER.md).
//
// One file, read by `reduit mailserver --config FILE`. Every limit is a named key
// with a documented default (the defaults below are the documented ones; the
// Postfix smtpd parameter each one mirrors is named beside it). Validation is
// strict: an unknown key, a wrong type, a bad address or an alias pointing at an
// unknown user is Error(kUsage) "FILE:LINE: message". Values may use ${VAR} and
// ${VAR:-default} environment references, as in the agent's config.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace reduit::mail {

/// A listening address: "127.0.0.1:25", "[::1]:24", "0.0.0.0:2525", "[::]:25".
struct ListenAddress {
  std::string host;  // numeric IPv4 or IPv6, without brackets
  std::uint16_t port = 0;
  std::string text() const;  // as written: "[::1]:24"
};

/// Limits. Sizes in bytes, times in seconds.
struct Limits {
  std::uint64_t message_size_limit = 10u << 20;    // message_size_limit; RFC 1870 SIZE
  unsigned recipient_limit = 100;                  // smtpd_recipient_limit; RFC 5321 §4.5.3.1.8
  unsigned recipient_overshoot_limit = 1000;       // smtpd_recipient_overshoot_limit
  unsigned max_connections = 100;                  // default_process_limit (all listeners)
  unsigned client_connection_rate_limit = 60;      // smtpd_client_connection_rate_limit; 0 = off
  unsigned client_connection_rate_time_unit = 60;  // anvil_rate_time_unit
  unsigned command_timeout = 300;                  // smtpd_timeout; RFC 5321 §4.5.3.2.7
  unsigned data_timeout = 300;                     // smtpd_timeout in DATA; RFC 5321 §4.5.3.2.5-6
  unsigned error_limit = 20;                       // smtpd_hard_error_limit
  unsigned delivery_threads = 4;                   // concurrent Maildir deliveries
  unsigned shutdown_timeout = 60;                  // SIGTERM: wait this long for transactions
};

struct TlsConfig {
  std::string certificate;  // PEM chain; empty = no STARTTLS
  std::string private_key;  // PEM
  bool require = false;     // 530 5.7.0 to MAIL before STARTTLS (SMTP listeners)
};

struct MailServerConfig {
  std::string origin;    // the file path, for messages
  std::string hostname;  // in the greeting and Received headers; default: host name
  std::vector<ListenAddress> smtp_listen, lmtp_listen;
  std::string log_file;  // empty = stderr

  std::string mail_root;             // absolute; the agent's [[source]] root
  std::string layout = "%d/%n";      // the agent's layout template (%d, %n, %u and literals)
  std::vector<std::string> domains;  // lower case
  std::vector<std::string> users;    // "local@domain", lower case
  std::map<std::string, std::vector<std::string>> aliases;  // address → users

  TlsConfig tls;
  Limits limits;
};

/// Parses TOML text; `origin` names it in error messages. Throws Error(kUsage).
MailServerConfig parse_mailserver_config(const std::string& text, const std::string& origin);

/// Reads and parses `path`. Throws Error(kUsage) when it cannot be read or is invalid.
MailServerConfig load_mailserver_config(const std::string& path);

/// Splits "host:port" / "[v6]:port" into a ListenAddress; returns false when malformed.
bool parse_listen_address(const std::string& text, ListenAddress* out);

}  // namespace reduit::mail
