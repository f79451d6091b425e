#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "test_util.h"

namespace {
const std::string kPredictd = std::string(PREDICTD_BINARY_DIR) + "/predictd";

// Runs predictd with `args`; returns the exit code and what it printed. The
// token comes only from the config: the environment's sources are removed.
std::pair<int, std::string> run(const std::string& args) {
  std::string cmd = "env -u PREDICTD_API_TOKEN -u CREDENTIALS_DIRECTORY " + kPredictd + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  int status = ::pclose(p);
  return {WEXITSTATUS(status), out};
}

// A config file `name` in `dir` with this db, token file and (when given) log file.
std::string write_config(const predictd::test::TempDir& dir, const std::string& name, const std::string& db,
                         const std::string& token_file, const std::string& log_file = "") {
  const std::string path = dir.file(name);
  predictd::test::write_file(path, R"({"db": {"path": ")" + db + R"("}, "api": {"token_file": ")" + token_file +
                                       R"("}, "log": {"file": )" +
                                       (log_file.empty() ? "null" : "\"" + log_file + "\"") + "}}");
  return path;
}
}  // namespace

TEST(Daemon, CheckConfig) {
  predictd::test::TempDir dir;
  predictd::test::write_file(dir.file("token"), "r8_check\n");
  predictd::test::write_file(dir.file("ok.json"), R"({"db": {"path": ")" + dir.file("x.db") +
                                                      R"("}, /* ok */ "api": {"token_file": ")" + dir.file("token") +
                                                      R"("}})");
  auto [code, out] = run("--config " + dir.file("ok.json") + " --check-config");
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "predictd: " + dir.file("ok.json") + ": ok\n");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.db")));  // checking creates nothing
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.db.lock")));
  predictd::test::write_file(dir.file("bad.json"), R"({"limits": {"max_in_flight": -1}})");
  std::tie(code, out) = run("--config " + dir.file("bad.json") + " --check-config");
  EXPECT_EQ(code, 78);
  EXPECT_EQ(out, "predictd: " + dir.file("bad.json") + ": limits.max_in_flight: must be between 1 and 1000000\n");
  std::tie(code, out) = run("--bogus");
  EXPECT_EQ(code, 64);
  std::tie(code, out) = run("--version");
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out.rfind("predictd ", 0), 0u);
}

// --check-config refuses what a start would refuse, with the same message and
// exit code, and a start refuses it before opening anything.
TEST(Daemon, CheckConfigAndStartRefuseAMissingTokenOrAnUnusableDbOrLogPathAlike) {
  predictd::test::TempDir dir;
  const std::string token = dir.file("token");
  predictd::test::write_file(token, "r8_check\n");
  predictd::test::write_file(dir.file("plain"), "not a directory");
  predictd::test::write_file(dir.file("notes.txt"), "not a database, just notes\n");
  const std::string none = dir.file("none");
  const std::string plain = dir.file("plain");
  const std::string notes = dir.file("notes.txt");
  const struct {
    std::string config, message;
  } cases[] = {
      {write_config(dir, "token.json", dir.file("j.db"), dir.file("missing_token")),
       "api.token_file: cannot read " + dir.file("missing_token") + ": No such file or directory"},
      {write_config(dir, "nodir.json", none + "/j.db", token),
       "db.path: " + none + "/j.db: directory " + none + " does not exist"},
      {write_config(dir, "filedir.json", plain + "/j.db", token),
       "db.path: " + plain + "/j.db: " + plain + " is not a directory"},
      {write_config(dir, "dir.json", dir.path().string(), token),
       "db.path: " + dir.path().string() + ": is a directory, not a database file"},
      {write_config(dir, "notdb.json", notes, token), "db.path: " + notes + ": not a SQLite database"},
      {write_config(dir, "log.json", dir.file("j.db"), token, none + "/predictd.log"),
       "log.file: " + none + "/predictd.log: directory " + none + " does not exist"},
  };
  for (const auto& c : cases) {
    auto [code, out] = run("--config " + c.config + " --check-config");
    EXPECT_EQ(code, 78) << c.config;
    EXPECT_EQ(out, "predictd: " + c.message + "\n");
    std::tie(code, out) = run("--config " + c.config);
    EXPECT_EQ(code, 78) << c.config;
    EXPECT_EQ(out, "predictd: " + c.message + "\n");
  }
  // Nothing was created on the way: no database, lock file or log.
  EXPECT_FALSE(std::filesystem::exists(dir.file("j.db")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("j.db.lock")));
  EXPECT_FALSE(std::filesystem::exists(none));
  EXPECT_EQ(predictd::test::read_file(notes), "not a database, just notes\n");
}

