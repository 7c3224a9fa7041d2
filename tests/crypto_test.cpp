// tests/crypto_test.cpp — vault/crypto.cpp (and vault/direct_gpg.cpp) against real gpg keys.
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
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/gpg_home.hpp"
#include "support/harness.hpp"
#include "vault/compress.hpp"
#include "vault/crypto.hpp"
#include "vault/direct_gpg.hpp"
#include "vault/error.hpp"
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

// The packet structure of an OpenPGP message, as `gpg --list-packets` names it
// ("pubkey enc packet", "encrypted data packet", ...), in order.
std::vector<std::string> packet_kinds(GpgHome& home, const Bytes& message) {
  std::string path = home.write_file("message.gpg", std::string(message.begin(), message.end()));
  std::string listing = home.gpg({"--list-packets", path});
  std::vector<std::string> kinds;
  std::size_t at = 0;
  while ((at = listing.find("\n:", at)) != std::string::npos) {
    std::size_t end = listing.find(':', at + 2);
    kinds.push_back(listing.substr(at + 2, end - at - 2));
    at = end;
  }
  return kinds;
}

// The digest algorithm of a message's signature packet (RFC 4880 §9.4), as
// gpg --list-packets gives it ("digest algo 8, begin of digest ..."); -1 if none.
int signature_digest(GpgHome& home, const Bytes& message) {
  std::string path = home.write_file("message.gpg", std::string(message.begin(), message.end()));
  std::string listing = home.gpg({"--list-packets", path});
  std::size_t at = listing.find(":signature packet:");
  if (at == std::string::npos || (at = listing.find("digest algo ", at)) == std::string::npos) return -1;
  return std::stoi(listing.substr(at + 12));
}

// Packs are signed with SHA-256 where the signing key takes any digest (EdDSA,
// RSA); a key whose digest length is bound to its size (ECDSA P-384) is left to
// gpg, and GPGME's own messages keep gpg's choice (the keys' preference: SHA-512).
TEST_F(CryptoTest, DirectGpgSignsWithSha256OnlyWithKeysThatTakeAnyDigest) {
  std::unique_ptr<DirectGpg> gpg = DirectGpg::start();
  ASSERT_NE(gpg, nullptr);
  Crypto agent(agent_home_->path());
  const SealKeys keys = agent.seal_keys({archive_fpr_}, agent_fpr_);  // ed25519
  EXPECT_TRUE(keys.sha256_signature);
  std::memcpy(gpg->input(10).data(), "0123456789", 10);
  EXPECT_EQ(signature_digest(*archive_home_, gpg->encrypt_sign(10, keys, Bytes())), 8);  // SHA-256
  EXPECT_EQ(signature_digest(*archive_home_, agent.encrypt_sign(to_bytes("0123456789"), {archive_fpr_}, agent_fpr_)),
            10);  // SHA-512

  GpgHome p384;
  p384.gpg({"--quick-gen-key", "P384 <p384@example.org>", "nistp384", "sign", "never"});
  std::istringstream listing(p384.gpg({"--with-colons", "--list-secret-keys", "p384@example.org"}));
  std::string line, p384_fpr;
  while (std::getline(listing, line) && p384_fpr.empty())
    if (line.rfind("fpr:", 0) == 0) p384_fpr = line.substr(12, 40);
  ASSERT_EQ(p384_fpr.size(), 40u);
  p384.import(keys_->export_public(archive_fpr_));
  const SealKeys ecdsa = Crypto(p384.path()).seal_keys({archive_fpr_}, p384_fpr);
  EXPECT_FALSE(ecdsa.sha256_signature);
  std::memcpy(gpg->input(10).data(), "0123456789", 10);
  Bytes sealed = gpg->encrypt_sign(10, ecdsa, Bytes());
  EXPECT_EQ(signature_digest(*archive_home_, sealed), 9);  // gpg matches P-384: SHA-384
  GpgHome reader;
  reader.import(keys_->export_secret(archive_fpr_));
  reader.import(p384.export_public(p384_fpr));
  EXPECT_EQ(Crypto(reader.path()).decrypt_verify(sealed, p384_fpr).plaintext, to_bytes("0123456789"));
}

