// vault/crypto.cpp — GPGME (OpenPGP engine = gpg) implementation of Crypto.
//
// Notes on the GPGME calls (see vault/crypto.hpp for the contract):
//  * gpgme spawns one gpg process per operation and streams data through pipes;
//    input is wrapped without copying (gpgme_data_new_from_mem, copy = 0) and the
//    output is written straight into the result Bytes by a callback data object,
//    so a 16 MiB pack is never copied by us.
//  * gpg is a process per operation, so reduit avoids operations it does not need.
//    Keys looked up by fingerprint (a gpg --list-keys each) are cached per
//    GNUPGHOME for the process, for up to a minute and never past an import_keys.
//    Contexts are pooled per GNUPGHOME: gpgme_ctx_set_engine_info runs
//    `gpg --version` on every call (as does gpgme_get_key, which is why find_key
//    lists keys itself), and the first home is made GPGME's global one so that its
//    contexts need no set-up (context_for_home); GPGME's gpgconf and gpgsm probes
//    are switched off (init_gpgme). A small backup started 30 gpg, gpgconf and
//    gpgsm processes, then 18, now 11.
//  * gpgme's error code of a failed decryption does not say why: a truncated
//    message comes back as GPG_ERR_NO_SECKEY when some other recipient's key is
//    absent, a flipped byte as GPG_ERR_NO_DATA or GPG_ERR_DECRYPT_FAILED. The
//    decrypt result's recipient list tells "no key" (kKey) from "corrupt" (kVerify):
//    a recipient with status 0 means our key opened the session key.
//  * gpg writes plaintext before it has checked the MDC and the signature, so the
//    output buffer holds unauthenticated bytes whenever an error is reported.
#include "vault/crypto.hpp"

#include <gpgme.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>

#include "vault/error.hpp"

