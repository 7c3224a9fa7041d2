// tests/support/site.hpp — one mail site under test: a config, a state dir, a vault
// URL, the site keys, and a way to run `reduit` against them.
#pragma once

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace reduit::test {

class Site {
 public:
  /// `vault_url` empty = file://<tmp>/vault.
  Site(const std::vector<std::string>& roots, const std::string& layout, std::string vault_url = "",
       const std::string& vault_extra = "", const std::string& top_extra = "",
       const std::string& source_extra = "")
      : keys_(SiteKeys::get()) {
    url_ = vault_url.empty() ? "file://" + dir_.path() + "/vault" : vault_url;
    config_ = write_config(dir_.path(), url_, keys_.agent_home->path(), roots, layout, vault_extra, top_extra,
                           source_extra);
  }

  /// Runs `reduit --config C --json ARGS…`.
  RunResult reduit(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{reduit_binary(), "--config", config_, "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv);
  }
  void init() const {
    RunResult r = reduit({"init", "--recipient", keys_.archive_fpr, "--signing-key", keys_.agent_fpr});
    ASSERT_EQ(r.status, 0) << r.err;
  }
  /// A successful backup's JSON summary (fails the test otherwise).
  nlohmann::json backup() const {
    RunResult r = reduit({"backup"});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? r.json() : nlohmann::json::object();
  }
  /// Restores with the archive key (what a restorer holds).
  RunResult restore(const std::string& mailbox, const std::string& to,
                    const std::string& snapshot = "latest") const {
    return reduit({"restore", "--snapshot", snapshot, "--mailbox", mailbox, "--to", to, "--gnupghome",
                   keys_.archive_home->path()});
  }

  const std::string& url() const { return url_; }
  const std::string& config() const { return config_; }
  std::string path(const std::string& rel) const { return dir_.path() + "/" + rel; }
  std::string vault_dir() const { return dir_.path() + "/vault"; }  // file:// only
  const SiteKeys& keys() const { return keys_; }

 private:
  TempDir dir_;
  SiteKeys& keys_;
  std::string url_, config_;
};

}  // namespace reduit::test
