#include "agent/audit_record.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "agent/session.hpp"
#include "agent/text.hpp"
#include "agent/timestamp.hpp"
#include "retention/policy.hpp"
#include "vault/clock.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string config_text(const Config& cfg) {
  if (!cfg.origin.empty() && cfg.origin.front() != '<') return file_text(cfg.origin);
  return builtin_config_text();
}

nlohmann::ordered_json opt_string(const std::optional<std::string>& s) {
  return s ? nlohmann::ordered_json(*s) : nlohmann::ordered_json(nullptr);
}

// The vault config: the open repository's, else the catalog's cached copy.
std::optional<VaultConfig> vault_config(Repository* repo, Catalog& catalog) {
  if (repo) return repo->config();
  if (auto cached = catalog.get_meta("vault_config"))
    return decode_config(Bytes(cached->begin(), cached->end()));
  return std::nullopt;
}

void append_changes(const Config& cfg, AuditLog& log, const std::optional<VaultConfig>& vc, Crypto* crypto,
                    const AuditActor& actor, std::int64_t now) {
  auto digest_change = [&](const std::string& event, const std::string& state_key, const std::string& path,
                           const std::string& text) {
    std::string d = to_hex(sha256(text));
    auto old = log.state(state_key);
    if (old && *old == d) return;
    log.append(event, {{"path", path}, {"old_digest", opt_string(old)}, {"new_digest", d}}, actor, now);
    log.set_state(state_key, d);
  };
  digest_change("config-change", "config_digest", cfg.origin, config_text(cfg));
  std::string policy_text;
  try {
    policy_text = read_policy_text(cfg.policy);
  } catch (const Error&) {
    // An unreadable policy is reported by the commands that use it.
  }
  digest_change("policy-change", "policy_digest",
                cfg.policy.empty() ? "<built-in policies/default.toml>" : cfg.policy, policy_text);
  if (!vc) return;

  std::string vault = cfg.vault_url + " " + vc->vault_id;
  auto old_vault = log.state("vault");
  if (!old_vault || *old_vault != vault) {
    if (old_vault) {
      auto sp = old_vault->rfind(' ');
      log.append("vault-removed",
                 {{"url", old_vault->substr(0, sp)}, {"vault_id", old_vault->substr(sp + 1)}}, actor, now);
    }
    log.append("vault-added", {{"url", cfg.vault_url}, {"vault_id", vc->vault_id}}, actor, now);
    log.set_state("vault", vault);
  }

  std::map<std::string, std::string> keys;  // fingerprint → role
  for (const auto& k : vc->archive_keys) keys[k] = "archive";
  keys[vc->agent_key] = keys.count(vc->agent_key) ? "archive+agent" : "agent";
  std::map<std::string, std::string> old_keys;
  if (auto s = log.state("keys")) {
    auto j = nlohmann::json::parse(*s, nullptr, false);
    if (j.is_object())
      for (auto& [fpr, role] : j.items()) old_keys[fpr] = role.get<std::string>();
  }
  if (keys != old_keys) {
    for (const auto& [fpr, role] : old_keys)
      if (!keys.count(fpr)) log.append("key-removed", {{"fingerprint", fpr}, {"role", role}}, actor, now);
    for (const auto& [fpr, role] : keys)
      if (!old_keys.count(fpr)) log.append("key-added", {{"fingerprint", fpr}, {"role", role}}, actor, now);
    log.set_state("keys", nlohmann::json(keys).dump());
  }
  if (!crypto || cfg.alerts.key_expiry_days <= 0) return;
  // Looking a key up is a gpg process each: once a day is enough for a window of days.
  const std::int64_t day = now / (86400LL * 1000000000);
  if (log.state("expiry_checked_day") == std::to_string(day)) return;
  log.set_state("expiry_checked_day", std::to_string(day));
  const std::int64_t window_ns = std::int64_t{cfg.alerts.key_expiry_days} * 86400 * 1000000000;
  for (const auto& [fpr, role] : keys) {
    std::int64_t expires = 0;
    try {
      expires = crypto->key_expires(fpr);
    } catch (const Error&) {
      continue;  // a public key this keyring lacks (e.g. an archive key on a restore host)
    }
    if (expires == 0) continue;
    std::int64_t expires_ns = expires * 1000000000;
    if (expires_ns - now > window_ns) continue;
    std::string state_key = "expiring." + fpr;
    if (log.state(state_key) == std::to_string(expires)) continue;
    log.append("key-expiring", {{"fingerprint", fpr}, {"role", role}, {"expires", iso_time(expires_ns)}},
               actor, now);
    log.set_state(state_key, std::to_string(expires));
  }
}

