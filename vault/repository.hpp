// vault/repository.hpp — a vault opened with keys: sealed objects, packs, indexes,
// snapshots and the lease lock (docs/FORMAT.md is the normative description).
//
// Sealing = zstd (level from the vault config) then ONE OpenPGP message, encrypted
// to the archive keys (data packs) or to the archive keys and the agent key
// (metadata: trees, indexes, snapshots, config), always signed by the agent key.
// Opening verifies, in this order: the SHA-256 of the stored bytes against the
// object's name, the OpenPGP signature (must be the vault's agent key), then the
// decoded structure; blob contents are checked against their HMAC ids by callers
// via blob_bytes().
//
// Not thread-safe; the backup's upload thread opens its own Repository.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vault/crypto.hpp"
#include "vault/format.hpp"
#include "vault/transport.hpp"

namespace reduit {

class DirectGpg;

struct LoadedPack {
  Hash id;
  Bytes plaintext;
  std::vector<PackEntry> entries;
};

/// Location of a blob as given by the vault's index objects.
struct IndexedBlob {
  Hash id;
  Hash pack;
  BlobType type;
  std::uint64_t offset, length;
};

class Repository {
 public:
  /// `gnupghome` selects the keyring (agent key for backups; an archive secret key
  /// for restores). `pinned_agent_key`: when non-empty the vault's agent key must
  /// equal it (protects a fresh-host restore against a substituted vault config).
  Repository(std::unique_ptr<Transport> transport, const std::string& gnupghome,
             const std::string& pinned_agent_key = "");
  ~Repository();

  /// Writes a new vault config (refuses when one exists: kUsage). Resolves the key
  /// specs; the agent secret key must be present; archive keys need only their
  /// public halves. Returns the config written.
  VaultConfig init(const std::vector<std::string>& archive_key_specs, const std::string& agent_key_spec,
                   std::uint64_t pack_size, int zstd_level);

  /// Reads, decrypts and verifies the vault config (imports the agent's public key
  /// from it when the keyring lacks it). Throws kNotFound when the vault has none
  /// ("run reduit init"), kKey when no usable secret key can read it.
  const VaultConfig& load_config();
  /// Uses an already known config (from the catalog) without a vault round trip.
  void set_config(const VaultConfig& c) {
    config_ = c;
    have_config_ = true;
  }
  const VaultConfig& config() const;

  Transport& transport() { return *transport_; }
  Crypto& crypto() { return *crypto_; }

  /// zstd + encrypt + sign. `kind` selects the recipients; a data pack is
  /// filtered first (FORMAT.md §5.1).
  Bytes seal(Bytes plaintext, PackKind kind);
  /// Verifies signature (agent key), decrypts, decompresses.
  Bytes open(const Bytes& stored, const std::string& what);

  /// Seals and stores a metadata object at prefix/<sha256 of stored bytes>.
  Hash put_object(const std::string& prefix, const Bytes& plaintext);
  /// Fetches prefix/<id>, checks its SHA-256 against the name, opens it.
  Bytes get_object(const std::string& prefix, const Hash& id);

  /// Every pack in the vault: id → stored size. Names that are not 64 hex digits
  /// are ignored. `with_sizes` = false skips one size query per pack (one round
  /// trip each over SFTP) and reports 0.
  std::map<Hash, std::uint64_t> list_packs(bool with_sizes = false);
  std::vector<Hash> list_objects(const std::string& prefix);

  /// All index objects merged (sorted by blob id; duplicates kept, newest index
  /// first is not guaranteed — callers try every location).
  std::vector<IndexPack> load_indexes(std::vector<Hash>* index_ids = nullptr);
  /// Every index object (FORMAT.md §6) in listing order, each with the packs it
  /// names in its own order. Errors as get_object.
  std::vector<IndexObject> load_index_objects();

  /// Fetches a pack, verifies its hash and signature, decrypts and parses it.
  LoadedPack load_pack(const Hash& id);
  /// Fetches a pack's stored bytes and checks them against its SHA-256 name
  /// (kVerify "corrupt"); open_pack() does the rest, on any thread with a Crypto.
  /// A pack the vault does not hold is kVerify too (an index or snapshot names it:
  /// data missing from the vault, exit 6), not kNotFound.
  Bytes fetch_pack(const Hash& id);
  /// The GnuPG home given to the constructor ("" = GPGME's default), for threads
  /// that make a Crypto of their own.
  const std::string& gnupghome() const { return gnupghome_; }
  /// The bytes of `entry` in `pack`, checked against the entry's HMAC id.
  std::string_view blob_bytes(const LoadedPack& pack, const PackEntry& entry) const;

