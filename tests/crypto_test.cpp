// tests/crypto_test.cpp — vault/crypto.cpp (and vault/gpg_helper.cpp) against real gpg keys.
//
// Two keys are generated once per suite in a "keys" home: archive (recipient of
// everything) and agent (signer, extra recipient of metadata). Each test works in
// one of these homes:
//   agent_home   — agent secret + archive public   (the backup host)
//   archive_home — archive secret + agent public   (the restore host)
//   archive_only — archive secret, no agent key     (bootstrap: config not yet read)
//   public_home  — both public keys, no secret key
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/gpg_home.hpp"
#include "support/harness.hpp"
#include "vault/compress.hpp"
#include "vault/crypto.hpp"
#include "vault/error.hpp"
#include "vault/gpg_helper.hpp"
#include "vault/repository.hpp"

namespace reduit {
namespace {

using test::GpgHome;

Bytes random_bytes(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  Bytes b(n);
  for (size_t i = 0; i < n; i += 8) {
    std::uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) b[i + j] = static_cast<std::uint8_t>(v >> (8 * j));
  }
  return b;
}

Bytes to_bytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool is_fpr(const std::string& s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
         });
}

// Runs `f`, expects reduit::Error, returns it (fails the test otherwise).
template <typename F>
Error expect_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected reduit::Error, nothing was thrown";
  return Error(ErrorCode::kInternal, "<not thrown>");
}

class CryptoTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    keys_ = std::make_unique<GpgHome>();
    archive_fpr_ = keys_->generate_key("Reduit Archive <archive@example.org>");
    agent_fpr_ = keys_->generate_key("Reduit Agent <agent@example.org>");
    const std::string archive_pub = keys_->export_public(archive_fpr_);
    const std::string archive_sec = keys_->export_secret(archive_fpr_);
    const std::string agent_pub = keys_->export_public(agent_fpr_);
    const std::string agent_sec = keys_->export_secret(agent_fpr_);

    agent_home_ = std::make_unique<GpgHome>();
    agent_home_->import(agent_sec);
    agent_home_->import(archive_pub);
    archive_home_ = std::make_unique<GpgHome>();
    archive_home_->import(archive_sec);
    archive_home_->import(agent_pub);
    archive_only_ = std::make_unique<GpgHome>();
    archive_only_->import(archive_sec);
    public_home_ = std::make_unique<GpgHome>();
    public_home_->import(archive_pub);
    public_home_->import(agent_pub);

    plaintext_ = new Bytes(random_bytes(3 << 20, 42));
    Crypto c(agent_home_->path());
    ciphertext_ = new Bytes(c.encrypt_sign(*plaintext_, {archive_fpr_, agent_fpr_}, agent_fpr_));
  }

  static void TearDownTestSuite() {
    delete plaintext_;
    delete ciphertext_;
    plaintext_ = ciphertext_ = nullptr;
    keys_.reset();
    agent_home_.reset();
    archive_home_.reset();
    archive_only_.reset();
    public_home_.reset();
  }

  static inline std::unique_ptr<GpgHome> keys_, agent_home_, archive_home_, archive_only_, public_home_;
  static inline std::string archive_fpr_, agent_fpr_;
  static inline Bytes* plaintext_ = nullptr;   // 3 MiB random
  static inline Bytes* ciphertext_ = nullptr;  // to archive+agent, signed by agent
};

TEST_F(CryptoTest, GeneratedFingerprintsAreFullUppercaseHex) {
  EXPECT_TRUE(is_fpr(archive_fpr_)) << archive_fpr_;
  EXPECT_TRUE(is_fpr(agent_fpr_)) << agent_fpr_;
  EXPECT_NE(archive_fpr_, agent_fpr_);
}

