// Mailbox discovery and the Maildir folder scan (agent/scan.hpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "agent/scan.hpp"
#include "support/harness.hpp"
#include "vault/error.hpp"

namespace fs = std::filesystem;
using namespace reduit;
using reduit::test::TempDir;
using reduit::test::write_file;

namespace {
void maildir(const std::string& p) {
  for (const char* d : {"cur", "new", "tmp"}) fs::create_directories(p + "/" + d);
}
std::vector<std::string> names(const std::vector<MailboxSpec>& v) {
  std::vector<std::string> out;
  for (const auto& m : v) out.push_back(m.name);
  return out;
}
}  // namespace

TEST(MaildirNames, UniqueNameIsThePartBeforeTheInfo) {
  EXPECT_EQ(maildir_unique_name("1386051008.M248603P13703.sg.webconverger.com,S=2125,W=2169:2,RS"),
            "1386051008.M248603P13703.sg.webconverger.com,S=2125,W=2169");
  EXPECT_EQ(maildir_unique_name("1220863042.12663_1.mindcrime!2,S"), "1220863042.12663_1.mindcrime");
  EXPECT_EQ(maildir_unique_name("special!2,Sabc"), "special");
  EXPECT_EQ(maildir_unique_name("01:2,"), "01");
  EXPECT_EQ(maildir_unique_name("mail1"), "mail1");
  EXPECT_EQ(maildir_unique_name("1700000000.1_2.archive,U=7:2,S"), "1700000000.1_2.archive,U=7");
}

TEST(MailboxDiscovery, LayoutTemplatesNameMailboxes) {
  TempDir root;
  maildir(root / "example.ch/alice");
  maildir(root / "example.ch/bob/Maildir");
  maildir(root / "example.org/info");
  fs::create_directories(root / "example.org/not-a-mailbox");
  EXPECT_EQ(names(discover_mailboxes(root.path(), "%d/%n")),
            (std::vector<std::string>{"alice@example.ch", "bob@example.ch", "info@example.org"}));
  EXPECT_EQ(names(discover_mailboxes(root.path(), "%d/%n/Maildir")),
            (std::vector<std::string>{"bob@example.ch"}));
  EXPECT_EQ(names(discover_mailboxes(root.path(), "*")),
            (std::vector<std::string>{"example.ch", "example.org"}));
  auto single = discover_mailboxes(root / "example.ch/alice", ".");
  ASSERT_EQ(single.size(), 1u);
  EXPECT_EQ(single[0].name, "alice");
  EXPECT_EQ(reduit::test::error_code_of([&] { discover_mailboxes(root / "nope", "%d/%n"); }),
            ErrorCode::kSource);
  EXPECT_EQ(reduit::test::error_code_of([&] { discover_mailboxes(root / "example.org/not-a-mailbox", "."); }),
            ErrorCode::kSource);
  EXPECT_EQ(reduit::test::error_code_of([&] { discover_mailboxes(root.path(), "%d/%x"); }),
            ErrorCode::kUsage);
}

TEST(FolderScan, FoldersFilesAndTmp) {
  TempDir mb;
  maildir(mb.path());
  maildir(mb / ".Archive");
  maildir(mb / ".Archive.2024");
  write_file(mb / "cur/1.M1P1.h,S=3:2,S", "a\n\n");
  write_file(mb / "new/2.M2P2.h", "b\n\nbody");
  write_file(mb / "cur/.noindex", "");
  write_file(mb / "tmp/3.M3P3.h", "in progress");
  write_file(mb / "dovecot-uidlist", "3 V1 N3\n");
  write_file(mb / ".Archive/cur/4.M4P4.h:2,", "c\n\n");
  write_file(mb / ".Archive/maildirfolder", "");
  std::vector<std::string> folders = find_folders(mb.path());
  EXPECT_EQ(folders, (std::vector<std::string>{"", ".Archive", ".Archive.2024"}));
  ScannedFolder root = scan_folder(mb.path(), "", folders);
  std::vector<std::string> got;
  for (const auto& e : root.entries) {
    got.push_back(std::string(e.kind == EntryKind::kMessage ? "M "
                              : e.kind == EntryKind::kDir   ? "D "
                                                            : "F ") +
                  e.path + " " + e.key);
  }
  EXPECT_EQ(got,
            (std::vector<std::string>{
                "D cur cur", "F cur/.noindex cur/.noindex", "M cur/1.M1P1.h,S=3:2,S 1.M1P1.h,S=3",
                "F dovecot-uidlist dovecot-uidlist", "D new new", "M new/2.M2P2.h 2.M2P2.h", "D tmp tmp"}));
  ScannedFolder archive = scan_folder(mb.path(), ".Archive", folders);
  ASSERT_EQ(archive.entries.size(), 5u);  // cur, message, maildirfolder, new, tmp
  EXPECT_EQ(archive.entries[1].path, "cur/4.M4P4.h:2,");
}

