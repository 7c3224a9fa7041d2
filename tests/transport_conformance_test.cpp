// tests/transport_conformance_test.cpp — every Transport backend must pass this.
//
// One parameterized suite runs against "file" (a temp directory) and "sftp" (a real
// OpenSSH sshd on loopback, tests/support/sshd.hpp); then backend-specific tests for
// host-key checking, authentication and unreachable vaults.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "support/harness.hpp"
#include "support/sshd.hpp"
#include "vault/error.hpp"
#include "vault/transport.hpp"

namespace reduit {
namespace {

namespace fs = std::filesystem;
using test::TestSshd;

TestSshd& shared_sshd() {
  static TestSshd sshd;  // one server for the whole suite; stopped at exit
  return sshd;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/reduit-transport.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Bytes random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes out(n);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<std::uint8_t>(rng());
  return out;
}

Bytes bytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `f`, expects reduit::Error with `code`, returns its message.
template <class F>
std::string expect_error(ErrorCode code, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected reduit::Error(" << error_code_name(code) << "), nothing thrown";
  return {};
}

std::string sftp_url(const TestSshd& sshd, const std::string& path) {
  return "sftp://" + sshd.user() + "@127.0.0.1:" + std::to_string(sshd.port()) + path;
}

using Names = std::vector<std::string>;

// ---- the conformance suite --------------------------------------------------------

class TransportConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/vault";
    t_ = open(/*create=*/true);
  }

  bool is_sftp() const { return GetParam() == "sftp"; }

  std::string url() const { return is_sftp() ? sftp_url(shared_sshd(), root_) : "file://" + root_; }

  std::unique_ptr<Transport> open(bool create) {
    TransportOptions options;
    if (is_sftp()) options = test::sftp_options(shared_sshd());
    return open_transport(url(), options, create);
  }

  TempDir tmp_;
  std::string root_;
  std::unique_ptr<Transport> t_;
};

TEST_P(TransportConformanceTest, RoundTripsExactBytes) {
  const std::size_t sizes[] = {0, 1, 300 * 1024, 5 * 1024 * 1024};
  std::uint64_t seed = 1;
  for (std::size_t n : sizes) {
    SCOPED_TRACE(n);
    const std::string name = "objects/o" + std::to_string(n);
    const Bytes data = random_bytes(n, seed++);
    t_->put(name, data);
    EXPECT_EQ(t_->size(name), std::optional<std::uint64_t>(n));
    const Bytes back = t_->get(name);
    ASSERT_EQ(back.size(), n);
    EXPECT_TRUE(back == data);
    EXPECT_EQ(read_file(root_ + "/" + name).size(), n);  // really stored in the vault dir
  }
}

TEST_P(TransportConformanceTest, PutOverwrites) {
  t_->put("snapshots/latest", bytes("first version"));
  t_->put("snapshots/latest", bytes("second, longer version"));
  EXPECT_EQ(t_->get("snapshots/latest"), bytes("second, longer version"));
  t_->put("snapshots/latest", bytes("3"));
  EXPECT_EQ(t_->get("snapshots/latest"), bytes("3"));
  EXPECT_EQ(t_->size("snapshots/latest"), std::optional<std::uint64_t>(1));
  EXPECT_EQ(t_->list("snapshots"), Names{"snapshots/latest"});
}

TEST_P(TransportConformanceTest, PutCreatesNestedDirectories) {
  t_->put("packs/3f/3f1a", bytes("pack"));
  t_->put("a/b/c/d/e", bytes("deep"));
  EXPECT_EQ(t_->get("packs/3f/3f1a"), bytes("pack"));
  EXPECT_EQ(t_->get("a/b/c/d/e"), bytes("deep"));
  EXPECT_EQ(t_->list_dirs("packs"), Names{"packs/3f"});
  EXPECT_EQ(t_->list("packs/3f"), Names{"packs/3f/3f1a"});
  EXPECT_EQ(t_->list_dirs("a/b/c"), Names{"a/b/c/d"});
  EXPECT_TRUE(fs::is_directory(root_ + "/a/b/c/d"));
}

TEST_P(TransportConformanceTest, PutRecreatesDirectoryRemovedBehindItsBack) {
  t_->put("packs/aa/one", bytes("1"));
  fs::remove_all(root_ + "/packs/aa");  // e.g. pruned by another process
  fs::remove_all(root_ + "/tmp");
  t_->put("packs/aa/two", bytes("2"));
  EXPECT_EQ(t_->list("packs/aa"), Names{"packs/aa/two"});
}