TEST_F(CryptoTest, RoundTripThreeMiBInArchiveHome) {
  Crypto c(archive_home_->path());
  ASSERT_FALSE(c.has_secret_key(agent_fpr_));
  ASSERT_TRUE(c.has_secret_key(archive_fpr_));
  DecryptResult r = c.decrypt_verify(*ciphertext_, agent_fpr_);
  EXPECT_EQ(r.plaintext.size(), plaintext_->size());
  EXPECT_TRUE(r.plaintext == *plaintext_);
  EXPECT_EQ(r.signer_fingerprint, agent_fpr_);
  EXPECT_TRUE(r.signature_checked);

  // Without an expected signer, any valid signature is accepted and named.
  DecryptResult any = c.decrypt_verify(*ciphertext_, "");
  EXPECT_TRUE(any.plaintext == *plaintext_);
  EXPECT_EQ(any.signer_fingerprint, agent_fpr_);
  EXPECT_TRUE(any.signature_checked);
  // The vault config's first pass: the key is known, so the signature is checked.
  EXPECT_TRUE(c.decrypt_verify(*ciphertext_, "", /*allow_unknown_signer=*/true).signature_checked);
}

TEST_F(CryptoTest, CiphertextIsBinaryAndOnlySlightlyLarger) {
  ASSERT_FALSE(ciphertext_->empty());
  // Binary OpenPGP: first byte is a packet tag (bit 7 set), not '-' of an armor.
  EXPECT_NE((*ciphertext_)[0] & 0x80, 0);
  EXPECT_GT(ciphertext_->size(), plaintext_->size());
  EXPECT_LT(ciphertext_->size(), plaintext_->size() + 16 * 1024);
}

TEST_F(CryptoTest, BackupHostEncryptsWithoutArchiveSecretKey) {
  Crypto c(agent_home_->path());
  EXPECT_FALSE(c.has_secret_key(archive_fpr_));
  EXPECT_TRUE(c.has_secret_key(agent_fpr_));
  Bytes msg = to_bytes("tree object");
  Bytes ct = c.encrypt_sign(msg, {archive_fpr_, agent_fpr_}, agent_fpr_);
  // The agent is a recipient of metadata, so the backup host reads it back itself.
  DecryptResult self = c.decrypt_verify(ct, agent_fpr_);
  EXPECT_EQ(self.plaintext, msg);
  EXPECT_EQ(self.signer_fingerprint, agent_fpr_);
  // A pack (archive recipient only) is not readable on the backup host.
  Bytes pack = c.encrypt_sign(msg, {archive_fpr_}, agent_fpr_);
  EXPECT_EQ(expect_error([&] { c.decrypt_verify(pack, agent_fpr_); }).code(), ErrorCode::kKey);
  Crypto restore(archive_home_->path());
  EXPECT_EQ(restore.decrypt_verify(pack, agent_fpr_).plaintext, msg);
}

TEST_F(CryptoTest, EmptyPlaintextRoundTrips) {
  Crypto enc(agent_home_->path());
  Bytes ct = enc.encrypt_sign(Bytes{}, {archive_fpr_}, agent_fpr_);
  Crypto dec(archive_home_->path());
  DecryptResult r = dec.decrypt_verify(ct, agent_fpr_);
  EXPECT_TRUE(r.plaintext.empty());
  EXPECT_EQ(r.signer_fingerprint, agent_fpr_);
}

