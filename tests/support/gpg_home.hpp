// tests/support/gpg_home.hpp — a throw-away GNUPGHOME for tests that need real
// OpenPGP keys.
//
// The directory is short (/tmp/g.XXXXXX, mode 0700) because gpg-agent may put its
// sockets inside it and Unix socket paths are limited to ~107 bytes. Everything is
// done by running the gpg command line (not GPGME), so tests of vault/crypto.cpp do
// not depend on the code under test to set up their keys. Failures throw
// std::runtime_error with the command and gpg's stderr. The destructor stops the
// home's gpg-agent (gpgconf --kill gpg-agent) and removes the directory (walking
// it again while the exiting agent removes its sockets).
#pragma once

#include <string>
#include <vector>

namespace reduit::test {

class GpgHome {
 public:
  GpgHome();
  ~GpgHome();
  GpgHome(const GpgHome&) = delete;
  GpgHome& operator=(const GpgHome&) = delete;

  const std::string& path() const { return path_; }

  /// Generates a passphrase-less key (future-default: ed25519 primary for
  /// signing/certifying + cv25519 encryption subkey, no expiry) for `uid`, e.g.
  /// "Archive <archive@example.org>". Returns the primary fingerprint (40 uppercase
  /// hex). ~0.1–1 s.
  std::string generate_key(const std::string& uid);

  /// ASCII-armored public / secret key of `fpr`.
  std::string export_public(const std::string& fpr);
  std::string export_secret(const std::string& fpr);

  /// Imports armored (or binary) public or secret key material.
  void import(const std::string& key_data);

  /// Runs `gpg --homedir H --batch <args...>` and returns its stdout (throws when gpg
  /// exits non-zero). For checks such as --list-packets.
  std::string gpg(const std::vector<std::string>& args);

  /// Writes `data` to a file inside the home and returns its path.
  std::string write_file(const std::string& name, const std::string& data);

 private:
  std::string path_;
  int counter_ = 0;
};

}  // namespace reduit::test
