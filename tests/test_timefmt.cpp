#include <gtest/gtest.h>

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
