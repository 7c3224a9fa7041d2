// vault/crypto.hpp — OpenPGP encryption and signing of vault objects via GPGME.
//
// Two key roles (docs/FORMAT.md §Keys): archive keys are recipients of every
// object; the agent key signs every object and is an extra recipient of metadata
// (trees, indexes, snapshots, config). One gpg operation per object (a pack is one
// object), never per message. gpg-level compression is always off: reduit
// compresses with zstd before encryption (PLATFORM.md: 24 MB/s with gpg
// compression, 143–245 MB/s without).
//
// Thread-safety: a Crypto instance owns one gpgme_ctx_t and is not thread-safe; use
// one per thread. All instances may share one GNUPGHOME. An instance caches the
// keys it has looked up by fingerprint (gpg --list-keys is a process spawn); the
// cache is dropped by import_keys, so after changing the keyring from outside,
// use a new instance.
//
// Errors: throws reduit::Error with kKey when a key is missing, has no usable
// (sub)key for the operation, is expired/revoked, or when no secret key can decrypt
// a message; kVerify when a signature is missing, bad, or made by a key other than
// the expected signer, and when the message is corrupt, truncated, manipulated
// (MDC failure) or not integrity-protected at all (no MDC); kInternal for
// unexpected GPGME failures. Plaintext is never returned from a failed decryption
// (gpg streams unauthenticated plaintext before its checks; it is discarded).
// A corrupted key id in the recipient (PKESK) packet of our own key reads as
// "not encrypted to a key we have" and therefore gives kKey, not kVerify.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vault/transport.hpp"  // Bytes

namespace reduit {

struct DecryptResult {
  Bytes plaintext;
  std::string signer_fingerprint;  // uppercase hex fingerprint of the valid signer
  /// false only for a signature accepted unchecked under `allow_unknown_signer`
  /// (its key not in the keyring); true when the signature was verified.
  bool signature_checked = true;
};

/// The keys of an encrypt+sign as gpg is given them (`-r`, `-u`): primary
/// fingerprints, uppercase hex, each checked as Crypto::encrypt_sign checks it.
struct SealKeys {
  std::vector<std::string> recipients;
  std::string signer;
  std::string gnupghome;  // as the Crypto was given it (empty = gpg's default)
  /// Every signing-capable key of `signer` is RSA or EdDSA, which sign a digest of
  /// any length: sign with SHA-256 (RFC 4880 §9.4 algorithm 8), which SHA-NI
  /// computes at about twice SHA-512's speed. Otherwise (DSA, ECDSA: the digest
  /// must be as long as the key's q) gpg chooses.
  bool sha256_signature = false;
};

class Crypto {
 public:
  /// `gnupghome` empty = GPGME's default ($GNUPGHOME or ~/.gnupg). Takes an idle
  /// context for that home from the process's pool when there is one (keys it looked
  /// up stay cached up to 60 s, and never past an import_keys); the destructor
  /// returns it. One Crypto is used by one thread at a time.
  explicit Crypto(const std::string& gnupghome);
  ~Crypto();
  Crypto(const Crypto&) = delete;
  Crypto& operator=(const Crypto&) = delete;

  /// Resolves a key spec (fingerprint, key id, or e-mail) to the primary key's
  /// full uppercase fingerprint. A bare e-mail ("a@b.org") matches that address
  /// exactly (gpg's "<a@b.org>" form), not as a substring; other specs are gpg
  /// patterns. `secret` = require the secret key to be present (with
  /// `for_encryption`, the secret part of an encryption subkey). `for_encryption` =
  /// require a usable encryption subkey; no capability is checked otherwise.
  /// Throws kKey when no key, several keys, or an unusable (expired, revoked,
  /// disabled, invalid) key matches; the message names the spec, the GNUPGHOME and
  /// what to do ("import it with gpg --import").
  std::string resolve_key(const std::string& spec, bool secret, bool for_encryption);

  /// True when the secret key for `fingerprint` is in the keyring.
  bool has_secret_key(const std::string& fingerprint);

  /// Encrypts `plaintext` to every fingerprint in `recipients` (always-trust, no
  /// compression, binary output) and signs it with `signer` (fingerprint, secret
  /// key must be present) — one OpenPGP message (RFC 4880 §11.3).
  Bytes encrypt_sign(const Bytes& plaintext, const std::vector<std::string>& recipients,
                     const std::string& signer);

