#include "retention/archive.hpp"

#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "vault/clock.hpp"
#include "vault/error.hpp"

namespace reduit {

using ojson = nlohmann::ordered_json;

namespace {

std::string hex_or_empty(const std::optional<Hash>& h) {
  return h ? to_hex(*h) : "";
}

std::optional<Hash> opt_hash(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].get<std::string>().empty()) return std::nullopt;
  return hash_from_hex(j[key].get<std::string>(), key);
}

template <typename T>
T req(const nlohmann::json& j, const char* key, const char* what) {
  if (!j.is_object() || !j.contains(key)) throw Error(ErrorCode::kVerify, std::string(what) + ": no " + key);
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorCode::kVerify, std::string(what) + ": bad " + key);
  }
}

nlohmann::json parse(const Bytes& b, const char* what) {
  auto j = nlohmann::json::parse(b.begin(), b.end(), nullptr, false);
  if (!j.is_object()) throw Error(ErrorCode::kVerify, std::string(what) + " is not a JSON object");
  return j;
}

Bytes to_bytes(const ojson& j) {
  std::string s = j.dump();
  return Bytes(s.begin(), s.end());
}

}  // namespace

std::string unique_name(const std::string& path) {
  std::string base = path.substr(path.rfind('/') + 1);
  return base.substr(0, base.find(":2,"));
}

std::string ArchiveRecord::key() const {
  return mailbox + "\n" + folder + "\n" + unique_name(entry.path) + "\n" + to_hex(entry.sha256);
}

ArchiveState load_archive(Repository& repo) {
  ArchiveState st;
  std::map<Hash, nlohmann::json> docs;
  for (const Hash& id : repo.list_objects("archive"))
    docs[id] = parse(repo.get_object("archive", id), "archive object");
  std::set<Hash> superseded;
  for (const auto& [id, j] : docs) {
    for (const auto& s : req<std::vector<std::string>>(j, "supersedes", "archive object"))
      superseded.insert(hash_from_hex(s, "superseded archive id"));
  }
  for (const auto& [id, j] : docs) {
    if (superseded.count(id)) {
      st.superseded.push_back(id);
      continue;
    }
    st.objects.push_back(id);
    if (req<int>(j, "version", "archive object") != 1)
      throw Error(ErrorCode::kVerify, "archive/" + to_hex(id) + ": unsupported version");
    for (const auto& r : j["records"]) {
      ArchiveRecord a;
      a.mailbox = req<std::string>(r, "mailbox", "archive record");
      a.folder = req<std::string>(r, "folder", "archive record");
      a.entry.kind = EntryKind::kMessage;
      a.entry.path = req<std::string>(r, "path", "archive record");
      check_relative_path(a.folder.empty() ? a.entry.path : a.folder + "/" + a.entry.path,
                          "archive record path");
      a.entry.mode = req<std::uint32_t>(r, "mode", "archive record") & 07777;
      a.entry.mtime_ns = req<std::int64_t>(r, "mtime_ns", "archive record");
      a.entry.size = req<std::uint64_t>(r, "size", "archive record");
      a.entry.sha256 = hash_from_hex(req<std::string>(r, "sha256", "archive record"), "sha256");
      a.entry.header = opt_hash(r, "header");
      a.entry.body = opt_hash(r, "body");
      a.date_ns = req<std::int64_t>(r, "date_ns", "archive record");
      a.captured_ns = req<std::int64_t>(r, "captured_ns", "archive record");
      auto [it, fresh] = st.records.emplace(a.key(), a);
      if (!fresh) it->second.captured_ns = std::min(it->second.captured_ns, a.captured_ns);
    }
  }
  return st;
}

Hash write_archive(Repository& repo, const std::vector<ArchiveRecord>& records,
                   const std::vector<Hash>& supersedes, std::int64_t now_ns) {
  ojson recs = ojson::array();
  for (const ArchiveRecord& a : records) {
    recs.push_back({{"mailbox", a.mailbox},
                    {"folder", a.folder},
                    {"path", a.entry.path},
                    {"mode", a.entry.mode},
                    {"mtime_ns", a.entry.mtime_ns},
                    {"size", a.entry.size},
                    {"sha256", to_hex(a.entry.sha256)},
                    {"header", hex_or_empty(a.entry.header)},
                    {"body", hex_or_empty(a.entry.body)},
                    {"date_ns", a.date_ns},
                    {"captured_ns", a.captured_ns}});
  }
  ojson sup = ojson::array();
  for (const Hash& h : supersedes) sup.push_back(to_hex(h));
  ojson doc{{"version", 1}, {"time_ns", now_ns}, {"supersedes", sup}, {"records", recs}};
  return repo.put_object("archive", to_bytes(doc));
}

// ---- holds -----------------------------------------------------------------

bool Hold::covers(const std::string& mb, const std::string& f, std::int64_t date_ns) const {
  if (released || mb != mailbox) return false;
  if (!folder.empty() && f != folder && f.rfind(folder + ".", 0) != 0) return false;
  if (from_ns && date_ns < from_ns) return false;
  if (to_ns && date_ns > to_ns) return false;
  return true;
}

