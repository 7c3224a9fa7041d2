#include "vault/repository.hpp"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <nlohmann/json.hpp>

#include "vault/compress.hpp"
#include "vault/direct_gpg.hpp"
#include "vault/error.hpp"
#include "vault/pack_filter.hpp"

namespace reduit {

std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string local_hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

namespace {
bool same_fpr(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return std::equal(a.begin(), a.end(), b.begin(),
                    [](char x, char y) { return std::toupper(x) == std::toupper(y); });
}
}  // namespace

Repository::Repository(std::unique_ptr<Transport> transport, const std::string& gnupghome,
                       const std::string& pinned_agent_key)
    : transport_(std::move(transport)),
      crypto_(std::make_unique<Crypto>(gnupghome)),
      gnupghome_(gnupghome),
      pinned_agent_key_(pinned_agent_key) {}

Repository::~Repository() = default;

const VaultConfig& Repository::config() const {
  if (!have_config_) throw Error(ErrorCode::kInternal, "vault config not loaded");
  return config_;
}

VaultConfig Repository::init(const std::vector<std::string>& archive_key_specs,
                             const std::string& agent_key_spec, std::uint64_t pack_size, int zstd_level) {
  if (transport_->size(kConfigName)) {
    throw Error(ErrorCode::kUsage,
                "vault " + transport_->describe() + " is already initialised (it has a config object)");
  }
  if (archive_key_specs.empty()) {
    throw Error(ErrorCode::kUsage, "init needs at least one --recipient (an archive key)");
  }
  VaultConfig c;
  for (const auto& spec : archive_key_specs) {
    c.archive_keys.push_back(crypto_->resolve_key(spec, /*secret=*/false, /*for_encryption=*/true));
  }
  c.agent_key = crypto_->resolve_key(agent_key_spec, /*secret=*/true, /*for_encryption=*/true);
  c.agent_public_key = crypto_->export_public_key(c.agent_key);
  Hash vid = random_hash();
  c.vault_id = to_hex(vid.data(), 16);
  c.id_key = random_hash();
  c.pack_size = pack_size;
  c.zstd_level = zstd_level;
  c.created_ns = now_ns();
  config_ = c;
  have_config_ = true;
  std::string text = encode_config(c);
  Bytes sealed = seal(Bytes(text.begin(), text.end()), PackKind::kMetadata);
  if (!transport_->put_exclusive(kConfigName, sealed)) {
    throw Error(ErrorCode::kUsage, "vault " + transport_->describe() + " was initialised concurrently");
  }
  return c;
}

const VaultConfig& Repository::load_config() {
  Bytes stored;
  try {
    stored = transport_->get(kConfigName);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kNotFound) {
      throw Error(ErrorCode::kUsage, "vault " + transport_->describe() +
                                         " is not initialised (no config object): run 'reduit init' first");
    }
    throw;
  }
  // First pass accepts an unknown signer: the config carries the agent's public key.
  DecryptResult r = crypto_->decrypt_verify(stored, "", /*allow_unknown_signer=*/true);
  VaultConfig c = decode_config(zstd_decompress(r.plaintext, 1 << 24));
  if (!pinned_agent_key_.empty() && !same_fpr(pinned_agent_key_, c.agent_key)) {
    throw Error(ErrorCode::kVerify, "vault config names agent key " + c.agent_key +
                                        " but the configured agent key is " + pinned_agent_key_);
  }
  // The first pass found a valid signature by the agent key when its public key is
  // in the keyring already (every run but the first on a host): that is what the
  // second pass checks, so the import and the second gpg run are skipped (3 of the
  // 15–20 gpg processes of a one-mailbox restore, docs/PERFORMANCE.md).
  if (!r.signature_checked || !same_fpr(r.signer_fingerprint, c.agent_key)) {
    crypto_->import_keys(c.agent_public_key);
    // Second pass: the signature must now verify as made by the agent key itself.
    crypto_->decrypt_verify(stored, c.agent_key);
  }
  config_ = std::move(c);
  have_config_ = true;
  return config_;
}

namespace {
// The recipients of an object of `kind`; a data pack's plaintext is filtered.
std::vector<std::string> prepare_seal(const VaultConfig& c, Bytes& plaintext, PackKind kind, Bytes& reuse) {
  std::vector<std::string> recipients = c.archive_keys;
  if (kind == PackKind::kMetadata) {
    recipients.push_back(c.agent_key);
  } else {
    // The decoded base64 goes through `reuse` on its way behind the text: its
    // pages are resident already, and gpg overwrites them only after zstd is done.
    filter_pack(plaintext, reuse);
  }
  return recipients;
}
}  // namespace

Bytes seal_object(Crypto& crypto, const VaultConfig& c, Bytes& plaintext, PackKind kind, Bytes reuse) {
  std::vector<std::string> recipients = prepare_seal(c, plaintext, kind, reuse);
  return crypto.encrypt_sign(zstd_compress_view(plaintext, c.zstd_level), recipients, c.agent_key,
                             std::move(reuse));
}

