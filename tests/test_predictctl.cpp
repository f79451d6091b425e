#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <sstream>
#include <thread>

#include <boost/json.hpp>

#include "ctl.h"
#include "schema.h"
#include "sqlite.h"
#include "store.h"
#include "test_util.h"
#include "timefmt.h"

using namespace predictd;
namespace json = boost::json;

namespace {

struct Result {
  int code;
  std::string out, err;
};

Result ctl(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  int code = run_ctl(args, out, err);
  return {code, out.str(), err.str()};
}

const std::string kSdxlVersion = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc";

struct CtlTest : ::testing::Test {
  test::TempDir dir;
  std::string db = dir.file("jobs.db");
  void SetUp() override { ASSERT_EQ(ctl({"--db", db, "init"}).code, 0); }

  Result run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--db", db});
    return ctl(args);
  }
  int64_t enqueue(const std::string& model = "black-forest-labs/flux-schnell") {
    auto r = run({"enqueue", model, "--input", "{}"});
    EXPECT_EQ(r.code, 0) << r.err;
    return std::stoll(r.out);
  }
  // Plays the daemon: claims the job and moves it on to `to`.
  void finish(int64_t id, Transition t) {
    auto store = Store::open(db);
    auto claimed = store->claim(format_utc(std::chrono::system_clock::now()), 100,
                                [](const JobRow&) { return std::nullopt; });
    ASSERT_FALSE(claimed.busy);
    t.job_id = id;
    t.from = JobStatus::submitting;
    auto r = store->apply(std::span(&t, 1));
    ASSERT_TRUE(r && r.value[0]);
  }
  void expect_usage(std::vector<std::string> args, const std::string& message) {
    auto r = run(args);
    EXPECT_EQ(r.code, 64) << message;
    EXPECT_EQ(r.err, "predictctl: " + message + "\n");
    EXPECT_EQ(r.out, "");
  }
};

}  // namespace

