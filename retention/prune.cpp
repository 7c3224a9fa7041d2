#include "retention/prune.hpp"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>

#include "restore/snapshots.hpp"
#include "retention/walk.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

using HashSet = std::unordered_set<Hash, HashHasher>;

std::string message_key(const std::string& mailbox, const std::string& folder, const TreeEntry& e) {
  return mailbox + "\n" + folder + "\n" + unique_name(e.path) + "\n" + to_hex(e.sha256);
}

std::string message_name(const std::string& mailbox, const std::string& folder, const TreeEntry& e) {
  return mailbox + "/" + (folder.empty() ? "INBOX" : folder) + "/" + unique_name(e.path);
}

// Every blob an entry needs to be restored: a message's header and body, a file's
// content, or a delta-stored file's whole chain and its base's signature (the
// next backup deltas against it; FORMAT.md §7).
void add_blobs(const TreeEntry& e, HashSet& set) {
  if (e.header) set.insert(*e.header);
  if (e.body) set.insert(*e.body);
  if (e.blob) set.insert(*e.blob);
  if (e.delta) set.insert(*e.delta);
  for (const Hash& h : e.chain) set.insert(h);
  if (e.signature) set.insert(*e.signature);
}

// Writes index objects (kPacksPerIndex packs each) naming `packs`; returns their ids.
std::vector<Hash> write_indexes(Repository& repo, const std::vector<IndexPack>& packs) {
  std::vector<Hash> ids;
  for (std::size_t i = 0; i < packs.size(); i += kPacksPerIndex) {
    std::vector<IndexPack> batch(packs.begin() + i,
                                 packs.begin() + std::min(packs.size(), i + kPacksPerIndex));
    ids.push_back(repo.put_object("index", encode_index(batch)));
  }
  return ids;
}

// Seals and uploads one pack; returns its index entry.
IndexPack upload_pack(Repository& repo, PackWriter& w) {
  IndexPack p;
  p.kind = w.kind();
  p.blobs = w.entries();
  Bytes sealed = repo.seal(w.finish(), p.kind);
  p.id = sha256(sealed.data(), sealed.size());
  p.size = sealed.size();
  repo.transport().put(pack_name(p.id), sealed);
  return p;
}

enum class Verdict { kKeep, kExpired, kHeld };

}  // namespace

IndexPlan plan_indexes(const std::vector<IndexObject>& objects, const std::set<Hash>& stays) {
  std::map<Hash, std::size_t> first;  // pack → the object holding its first listing
  for (std::size_t i = 0; i < objects.size(); ++i) {
    for (const IndexPack& p : objects[i].packs) first.emplace(p.id, i);
  }
  IndexPlan plan;
  std::set<Hash> carried;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const std::vector<IndexPack>& packs = objects[i].packs;
    std::set<Hash> named;  // an object naming a pack twice is rewritten with it once
    const bool untouched = std::all_of(packs.begin(), packs.end(), [&](const IndexPack& p) {
      return first.at(p.id) == i && stays.count(p.id) && named.insert(p.id).second;
    });
    if (untouched && packs.size() >= kPacksPerIndex / 2) {
      plan.keep.push_back(objects[i].id);
      continue;
    }
    plan.replace.push_back(objects[i].id);
    for (const IndexPack& p : packs) {
      if (first.at(p.id) == i && stays.count(p.id) && carried.insert(p.id).second) plan.carry.push_back(p.id);
    }
  }
  return plan;
}

