#include <gtest/gtest.h>

#include <sstream>

#include <boost/json.hpp>

#include "ctl.h"
#include "test_util.h"

using namespace predictd;

namespace {
struct Result {
  int code;
  std::string out, err;
};
Result ctl(std::vector<std::string> args) {
  std::ostringstream out, err;
  int code = run_ctl(args, out, err);
  return {code, out.str(), err.str()};
}
}  // namespace

TEST(Predictctl, InitEnqueueShowOnANewFile) {
  test::TempDir dir;
  const std::string db = dir.file("jobs.db");
  auto r = ctl({"--db", db, "init"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "initialized " + db + " (schema version 1)\n");
  r = ctl({"--db", db, "enqueue", "black-forest-labs/flux-schnell", "--input", R"({"prompt":"a cat"})", "--priority",
           "3", "--timeout", "60"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1\n");
  r = ctl({"--db", db, "show", "1"});
  ASSERT_EQ(r.code, 0);
  auto row = boost::json::parse(r.out).as_object();
  EXPECT_EQ(row.at("status").as_string(), "queued");
  EXPECT_EQ(row.at("input").at("prompt").as_string(), "a cat");  // a JSON value, not a string
  EXPECT_EQ(row.at("priority").as_int64(), 3);
  EXPECT_EQ(row.at("timeout_s").as_int64(), 60);
  test::write_file(dir.file("in.json"), R"({"prompt":"from a file"})");
  r = ctl({"--db", db, "enqueue", "stability-ai/sdxl", "--input", "@" + dir.file("in.json")});
  EXPECT_EQ(r.out, "2\n");
  r = ctl({"--db", db, "--json", "list", "--status", "queued"});
  EXPECT_EQ(boost::json::parse(r.out).as_array().size(), 2u);
  r = ctl({"--db", db, "cancel", "2"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "cancel requested for job 2\n");
  r = ctl({"--db", db, "--json", "stats"});
  EXPECT_EQ(boost::json::parse(r.out).at("by_status").at("queued").as_int64(), 2);
}

TEST(Predictctl, ClearErrorsForBadArguments) {
  test::TempDir dir;
  const std::string db = dir.file("jobs.db");
  ctl({"--db", db, "init"});
  auto expect_usage = [&](std::vector<std::string> args, const std::string& message) {
    auto r = ctl(args);
    EXPECT_EQ(r.code, 64) << message;
    EXPECT_EQ(r.err, "predictctl: " + message + "\n");
  };
  expect_usage({"--db", dir.file("missing.db"), "show", "1"},
               "no database at " + dir.file("missing.db") + " (run predictctl init)");
  expect_usage({"--db", db, "show", "7"}, "no job 7");
  expect_usage({"--db", db, "show", "x"}, "\"x\" is not a job id");
  expect_usage({"--db", db, "frob"}, "unknown command \"frob\"");
  expect_usage({"--db", db, "enqueue", "black-forest-labs/flux-schnell"}, "enqueue needs --input JSON or --input @FILE");
  expect_usage({"--db", db, "enqueue", "black-forest-labs/flux-schnell", "--input", "[1]"},
               "input must be a JSON object, got array");
  expect_usage({"--db", db, "enqueue", "nobody/nothing", "--input", "{}"},
               "model nobody/nothing is not in the catalog (see predictctl models)");
  expect_usage({"--db", db, "list", "--status", "done"}, "unknown status \"done\"");
  expect_usage({"init"}, "--db FILE or --config FILE is required");
  auto r = ctl({"--config", dir.file("nope.json"), "init"});
  EXPECT_EQ(r.code, 78);
}

TEST(Predictctl, WaitExitsZeroOnlyWhenSucceeded) {
  test::TempDir dir;
  const std::string db = dir.file("jobs.db");
  ctl({"--db", db, "init"});
  ctl({"--db", db, "enqueue", "black-forest-labs/flux-schnell", "--input", "{}"});
  auto r = ctl({"--db", db, "wait", "1", "--timeout", "0.2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "predictctl: job 1 is still queued after the timeout\n");
  ctl({"--db", db, "cancel", "1"});
  // Plays the daemon: finish the job.
  {
    auto d = ctl({"--db", db, "show", "1"});
    ASSERT_EQ(d.code, 0);
  }
  r = ctl({"--db", db, "models"});
  EXPECT_NE(r.out.find("stability-ai/sdxl"), std::string::npos);
  EXPECT_NE(r.out.find("158"), std::string::npos);  // sdxl: one image
}