namespace reduit {

namespace {

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

std::string str(const char* s) {
  return s ? std::string(s) : std::string();
}

std::string gpg_message(gpgme_error_t err) {
  return str(gpgme_strsource(err)) + ": " + str(gpgme_strerror(err));
}

[[noreturn]] void throw_internal(const std::string& what, gpgme_error_t err) {
  throw Error(ErrorCode::kInternal, what + " failed (" + gpg_message(err) + ")");
}

void init_gpgme() {
  static std::once_flag once;
  std::call_once(once, [] {
    // GPGME would otherwise run gpgconf (--list-dirs, --list-components, --version)
    // and gpgsm --version at start-up to find engines reduit never uses: four
    // processes per reduit run. gpg is then looked for where Debian puts it
    // (/usr/bin/gpg). Must precede gpgme_check_version (GPGME manual, "Library
    // Version Check": gpgme_set_global_flag).
    gpgme_set_global_flag("disable-gpgconf", "1");
    if (!gpgme_check_version(nullptr))
      throw Error(ErrorCode::kInternal, "GPGME library initialisation failed");
    gpgme_error_t err = gpgme_engine_check_version(GPGME_PROTOCOL_OpenPGP);
    if (err)
      throw Error(ErrorCode::kInternal, "no usable gpg for GPGME (" + gpg_message(err) + "): install gnupg");
  });
}

struct DataDeleter {
  void operator()(gpgme_data_t d) const { gpgme_data_release(d); }
};
using Data = std::unique_ptr<std::remove_pointer_t<gpgme_data_t>, DataDeleter>;

struct KeyRef {
  gpgme_key_t key = nullptr;
  KeyRef() = default;
  explicit KeyRef(gpgme_key_t k) : key(k) {}
  KeyRef(const KeyRef& o) : key(o.key) {
    if (key) gpgme_key_ref(key);
  }
  KeyRef& operator=(KeyRef o) {
    std::swap(key, o.key);
    return *this;
  }
  ~KeyRef() {
    if (key) gpgme_key_unref(key);
  }
};

// GPGME moves data between its data objects and gpg's pipes PIPE_BUF (4 KiB) at a
// time, one poll and one read or write each: 4,096 round trips per 16 MiB each
// way. GPGME 1.18 takes a larger buffer (older versions answer
// GPG_ERR_UNKNOWN_NAME and keep 4 KiB). A pipe's capacity (64 KiB) and not more:
// after every partial write to the non-blocking pipe GPGME moves the unwritten rest
// of its buffer down, so a larger one costs copies (1 MiB made sealing a 16 MiB
// pack 1.8× slower; 64 KiB makes it 13% faster: BM_GpgmePack16MiB).
void large_io_buffer(gpgme_data_t d) {
  gpgme_data_set_flag(d, "io-buffer-size", "65536");
}

// Data object over a caller-provided buffer (no copy). The buffer must outlive it.
Data data_from_mem(const void* p, size_t n) {
  gpgme_data_t d = nullptr;
  gpgme_error_t err = gpgme_data_new_from_mem(&d, n ? static_cast<const char*>(p) : "", n, /*copy=*/0);
  if (err) throw_internal("gpgme_data_new_from_mem", err);
  large_io_buffer(d);
  return Data(d);
}

// Write-only sink appending to a Bytes, so the output lands in its final place.
struct Sink {
  Bytes* out;
};

ssize_t sink_read(void*, void*, size_t) {
  errno = EINVAL;
  return -1;
}

ssize_t sink_write(void* handle, const void* buf, size_t n) {
  auto* s = static_cast<Sink*>(handle);
  try {
    append_bytes(*s->out, buf, n);
  } catch (const std::bad_alloc&) {
    errno = ENOMEM;
    return -1;
  }
  return static_cast<ssize_t>(n);
}

off_t sink_seek(void* handle, off_t offset, int whence) {
  auto* s = static_cast<Sink*>(handle);
  // Only "where am I" is meaningful for an append-only sink.
  if (offset == 0 && (whence == SEEK_CUR || whence == SEEK_END)) return static_cast<off_t>(s->out->size());
  errno = EINVAL;
  return -1;
}

gpgme_data_cbs sink_cbs{sink_read, sink_write, sink_seek, nullptr};

Data data_to_bytes(Sink* sink) {
  gpgme_data_t d = nullptr;
  gpgme_error_t err = gpgme_data_new_from_cbs(&d, &sink_cbs, sink);
  if (err) throw_internal("gpgme_data_new_from_cbs", err);
  large_io_buffer(d);
  return Data(d);
}

bool key_usable(gpgme_key_t k) {
  return !(k->expired || k->revoked || k->disabled || k->invalid);
}

std::string key_state(gpgme_key_t k) {
  if (k->revoked) return "revoked";
  if (k->expired) return "expired";
  if (k->disabled) return "disabled";
  if (k->invalid) return "invalid";
  return "usable";
}

bool looks_like_bare_email(const std::string& s) {
  return s.find('@') != std::string::npos && s.find_first_of("<> ") == std::string::npos &&
         s.front() != '=' && s.front() != '@';
}

// The GNUPGHOME that GPGME's process-wide engine info names (empty while none
// does). Setting engine info runs `gpg --version` each time, globally or per
// context, while a new context copies the global info as it is. So the first
// home a process asks for becomes the global one (one `gpg --version`), and its
// later contexts need no set-up of their own; in a backup all of them are for the
// agent's home. Other homes, and GPGME's default, are set per context.
std::mutex engine_home_mu;
std::string engine_home;

// Creates a context whose engine uses `gnupghome` (empty = GPGME's default).
gpgme_ctx_t context_for_home(const std::string& gnupghome) {
  std::lock_guard<std::mutex> g(engine_home_mu);
  if (engine_home.empty() && !gnupghome.empty()) {
    gpgme_error_t err = gpgme_set_engine_info(GPGME_PROTOCOL_OpenPGP, nullptr, gnupghome.c_str());
    if (err) throw_internal("gpgme_set_engine_info(" + gnupghome + ")", err);
    engine_home = gnupghome;
  }
  gpgme_ctx_t ctx = nullptr;
  gpgme_error_t err = gpgme_new(&ctx);
  if (err) throw_internal("gpgme_new", err);
  if (gnupghome != engine_home) {
    // nullptr: GPGME's default home (GNUPGHOME, else ~/.gnupg), not the global one.
    err = gpgme_ctx_set_engine_info(ctx, GPGME_PROTOCOL_OpenPGP, nullptr,
                                    gnupghome.empty() ? nullptr : gnupghome.c_str());
    if (err) {
      gpgme_release(ctx);
      throw_internal("gpgme_ctx_set_engine_info(" + gnupghome + ")", err);
    }
  }
  return ctx;
}

// A context for `gnupghome` (empty = GPGME's default) as every reduit operation
// wants it: OpenPGP, binary, offline, local keys only, never a pinentry.
gpgme_ctx_t new_context(const std::string& gnupghome) {
  gpgme_ctx_t ctx = context_for_home(gnupghome);
  std::unique_ptr<std::remove_pointer_t<gpgme_ctx_t>, void (*)(gpgme_ctx_t)> guard(ctx, gpgme_release);
  gpgme_error_t err = gpgme_set_protocol(ctx, GPGME_PROTOCOL_OpenPGP);
  if (err) throw_internal("gpgme_set_protocol", err);
  gpgme_set_armor(ctx, 0);
  gpgme_set_textmode(ctx, 0);
  gpgme_set_offline(ctx, 1);
  gpgme_set_keylist_mode(ctx, GPGME_KEYLIST_MODE_LOCAL);
  // Keys have no passphrase in unattended use; loopback keeps gpg from ever popping
  // a pinentry (a passphrase-protected key fails instead of hanging).
  if ((err = gpgme_set_pinentry_mode(ctx, GPGME_PINENTRY_MODE_LOOPBACK)))
    throw_internal("gpgme_set_pinentry_mode", err);
  return guard.release();
}

// Keys looked up by fingerprint in one GNUPGHOME, shared by the process's contexts
// for that home (GPGME keys are reference-counted under GPGME's own lock). Kept for
// kKeyCacheTtl at most, so a daemon notices a key that expired, was revoked or
// replaced in the keyring meanwhile; import_keys empties it.
struct KeyCache {
  std::mutex mu;  // also serialises lookups on `lookup`
  std::map<std::string, KeyRef> pub, sec;
  std::chrono::steady_clock::time_point since;
  gpgme_ctx_t lookup = nullptr;  // for find_key, made when first needed, never freed
};
constexpr std::chrono::seconds kKeyCacheTtl{60};

}  // namespace

struct Crypto::Impl {
  gpgme_ctx_t ctx = nullptr;
  std::string gnupghome;     // as given (empty = default)
  std::string home;          // for messages: as given, or "(default)"
  KeyCache* keys = nullptr;  // process-wide, never freed

