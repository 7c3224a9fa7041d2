// Maildir delivery (mailserver/maildir.hpp) on a real directory, with faults
// injected through the DeliveryFs seam; the layout shared with the agent; the
// mail server's config errors.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <regex>

#include "agent/scan.hpp"
#include "mailserver/config.hpp"
#include "mailserver/directory.hpp"
#include "mailserver/maildir.hpp"
#include "support/harness.hpp"
#include "support/mailserver.hpp"
#include "vault/error.hpp"

using namespace reduit;
using namespace reduit::mail;
using reduit::test::TempDir;

namespace fs = std::filesystem;

namespace {

// Real system calls, except that call number `fail_at` of kind `kind` fails with `err`.
class FaultFs : public DeliveryFs {
 public:
  enum Kind { kCreate, kWrite, kFsync, kLink, kFsyncDir, kMkdir };
  FaultFs(Kind kind, int fail_at, int err) : kind_(kind), fail_at_(fail_at), err_(err) {}
  int create(const std::string& p) override { return hit(kCreate) ? -err_ : real().create(p); }
  long write(int fd, const char* d, std::size_t n) override {
    if (hit(kWrite)) {
      // A short write first, as a filling disk does, then the error.
      if (n > 1 && !short_done_) {
        short_done_ = true;
        --count_[kWrite];
        return real().write(fd, d, n / 2);
      }
      return -err_;
    }
    return real().write(fd, d, n);
  }
  int fsync(int fd) override { return hit(kFsync) ? -err_ : real().fsync(fd); }
  int close(int fd) override { return real().close(fd); }
  int link(const std::string& a, const std::string& b) override {
    return hit(kLink) ? -err_ : real().link(a, b);
  }
  int unlink(const std::string& p) override { return real().unlink(p); }
  int mkdir(const std::string& p) override { return hit(kMkdir) ? -err_ : real().mkdir(p); }
  int fsync_dir(const std::string& p) override { return hit(kFsyncDir) ? -err_ : real().fsync_dir(p); }