// vault/direct_gpg.hpp: encrypt+sign by a gpg started directly, through memfds.
TEST_F(CryptoTest, DirectGpgSealsAsCryptoDoesAndSaysWhyGpgRefused) {
  std::unique_ptr<DirectGpg> gpg = DirectGpg::start();
  ASSERT_NE(gpg, nullptr);
  Crypto agent(agent_home_->path()), archive(archive_home_->path());
  const SealKeys keys = agent.seal_keys({archive_fpr_}, agent_fpr_);
  EXPECT_EQ(keys.recipients, std::vector<std::string>{archive_fpr_});
  EXPECT_EQ(keys.signer, agent_fpr_);
  EXPECT_EQ(keys.gnupghome, agent_home_->path());
  // 1000 bytes, the whole 3 MiB (the shared memory grows), then 1000 again: gpg
  // reads exactly the input, not what a longer one left behind.
  Bytes reuse;
  for (std::size_t n : {std::size_t{1000}, plaintext_->size(), std::size_t{1000}}) {
    std::span<std::uint8_t> in = gpg->input(n);
    ASSERT_EQ(in.size(), n);
    std::memcpy(in.data(), plaintext_->data() + (n == 1000 ? 7 : 0), n);
    Bytes out = gpg->encrypt_sign(n, keys, std::move(reuse));
    EXPECT_GT(gpg->last_pid(), 0);
    DecryptResult r = archive.decrypt_verify(out, agent_fpr_);
    ASSERT_EQ(r.plaintext.size(), n);
    EXPECT_EQ(std::memcmp(r.plaintext.data(), plaintext_->data() + (n == 1000 ? 7 : 0), n), 0);
    EXPECT_EQ(r.signer_fingerprint, agent_fpr_);
    reuse = std::move(out);
  }
  // The same packets as GPGME's message: no compression packet, one signature
  // (gpg lists the signature after a literal packet of this size only).
  const std::vector<std::string> expected = {"pubkey enc packet", "encrypted data packet",
                                             "onepass_sig packet", "literal data packet", "signature packet"};
  std::memcpy(gpg->input(10).data(), "0123456789", 10);
  EXPECT_EQ(packet_kinds(*archive_home_, gpg->encrypt_sign(10, keys, std::move(reuse))), expected);
  EXPECT_EQ(
      packet_kinds(*archive_home_, agent.encrypt_sign(to_bytes("0123456789"), {archive_fpr_}, agent_fpr_)),
      expected);

  // gpg's own refusals (keys seal_keys would have refused first).
  const std::string unknown = "0123456789ABCDEF0123456789ABCDEF01234567";
  gpg->input(1)[0] = 'x';
  Error recp = expect_error([&] {
    gpg->encrypt_sign(1, {{unknown}, agent_fpr_, agent_home_->path()}, Bytes());
  });
  EXPECT_EQ(recp.code(), ErrorCode::kKey);
  EXPECT_EQ(std::string(recp.what()), "cannot encrypt to " + unknown +
                                          " (not found): check the key in GNUPGHOME=" + agent_home_->path());
  gpg->input(1)[0] = 'x';
  Error sgnr = expect_error([&] {
    gpg->encrypt_sign(1, {{archive_fpr_}, archive_fpr_, agent_home_->path()}, Bytes());
  });
  EXPECT_EQ(sgnr.code(), ErrorCode::kKey);
  EXPECT_EQ(std::string(sgnr.what()),
            "cannot sign with " + archive_fpr_ +
                " (not a secret key): check the secret key in GNUPGHOME=" + agent_home_->path());
  // And seal_keys refuses with encrypt_sign's words.
  Error direct = expect_error([&] { agent.encrypt_sign(to_bytes("x"), {unknown}, agent_fpr_); });
  Error checked = expect_error([&] { agent.seal_keys({unknown}, agent_fpr_); });
  EXPECT_EQ(checked.code(), ErrorCode::kKey);
  EXPECT_EQ(std::string(checked.what()), std::string(direct.what()));
  EXPECT_EQ(std::string(expect_error([&] { agent.seal_keys({archive_fpr_}, archive_fpr_); }).what()),
            "the secret key of signer " + archive_fpr_ + " is not in GNUPGHOME=" + agent_home_->path() +
                ": import it with gpg --import");
}

