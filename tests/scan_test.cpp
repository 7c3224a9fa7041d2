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