TEST(FolderScan, OneInodeUnderTwoNamesIsOneMessage) {
  TempDir mb;
  maildir(mb.path());
  write_file(mb / "new/5.M5P5.h", "x\n\ny");
  // A move in flight (link, then unlink) seen half done.
  ASSERT_EQ(link((mb / "new/5.M5P5.h").c_str(), (mb / "cur/5.M5P5.h:2,S").c_str()), 0);
  ScannedFolder f = scan_folder(mb.path(), "", find_folders(mb.path()));
  int messages = 0;
  for (const auto& e : f.entries) {
    if (e.kind == EntryKind::kMessage) {
      ++messages;
      EXPECT_EQ(e.path, "cur/5.M5P5.h:2,S");
    }
  }
  EXPECT_EQ(messages, 1);
}

TEST(FolderScan, ResolveMessageFindsARenamedFile) {
  TempDir mb;
  maildir(mb.path());
  write_file(mb / "cur/6.M6P6.h:2,FS", "z");
  EXPECT_EQ(resolve_message(mb.path(), "6.M6P6.h"), "cur/6.M6P6.h:2,FS");
  EXPECT_EQ(resolve_message(mb.path(), "7.M7P7.h"), "");
}

TEST(MaildirNames, VariantsAreTakenApartWithoutRewriting) {
  MaildirName d = parse_maildir_name("1276528487.M364837P9451.kurkku,S=1355,W=1394:2,RSab");
  EXPECT_EQ(d.unique, "1276528487.M364837P9451.kurkku,S=1355,W=1394");
  EXPECT_EQ(d.separator, ':');
  EXPECT_EQ(d.info, "2,RSab");
  EXPECT_EQ(d.flags, "RS");
  EXPECT_EQ(d.keywords, "ab");
  EXPECT_EQ(d.size, 1355u);
  EXPECT_EQ(d.vsize, 1394u);
  EXPECT_FALSE(d.uid.has_value());
  // mbsync: ,U= in the base, ';' on colon-hostile file systems.
  MaildirName m = parse_maildir_name("1700000000.12345_1.host,U=42;2,FS");
  EXPECT_EQ(m.unique, "1700000000.12345_1.host,U=42");
  EXPECT_EQ(m.separator, ';');
  EXPECT_EQ(m.flags, "FS");
  EXPECT_EQ(m.uid, 42u);
  EXPECT_EQ(maildir_unique_name("1700000000.12345_1.host,U=42;2,FS"), "1700000000.12345_1.host,U=42");
  // offlineimap's '!' and a "2," info already in new/.
  MaildirName o = parse_maildir_name("1220863042.12663_1.mindcrime!2,S");
  EXPECT_EQ(o.separator, '!');
  EXPECT_EQ(o.flags, "S");
  MaildirName n = parse_maildir_name("1700000001.M1P1.mx,S=12:2,");
  EXPECT_EQ(n.info, "2,");
  EXPECT_EQ(n.flags, "");
  EXPECT_EQ(n.size, 12u);
  MaildirName plain = parse_maildir_name("1700000002.M2P2.mx");
  EXPECT_EQ(plain.separator, 0);
  EXPECT_EQ(plain.unique, "1700000002.M2P2.mx");
  EXPECT_FALSE(plain.size.has_value());
  // A size field that is not a number is not a size.
  EXPECT_FALSE(parse_maildir_name("1.M1.mx,S=12a:2,S").size.has_value());
}