 private:
  static DeliveryFs& real() { return posix_delivery_fs(); }
  bool hit(Kind k) { return ++count_[k] == fail_at_ && k == kind_; }
  Kind kind_;
  int fail_at_, err_;
  int count_[6] = {0, 0, 0, 0, 0, 0};
  bool short_done_ = false;
};

DeliveryJob job(std::vector<std::string> users, bool all_or_nothing) {
  DeliveryJob j;
  j.id = "ID1";
  j.return_path = "sender@remote.example";
  j.received = "Received: from c ([192.0.2.7])\n\tby mx.example.test (reduit) with ESMTP id ID1; date\n";
  j.body = "Subject: hello\n\nbody line\n";
  j.users = std::move(users);
  j.all_or_nothing = all_or_nothing;
  return j;
}

std::vector<std::string> names(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

const std::vector<std::string> kUsers{"alice@example.test", "bob@example.test", "carol@example.org"};

}  // namespace

TEST(MailDelivery, WritesOneDurableCopyPerUserWithHeadersAndSizeInName) {
  TempDir t;
  MaildirDelivery d(t.path(), "%d/%n", "mx.example.test", posix_delivery_fs());
  auto out = d.deliver(job(kUsers, true));
  EXPECT_EQ(out, std::vector<DeliveryOutcome>(3, DeliveryOutcome::kDelivered));
  for (const std::string& u : kUsers) {
    std::string box = mailbox_path(t.path(), "%d/%n", u);
    auto files = names(box + "/new");
    ASSERT_EQ(files.size(), 1u) << u;
    EXPECT_TRUE(names(box + "/tmp").empty());
    EXPECT_TRUE(fs::is_directory(box + "/cur"));
    std::string content = reduit::test::read_file(box + "/new/" + files[0]);
    EXPECT_EQ(content,
              "Return-Path: <sender@remote.example>\nDelivered-To: " + u +
                  "\nReceived: from c ([192.0.2.7])\n\tby mx.example.test (reduit) with ESMTP id ID1; "
                  "date\nSubject: hello\n\nbody line\n");
    std::smatch m;
    ASSERT_TRUE(std::regex_match(
        files[0], m, std::regex(R"((\d+)\.M(\d{6})P(\d+)Q(\d+)\.mx\.example\.test,S=(\d+),W=(\d+))")))
        << files[0];
    EXPECT_EQ(std::stoul(m[5]), content.size());
    EXPECT_EQ(std::stoul(m[6]), content.size() + std::count(content.begin(), content.end(), '\n'));
    struct stat st;
    stat((box + "/new/" + files[0]).c_str(), &st);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  EXPECT_EQ(maildir_unique_name("1.M2P3Q4.h,S=5,W=6:2,S"), "1.M2P3Q4.h,S=5,W=6");
}

TEST(MailDelivery, UniqueNamesEscapeTheHostAndNeverRepeat) {
  TempDir t;
  MaildirDelivery d(t.path(), "%d/%n", "odd/host:name", posix_delivery_fs());
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(d.unique_name(10, 12));
  EXPECT_EQ(seen.size(), 1000u);
  std::string n = *seen.begin();
  EXPECT_NE(n.find(".odd\\057host\\072name,S=10,W=12"), std::string::npos) << n;
}

// ENOSPC/EIO at every step: the outcome is exact, new/ holds nothing of the failed
// job (all-or-nothing) and tmp/ is clean.
TEST(MailDelivery, AFailureAtAnyStepLeavesNothingHalfWritten) {
  struct Case {
    FaultFs::Kind kind;
    int at;
    int err;
    DeliveryOutcome want;
  };
  std::vector<Case> cases;
  for (int at = 1; at <= 3; ++at) {
    cases.push_back({FaultFs::kCreate, at, ENOSPC, DeliveryOutcome::kNoSpace});
    cases.push_back({FaultFs::kWrite, at, ENOSPC, DeliveryOutcome::kNoSpace});
    cases.push_back({FaultFs::kWrite, at, EDQUOT, DeliveryOutcome::kNoSpace});
    cases.push_back({FaultFs::kFsync, at, EIO, DeliveryOutcome::kIoError});
    cases.push_back({FaultFs::kLink, at, ENOSPC, DeliveryOutcome::kNoSpace});
    cases.push_back({FaultFs::kFsyncDir, at, EIO, DeliveryOutcome::kIoError});
    cases.push_back({FaultFs::kMkdir, at, EACCES, DeliveryOutcome::kIoError});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE("kind " + std::to_string(c.kind) + " at " + std::to_string(c.at));
    TempDir t;
    FaultFs f(c.kind, c.at, c.err);
    MaildirDelivery d(t.path(), "%d/%n", "mx", f);
    auto out = d.deliver(job(kUsers, true));
    EXPECT_EQ(out, std::vector<DeliveryOutcome>(3, c.want));
    for (const std::string& u : kUsers) {
      std::string box = mailbox_path(t.path(), "%d/%n", u);
      EXPECT_EQ(names(box + "/new"), std::vector<std::string>{}) << u;
      EXPECT_EQ(names(box + "/tmp"), std::vector<std::string>{}) << u;
    }
    // The same delivery unit works again once the fault is gone.
    auto again = d.deliver(job(kUsers, true));
    EXPECT_EQ(again, std::vector<DeliveryOutcome>(3, DeliveryOutcome::kDelivered));
  }
}

// A mailbox removed while the server runs is created again on the next delivery
// (found by the benchmark, which empties the Maildir between rounds).
TEST(MailDelivery, AMailboxRemovedBehindItsBackIsCreatedAgain) {
  TempDir t;
  MaildirDelivery d(t.path(), "%d/%n", "mx", posix_delivery_fs());
  ASSERT_EQ(d.deliver(job({"alice@example.test"}, true)),
            std::vector<DeliveryOutcome>{DeliveryOutcome::kDelivered});
  fs::remove_all(t / "example.test");
  EXPECT_EQ(d.deliver(job({"alice@example.test"}, true)),
            std::vector<DeliveryOutcome>{DeliveryOutcome::kDelivered});
  EXPECT_EQ(names(t / "example.test/alice/new").size(), 1u);
}

// LMTP (not all-or-nothing): only the failed user's copy is missing.
TEST(MailDelivery, PerUserOutcomesWithoutAllOrNothing) {
  TempDir t;
  FaultFs f(FaultFs::kCreate, 2, ENOSPC);  // the second user's tmp/ file
  MaildirDelivery d(t.path(), "%d/%n", "mx", f);
  auto out = d.deliver(job(kUsers, false));
  EXPECT_EQ(out, (std::vector<DeliveryOutcome>{DeliveryOutcome::kDelivered, DeliveryOutcome::kNoSpace,
                                               DeliveryOutcome::kDelivered}));
  EXPECT_EQ(names(t / "example.test/alice/new").size(), 1u);
  EXPECT_EQ(names(t / "example.test/bob/new").size(), 0u);
  EXPECT_EQ(names(t / "example.test/bob/tmp").size(), 0u);
  EXPECT_EQ(names(t / "example.org/carol/new").size(), 1u);
}

// What the server writes is what the agent backs up, under the same mailbox name.
TEST(MailLayout, AgentDiscoversTheMailboxesTheServerDeliversTo) {
  for (const std::string layout : {"%d/%n", "%d/%n/Maildir", "vmail/%d/%n", "%u", "%u/Maildir"}) {
    SCOPED_TRACE(layout);
    TempDir t;
    EXPECT_EQ(check_delivery_layout(layout), "");
    MaildirDelivery d(t.path(), layout, "mx", posix_delivery_fs());
    ASSERT_EQ(d.deliver(job(kUsers, true)), std::vector<DeliveryOutcome>(3, DeliveryOutcome::kDelivered));
    auto boxes = discover_mailboxes(t.path(), layout);
    std::vector<std::string> got;
    for (const auto& b : boxes) {
      got.push_back(b.name);
      EXPECT_EQ(b.abs, mailbox_path(t.path(), layout, b.name));
    }
    std::vector<std::string> want = kUsers;
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want);
  }
  EXPECT_EQ(check_delivery_layout("%d/*"),
            "'*' matches any directory when reading, but cannot name one to deliver into");
  EXPECT_EQ(check_delivery_layout("%n"),
            "needs %u, or both %d and %n, so that every user has a mailbox of its own");
  EXPECT_EQ(check_delivery_layout("%d/%x"), "unknown placeholder in '%x' (use %d, %n or %u)");
}

namespace {
std::string config_error(const std::string& text) {
  try {
    parse_mailserver_config(text, "mail.toml");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUsage);
    return e.what();
  }
  return "";
}
const std::string kBase =
    "smtp_listen = [\"127.0.0.1:25\", \"[::1]:25\"]\nmail_root = \"/var/vmail\"\ndomains = "
    "[\"Example.CH\"]\n";
}  // namespace

