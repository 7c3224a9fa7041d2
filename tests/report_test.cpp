// `reduit report` (issue 8, "Report"): period parsing, and must-show 3 — the HTML
// renders in headless Chromium without errors or network requests (a screenshot of
// the first page is saved and its path printed), the JSON validates against
// docs/report-schema.json, and `gpg --verify` accepts the detached signature and
// rejects the report after one changed byte. The year scenario (must-show 2) is
// tests/long/report_year_test.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "retention/keep_policy.hpp"
#include "retention/report.hpp"
#include "support/retention_site.hpp"
#include "support/tsa.hpp"

using reduit::parse_period;

TEST(ReportPeriod, YearsQuartersMonthsDaysAndRangesAreWholeLocalDays) {
  const date::time_zone* zh = reduit::find_time_zone("Europe/Zurich");
  auto q3 = parse_period("2026-Q3", zh);
  EXPECT_EQ(q3.first_day, "2026-07-01");
  EXPECT_EQ(q3.last_day, "2026-09-30");
  EXPECT_EQ(q3.from_ns, at("2026-06-30T22:00:00Z"));  // CEST, UTC+2
  EXPECT_EQ(q3.to_ns, at("2026-09-30T22:00:00Z"));
  auto y = parse_period("2026", zh);
  EXPECT_EQ(y.from_ns, at("2025-12-31T23:00:00Z"));  // CET, UTC+1
  EXPECT_EQ(y.to_ns, at("2026-12-31T23:00:00Z"));
  EXPECT_EQ(y.last_day, "2026-12-31");
  auto feb = parse_period("2028-02", zh);
  EXPECT_EQ(feb.last_day, "2028-02-29");
  auto r = parse_period("2026-03-01..2026-03-31", zh);  // DST starts 2026-03-29: a 23-hour day
  EXPECT_EQ(r.to_ns - r.from_ns, (31LL * 24 - 1) * 3600 * 1000000000LL);
  auto d = parse_period("2026-10-25", zh);  // DST ends: a 25-hour day
  EXPECT_EQ(d.to_ns - d.from_ns, 25LL * 3600 * 1000000000LL);
  for (const char* bad :
       {"2026-Q5", "2026-13", "26", "2026-02-30", "2026-03-02..2026-03-01", "last year", ""}) {
    EXPECT_EQ(reduit::test::error_code_of([&] { parse_period(bad, zh); }), reduit::ErrorCode::kUsage) << bad;
  }
}

TEST(ReportPeriod, ShippedFadpProfileParses) {
  reduit::Policy p = reduit::load_policy(reduit::test::source_dir() + "/policies/fadp-ch.toml");
  EXPECT_EQ(p.name, "fadp-ch");
  EXPECT_EQ(p.snapshots.daily, 30);
  EXPECT_EQ(p.snapshots.weekly, 26);
  EXPECT_EQ(p.snapshots.monthly, 84);
  ASSERT_EQ(p.classes.size(), 2u);
  EXPECT_EQ(p.classes[1].minimum->str(), "10y");
  EXPECT_EQ(p.compliance.drill_every->str(), "92d");
  EXPECT_EQ(p.compliance.jurisdictions, std::vector<std::string>{"CH"});
  EXPECT_EQ(reduit::test::error_code_of([] {
              reduit::parse_policy("[snapshots]\nkeep-last = 1\n[compliance]\njurisdictions = [\"ch\"]\n",
                                   "p.toml");
            }),
            reduit::ErrorCode::kUsage);
}

namespace {

std::string python3() {
  // Debian's interpreter: python3-websocket and python3-jsonschema are its modules.
  return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "";
}

}  // namespace