// Must-show 5: one fixture per layout profile discovers exactly the expected
// mailboxes and names.
TEST(MailboxDiscovery, LayoutProfilesFindEveryMailboxOfTheirStack) {
  TempDir pd;  // Postfix + Dovecot virtual: %d/%n/Maildir and %d/%n side by side
  maildir(pd / "example.ch/alice/Maildir");
  maildir(pd / "example.ch/alice/Maildir/.Sent");
  maildir(pd / "example.ch/bob");
  maildir(pd / "example.org/carol/Maildir");
  auto pdm = discover_mailboxes(pd.path(), layout_profile("postfix-dovecot"), "postfix-dovecot");
  EXPECT_EQ(names(pdm),
            (std::vector<std::string>{"alice@example.ch", "bob@example.ch", "carol@example.org"}));
  EXPECT_EQ(pdm[0].rel, "example.ch/alice/Maildir");
  EXPECT_EQ(pdm[1].rel, "example.ch/bob");

  TempDir ir;  // iRedMail: vmail1/<domain>/<c1>/<c2>/<c3>/<user>-<timestamp>/Maildir
  maildir(ir / "vmail1/example.ch/a/l/i/alice-2024.01.02.03.04.05/Maildir");
  maildir(ir / "vmail1/example.ch/j/e/a/jean-luc-2023.05.06.07.08.09/Maildir");
  maildir(ir / "vmail1/example.ch/b/o/o/bo-2022.01.01.00.00.00/Maildir");  // short name: last letter repeated
  maildir(ir / "vmail1/example.ch/a/l/i/alice-2019.01.01.00.00.00/Maildir");    // an old account's directory
  maildir(ir / "vmail1/example.ch/x/y/z/mallory-2024.01.01.00.00.00/Maildir");  // hash dirs do not match
  auto irm = discover_mailboxes(ir.path(), layout_profile("iredmail"), "iredmail");
  EXPECT_EQ(names(irm), (std::vector<std::string>{
                            "alice@example.ch",
                            "alice@example.ch#vmail1/example.ch/a/l/i/alice-2019.01.01.00.00.00/Maildir",
                            "bo@example.ch", "jean-luc@example.ch"}));
  EXPECT_EQ(irm[0].rel, "vmail1/example.ch/a/l/i/alice-2024.01.02.03.04.05/Maildir");
  // The same tree given from vmail1/ itself.
  EXPECT_EQ(discover_mailboxes(ir / "vmail1", layout_profile("iredmail"), "iredmail").size(), 4u);

  TempDir miab;  // Mail-in-a-Box: /home/user-data/mail/mailboxes/<domain>/<user>
  maildir(miab / "mail/mailboxes/box.example.ch/admin");
  maildir(miab / "mail/mailboxes/example.ch/dora");
  fs::create_directories(miab / "backup/encrypted");  // not mail
  EXPECT_EQ(names(discover_mailboxes(miab.path(), layout_profile("mailinabox"), "mailinabox")),
            (std::vector<std::string>{"admin@box.example.ch", "dora@example.ch"}));
  EXPECT_EQ(names(discover_mailboxes(miab / "mail/mailboxes", layout_profile("mailinabox"), "mailinabox")),
            (std::vector<std::string>{"admin@box.example.ch", "dora@example.ch"}));

  TempDir mc;  // mailcow: /var/vmail/<domain>/<local>/Maildir
  maildir(mc / "example.ch/eve/Maildir");
  maildir(mc / "example.ch/eve/Maildir/.Archive");
  write_file(mc / "example.ch/eve/sieve/active.sieve", "keep;\n");
  EXPECT_EQ(names(discover_mailboxes(mc.path(), layout_profile("mailcow"), "mailcow")),
            (std::vector<std::string>{"eve@example.ch"}));

  TempDir dms;  // docker-mailserver: /var/mail/<domain>/<local>
  maildir(dms / "example.ch/fred");
  maildir(dms / "example.org/gina");
  EXPECT_EQ(names(discover_mailboxes(dms.path(), layout_profile("docker-mailserver"), "docker-mailserver")),
            (std::vector<std::string>{"fred@example.ch", "gina@example.org"}));

  EXPECT_EQ(reduit::test::error_code_of([] { layout_profile("exchange"); }), ErrorCode::kUsage);
}

// Two unique names on one inode are a hard link (IMAP COPY in one folder), not a
// rename in flight: both are messages of the folder.
TEST(FolderScan, HardLinkedMessagesAreBothListed) {
  TempDir root;
  maildir(root / "m");
  write_file(root / "m/cur/1700000000.M1P1.mx:2,S", "Subject: a\n\nA\n");
  ASSERT_EQ(
      link((root / "m/cur/1700000000.M1P1.mx:2,S").c_str(), (root / "m/cur/1700000001.M2P1.mx:2,S").c_str()),
      0);
  ScannedFolder f = scan_folder(root / "m", "", find_folders(root / "m"));
  std::vector<std::string> msgs;
  for (const auto& e : f.entries) {
    if (e.kind == EntryKind::kMessage) {
      msgs.push_back(e.key);
      EXPECT_EQ(e.nlink, 2u);
    }
  }
  EXPECT_EQ(msgs, (std::vector<std::string>{"1700000000.M1P1.mx", "1700000001.M2P1.mx"}));
}