TEST_P(TransportConformanceTest, GetMissingIsNotFound) {
  std::string msg = expect_error(ErrorCode::kNotFound, [&] { t_->get("missing"); });
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  expect_error(ErrorCode::kNotFound, [&] { t_->get("no/such/dir/object"); });
}

TEST_P(TransportConformanceTest, SizeOfMissingAndExisting) {
  EXPECT_EQ(t_->size("missing"), std::nullopt);
  EXPECT_EQ(t_->size("no/such/object"), std::nullopt);
  t_->put("dir/obj", random_bytes(12345, 7));
  EXPECT_EQ(t_->size("dir/obj"), std::optional<std::uint64_t>(12345));
  EXPECT_EQ(t_->size("dir"), std::nullopt);  // a directory is not an object
}

TEST_P(TransportConformanceTest, ListIsSortedAndHasOnlyObjects) {
  t_->put("d/b", bytes("b"));
  t_->put("d/a", bytes("a"));
  t_->put("d/c", bytes("c"));
  t_->put("d/sub/x", bytes("x"));
  t_->put("d/10", bytes("10"));
  t_->put("top", bytes("t"));
  std::ofstream(root_ + "/d/.hidden") << "dotfiles are never objects";
  fs::create_directory(root_ + "/d/.hiddendir");
  EXPECT_EQ(t_->list("d"), (Names{"d/10", "d/a", "d/b", "d/c"}));
  EXPECT_EQ(t_->list_dirs("d"), Names{"d/sub"});
  EXPECT_EQ(t_->list("d/sub"), Names{"d/sub/x"});
  EXPECT_EQ(t_->list_dirs("d/sub"), Names{});
  EXPECT_EQ(t_->list(""), Names{"top"});
  // "tmp" holds in-flight uploads of put(); it is a directory like any other.
  EXPECT_EQ(t_->list_dirs(""), (Names{"d", "tmp"}));
}

TEST_P(TransportConformanceTest, ListOfMissingDirectoryIsEmpty) {
  EXPECT_EQ(t_->list("nope"), Names{});
  EXPECT_EQ(t_->list_dirs("nope"), Names{});
  EXPECT_EQ(t_->list("no/such/dir"), Names{});
  EXPECT_EQ(t_->list(""), Names{});
  EXPECT_EQ(t_->list_dirs(""), Names{});
}

TEST_P(TransportConformanceTest, PutExclusiveCreatesOnlyOnce) {
  EXPECT_TRUE(t_->put_exclusive("locks/lease", bytes("first holder")));
  EXPECT_FALSE(t_->put_exclusive("locks/lease", bytes("second holder")));
  EXPECT_EQ(t_->get("locks/lease"), bytes("first holder"));
  EXPECT_TRUE(t_->put_exclusive("locks/nested/dir/lease", bytes("")));
  EXPECT_EQ(t_->size("locks/nested/dir/lease"), std::optional<std::uint64_t>(0));

  // A second client of the same vault loses the race too.
  auto other = open(false);
  EXPECT_FALSE(other->put_exclusive("locks/lease", bytes("other client")));
  EXPECT_EQ(other->get("locks/lease"), bytes("first holder"));
  t_->remove("locks/lease");
  EXPECT_TRUE(other->put_exclusive("locks/lease", bytes("other client")));
  EXPECT_EQ(t_->get("locks/lease"), bytes("other client"));
}

TEST_P(TransportConformanceTest, RenameNeverOverwrites) {
  t_->put("pending/a", bytes("content a"));
  EXPECT_TRUE(t_->rename("pending/a", "done/a"));  // creates the target's parent
  EXPECT_EQ(t_->size("pending/a"), std::nullopt);
  EXPECT_EQ(t_->get("done/a"), bytes("content a"));

  EXPECT_FALSE(t_->rename("pending/a", "done/b"));  // source absent
  EXPECT_FALSE(t_->rename("missing", "x"));
  EXPECT_EQ(t_->size("done/b"), std::nullopt);

  t_->put("done/b", bytes("content b"));
  EXPECT_FALSE(t_->rename("done/a", "done/b"));  // target exists
  EXPECT_EQ(t_->get("done/a"), bytes("content a"));
  EXPECT_EQ(t_->get("done/b"), bytes("content b"));

  EXPECT_TRUE(t_->rename("done/b", "done/c"));
  EXPECT_EQ(t_->list("done"), (Names{"done/a", "done/c"}));
}

