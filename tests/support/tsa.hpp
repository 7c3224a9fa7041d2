// tests/support/tsa.hpp — a local RFC 3161 time-stamping authority for tests: a CA
// and a TSA certificate made with `openssl req/x509`, and a loopback HTTP server
// (Python's http.server) answering each time-stamp query with `openssl ts -reply`
// (RFC 3161 §3.4). No network beyond 127.0.0.1.
#pragma once

#include <sys/types.h>

#include <string>

#include "support/harness.hpp"

namespace reduit::test {

class LocalTsa {
 public:
  /// Makes the keys and certificates and starts the server; throws
  /// std::runtime_error when openssl or python3 fails.
  LocalTsa();
  ~LocalTsa();
  LocalTsa(const LocalTsa&) = delete;
  LocalTsa& operator=(const LocalTsa&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/tsa"; }
  std::string ca_file() const { return dir_.path() + "/ca.crt"; }
  std::string tsa_cert() const { return dir_.path() + "/tsa.crt"; }
  /// Requests answered so far.
  int requests() const;
  /// A second, unrelated CA (for "signed by someone else" checks).
  std::string other_ca_file() const { return dir_.path() + "/other-ca.crt"; }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace reduit::test