// Signs (and time-stamps) the head; returns false when this keyring cannot sign.
bool seal_head(const Config& cfg, AuditLog& log, const VaultConfig& vc, Crypto& crypto,
               std::vector<std::string>& warnings) {
  auto last = log.last();
  if (!last || !crypto.has_secret_key(vc.agent_key)) return false;
  AuditHead h;
  h.seq = last->seq;
  h.hash = last->hash;
  h.time_ns = clock_now_ns();
  h.statement = audit_head_statement(vc.vault_id, h.seq, h.hash, h.time_ns);
  h.signature = crypto.sign_detached(h.statement, vc.agent_key);
  h.signer = vc.agent_key;
  if (!cfg.audit.tsa_url.empty()) {
    try {
      h.tsr = request_timestamp(cfg.audit.tsa_url, h.statement, cfg.audit.tsa_ca_file);
    } catch (const Error& e) {
      warnings.push_back(std::string("audit head not time-stamped (the next run stamps its head): ") +
                         e.what());
    }
  }
  log.add_head(h);
  return true;
}

nlohmann::ordered_json head_json(const AuditHead& h) {
  return {{"seq", h.seq},
          {"hash", to_hex(h.hash)},
          {"time_ns", h.time_ns},
          {"statement", h.statement},
          {"signature", h.signature},
          {"signer", h.signer},
          {"tsr", to_base64(h.tsr)}};
}

AuditHead head_from_json(const nlohmann::json& j) {
  AuditHead h;
  h.seq = j.at("seq").get<std::uint64_t>();
  h.hash = hash_from_hex(j.at("hash").get<std::string>(), "audit head hash");
  h.time_ns = j.at("time_ns").get<std::int64_t>();
  h.statement = j.at("statement").get<std::string>();
  h.signature = j.at("signature").get<std::string>();
  h.signer = j.at("signer").get<std::string>();
  h.tsr = from_base64(j.at("tsr").get<std::string>(), "audit head time stamp");
  return h;
}

void replicate(AuditLog& log, Repository& repo) {
  const VaultConfig& vc = repo.config();
  std::string cursor_key = "replicated." + vc.vault_id;
  std::uint64_t done = std::stoull(log.state(cursor_key).value_or("0"));
  auto last = log.last();
  if (!last || last->seq <= done) return;
  nlohmann::ordered_json seg;
  seg["v"] = 1;
  seg["vault"] = vc.vault_id;
  seg["first"] = done + 1;
  seg["last"] = last->seq;
  nlohmann::ordered_json texts = nlohmann::ordered_json::array();
  for (const AuditEntry& e : log.entries())
    if (e.seq > done) texts.push_back(e.text);
  seg["entries"] = std::move(texts);
  nlohmann::ordered_json heads = nlohmann::ordered_json::array();
  for (const AuditHead& h : log.heads())
    if (h.seq > done) heads.push_back(head_json(h));
  seg["heads"] = std::move(heads);
  std::string text = seg.dump();
  repo.put_object("audit", Bytes(text.begin(), text.end()));
  log.set_state(cursor_key, std::to_string(last->seq));
}

}  // namespace