TEST(Daemon, CheckConfigRefusesADbDirectoryItCannotWriteTo) {
  if (::geteuid() == 0) GTEST_SKIP() << "root may write anywhere";
  predictd::test::TempDir dir;
  const std::string token = dir.file("token");
  predictd::test::write_file(token, "r8_check\n");
  const std::string locked = dir.file("locked");
  std::filesystem::create_directory(locked);
  std::filesystem::permissions(locked, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  const std::string config = write_config(dir, "c.json", locked + "/j.db", token);
  auto [code, out] = run("--config " + config + " --check-config");
  EXPECT_EQ(code, 78);
  EXPECT_EQ(out, "predictd: db.path: " + locked + "/j.db: cannot create files in " + locked + ": Permission denied\n");
  std::filesystem::permissions(locked, std::filesystem::perms::owner_all);
}

TEST(Daemon, StrayArgumentsAreRefused) {
  predictd::test::TempDir dir;
  predictd::test::write_file(dir.file("token"), "r8_check\n");
  const std::string config = write_config(dir, "c.json", dir.file("j.db"), dir.file("token"));
  ASSERT_EQ(run("--config " + config + " --check-config").first, 0);
  auto [code, out] = run("--config " + config + " extra --check-config");
  EXPECT_EQ(code, 64);
  EXPECT_TRUE(out.starts_with("predictd: unexpected argument \"extra\" (predictd takes only options)\nUsage: "))
      << out;
  std::tie(code, out) = run(config);  // the file without --config
  EXPECT_EQ(code, 64);
  EXPECT_TRUE(out.starts_with("predictd: unexpected argument \"" + config + "\"")) << out;
  EXPECT_FALSE(std::filesystem::exists(dir.file("j.db")));
}

TEST(Daemon, SecondInstanceExits75AndTokenNeverLogged) {
  predictd::test::TempDir dir;
  const std::string token = "r8_do_not_log_me_123";
  predictd::test::write_file(dir.file("token"), token);
  predictd::test::write_file(dir.file("c.json"), R"({"db": {"path": ")" + dir.file("j.db") +
                                                     R"("}, "api": {"token_file": ")" + dir.file("token") +
                                                     R"(", "base_url": "https://127.0.0.1:9"}, "log": {"level": "debug"}})");
  const std::string log = dir.file("first.log");
  pid_t first = ::fork();
  if (first == 0) {
    std::freopen(log.c_str(), "w", stderr);
    ::execl(kPredictd.c_str(), "predictd", "--config", dir.file("c.json").c_str(), nullptr);
    ::_exit(127);
  }
  ASSERT_TRUE(predictd::test::wait_until([&] {
    return std::filesystem::exists(log) && predictd::test::read_file(log).find("startup") != std::string::npos;
  }));
  auto [code, out] = run("--config " + dir.file("c.json"));
  EXPECT_EQ(code, 75);
  EXPECT_NE(out.find("another predictd is running on " + dir.file("j.db")), std::string::npos) << out;
  ::kill(first, SIGTERM);
  int status = 0;
  ::waitpid(first, &status, 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string text = predictd::test::read_file(log);
  EXPECT_NE(text.find("shutdown"), std::string::npos);
  EXPECT_EQ(text.find(token), std::string::npos);
}
