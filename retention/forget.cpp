#include "retention/forget.hpp"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "restore/snapshots.hpp"
#include "retention/walk.hpp"
#include "vault/error.hpp"

namespace reduit {

namespace {

std::string group_key(const Policy& p, const Snapshot& s, ForgetGroup* g) {
  std::set<std::string> sources;
  for (const auto& m : s.mailboxes) sources.insert(m.source);
  std::vector<std::string> tags = s.tags;
  std::sort(tags.begin(), tags.end());
  std::string key;
  g->host.clear();
  g->sources.clear();
  g->tags.clear();
  for (const auto& by : p.group_by) {
    if (by == "host") {
      g->host = s.host;
      key += "host=" + s.host + "\n";
    } else if (by == "source") {
      g->sources.assign(sources.begin(), sources.end());
      for (const auto& src : sources) key += "source=" + src + "\n";
    } else if (by == "tags") {
      g->tags = tags;
      for (const auto& t : tags) key += "tag=" + t + "\n";
    }
  }
  return key;
}

}  // namespace

ForgetResult run_forget(Repository& repo, Catalog& catalog, const Policy& policy, std::int64_t now_ns,
                        bool dry_run) {
  ForgetResult res;
  std::unique_ptr<Lease> lease;
  if (!dry_run) {
    lease = std::make_unique<Lease>(repo.transport(), "forget");
    if (lease->broke_stale()) res.warnings.push_back("broke a stale vault lease left by an interrupted run");
  }
  const date::time_zone* tz = find_time_zone(policy.time_zone);
  std::vector<SnapshotRef> snaps = list_snapshots(repo, &catalog, &res.warnings);

  // Group, then apply the rules per group.
  std::map<std::string, std::pair<ForgetGroup, std::vector<const SnapshotRef*>>> groups;
  for (const SnapshotRef& s : snaps) {
    ForgetGroup g;
    std::string k = group_key(policy, s.snap, &g);
    auto [it, fresh] = groups.try_emplace(k, g, std::vector<const SnapshotRef*>{});
    it->second.second.push_back(&s);
  }
  std::vector<Hold> holds = load_holds(repo);
  bool any_hold = std::any_of(holds.begin(), holds.end(), [](const Hold& h) { return !h.released; });
  VaultWalker walker(repo, catalog);
  std::map<std::string, const SnapshotRef*> by_id;
  for (const auto& s : snaps) by_id[s.id] = &s;

  std::vector<const SnapshotRef*> doomed;
  for (auto& [key, gv] : groups) {
    auto& [group, members] = gv;
    std::vector<KeepInput> in;
    for (const SnapshotRef* s : members) in.push_back({s->snap.time_ns, s->snap.tags});
    std::vector<KeepDecision> ds = apply_keep_policy(in, policy.snapshots, now_ns, tz);
    for (const KeepDecision& d : ds) {
      const SnapshotRef* s = members[d.input];
      ForgetSnapshot fs{s->id, s->snap.time_ns, d.keep, d.reasons};
      if (!fs.keep && any_hold) {
        // A snapshot holding a held message is never deleted.
        walker.for_each_message(*s, [&](const MessageRef& m) {
          if (fs.keep) return;
          std::int64_t date = m.date_ns ? m.date_ns : s->snap.time_ns;
          if (const Hold* h = find_hold(holds, m.mailbox, m.folder, date)) {
            fs.keep = true;
            fs.reasons.push_back("legal hold " + h->id.substr(0, 12));
          }
        });
      }
      (fs.keep ? res.kept : res.removed)++;
      if (!fs.keep) doomed.push_back(s);
      group.snapshots.push_back(std::move(fs));
    }
    bool any_kept = std::any_of(group.snapshots.begin(), group.snapshots.end(),
                                [](const ForgetSnapshot& f) { return f.keep; });
    if (!any_kept && !group.snapshots.empty()) {
      throw Error(ErrorCode::kUsage, "the policy keeps no snapshot of host '" + group.host +
                                         "': refusing to delete a group's last snapshot (check " +
                                         policy.origin + ")");
    }
    res.groups.push_back(std::move(group));
  }
  if (dry_run || doomed.empty()) return res;

  // Archive what the doomed snapshots hold and the archive still needs.
  RetentionLog log(catalog);
  res.run = log.begin("forget", now_ns, policy.origin);
  ArchiveState archive = load_archive(repo);
  std::map<std::string, ArchiveRecord> fresh;
  for (const SnapshotRef* s : doomed) {
    walker.for_each_message(*s, [&](const MessageRef& m) {
      const ArchiveClass* c = policy.classify(m.mailbox, m.folder);
      if (!c || !c->minimum) return;
      ArchiveRecord r{m.mailbox, m.folder, *m.entry, m.date_ns, s->snap.time_ns};
      std::int64_t start = retention_start(policy, c->basis, r.date_ns, r.captured_ns);
      std::int64_t end = add_duration(start, c->maximum ? *c->maximum : *c->minimum, tz);
      if (end <= now_ns) return;  // its retention is over: nothing to keep
      std::string k = r.key();
      if (archive.records.count(k)) return;
      auto [it, is_new] = fresh.emplace(k, r);
      if (!is_new) it->second.captured_ns = std::min(it->second.captured_ns, r.captured_ns);
    });
  }
  if (!fresh.empty()) {
    std::vector<ArchiveRecord> recs;
    for (auto& [k, r] : fresh) recs.push_back(r);
    res.archive_object = to_hex(write_archive(repo, recs, {}, now_ns));
    res.archived_messages = recs.size();
    for (const auto& r : recs) {
      const ArchiveClass* c = policy.classify(r.mailbox, r.folder);
      log.add(res.run, {"archive-message", r.mailbox + "/" + r.folder + "/" + unique_name(r.entry.path),
                        c->name, "minimum " + c->minimum->str() + " from " + basis_name(c->basis),
                        static_cast<std::int64_t>(r.entry.size), to_hex(r.entry.sha256)});
    }
    fault_point("forget:after-archive-write");
  }

  std::set<std::string> doomed_ids;
  for (const SnapshotRef* s : doomed) doomed_ids.insert(s->id);

  // Deletion evidence: a message of the doomed snapshots that no kept snapshot
  // holds and no archive record keeps leaves the vault with them (prune removes its
  // blobs). Each is recorded once as "delete-message", naming the rule: its class
  // maximum (or minimum) already over, or no archive minimum at all (kept only as
  // long as a snapshot holds it). Held messages never get here: their snapshots
  // are kept.
  std::set<std::string> live;
  std::set<std::string> folders_seen;  // mailbox, folder and tree: each walked once
  for (const auto& s : snaps) {
    if (doomed_ids.count(s.id)) continue;
    for (const SnapshotMailbox& mb : s.snap.mailboxes)
      for (const SnapshotFolder& fo : mb.folders) {
        if (!folders_seen.insert(mb.name + "\n" + fo.name + "\n" + to_hex(fo.tree)).second) continue;
        for (const TreeEntry& e : walker.tree(fo.tree).entries)
          if (e.kind == EntryKind::kMessage) live.insert(ArchiveRecord{mb.name, fo.name, e, 0, 0}.key());
      }
  }
  std::set<std::string> gone;
  for (const SnapshotRef* s : doomed) {
    walker.for_each_message(*s, [&](const MessageRef& m) {
      const std::string k = ArchiveRecord{m.mailbox, m.folder, *m.entry, 0, 0}.key();
      if (live.count(k) || archive.records.count(k) || fresh.count(k) || !gone.insert(k).second) return;
      const ArchiveClass* c = policy.classify(m.mailbox, m.folder);
      std::string rule = "no archive minimum: kept while a snapshot holds it";
      if (c && (c->minimum || c->maximum)) {
        const KeepDuration& d = c->maximum ? *c->maximum : *c->minimum;
        rule = std::string(c->maximum ? "maximum " : "minimum ") + d.str() + " from " + basis_name(c->basis) +
               " over when its last snapshot was forgotten";
      }
      log.add(res.run,
              {"delete-message", m.mailbox + "/" + m.folder + "/" + unique_name(m.entry->path),
               c ? c->name : "", rule, static_cast<std::int64_t>(m.entry->size), to_hex(m.entry->sha256)});
      ++res.messages_deleted;
    });
  }

  // Delete the snapshot objects (the reasons kept ones had are in the result).
  std::vector<std::string> remaining;
  for (const SnapshotRef* s : doomed) {
    repo.transport().remove("snapshots/" + s->id);
    log.add(res.run, {"forget-snapshot", s->id, "", "not kept by " + policy.origin, 0,
                      std::to_string(s->snap.messages) + " messages"});
    fault_point("forget:after-snapshot-delete");
    lease->renew_if_due();
  }
  for (const auto& s : snaps)
    if (!doomed_ids.count(s.id)) remaining.push_back(s.id);
  catalog.remove_snapshots_not_in(remaining);
  nlohmann::json summary{{"kept", res.kept},
                         {"removed", res.removed},
                         {"archived", res.archived_messages},
                         {"deleted", res.messages_deleted}};
  log.finish(res.run, summary.dump());
  return res;
}

}  // namespace reduit