TEST(MailConfig, DefaultsAndValues) {
  MailServerConfig c = parse_mailserver_config(
      kBase +
          "users = [\"Alice@example.ch\", \"bob@example.ch\"]\n[aliases]\n\"team@example.ch\" = "
          "[\"alice@example.ch\", \"bob@example.ch\"]\n\"info@example.ch\" = \"bob@example.ch\"\n[limits]\n"
          "message_size_limit = \"25MiB\"\ncommand_timeout = 60\n",
      "mail.toml");
  EXPECT_EQ(c.domains, std::vector<std::string>{"example.ch"});
  EXPECT_EQ(c.users, (std::vector<std::string>{"alice@example.ch", "bob@example.ch"}));
  EXPECT_EQ(c.aliases.at("team@example.ch"),
            (std::vector<std::string>{"alice@example.ch", "bob@example.ch"}));
  EXPECT_EQ(c.aliases.at("info@example.ch"), std::vector<std::string>{"bob@example.ch"});
  EXPECT_EQ(c.smtp_listen.size(), 2u);
  EXPECT_EQ(c.smtp_listen[1].host, "::1");
  EXPECT_EQ(c.smtp_listen[1].text(), "[::1]:25");
  EXPECT_EQ(c.layout, "%d/%n");
  EXPECT_EQ(c.limits.message_size_limit, 25u << 20);
  EXPECT_EQ(c.limits.command_timeout, 60u);
  Limits defaults;
  EXPECT_EQ(c.limits.data_timeout, 300u);
  EXPECT_EQ(defaults.message_size_limit, 10u << 20);
  EXPECT_EQ(defaults.recipient_limit, 100u);
  EXPECT_EQ(defaults.max_connections, 100u);
  EXPECT_EQ(defaults.client_connection_rate_limit, 60u);
  EXPECT_EQ(defaults.error_limit, 20u);
  EXPECT_FALSE(c.tls.require);
}

TEST(MailConfig, ErrorsNameFileAndLine) {
  EXPECT_EQ(config_error(kBase + "smtp_listn = []\n"),
            "mail.toml:4: unknown key 'smtp_listn' (known: hostname, smtp_listen, lmtp_listen, log_file, "
            "mail_root, "
            "layout, domains, users, aliases, tls, limits)");
  EXPECT_EQ(config_error("smtp_listen = [\"localhost:25\"]\n"),
            "mail.toml:1: 'smtp_listen' entry \"localhost:25\" is not a numeric address and port like "
            "\"127.0.0.1:25\" or \"[::1]:24\"");
  EXPECT_EQ(config_error(kBase + "users = [\"alice@example.ch\"]\n[aliases]\n\"team@example.ch\" = "
                                 "[\"alice@example.ch\", \"zoe@example.ch\"]\n"),
            "mail.toml:6: alias \"team@example.ch\" → \"zoe@example.ch\": not a configured user");
  EXPECT_EQ(config_error(kBase + "users = [\"alice@other.ch\"]\n"),
            "mail.toml:4: user \"alice@other.ch\" is not in 'domains'");
  EXPECT_EQ(config_error(kBase + "users = [\".hidden@example.ch\"]\n"),
            "mail.toml:4: user \".hidden@example.ch\" is not an address like \"alice@example.ch\"");
  EXPECT_EQ(
      config_error(kBase + "layout = \"%d/*\"\n"),
      "mail.toml:4: 'layout' = \"%d/*\": '*' matches any directory when reading, but cannot name one to "
      "deliver into");
  EXPECT_EQ(config_error(kBase + "[limits]\nrecipient_limit = 0\n"),
            "mail.toml:5: 'recipient_limit' = 0 is out of range 1..100000");
  EXPECT_EQ(config_error(kBase + "[tls]\nrequire = true\n"),
            "mail.toml:4: 'tls.require' = true needs a certificate and private key");
  EXPECT_EQ(config_error("mail_root = \"/m\"\ndomains = [\"a.ch\"]\n"),
            "mail.toml: nothing to listen on: set 'smtp_listen' and/or 'lmtp_listen'");
  EXPECT_EQ(config_error("smtp_listen = [\"127.0.0.1:25\"]\nmail_root = \"relative\"\n"),
            "mail.toml:2: 'mail_root' must be an absolute path");
}