std::vector<std::string> audit_record(const Config& cfg, Catalog& catalog, Repository* repo,
                                      const std::string& event, const nlohmann::ordered_json& data,
                                      const std::string& key) {
  std::vector<std::string> warnings;
  AuditLog log(catalog.db());
  AuditActor actor = AuditActor::current();
  actor.key = key;
  std::int64_t now = clock_now_ns();
  std::optional<VaultConfig> vc;
  try {
    vc = vault_config(repo, catalog);
  } catch (const Error&) {
  }
  std::unique_ptr<Crypto> own_crypto;
  Crypto* crypto = repo ? &repo->crypto() : nullptr;
  if (!crypto && vc) {
    own_crypto = std::make_unique<Crypto>(cfg.gnupghome);
    crypto = own_crypto.get();
  }
  // IMMEDIATE: two reduit processes appending at once (a restore during a backup)
  // queue on the write lock instead of one failing to upgrade its read snapshot.
  SQLite::Transaction tx(catalog.db(), SQLite::TransactionBehavior::IMMEDIATE);
  append_changes(cfg, log, vc, crypto, actor, now);
  log.append(event, data, actor, now);
  tx.commit();
  if (!vc || !crypto) return warnings;
  try {
    if (!seal_head(cfg, log, *vc, *crypto, warnings)) return warnings;
    if (repo) replicate(log, *repo);
  } catch (const Error& e) {
    warnings.push_back(
        std::string("audit log not sealed or not copied to the vault (the next run does it): ") + e.what());
  }
  return warnings;
}

std::vector<std::string> audit_record_best_effort(const Config& cfg, Repository* repo,
                                                  const std::string& event,
                                                  const nlohmann::ordered_json& data,
                                                  const std::string& key) {
  try {
    Catalog catalog(cfg.state_dir);
    return audit_record(cfg, catalog, repo, event, data, key);
  } catch (const std::exception& e) {
    return {"could not write the audit log (" + std::string(e.what()) + "): this " + event +
            " is not in the audit log; if the catalog file is damaged, move it aside and run 'reduit "
            "catalog rebuild'"};
  }
}

nlohmann::ordered_json retention_run_evidence(Catalog& catalog, std::int64_t run) {
  std::vector<Hash> destroyed;
  nlohmann::ordered_json by_rule = nlohmann::ordered_json::object();
  std::uint64_t refused = 0;
  // A forget that removed nothing wrote no run (and on a new catalog no table).
  const bool logged = run != 0 && catalog.db().tableExists("retention_events");
  SQLite::Statement q(catalog.db(),
                      logged ? "SELECT action, rule, detail FROM retention_events WHERE run=? ORDER BY rowid"
                             : "SELECT '', '', '' WHERE 0");
  if (logged) q.bind(1, run);
  while (q.executeStep()) {
    std::string action = q.getColumn(0).getString();
    if (action == "refuse-delete-hold") ++refused;
    if (action != "delete-message") continue;
    std::string rule = q.getColumn(1).getString();
    by_rule[rule] = by_rule.value(rule, std::uint64_t{0}) + 1;
    destroyed.push_back(hash_from_hex(q.getColumn(2).getString(), "retention event sha256"));
  }
  return {{"messages_destroyed", destroyed.size()},
          {"destroyed_root", to_hex(merkle_root(destroyed))},
          {"by_rule", by_rule},
          {"refused", refused}};
}

std::string reading_key(Repository& repo) {
  try {
    for (const auto& fpr : repo.config().archive_keys)
      if (repo.crypto().has_secret_key(fpr)) return fpr;
  } catch (const Error&) {
  }
  return "";
}

std::uint64_t AuditVerifyResult::first_bad() const {
  std::uint64_t first = 0;
  for (const auto& p : problems)
    if (p.seq && (!first || p.seq < first)) first = p.seq;
  return first;
}

