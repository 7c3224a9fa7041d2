// Config parsing and validation (agent/config.hpp): errors carry FILE:LINE.
#include <gtest/gtest.h>
#include <stdlib.h>

#include "agent/config.hpp"
#include "vault/error.hpp"

using namespace reduit;

namespace {
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "site.toml");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUsage);
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, ValidFileParses) {
  setenv("REDUIT_TEST_ROOT", "/var/vmail", 1);
  Config c = parse_config(R"(state_dir = "/var/lib/reduit"
host = "mail1"
[vault]
url = "sftp://backup@vault.example.ch:2222/srv/v"
ssh_key = "/etc/reduit/id"
host_key = "SHA256:abc"
[keys]
gnupghome = "/etc/reduit/gnupg"
archive_keys = ["A", "B"]
[pack]
size = "8MiB"
zstd_level = 5
[[source]]
root = "${REDUIT_TEST_ROOT}/"
layout = "%d/%n/Maildir"
[[source]]
root = "${REDUIT_TEST_UNSET:-/srv/mail}"
)",
                          "site.toml");
  EXPECT_EQ(c.state_dir, "/var/lib/reduit");
  EXPECT_EQ(c.host, "mail1");
  EXPECT_EQ(c.ssh.host_key_fingerprint, "SHA256:abc");
  EXPECT_EQ(c.archive_keys, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(c.pack_size, 8u << 20);
  EXPECT_EQ(c.zstd_level, 5);
  ASSERT_EQ(c.sources.size(), 2u);
  EXPECT_EQ(c.sources[0].root, "/var/vmail");
  EXPECT_EQ(c.sources[0].layout, "%d/%n/Maildir");
  EXPECT_EQ(c.sources[1].root, "/srv/mail");
  EXPECT_EQ(c.sources[1].layout, "%d/%n");
}

TEST(Config, ErrorsNameFileAndLine) {
  EXPECT_EQ(error_of("state_dir = \"/s\"\n[vault]\nurll = \"file:///v\"\n"),
            "site.toml:3: unknown key 'vault.urll' (known: url, ssh_key, known_hosts, host_key, "
            "accept_new_host_key, connect_timeout, operator, jurisdiction, location)");
  EXPECT_EQ(error_of("state_dir = \"/s\"\n[vault]\nurl = \"file:///v\"\n[pack]\nzstd_level = 40\n"),
            "site.toml:5: 'zstd_level' = 40 is out of range 1..19");
  EXPECT_EQ(error_of("state_dir = 3\n"), "site.toml:1: 'state_dir' must be a string");
  EXPECT_EQ(error_of("state_dir = \"/s\"\n[vault]\nurl = \"file:///v\"\n[[source]]\nroot = \"relative\"\n"),
            "site.toml:4: 'source.root' must be an absolute path");
  EXPECT_EQ(error_of("state_dir = \"/s\"\n[vault]\nurl = \"file:///v\"\n[pack]\nsize = \"12 parsecs\"\n"),
            "site.toml:5: 'size': unknown unit ' parsecs' (use B, KiB, MiB, GiB)");
  EXPECT_EQ(error_of("state_dir = \"${REDUIT_TEST_NEVER_SET}\"\n[vault]\nurl=\"file:///v\"\n"),
            "site.toml:1: environment variable REDUIT_TEST_NEVER_SET is not set");
  EXPECT_EQ(error_of("[vault]\nurl = \"file:///v\"\n"), "site.toml: 'state_dir' is required");
  EXPECT_EQ(error_of("state_dir = \"/s\"\n[vault\n").rfind("site.toml:2:", 0), 0u);
}

TEST(Config, BuiltInDemoConfigUsesReduitHome) {
  setenv("REDUIT_HOME", "/tmp/demo-home", 1);
  Config c = load_config("");
  EXPECT_EQ(c.state_dir, "/tmp/demo-home/state");
  EXPECT_EQ(c.vault_url, "file:///tmp/demo-home/vault");
  EXPECT_EQ(c.gnupghome, "/tmp/demo-home/gnupg-agent");
  ASSERT_EQ(c.sources.size(), 1u);
  EXPECT_EQ(c.sources[0].root, "/tmp/demo-home/mail");
  unsetenv("REDUIT_HOME");
}

TEST(Config, RelativeStateDirAndBadVaultUrlAreRefused) {
  EXPECT_EQ(error_of("state_dir = \"state\"\n[vault]\nurl = \"file:///v\"\n"),
            "site.toml:1: 'state_dir' must be an absolute path");
  EXPECT_EQ(error_of("state_dir = \"/s\"\n[vault]\nurl = \"file://vault\"\n"),
            "site.toml:3: 'vault.url' = \"file://vault\" is not file:///abs/path or "
            "sftp://user@host[:port]/abs/path");
}

// [organisation], [vault] operator/jurisdiction/location and [keys] custodians
// (for `reduit report`); an old config without them still parses with empty facts.
TEST(Config, ReportFactsParseAndAreValidated) {
  const std::string base = "state_dir = \"/s\"\n[vault]\nurl = \"file:///v\"\n";
  Config old = parse_config(base, "site.toml");
  EXPECT_EQ(old.organisation.name, "");
  EXPECT_TRUE(old.key_custodians.empty());
  Config c = parse_config(
      "state_dir = \"/s\"\n[organisation]\nname = \"Example AG\"\ncountry = \"CH\"\npurpose = \"mail\"\n"
      "[vault]\nurl = \"file:///v\"\noperator = \"Vault AG\"\njurisdiction = \"CH\"\nlocation = \"Zurich\"\n"
      "[keys.custodians]\n\"0123456789abcdef0123456789ABCDEF01234567\" = \"CFO\"\n",
      "site.toml");
  EXPECT_EQ(c.organisation.name, "Example AG");
  EXPECT_EQ(c.organisation.country, "CH");
  EXPECT_EQ(c.organisation.purpose, "mail");
  EXPECT_EQ(c.vault_operator, "Vault AG");
  EXPECT_EQ(c.vault_jurisdiction, "CH");
  EXPECT_EQ(c.vault_location, "Zurich");
  EXPECT_EQ(c.key_custodians.at("0123456789ABCDEF0123456789ABCDEF01234567"), "CFO");
  EXPECT_EQ(
      error_of(base + "jurisdiction = \"Switzerland\"\n"),
      "site.toml:4: 'vault.jurisdiction' must be an ISO 3166-1 alpha-2 country code such as \"CH\", not "
      "\"Switzerland\"");
  EXPECT_EQ(error_of(base + "[keys]\ncustodians = { \"ABC\" = \"x\" }\n"),
            "site.toml:5: 'keys.custodians' keys are 40-hex-digit key fingerprints, not \"ABC\"");
  EXPECT_EQ(error_of(base + "[organisation]\nboss = \"x\"\n"),
            "site.toml:5: unknown key 'organisation.boss' (known: name, country, purpose)");
}