std::vector<Hold> load_holds(Repository& repo) {
  std::vector<Hold> holds;
  std::vector<std::pair<std::string, nlohmann::json>> releases;
  for (const Hash& id : repo.list_objects("holds")) {
    nlohmann::json j = parse(repo.get_object("holds", id), "hold object");
    std::string action = req<std::string>(j, "action", "hold object");
    if (action == "add") {
      Hold h;
      h.id = to_hex(id);
      h.mailbox = req<std::string>(j, "mailbox", "hold");
      h.folder = req<std::string>(j, "folder", "hold");
      h.from_ns = req<std::int64_t>(j, "from_ns", "hold");
      h.to_ns = req<std::int64_t>(j, "to_ns", "hold");
      h.reason = req<std::string>(j, "reason", "hold");
      h.host = req<std::string>(j, "host", "hold");
      h.created_ns = req<std::int64_t>(j, "time_ns", "hold");
      holds.push_back(std::move(h));
    } else if (action == "release") {
      releases.emplace_back(req<std::string>(j, "hold", "hold release"), j);
    } else {
      throw Error(ErrorCode::kVerify, "holds/" + to_hex(id) + ": unknown action '" + action + "'");
    }
  }
  for (const auto& [target, j] : releases) {
    for (Hold& h : holds) {
      if (h.id == target) {
        h.released = true;
        h.release_reason = req<std::string>(j, "reason", "hold release");
        h.released_ns = req<std::int64_t>(j, "time_ns", "hold release");
      }
    }
  }
  std::sort(holds.begin(), holds.end(), [](const Hold& a, const Hold& b) {
    return a.created_ns != b.created_ns ? a.created_ns < b.created_ns : a.id < b.id;
  });
  return holds;
}

Hold add_hold(Repository& repo, const std::string& mailbox, const std::string& folder, std::int64_t from_ns,
              std::int64_t to_ns, const std::string& reason, std::int64_t now_ns) {
  if (mailbox.empty()) throw Error(ErrorCode::kUsage, "a hold needs --mailbox");
  if (reason.empty()) throw Error(ErrorCode::kUsage, "a hold needs --reason (it is recorded for auditors)");
  if (from_ns && to_ns && to_ns < from_ns) throw Error(ErrorCode::kUsage, "hold: --to is before --from");
  if (!folder.empty()) check_relative_path(folder, "hold folder");
  Hold h;
  h.mailbox = mailbox;
  h.folder = folder;
  h.from_ns = from_ns;
  h.to_ns = to_ns;
  h.reason = reason;
  h.host = local_hostname();
  h.created_ns = now_ns;
  ojson doc{{"version", 1},       {"action", "add"},  {"time_ns", now_ns},
            {"mailbox", mailbox}, {"folder", folder}, {"from_ns", from_ns},
            {"to_ns", to_ns},     {"reason", reason}, {"host", h.host}};
  h.id = to_hex(repo.put_object("holds", to_bytes(doc)));
  return h;
}

Hold release_hold(Repository& repo, const std::string& prefix, const std::string& reason,
                  std::int64_t now_ns) {
  if (reason.empty()) throw Error(ErrorCode::kUsage, "releasing a hold needs --reason (it is recorded)");
  if (prefix.size() < 6 || prefix.find_first_not_of("0123456789abcdef") != std::string::npos)
    throw Error(ErrorCode::kUsage,
                "hold id '" + prefix + "' must be at least 6 hex digits (see 'reduit hold list')");
  std::vector<Hold> holds = load_holds(repo);
  const Hold* found = nullptr;
  for (const Hold& h : holds) {
    if (h.id.rfind(prefix, 0) == 0) {
      if (found) throw Error(ErrorCode::kUsage, "hold id '" + prefix + "' is ambiguous; give more digits");
      found = &h;
    }
  }
  if (!found) throw Error(ErrorCode::kNotFound, "no hold '" + prefix + "' (see 'reduit hold list')");
  if (found->released) throw Error(ErrorCode::kUsage, "hold " + prefix + " is already released");
  ojson doc{{"version", 1},      {"action", "release"}, {"time_ns", now_ns},
            {"hold", found->id}, {"reason", reason},    {"host", local_hostname()}};
  repo.put_object("holds", to_bytes(doc));
  Hold h = *found;
  h.released = true;
  h.release_reason = reason;
  h.released_ns = now_ns;
  return h;
}

const Hold* find_hold(const std::vector<Hold>& holds, const std::string& mailbox, const std::string& folder,
                      std::int64_t date_ns) {
  for (const Hold& h : holds) {
    if (h.covers(mailbox, folder, date_ns)) return &h;
  }
  return nullptr;
}

// ---- RFC 5322 dates --------------------------------------------------------