namespace {

// Checks one copy of the chain; `entries` sorted by seq. Problems name `where`.
void verify_chain(const std::vector<AuditEntry>& entries, const std::string& where,
                  std::vector<AuditProblem>& problems) {
  std::uint64_t expect = 1;
  Hash prev{};
  for (const AuditEntry& e : entries) {
    if (e.seq != expect) {
      if (e.seq > expect)
        problems.push_back({expect, where,
                            e.seq == expect + 1 ? "entry " + std::to_string(expect) + " is missing"
                                                : "entries " + std::to_string(expect) + "–" +
                                                      std::to_string(e.seq - 1) + " are missing"});
      else
        problems.push_back(
            {e.seq, where, "entry " + std::to_string(e.seq) + " appears twice or out of order"});
      return;  // the rest of the chain cannot be judged against this one
    }
    auto j = nlohmann::json::parse(e.text, nullptr, false);
    if (e.event.empty() || j.is_discarded()) {
      problems.push_back({e.seq, where, "entry " + std::to_string(e.seq) + " is not a valid entry text"});
      return;
    }
    if (j.value("seq", std::uint64_t{0}) != e.seq) {
      problems.push_back({e.seq, where,
                          "entry " + std::to_string(e.seq) + " records seq " +
                              std::to_string(j.value("seq", std::uint64_t{0})) + ": entries were reordered"});
      return;
    }
    Hash h = audit_entry_hash(e.text);
    if (h != e.hash) {
      problems.push_back({e.seq, where,
                          "entry " + std::to_string(e.seq) + " was altered (its text hashes to " +
                              to_hex(h).substr(0, 16) + "…, recorded " + to_hex(e.hash).substr(0, 16) +
                              "…)"});
      return;
    }
    if (e.prev != prev) {
      // This entry is intact (its own hash matches), so the one before was changed
      // after this one was written.
      problems.push_back({e.seq - 1, where,
                          "entry " + std::to_string(e.seq - 1) + " was altered: entry " +
                              std::to_string(e.seq) + " records its hash as " + to_hex(e.prev).substr(0, 16) +
                              "…"});
      return;
    }
    prev = h;
    ++expect;
  }
}

void verify_heads(const Config& cfg, const std::vector<AuditHead>& heads,
                  const std::vector<AuditEntry>& entries, const std::optional<VaultConfig>& vc,
                  Crypto* crypto, const std::string& where, AuditVerifyResult& r) {
  std::map<std::uint64_t, const AuditEntry*> by_seq;
  for (const auto& e : entries) by_seq[e.seq] = &e;
  std::uint64_t last = entries.empty() ? 0 : entries.back().seq;
  for (const AuditHead& h : heads) {
    ++r.heads;
    std::string name = "head at entry " + std::to_string(h.seq);
    if (vc && h.statement != audit_head_statement(vc->vault_id, h.seq, h.hash, h.time_ns)) {
      r.problems.push_back({h.seq, where, name + ": its statement does not match its fields"});
      continue;
    }
    if (crypto && vc) {
      try {
        crypto->verify_detached(h.statement, h.signature, vc->agent_key);
        ++r.heads_signed;
      } catch (const Error& e) {
        r.problems.push_back({h.seq, where, name + ": signature does not verify (" + e.what() + ")"});
        continue;
      }
    }
    if (!h.tsr.empty()) {
      try {
        verify_timestamp(h.tsr, h.statement, cfg.audit.tsa_ca_file);
        ++r.heads_stamped;
      } catch (const Error& e) {
        r.problems.push_back({h.seq, where, name + ": time stamp does not verify (" + e.what() + ")"});
      }
    }
    if (h.seq > last) {
      r.problems.push_back({last + 1, where,
                            "the log was truncated: a signed head covers entry " + std::to_string(h.seq) +
                                " but the log ends at entry " + std::to_string(last)});
      continue;
    }
    auto it = by_seq.find(h.seq);
    if (it != by_seq.end() && it->second->hash != h.hash)
      r.problems.push_back({h.seq, where,
                            "entry " + std::to_string(h.seq) + " differs from the signed head (head " +
                                to_hex(h.hash).substr(0, 16) + "…, entry " +
                                to_hex(it->second->hash).substr(0, 16) + "…)"});
  }
}

// Every audit/ object of the vault: entries by seq and heads. A damaged object is a
// problem (seq 0: which entries it held is unknown). Returns the objects read.
std::uint64_t read_vault_copy(Repository& repo, std::map<std::uint64_t, AuditEntry>& entries,
                              std::vector<AuditHead>& heads, std::vector<AuditProblem>& problems) {
  std::uint64_t objects = 0;
  for (const Hash& id : repo.list_objects("audit")) {
    ++objects;
    try {
      Bytes b = repo.get_object("audit", id);
      auto seg = nlohmann::json::parse(std::string(b.begin(), b.end()));
      for (const auto& t : seg.at("entries")) {
        AuditEntry e;
        e.text = t.get<std::string>();
        auto j = nlohmann::json::parse(e.text);
        e.seq = j.at("seq").get<std::uint64_t>();
        e.time_ns = j.at("time_ns").get<std::int64_t>();
        e.event = j.at("event").get<std::string>();
        e.prev = hash_from_hex(j.at("prev").get<std::string>(), "audit prev");
        e.hash = audit_entry_hash(e.text);
        entries.emplace(e.seq, std::move(e));
      }
      for (const auto& h : seg.at("heads")) heads.push_back(head_from_json(h));
    } catch (const std::exception& e) {
      problems.push_back({0, "vault", "object audit/" + to_hex(id) + " is damaged: " + e.what()});
    }
  }
  std::sort(heads.begin(), heads.end(), [](const AuditHead& a, const AuditHead& b) { return a.seq < b.seq; });
  return objects;
}

}  // namespace