TEST_P(TransportConformanceTest, RemoveAbsentIsFine) {
  t_->remove("never-existed");
  t_->remove("no/such/dir/object");
  t_->put("gone", bytes("x"));
  t_->remove("gone");
  EXPECT_EQ(t_->size("gone"), std::nullopt);
  t_->remove("gone");
}

TEST_P(TransportConformanceTest, RejectsUnsafeNames) {
  const std::string bad[] = {"../x",
                             "/abs",
                             "a//b",
                             "a/./b",
                             "",
                             "..",
                             ".",
                             "a/..",
                             "a/",
                             "a\\b",
                             std::string("a\0b", 3),
                             "x/../../etc/passwd"};
  for (const std::string& name : bad) {
    SCOPED_TRACE(name);
    expect_error(ErrorCode::kVerify, [&] { t_->put(name, bytes("x")); });
    expect_error(ErrorCode::kVerify, [&] { t_->put_exclusive(name, bytes("x")); });
    expect_error(ErrorCode::kVerify, [&] { t_->get(name); });
    expect_error(ErrorCode::kVerify, [&] { t_->size(name); });
    expect_error(ErrorCode::kVerify, [&] { t_->remove(name); });
    expect_error(ErrorCode::kVerify, [&] { t_->rename(name, "ok"); });
    expect_error(ErrorCode::kVerify, [&] { t_->rename("ok", name); });
    if (!name.empty()) {
      expect_error(ErrorCode::kVerify, [&] { t_->list(name); });
      expect_error(ErrorCode::kVerify, [&] { t_->list_dirs(name); });
    }
  }
  EXPECT_FALSE(fs::exists(tmp_.path() + "/x"));
  EXPECT_EQ(t_->stats().objects_written, 0u);
}

TEST_P(TransportConformanceTest, LeavesNoTemporaryFiles) {
  for (int i = 0; i < 5; ++i) t_->put("obj/" + std::to_string(i), random_bytes(1000 + i, i));
  t_->put("obj/0", bytes("overwritten"));
  t_->put_exclusive("obj/lock", bytes("l"));
  EXPECT_EQ(t_->list("obj"), (Names{"obj/0", "obj/1", "obj/2", "obj/3", "obj/4", "obj/lock"}));
  EXPECT_EQ(t_->list("tmp"), Names{});
  EXPECT_TRUE(fs::is_empty(root_ + "/tmp"));
}

TEST_P(TransportConformanceTest, StatsCountExactPayloadBytes) {
  auto t = open(false);
  EXPECT_EQ(t->stats().bytes_written, 0u);
  t->put("a", random_bytes(1000, 1));
  t->put("b/c", random_bytes(300 * 1024, 2));
  t->put("a", random_bytes(7, 3));  // overwrite counts again
  EXPECT_TRUE(t->put_exclusive("l", bytes("12345")));
  EXPECT_FALSE(t->put_exclusive("l", bytes("123")));  // nothing written
  EXPECT_EQ(t->stats().bytes_written, 1000u + 300u * 1024u + 7u + 5u);
  EXPECT_EQ(t->stats().objects_written, 4u);
  EXPECT_EQ(t->stats().bytes_read, 0u);
  t->get("b/c");
  t->get("l");
  expect_error(ErrorCode::kNotFound, [&] { t->get("zzz"); });
  EXPECT_EQ(t->stats().bytes_read, 300u * 1024u + 5u);
  EXPECT_EQ(t_->stats().bytes_written, 0u);  // per instance
}

TEST_P(TransportConformanceTest, ReopensExistingVault) {
  t_->put("config", bytes("cfg"));
  t_.reset();
  auto again = open(false);
  EXPECT_EQ(again->get("config"), bytes("cfg"));
  EXPECT_EQ(again->describe(), is_sftp() ? sftp_url(shared_sshd(), root_) : "file://" + root_);
}

