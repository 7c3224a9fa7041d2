// vault/transport.cpp — vault URL parsing and object-name validation.
#include "vault/transport.hpp"

#include "vault/format.hpp"

#include <cstdlib>

#include "vault/error.hpp"

namespace reduit {
namespace {

constexpr const char* kUrlExamples =
    "expected e.g. sftp://backup@nas.example.org:22/srv/reduit, "
    "sftp://backup@[::1]/srv/reduit or file:///srv/reduit";

[[noreturn]] void bad_url(const std::string& url, const std::string& why) {
  throw Error(ErrorCode::kUsage, "malformed vault URL \"" + url + "\": " + why + "; " + kUrlExamples);
}

// "/a/b/" → "/a/b"; "/" stays "/".
std::string strip_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

bool has_control_or_nul(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

void check_object_name(const std::string& name) {
  check_relative_path(name, "vault object name");
}

std::unique_ptr<Transport> open_transport(const std::string& url, const TransportOptions& options,
                                          bool create) {
  if (has_control_or_nul(url)) bad_url(url, "contains control characters");

  const std::string file_scheme = "file://";
  const std::string sftp_scheme = "sftp://";

  if (url.rfind(file_scheme, 0) == 0) {
    std::string path = url.substr(file_scheme.size());
    if (path.empty() || path.front() != '/') {
      bad_url(url, "a file URL needs an absolute path (three slashes: file:///path)");
    }
    return make_file_transport(strip_trailing_slashes(path), create);
  }

  if (url.rfind(sftp_scheme, 0) == 0) {
    std::string rest = url.substr(sftp_scheme.size());
    std::size_t slash = rest.find('/');
    if (slash == std::string::npos) bad_url(url, "missing the absolute vault path after the host");
    std::string authority = rest.substr(0, slash);
    std::string path = strip_trailing_slashes(rest.substr(slash));

    std::size_t at = authority.rfind('@');
    if (at == std::string::npos) bad_url(url, "missing the user name (user@host)");
    std::string user = authority.substr(0, at);
    std::string hostport = authority.substr(at + 1);
    if (user.empty()) bad_url(url, "empty user name");
    if (user.find_first_of(":@/[]") != std::string::npos) bad_url(url, "invalid user name");

    std::string host;
    std::string port_text;
    if (!hostport.empty() && hostport.front() == '[') {
      std::size_t close = hostport.find(']');
      if (close == std::string::npos) bad_url(url, "unterminated IPv6 literal '['");
      host = hostport.substr(1, close - 1);
      std::string after = hostport.substr(close + 1);
      if (!after.empty()) {
        if (after.front() != ':') bad_url(url, "unexpected text after the IPv6 literal");
        port_text = after.substr(1);
        if (port_text.empty()) bad_url(url, "empty port");
      }
      if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEF:.%") != std::string::npos ||
          host.find(':') == std::string::npos) {
        bad_url(url, "invalid IPv6 literal");
      }
    } else {
      std::size_t colon = hostport.find(':');
      host = hostport.substr(0, colon);
      if (colon != std::string::npos) {
        port_text = hostport.substr(colon + 1);
        if (port_text.empty()) bad_url(url, "empty port");
      }
      if (host.find_first_of("[]") != std::string::npos) bad_url(url, "invalid host name");
    }
    if (host.empty()) bad_url(url, "missing host name");

    int port = 22;
    if (!port_text.empty()) {
      if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos) {
        bad_url(url, "port must be a number from 1 to 65535");
      }
      port = std::atoi(port_text.c_str());
      if (port < 1 || port > 65535) bad_url(url, "port must be a number from 1 to 65535");
    }
    return make_sftp_transport(user, host, port, path, options, create);
  }

  std::size_t colon = url.find("://");
  if (colon == std::string::npos) bad_url(url, "not a URL");
  throw Error(ErrorCode::kUsage, "unsupported vault URL scheme \"" + url.substr(0, colon) + "\" in \"" + url +
                                     "\"; " + kUrlExamples);
}

}  // namespace reduit