TEST(ReportHtml, RendersInChromiumWithoutRequestsValidatesAndTheSignatureCatchesOneByte) {
  if (python3().empty()) GTEST_SKIP() << "/usr/bin/python3 is missing";
  auto& keys = reduit::test::SiteKeys::get();
  reduit::test::LocalTsa tsa;  // the signed report is also time-stamped (RFC 3161)
  TempDir mail;
  Mailbox mb(mail.path());
  std::mt19937_64 rng(8);
  const std::int64_t t0 = at("2026-07-01T02:00:00Z");
  Msg m1 = mb.deliver("", t0 - 3600LL * 1000000000, 500, rng);
  Msg m2 = mb.deliver(".Private", t0 - 7200LL * 1000000000, 300, rng);
  Site site({mail.path()}, "%d/%n", "",
            "operator = \"Vault Hosting AG\"\njurisdiction = \"CH\"\nlocation = \"Zurich\"",
            "policy = \"" + reduit::test::source_dir() +
                "/policies/fadp-ch.toml\"\n[organisation]\nname = \"Example AG <Zürich>\"\ncountry = \"CH\"\n"
                "purpose = \"business e-mail\"\n[audit]\ntsa_url = \"" +
                tsa.url() + "\"\ntsa_ca_file = \"" + tsa.ca_file() + "\"\n[keys.custodians]\n\"" +
                keys.archive_fpr + "\" = \"CFO, safe deposit box\"\n");
  set_now(t0);
  site.init();
  site.backup();
  set_now(t0 + kDayNs);
  site.backup();
  set_now(t0 + 2 * kDayNs);
  TempDir out;
  const std::string html = out.path() + "/report.html";
  RunResult r = site.reduit({"report", "--period", "2026-Q3", "--format", "html", "--out", html, "--sign"});
  ASSERT_TRUE(r.status == 0 || r.status == 1) << r.err << r.out;
  nlohmann::json summary = r.json();
  EXPECT_EQ(summary["signature"], html + ".asc");
  EXPECT_EQ(summary["signer"], keys.agent_fpr);
  EXPECT_EQ(summary["time_stamp"], html + ".tsr");
  EXPECT_EQ(summary["first_day"], "2026-07-01");
  const std::string text = reduit::test::read_file(html);
  EXPECT_EQ(summary["sha256"], sha_hex(text));
  EXPECT_NE(text.find("default-src 'none'; style-src 'unsafe-inline'; img-src data:"), std::string::npos);
  EXPECT_NE(text.find("Example AG &lt;Zürich&gt;"), std::string::npos);  // escaped
  EXPECT_EQ(text.find("<script"), std::string::npos);
  EXPECT_NE(text.find(tsa.url()), std::string::npos);  // the header names the TSA of FILE.tsr
  EXPECT_NE(text.find("<svg"), std::string::npos);
  // Making the report is itself in the audit log, with the report's digest, and the
  // report prints the anchor (the entry before it) for a later `audit verify --anchor`.
  nlohmann::json logged = site.reduit({"audit", "show", "--event", "report"}).json();
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0]["data"]["sha256"], sha_hex(text));
  EXPECT_EQ(logged[0]["data"]["signed"], true);
  EXPECT_EQ(logged[0]["data"]["time_stamped"], true);
  EXPECT_EQ(logged[0]["data"]["out"], html);
  EXPECT_EQ(logged[0]["actor"]["key"], keys.agent_fpr);
  const std::string anchor = logged[0]["data"]["audit_head"].get<std::string>();
  EXPECT_EQ(anchor.substr(0, anchor.find(':')), std::to_string(logged[0]["seq"].get<int>() - 1));
  EXPECT_NE(text.find(anchor), std::string::npos);
  EXPECT_EQ(site.reduit({"audit", "verify", "--anchor", anchor}).status, 0);

  // The JSON report of the same state validates against the documented schema.
  const std::string json_path = out.path() + "/report.json";
  RunResult j = site.reduit({"report", "--period", "2026-Q3", "--format", "json", "--out", json_path});
  ASSERT_TRUE(j.status == 0 || j.status == 1) << j.err;
  nlohmann::json rep = nlohmann::json::parse(reduit::test::read_file(json_path));
  EXPECT_EQ(rep["header"]["organisation"], "Example AG <Zürich>");
  EXPECT_EQ(rep["header"]["time_stamp_tsa"], "");  // not signed, not stamped
  EXPECT_EQ(rep["header"]["policy"]["sha256"],
            sha_hex(reduit::test::read_file(reduit::test::source_dir() + "/policies/fadp-ch.toml")));
  EXPECT_EQ(rep["header"]["config"]["sha256"], sha_hex(reduit::test::read_file(site.config())));
  EXPECT_EQ(rep["header"]["scope"]["mailboxes"], nlohmann::json::array({"alice@example.ch"}));
  EXPECT_EQ(rep["header"]["scope"]["domains"], nlohmann::json::array({"example.ch"}));
  EXPECT_EQ(rep["processing"]["storage"][0]["jurisdiction"], "CH");
  EXPECT_EQ(rep["processing"]["storage"][0]["abroad"], false);
  EXPECT_EQ(rep["processing"]["disclosures_abroad"], nlohmann::json::array());
  EXPECT_EQ(rep["processing"]["security"]["keys"][0]["fingerprint"], keys.archive_fpr);
  EXPECT_EQ(rep["processing"]["security"]["keys"][0]["custodian"], "CFO, safe deposit box");
  EXPECT_EQ(rep["processing"]["security"]["keys"][0]["algorithms"],
            nlohmann::json::array({"ed25519 certify+sign", "cv25519 encrypt"}));
  // Per mailbox and class from the newest snapshot (the second backup).
  ASSERT_EQ(rep["retention"]["mailboxes"].size(), 1u);  // INBOX and .Private are both business-correspondence
  EXPECT_EQ(rep["retention"]["mailboxes"][0]["class"], "business-correspondence");
  EXPECT_EQ(rep["retention"]["mailboxes"][0]["messages"], 2);
  EXPECT_EQ(rep["retention"]["mailboxes"][0]["bytes"], m1.content.size() + m2.content.size());
  EXPECT_EQ(rep["retention"]["mailboxes"][0]["oldest"], iso(m2.date_ns));
  EXPECT_EQ(rep["retention"]["mailboxes"][0]["newest"], iso(m1.date_ns));
  EXPECT_EQ(rep["retention"]["snapshots_kept"], 2);
  TempDir py_out;
  reduit::test::write_file(py_out.path() + "/v.py",
                           "import json,sys,jsonschema\n"
                           "s=json.load(open(sys.argv[1]));d=json.load(open(sys.argv[2]))\n"
                           "jsonschema.Draft202012Validator(s).validate(d);print('valid')\n");
  RunResult v =
      reduit::test::run_command({python3(), py_out.path() + "/v.py",
                                 reduit::test::source_dir() + "/docs/report-schema.json", json_path});
  if (v.err.find("No module named 'jsonschema'") != std::string::npos) {
    ADD_FAILURE() << "python3-jsonschema is missing (scripts/bootstrap installs it)";
  } else {
    EXPECT_EQ(v.status, 0) << v.out << v.err;
  }

  // Markdown prints the same figures.
  const std::string md_path = out.path() + "/report.md";
  RunResult md = site.reduit({"report", "--period", "2026-Q3", "--format", "md", "--out", md_path});
  ASSERT_TRUE(md.status == 0 || md.status == 1) << md.err;
  const std::string md_text = reduit::test::read_file(md_path);
  EXPECT_NE(md_text.find("| alice@example.ch | business-correspondence | 2 | " +
                         std::to_string(m1.content.size() + m2.content.size()) + " | 0 | 0 | " +
                         iso(m2.date_ns) + " | " + iso(m1.date_ns) + " |"),
            std::string::npos)
      << md_text;
  EXPECT_NE(md_text.find(rep["header"]["policy"]["sha256"].get<std::string>()), std::string::npos);

  // The agent's scheduled job runs `reduit --json report`: the previous month, into
  // the state directory, signed.
  RunResult job = site.reduit({"report"});
  ASSERT_TRUE(job.status == 0 || job.status == 1) << job.err;
  EXPECT_EQ(job.json()["period"], "2026-06");
  EXPECT_EQ(job.json()["last_day"], "2026-06-30");
  EXPECT_EQ(job.json()["out"], site.path("state/reports/report-2026-06.html"));
  EXPECT_TRUE(fs::exists(site.path("state/reports/report-2026-06.html.asc")));

  // Headless Chromium: no request but file:/data:, no exception, no console error.
  // Saved beside the test's working directory (build/tests under ctest), kept after the run.
  const std::string shot_dir = (fs::current_path() / "report-screenshots").string();
  fs::create_directories(shot_dir);
  const std::string png = shot_dir + "/report-first-page.png";
  RunResult c = reduit::test::run_command(
      {python3(), reduit::test::source_dir() + "/tests/support/render_html.py", html, png});
  if (c.status == 77) GTEST_SKIP() << "cannot render in Chromium: " << c.out;
  EXPECT_EQ(c.status, 0) << c.out << c.err;
  nlohmann::json cr = nlohmann::json::parse(c.out);
  EXPECT_EQ(cr["errors"], nlohmann::json::array());
  EXPECT_EQ(cr["requests"], nlohmann::json::array({"file://" + html}));
  ASSERT_TRUE(fs::exists(png));
  EXPECT_GT(fs::file_size(png), 10000u);
  std::printf("[ screenshot ] %s\n", png.c_str());
  RecordProperty("screenshot", png);

  // gpg --verify with the agent's public key (what an auditor imports).
  reduit::test::GpgHome auditor;
  auditor.import(keys.agent_home->export_public(keys.agent_fpr));
  RunResult good = reduit::test::run_command({"/usr/bin/gpg", "--homedir", auditor.path(), "--batch",
                                              "--status-fd", "1", "--verify", html + ".asc", html});
  EXPECT_EQ(good.status, 0) << good.err;
  EXPECT_NE(good.out.find("[GNUPG:] VALIDSIG " + keys.agent_fpr), std::string::npos) << good.out;
  RunResult ts = reduit::test::run_command(
      {"/usr/bin/openssl", "ts", "-verify", "-data", html, "-in", html + ".tsr", "-CAfile", tsa.ca_file()});
  EXPECT_EQ(ts.out, "Verification: OK\n") << ts.err;
  std::string changed = text;
  changed[changed.size() / 2] ^= 0x01;
  reduit::test::write_file(html, changed);
  RunResult bad = reduit::test::run_command({"/usr/bin/gpg", "--homedir", auditor.path(), "--batch",
                                             "--status-fd", "1", "--verify", html + ".asc", html});
  EXPECT_EQ(bad.status, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("[GNUPG:] BADSIG"), std::string::npos) << bad.out;
  EXPECT_NE(reduit::test::run_command({"/usr/bin/openssl", "ts", "-verify", "-data", html, "-in",
                                       html + ".tsr", "-CAfile", tsa.ca_file()})
                .status,
            0);
  unsetenv("REDUIT_NOW");
}
