// The catalog's header summary (agent/headers.hpp): unfolding and RFC 2047.
#include <gtest/gtest.h>

#include "agent/headers.hpp"

using reduit::summarize_headers;

TEST(HeaderSummary, UnfoldsAndDecodesEncodedWords) {
  auto h = summarize_headers(
      "Received: from x\r\n\tby y\r\n"
      "From: =?iso-8859-1?q?J=FCrg_M=FCller?= <juerg@example.ch>\r\n"
      "To: alice@example.ch,\r\n bob@example.ch\r\n"
      "Subject: =?utf-8?B?UmVjaG51bmcgZsO8ciBOb3ZlbWJlcg==?=\r\n"
      "Message-ID: <abc@example.ch>\r\n"
      "Date: Mon, 30 Nov 2026 05:00:00 +0100\r\n"
      "Subject: second subject is ignored\r\n"
      "\r\n");
  EXPECT_EQ(h.from, "Jürg Müller <juerg@example.ch>");
  EXPECT_EQ(h.to, "alice@example.ch, bob@example.ch");
  EXPECT_EQ(h.subject, "Rechnung für November");
  EXPECT_EQ(h.message_id, "<abc@example.ch>");
  EXPECT_EQ(h.date, "Mon, 30 Nov 2026 05:00:00 +0100");
}

TEST(HeaderSummary, MissingFieldsAndGarbageAreEmptyNotErrors) {
  auto h = summarize_headers("no colon here\nX-Other: 1\n\nFrom: body@example.ch\n");
  EXPECT_EQ(h.from, "");
  EXPECT_EQ(h.subject, "");
  EXPECT_EQ(h.message_id, "");
}