TEST_F(CryptoTest, DecryptWithPublicKeysOnlyThrowsKey) {
  Crypto c(public_home_->path());
  Error e = expect_error([&] { c.decrypt_verify(*ciphertext_, agent_fpr_); });
  EXPECT_EQ(e.code(), ErrorCode::kKey) << e.what();
  std::string msg = e.what();
  EXPECT_NE(msg.find("cannot decrypt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("GNUPGHOME=" + public_home_->path()), std::string::npos) << msg;
  // Names the recipients' key ids (the low 64 bits of a subkey fingerprint).
  EXPECT_NE(msg.find("key ids "), std::string::npos) << msg;
}

TEST_F(CryptoTest, TamperedCiphertextThrowsVerify) {
  Crypto c(archive_home_->path());
  Bytes bad = *ciphertext_;
  bad[bad.size() / 2] ^= 0x01;
  Error e = expect_error([&] { c.decrypt_verify(bad, agent_fpr_); });
  // MDC failure: gpg reports DECRYPTION_FAILED with a usable secret key → corrupt.
  EXPECT_EQ(e.code(), ErrorCode::kVerify) << e.what();
  EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
  // Also in the trailing signature / MDC packets.
  for (size_t back : {1u, 30u, 100u}) {
    Bytes b = *ciphertext_;
    b[b.size() - back] ^= 0x80;
    EXPECT_EQ(expect_error([&] { c.decrypt_verify(b, agent_fpr_); }).code(), ErrorCode::kVerify)
        << "flip at size-" << back;
  }
}

TEST_F(CryptoTest, MessageWithoutMdcThrowsVerify) {
  // --rfc2440 makes gpg 2.2 emit a legacy encrypted packet (tag 9, no MDC).
  std::string file = agent_home_->write_file("legacy.txt", "no integrity protection");
  agent_home_->gpg({"--rfc2440", "--trust-model", "always", "--local-user", agent_fpr_, "--recipient",
                    archive_fpr_, "--output", file + ".gpg", "--sign", "--encrypt", file});
  std::string packets = archive_home_->gpg({"--ignore-mdc-error", "--list-packets", file + ".gpg"});
  ASSERT_EQ(packets.find("mdc_method"), std::string::npos) << packets;
  Bytes msg = read_file(file + ".gpg");
  Crypto c(archive_home_->path());
  Error e = expect_error([&] { c.decrypt_verify(msg, agent_fpr_); });
  EXPECT_EQ(e.code(), ErrorCode::kVerify) << e.what();
}

TEST_F(CryptoTest, TruncatedAndGarbageCiphertextThrowVerify) {
  Crypto c(archive_home_->path());
  Bytes cut(ciphertext_->begin(), ciphertext_->begin() + ciphertext_->size() / 2);
  Error e1 = expect_error([&] { c.decrypt_verify(cut, agent_fpr_); });
  EXPECT_EQ(e1.code(), ErrorCode::kVerify) << e1.what();
  Error e2 = expect_error([&] { c.decrypt_verify(random_bytes(4096, 7), agent_fpr_); });
  EXPECT_EQ(e2.code(), ErrorCode::kVerify) << e2.what();
  Error e3 = expect_error([&] { c.decrypt_verify(Bytes{}, agent_fpr_); });
  EXPECT_EQ(e3.code(), ErrorCode::kVerify) << e3.what();
}

TEST_F(CryptoTest, WrongExpectedSignerThrowsVerify) {
  Crypto c(archive_home_->path());
  Error e = expect_error([&] { c.decrypt_verify(*ciphertext_, archive_fpr_); });
  EXPECT_EQ(e.code(), ErrorCode::kVerify) << e.what();
  EXPECT_NE(std::string(e.what()).find(archive_fpr_), std::string::npos) << e.what();
}

TEST_F(CryptoTest, UnsignedMessageThrowsVerify) {
  std::string file = agent_home_->write_file("plain.txt", "unsigned");
  agent_home_->gpg(
      {"--trust-model", "always", "--output", file + ".gpg", "--encrypt", "--recipient", archive_fpr_, file});
  Bytes msg = read_file(file + ".gpg");
  Crypto c(archive_home_->path());
  Error e = expect_error([&] { c.decrypt_verify(msg, ""); });
  EXPECT_EQ(e.code(), ErrorCode::kVerify) << e.what();
  EXPECT_NE(std::string(e.what()).find("not signed"), std::string::npos) << e.what();
}

TEST_F(CryptoTest, ResolveUnknownSpecThrowsKeyNamingSpec) {
  Crypto c(archive_home_->path());
  const std::string spec = "nobody@example.org";
  Error e = expect_error([&] { c.resolve_key(spec, false, true); });
  EXPECT_EQ(e.code(), ErrorCode::kKey);
  std::string msg = e.what();
  EXPECT_NE(msg.find("\"" + spec + "\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("GNUPGHOME=" + archive_home_->path()), std::string::npos) << msg;
  EXPECT_NE(msg.find("gpg --import"), std::string::npos) << msg;

  const std::string fpr_spec = "0123456789ABCDEF0123456789ABCDEF01234567";
  Error e2 = expect_error([&] { c.resolve_key(fpr_spec, false, false); });
  EXPECT_EQ(e2.code(), ErrorCode::kKey);
  EXPECT_NE(std::string(e2.what()).find(fpr_spec), std::string::npos) << e2.what();
}

TEST_F(CryptoTest, ResolveByEmailFingerprintAndKeyId) {
  Crypto c(archive_home_->path());
  EXPECT_EQ(c.resolve_key("archive@example.org", false, true), archive_fpr_);
  EXPECT_EQ(c.resolve_key("archive@example.org", true, true), archive_fpr_);
  EXPECT_EQ(c.resolve_key("agent@example.org", false, false), agent_fpr_);
  std::string lower = archive_fpr_;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  EXPECT_EQ(c.resolve_key(lower, false, true), archive_fpr_);
  EXPECT_EQ(c.resolve_key(archive_fpr_.substr(24), false, true), archive_fpr_);  // key id
  // The e-mail match is exact, not a substring: "chive@example.org" is not archive's.
  EXPECT_EQ(expect_error([&] { c.resolve_key("chive@example.org", false, true); }).code(), ErrorCode::kKey);
}

TEST_F(CryptoTest, ResolveSecretWhenOnlyPublicThrowsKey) {
  Crypto c(archive_home_->path());
  Error e = expect_error([&] { c.resolve_key(agent_fpr_, true, false); });
  EXPECT_EQ(e.code(), ErrorCode::kKey);
  EXPECT_NE(std::string(e.what()).find(agent_fpr_), std::string::npos) << e.what();
}

TEST_F(CryptoTest, ResolveAmbiguousSpecThrowsKey) {
  Crypto c(public_home_->path());
  Error e = expect_error([&] { c.resolve_key("example.org", false, false); });
  EXPECT_EQ(e.code(), ErrorCode::kKey);
  std::string msg = e.what();
  EXPECT_NE(msg.find(archive_fpr_), std::string::npos) << msg;
  EXPECT_NE(msg.find(agent_fpr_), std::string::npos) << msg;
}

TEST_F(CryptoTest, EncryptToMissingRecipientOrSignerThrowsKey) {
  Crypto c(agent_home_->path());
  const std::string unknown = "0123456789ABCDEF0123456789ABCDEF01234567";
  Error e = expect_error([&] { c.encrypt_sign(to_bytes("x"), {archive_fpr_, unknown}, agent_fpr_); });
  EXPECT_EQ(e.code(), ErrorCode::kKey);
  EXPECT_NE(std::string(e.what()).find(unknown), std::string::npos) << e.what();
  // archive's secret key is not on the backup host.
  Error e2 = expect_error([&] { c.encrypt_sign(to_bytes("x"), {archive_fpr_}, archive_fpr_); });
  EXPECT_EQ(e2.code(), ErrorCode::kKey);
  EXPECT_NE(std::string(e2.what()).find(archive_fpr_), std::string::npos) << e2.what();
}

TEST_F(CryptoTest, NoCompressedPacket) {
  // Highly compressible input: gpg would compress it unless compression is off.
  Bytes text(1 << 20, 'a');
  Crypto enc(agent_home_->path());
  Bytes ct = enc.encrypt_sign(text, {archive_fpr_}, agent_fpr_);
  EXPECT_GT(ct.size(), text.size());
  std::string file = archive_home_->write_file("nocomp.gpg", std::string(ct.begin(), ct.end()));
  std::string packets = archive_home_->gpg({"--list-packets", file});
  EXPECT_NE(packets.find(":pubkey enc packet:"), std::string::npos) << packets;
  EXPECT_NE(packets.find(":literal data packet:"), std::string::npos) << packets;
  EXPECT_NE(packets.find(":onepass_sig packet:"), std::string::npos) << packets;
  EXPECT_EQ(packets.find("compressed packet"), std::string::npos) << packets;
}

TEST_F(CryptoTest, ExportImportPublicKeyRoundTrip) {
  Crypto src(keys_->path());
  std::string armored = src.export_public_key(agent_fpr_);
  EXPECT_EQ(armored.rfind("-----BEGIN PGP PUBLIC KEY BLOCK-----", 0), 0u) << armored;
  EXPECT_EQ(armored.find("PRIVATE KEY"), std::string::npos);

  GpgHome fresh;
  Crypto dst(fresh.path());
  EXPECT_EQ(expect_error([&] { dst.resolve_key(agent_fpr_, false, false); }).code(), ErrorCode::kKey);
  std::vector<std::string> imported = dst.import_keys(armored);
  ASSERT_EQ(imported.size(), 1u);
  EXPECT_EQ(imported[0], agent_fpr_);
  EXPECT_EQ(dst.resolve_key(agent_fpr_, false, true), agent_fpr_);
  EXPECT_FALSE(dst.has_secret_key(agent_fpr_));
  // Re-importing an unchanged key still reports it.
  EXPECT_EQ(dst.import_keys(armored), imported);
  // And the imported key verifies a signature: decrypting needs archive too.
  dst.import_keys(keys_->export_secret(archive_fpr_));
  EXPECT_EQ(dst.decrypt_verify(*ciphertext_, agent_fpr_).signer_fingerprint, agent_fpr_);

  EXPECT_EQ(expect_error([&] { dst.import_keys("not a key"); }).code(), ErrorCode::kKey);
  EXPECT_EQ(expect_error([&] { src.export_public_key("0123456789ABCDEF0123456789ABCDEF01234567"); }).code(),
            ErrorCode::kKey);
}

TEST_F(CryptoTest, AllowUnknownSignerReturnsIssuerFingerprint) {
  Crypto c(archive_only_->path());
  // With the agent's public key absent, the signature cannot be checked; the
  // bootstrap path accepts it and gets the issuer fingerprint (gpg 2.2 reports the
  // full 40-hex fingerprint from the Issuer Fingerprint subpacket).
  DecryptResult r = c.decrypt_verify(*ciphertext_, "", /*allow_unknown_signer=*/true);
  EXPECT_TRUE(r.plaintext == *plaintext_);
  EXPECT_EQ(r.signer_fingerprint, agent_fpr_);
  EXPECT_FALSE(r.signature_checked);
  DecryptResult r2 = c.decrypt_verify(*ciphertext_, agent_fpr_, true);
  EXPECT_EQ(r2.signer_fingerprint, agent_fpr_);
  EXPECT_FALSE(r2.signature_checked);
  // A different expected signer is still refused.
  EXPECT_EQ(expect_error([&] { c.decrypt_verify(*ciphertext_, archive_fpr_, true); }).code(),
            ErrorCode::kVerify);

  Error e = expect_error([&] { c.decrypt_verify(*ciphertext_, "", false); });
  EXPECT_EQ(e.code(), ErrorCode::kVerify);
  EXPECT_NE(std::string(e.what()).find("unknown key " + agent_fpr_), std::string::npos) << e.what();
  Error e2 = expect_error([&] { c.decrypt_verify(*ciphertext_, agent_fpr_, false); });
  EXPECT_EQ(e2.code(), ErrorCode::kVerify);
}

TEST_F(CryptoTest, OneInstancePerThreadSharingAHome) {
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      try {
        Crypto enc(agent_home_->path());
        Crypto dec(archive_home_->path());
        Bytes msg = random_bytes(100000 + t, t);
        for (int i = 0; i < 3; ++i) {
          DecryptResult r = dec.decrypt_verify(enc.encrypt_sign(msg, {archive_fpr_}, agent_fpr_), agent_fpr_);
          if (r.plaintext == msg && r.signer_fingerprint == agent_fpr_) ++ok[t];
        }
      } catch (const std::exception&) {
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok, std::vector<int>(4, 3));
}

// Contexts and looked-up keys are pooled per GNUPGHOME (crypto.cpp): what one home
// holds must never answer for another, before or after a context is reused.
TEST_F(CryptoTest, PooledContextsAndKeysStayWithTheirHome) {
  {
    Crypto a(agent_home_->path());
    EXPECT_TRUE(a.has_secret_key(agent_fpr_));
    Bytes ct = a.encrypt_sign(to_bytes("pooled"), {archive_fpr_}, agent_fpr_);
    EXPECT_EQ(Crypto(archive_home_->path()).decrypt_verify(ct, agent_fpr_).plaintext, to_bytes("pooled"));
  }
  Crypto other(archive_only_->path());
  EXPECT_FALSE(other.has_secret_key(agent_fpr_));
  EXPECT_EQ(expect_error([&] { other.encrypt_sign(to_bytes("x"), {archive_fpr_}, agent_fpr_); }).code(),
            ErrorCode::kKey);
  Crypto again(agent_home_->path());  // the pooled context of the first block
  EXPECT_TRUE(again.has_secret_key(agent_fpr_));
  EXPECT_FALSE(again.has_secret_key(archive_fpr_));

  // A key imported through one instance is found by another of the same home that
  // looked it up before.
  GpgHome fresh;
  Crypto reader(fresh.path());
  EXPECT_EQ(expect_error([&] { reader.encrypt_sign(to_bytes("x"), {agent_fpr_}, agent_fpr_); }).code(),
            ErrorCode::kKey);
  Crypto(fresh.path()).import_keys(keys_->export_secret(agent_fpr_));
  EXPECT_TRUE(reader.has_secret_key(agent_fpr_));
  EXPECT_EQ(reader.encrypt_sign(to_bytes("x"), {agent_fpr_}, agent_fpr_).empty(), false);
}

// A reused output buffer is cleared first and written in place: the message opens
// to the plaintext alone (none of the buffer's old bytes), in the buffer's own
// storage when its capacity sufficed.
TEST_F(CryptoTest, EncryptIntoAReusedBufferWritesOnlyTheMessage) {
  Crypto agent(agent_home_->path());
  Bytes reuse(plaintext_->size() * 2, 0xee);
  const std::uint8_t* storage = reuse.data();
  Bytes out = agent.encrypt_sign(std::span<const std::uint8_t>(*plaintext_), {archive_fpr_}, agent_fpr_,
                                 std::move(reuse));
  EXPECT_EQ(out.data(), storage);
  EXPECT_LT(out.size(), plaintext_->size() + 16 * 1024);
  Crypto archive(archive_home_->path());
  DecryptResult r = archive.decrypt_verify(out, agent_fpr_);
  EXPECT_TRUE(r.plaintext == *plaintext_);
  EXPECT_EQ(r.signer_fingerprint, agent_fpr_);

  // A buffer that holds the plaintext cannot take the message: it is refused before
  // gpg starts.
  Bytes both(*plaintext_);
  std::span<const std::uint8_t> inside(both.data() + 10, 1000);
  EXPECT_EQ(
      expect_error([&] { agent.encrypt_sign(inside, {archive_fpr_}, agent_fpr_, std::move(both)); }).what(),
      std::string("encrypt_sign: the output buffer holds the plaintext"));
}

// vault/gpg_helper.hpp: encrypt+sign in a helper process started from the reduit
// binary (this test binary has no helper entry point, so it names that binary).
TEST_F(CryptoTest, GpgHelperSealsAsCryptoDoesAndReportsItsErrors) {
  enable_gpg_helpers(test::reduit_binary());
  std::unique_ptr<GpgHelper> helper = GpgHelper::start(agent_home_->path());
  enable_gpg_helpers("");  // the rest of this binary seals in-process
  ASSERT_NE(helper, nullptr);
  EXPECT_EQ(GpgHelper::start(agent_home_->path()), nullptr);
  Crypto archive(archive_home_->path());
  // 1000 bytes, then the whole 3 MiB: the shared memory grows between requests.
  for (std::size_t n : {std::size_t{1000}, plaintext_->size()}) {
    std::span<std::uint8_t> in = helper->input(n);
    ASSERT_EQ(in.size(), n);
    std::memcpy(in.data(), plaintext_->data(), n);
    Bytes out = helper->encrypt_sign(n, {archive_fpr_}, agent_fpr_, Bytes());
    DecryptResult r = archive.decrypt_verify(out, agent_fpr_);
    ASSERT_EQ(r.plaintext.size(), n);
    EXPECT_EQ(std::memcmp(r.plaintext.data(), plaintext_->data(), n), 0);
    EXPECT_EQ(r.signer_fingerprint, agent_fpr_);
  }

  // A key error comes back with Crypto's code and message, and the helper goes on.
  const std::string unknown = "0123456789ABCDEF0123456789ABCDEF01234567";
  Crypto agent(agent_home_->path());
  Error direct = expect_error([&] { agent.encrypt_sign(to_bytes("x"), {unknown}, agent_fpr_); });
  helper->input(1)[0] = 'x';
  Error relayed = expect_error([&] { helper->encrypt_sign(1, {unknown}, agent_fpr_, Bytes()); });
  EXPECT_EQ(relayed.code(), ErrorCode::kKey);
  EXPECT_EQ(std::string(relayed.what()), std::string(direct.what()));
  EXPECT_EQ(archive.decrypt_verify(helper->encrypt_sign(1, {archive_fpr_}, agent_fpr_, Bytes()), agent_fpr_)
                .plaintext,
            to_bytes("x"));

  // A helper that dies is named with its pid and how it ended, and is not used again.
  const pid_t pid = helper->pid();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  // Until it has exited (not reaped: WNOWAIT), so its end of the socket is closed.
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  Error died = expect_error([&] { helper->encrypt_sign(1, {archive_fpr_}, agent_fpr_, Bytes()); });
  EXPECT_EQ(died.code(), ErrorCode::kInternal);
  EXPECT_EQ(std::string(died.what()), "the gpg helper process (pid " + std::to_string(pid) +
                                          ") was killed by signal 9 while taking a request (please report)");
  Error ended = expect_error([&] { helper->encrypt_sign(1, {archive_fpr_}, agent_fpr_, Bytes()); });
  EXPECT_EQ(std::string(ended.what()), "the gpg helper process has ended");
  helper.reset();  // nothing left to wait for
}

// PackSealer: the first object in-process, then through a helper (zstd writes the
// frame into the helper's shared memory); each opens to its plaintext (metadata:
// the agent key is a recipient, so the backup host's home reads it).
TEST_F(CryptoTest, PackSealerThroughAHelperSealsWhatOpenObjectReads) {
  VaultConfig vc;
  vc.archive_keys = {archive_fpr_};
  vc.agent_key = agent_fpr_;
  Bytes text;
  for (int i = 0; i < 20000; ++i) {
    std::string line = "Subject: tree entry " + std::to_string(i) + "\n";
    append_bytes(text, line.data(), line.size());
  }
  enable_gpg_helpers(test::reduit_binary());
  PackSealer sealer(agent_home_->path(), /*in_process=*/1);
  Crypto agent(agent_home_->path());
  zstd_release_scratch();  // earlier tests on this thread may have grown it
  Bytes plain = text;
  Bytes first = sealer.seal(vc, plain, PackKind::kMetadata);  // in-process
  const std::size_t bound = zstd_bound(text.size());
  EXPECT_EQ(zstd_scratch_bytes(), bound + bound / 8);
  Bytes again = text;
  Bytes sealed = sealer.seal(vc, again, PackKind::kMetadata);  // the helper starts
  enable_gpg_helpers("");
  // zstd now writes into the helper's shared memory: the scratch buffer is freed.
  EXPECT_EQ(zstd_scratch_bytes(), 0u);
  EXPECT_TRUE(open_object(agent, vc, first, "object") == text);
  EXPECT_TRUE(open_object(agent, vc, sealed, "object") == text);
  // A second, larger object through the same helper (its shared memory grows).
  Bytes more = text;
  append_bytes(more, text.data(), text.size());
  Bytes twice = more;
  EXPECT_TRUE(open_object(agent, vc, sealer.seal(vc, twice, PackKind::kMetadata), "object") == more);
}

}  // namespace
}  // namespace reduit
