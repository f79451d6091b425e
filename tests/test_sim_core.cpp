// predictd-sim's model of the API without the transport: parsing of the
// headers, canonical inputs, version spellings, and the life cycle in sim time.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "sim_core.h"
#include "timefmt.h"

using namespace predictd::sim;
namespace json = boost::json;

TEST(SimCore, CancelAfterDurations) {
  EXPECT_EQ(core::parse_duration("30"), 30.0);
  EXPECT_EQ(core::parse_duration("30s"), 30.0);
  EXPECT_EQ(core::parse_duration("5m"), 300.0);
  EXPECT_EQ(core::parse_duration("2h"), 7200.0);
  EXPECT_EQ(core::parse_duration("1h30m45s"), 5445.0);
  EXPECT_EQ(core::parse_duration("1.5s"), 1.5);
  for (const char* bad : {"", "s", "5x", "m5", "-5s", "5s5m", " 5s"}) EXPECT_FALSE(core::parse_duration(bad)) << bad;
}

TEST(SimCore, PreferFollowsTheOpenApiPattern) {
  EXPECT_EQ(core::parse_prefer("wait"), 60);
  EXPECT_EQ(core::parse_prefer("wait=1"), 1);
  EXPECT_EQ(core::parse_prefer("wait=60"), 60);
  EXPECT_EQ(core::parse_prefer("wait=99"), 99);
  for (const char* bad : {"wait=0", "wait=100", "wait=07", "Wait", "wait=5 ", "respond-async"})
    EXPECT_FALSE(core::parse_prefer(bad)) << bad;
}

TEST(SimCore, CanonicalJsonSortsKeysAtEveryLevel) {
  EXPECT_EQ(core::canonical_json(json::parse(R"({"b":1,"a":{"d":[{"y":1,"x":2}],"c":"\u00e9"}})")),
            R"({"a":{"c":"é","d":[{"x":2,"y":1}]},"b":1})");
}

TEST(SimCore, VersionSpellings) {
  const std::string v = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc";
  EXPECT_STREQ(core::resolve_version(v)->name, "stability-ai/sdxl");
  EXPECT_STREQ(core::resolve_version("stability-ai/sdxl:" + v)->name, "stability-ai/sdxl");
  EXPECT_EQ(core::resolve_version("stability-ai/stable-diffusion:" + v), nullptr);
  EXPECT_EQ(core::resolve_version("stability-ai/sdxl"), nullptr);  // not an official model
  EXPECT_STREQ(core::resolve_version("minimax/video-01")->name, "minimax/video-01");
  EXPECT_EQ(core::resolve_version("nobody/nothing"), nullptr);
  EXPECT_EQ(core::models().size(), 14u);
  int versioned = 0;
  for (const auto& m : core::models()) versioned += m.version != nullptr;
  EXPECT_EQ(versioned, 6);
}

TEST(SimCore, CancelBeforeStartIsCanceledDeadlineBeforeStartIsAborted) {
  core::Simulation sim(1);
  core::Settings s;
  s.profile = Profile::realistic;
  s.cold_start_rate = 1;  // 20–60 s in starting
  const auto& model = *core::find_model("black-forest-labs/flux-schnell");
  const json::value input = json::object{{"prompt", "x"}};
  auto& a = sim.create(s, model, false, input, 0, {}, 1, std::nullopt);
  auto& b = sim.create(s, model, false, input, 0, {}, 1, 10.0);
  EXPECT_EQ(sim.status_at(a, 5), core::Status::starting);
  EXPECT_TRUE(sim.cancel(a, 5));
  EXPECT_FALSE(sim.cancel(a, 6));  // already over
  EXPECT_EQ(sim.status_at(a, 5), core::Status::canceled);
  EXPECT_EQ(sim.status_at(b, 9.9), core::Status::starting);
  EXPECT_EQ(sim.status_at(b, 10), core::Status::aborted);
  EXPECT_EQ(sim.end_of(b), 10);
  Stats st;
  sim.fill_stats(st, 20, true);
  EXPECT_EQ(st.creates, 2);
  EXPECT_EQ(st.duplicate_creates, 1);
  EXPECT_EQ(st.statuses.at("canceled"), 1);
  EXPECT_EQ(st.statuses.at("aborted"), 1);
}

TEST(SimCore, DateTimesTakeRfc3339OffsetsAndTheShortFormsOfParseUtc) {
  const auto utc = predictd::parse_utc("2026-03-04T05:06:07.250Z").value();
  EXPECT_EQ(core::parse_date_time("2026-03-04T05:06:07.250Z"), utc);
  EXPECT_EQ(core::parse_date_time("2026-03-04T05:06:07.250+00:00"), utc);
  EXPECT_EQ(core::parse_date_time("2026-03-04T05:06:07.250-00:00"), utc);
  EXPECT_EQ(core::parse_date_time("2026-03-04T07:06:07.250+02:00"), utc);
  EXPECT_EQ(core::parse_date_time("2026-03-03T23:36:07.250-05:30"), utc);
  EXPECT_EQ(core::parse_date_time("2026-03-04t05:06:07.250z"), utc);
  EXPECT_EQ(core::parse_date_time("2026-03-04 05:06:07.250Z"), utc);
  EXPECT_EQ(core::parse_date_time("2026-03-04T05:06+01:00"), predictd::parse_utc("2026-03-04T04:06Z"));
  EXPECT_EQ(core::parse_date_time("2026-03-04"), predictd::parse_utc("2026-03-04"));
  for (const char* bad : {"2026-03-04T05:06:07+24:00", "2026-03-04T05:06:07+02:60", "2026-03-04T05:06:07+0200",
                          "2026-03-04T05:06:07Z+00:00", "2026-03-04-05:00", "2026-03-04T05:06:07 02:00",
                          "2026-03-04T05:06:07+2:00", "yesterday", ""})
    EXPECT_FALSE(core::parse_date_time(bad)) << bad;
}