Bytes Repository::seal(Bytes plaintext, PackKind kind) {
  return seal_object(*crypto_, config(), plaintext, kind);
}

Bytes open_object(Crypto& crypto, const VaultConfig& c, const Bytes& stored, const std::string& what,
                  DirectGpg* gpg) {
  DecryptResult r;
  try {
    std::optional<Bytes> fast;
    if (gpg) fast = gpg->decrypt_verify(stored, crypto.gnupghome(), c.agent_key);
    if (fast)
      r.plaintext = std::move(*fast);
    else
      r = crypto.decrypt_verify(stored, c.agent_key);
  } catch (const Error& e) {
    throw Error(e.code(), what + ": " + e.what());
  }
  try {
    return zstd_decompress(r.plaintext);
  } catch (const Error& e) {
    throw Error(e.code(), what + ": " + e.what());
  }
}

Bytes Repository::open(const Bytes& stored, const std::string& what) {
  return open_object(*crypto_, config(), stored, what);
}

Hash Repository::put_object(const std::string& prefix, const Bytes& plaintext) {
  Bytes sealed = seal(plaintext, PackKind::kMetadata);
  Hash id = sha256(sealed.data(), sealed.size());
  transport_->put(prefix + "/" + to_hex(id), sealed);
  return id;
}

Bytes Repository::get_object(const std::string& prefix, const Hash& id) {
  std::string name = prefix + "/" + to_hex(id);
  Bytes stored = transport_->get(name);
  if (sha256(stored.data(), stored.size()) != id) {
    throw Error(ErrorCode::kVerify, name + ": stored bytes do not match their SHA-256 name (corrupt)");
  }
  return open(stored, name);
}

std::vector<Hash> Repository::list_objects(const std::string& prefix) {
  std::vector<Hash> out;
  for (const std::string& name : transport_->list(prefix)) {
    std::string base = name.substr(name.rfind('/') + 1);
    if (base.size() != 64) continue;  // not an object of ours (e.g. a stray file)
    out.push_back(hash_from_hex(base, "object name"));
  }
  return out;
}

std::map<Hash, std::uint64_t> Repository::list_packs(bool with_sizes) {
  std::map<Hash, std::uint64_t> out;
  for (const std::string& dir : transport_->list_dirs("packs")) {
    for (const std::string& name : transport_->list(dir)) {
      std::string base = name.substr(name.rfind('/') + 1);
      if (base.size() != 64) continue;
      Hash id = hash_from_hex(base, "pack name");
      out[id] = with_sizes ? transport_->size(name).value_or(0) : 0;
    }
  }
  return out;
}

std::vector<IndexPack> Repository::load_indexes(std::vector<Hash>* index_ids) {
  std::vector<IndexPack> all;
  for (IndexObject& o : load_index_objects()) {
    if (index_ids) index_ids->push_back(o.id);
    for (auto& p : o.packs) all.push_back(std::move(p));
  }
  return all;
}

std::vector<IndexObject> Repository::load_index_objects() {
  std::vector<IndexObject> objects;
  for (const Hash& id : list_objects("index")) objects.push_back({id, decode_index(get_object("index", id))});
  return objects;
}

Bytes Repository::fetch_pack(const Hash& id) {
  Bytes stored;
  try {
    stored = transport_->get(pack_name(id));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNotFound) throw;
    throw Error(ErrorCode::kVerify, "pack " + to_hex(id) + " is missing from vault " + transport_->describe() +
                                        " (an index names it): 'reduit check' lists the mailboxes it affects");
  }
  if (sha256(stored.data(), stored.size()) != id) {
    throw Error(ErrorCode::kVerify,
                "pack " + to_hex(id) + " is corrupt: its bytes do not match its SHA-256 name");
  }
  return stored;
}

LoadedPack open_pack(Crypto& crypto, const VaultConfig& config, const Hash& id, const Bytes& stored,
                     DirectGpg* gpg) {
  LoadedPack p;
  p.id = id;
  p.plaintext = open_object(crypto, config, stored, "pack " + to_hex(id), gpg);
  if (is_filtered_pack(p.plaintext)) {
    try {
      p.plaintext = unfilter_pack(p.plaintext);
    } catch (const Error& e) {
      throw Error(e.code(), "pack " + to_hex(id) + ": " + e.what());
    }
  }
  p.entries = parse_pack(p.plaintext);
  return p;
}

PackSealer::PackSealer(std::string gnupghome) : gnupghome_(std::move(gnupghome)) {}
PackSealer::~PackSealer() = default;