PruneResult run_prune(Repository& repo, Repository* reader, Catalog& catalog, const Policy& policy,
                      std::int64_t now_ns, bool dry_run) {
  PruneResult res;
  std::unique_ptr<Lease> lease;
  if (!dry_run) {
    lease = std::make_unique<Lease>(repo.transport(), "prune");
    if (lease->broke_stale()) res.warnings.push_back("broke a stale vault lease left by an interrupted run");
  }
  auto renew = [&] {
    if (lease) lease->renew_if_due();
  };
  const date::time_zone* tz = find_time_zone(policy.time_zone);
  RetentionLog log(catalog);
  if (!dry_run) res.run = log.begin("prune", now_ns, policy.origin);
  auto record = [&](const RetentionEvent& e) {
    if (!dry_run) log.add(res.run, e);
  };

  std::vector<Hold> holds = load_holds(repo);
  std::vector<SnapshotRef> snaps = list_snapshots(repo, &catalog, &res.warnings);
  ArchiveState archive = load_archive(repo);
  VaultWalker walker(repo, catalog);

  // ---- 1. expiry ------------------------------------------------------------
  // First capture of every message: the oldest snapshot holding it, or the archive's.
  std::map<std::string, std::int64_t> first_seen;
  for (const auto& [k, r] : archive.records) first_seen[k] = r.captured_ns;
  for (const SnapshotRef& s : snaps) {
    walker.for_each_message(s, [&](const MessageRef& m) {
      auto [it, fresh] = first_seen.emplace(message_key(m.mailbox, m.folder, *m.entry), s.snap.time_ns);
      if (!fresh) it->second = std::min(it->second, s.snap.time_ns);
    });
  }
  std::set<std::string> judged;
  std::set<std::string> expired;  // message keys
  HashSet expired_blobs;
  auto judge = [&](const std::string& mailbox, const std::string& folder, const TreeEntry& e,
                   std::int64_t date_ns) {
    const std::string key = message_key(mailbox, folder, e);
    if (expired.count(key)) return Verdict::kExpired;
    const ArchiveClass* c = policy.classify(mailbox, folder);
    if (!c || !c->maximum) return Verdict::kKeep;
    const std::int64_t captured = first_seen.count(key) ? first_seen[key] : now_ns;
    const std::int64_t start = retention_start(policy, c->basis, date_ns, captured);
    if (now_ns < add_duration(start, *c->maximum, tz)) return Verdict::kKeep;
    const std::string rule = "maximum " + c->maximum->str() + " from " + basis_name(c->basis);
    const bool first = judged.insert(key).second;
    if (const Hold* h = find_hold(holds, mailbox, folder, date_ns ? date_ns : captured)) {
      if (first) {
        ++res.messages_held_past_maximum;
        record({"refuse-delete-hold", message_name(mailbox, folder, e), c->name,
                rule + "; hold " + h->id.substr(0, 12), static_cast<std::int64_t>(e.size), to_hex(e.sha256)});
      }
      return Verdict::kHeld;
    }
    expired.insert(key);
    add_blobs(e, expired_blobs);
    ++res.messages_expired;
    ++res.expired_by_class[c->name];
    record({"delete-message", message_name(mailbox, folder, e), c->name, rule,
            static_cast<std::int64_t>(e.size), to_hex(e.sha256)});
    return Verdict::kExpired;
  };

  std::vector<ArchiveRecord> kept_records;
  for (const auto& [k, r] : archive.records) {
    if (judge(r.mailbox, r.folder, r.entry, r.date_ns) != Verdict::kExpired) kept_records.push_back(r);
  }
  // Snapshots holding an expired message, rewritten without it.
  struct Rewrite {
    const SnapshotRef* old;
    Snapshot snap;
  };
  std::vector<Rewrite> rewrites;
  std::vector<std::pair<Hash, std::string>> new_trees;  // id, encoded
  for (const SnapshotRef& s : snaps) {
    Rewrite rw{&s, s.snap};
    bool changed = false;
    rw.snap.messages = rw.snap.bytes = 0;
    for (SnapshotMailbox& mb : rw.snap.mailboxes) {
      for (SnapshotFolder& f : mb.folders) {
        const Tree& t = walker.tree(f.tree);
        Tree nt;
        for (const TreeEntry& e : t.entries) {
          if (e.kind == EntryKind::kMessage &&
              judge(mb.name, f.name, e, walker.dates().date_ns(e.sha256)) == Verdict::kExpired) {
            --f.messages;
            f.bytes -= e.size;
            continue;
          }
          nt.entries.push_back(e);
        }
        if (nt.entries.size() != t.entries.size()) {
          std::string text = encode_tree(nt);
          f.tree = repo.blob_id(text.data(), text.size());
          new_trees.emplace_back(f.tree, std::move(text));
          changed = true;
        }
        rw.snap.messages += f.messages;
        rw.snap.bytes += f.bytes;
      }
    }
    if (changed) rewrites.push_back(std::move(rw));
  }
  res.snapshots_rewritten = rewrites.size();

  if (!dry_run) {
    // The archive without expired records, superseding every archive object.
    // Consolidate also when several objects are in force: readers decrypt each one.
    if (kept_records.size() != archive.records.size() || archive.objects.size() > 1) {
      std::vector<Hash> old = archive.objects;
      old.insert(old.end(), archive.superseded.begin(), archive.superseded.end());
      write_archive(repo, kept_records, old, now_ns);
      fault_point("prune:after-archive-write");
      for (const Hash& h : old) repo.transport().remove("archive/" + to_hex(h));
    } else {
      for (const Hash& h : archive.superseded) repo.transport().remove("archive/" + to_hex(h));
    }
    if (!rewrites.empty()) {
      // Trees first (a metadata pack and its index), then the snapshots.
      const BlobIndex& index = walker.index();
      PackWriter meta(PackKind::kMetadata);
      std::set<Hash> added;
      for (const auto& [id, text] : new_trees) {
        if (!index.find(id).empty() || !added.insert(id).second) continue;
        meta.add(BlobType::kTree, id, text.data(), text.size());
      }
      if (!meta.empty()) {
        IndexPack p = upload_pack(repo, meta);
        write_indexes(repo, {p});
        res.bytes_written += p.size;
        ++res.packs_written;
      }
      std::set<std::string> existing;
      for (const SnapshotRef& s : snaps) existing.insert(encode_snapshot(s.snap));
      for (const Rewrite& rw : rewrites) {
        std::string text = encode_snapshot(rw.snap);
        if (!existing.count(text)) {  // else a crashed run already wrote it
          Hash id = repo.put_object("snapshots", Bytes(text.begin(), text.end()));
          record({"rewrite-snapshot", rw.old->id, "", "maximum", 0, "replaced by " + to_hex(id)});
          fault_point("prune:after-snapshot-write");
        }
        repo.transport().remove("snapshots/" + rw.old->id);
        renew();
      }
      snaps = list_snapshots(repo, &catalog, &res.warnings);
      walker.reset_index();
    }
  }
  res.snapshots = snaps.size();
  res.archive_records = kept_records.size();

  // ---- 2. live blobs --------------------------------------------------------
  HashSet live;
  std::vector<Hash> live_trees;  // the catalog forgets what it knows of other trees
  for (const SnapshotRef& s : snaps) {
    for (const SnapshotMailbox& mb : s.snap.mailboxes) {
      for (const SnapshotFolder& f : mb.folders) {
        live.insert(f.tree);
        live_trees.push_back(f.tree);
        const Tree& t = walker.tree(f.tree);
        for (const Hash& b : t.bases) {  // a patch needs every tree it patches (FORMAT.md §7.1)
          live.insert(b);
          live_trees.push_back(b);
        }
        for (const TreeEntry& e : t.entries) {
          if (e.kind == EntryKind::kMessage && expired.count(message_key(mb.name, f.name, e))) continue;
          add_blobs(e, live);
        }
      }
    }
  }
  for (const ArchiveRecord& r : kept_records) add_blobs(r.entry, live);
  for (const Hash& h : live) expired_blobs.erase(h);  // shared with a message still kept
  res.blobs_live = live.size();

  // ---- 3. pack plan ---------------------------------------------------------
  const std::vector<IndexObject> objects = repo.load_index_objects();
  res.index_objects_before = objects.size();
  std::map<Hash, std::uint64_t> in_vault = repo.list_packs(/*with_sizes=*/true);
  res.packs_before = in_vault.size();
  for (const auto& [id, size] : in_vault) res.bytes_before += size;

  std::map<Hash, const IndexPack*> by_pack;
  for (const IndexObject& o : objects) {
    for (const IndexPack& p : o.packs) by_pack.emplace(p.id, &p);  // the first listing wins
  }
  HashSet placed;                                // live blobs already given a home
  std::map<Hash, std::vector<PackEntry>> carry;  // pack to repack → its live entries
  std::vector<const IndexPack*> keep_packs;
  std::vector<Hash> delete_packs;
  bool index_changed = false;
  for (const auto& [id, p] : by_pack) {
    if (!in_vault.count(id)) {
      res.warnings.push_back("pack " + to_hex(id) + " is named by an index but missing from the vault");
      index_changed = true;
      continue;
    }
    std::uint64_t total = 0, live_bytes = 0;
    bool has_expired = false;
    std::vector<PackEntry> live_entries;
    for (const PackEntry& e : p->blobs) {
      total += e.length;
      if (live.count(e.id) && placed.insert(e.id).second) {
        live_bytes += e.length;
        live_entries.push_back(e);
      }
      has_expired = has_expired || expired_blobs.count(e.id);
    }
    if (live_entries.empty()) {
      delete_packs.push_back(id);
      index_changed = true;
      continue;
    }
    bool repack =
        has_expired || static_cast<double>(live_bytes) < policy.repack_below * static_cast<double>(total);
    if (repack && p->kind == PackKind::kData && !reader) {
      ++res.packs_waiting;
      res.waiting.push_back(to_hex(id));
      for (const PackEntry& e : p->blobs) res.waiting_expired_blobs += expired_blobs.count(e.id);
      record({"wait-repack", to_hex(id), "", has_expired ? "holds expired messages" : "below repack-below",
              static_cast<std::int64_t>(in_vault[id]), "no archive secret key given"});
      repack = false;
    }
    if (repack) {
      carry[id] = std::move(live_entries);
      index_changed = true;
    } else {
      keep_packs.push_back(p);
    }
  }
  std::vector<Hash> unindexed;
  for (const auto& [id, size] : in_vault) {
    if (!by_pack.count(id)) unindexed.push_back(id);
  }

  if (dry_run) {
    res.packs_deleted = delete_packs.size();
    res.packs_repacked = carry.size();
    res.packs_unindexed_deleted = unindexed.size();
    for (const Hash& h : delete_packs) res.bytes_deleted += in_vault[h];
    for (const auto& [h, e] : carry) res.bytes_deleted += in_vault[h];
    for (const Hash& h : unindexed) res.bytes_deleted += in_vault[h];
    res.packs_after = res.packs_before - res.packs_deleted - res.packs_repacked - res.packs_unindexed_deleted;
    res.bytes_after = res.bytes_before - res.bytes_deleted;
    return res;
  }

  // ---- 4. repack, index, delete ---------------------------------------------
  std::vector<IndexPack> new_packs;
  {
    PackWriter data(PackKind::kData, repo.config().pack_size + (1 << 20)), meta(PackKind::kMetadata);
    for (const auto& [id, entries] : carry) {
      const IndexPack* p = by_pack[id];
      LoadedPack lp = p->kind == PackKind::kData ? reader->load_pack(id) : repo.load_pack(id);
      PackWriter& w = p->kind == PackKind::kData ? data : meta;
      for (const PackEntry& e : entries) {
        const PackEntry* found = nullptr;
        for (const PackEntry& le : lp.entries) {
          if (le.id == e.id) found = &le;
        }
        if (!found)
          throw Error(ErrorCode::kVerify, "pack " + to_hex(id) + " lacks indexed blob " + to_hex(e.id));
        std::string_view v = (p->kind == PackKind::kData ? *reader : repo).blob_bytes(lp, *found);
        w.add(found->type, found->id, v.data(), v.size());
        if (w.size() >= pack_target(repo.config(), w.kind())) new_packs.push_back(upload_pack(repo, w));
      }
      record({"repack-pack", to_hex(id), "", "live share below repack-below or expired blobs",
              static_cast<std::int64_t>(in_vault[id]),
              std::to_string(entries.size()) + " live blobs copied"});
      renew();
    }
    if (!data.empty()) new_packs.push_back(upload_pack(repo, data));
    if (!meta.empty()) new_packs.push_back(upload_pack(repo, meta));
  }
  for (const IndexPack& p : new_packs) res.bytes_written += p.size;
  res.packs_written += new_packs.size();
  if (!carry.empty()) fault_point("prune:after-repack-upload");

  std::vector<Hash> new_indexes;  // every index object in the vault after the run
  if (index_changed) {
    std::set<Hash> stays;
    for (const IndexPack* p : keep_packs) stays.insert(p->id);
    const IndexPlan plan = plan_indexes(objects, stays);
    std::vector<IndexPack> named;
    for (const Hash& h : plan.carry) named.push_back(*by_pack.at(h));
    named.insert(named.end(), new_packs.begin(), new_packs.end());
    // Data packs apart from metadata packs: trees go with the snapshots that are
    // forgotten, while the messages of data packs are kept for years, so an index
    // object of data packs is seldom touched again.
    std::stable_partition(named.begin(), named.end(),
                          [](const IndexPack& p) { return p.kind == PackKind::kData; });
    const std::vector<Hash> written = write_indexes(repo, named);
    fault_point("prune:after-index-write");
    std::set<Hash> fresh(written.begin(), written.end());
    for (const Hash& h : plan.replace) {
      if (!fresh.count(h)) repo.transport().remove(index_name(h));
    }
    fault_point("prune:after-index-delete");
    new_indexes = plan.keep;
    new_indexes.insert(new_indexes.end(), written.begin(), written.end());
    res.index_objects_kept = plan.keep.size();
    res.index_objects_written = written.size();
  } else {
    for (const IndexObject& o : objects) new_indexes.push_back(o.id);
    res.index_objects_kept = objects.size();
  }

  std::vector<std::pair<Hash, const char*>> doomed;
  for (const Hash& h : delete_packs) doomed.emplace_back(h, "no live blob");
  for (const auto& [h, e] : carry) doomed.emplace_back(h, "repacked");
  for (const Hash& h : unindexed) doomed.emplace_back(h, "in no index (interrupted run)");
  for (const auto& [h, why] : doomed) {
    repo.transport().remove(pack_name(h));
    res.bytes_deleted += in_vault[h];
    record({"delete-pack", to_hex(h), "", why, static_cast<std::int64_t>(in_vault[h]), ""});
    fault_point("prune:after-pack-delete");
    renew();
  }
  res.packs_deleted = delete_packs.size();
  res.packs_repacked = carry.size();
  res.packs_unindexed_deleted = unindexed.size();
  for (const std::string& name : repo.transport().list("tmp")) repo.transport().remove(name);

  // ---- 5. catalog -----------------------------------------------------------
  // Through the catalog's own API: forgetting the packs gone from the vault also
  // drops the stat and folder caches, so the next backup reads each file once and
  // can never reuse the id of a blob (or a tree naming one) that prune deleted.
  std::vector<Hash> gone;
  for (const auto& [h, why] : doomed) gone.push_back(h);
  catalog.forget_packs(gone);
  for (const IndexPack& p : new_packs) catalog.add_pack(p, /*indexed=*/true);
  catalog.merge_blobs();
  // Message locations (`reduit find`) and decoded trees of snapshots no longer kept.
  {
    SQLite::Database& db = catalog.db();
    SQLite::Transaction txn(db);
    db.exec(
        "CREATE TEMP TABLE IF NOT EXISTS keep_trees(id BLOB PRIMARY KEY) WITHOUT ROWID; "
        "DELETE FROM temp.keep_trees;");
    SQLite::Statement ins(db, "INSERT OR IGNORE INTO temp.keep_trees VALUES(?)");
    for (const Hash& h : live_trees) {
      ins.reset();
      ins.bind(1, h.data(), 32);
      ins.exec();
    }
    db.exec("DELETE FROM main.tree_messages WHERE tree NOT IN (SELECT id FROM temp.keep_trees)");
    db.exec("DELETE FROM main.tree_cache WHERE id NOT IN (SELECT id FROM temp.keep_trees)");
    txn.commit();
  }
  {
    SQLite::Statement del(catalog.db(), "DELETE FROM main.indexes WHERE id=?");
    for (const IndexObject& o : objects) {
      del.reset();
      del.bind(1, o.id.data(), 32);
      del.exec();
    }
  }
  for (const Hash& h : new_indexes) catalog.add_index(h);

  std::map<Hash, std::uint64_t> after = repo.list_packs(/*with_sizes=*/true);
  res.packs_after = after.size();
  for (const auto& [id, size] : after) res.bytes_after += size;
  nlohmann::json summary{{"messages_expired", res.messages_expired},
                         {"held_past_maximum", res.messages_held_past_maximum},
                         {"packs_deleted", res.packs_deleted},
                         {"packs_repacked", res.packs_repacked},
                         {"packs_waiting", res.packs_waiting},
                         {"bytes_deleted", res.bytes_deleted},
                         {"bytes_after", res.bytes_after}};
  log.finish(res.run, summary.dump());
  return res;
}

}  // namespace reduit