  Hash blob_id(const void* data, std::size_t size) const { return hmac_sha256(config().id_key, data, size); }

 private:
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<Crypto> crypto_;
  std::string gnupghome_;
  std::string pinned_agent_key_;
  VaultConfig config_;
  bool have_config_ = false;
};

/// A lease lock on a vault (locks/lease): owner host, pid, start, renewed time.
/// Taken with put_exclusive; renewed by the holder; a lease whose holder is gone
/// (same host and pid not alive) or that was not renewed for `ttl_seconds` is stale
/// and is broken by renaming it aside (only one breaker can win the rename).
class Lease {
 public:
  /// Throws Error(kLockHeld) naming the holder when a live lease exists.
  Lease(Transport& transport, const std::string& purpose, int ttl_seconds = 900);
  ~Lease();  // releases (best effort)
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  /// Rewrites the lease with a fresh renewed time when more than ttl/3 has passed.
  void renew_if_due();
  void release();
  bool broke_stale() const { return broke_stale_; }

 private:
  Bytes encode(std::int64_t renewed) const;
  Transport& transport_;
  std::string purpose_, nonce_, host_;
  int ttl_seconds_;
  std::int64_t started_, last_renew_;
  bool held_ = false, broke_stale_ = false;
};

/// zstd + encrypt + sign as Repository::seal does, for threads that own a Crypto:
/// data packs to the archive keys, metadata also to the agent key; signed by the
/// agent key. A data pack's `plaintext` is first rewritten in place into its
/// filtered form when it holds base64 runs (FORMAT.md §5.1; its capacity is kept,
/// its contents are then that form). The zstd frame goes to gpg from this thread's
/// scratch buffer; the OpenPGP message is written into `reuse` (a sealed pack done
/// with, so its pages are not faulted in again; empty: a new buffer), which also
/// holds the decoded base64 until zstd has read it.
Bytes seal_object(Crypto& crypto, const VaultConfig& config, Bytes& plaintext, PackKind kind,
                  Bytes reuse = {});

/// Verifies the signature (the config's agent key), decrypts and decompresses
/// `stored` as Repository::open does, for threads that own a Crypto. `what` names
/// the object in errors (kKey, kVerify).
/// With `gpg` (may be null), the message is first decrypted by a gpg started
/// directly (DirectGpg::decrypt_verify), which returns the plaintext only when the
/// signature is good and by the agent key; anything else is decided by `crypto`.
Bytes open_object(Crypto& crypto, const VaultConfig& config, const Bytes& stored, const std::string& what,
                  DirectGpg* gpg = nullptr);

/// Opens and parses the stored bytes of pack `id` (already checked against its
/// name: Repository::fetch_pack) as Repository::load_pack does, with `crypto`; a
/// filtered pack (FORMAT.md §5.1) is restored to its plaintext first (kVerify when
/// its table is malformed).
LoadedPack open_pack(Crypto& crypto, const VaultConfig& config, const Hash& id, const Bytes& stored,
                     DirectGpg* gpg = nullptr);

/// seal_object for a thread that seals many packs; one PackSealer per thread.
/// Each object is sealed by a gpg process it starts itself (vault/direct_gpg.hpp):
/// zstd writes the frame straight into the shared memory gpg reads, and gpg writes
/// the message into shared memory too, so GPGME relays nothing and this process
/// forks nothing. The keys are checked once, by a Crypto (the same kKey errors as
/// seal_object). Where the shared memory cannot be made, every object is sealed
/// through GPGME, with the same result.
class PackSealer {
 public:
  explicit PackSealer(std::string gnupghome);
  ~PackSealer();
  PackSealer(const PackSealer&) = delete;
  PackSealer& operator=(const PackSealer&) = delete;

  /// As seal_object: a data pack's `plaintext` is filtered in place, `reuse` (a
  /// sealed pack done with) takes the message. Errors as seal_object, and kInternal
  /// when gpg fails otherwise (DirectGpg::encrypt_sign).
  Bytes seal(const VaultConfig& config, Bytes& plaintext, PackKind kind, Bytes reuse = {});

 private:
  std::string gnupghome_;
  bool tried_ = false;
  std::unique_ptr<DirectGpg> gpg_;
  std::unique_ptr<Crypto> crypto_;
  // The keys last checked, and for which recipients and signer.
  std::vector<std::string> checked_recipients_;
  std::string checked_signer_;
  SealKeys keys_;
};

std::int64_t now_ns();
std::string local_hostname();

}  // namespace reduit