std::uint64_t import_audit_log(Repository& repo, Catalog& catalog, std::vector<std::string>* problems) {
  AuditLog log(catalog.db());
  if (log.last()) return 0;
  std::map<std::uint64_t, AuditEntry> entries;
  std::vector<AuditHead> heads;
  std::vector<AuditProblem> found;
  read_vault_copy(repo, entries, heads, found);
  std::vector<AuditEntry> chain;
  for (auto& [seq, e] : entries) chain.push_back(e);
  std::vector<AuditProblem> chain_problems;
  verify_chain(chain, "vault", chain_problems);
  std::uint64_t upto = chain.empty() ? 0 : chain.back().seq;
  if (!chain_problems.empty()) upto = chain_problems.front().seq - 1;
  for (auto& p : found) chain_problems.insert(chain_problems.begin(), p);
  SQLite::Transaction tx(catalog.db(), SQLite::TransactionBehavior::IMMEDIATE);
  std::uint64_t n = 0;
  for (const auto& e : chain) {
    if (e.seq > upto) break;
    log.insert_copy(e);
    ++n;
  }
  for (const auto& h : heads)
    if (h.seq <= upto) log.add_head(h);
  log.set_state("replicated." + repo.config().vault_id, std::to_string(upto));
  // What the log last said about config, policy, vault and keys, so the next run
  // logs only real changes.
  std::map<std::string, std::string> keys;
  for (const auto& e : chain) {
    if (e.seq > upto) break;
    auto j = nlohmann::json::parse(e.text);
    const auto& d = j.at("data");
    if (e.event == "config-change") log.set_state("config_digest", d.value("new_digest", ""));
    if (e.event == "policy-change") log.set_state("policy_digest", d.value("new_digest", ""));
    if (e.event == "vault-added") log.set_state("vault", d.value("url", "") + " " + d.value("vault_id", ""));
    if (e.event == "key-added") keys[d.value("fingerprint", "")] = d.value("role", "");
    if (e.event == "key-removed") keys.erase(d.value("fingerprint", ""));
  }
  if (!keys.empty()) log.set_state("keys", nlohmann::json(keys).dump());
  tx.commit();
  if (problems)
    for (const auto& p : chain_problems)
      problems->push_back("audit log: " + p.what +
                          (n ? "; entries after " + std::to_string(upto) + " not imported" : ""));
  return n;
}