Bytes PackSealer::seal(const VaultConfig& c, Bytes& plaintext, PackKind kind, Bytes reuse) {
  if (!tried_) {
    tried_ = true;
    gpg_ = DirectGpg::start();
  }
  if (!crypto_) crypto_ = std::make_unique<Crypto>(gnupghome_);
  if (!gpg_) return seal_object(*crypto_, c, plaintext, kind, std::move(reuse));
  std::vector<std::string> recipients = prepare_seal(c, plaintext, kind, reuse);
  if (recipients != checked_recipients_ || c.agent_key != checked_signer_ || keys_.signer.empty()) {
    keys_ = crypto_->seal_keys(recipients, c.agent_key);
    checked_recipients_ = recipients;
    checked_signer_ = c.agent_key;
  }
  std::size_t n = zstd_compress_into(plaintext, c.zstd_level, gpg_->input(zstd_bound(plaintext.size())));
  return gpg_->encrypt_sign(n, keys_, std::move(reuse));
}

LoadedPack Repository::load_pack(const Hash& id) {
  return open_pack(*crypto_, config(), id, fetch_pack(id));
}

std::string_view Repository::blob_bytes(const LoadedPack& pack, const PackEntry& e) const {
  std::string_view v(reinterpret_cast<const char*>(pack.plaintext.data()) + e.offset, e.length);
  if (blob_id(v.data(), v.size()) != e.id) {
    throw Error(ErrorCode::kVerify, "blob " + to_hex(e.id) + " in pack " + to_hex(pack.id) +
                                        " does not match its id (corrupt or forged)");
  }
  return v;
}

// ---- lease -----------------------------------------------------------------

namespace {
std::int64_t now_s() {
  return now_ns() / 1000000000;
}
}  // namespace

Bytes Lease::encode(std::int64_t renewed) const {
  nlohmann::ordered_json j{{"purpose", purpose_}, {"host", host_},      {"pid", getpid()},
                           {"started", started_}, {"renewed", renewed}, {"ttl", ttl_seconds_},
                           {"nonce", nonce_}};
  std::string s = j.dump();
  return Bytes(s.begin(), s.end());
}

Lease::Lease(Transport& transport, const std::string& purpose, int ttl_seconds)
    : transport_(transport), purpose_(purpose), host_(local_hostname()), ttl_seconds_(ttl_seconds) {
  Hash n = random_hash();
  nonce_ = to_hex(n.data(), 12);
  started_ = last_renew_ = now_s();
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (transport_.put_exclusive(kLeaseName, encode(started_))) {
      held_ = true;
      return;
    }
    Bytes cur;
    try {
      cur = transport_.get(kLeaseName);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kNotFound) continue;  // released meanwhile
      throw;
    }
    auto j = nlohmann::json::parse(cur.begin(), cur.end(), nullptr, false);
    std::string holder_host = j.is_object() ? j.value("host", "?") : "?";
    long holder_pid = j.is_object() ? j.value("pid", 0L) : 0;
    std::int64_t renewed = j.is_object() ? j.value("renewed", std::int64_t(0)) : 0;
    int ttl = j.is_object() ? j.value("ttl", ttl_seconds) : ttl_seconds;
    std::string purpose = j.is_object() ? j.value("purpose", "?") : "?";
    bool dead_local = holder_host == host_ && holder_pid > 0 &&
                      kill(static_cast<pid_t>(holder_pid), 0) != 0 && errno == ESRCH;
    // Unparseable content is a lease being written right now: expired only by age.
    bool expired = j.is_object() ? now_s() - renewed > ttl : false;
    if (!(dead_local || expired)) {
      throw Error(ErrorCode::kLockHeld,
                  "vault is locked by " + purpose + " on " + holder_host + " pid " +
                      std::to_string(holder_pid) + " (renewed " + std::to_string(now_s() - renewed) +
                      " s ago, stale after " + std::to_string(ttl) +
                      " s); wait for it, or if it is gone remove " + kLeaseName + " from the vault");
    }
    // Break the stale lease: only one process can win this rename.
    std::string aside = std::string("locks/stale-") + nonce_;
    if (transport_.rename(kLeaseName, aside)) {
      Bytes moved = transport_.get(aside);
      if (moved != cur) {
        // We moved a lease other than the stale one we judged: someone took it after
        // the stale holder; give it back and report it as held.
        transport_.rename(aside, kLeaseName);
        throw Error(ErrorCode::kLockHeld, "vault lease changed hands while breaking a stale lease; retry");
      }
      transport_.remove(aside);
      broke_stale_ = true;
    }
  }
  throw Error(ErrorCode::kLockHeld, "could not take the vault lease after 3 attempts; retry");
}

void Lease::renew_if_due() {
  if (!held_) return;
  std::int64_t now = now_s();
  if (now - last_renew_ < ttl_seconds_ / 3) return;
  transport_.put(kLeaseName, encode(now));
  last_renew_ = now;
}

void Lease::release() {
  if (!held_) return;
  held_ = false;
  try {
    Bytes cur = transport_.get(kLeaseName);
    auto j = nlohmann::json::parse(cur.begin(), cur.end(), nullptr, false);
    if (j.is_object() && j.value("nonce", "") == nonce_) transport_.remove(kLeaseName);
  } catch (const Error&) {
  }
}

Lease::~Lease() {
  try {
    release();
  } catch (...) {
  }
}

}  // namespace reduit