TEST(Predictctl, InitEnqueueShowOnANewFile) {
  test::TempDir dir;
  const std::string db = dir.file("jobs.db");
  auto r = ctl({"--db", db, "init"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "initialized " + db + " (schema version " + std::to_string(schema_files().back().version) + ")\n");
  EXPECT_EQ(ctl({"--db", db, "init"}).code, 0);  // again: nothing to do
  r = ctl({"--db", db, "enqueue", "black-forest-labs/flux-schnell", "--input", R"({"prompt":"a cat"})", "--priority",
           "3", "--timeout", "60", "--not-before", "2026-11-25T10:00:00Z"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1\n");
  EXPECT_EQ(r.err, "");
  r = ctl({"--db", db, "show", "1"});
  ASSERT_EQ(r.code, 0);
  auto row = json::parse(r.out).as_object();
  EXPECT_EQ(row.at("id").as_int64(), 1);
  EXPECT_EQ(row.at("model").as_string(), "black-forest-labs/flux-schnell");
  EXPECT_TRUE(row.at("version").is_null());
  EXPECT_EQ(row.at("status").as_string(), "queued");
  EXPECT_EQ(row.at("input").at("prompt").as_string(), "a cat");  // a JSON value, not a string
  EXPECT_EQ(row.at("priority").as_int64(), 3);
  EXPECT_EQ(row.at("timeout_s").as_int64(), 60);
  EXPECT_EQ(row.at("not_before").as_string(), "2026-11-25T10:00:00Z");
  EXPECT_EQ(row.at("cancel_requested").as_bool(), false);
  EXPECT_TRUE(parse_utc(row.at("created_at").as_string().c_str()));
}

TEST_F(CtlTest, EnqueueReadsAFileAndKeepsTheModelAndVersionAsGiven) {
  test::write_file(dir.file("in.json"), R"({"prompt":"from a file"})");
  // A catalog model that has a version: the model column is written; the daemon picks the form.
  auto r = run({"enqueue", "stability-ai/sdxl", "--input", "@" + dir.file("in.json"), "--priority", "-2"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto row = json::parse(run({"show", r.out.substr(0, r.out.size() - 1)}).out);
  EXPECT_EQ(row.at("model").as_string(), "stability-ai/sdxl");
  EXPECT_TRUE(row.at("version").is_null());
  EXPECT_EQ(row.at("input").at("prompt").as_string(), "from a file");
  EXPECT_EQ(row.at("priority").as_int64(), -2);

  r = run({"enqueue", "--version", kSdxlVersion, "--input", "{}"});
  ASSERT_EQ(r.code, 0) << r.err;
  row = json::parse(run({"show", "2"}).out);
  EXPECT_TRUE(row.at("model").is_null());
  EXPECT_EQ(row.at("version").as_string(), kSdxlVersion);
}

TEST_F(CtlTest, ShowGivesOutputAndFilesAsJsonValues) {
  int64_t id = enqueue();
  finish(id, {.to = JobStatus::succeeded, .output = R"(["https://x/1.webp"])", .units = 1, .cost_credits = 75});
  auto store = Store::open(db);
  store->db().exec(R"(UPDATE jobs SET files = '[{"url":"https://x/1.webp","path":"/a/1-0.webp","bytes":3,"sha256":"ab"}]')");
  auto r = run({"--json", "show", std::to_string(id)});
  ASSERT_EQ(r.code, 0);
  auto row = json::parse(r.out);
  EXPECT_EQ(row.at("output").as_array().at(0).as_string(), "https://x/1.webp");
  EXPECT_EQ(row.at("files").as_array().at(0).at("bytes").as_int64(), 3);
  EXPECT_EQ(row.at("cost_credits").as_int64(), 75);
  EXPECT_EQ(row.at("units").as_int64(), 1);
  EXPECT_EQ(row.at("status").as_string(), "succeeded");
}

TEST_F(CtlTest, ClearErrorsForBadArguments) {
  enqueue();
  const std::string missing = dir.file("missing.db");
  for (std::string cmd : {"enqueue", "show", "list", "cancel", "wait", "stats"}) {
    auto r = ctl({"--db", missing, cmd, "1"});
    EXPECT_EQ(r.code, 64) << cmd;
    EXPECT_EQ(r.err, "predictctl: no database at " + missing + " (run predictctl init)\n") << cmd;
  }
  EXPECT_FALSE(std::filesystem::exists(missing));
  expect_usage({"show", "7"}, "no job 7");
  expect_usage({"show", "x"}, "\"x\" is not a job id");
  expect_usage({"show"}, "show needs a job ID");
  expect_usage({"cancel", "0"}, "\"0\" is not a job id");
  expect_usage({"wait", "7"}, "no job 7");
  expect_usage({"frob"}, "unknown command \"frob\" (see predictctl --help)");
  expect_usage({"--frob", "list"}, "unknown option \"--frob\" (see predictctl --help)");
  expect_usage({"list", "--frob"}, "unrecognised option '--frob'");
  expect_usage({"stats", "now"}, "stats takes no arguments (got \"now\")");
  expect_usage({"enqueue", "black-forest-labs/flux-schnell"}, "enqueue needs --input JSON or --input @FILE");
  expect_usage({"enqueue", "--input", "{}"}, "enqueue needs a MODEL or --version");
  expect_usage({"enqueue", "black-forest-labs/flux-schnell", "--input", "[1]"},
               "input must be a JSON object, got array");
  expect_usage({"enqueue", "black-forest-labs/flux-schnell", "--input", "{"},
               "input is not valid JSON (incomplete JSON)");
  expect_usage({"enqueue", "black-forest-labs/flux-schnell", "--input", "@" + dir.file("nope.json")},
               "cannot read " + dir.file("nope.json") + ": No such file or directory");
  expect_usage({"enqueue", "black-forest-labs/flux-schnell", "--input", "{}", "--priority", "high"},
               "the argument ('high') for option '--priority' is invalid");
  expect_usage({"enqueue", "black-forest-labs/flux-schnell", "--input", "{}", "--timeout", "0"},
               "--timeout must be a positive number of seconds");
  expect_usage({"enqueue", "black-forest-labs/flux-schnell", "--input", "{}", "--not-before", "soon"},
               "--not-before must be a UTC time like 2026-11-25T10:00:00Z");
  expect_usage({"list", "--status", "done"}, "unknown status \"done\"");
  expect_usage({"list", "--limit", "0"}, "--limit must be positive");
  expect_usage({"wait", "1", "--timeout", "-1"}, "--timeout must be a number of seconds");
  auto r = ctl({"init"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(r.err, "predictctl: --db FILE or --config FILE is required\n");
  r = ctl({});
  EXPECT_EQ(r.code, 64);
  EXPECT_TRUE(r.err.starts_with("Usage: predictctl")) << r.err;
  r = ctl({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(r.out.starts_with("Usage: predictctl")) << r.out;
  // Nothing above wrote a row.
  EXPECT_EQ(json::parse(run({"--json", "list"}).out).as_array().size(), 1u);
}

// A path that is not a database is the caller's input error (exit 64) with the
// path in the message, whatever the command; nothing is created or changed.
TEST(Predictctl, APathThatIsNoDatabaseIsAUsageErrorNamingIt) {
  test::TempDir dir;
  const std::string notes = dir.file("notadb"), cut = dir.file("cut.db"), none = dir.file("none");
  test::write_file(notes, "just some notes\n");
  // SQLite's magic string, then no database: only SQLite itself can tell.
  test::write_file(cut, std::string("SQLite format 3\0", 16) + std::string(200, 'x'));
  const std::vector<std::vector<std::string>> commands = {
      {"init"}, {"show", "1"}, {"list"}, {"stats"}, {"cancel", "1"}, {"wait", "1"},
      {"enqueue", "black-forest-labs/flux-schnell", "--input", "{}"}};
  const std::pair<std::string, std::string> paths[] = {
      {notes, notes + ": not a SQLite database"},
      {cut, cut + ": not a SQLite database"},
      {dir.path().string(), dir.path().string() + ": is a directory, not a database file"},
      {".", ".: is a directory, not a database file"},
  };
  for (const auto& [path, message] : paths)
    for (auto args : commands) {
      args.insert(args.begin(), {"--db", path});
      auto r = ctl(args);
      EXPECT_EQ(r.code, 64) << path << " " << args[2];
      EXPECT_EQ(r.err, "predictctl: " + message + "\n") << args[2];
      EXPECT_EQ(r.out, "");
    }
  auto r = ctl({"--db", none + "/jobs.db", "init"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(r.err, "predictctl: " + none + "/jobs.db: directory " + none + " does not exist\n");
  r = ctl({"--db", notes + "/jobs.db", "init"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(r.err, "predictctl: " + notes + "/jobs.db: " + notes + " is not a directory\n");
  EXPECT_FALSE(std::filesystem::exists(none));
  EXPECT_EQ(test::read_file(notes), "just some notes\n");
  EXPECT_EQ(std::filesystem::file_size(cut), 216u);
}

TEST_F(CtlTest, WithoutAConfigAModelMissingFromTheDefaultsIsAWarningNotARefusal) {
  auto r = run({"enqueue", "me/my-model", "--input", "{}"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "1\n");
  EXPECT_EQ(r.err,
            "predictctl: warning: model me/my-model is not in the default catalog; predictd fails the job unless its "
            "config lists it (--config FILE checks against that)\n");
}

TEST_F(CtlTest, ConfigNamesTheDbAndItsCatalogIsAuthoritative) {
  const std::string other_db = dir.file("other.db");
  const std::string config = dir.file("predictd.json");
  test::write_file(config, R"({
    // comments and trailing commas are fine
    "db": { "path": ")" + other_db + R"(" },
    "models": {
      "me/my-model": { "price_usd": "0.1", "per": "image" },
      "stability-ai/sdxl": { "price_usd": "0.0063", "per": "image", "version": ")" + kSdxlVersion + R"(" },
    },
  })");
  auto r = ctl({"--config", config, "init"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out,
            "initialized " + other_db + " (schema version " + std::to_string(schema_files().back().version) + ")\n");
  r = ctl({"--config", config, "enqueue", "me/my-model", "--input", "{}"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "1\n");
  EXPECT_EQ(r.err, "");
  r = ctl({"--config", config, "enqueue", "black-forest-labs/flux-schnell", "--input", "{}"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(r.err,
            "predictctl: model black-forest-labs/flux-schnell is not in the catalog (see predictctl models)\n");
  r = ctl({"--config", config, "enqueue", "me/my-model", "--version", kSdxlVersion, "--input", "{}"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(r.err, "predictctl: model me/my-model does not match version " + kSdxlVersion +
                       " (stability-ai/sdxl) (see predictctl models)\n");
  r = ctl({"--config", config, "enqueue", "--version", std::string(64, 'a'), "--input", "{}"});
  EXPECT_EQ(r.code, 64);
  EXPECT_EQ(r.err, "predictctl: version " + std::string(64, 'a') + " is not in the catalog (see predictctl models)\n");

  r = ctl({"--config", config, "--json", "models"});
  ASSERT_EQ(r.code, 0);
  auto models = json::parse(r.out).as_array();
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].at("model").as_string(), "me/my-model");
  EXPECT_EQ(models[0].at("credits_per_unit").as_int64(), 2500);  // 0.1 USD x 2.5 x 10000
  // --db overrides the config's path.
  r = ctl({"--config", config, "--db", db, "--json", "list"});
  EXPECT_EQ(json::parse(r.out).as_array().size(), 0u);
}

TEST(Predictctl, ConfigErrorsExit78WithTheMessage) {
  test::TempDir dir;
  auto r = ctl({"--config", dir.file("nope.json"), "init"});
  EXPECT_EQ(r.code, 78);
  EXPECT_EQ(r.err, "predictctl: " + dir.file("nope.json") + ": cannot read the config file: No such file or directory\n");
  test::write_file(dir.file("bad.json"), R"({"db": {"path": "x", "pth": 1}})");
  r = ctl({"--config", dir.file("bad.json"), "models"});
  EXPECT_EQ(r.code, 78);
  EXPECT_EQ(r.err, "predictctl: " + dir.file("bad.json") + ": unknown key \"db.pth\"\n");
}

TEST_F(CtlTest, WaitExitsZeroOnlyWhenSucceeded) {
  const int64_t queued = enqueue();
  auto r = run({"wait", std::to_string(queued), "--timeout", "0.2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "predictctl: job 1 is still queued after the timeout\n");

  finish(queued, {.to = JobStatus::failed, .error = "model is not in the catalog"});
  r = run({"wait", "1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "failed: model is not in the catalog\n");

  // Finished by "the daemon" while predictctl polls.
  const int64_t id = enqueue();
  std::thread daemon([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    finish(id, {.to = JobStatus::succeeded, .output = R"(["u"])", .units = 1, .cost_credits = 75});
  });
  r = run({"wait", std::to_string(id), "--timeout", "20"});
  daemon.join();
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "succeeded\n");

  const int64_t canceled = enqueue();
  finish(canceled, {.to = JobStatus::canceled, .error = "canceled on request"});
  r = run({"wait", std::to_string(canceled)});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "canceled: canceled on request\n");
}

TEST_F(CtlTest, CancelRequestsOrSaysWhyNot) {
  const int64_t id = enqueue();
  auto r = run({"cancel", std::to_string(id)});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "cancel requested for job 1\n");
  EXPECT_TRUE(json::parse(run({"show", "1"}).out).at("cancel_requested").as_bool());

  const int64_t done = enqueue();
  finish(done, {.to = JobStatus::succeeded, .output = "[]", .units = 0, .cost_credits = 0});
  r = run({"cancel", std::to_string(done)});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "predictctl: job 2 already finished (succeeded); nothing to cancel\n");
  EXPECT_FALSE(json::parse(run({"show", "2"}).out).at("cancel_requested").as_bool());
}

TEST_F(CtlTest, ListAndStatsForPeopleAndScripts) {
  enqueue();
  const int64_t sdxl = enqueue("stability-ai/sdxl");
  enqueue();
  finish(sdxl, {.to = JobStatus::succeeded, .output = R"(["a","b","c","d"])", .units = 4, .cost_credits = 630});

  auto r = run({"list", "--limit", "2"});
  ASSERT_EQ(r.code, 0);
  std::istringstream lines(r.out);
  std::string header, first, second, extra;
  std::getline(lines, header);
  std::getline(lines, first);
  std::getline(lines, second);
  EXPECT_FALSE(std::getline(lines, extra));
  EXPECT_TRUE(header.starts_with("ID      MODEL")) << header;
  EXPECT_TRUE(first.starts_with("3       black-forest-labs/flux-schnell")) << first;  // newest first
  EXPECT_TRUE(second.starts_with("2       stability-ai/sdxl")) << second;
  EXPECT_NE(second.find("succeeded   4      630"), std::string::npos) << second;

  r = run({"--json", "list", "--status", "succeeded"});
  auto rows = json::parse(r.out).as_array();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].at("id").as_int64(), sdxl);

  r = run({"stats", "--json"});  // --json may follow the command
  auto st = json::parse(r.out);
  EXPECT_EQ(st.at("by_status").at("queued").as_int64(), 0);  // finish() claimed the others
  EXPECT_EQ(st.at("by_status").at("submitting").as_int64(), 2);
  EXPECT_EQ(st.at("by_status").at("succeeded").as_int64(), 1);
  EXPECT_EQ(st.at("credits_today").as_int64(), 630);
  EXPECT_EQ(st.at("credits_all_time").as_int64(), 630);
  EXPECT_TRUE(st.at("oldest_queued_age_s").is_null());

  enqueue();
  r = run({"stats"});
  EXPECT_NE(r.out.find("queued                1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("succeeded             1\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("credits today (UTC)   630\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("credits all time      630\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("oldest queued         0 s\n"), std::string::npos) << r.out;
}

TEST(Predictctl, ModelsPrintsTheCatalogWithTheCreditsOfOneUnit) {
  auto r = ctl({"--json", "models"});  // no db needed
  ASSERT_EQ(r.code, 0) << r.err;
  std::map<std::string, int64_t> credits;
  const json::value models = json::parse(r.out);
  for (const auto& m : models.as_array())
    credits[std::string(m.at("model").as_string())] = m.at("credits_per_unit").as_int64();
  EXPECT_EQ(credits.size(), 14u);
  EXPECT_EQ(credits.at("stability-ai/sdxl"), 158);
  EXPECT_EQ(credits.at("black-forest-labs/flux-schnell"), 75);
  EXPECT_EQ(credits.at("minimax/video-01"), 12500);
  r = ctl({"models"});
  EXPECT_TRUE(r.out.starts_with("MODEL ")) << r.out;
  EXPECT_NE(r.out.find("stability-ai/sdxl                         0.0063    image  158      " + kSdxlVersion + "\n"),
            std::string::npos)
      << r.out;
}