AuditVerifyResult audit_verify(const Config& cfg, Catalog& catalog, Repository* repo,
                               const std::string& anchor) {
  AuditVerifyResult r;
  std::optional<std::pair<std::uint64_t, Hash>> anchor_at;
  if (!anchor.empty()) {
    auto colon = anchor.find(':');
    try {
      if (colon == std::string::npos) throw Error(ErrorCode::kUsage, "");
      anchor_at = {std::stoull(anchor.substr(0, colon)), hash_from_hex(anchor.substr(colon + 1))};
    } catch (const std::exception&) {
      throw Error(
          ErrorCode::kUsage,
          "--anchor must be SEQ:HASH (the head printed in a report, e.g. 42:3f…), not \"" + anchor + "\"");
    }
  }
  AuditLog log(catalog.db());
  std::vector<AuditEntry> entries = log.entries();
  r.entries = entries.size();
  std::optional<VaultConfig> vc;
  try {
    vc = vault_config(repo, catalog);
  } catch (const Error&) {
  }
  std::unique_ptr<Crypto> own;
  Crypto* crypto = repo ? &repo->crypto() : nullptr;
  if (!crypto && vc) {
    own = std::make_unique<Crypto>(cfg.gnupghome);
    crypto = own.get();
  }
  verify_chain(entries, "catalog", r.problems);
  verify_heads(cfg, log.heads(), entries, vc, crypto, "catalog", r);

  if (repo) {
    r.vault_checked = true;
    std::map<std::uint64_t, AuditEntry> vault_entries;
    std::vector<AuditHead> vault_heads;
    r.vault_objects = read_vault_copy(*repo, vault_entries, vault_heads, r.problems);
    std::vector<AuditEntry> copy;
    for (auto& [seq, e] : vault_entries) copy.push_back(e);
    r.vault_entries = copy.size();
    std::size_t before = r.problems.size();
    verify_chain(copy, "vault", r.problems);
    AuditVerifyResult vr;
    verify_heads(cfg, vault_heads, copy, vc, crypto, "vault", vr);
    for (auto& p : vr.problems) r.problems.push_back(std::move(p));
    bool vault_chain_ok = r.problems.size() == before;
    // The copies must agree entry by entry; the vault may lag the catalog (entries
    // not yet replicated), never lead it.
    std::map<std::uint64_t, const AuditEntry*> local;
    for (const auto& e : entries) local[e.seq] = &e;
    for (const auto& e : copy) {
      auto it = local.find(e.seq);
      if (it == local.end()) {
        if (vault_chain_ok)
          r.problems.push_back({e.seq, "catalog",
                                "the catalog's log was truncated: the vault copy holds entry " +
                                    std::to_string(e.seq) + " (" + e.event + ")"});
        break;
      }
      if (it->second->text != e.text) {
        r.problems.push_back(
            {e.seq, "vault",
             "entry " + std::to_string(e.seq) + " differs between the catalog and the vault copy"});
        break;
      }
    }
    std::string cursor = log.state("replicated." + (vc ? vc->vault_id : std::string())).value_or("0");
    std::uint64_t replicated = std::stoull(cursor);
    std::uint64_t vault_last = copy.empty() ? 0 : copy.back().seq;
    if (vault_last < replicated)
      r.problems.push_back({vault_last + 1, "vault",
                            "the vault copy ends at entry " + std::to_string(vault_last) +
                                " but entries up to " + std::to_string(replicated) +
                                " were copied there: audit objects were deleted"});
  }
  if (anchor_at) {
    auto [seq, hash] = *anchor_at;
    auto it = std::find_if(entries.begin(), entries.end(), [&](const AuditEntry& e) { return e.seq == seq; });
    std::uint64_t last = entries.empty() ? 0 : entries.back().seq;
    if (it == entries.end())
      r.problems.push_back({std::min(seq, last + 1), "anchor",
                            "the anchor names entry " + std::to_string(seq) + " but the log ends at entry " +
                                std::to_string(last) + ": it was truncated"});
    else if (it->hash != hash)
      r.problems.push_back(
          {seq, "anchor", "entry " + std::to_string(seq) + " does not match the anchor's hash"});
  }
  std::stable_sort(r.problems.begin(), r.problems.end(), [](const AuditProblem& a, const AuditProblem& b) {
    return (a.seq ? a.seq : UINT64_MAX) < (b.seq ? b.seq : UINT64_MAX);
  });
  return r;
}

}  // namespace reduit