// DirectGpg::decrypt_verify: the plaintext only for a message that decrypts, is
// integrity-protected and carries one good signature by the expected key; nullopt
// for everything else (the caller then asks Crypto, which says why).
TEST_F(CryptoTest, DirectGpgDecryptAcceptsOnlyAGoodSignatureByTheExpectedKey) {
  std::unique_ptr<DirectGpg> gpg = DirectGpg::start();
  ASSERT_NE(gpg, nullptr);
  const std::string home = archive_home_->path();
  std::optional<Bytes> good = gpg->decrypt_verify(*ciphertext_, home, agent_fpr_);
  ASSERT_TRUE(good.has_value());
  EXPECT_TRUE(*good == *plaintext_);
  // Lower case names the same key.
  std::string lower = agent_fpr_;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_TRUE(gpg->decrypt_verify(*ciphertext_, home, lower).has_value());
  // Another expected signer, none, or no input.
  EXPECT_FALSE(gpg->decrypt_verify(*ciphertext_, home, archive_fpr_).has_value());
  EXPECT_FALSE(gpg->decrypt_verify(*ciphertext_, home, "").has_value());
  EXPECT_FALSE(gpg->decrypt_verify(Bytes(), home, agent_fpr_).has_value());
  // A flipped byte in the middle (the MDC fails) and a truncated message.
  Bytes flipped = *ciphertext_;
  flipped[flipped.size() / 2] ^= 0x01;
  EXPECT_FALSE(gpg->decrypt_verify(flipped, home, agent_fpr_).has_value());
  Bytes cut(ciphertext_->begin(),
            ciphertext_->begin() + static_cast<std::ptrdiff_t>(ciphertext_->size() - 100));
  EXPECT_FALSE(gpg->decrypt_verify(cut, home, agent_fpr_).has_value());
  // Crypto then says what is wrong.
  Crypto archive(home);
  EXPECT_EQ(expect_error([&] { archive.decrypt_verify(flipped, agent_fpr_); }).code(), ErrorCode::kVerify);
  // Encrypted but not signed; and without the secret key.
  Bytes unsigned_message =
      to_bytes(agent_home_->gpg({"--armor", "--trust-model", "always", "--encrypt", "-r", archive_fpr_,
                                 "--output", "-", agent_home_->write_file("plain.txt", "not signed\n")}));
  EXPECT_FALSE(gpg->decrypt_verify(unsigned_message, home, agent_fpr_).has_value());
  EXPECT_FALSE(gpg->decrypt_verify(*ciphertext_, public_home_->path(), agent_fpr_).has_value());
  // The signer's public key not in the keyring (ERRSIG).
  EXPECT_FALSE(gpg->decrypt_verify(*ciphertext_, archive_only_->path(), agent_fpr_).has_value());
  // Signed by the archive key instead: a good signature, but not the agent's.
  Crypto archive_signs(home);
  Bytes other = archive_signs.encrypt_sign(to_bytes("from the wrong key"), {archive_fpr_}, archive_fpr_);
  EXPECT_FALSE(gpg->decrypt_verify(other, home, agent_fpr_).has_value());
  std::optional<Bytes> theirs = gpg->decrypt_verify(other, home, archive_fpr_);
  ASSERT_TRUE(theirs.has_value());
  EXPECT_TRUE(*theirs == to_bytes("from the wrong key"));
}

