#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <regex>
#include <vector>

#include <spdlog/spdlog.h>

#include "config.h"
#include "log.h"
#include "test_util.h"
#include "timefmt.h"

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

// stderr sent to a file, with JOURNAL_STREAM as given (nullptr: unset) and
// logging set up for it, until destroyed.
class StderrCapture {
 public:
  explicit StderrCapture(const char* journal_stream) : path_(dir_.file("stderr")) {
    if (journal_stream)
      ::setenv("JOURNAL_STREAM", journal_stream, 1);
    else
      ::unsetenv("JOURNAL_STREAM");
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
    init_logging(LogSettings{.level = "info"});
  }
  ~StderrCapture() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    ::unsetenv("JOURNAL_STREAM");
    init_logging(LogSettings{});
  }
  std::string text() const { return read_file(path_); }

 private:
  predictd::test::TempDir dir_;
  std::string path_;
  int saved_ = -1;
};

// What init_logging's stderr sink writes for one line logged with
// JOURNAL_STREAM set to `journal_stream` (nullptr: unset).
std::string stderr_line(const char* journal_stream, const std::string& message) {
  StderrCapture capture(journal_stream);
  spdlog::info("{}", message);
  spdlog::default_logger()->flush();
  return capture.text();
}

TEST(Log, JournaldGetsNoTimestampOtherwiseStderrLinesStartWithUtc) {
  // A local time zone 8 hours east of UTC (POSIX form, no tzdata needed):
  // a timestamp in local time would be off by 8 hours.
  const char* old_tz = std::getenv("TZ");
  const std::string saved_tz = old_tz ? old_tz : "";
  ::setenv("TZ", "XST-8", 1);
  ::tzset();

  // systemd sets JOURNAL_STREAM=<device>:<inode> when stderr goes to the journal, which stamps each line.
  EXPECT_EQ(stderr_line("8:12345", "startup probe=journal"), "info startup probe=journal\n");

  const auto before = std::chrono::system_clock::now();
  const std::string line = stderr_line(nullptr, "startup probe=plain");
  const auto after = std::chrono::system_clock::now();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(line, m, std::regex(R"((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) info startup probe=plain\n)")))
      << line;
  const auto stamped = predictd::parse_utc(m[1].str());
  ASSERT_TRUE(stamped) << m[1];
  // Millisecond resolution: truncated, so up to 1 ms before `before`.
  EXPECT_GE(*stamped, before - std::chrono::milliseconds(1)) << line;
  EXPECT_LE(*stamped, after) << line;

  if (old_tz)
    ::setenv("TZ", saved_tz.c_str(), 1);
  else
    ::unsetenv("TZ");
  ::tzset();
}

TEST(Log, DeferredStderrIsWrittenOncePerPostedFlushWarningsAtOnce) {
  StderrCapture capture("8:1");  // journald form, no timestamps: lines compare exactly
  std::vector<std::function<void()>> posted;
  defer_log_flush([&](std::function<void()> f) { posted.push_back(std::move(f)); });

  spdlog::info("job_submitted job=1");
  spdlog::info("job_submitted job=2");
  EXPECT_EQ(capture.text(), "");  // waiting for the loop's turn to end
  EXPECT_EQ(posted.size(), 1u);   // one flush for the whole batch
  posted.front()();
  EXPECT_EQ(capture.text(), "info job_submitted job=1\ninfo job_submitted job=2\n");

  spdlog::info("job_succeeded job=1");
  spdlog::warn("api_error op=create");  // warn and above: written at once, with what came before
  EXPECT_EQ(capture.text(),
            "info job_submitted job=1\ninfo job_submitted job=2\ninfo job_succeeded job=1\nwarning api_error op=create\n");
  spdlog::info("job_succeeded job=2");
  defer_log_flush(nullptr);  // ending the deferral writes what is left
  EXPECT_EQ(capture.text().substr(capture.text().rfind("info")), "info job_succeeded job=2\n");
  spdlog::info("job_succeeded job=3");  // no deferral: at once
  EXPECT_NE(capture.text().find("info job_succeeded job=3\n"), std::string::npos);

  for (auto& f : posted) f();  // a late flush after the deferral ended is harmless
}

TEST(Log, QuoteOnlyWhenNeeded) {
  EXPECT_EQ(log_quote("plain"), "plain");
  EXPECT_EQ(log_quote(""), "\"\"");
  EXPECT_EQ(log_quote("two words"), "\"two words\"");
  EXPECT_EQ(log_quote("a=\"b\"\nc"), "\"a=\\\"b\\\"\\nc\"");
}

}  // namespace
