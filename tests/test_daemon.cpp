#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "test_util.h"

namespace {
const std::string kPredictd = std::string(PREDICTD_BINARY_DIR) + "/predictd";

// Runs predictd with `args`; returns the exit code and what it printed.
std::pair<int, std::string> run(const std::string& args) {
  std::string cmd = kPredictd + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  int status = ::pclose(p);
  return {WEXITSTATUS(status), out};
}
}  // namespace

TEST(Daemon, CheckConfig) {
  predictd::test::TempDir dir;
  predictd::test::write_file(dir.file("ok.json"), R"({"db": {"path": "/tmp/x.db"}, /* ok */ })");
  auto [code, out] = run("--config " + dir.file("ok.json") + " --check-config");
  EXPECT_EQ(code, 0) << out;
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
