#include <gtest/gtest.h>

#include "sqlite.h"
#include "timefmt.h"

using namespace predictd;

TEST(TimeFormat, RoundTripsWithMilliseconds) {
  auto t = parse_utc("2026-11-25T10:00:00.123Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(format_utc(*t), "2026-11-25T10:00:00.123Z");
}

TEST(TimeFormat, AcceptsWhatFeedersWrite) {
  EXPECT_EQ(format_utc(*parse_utc("2026-11-25T10:00:00Z")), "2026-11-25T10:00:00.000Z");
  EXPECT_EQ(format_utc(*parse_utc("2026-11-25 10:00:00")), "2026-11-25T10:00:00.000Z");
  EXPECT_EQ(format_utc(*parse_utc("2026-11-25")), "2026-11-25T00:00:00.000Z");
  EXPECT_EQ(format_utc(*parse_utc("2023-09-08T16:19:34.765994Z")), "2023-09-08T16:19:34.765Z");
}

TEST(TimeFormat, RejectsMalformedTimes) {
  for (const char* bad : {"", "tomorrow", "2026-13-01", "2026-02-30T00:00:00Z", "2026-11-25T25:00:00Z",
                          "2026-11-25T10:00:00+junk", "2026-11-25T10:00:00."})
    EXPECT_FALSE(parse_utc(bad)) << bad;
}

TEST(TimeFormat, TruncatesToMillisecondsAndHandlesTimesBeforeTheEpoch) {
  using namespace std::chrono;
  const SysTime t = sys_days(year(2026) / 11 / 25) + hours(10) + microseconds(1999);
  EXPECT_EQ(format_utc(t), "2026-11-25T10:00:00.001Z");
  EXPECT_EQ(format_utc(SysTime{} - milliseconds(1)), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(format_utc(SysTime{}), "1970-01-01T00:00:00.000Z");
}

TEST(TimeFormat, AgreesWithSqlite) {
  // not_before is compared with julianday() in SQL and parsed here: both must read it alike.
  Db db(":memory:");
  for (const char* s : {"2026-11-25T10:00:00Z", "2026-11-25 10:00", "2024-02-29T23:59:59.5", "2026-01-01",
                        "2026-11-25T10:00:00.123456Z"}) {
    Stmt q(db, "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1)");
    q.bind(1, s);
    ASSERT_TRUE(q.step());
    auto t = parse_utc(s);
    ASSERT_TRUE(t) << s;
    EXPECT_EQ(format_utc(*t), q.get_text(0)) << s;
  }
}

// Found by fuzz_row: a year outside 1678..2261 overflowed the nanosecond
// time_point (signed overflow, UBSan) instead of being refused.
TEST(TimeFormat, RefusesTimesOutsideTheClocksRange) {
  for (const char* bad : {"1013-11-25", "0000-01-01T00:00:00Z", "1677-01-01", "2263-01-01", "9999-12-31T23:59:59Z"})
    EXPECT_FALSE(parse_utc(bad)) << bad;
  EXPECT_EQ(format_utc(*parse_utc("1700-01-01T00:00:00Z")), "1700-01-01T00:00:00.000Z");
  EXPECT_EQ(format_utc(*parse_utc("2262-01-01T00:00:00.5Z")), "2262-01-01T00:00:00.500Z");
}

// Found by fuzz_row: parse_utc took a zone after a bare date and a 60th
// second, which julianday() refuses, so predictctl accepted a not_before that
// the schema's CHECK then rejected.
TEST(TimeFormat, AcceptsNothingSqliteRefuses) {
  Db db(":memory:");
  for (const char* s : {"2026-11-25Z", "2026-11-25T10:00:60Z", "2026-11-25T10:00:60"}) {
    EXPECT_FALSE(parse_utc(s)) << s;
    Stmt q(db, "SELECT julianday(?1) IS NULL");
    q.bind(1, s);
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.get_int(0), 1) << s;
  }
  EXPECT_TRUE(parse_utc("2026-11-25T10:00Z"));
}
