#include <gtest/gtest.h>

#include <filesystem>

#include <spdlog/spdlog.h>

#include "config.h"
#include "log.h"
#include "test_util.h"

namespace {
using namespace predictd;
using predictd::test::read_file;

TEST(Log, FileRotatesBySizeAndNoLineCarriesASecret) {
  predictd::test::TempDir dir;
  const std::string file = dir.file("predictd.log");
  init_logging(LogSettings{.level = "info", .file = file}, LogFileLimits{.max_bytes = 4096, .max_files = 2});
  redact_in_logs("r8_secret_token");
  for (int i = 0; i < 200; ++i) spdlog::info("api_error job={} header=\"Bearer r8_secret_token\"", i);
  spdlog::default_logger()->flush();
  // spdlog's names: predictd.log → predictd.1.log → predictd.2.log.
  ASSERT_TRUE(std::filesystem::exists(dir.file("predictd.1.log")));
  ASSERT_TRUE(std::filesystem::exists(dir.file("predictd.2.log")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("predictd.3.log")));  // max_files old files kept
  for (const auto& f : {file, dir.file("predictd.1.log"), dir.file("predictd.2.log")}) {
    EXPECT_LE(std::filesystem::file_size(f), 4096u);
    const std::string text = read_file(f);
    EXPECT_EQ(text.find("r8_secret_token"), std::string::npos);
    EXPECT_NE(text.find("Bearer [redacted]"), std::string::npos);
  }
  EXPECT_NE(read_file(file).find("api_error job=199 "), std::string::npos);
  init_logging(LogSettings{});
}

TEST(Log, ReopenAfterTheFileWasMovedAndReinitKeepsSecrets) {
  predictd::test::TempDir dir;
  const std::string file = dir.file("predictd.log");
  init_logging(LogSettings{.level = "info", .file = file});
  redact_in_logs("r8_other_secret");
  spdlog::info("startup one");
  std::filesystem::rename(file, file + ".moved");
  reopen_log_file();
  spdlog::info("after reopen r8_other_secret");
  init_logging(LogSettings{.level = "warn", .file = file});  // SIGHUP with a new level
  spdlog::info("hidden at warn");
  spdlog::warn("shown at warn r8_other_secret");
  spdlog::default_logger()->flush();
  EXPECT_NE(read_file(file + ".moved").find("startup one"), std::string::npos);
  const std::string text = read_file(file);
  EXPECT_NE(text.find("after reopen [redacted]"), std::string::npos);
  EXPECT_NE(text.find("shown at warn [redacted]"), std::string::npos);
  EXPECT_EQ(text.find("hidden at warn"), std::string::npos);
  EXPECT_THROW(init_logging(LogSettings{.level = "loud"}), std::runtime_error);
  predictd::test::write_file(dir.file("plain"), "");
  EXPECT_THROW(init_logging(LogSettings{.level = "info", .file = dir.file("plain/x.log")}), std::exception);
  spdlog::warn("still logging r8_other_secret");  // the previous logger stayed
  spdlog::default_logger()->flush();
  EXPECT_NE(read_file(file).find("still logging [redacted]"), std::string::npos);
  init_logging(LogSettings{});
}

TEST(Log, QuoteOnlyWhenNeeded) {
  EXPECT_EQ(log_quote("plain"), "plain");
  EXPECT_EQ(log_quote(""), "\"\"");
  EXPECT_EQ(log_quote("two words"), "\"two words\"");
  EXPECT_EQ(log_quote("a=\"b\"\nc"), "\"a=\\\"b\\\"\\nc\"");
}

}  // namespace
