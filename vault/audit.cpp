#include "vault/audit.hpp"

#include <pwd.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "vault/repository.hpp"  // local_hostname

namespace reduit {

namespace {

const char* kAuditSchema = R"sql(
CREATE TABLE IF NOT EXISTS audit_log(seq INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL,
  event TEXT NOT NULL, text TEXT NOT NULL, hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log(time_ns);
CREATE TABLE IF NOT EXISTS audit_heads(seq INTEGER NOT NULL, hash BLOB NOT NULL, time_ns INTEGER NOT NULL,
  statement TEXT NOT NULL, signature TEXT NOT NULL, signer TEXT NOT NULL, tsr BLOB);
CREATE TABLE IF NOT EXISTS audit_state(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
)sql";

std::string utc_seconds(std::int64_t ns) {
  time_t t = static_cast<time_t>(ns / 1000000000 - (ns % 1000000000 < 0 ? 1 : 0));
  tm tmv;
  gmtime_r(&t, &tmv);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  return buf;
}

Hash blob_hash(const SQLite::Column& c) {
  Hash h{};
  if (c.getBytes() == 32) std::memcpy(h.data(), c.getBlob(), 32);
  return h;
}

AuditEntry entry_from_row(SQLite::Statement& q) {
  AuditEntry e;
  e.seq = static_cast<std::uint64_t>(q.getColumn(0).getInt64());
  e.time_ns = q.getColumn(1).getInt64();
  e.text = q.getColumn(3).getString();
  e.hash = blob_hash(q.getColumn(4));
  auto j = nlohmann::ordered_json::parse(e.text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return e;
  try {
    e.event = j.at("event").get<std::string>();
    const auto& a = j.at("actor");
    e.actor.user = a.value("user", "");
    e.actor.uid = a.value("uid", std::int64_t{-1});
    e.actor.host = a.value("host", "");
    e.actor.key = a.value("key", "");
    e.data = j.at("data");
    e.prev = hash_from_hex(j.at("prev").get<std::string>(), "audit prev");
  } catch (const std::exception&) {
    e.event.clear();
  }
  return e;
}

}  // namespace

AuditActor AuditActor::current() {
  AuditActor a;
  a.uid = static_cast<std::int64_t>(geteuid());
  if (passwd* pw = getpwuid(geteuid()))
    a.user = pw->pw_name;
  else
    a.user = std::to_string(a.uid);
  a.host = local_hostname();
  return a;
}

Hash audit_entry_hash(const std::string& text) {
  return sha256(text);
}

namespace {
Hash merkle(const Hash* ids, std::size_t n) {
  if (n == 1) {
    std::string leaf(1, '\0');
    leaf.append(reinterpret_cast<const char*>(ids[0].data()), 32);
    return sha256(leaf);
  }
  std::size_t k = 1;
  while (k * 2 < n) k *= 2;
  Hash l = merkle(ids, k), r = merkle(ids + k, n - k);
  std::string node(1, '\x01');
  node.append(reinterpret_cast<const char*>(l.data()), 32);
  node.append(reinterpret_cast<const char*>(r.data()), 32);
  return sha256(node);
}
}  // namespace

Hash merkle_root(std::vector<Hash> ids) {
  if (ids.empty()) return sha256(std::string_view{});
  std::sort(ids.begin(), ids.end());
  return merkle(ids.data(), ids.size());
}

std::string audit_head_statement(const std::string& vault_id, std::uint64_t seq, const Hash& hash,
                                 std::int64_t time_ns) {
  return "reduit audit head v1\nvault " + vault_id + "\nseq " + std::to_string(seq) + "\nhash " +
         to_hex(hash) + "\ntime " + utc_seconds(time_ns) + "\n";
}

AuditLog::AuditLog(SQLite::Database& db) : db_(db) {
  db_.exec(kAuditSchema);
}

AuditEntry AuditLog::append(const std::string& event, const nlohmann::ordered_json& data,
                            const AuditActor& actor, std::int64_t time_ns) {
  AuditEntry e;
  std::optional<AuditEntry> prev = last();
  e.seq = prev ? prev->seq + 1 : 1;
  e.time_ns = time_ns;
  e.event = event;
  e.actor = actor;
  e.data = data;
  if (prev) e.prev = audit_entry_hash(prev->text);
  nlohmann::ordered_json j;
  j["v"] = 1;
  j["seq"] = e.seq;
  j["time"] = utc_seconds(time_ns);
  j["time_ns"] = time_ns;
  j["event"] = event;
  j["actor"] = {{"user", actor.user}, {"uid", actor.uid}, {"host", actor.host}, {"key", actor.key}};
  j["data"] = data.is_null() ? nlohmann::ordered_json::object() : data;
  j["prev"] = to_hex(e.prev);
  e.text = j.dump();
  e.hash = audit_entry_hash(e.text);
  SQLite::Statement q(db_, "INSERT INTO audit_log(seq, time_ns, event, text, hash) VALUES(?,?,?,?,?)");
  q.bind(1, static_cast<std::int64_t>(e.seq));
  q.bind(2, time_ns);
  q.bind(3, event);
  q.bind(4, e.text);
  q.bind(5, e.hash.data(), 32);
  q.exec();
  return e;
}

void AuditLog::insert_copy(const AuditEntry& e) {
  auto j = nlohmann::json::parse(e.text);
  SQLite::Statement q(db_, "INSERT INTO audit_log(seq, time_ns, event, text, hash) VALUES(?,?,?,?,?)");
  q.bind(1, static_cast<std::int64_t>(e.seq));
  q.bind(2, j.at("time_ns").get<std::int64_t>());
  q.bind(3, j.at("event").get<std::string>());
  q.bind(4, e.text);
  Hash h = audit_entry_hash(e.text);
  q.bind(5, h.data(), 32);
  q.exec();
}

std::vector<AuditEntry> AuditLog::entries(std::int64_t since_ns, std::int64_t until_ns) const {
  std::vector<AuditEntry> out;
  SQLite::Statement q(
      db_,
      "SELECT seq, time_ns, event, text, hash FROM audit_log WHERE time_ns >= ? AND time_ns < ? "
      "ORDER BY seq");
  q.bind(1, since_ns);
  q.bind(2, until_ns);
  while (q.executeStep()) out.push_back(entry_from_row(q));
  return out;
}

std::optional<AuditEntry> AuditLog::last() const {
  SQLite::Statement q(db_, "SELECT seq, time_ns, event, text, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
  if (!q.executeStep()) return std::nullopt;
  return entry_from_row(q);
}

void AuditLog::add_head(const AuditHead& h) {
  SQLite::Statement q(db_,
                      "INSERT INTO audit_heads(seq, hash, time_ns, statement, signature, signer, tsr) "
                      "VALUES(?,?,?,?,?,?,?)");
  q.bind(1, static_cast<std::int64_t>(h.seq));
  q.bind(2, h.hash.data(), 32);
  q.bind(3, h.time_ns);
  q.bind(4, h.statement);
  q.bind(5, h.signature);
  q.bind(6, h.signer);
  if (h.tsr.empty())
    q.bind(7);
  else
    q.bind(7, h.tsr.data(), static_cast<int>(h.tsr.size()));
  q.exec();
}

std::vector<AuditHead> AuditLog::heads() const {
  std::vector<AuditHead> out;
  SQLite::Statement q(
      db_, "SELECT seq, hash, time_ns, statement, signature, signer, tsr FROM audit_heads ORDER BY rowid");
  while (q.executeStep()) {
    AuditHead h;
    h.seq = static_cast<std::uint64_t>(q.getColumn(0).getInt64());
    h.hash = blob_hash(q.getColumn(1));
    h.time_ns = q.getColumn(2).getInt64();
    h.statement = q.getColumn(3).getString();
    h.signature = q.getColumn(4).getString();
    h.signer = q.getColumn(5).getString();
    if (!q.getColumn(6).isNull())
      h.tsr.assign(static_cast<const char*>(q.getColumn(6).getBlob()), q.getColumn(6).getBytes());
    out.push_back(std::move(h));
  }
  return out;
}

std::optional<std::string> AuditLog::state(const std::string& key) const {
  SQLite::Statement q(db_, "SELECT value FROM audit_state WHERE key=?");
  q.bind(1, key);
  if (!q.executeStep()) return std::nullopt;
  return q.getColumn(0).getString();
}

void AuditLog::set_state(const std::string& key, const std::string& value) {
  SQLite::Statement q(db_, "INSERT OR REPLACE INTO audit_state(key, value) VALUES(?,?)");
  q.bind(1, key);
  q.bind(2, value);
  q.exec();
}

}  // namespace reduit