// A gpg that dies, fails or claims success without a signature: kInternal naming
// the program, its pid, how it ended and what it said. (Stand-ins: a real gpg does
// not do these on demand.)
TEST_F(CryptoTest, DirectGpgReportsAGpgThatDiesOrFails) {
  GpgHome scratch;
  auto script = [&](const std::string& name, const std::string& body) {
    std::string path = scratch.write_file(name, "#!/bin/sh\n" + body + "\n");
    EXPECT_EQ(::chmod(path.c_str(), 0755), 0);
    return path;
  };
  const SealKeys keys{{archive_fpr_}, agent_fpr_, agent_home_->path()};
  const std::string where = " while encrypting and signing in GNUPGHOME=" + agent_home_->path();
  struct Case {
    std::string body;
    ErrorCode code;
    std::string said;  // after "<program> (pid N) "
  };
  const std::vector<Case> cases = {
      {"kill -9 $$", ErrorCode::kInternal, "was killed by signal 9" + where},
      {"echo '[GNUPG:] FAILURE sign 33554433' >&3; echo 'gpg: signing failed: General error' >&2; exit 2",
       ErrorCode::kInternal,
       "exited with status 2" + where + ": sign: General error; gpg: signing failed: General error"},
      {"echo 'gpg: something else' >&2; exit 2", ErrorCode::kInternal,
       "exited with status 2" + where + ": gpg: something else"},
      // What gpg 2.2.40 writes when its trustdb is checked after the failure (the
      // failure itself without a line end).
      {"printf 'gpg: Sorry, we are in batchmode - can'\\''t get inputgpg: checking the trustdb\\ngpg: depth: "
       "0  "
       "valid:   1\\n' >&2; exit 2",
       ErrorCode::kInternal,
       "exited with status 2" + where + ": gpg: Sorry, we are in batchmode - can't get input"},
      {"cat >/dev/null; echo '[GNUPG:] END_ENCRYPTION' >&3", ErrorCode::kInternal,
       "exited 0 without SIG_CREATED" + where},
      {"cat; echo '[GNUPG:] SIG_CREATED S 22 10 00 1 X' >&3; echo '[GNUPG:] END_ENCRYPTION' >&3",
       ErrorCode::kInternal, "wrote 5 bytes for an input of 5"},
  };
  for (const Case& c : cases) {
    const std::string program = script("gpg-" + std::to_string(&c - cases.data()), c.body);
    std::unique_ptr<DirectGpg> gpg = DirectGpg::start(program);
    ASSERT_NE(gpg, nullptr);
    std::memcpy(gpg->input(5).data(), "hello", 5);
    Error e = expect_error([&] { gpg->encrypt_sign(5, keys, Bytes()); });
    EXPECT_EQ(e.code(), c.code);
    EXPECT_EQ(std::string(e.what()), program + " (pid " + std::to_string(gpg->last_pid()) + ") " + c.said);
  }
  // A passphrase-protected key cannot be used unattended: a key error, from a real
  // gpg and such a key (gpg asks, in batch mode cannot, and exits 2).
  {
    GpgHome locked;
    locked.gpg({"--passphrase", "secret", "--pinentry-mode", "loopback", "--quick-gen-key",
                "Locked <l@example.test>", "default", "default", "0"});
    std::string listing = locked.gpg({"--list-keys", "--with-colons"});
    std::size_t at = listing.find("\nfpr:");
    ASSERT_NE(at, std::string::npos);
    const std::string fpr = listing.substr(at + 13, 40);
    ASSERT_TRUE(is_fpr(fpr)) << fpr;
    std::unique_ptr<DirectGpg> asks = DirectGpg::start();
    asks->input(1)[0] = 'x';
    Error e = expect_error([&] { asks->encrypt_sign(1, {{fpr}, fpr, locked.path()}, Bytes()); });
    EXPECT_EQ(e.code(), ErrorCode::kKey);
    EXPECT_EQ(std::string(e.what()),
              "encrypt+sign in GNUPGHOME=" + locked.path() + " failed: the secret key of " + fpr +
                  " is protected by a passphrase, and reduit signs unattended: use an agent "
                  "key without one (gpg --passwd)");
  }
  // A FAILURE code that names a key problem is a key error too.
  std::unique_ptr<DirectGpg> gpg =
      DirectGpg::start(script("gpg-nopass", "echo '[GNUPG:] FAILURE sign 33554609' >&3; exit 2"));
  gpg->input(1)[0] = 'x';
  Error nopass = expect_error([&] { gpg->encrypt_sign(1, keys, Bytes()); });
  EXPECT_EQ(nopass.code(), ErrorCode::kKey);
  EXPECT_EQ(std::string(nopass.what()),
            "encrypt+sign in GNUPGHOME=" + agent_home_->path() + " failed: No passphrase given");
}

// PackSealer: every object through a gpg it starts itself (zstd writes the frame
// into gpg's shared memory: no scratch buffer); each opens to its plaintext
// (metadata: the agent key is a recipient, so the backup host's home reads it).
TEST_F(CryptoTest, PackSealerSealsThroughDirectGpgWhatOpenObjectReads) {
  VaultConfig vc;
  vc.archive_keys = {archive_fpr_};
  vc.agent_key = agent_fpr_;
  Bytes text;
  for (int i = 0; i < 20000; ++i) {
    std::string line = "Subject: tree entry " + std::to_string(i) + "\n";
    append_bytes(text, line.data(), line.size());
  }
  PackSealer sealer(agent_home_->path());
  Crypto agent(agent_home_->path());
  zstd_release_scratch();  // earlier tests on this thread may have grown it
  Bytes plain = text;
  Bytes sealed = sealer.seal(vc, plain, PackKind::kMetadata);
  EXPECT_EQ(zstd_scratch_bytes(), 0u);
  EXPECT_TRUE(open_object(agent, vc, sealed, "object") == text);
  // A second, larger object through the same memory (it grows), then a smaller one.
  Bytes more = text;
  append_bytes(more, text.data(), text.size());
  Bytes twice = more;
  EXPECT_TRUE(open_object(agent, vc, sealer.seal(vc, twice, PackKind::kMetadata, std::move(sealed)),
                          "object") == more);
  Bytes once = text;
  EXPECT_TRUE(open_object(agent, vc, sealer.seal(vc, once, PackKind::kMetadata), "object") == text);
  // A recipient that is not in the keyring: seal_object's key error, before gpg runs.
  VaultConfig other = vc;
  other.archive_keys = {"0123456789ABCDEF0123456789ABCDEF01234567"};
  Bytes x = text;
  Error e = expect_error([&] { sealer.seal(other, x, PackKind::kMetadata); });
  EXPECT_EQ(e.code(), ErrorCode::kKey);
  EXPECT_EQ(std::string(e.what()),
            "no public key 0123456789ABCDEF0123456789ABCDEF01234567 in GNUPGHOME=" + agent_home_->path() +
                ": import it with gpg --import, or check the fingerprint");
}

}  // namespace
}  // namespace reduit
