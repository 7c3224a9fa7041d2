#include "support/gpg_home.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

namespace reduit::test {

namespace {

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

std::string read_all(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs a shell command line; returns stdout, throws with stderr on failure.
std::string run(const std::string& cmdline, const std::string& err_file) {
  std::string full = cmdline + " 2>" + quote(err_file);
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + full);
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("command failed (status " + std::to_string(status) + "): " + full + "\n" +
                             read_all(err_file));
  return out;
}

}  // namespace

GpgHome::GpgHome() {
  char tmpl[] = "/tmp/g.XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp(/tmp/g.XXXXXX) failed");
  path_ = tmpl;
  ::chmod(path_.c_str(), 0700);
}

GpgHome::~GpgHome() {
  std::string cmd = "gpgconf --homedir " + quote(path_) + " --kill gpg-agent >/dev/null 2>&1";
  (void)std::system(cmd.c_str());
  // The agent removes its sockets as it exits, which may be while remove_all walks
  // the directory; an entry gone mid-walk stops the walk and left homes behind
  // (7 of a suite run's ~500). Walk again until the home is gone (at most 1 s).
  std::error_code ec;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::filesystem::remove_all(path_, ec);
    if (!std::filesystem::exists(path_, ec)) break;
    ::usleep(10000);
  }
}

std::string GpgHome::gpg(const std::vector<std::string>& args) {
  std::string cmd =
      "gpg --homedir " + quote(path_) + " --batch --no-tty --pinentry-mode loopback --passphrase ''";
  for (const auto& a : args) cmd += " " + quote(a);
  return run(cmd + " </dev/null", path_ + "/stderr.log");
}

std::string GpgHome::write_file(const std::string& name, const std::string& data) {
  std::string file = path_ + "/" + name;
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out.flush()) throw std::runtime_error("cannot write " + file);
  return file;
}

std::string GpgHome::generate_key(const std::string& uid) {
  std::string status =
      gpg({"--status-fd", "1", "--quick-gen-key", uid, "future-default", "default", "never"});
  // [GNUPG:] KEY_CREATED B <fpr>
  std::istringstream lines(status);
  std::string line;
  const std::string tag = "[GNUPG:] KEY_CREATED ";
  while (std::getline(lines, line)) {
    if (line.rfind(tag, 0) != 0) continue;
    auto sp = line.find(' ', tag.size());
    if (sp == std::string::npos) continue;
    std::string fpr = line.substr(sp + 1);  // "<fpr>" or "<fpr> <handle>"
    return fpr.substr(0, fpr.find(' '));
  }
  // Fallback: the fpr: line following the pub: record of the exact uid.
  std::istringstream listing(gpg({"--with-colons", "--list-keys", "=" + uid}));
  bool after_pub = false;
  while (std::getline(listing, line)) {
    if (line.rfind("pub:", 0) == 0) after_pub = true;
    if (after_pub && line.rfind("fpr:", 0) == 0) {
      // fpr:::::::::FINGERPRINT:
      std::string f = line.substr(std::string("fpr:::::::::").size());
      return f.substr(0, f.find(':'));
    }
  }
  throw std::runtime_error("generate_key(" + uid + "): no fingerprint in gpg output");
}

std::string GpgHome::export_public(const std::string& fpr) {
  return gpg({"--armor", "--export", fpr});
}

std::string GpgHome::export_secret(const std::string& fpr) {
  return gpg({"--armor", "--export-secret-keys", fpr});
}

void GpgHome::import(const std::string& key_data) {
  std::string file = write_file("import." + std::to_string(++counter_) + ".asc", key_data);
  gpg({"--import", file});
  std::filesystem::remove(file);
}

}  // namespace reduit::test