  void clear_key_cache() {
    std::lock_guard<std::mutex> g(keys->mu);
    keys->pub.clear();
    keys->sec.clear();
    keys->since = std::chrono::steady_clock::now();
  }

  ~Impl() {
    if (ctx) gpgme_release(ctx);
  }

  std::string where() const { return "GNUPGHOME=" + home; }

  // Exact lookup of a key by fingerprint (or key id); nullopt-like empty KeyRef
  // when absent. Throws kKey on ambiguity, kInternal on other failures.
  KeyRef find_key(const std::string& fpr, bool secret) {
    std::string k = upper(fpr);
    std::lock_guard<std::mutex> g(keys->mu);
    if (std::chrono::steady_clock::now() - keys->since > kKeyCacheTtl) {
      keys->pub.clear();
      keys->sec.clear();
      keys->since = std::chrono::steady_clock::now();
    }
    auto& cache = secret ? keys->sec : keys->pub;
    if (auto it = cache.find(k); it != cache.end()) return it->second;
    // What gpgme_get_key does, on a context kept for it: gpgme_get_key makes a new
    // context each time, whose engine set-up runs `gpg --version`. Not on `ctx`: a
    // caller may be reading the result of ctx's last operation.
    if (fpr.size() < 8)
      throw Error(ErrorCode::kKey, "\"" + fpr + "\" is not a valid OpenPGP key fingerprint");
    if (!keys->lookup) keys->lookup = new_context(gnupghome);
    gpgme_ctx_t lc = keys->lookup;
    gpgme_error_t err = gpgme_op_keylist_start(lc, fpr.c_str(), secret ? 1 : 0);
    gpgme_key_t key = nullptr;
    if (!err) err = gpgme_op_keylist_next(lc, &key);
    KeyRef ref(key);
    gpgme_key_t second = nullptr;
    gpgme_error_t err2 = err ? err : gpgme_op_keylist_next(lc, &second);
    KeyRef other(second);
    gpgme_op_keylist_end(lc);
    if (gpgme_err_code(err) == GPG_ERR_EOF || (!err && !key)) return KeyRef();
    if (gpgme_err_code(err) == GPG_ERR_INV_VALUE)
      throw Error(ErrorCode::kKey, "\"" + fpr + "\" is not a valid OpenPGP key fingerprint");
    if (err) throw_internal("looking up key " + fpr + " in " + where(), err);
    if (!err2 && other.key)
      throw Error(ErrorCode::kKey,
                  "several OpenPGP keys match \"" + fpr + "\" in " + where() + ": give the full fingerprint");
    cache.emplace(k, ref);
    return ref;
  }

  // `signer`'s key, its secret part here, usable and able to sign (kKey otherwise).
  KeyRef signing_key(const std::string& signer) {
    KeyRef sk = find_key(signer, true);
    if (!sk.key)
      throw Error(ErrorCode::kKey, "the secret key of signer " + signer + " is not in " + where() +
                                       ": import it with gpg --import");
    if (!key_usable(sk.key) || !sk.key->can_sign)
      throw Error(ErrorCode::kKey, "signer key " + signer + " is " + key_state(sk.key) +
                                       (sk.key->can_sign ? "" : " or cannot sign"));
    return sk;
  }

  // Recipient `r`'s public key, usable and able to encrypt (kKey otherwise).
  KeyRef recipient(const std::string& r) {
    KeyRef k = find_key(r, false);
    if (!k.key)
      throw Error(ErrorCode::kKey, "no public key " + r + " in " + where() +
                                       ": import it with gpg --import, or check the fingerprint");
    if (!key_usable(k.key) || !k.key->can_encrypt)
      throw Error(ErrorCode::kKey, "recipient key " + r + " is " + key_state(k.key) +
                                       (k.key->can_encrypt ? "" : " or has no encryption subkey"));
    return k;
  }

