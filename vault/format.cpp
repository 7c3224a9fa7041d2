#include "vault/format.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "vault/error.hpp"

namespace reduit {

using json = nlohmann::ordered_json;

namespace {

constexpr char kPackMagic[8] = {'R', 'D', 'P', 'A', 'C', 'K', '0', '1'};
constexpr char kIndexMagic[8] = {'R', 'D', 'I', 'N', 'D', 'X', '0', '1'};
constexpr std::size_t kPackEntrySize = 1 + 32 + 8 + 8;
constexpr std::size_t kPackFooterSize = 8 + 8;  // entry count (u64 LE) + magic

// append_bytes (vault/bytes.hpp), not insert(): a memcpy, not a byte loop.
void append(Bytes& b, const void* p, std::size_t n) {
  append_bytes(b, p, n);
}
void put_u64(Bytes& b, std::uint64_t v) {
  std::uint8_t le[8];
  store_le(le, v, 8);
  append(b, le, 8);
}
std::uint64_t get_u64(const std::uint8_t* p) {
  return load_le(p, 8);
}

[[noreturn]] void malformed(const std::string& what) {
  throw Error(ErrorCode::kVerify, "malformed " + what);
}

BlobType blob_type_from(std::uint8_t v, const char* what) {
  if (v < 1 || v > 6) malformed(std::string(what) + ": unknown blob type " + std::to_string(v));
  return static_cast<BlobType>(v);
}

class Reader {
 public:
  Reader(const Bytes& b, const char* what) : b_(b), what_(what) {}
  const std::uint8_t* take(std::size_t n) {
    if (b_.size() - pos_ < n) malformed(std::string(what_) + ": truncated");
    const std::uint8_t* p = b_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::uint64_t u64() { return get_u64(take(8)); }
  std::uint8_t u8() { return *take(1); }
  Hash hash() {
    Hash h;
    std::memcpy(h.data(), take(32), 32);
    return h;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  const Bytes& b_;
  const char* what_;
  std::size_t pos_ = 0;
};

json parse_json(const Bytes& data, const char* what) {
  json j = json::parse(data.begin(), data.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) malformed(std::string(what) + ": not a JSON object");
  return j;
}

// Typed field access with a clear error instead of nlohmann's exception text.
template <typename T>
T field(const json& j, const char* key, const char* what) {
  auto it = j.find(key);
  if (it == j.end()) malformed(std::string(what) + ": missing \"" + key + "\"");
  try {
    return it->get<T>();
  } catch (const std::exception&) {
    malformed(std::string(what) + ": field \"" + key + "\" has the wrong type");
  }
}

std::optional<Hash> opt_hash(const json& j, const char* key, const char* what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) malformed(std::string(what) + ": field \"" + key + "\" is not a string");
  return hash_from_hex(it->get<std::string>(), what);
}

const char* kind_name(EntryKind k) {
  switch (k) {
    case EntryKind::kMessage:
      return "message";
    case EntryKind::kFile:
      return "file";
    case EntryKind::kDir:
      return "dir";
  }
  return "file";
}

}  // namespace

// ---- packs -----------------------------------------------------------------

void PackWriter::add(BlobType type, const Hash& id, const void* data, std::size_t size) {
  if (data_.empty()) append(data_, kPackMagic, 8);
  const auto* p = static_cast<const std::uint8_t*>(data);
  const bool grouped = type == BlobType::kHeader && size <= kGroupedHeaderMax;
  // A quarter of the pack, reserved at the first header: at the default pack size
  // that is a buffer of its own, kept out of gpg's forks (vault/bytes.hpp), instead
  // of one that doubles its way up through the heap.
  if (grouped && headers_.capacity() == 0) headers_.reserve(reserve_ / 4);
  Bytes& area = grouped ? headers_ : data_;
  if (grouped) grouped_.push_back(entries_.size());
  entries_.push_back(PackEntry{type, id, area.size(), size});
  append_bytes(area, p, size);
}

std::vector<PackEntry> PackWriter::entries() const {
  std::vector<PackEntry> out = entries_;
  std::size_t headers_at = std::max<std::size_t>(data_.size(), 8);
  for (std::size_t i : grouped_) out[i].offset += headers_at;
  return out;
}

Bytes PackWriter::finish(Bytes next) {
  if (data_.empty()) append(data_, kPackMagic, 8);
  std::vector<PackEntry> laid_out = entries();
  Bytes out = std::move(data_);
  out.reserve(out.size() + headers_.size() + entries_.size() * kPackEntrySize + kPackFooterSize);
  append_bytes(out, headers_.data(), headers_.size());
  for (const PackEntry& e : laid_out) {
    out.push_back(static_cast<std::uint8_t>(e.type));
    append(out, e.id.data(), 32);
    put_u64(out, e.offset);
    put_u64(out, e.length);
  }
  put_u64(out, entries_.size());
  append(out, kPackMagic, 8);
  entries_.clear();
  grouped_.clear();
  // Keeps its capacity for the next pack (a pack of headers only grows it to about
  // twice the pack target, then no more); more (a caller that never flushed) is freed.
  headers_.clear();
  if (headers_.capacity() > 2 * reserve_) Bytes().swap(headers_);
  next.clear();
  if (next.capacity() < reserve_) next.reserve(reserve_);
  data_ = std::move(next);
  return out;
}

std::vector<PackEntry> parse_pack(const Bytes& b) {
  if (b.size() < 8 + kPackFooterSize || std::memcmp(b.data(), kPackMagic, 8) != 0 ||
      std::memcmp(b.data() + b.size() - 8, kPackMagic, 8) != 0) {
    malformed("pack: bad magic");
  }
  std::uint64_t count = get_u64(b.data() + b.size() - kPackFooterSize);
  std::uint64_t avail = b.size() - 8 - kPackFooterSize;
  if (count > avail / kPackEntrySize) malformed("pack: entry count exceeds pack size");
  std::uint64_t table = b.size() - kPackFooterSize - count * kPackEntrySize;
  std::vector<PackEntry> entries;
  entries.reserve(count);
  const std::uint8_t* p = b.data() + table;
  for (std::uint64_t i = 0; i < count; ++i, p += kPackEntrySize) {
    PackEntry e;
    e.type = blob_type_from(p[0], "pack");
    std::memcpy(e.id.data(), p + 1, 32);
    e.offset = get_u64(p + 33);
    e.length = get_u64(p + 41);
    if (e.offset < 8 || e.offset > table || e.length > table - e.offset) {
      malformed("pack: blob " + to_hex(e.id) + " lies outside the blob area");
    }
    entries.push_back(e);
  }
  return entries;
}

// ---- index -----------------------------------------------------------------

Bytes encode_index(const std::vector<IndexPack>& packs) {
  Bytes b;
  append(b, kIndexMagic, 8);
  put_u64(b, packs.size());
  for (const IndexPack& p : packs) {
    append(b, p.id.data(), 32);
    put_u64(b, p.size);
    b.push_back(static_cast<std::uint8_t>(p.kind));
    put_u64(b, p.blobs.size());
    for (const PackEntry& e : p.blobs) {
      b.push_back(static_cast<std::uint8_t>(e.type));
      append(b, e.id.data(), 32);
      put_u64(b, e.offset);
      put_u64(b, e.length);
    }
  }
  return b;
}

std::vector<IndexPack> decode_index(const Bytes& data) {
  Reader r(data, "index");
  if (std::memcmp(r.take(8), kIndexMagic, 8) != 0) malformed("index: bad magic");
  std::uint64_t n = r.u64();
  if (n > data.size() / (32 + 8 + 1 + 8)) malformed("index: pack count exceeds size");
  std::vector<IndexPack> packs(n);
  for (IndexPack& p : packs) {
    p.id = r.hash();
    p.size = r.u64();
    std::uint8_t kind = r.u8();
    if (kind != 1 && kind != 2) malformed("index: unknown pack kind");
    p.kind = static_cast<PackKind>(kind);
    std::uint64_t m = r.u64();
    if (m > data.size() / kPackEntrySize) malformed("index: blob count exceeds size");
    p.blobs.resize(m);
    for (PackEntry& e : p.blobs) {
      e.type = blob_type_from(r.u8(), "index");
      e.id = r.hash();
      e.offset = r.u64();
      e.length = r.u64();
    }
  }
  if (!r.done()) malformed("index: trailing bytes");
  return packs;
}

// ---- trees -----------------------------------------------------------------

std::string encode_tree(const Tree& tree) {
  if (tree.base && (tree.depth < 1 || tree.depth > kMaxTreeDepth)) {
    throw Error(ErrorCode::kInternal, "tree patch depth " + std::to_string(tree.depth) + " out of range");
  }
  // The owner most entries share is written once ("owner"); entries that differ
  // carry their own uid/gid. Ties go to the smaller pair, so encoding is deterministic.
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::size_t> owners;
  for (const TreeEntry& e : tree.entries) {
    if (e.uid && e.gid) ++owners[{*e.uid, *e.gid}];
  }
  std::optional<std::pair<std::uint32_t, std::uint32_t>> owner;
  std::size_t best = 0;
  for (const auto& [o, n] : owners) {
    if (n > best) {
      best = n;
      owner = o;
    }
  }
  json entries = json::array();
  for (const TreeEntry& e : tree.entries) {
    json j;
    j["path"] = e.path;
    j["kind"] = kind_name(e.kind);
    j["mode"] = e.mode;
    j["mtime_ns"] = e.mtime_ns;
    if (e.kind != EntryKind::kDir) {
      j["size"] = e.size;
      j["sha256"] = to_hex(e.sha256);
    }
    if (e.header) j["header"] = to_hex(*e.header);
    if (e.body) j["body"] = to_hex(*e.body);
    if (e.blob) j["blob"] = to_hex(*e.blob);
    if (e.uid && e.gid && (!owner || owner->first != *e.uid || owner->second != *e.gid)) {
      j["uid"] = *e.uid;
      j["gid"] = *e.gid;
    }
    if (!e.link.empty()) j["link"] = e.link;
    if (e.delta) j["delta"] = to_hex(*e.delta);
    if (!e.chain.empty()) {
      json c = json::array();
      for (const Hash& h : e.chain) c.push_back(to_hex(h));
      j["chain"] = std::move(c);
    }
    if (e.signature) j["signature"] = to_hex(*e.signature);
    entries.push_back(std::move(j));
  }
  json t;
  t["version"] = tree.base ? 2 : 1;
  if (tree.base) {
    t["base"] = to_hex(*tree.base);
    t["depth"] = tree.depth;
  }
  if (owner) t["owner"] = json::array({owner->first, owner->second});
  if (tree.base) t["removed"] = tree.removed;
  t["entries"] = std::move(entries);
  return t.dump();
}

Tree decode_tree(const Bytes& data) {
  json t = parse_json(data, "tree");
  const int version = field<int>(t, "version", "tree");
  if (version != 1 && version != 2) malformed("tree: unsupported version");
  Tree tree;
  if (version == 2) {
    tree.base = hash_from_hex(field<std::string>(t, "base", "tree patch"), "tree patch base");
    tree.depth = field<std::uint32_t>(t, "depth", "tree patch");
    if (tree.depth < 1 || tree.depth > kMaxTreeDepth)
      malformed("tree patch: depth " + std::to_string(tree.depth) + " is not 1.." +
                std::to_string(kMaxTreeDepth));
    const json& removed = t["removed"];
    if (!removed.is_array()) malformed("tree patch: removed is not an array");
    for (const json& r : removed) {
      if (!r.is_string()) malformed("tree patch: removed holds a non-string");
      tree.removed.push_back(r.get<std::string>());
      if (tree.removed.size() > 1 && !(tree.removed[tree.removed.size() - 2] < tree.removed.back()))
        malformed("tree patch: removed paths are not sorted and unique");
    }
  }
  const json& entries = t["entries"];
  if (!entries.is_array()) malformed("tree: entries is not an array");
  std::optional<std::uint32_t> owner_uid, owner_gid;
  if (t.contains("owner")) {
    const json& o = t["owner"];
    if (!o.is_array() || o.size() != 2 || !o[0].is_number_unsigned() || !o[1].is_number_unsigned() ||
        o[0].get<std::uint64_t>() > 0xffffffffu || o[1].get<std::uint64_t>() > 0xffffffffu) {
      malformed("tree: owner is not [uid, gid]");
    }
    owner_uid = o[0].get<std::uint32_t>();
    owner_gid = o[1].get<std::uint32_t>();
  }
  tree.entries.reserve(entries.size());
  for (const json& j : entries) {
    if (!j.is_object()) malformed("tree: entry is not an object");
    TreeEntry e;
    e.path = field<std::string>(j, "path", "tree");
    std::string kind = field<std::string>(j, "kind", "tree");
    if (kind == "message")
      e.kind = EntryKind::kMessage;
    else if (kind == "file")
      e.kind = EntryKind::kFile;
    else if (kind == "dir")
      e.kind = EntryKind::kDir;
    else
      malformed("tree: unknown entry kind '" + kind + "'");
    e.mode = field<std::uint32_t>(j, "mode", "tree") & 07777;
    e.mtime_ns = field<std::int64_t>(j, "mtime_ns", "tree");
    if (e.kind != EntryKind::kDir) {
      e.size = field<std::uint64_t>(j, "size", "tree");
      e.sha256 = hash_from_hex(field<std::string>(j, "sha256", "tree"), "tree sha256");
    }
    e.header = opt_hash(j, "header", "tree header id");
    e.body = opt_hash(j, "body", "tree body id");
    e.blob = opt_hash(j, "blob", "tree blob id");
    e.delta = opt_hash(j, "delta", "tree delta id");
    e.signature = opt_hash(j, "signature", "tree signature id");
    if (auto c = j.find("chain"); c != j.end()) {
      if (!c->is_array() || c->empty() || c->size() > 1024)
        malformed("tree: chain is not an array of 1..1024 ids");
      for (const json& h : *c) {
        if (!h.is_string()) malformed("tree: chain holds a non-string");
        e.chain.push_back(hash_from_hex(h.get<std::string>(), "tree chain id"));
      }
    }
    if (e.delta.has_value() != !e.chain.empty())
      malformed("tree: a delta needs its chain, and a chain its delta");
    if (e.delta && (e.blob || e.kind != EntryKind::kFile))
      malformed("tree: a delta on a message, a dir or beside a blob");
    if (e.kind == EntryKind::kMessage && !e.header) malformed("tree: message without header");
    e.uid = owner_uid;
    e.gid = owner_gid;
    if (j.contains("uid") || j.contains("gid")) {
      e.uid = field<std::uint32_t>(j, "uid", "tree");
      e.gid = field<std::uint32_t>(j, "gid", "tree");
    }
    if (j.contains("link")) {
      e.link = field<std::string>(j, "link", "tree");
      if (e.link.empty() || e.link.size() > 64 || e.kind == EntryKind::kDir)
        malformed("tree: bad link group");
    }
    tree.entries.push_back(std::move(e));
  }
  // Patches are merged with their base in path order (FORMAT.md §7: sorted by path).
  for (std::size_t i = 1; i < tree.entries.size(); ++i) {
    if (!(tree.entries[i - 1].path < tree.entries[i].path))
      malformed(std::string(tree.base ? "tree patch" : "tree") +
                ": entries are not sorted by path and unique");
  }
  return tree;
}

namespace {

bool same_entry(const TreeEntry& a, const TreeEntry& b) {
  return a.kind == b.kind && a.path == b.path && a.mode == b.mode && a.mtime_ns == b.mtime_ns &&
         a.size == b.size && a.sha256 == b.sha256 && a.header == b.header && a.body == b.body &&
         a.blob == b.blob && a.uid == b.uid && a.gid == b.gid && a.link == b.link && a.delta == b.delta &&
         a.signature == b.signature && a.chain == b.chain;
}

// `patch` applied to the resolved tree `base` (whose id is *patch.base).
Tree apply_tree_patch(const Tree& patch, const Tree& base) {
  Tree out;
  out.depth = patch.depth;
  out.bases.reserve(base.bases.size() + 1);
  out.bases.push_back(*patch.base);
  out.bases.insert(out.bases.end(), base.bases.begin(), base.bases.end());
  out.entries.reserve(base.entries.size() + patch.entries.size());
  auto b = base.entries.begin();
  auto r = patch.removed.begin();
  auto p = patch.entries.begin();
  while (b != base.entries.end() || p != patch.entries.end()) {
    if (p == patch.entries.end() || (b != base.entries.end() && b->path < p->path)) {
      if (r != patch.removed.end() && *r == b->path) {
        ++r;
      } else {
        if (r != patch.removed.end() && *r < b->path)
          malformed("tree patch: removes '" + *r + "', which its base does not hold");
        out.entries.push_back(*b);
      }
      ++b;
      continue;
    }
    // *p is added, or replaces the base's entry of the same path.
    if (b != base.entries.end() && b->path == p->path) {
      if (r != patch.removed.end() && *r == b->path)
        malformed("tree patch: both removes and changes '" + *r + "'");
      ++b;
    }
    out.entries.push_back(*p);
    ++p;
  }
  if (r != patch.removed.end()) malformed("tree patch: removes '" + *r + "', which its base does not hold");
  return out;
}

}  // namespace

Tree make_tree_patch(const Tree& prev, const Hash& prev_id, const Tree& next) {
  Tree patch;
  patch.base = prev_id;
  patch.depth = prev.depth + 1;
  auto a = prev.entries.begin();
  auto b = next.entries.begin();
  while (a != prev.entries.end() || b != next.entries.end()) {
    if (b == next.entries.end() || (a != prev.entries.end() && a->path < b->path)) {
      patch.removed.push_back(a->path);
      ++a;
    } else if (a == prev.entries.end() || b->path < a->path) {
      patch.entries.push_back(*b);
      ++b;
    } else {
      if (!same_entry(*a, *b)) patch.entries.push_back(*b);
      ++a;
      ++b;
    }
  }
  return patch;
}

const Tree& resolve_tree(const Hash& id, const std::function<Bytes(const Hash&)>& raw,
                         std::map<Hash, Tree>& memo, std::uint32_t max_depth) {
  auto it = memo.find(id);
  if (it != memo.end()) {
    if (it->second.depth > max_depth)
      malformed("tree " + to_hex(id) + ": patch chain deeper than its patch says");
    return it->second;
  }
  Tree t = decode_tree(raw(id));
  if (t.base) {
    // Each step down must be one shallower: a cycle or a lie about depth ends here.
    if (t.depth > max_depth) malformed("tree " + to_hex(id) + ": patch chain deeper than its patch says");
    const Tree& base = resolve_tree(*t.base, raw, memo, t.depth - 1);
    if (base.depth != t.depth - 1)
      malformed("tree " + to_hex(id) + ": depth " + std::to_string(t.depth) + " on a base of depth " +
                std::to_string(base.depth));
    t = apply_tree_patch(t, base);
  }
  return memo.emplace(id, std::move(t)).first->second;
}

Tree resolve_tree(const Hash& id, const std::function<Bytes(const Hash&)>& raw) {
  std::map<Hash, Tree> chain;  // the bases, for this call only
  resolve_tree(id, raw, chain);
  return std::move(chain.at(id));
}

// ---- snapshots -------------------------------------------------------------

std::string encode_snapshot(const Snapshot& s) {
  json mailboxes = json::array();
  for (const SnapshotMailbox& m : s.mailboxes) {
    json folders = json::array();
    for (const SnapshotFolder& f : m.folders) {
      folders.push_back(json{{"name", f.name},
                             {"tree", to_hex(f.tree)},
                             {"mode", f.mode},
                             {"mtime_ns", f.mtime_ns},
                             {"messages", f.messages},
                             {"bytes", f.bytes}});
    }
    mailboxes.push_back(json{{"name", m.name}, {"source", m.source}, {"path", m.path}, {"folders", folders}});
  }
  json j{{"version", 1},   {"time_ns", s.time_ns},   {"host", s.host},   {"reduit_version", s.reduit_version},
         {"tags", s.tags}, {"messages", s.messages}, {"bytes", s.bytes}, {"mailboxes", mailboxes}};
  return j.dump();
}

Snapshot decode_snapshot(const Bytes& data) {
  json j = parse_json(data, "snapshot");
  if (field<int>(j, "version", "snapshot") != 1) malformed("snapshot: unsupported version");
  Snapshot s;
  s.time_ns = field<std::int64_t>(j, "time_ns", "snapshot");
  s.host = field<std::string>(j, "host", "snapshot");
  s.reduit_version = field<std::string>(j, "reduit_version", "snapshot");
  s.tags = field<std::vector<std::string>>(j, "tags", "snapshot");
  s.messages = field<std::uint64_t>(j, "messages", "snapshot");
  s.bytes = field<std::uint64_t>(j, "bytes", "snapshot");
  const json& mbs = j["mailboxes"];
  if (!mbs.is_array()) malformed("snapshot: mailboxes is not an array");
  for (const json& m : mbs) {
    SnapshotMailbox mb;
    mb.name = field<std::string>(m, "name", "snapshot mailbox");
    mb.source = field<std::string>(m, "source", "snapshot mailbox");
    mb.path = field<std::string>(m, "path", "snapshot mailbox");
    const json& fs = m["folders"];
    if (!fs.is_array()) malformed("snapshot: folders is not an array");
    for (const json& f : fs) {
      SnapshotFolder sf;
      sf.name = field<std::string>(f, "name", "snapshot folder");
      sf.tree = hash_from_hex(field<std::string>(f, "tree", "snapshot folder"), "tree id");
      sf.mode = field<std::uint32_t>(f, "mode", "snapshot folder") & 07777;
      sf.mtime_ns = field<std::int64_t>(f, "mtime_ns", "snapshot folder");
      sf.messages = field<std::uint64_t>(f, "messages", "snapshot folder");
      sf.bytes = field<std::uint64_t>(f, "bytes", "snapshot folder");
      mb.folders.push_back(std::move(sf));
    }
    s.mailboxes.push_back(std::move(mb));
  }
  return s;
}

// ---- config ----------------------------------------------------------------

std::string encode_config(const VaultConfig& c) {
  json j{{"version", c.version},       {"vault_id", c.vault_id},
         {"id_key", to_hex(c.id_key)}, {"archive_keys", c.archive_keys},
         {"agent_key", c.agent_key},   {"agent_public_key", c.agent_public_key},
         {"pack_size", c.pack_size},   {"zstd_level", c.zstd_level},
         {"created_ns", c.created_ns}};
  return j.dump();
}

VaultConfig decode_config(const Bytes& data) {
  json j = parse_json(data, "vault config");
  VaultConfig c;
  c.version = field<int>(j, "version", "vault config");
  if (c.version != 1) malformed("vault config: unsupported version " + std::to_string(c.version));
  c.vault_id = field<std::string>(j, "vault_id", "vault config");
  c.id_key = hash_from_hex(field<std::string>(j, "id_key", "vault config"), "id key");
  c.archive_keys = field<std::vector<std::string>>(j, "archive_keys", "vault config");
  c.agent_key = field<std::string>(j, "agent_key", "vault config");
  c.agent_public_key = field<std::string>(j, "agent_public_key", "vault config");
  c.pack_size = field<std::uint64_t>(j, "pack_size", "vault config");
  c.zstd_level = field<int>(j, "zstd_level", "vault config");
  c.created_ns = field<std::int64_t>(j, "created_ns", "vault config");
  if (c.archive_keys.empty()) malformed("vault config: no archive keys");
  if (c.pack_size < 4096 || c.pack_size > (1u << 30)) malformed("vault config: pack_size out of range");
  return c;
}

// ---- messages ----

std::size_t header_block_length(std::string_view m) {
  std::size_t pos = 0;
  while (pos < m.size()) {
    std::size_t nl = m.find('\n', pos);
    if (nl == std::string_view::npos) return m.size();
    std::size_t len = nl - pos;
    if (len == 0 || (len == 1 && m[pos] == '\r')) return nl + 1;
    pos = nl + 1;
  }
  return m.size();
}

// ---- names -----------------------------------------------------------------

std::string pack_name(const Hash& id) {
  std::string h = to_hex(id);
  return "packs/" + h.substr(0, 2) + "/" + h;
}
std::string index_name(const Hash& id) {
  return "index/" + to_hex(id);
}
std::string snapshot_name(const Hash& id) {
  return "snapshots/" + to_hex(id);
}

void check_relative_path(const std::string& p, const char* what) {
  auto refuse = [&](const char* why) {
    std::string shown;  // NUL would cut the message short
    for (char c : p) shown += (c == '\0') ? std::string("\\0") : std::string(1, c);
    throw Error(ErrorCode::kVerify, std::string("refusing unsafe ") + what + " '" + shown + "': " + why);
  };
  if (p.empty()) refuse("empty");
  if (p.front() == '/') refuse("absolute path");
  if (p.find('\0') != std::string::npos) refuse("contains NUL");
  if (p.find('\\') != std::string::npos) refuse("contains a backslash");
  std::size_t start = 0;
  while (true) {
    std::size_t slash = p.find('/', start);
    std::string comp = p.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (comp.empty()) refuse("empty path component");
    if (comp == "." || comp == "..") refuse("'.' or '..' component");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
}

}  // namespace reduit