TEST_P(TransportConformanceTest, CreateMakesTheVaultDirectory) {
  const std::string deep = tmp_.path() + "/new/parent/vault";
  TransportOptions options;
  if (is_sftp()) options = test::sftp_options(shared_sshd());
  const std::string u = is_sftp() ? sftp_url(shared_sshd(), deep) : "file://" + deep;
  std::string msg = expect_error(ErrorCode::kUnreachable, [&] { open_transport(u, options); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  auto t = open_transport(u, options, /*create=*/true);
  EXPECT_TRUE(fs::is_directory(deep));
  t->put("x", bytes("y"));
  EXPECT_EQ(open_transport(u, options)->get("x"), bytes("y"));
}

INSTANTIATE_TEST_SUITE_P(Backends, TransportConformanceTest, ::testing::Values("file", "sftp"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- sftp only --------------------------------------------------------------------

class SftpTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/vault";
    fs::create_directory(root_);
  }
  TempDir tmp_;
  std::string root_;
};

TEST_F(SftpTransportTest, UnknownHostKeyIsRefusedByDefault) {
  TestSshd& sshd = shared_sshd();
  TransportOptions options = test::sftp_options(sshd);
  options.known_hosts = sshd.empty_known_hosts_path();
  std::string msg =
      expect_error(ErrorCode::kUnreachable, [&] { open_transport(sftp_url(sshd, root_), options); });
  EXPECT_NE(msg.find("SHA256:"), std::string::npos) << msg;
  EXPECT_NE(msg.find(sshd.host_key_fingerprint()), std::string::npos) << msg;
  EXPECT_NE(msg.find("accept_new_host_key = true"), std::string::npos) << msg;
  EXPECT_NE(msg.find("host_key = \"SHA256:"), std::string::npos) << msg;
  EXPECT_EQ(read_file(options.known_hosts), "");  // nothing recorded
}

TEST_F(SftpTransportTest, UnknownHostKeyIsRecordedWhenAccepted) {
  TestSshd& sshd = shared_sshd();
  TransportOptions options = test::sftp_options(sshd);
  options.known_hosts = sshd.empty_known_hosts_path();
  options.accept_new_host_key = true;
  open_transport(sftp_url(sshd, root_), options)->put("x", bytes("y"));
  const std::string recorded = read_file(options.known_hosts);
  EXPECT_NE(recorded.find("[127.0.0.1]:" + std::to_string(sshd.port())), std::string::npos) << recorded;
  options.accept_new_host_key = false;  // now known: no TOFU needed any more
  EXPECT_EQ(open_transport(sftp_url(sshd, root_), options)->get("x"), bytes("y"));
}

TEST_F(SftpTransportTest, KnownHostsFileMissingAltogether) {
  TestSshd& sshd = shared_sshd();
  TransportOptions options = test::sftp_options(sshd);
  options.known_hosts = tmp_.path() + "/no-such-known_hosts";
  expect_error(ErrorCode::kUnreachable, [&] { open_transport(sftp_url(sshd, root_), options); });
  options.accept_new_host_key = true;
  open_transport(sftp_url(sshd, root_), options);
  EXPECT_NE(read_file(options.known_hosts).find("ssh-ed25519"), std::string::npos);
}

TEST_F(SftpTransportTest, ChangedHostKeyIsRefused) {
  TestSshd& sshd = shared_sshd();
  // known_hosts claims the server has a different key (the client's).
  std::istringstream pub(read_file(sshd.client_key_path() + ".pub"));
  std::string type, blob;
  pub >> type >> blob;
  const std::string kh = tmp_.path() + "/known_hosts";
  std::ofstream(kh) << "[127.0.0.1]:" << sshd.port() << " " << type << " " << blob << "\n";
  TransportOptions options = test::sftp_options(sshd);
  options.known_hosts = kh;
  options.accept_new_host_key = true;  // must not matter for a CHANGED key
  std::string msg =
      expect_error(ErrorCode::kUnreachable, [&] { open_transport(sftp_url(sshd, root_), options); });
  EXPECT_NE(msg.find("HOST KEY CHANGED"), std::string::npos) << msg;
  EXPECT_NE(msg.find("possible attack"), std::string::npos) << msg;
  EXPECT_NE(msg.find(sshd.host_key_fingerprint()), std::string::npos) << msg;
}

TEST_F(SftpTransportTest, PinnedFingerprint) {
  TestSshd& sshd = shared_sshd();
  TransportOptions options = test::sftp_options(sshd);
  options.known_hosts = sshd.empty_known_hosts_path();  // the pin overrides known_hosts
  options.host_key_fingerprint = sshd.host_key_fingerprint();
  open_transport(sftp_url(sshd, root_), options)->put("pinned", bytes("ok"));
  EXPECT_EQ(read_file(options.known_hosts), "");

  const std::string wrong = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
  options.host_key_fingerprint = wrong;
  std::string msg =
      expect_error(ErrorCode::kUnreachable, [&] { open_transport(sftp_url(sshd, root_), options); });
  EXPECT_NE(msg.find(wrong), std::string::npos) << msg;
  EXPECT_NE(msg.find(sshd.host_key_fingerprint()), std::string::npos) << msg;

  options.host_key_fingerprint = "MD5:aa:bb";
  expect_error(ErrorCode::kUsage, [&] { open_transport(sftp_url(sshd, root_), options); });
}

TEST_F(SftpTransportTest, WrongClientKeyIsRefused) {
  TestSshd& sshd = shared_sshd();
  TransportOptions options = test::sftp_options(sshd);
  options.ssh_identity = sshd.unauthorized_key_path();
  std::string msg =
      expect_error(ErrorCode::kUnreachable, [&] { open_transport(sftp_url(sshd, root_), options); });
  EXPECT_NE(
      msg.find("SSH authentication as " + sshd.user() + " failed with key " + sshd.unauthorized_key_path()),
      std::string::npos)
      << msg;
  options.ssh_identity = tmp_.path() + "/no-such-key";
  expect_error(ErrorCode::kUnreachable, [&] { open_transport(sftp_url(sshd, root_), options); });
}

TEST_F(SftpTransportTest, StoppedServerIsUnreachable) {
  TestSshd sshd;  // own server: this test stops it
  TransportOptions options = test::sftp_options(sshd);
  const std::string url = sftp_url(sshd, root_);
  auto t = open_transport(url, options);
  t->put("before", random_bytes(1000, 1));

  sshd.stop();
  std::string msg = expect_error(ErrorCode::kUnreachable, [&] { open_transport(url, options); });
  EXPECT_NE(msg.find("cannot reach vault " + url), std::string::npos) << msg;
  EXPECT_NE(msg.find("check the host, port and that sshd runs"), std::string::npos) << msg;

  // The open session broke with the server: every operation reports kUnreachable.
  expect_error(ErrorCode::kUnreachable, [&] { t->get("before"); });
  expect_error(ErrorCode::kUnreachable, [&] { t->put("after", random_bytes(300 * 1024, 2)); });
  expect_error(ErrorCode::kUnreachable, [&] { t->size("before"); });
  expect_error(ErrorCode::kUnreachable, [&] { t->list(""); });

  sshd.start();
  auto again = open_transport(url, options);
  EXPECT_EQ(again->get("before"), random_bytes(1000, 1));
}

TEST_F(SftpTransportTest, MissingVaultDirectory) {
  TestSshd& sshd = shared_sshd();
  std::string msg = expect_error(ErrorCode::kUnreachable, [&] {
    open_transport(sftp_url(sshd, tmp_.path() + "/absent"), test::sftp_options(sshd));
  });
  EXPECT_NE(msg.find("does not exist on host 127.0.0.1"), std::string::npos) << msg;
}

TEST_F(SftpTransportTest, Ipv6LiteralAndDefaultPort) {
  TestSshd& sshd = shared_sshd();
  TransportOptions options = test::sftp_options(sshd);
  options.known_hosts = sshd.empty_known_hosts_path();
  // sshd listens on 127.0.0.1 only, so ::1 is refused — the message shows what was parsed.
  std::string msg = expect_error(ErrorCode::kUnreachable, [&] {
    open_transport("sftp://" + sshd.user() + "@[::1]:" + std::to_string(sshd.port()) + "/v", options);
  });
  EXPECT_NE(msg.find("sftp://" + sshd.user() + "@[::1]:" + std::to_string(sshd.port()) + "/v"),
            std::string::npos)
      << msg;
  msg = expect_error(ErrorCode::kUnreachable, [&] { open_transport("sftp://nobody@127.0.0.1/v", options); });
  EXPECT_NE(msg.find("sftp://nobody@127.0.0.1:22/v"), std::string::npos) << msg;
}

// ---- file only, URLs, names ----------------------------------------------------------

TEST(FileTransportTest, MissingRootIsUnreachable) {
  TempDir tmp;
  std::string msg =
      expect_error(ErrorCode::kUnreachable, [&] { make_file_transport(tmp.path() + "/absent", false); });
  EXPECT_EQ(msg, "vault directory " + tmp.path() + "/absent does not exist (run reduit init first?)");
}

TEST(FileTransportTest, RootRemovedWhileOpenIsUnreachable) {
  TempDir tmp;
  auto t = make_file_transport(tmp.path() + "/v", true);
  t->put("a", bytes("x"));
  fs::remove_all(tmp.path() + "/v");
  expect_error(ErrorCode::kUnreachable, [&] { t->get("a"); });
  expect_error(ErrorCode::kUnreachable, [&] { t->put("b", bytes("y")); });
  expect_error(ErrorCode::kUnreachable, [&] { t->list(""); });
}

TEST(OpenTransportTest, MalformedUrlsAreUsageErrors) {
  const char* bad[] = {"",
                       "/srv/vault",
                       "file://relative/path",
                       "file:",
                       "ftp://u@h/x",
                       "sftp://host/path",
                       "sftp://@host/path",
                       "sftp://u@/path",
                       "sftp://u@host",
                       "sftp://u@host:/p",
                       "sftp://u@host:0/p",
                       "sftp://u@host:65536/p",
                       "sftp://u@host:22x/p",
                       "sftp://u@[::1/p",
                       "sftp://u@[::1]x/p",
                       "sftp://u@[]/p"};
  for (const char* url : bad) {
    SCOPED_TRACE(url);
    std::string msg = expect_error(ErrorCode::kUsage, [&] { open_transport(url, TransportOptions{}); });
    EXPECT_NE(msg.find(std::string("\"") + url + "\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("sftp://backup@nas.example.org:22/srv/reduit"), std::string::npos) << msg;
  }
}

TEST(OpenTransportTest, FileUrl) {
  TempDir tmp;
  auto t = open_transport("file://" + tmp.path() + "/", TransportOptions{});
  EXPECT_EQ(t->describe(), "file://" + tmp.path());
}

// sftp:// offers AES-GCM first where the CPU has AES-NI and PCLMULQDQ (cheaper for
// both ends than chacha20-poly1305), else OpenSSH's order; every name is one
// OpenSSH's sshd knows (`ssh -Q cipher`).
TEST(SshCiphersTest, AesGcmFirstOnlyWithAesNi) {
  EXPECT_EQ(reduit::ssh_ciphers(true),
            "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
            "aes256-ctr,aes192-ctr,aes128-ctr");
  EXPECT_EQ(reduit::ssh_ciphers(false),
            "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
            "aes256-ctr,aes192-ctr,aes128-ctr");
#if defined(__x86_64__) || defined(__i386__)
  const bool aes_ni = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#else
  const bool aes_ni = false;
#endif
  EXPECT_EQ(reduit::ssh_ciphers(), reduit::ssh_ciphers(aes_ni));
  reduit::test::RunResult q = reduit::test::run_command({"/usr/bin/ssh", "-Q", "cipher"});
  ASSERT_EQ(q.status, 0) << q.err;
  std::set<std::string> known;
  std::istringstream lines(q.out);
  for (std::string l; std::getline(lines, l);) known.insert(l);
  std::istringstream names(reduit::ssh_ciphers(true));
  int n = 0;
  for (std::string c; std::getline(names, c, ',');) {
    EXPECT_TRUE(known.count(c)) << c << " is not an OpenSSH cipher";
    ++n;
  }
  EXPECT_EQ(n, 6);
}

TEST(CheckObjectNameTest, AcceptsAndRejects) {
  for (const char* good :
       {"a", "packs/3f/3f1a", "snapshots/2024-01-01T00:00:00Z", "a.b", "...", ".hidden/x", "a b"}) {
    EXPECT_NO_THROW(check_object_name(good)) << good;
  }
  for (const std::string& bad :
       {std::string(""), std::string("/a"), std::string("a/"), std::string("a//b"), std::string("./a"),
        std::string("a/.."), std::string("a\\b"), std::string("\0", 1)}) {
    expect_error(ErrorCode::kVerify, [&] { check_object_name(bad); });
  }
}

}  // namespace
}  // namespace reduit