  // Makes `signer` (its secret key must be here, usable and able to sign) the
  // context's only signer; the caller clears the signers after its operation.
  KeyRef use_signer(const std::string& signer) {
    KeyRef sk = signing_key(signer);
    gpgme_signers_clear(ctx);
    if (gpgme_error_t err = gpgme_signers_add(ctx, sk.key))
      throw_internal("gpgme_signers_add(" + signer + ")", err);
    return sk;
  }

  // Primary fingerprint of the key that made a signature reported as `sig_fpr`
  // (which may be a subkey fingerprint or a key id); empty when unknown.
  std::string primary_of(const std::string& sig_fpr) {
    KeyRef k = find_key(sig_fpr, false);
    if (!k.key || !k.key->subkeys || !k.key->subkeys->fpr) return std::string();
    return upper(k.key->subkeys->fpr);
  }

  bool signature_matches(const std::string& sig_fpr, const std::string& expected) {
    std::string s = upper(sig_fpr), e = upper(expected);
    if (s.empty()) return false;
    if (s == e) return true;
    KeyRef k = find_key(sig_fpr, false);
    if (!k.key || !k.key->subkeys) return false;
    if (upper(str(k.key->subkeys->fpr)) != e) return false;
    // The signature's fpr must name the primary or one of its subkeys (a key id is
    // the low 64 bits of a fingerprint).
    for (gpgme_subkey_t sk = k.key->subkeys; sk; sk = sk->next) {
      std::string f = upper(str(sk->fpr));
      if (f == s) return true;
      if (s.size() == 16 && f.size() >= 16 && f.compare(f.size() - 16, 16, s) == 0) return true;
    }
    return false;
  }
};

namespace {

// Idle contexts by GNUPGHOME as given; never destroyed (no exit-order questions).
struct ContextPool {
  std::mutex mu;
  std::multimap<std::string, std::unique_ptr<Crypto::Impl>> idle;
  std::map<std::string, KeyCache> keys;  // by GNUPGHOME; nodes never move
};
ContextPool& context_pool() {
  static auto* pool = new ContextPool;
  return *pool;
}
constexpr std::size_t kMaxIdlePerHome = 8;

}  // namespace

Crypto::Crypto(const std::string& gnupghome) {
  init_gpgme();
  KeyCache* keys = nullptr;
  {
    ContextPool& pool = context_pool();
    std::lock_guard<std::mutex> g(pool.mu);
    if (auto it = pool.idle.find(gnupghome); it != pool.idle.end()) {
      impl_ = std::move(it->second);
      pool.idle.erase(it);
      return;
    }
    keys = &pool.keys[gnupghome];
  }
  impl_ = std::make_unique<Impl>();
  impl_->keys = keys;
  impl_->home = gnupghome.empty() ? std::string("(default)") : gnupghome;
  impl_->gnupghome = gnupghome;
  impl_->ctx = new_context(gnupghome);
}

Crypto::~Crypto() {
  if (!impl_ || !impl_->ctx) return;
  // Back to the pool in the state the constructor leaves a new context in.
  gpgme_signers_clear(impl_->ctx);
  gpgme_set_armor(impl_->ctx, 0);
  ContextPool& pool = context_pool();
  std::lock_guard<std::mutex> g(pool.mu);
  std::string home = impl_->gnupghome;
  if (pool.idle.count(home) < kMaxIdlePerHome) pool.idle.emplace(std::move(home), std::move(impl_));
}

std::string Crypto::resolve_key(const std::string& spec, bool secret, bool for_encryption) {
  if (spec.empty()) throw Error(ErrorCode::kKey, "empty OpenPGP key spec");
  Impl& im = *impl_;
  // A bare address would substring-match ("bob@x" also finds "jimbob@x"); gpg's
  // "<addr>" form matches the e-mail address exactly.
  std::string pattern = looks_like_bare_email(spec) ? "<" + spec + ">" : spec;
  std::vector<KeyRef> found;
  gpgme_error_t err = gpgme_op_keylist_start(im.ctx, pattern.c_str(), secret ? 1 : 0);
  if (err) throw_internal("listing keys matching \"" + spec + "\"", err);
  for (;;) {
    gpgme_key_t key = nullptr;
    err = gpgme_op_keylist_next(im.ctx, &key);
    if (err) break;
    found.emplace_back(key);
  }
  gpgme_op_keylist_end(im.ctx);
  if (gpgme_err_code(err) != GPG_ERR_EOF)
    throw_internal("listing keys matching \"" + spec + "\" in " + im.where(), err);

  const char* kind = secret ? "OpenPGP secret key" : "OpenPGP key";
  if (found.empty())
    throw Error(ErrorCode::kKey,
                std::string("no ") + kind + " matches \"" + spec + "\" in " + im.where() +
                    (secret ? ": import the secret key with gpg --import" : ": import it with gpg --import") +
                    ", or check the fingerprint");
  if (found.size() > 1) {
    std::string list;
    for (const auto& k : found) list += (list.empty() ? "" : ", ") + str(k.key->subkeys->fpr);
    throw Error(ErrorCode::kKey, std::to_string(found.size()) + " OpenPGP keys match \"" + spec + "\" in " +
                                     im.where() + " (" + list + "): give the full fingerprint");
  }
  gpgme_key_t k = found.front().key;
  std::string fpr = upper(str(k->subkeys ? k->subkeys->fpr : nullptr));
  if (!key_usable(k))
    throw Error(ErrorCode::kKey, std::string(kind) + " " + fpr + " (\"" + spec + "\") is " + key_state(k) +
                                     ": renew it or use another key");
  if (for_encryption && !k->can_encrypt)
    throw Error(ErrorCode::kKey,
                std::string(kind) + " " + fpr + " (\"" + spec + "\") has no usable encryption subkey");
  if (secret) {
    bool have = false;
    for (gpgme_subkey_t sk = k->subkeys; sk; sk = sk->next)
      if (sk->secret && (!for_encryption || sk->can_encrypt)) have = true;
    if (!have)
      throw Error(ErrorCode::kKey, "the secret part of " + fpr + " (\"" + spec + "\") is not in " +
                                       im.where() + ": import the secret key with gpg --import");
  }
  return fpr;
}

bool Crypto::has_secret_key(const std::string& fingerprint) {
  if (fingerprint.empty()) return false;
  KeyRef k = impl_->find_key(fingerprint, true);
  return k.key != nullptr && k.key->secret;
}

Bytes Crypto::encrypt_sign(const Bytes& plaintext, const std::vector<std::string>& recipients,
                           const std::string& signer) {
  return encrypt_sign(std::span<const std::uint8_t>(plaintext), recipients, signer, Bytes());
}

Bytes Crypto::encrypt_sign(std::span<const std::uint8_t> plaintext,
                           const std::vector<std::string>& recipients, const std::string& signer, Bytes out) {
  Impl& im = *impl_;
  const std::uint8_t* in_at = plaintext.data();
  if (!plaintext.empty() && out.capacity() > 0 && std::less_equal<>()(out.data(), in_at) &&
      std::less<>()(in_at, out.data() + out.capacity()))
    throw Error(ErrorCode::kInternal, "encrypt_sign: the output buffer holds the plaintext");
  if (recipients.empty()) throw Error(ErrorCode::kInternal, "encrypt_sign: no recipients");
  std::vector<KeyRef> refs;
  std::vector<gpgme_key_t> keys;
  for (const auto& r : recipients) {
    KeyRef k = im.recipient(r);
    keys.push_back(k.key);
    refs.push_back(std::move(k));
  }
  keys.push_back(nullptr);

  KeyRef sk = im.use_signer(signer);
  gpgme_error_t err = 0;

  out.clear();
  // Binary OpenPGP without compression is the input plus a few hundred bytes of
  // headers, keys and signature plus ~1 length byte per 8 KiB partial-body chunk.
  out.reserve(plaintext.size() + plaintext.size() / 4096 + 4096);
  Sink sink{&out};
  Data in = data_from_mem(plaintext.data(), plaintext.size());
  Data cipher = data_to_bytes(&sink);
  err = gpgme_op_encrypt_sign(
      im.ctx, keys.data(),
      static_cast<gpgme_encrypt_flags_t>(GPGME_ENCRYPT_ALWAYS_TRUST | GPGME_ENCRYPT_NO_COMPRESS), in.get(),
      cipher.get());
  gpgme_signers_clear(im.ctx);

  if (gpgme_encrypt_result_t er = gpgme_op_encrypt_result(im.ctx); er && er->invalid_recipients)
    throw Error(ErrorCode::kKey, "cannot encrypt to " + str(er->invalid_recipients->fpr) + " (" +
                                     str(gpgme_strerror(er->invalid_recipients->reason)) +
                                     "): check the key in " + im.where());
  if (gpgme_sign_result_t sr = gpgme_op_sign_result(im.ctx); sr && sr->invalid_signers)
    throw Error(ErrorCode::kKey, "cannot sign with " + str(sr->invalid_signers->fpr) + " (" +
                                     str(gpgme_strerror(sr->invalid_signers->reason)) +
                                     "): check the secret key in " + im.where());
  if (err) {
    auto code = gpgme_err_code(err);
    if (code == GPG_ERR_UNUSABLE_PUBKEY || code == GPG_ERR_UNUSABLE_SECKEY || code == GPG_ERR_NO_SECKEY ||
        code == GPG_ERR_BAD_PASSPHRASE || code == GPG_ERR_NO_PUBKEY)
      throw Error(ErrorCode::kKey, "encrypt+sign in " + im.where() + " failed: " + str(gpgme_strerror(err)));
    throw_internal("gpgme_op_encrypt_sign", err);
  }
  return out;
}

SealKeys Crypto::seal_keys(const std::vector<std::string>& recipients, const std::string& signer) {
  Impl& im = *impl_;
  if (recipients.empty()) throw Error(ErrorCode::kInternal, "encrypt_sign: no recipients");
  SealKeys keys;
  keys.gnupghome = im.gnupghome;
  // The primary fingerprints, as GPGME passes keys to gpg (-r and -u).
  for (const auto& r : recipients) keys.recipients.push_back(upper(str(im.recipient(r).key->subkeys->fpr)));
  const KeyRef sk = im.signing_key(signer);
  keys.signer = upper(str(sk.key->subkeys->fpr));
  bool any = false, any_length = true;
  for (gpgme_subkey_t k = sk.key->subkeys; k; k = k->next) {
    if (!k->can_sign || k->revoked || k->expired || k->disabled || k->invalid) continue;
    any = true;
    any_length = any_length && (k->pubkey_algo == GPGME_PK_RSA || k->pubkey_algo == GPGME_PK_RSA_S ||
                                k->pubkey_algo == GPGME_PK_EDDSA);
  }
  keys.sha256_signature = any && any_length;
  return keys;
}

const std::string& Crypto::gnupghome() const {
  return impl_->gnupghome;
}

std::string Crypto::gpg_program() {
  init_gpgme();
  gpgme_engine_info_t info = nullptr;
  if (gpgme_error_t err = gpgme_get_engine_info(&info)) throw_internal("gpgme_get_engine_info", err);
  for (; info; info = info->next)
    if (info->protocol == GPGME_PROTOCOL_OpenPGP && info->file_name) return info->file_name;
  throw Error(ErrorCode::kInternal, "GPGME names no gpg program: install gnupg");
}

DecryptResult Crypto::decrypt_verify(const Bytes& ciphertext, const std::string& expected_signer,
                                     bool allow_unknown_signer) {
  Impl& im = *impl_;
  DecryptResult result;
  result.plaintext.reserve(ciphertext.size());
  Sink sink{&result.plaintext};
  Data in = data_from_mem(ciphertext.data(), ciphertext.size());
  Data plain = data_to_bytes(&sink);
  gpgme_error_t err = gpgme_op_decrypt_verify(im.ctx, in.get(), plain.get());
  auto code = gpgme_err_code(err);
  // On failure, gpg has usually streamed (unauthenticated) plaintext already: it is
  // never returned, the exception discards it.

  gpgme_decrypt_result_t dr = gpgme_op_decrypt_result(im.ctx);
  if (dr && dr->legacy_cipher_nomdc)
    throw Error(ErrorCode::kVerify,
                "message is not integrity-protected (no MDC): refusing it as possibly tampered");
  if (err) {
    // gpgme's top-level code is unreliable here: a truncated message decrypted with a
    // present key can come back as GPG_ERR_NO_SECKEY (because another recipient's
    // key was missing) and a flipped byte as GPG_ERR_NO_DATA. The per-recipient
    // status says whether a secret key opened the session key.
    std::string keyids;
    bool any_recipient = false, any_opened = false;
    std::string present;  // a recipient whose secret key is here but did not open it
    for (gpgme_recipient_t r = dr ? dr->recipients : nullptr; r; r = r->next) {
      any_recipient = true;
      keyids += (keyids.empty() ? "" : ", ") + str(r->keyid);
      if (gpgme_err_code(r->status) == GPG_ERR_NO_ERROR) any_opened = true;
    }
    if (code == GPG_ERR_BAD_PASSPHRASE || code == GPG_ERR_NO_PIN || code == GPG_ERR_CANCELED ||
        code == GPG_ERR_NO_PASSPHRASE)
      throw Error(ErrorCode::kKey, "cannot decrypt: the secret key in " + im.where() +
                                       " is passphrase-protected (" + str(gpgme_strerror(err)) +
                                       "); reduit needs a key without passphrase or a running "
                                       "gpg-agent with the passphrase cached");
    if (any_opened)
      throw Error(ErrorCode::kVerify,
                  "decryption failed, the object is corrupt, truncated or was manipulated (" +
                      str(gpgme_strerror(err)) + ")");
    if (!any_recipient) {
      if (dr && dr->unsupported_algorithm)
        throw Error(ErrorCode::kVerify, "unsupported cipher algorithm " + str(dr->unsupported_algorithm));
      throw Error(ErrorCode::kVerify, "not an OpenPGP message encrypted to a public key (" +
                                          str(gpgme_strerror(err)) + "): corrupt object?");
    }
    for (gpgme_recipient_t r = dr->recipients; r && present.empty(); r = r->next)
      if (r->keyid && im.find_key(r->keyid, true).key) present = str(r->keyid);
    if (!present.empty())
      throw Error(ErrorCode::kVerify, "decryption failed although the secret key " + present + " is in " +
                                          im.where() + ": the object is corrupt or the key is unusable (" +
                                          str(gpgme_strerror(err)) + ")");
    throw Error(ErrorCode::kKey, "cannot decrypt: none of the recipient keys' secret halves (key ids " +
                                     keyids + ") is in " + im.where() +
                                     " (give the GNUPGHOME that holds an archive secret key)");
  }

  gpgme_verify_result_t vr = gpgme_op_verify_result(im.ctx);
  gpgme_signature_t sigs = vr ? vr->signatures : nullptr;
  if (!sigs) throw Error(ErrorCode::kVerify, "object is not signed: refusing it");

  std::string seen;
  for (gpgme_signature_t s = sigs; s; s = s->next) {
    auto st = gpgme_err_code(s->status);
    seen += (seen.empty() ? "" : ", ") + upper(str(s->fpr)) + " (" + str(gpgme_strerror(s->status)) + ")";
    if (st == GPG_ERR_BAD_SIGNATURE)
      throw Error(ErrorCode::kVerify,
                  "bad signature by " + upper(str(s->fpr)) + ": the object was manipulated");
  }

  auto accept = [&](std::string fpr, bool checked = true) {
    result.signer_fingerprint = upper(std::move(fpr));
    result.signature_checked = checked;
    return std::move(result);
  };

  if (!expected_signer.empty()) {
    for (gpgme_signature_t s = sigs; s; s = s->next)
      if (gpgme_err_code(s->status) == GPG_ERR_NO_ERROR &&
          im.signature_matches(str(s->fpr), expected_signer)) {
        std::string primary = im.primary_of(str(s->fpr));
        return accept(primary.empty() ? expected_signer : primary);
      }
    if (allow_unknown_signer)
      for (gpgme_signature_t s = sigs; s; s = s->next)
        if (gpgme_err_code(s->status) == GPG_ERR_NO_PUBKEY && upper(str(s->fpr)) == upper(expected_signer))
          return accept(str(s->fpr), /*checked=*/false);
    for (gpgme_signature_t s = sigs; s; s = s->next)
      if (gpgme_err_code(s->status) == GPG_ERR_NO_PUBKEY)
        throw Error(ErrorCode::kVerify, "signature by unknown key " + upper(str(s->fpr)) +
                                            ", expected a signature by " + expected_signer);
    throw Error(ErrorCode::kVerify, "object is not signed by the expected key " + expected_signer +
                                        " (signatures: " + seen + ")");
  }

  for (gpgme_signature_t s = sigs; s; s = s->next)
    if (gpgme_err_code(s->status) == GPG_ERR_NO_ERROR) {
      std::string primary = im.primary_of(str(s->fpr));
      return accept(primary.empty() ? str(s->fpr) : primary);
    }
  for (gpgme_signature_t s = sigs; s; s = s->next)
    if (gpgme_err_code(s->status) == GPG_ERR_NO_PUBKEY) {
      if (allow_unknown_signer) return accept(str(s->fpr), /*checked=*/false);
      throw Error(ErrorCode::kVerify, "signature by unknown key " + upper(str(s->fpr)) +
                                          ": import the signer's public key into " + im.where());
    }
  throw Error(ErrorCode::kVerify, "no valid signature (signatures: " + seen + ")");
}

std::string Crypto::sign_detached(std::string_view data, const std::string& signer) {
  Impl& im = *impl_;
  KeyRef sk = im.use_signer(signer);
  gpgme_error_t err = 0;
  Bytes out;
  Sink sink{&out};
  Data in = data_from_mem(data.data(), data.size());
  Data sig = data_to_bytes(&sink);
  gpgme_set_armor(im.ctx, 1);
  err = gpgme_op_sign(im.ctx, in.get(), sig.get(), GPGME_SIG_MODE_DETACH);
  gpgme_set_armor(im.ctx, 0);
  gpgme_signers_clear(im.ctx);
  if (gpgme_sign_result_t sr = gpgme_op_sign_result(im.ctx); sr && sr->invalid_signers)
    throw Error(ErrorCode::kKey, "cannot sign with " + str(sr->invalid_signers->fpr) + " (" +
                                     str(gpgme_strerror(sr->invalid_signers->reason)) +
                                     "): check the secret key in " + im.where());
  if (err) {
    auto code = gpgme_err_code(err);
    if (code == GPG_ERR_UNUSABLE_SECKEY || code == GPG_ERR_NO_SECKEY || code == GPG_ERR_BAD_PASSPHRASE)
      throw Error(ErrorCode::kKey, "signing in " + im.where() + " failed: " + str(gpgme_strerror(err)));
    throw_internal("gpgme_op_sign", err);
  }
  return std::string(out.begin(), out.end());
}

std::string Crypto::verify_detached(std::string_view data, std::string_view signature,
                                    const std::string& expected_signer) {
  Impl& im = *impl_;
  Data sig = data_from_mem(signature.data(), signature.size());
  Data text = data_from_mem(data.data(), data.size());
  gpgme_error_t err = gpgme_op_verify(im.ctx, sig.get(), text.get(), nullptr);
  if (err)
    throw Error(ErrorCode::kVerify,
                "not a valid detached OpenPGP signature (" + str(gpgme_strerror(err)) + ")");
  gpgme_verify_result_t vr = gpgme_op_verify_result(im.ctx);
  gpgme_signature_t sigs = vr ? vr->signatures : nullptr;
  if (!sigs) throw Error(ErrorCode::kVerify, "no signature found");
  std::string seen;
  for (gpgme_signature_t s = sigs; s; s = s->next) {
    auto st = gpgme_err_code(s->status);
    seen += (seen.empty() ? "" : ", ") + upper(str(s->fpr)) + " (" + str(gpgme_strerror(s->status)) + ")";
    if (st == GPG_ERR_BAD_SIGNATURE)
      throw Error(ErrorCode::kVerify, "bad signature by " + upper(str(s->fpr)) + ": the data was changed");
    if (st != GPG_ERR_NO_ERROR) continue;
    if (!expected_signer.empty() && !im.signature_matches(str(s->fpr), expected_signer)) continue;
    std::string primary = im.primary_of(str(s->fpr));
    return upper(primary.empty() ? str(s->fpr) : primary);
  }
  throw Error(ErrorCode::kVerify, "no valid signature" +
                                      (expected_signer.empty() ? "" : " by " + expected_signer) +
                                      " (signatures: " + seen + ")");
}

std::int64_t Crypto::key_expires(const std::string& fingerprint) {
  KeyRef k = impl_->find_key(fingerprint, false);
  if (!k.key || !k.key->subkeys)
    throw Error(ErrorCode::kKey, "no public key " + fingerprint + " in " + impl_->where());
  return static_cast<std::int64_t>(k.key->subkeys->expires);
}

std::vector<std::string> Crypto::key_algorithms(const std::string& fingerprint) {
  KeyRef k = impl_->find_key(fingerprint, false);
  if (!k.key || !k.key->subkeys)
    throw Error(ErrorCode::kKey, "no public key " + fingerprint + " in " + impl_->where());
  std::vector<std::string> out;
  for (gpgme_subkey_t sk = k.key->subkeys; sk; sk = sk->next) {
    char* name = gpgme_pubkey_algo_string(sk);
    std::string s = name ? name : "unknown";
    gpgme_free(name);
    std::string use;
    if (sk->can_certify) use += use.empty() ? "certify" : "+certify";
    if (sk->can_sign) use += use.empty() ? "sign" : "+sign";
    if (sk->can_encrypt) use += use.empty() ? "encrypt" : "+encrypt";
    if (sk->can_authenticate) use += use.empty() ? "authenticate" : "+authenticate";
    out.push_back(s + (use.empty() ? "" : " " + use));
  }
  return out;
}

std::string Crypto::export_public_key(const std::string& fingerprint) {
  Impl& im = *impl_;
  KeyRef k = im.find_key(fingerprint, false);
  if (!k.key)
    throw Error(ErrorCode::kKey, "no public key " + fingerprint + " in " + im.where() +
                                     ": import it with gpg --import, or check the fingerprint");
  Bytes out;
  Sink sink{&out};
  Data d = data_to_bytes(&sink);
  gpgme_key_t keys[2] = {k.key, nullptr};
  gpgme_set_armor(im.ctx, 1);
  gpgme_error_t err = gpgme_op_export_keys(im.ctx, keys, 0, d.get());
  gpgme_set_armor(im.ctx, 0);
  if (err) throw_internal("exporting key " + fingerprint, err);
  if (out.empty())
    throw Error(ErrorCode::kKey, "gpg exported nothing for key " + fingerprint + " from " + im.where());
  return std::string(out.begin(), out.end());
}

std::vector<std::string> Crypto::import_keys(const std::string& key_data) {
  Impl& im = *impl_;
  Data in = data_from_mem(key_data.data(), key_data.size());
  gpgme_error_t err = gpgme_op_import(im.ctx, in.get());
  im.clear_key_cache();
  if (err) {
    if (gpgme_err_code(err) == GPG_ERR_NO_DATA)
      throw Error(ErrorCode::kKey, "no OpenPGP key found in the data to import");
    throw_internal("importing keys into " + im.where(), err);
  }
  gpgme_import_result_t r = gpgme_op_import_result(im.ctx);
  std::vector<std::string> fprs;
  if (!r || r->considered == 0) throw Error(ErrorCode::kKey, "no OpenPGP key found in the data to import");
  for (gpgme_import_status_t s = r->imports; s; s = s->next) {
    if (s->result != 0 || !s->fpr) continue;
    std::string f = upper(s->fpr);
    if (std::find(fprs.begin(), fprs.end(), f) == fprs.end()) fprs.push_back(f);
  }
  if (fprs.empty() && r->not_imported > 0)
    throw Error(ErrorCode::kKey,
                "gpg rejected the key material (" + std::to_string(r->not_imported) + " keys not imported)");
  return fprs;
}

}  // namespace reduit