std::optional<std::int64_t> parse_rfc5322_date(const std::string& text) {
  std::string s = text;
  if (auto comma = s.find(','); comma != std::string::npos) s = s.substr(comma + 1);  // day-of-week
  int day = 0, year = 0, hh = 0, mm = 0, ss = 0, n = 0;
  char mon[4] = {0}, zone[16] = {0};
  if (std::sscanf(s.c_str(), " %d %3s %d %d:%d%n", &day, mon, &year, &hh, &mm, &n) != 5) return std::nullopt;
  const char* rest = s.c_str() + n;
  if (*rest == ':') {
    int used = 0;
    if (std::sscanf(rest, ":%d%n", &ss, &used) != 1) return std::nullopt;
    rest += used;
  }
  std::sscanf(rest, " %15s", zone);
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int month = 0;
  for (int i = 0; i < 12; ++i) {
    if (strncasecmp(mon, kMonths[i], 3) == 0) month = i + 1;
  }
  if (!month || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) return std::nullopt;
  if (year < 50)
    year += 2000;  // RFC 5322 §4.3: two-digit years
  else if (year < 1000)
    year += 1900;
  int offset = 0;
  std::string z = zone;
  if ((z.size() == 5) && (z[0] == '+' || z[0] == '-')) {
    int v = std::atoi(z.c_str() + 1);
    offset = ((v / 100) * 3600 + (v % 100) * 60) * (z[0] == '-' ? -1 : 1);
  } else {
    static const std::pair<const char*, int> kZones[] = {{"UT", 0},   {"GMT", 0},  {"EST", -5}, {"EDT", -4},
                                                         {"CST", -6}, {"CDT", -5}, {"MST", -7}, {"MDT", -6},
                                                         {"PST", -8}, {"PDT", -7}};
    for (const auto& [name, h] : kZones) {
      if (strcasecmp(z.c_str(), name) == 0) offset = h * 3600;
    }
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", year, month, day, hh, mm,
                std::min(ss, 59));
  auto t = parse_instant(buf);
  if (!t) return std::nullopt;
  return *t - static_cast<std::int64_t>(offset) * 1000000000;
}

MessageDates::MessageDates(Catalog& catalog) : catalog_(catalog) {}

std::int64_t MessageDates::date_ns(const Hash& sha) {
  if (auto it = cache_.find(sha); it != cache_.end()) return it->second;
  std::int64_t v = 0;
  SQLite::Statement q(catalog_.db(), "SELECT date FROM main.messages WHERE sha256=?");
  q.bind(1, sha.data(), 32);
  if (q.executeStep()) v = parse_rfc5322_date(q.getColumn(0).getString()).value_or(0);
  cache_[sha] = v;
  return v;
}

// ---- retention log ---------------------------------------------------------

RetentionLog::RetentionLog(Catalog& catalog) : catalog_(catalog) {
  catalog_.db().exec(
      "CREATE TABLE IF NOT EXISTS retention_runs(id INTEGER PRIMARY KEY, command TEXT NOT NULL, "
      "time_ns INTEGER NOT NULL, policy TEXT, finished INTEGER NOT NULL DEFAULT 0, summary TEXT);"
      "CREATE TABLE IF NOT EXISTS retention_events(run INTEGER NOT NULL, action TEXT NOT NULL, "
      "object TEXT NOT NULL, class TEXT, rule TEXT, bytes INTEGER, detail TEXT);"
      "CREATE INDEX IF NOT EXISTS retention_events_run ON retention_events(run);");
}

std::int64_t RetentionLog::begin(const std::string& command, std::int64_t now_ns, const std::string& policy) {
  SQLite::Statement q(catalog_.db(), "INSERT INTO retention_runs(command, time_ns, policy) VALUES(?,?,?)");
  q.bind(1, command);
  q.bind(2, now_ns);
  q.bind(3, policy);
  q.exec();
  return catalog_.db().getLastInsertRowid();
}

void RetentionLog::add(std::int64_t run, const RetentionEvent& e) {
  SQLite::Statement q(catalog_.db(), "INSERT INTO retention_events VALUES(?,?,?,?,?,?,?)");
  q.bind(1, run);
  q.bind(2, e.action);
  q.bind(3, e.object);
  q.bind(4, e.klass);
  q.bind(5, e.rule);
  q.bind(6, e.bytes);
  q.bind(7, e.detail);
  q.exec();
}

void RetentionLog::finish(std::int64_t run, const std::string& summary) {
  SQLite::Statement q(catalog_.db(), "UPDATE retention_runs SET finished=1, summary=? WHERE id=?");
  q.bind(1, summary);
  q.bind(2, run);
  q.exec();
}

// ---- fault seam ------------------------------------------------------------

void fault_point(const std::string& point) {
  static std::map<std::string, int> passes;
  const char* v = std::getenv("REDUIT_FAULT");
  if (!v || !*v) return;
  std::string want = v;
  int nth = 1;
  if (auto h = want.find('#'); h != std::string::npos) {
    nth = std::atoi(want.c_str() + h + 1);
    want = want.substr(0, h);
  }
  if (want != point) return;
  if (++passes[point] == nth) {
    std::fprintf(stderr, "reduit: fault injected at %s\n", point.c_str());
    _exit(99);
  }
}

}  // namespace reduit