  /// The same, writing the message into `out` (cleared first; a buffer reused from
  /// an earlier message keeps its pages, so none are faulted in afresh). `out` must
  /// not hold `plaintext`: clearing it would overwrite the input while gpg reads it
  /// (Error kInternal).
  Bytes encrypt_sign(std::span<const std::uint8_t> plaintext, const std::vector<std::string>& recipients,
                     const std::string& signer, Bytes out);

  /// The checks encrypt_sign makes of `recipients` and `signer`, with the same
  /// kKey errors (no key, unusable, cannot encrypt or sign, no secret key), for a
  /// caller that runs gpg itself (vault/direct_gpg.hpp). kInternal when
  /// `recipients` is empty.
  SealKeys seal_keys(const std::vector<std::string>& recipients, const std::string& signer);

  /// The GNUPGHOME this Crypto was made for, as given (empty = gpg's default).
  const std::string& gnupghome() const;

  /// The gpg program GPGME runs for OpenPGP (an absolute path, /usr/bin/gpg on
  /// Debian). kInternal when GPGME names none.
  static std::string gpg_program();

  /// Decrypts and verifies. When `expected_signer` (a primary fingerprint) is
  /// non-empty, the message must carry a valid signature by that key or one of its
  /// subkeys (kVerify otherwise). When it is empty, a valid signature by any key in
  /// the keyring is accepted. signer_fingerprint is the signing key's primary
  /// fingerprint. An unsigned message, a bad signature or an unknown signer key
  /// gives kVerify. Key validity (web of trust) is ignored: a good signature from a
  /// key in the keyring is enough.
  /// `allow_unknown_signer` = accept a signature whose public key is not in the
  /// keyring; signer_fingerprint then holds the issuer fingerprint as gpg reports
  /// it (gpg 2.2: the full 40-hex fingerprint of the signing key, from the Issuer
  /// Fingerprint subpacket). Such a signature is NOT cryptographically checked —
  /// anyone can write that subpacket: the caller must import the embedded key,
  /// check its fingerprint and decrypt again with `expected_signer` set
  /// (signature_checked says which case it was). Used once
  /// to bootstrap the vault config, which carries the agent's public key.
  DecryptResult decrypt_verify(const Bytes& ciphertext, const std::string& expected_signer,
                               bool allow_unknown_signer = false);

  /// A detached, ASCII-armored OpenPGP signature of `data` (RFC 4880 §5.2.4,
  /// signature type 0x00 "binary document"; §6.2 armor "BEGIN PGP SIGNATURE") by
  /// `signer` (fingerprint; its secret key must be present). `gpg --verify SIG
  /// FILE` checks it. Throws kKey when the key is missing, expired, revoked or
  /// cannot sign.
  std::string sign_detached(std::string_view data, const std::string& signer);

  /// Verifies a detached signature (armored or binary) over `data`. When
  /// `expected_signer` is non-empty the signature must be by that key (or one of
  /// its subkeys). Returns the signer's primary fingerprint. Throws kVerify when
  /// the signature is bad, missing, by an unknown or another key.
  std::string verify_detached(std::string_view data, std::string_view signature,
                              const std::string& expected_signer);

  /// Expiry of the primary key of `fingerprint` (Unix seconds; 0 = never). Throws
  /// kKey when the key is not in the keyring.
  std::int64_t key_expires(const std::string& fingerprint);

  /// The algorithms of the key `fingerprint`, primary key first, one entry per
  /// (sub)key as GnuPG names them with its use: "ed25519 sign", "cv25519 encrypt"
  /// (gpgme_pubkey_algo_string; RFC 4880 §9.1, RFC 9580 §9.1). For reports. Throws
  /// kKey when the key is not in the keyring.
  std::vector<std::string> key_algorithms(const std::string& fingerprint);

  /// ASCII-armored public key of `fingerprint` (for embedding in the vault config).
  /// Throws kKey when the key is not in the keyring.
  std::string export_public_key(const std::string& fingerprint);

  /// Imports armored or binary key material; returns the primary fingerprints of
  /// the keys imported or already present unchanged (uppercase, no duplicates).
  /// Throws kKey when the data holds no OpenPGP key.
  std::vector<std::string> import_keys(const std::string& key_data);

  struct Impl;  // a GPGME context and its key caches; pooled per GNUPGHOME (crypto.cpp)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace reduit
