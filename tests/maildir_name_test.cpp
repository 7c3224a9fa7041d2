// Maildir file names for live restores (restore/maildir_name.hpp) and the mbox/eml
// helpers of exports (restore/export.hpp): exact values.
#include <gtest/gtest.h>

#include <algorithm>

#include <set>

#include "restore/export.hpp"
#include "restore/maildir_name.hpp"

namespace reduit {
namespace {

TEST(MaildirName, ParsesInfoSizesAndColonHostileSeparators) {
  MaildirName n = parse_maildir_name("1276528487.M364837P9451.kurkku,S=1355,W=1394:2,RSab");
  EXPECT_EQ(n.unique, "1276528487.M364837P9451.kurkku,S=1355,W=1394");
  EXPECT_TRUE(n.has_info);
  EXPECT_EQ(n.info, "RSab");
  EXPECT_EQ(n.size, 1355u);
  EXPECT_EQ(n.vsize, 1394u);
  n = parse_maildir_name("1700000000.M1P1.mx,U=42,S=9!2,S");  // offlineimap / mbsync on a colon-hostile fs
  EXPECT_EQ(n.unique, "1700000000.M1P1.mx,U=42,S=9");
  EXPECT_EQ(n.info, "S");
  EXPECT_EQ(n.size, 9u);
  EXPECT_FALSE(n.vsize);
  n = parse_maildir_name("1700000000.M1P1.mx;2,FS");
  EXPECT_EQ(n.info, "FS");
  n = parse_maildir_name("1700000000.M1P1.mx");
  EXPECT_FALSE(n.has_info);
  EXPECT_FALSE(n.size);
  n = parse_maildir_name("1700000000.M1P1.mx,S=abc:1,x");  // experimental info, non-numeric size
  EXPECT_FALSE(n.has_info);
  EXPECT_FALSE(n.size);
}

TEST(MaildirName, FreshNamesAreUniqueAndEscapeTheHost) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i)
    EXPECT_TRUE(seen.insert(fresh_unique_name(1700000000123456789, "mx")).second);
  std::string n = fresh_unique_name(1700000000123456789, "a/b:c");
  EXPECT_EQ(n.rfind("1700000000.M123456P", 0), 0u) << n;
  EXPECT_EQ(n.substr(n.size() - 12), ".a\\057b\\072c") << n;
  EXPECT_EQ(n.find(':'), std::string::npos);
}

// Names made one after another sort in that order as strings (Q 9 → 10, M 99999 →
// 100000): the live restore hands them out in delivery order, so Dovecot's UIDs
// follow it (RestoreTargets.FolderWithSubfolderIntoLiveMailboxKeepsTheHierarchy was
// flaky when they did not).
TEST(MaildirName, FreshNamesSortInTheOrderTheyWereMade) {
  std::vector<std::string> made;
  for (int i = 0; i < 12; ++i) made.push_back(fresh_unique_name(1700000000099999000, "mx"));
  made.push_back(fresh_unique_name(1700000000100000000, "mx"));
  std::vector<std::string> sorted = made;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, made);
  EXPECT_EQ(made[0].rfind("1700000000.M099999P", 0), 0u) << made[0];
}

TEST(MaildirName, KeywordsAreRemappedByName) {
  std::vector<std::string> from = parse_dovecot_keywords("0 $Junk\n1 $Label1\n2 Important\n");
  ASSERT_EQ(from, (std::vector<std::string>{"$Junk", "$Label1", "Important"}));
  std::vector<std::string> to = {"Important"};
  std::vector<std::string> dropped;
  EXPECT_EQ(remap_keywords("RSbc", from, to, &dropped), "RSab");  // $Label1 appended as b
  EXPECT_EQ(to, (std::vector<std::string>{"Important", "$Label1"}));
  EXPECT_EQ(remap_keywords("Sa", from, to, &dropped), "Sc");
  EXPECT_EQ(remap_keywords("z", from, to, &dropped), "");
  EXPECT_EQ(dropped, (std::vector<std::string>{"keyword letter 'z' (not in dovecot-keywords)"}));
  EXPECT_EQ(format_dovecot_keywords(to), "0 Important\n1 $Label1\n2 $Junk\n");
  // A hole in the target list is reused; a full list drops the keyword.
  std::vector<std::string> holes = parse_dovecot_keywords("0 A\n2 C\n");
  EXPECT_EQ(holes, (std::vector<std::string>{"A", "", "C"}));
  EXPECT_EQ(remap_keywords("a", {"B"}, holes, nullptr), "b");
  std::vector<std::string> full;
  for (char c = 'a'; c <= 'z'; ++c) full.push_back(std::string("k") + c);
  dropped.clear();
  EXPECT_EQ(remap_keywords("Sa", {"new"}, full, &dropped), "S");
  EXPECT_EQ(dropped, (std::vector<std::string>{"keyword new (the folder already has 26)"}));
}

TEST(Export, MboxrdRecordQuotesFromLinesAndNamesTheEnvelope) {
  bool added = true;
  EXPECT_EQ(mboxrd_record("Return-Path: <a@b.c>\nSubject: x\n\nFrom me\n>From you\nFromage\n",
                          1700000000LL * 1000000000, &added),
            "From a@b.c Tue Nov 14 22:13:20 2023\nReturn-Path: <a@b.c>\nSubject: x\n\n>From me\n>>From you\n"
            "Fromage\n\n");
  EXPECT_FALSE(added);
  EXPECT_EQ(mboxrd_record("Subject: x\n\nno newline", 0, &added),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nSubject: x\n\nno newline\n\n");
  EXPECT_TRUE(added);
  EXPECT_EQ(envelope_sender("Return-Path: <>\n\n"), "MAILER-DAEMON");
  EXPECT_EQ(envelope_sender("X: y\nreturn-path:\n <folded@example.ch>\n\n"), "folded@example.ch");
  EXPECT_EQ(envelope_sender("Subject: x\n\nReturn-Path: <body@x>\n"), "MAILER-DAEMON");
  EXPECT_EQ(envelope_sender("Return-Path: <a b@c>\n\n"), "MAILER-DAEMON");
}

TEST(Export, FileNamesAreSafe) {
  EXPECT_EQ(safe_file_name("1700000000.M1P1.mx,S=12"), "1700000000.M1P1.mx,S=12");
  EXPECT_EQ(safe_file_name("../etc/passwd"), "_.._etc_passwd");
  EXPECT_EQ(safe_file_name(".hidden"), "_.hidden");
  EXPECT_EQ(safe_file_name(""), "_");
  EXPECT_EQ(safe_file_name(std::string("a\0b", 3)), "a_b");
  EXPECT_EQ(safe_file_name("Grüße"), "Gr____e");
  EXPECT_EQ(folder_display_name(""), "INBOX");
  EXPECT_EQ(folder_display_name(".Archive.2023"), "Archive.2023");
  EXPECT_EQ(folder_display_name("Archive/2023"), "Archive.2023");
}

}  // namespace
}  // namespace reduit
