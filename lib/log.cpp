#include "log.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <vector>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include "config.h"

namespace predictd {
namespace {

// stderr, written when flushed (or when 32 KiB are waiting).
class StderrSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  ~StderrSink() override { flush_(); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    pending_.append(line.data(), line.size());
    if (pending_.size() >= 32 * 1024) flush_();
  }
  void flush_() override {
    if (pending_.empty()) return;
    std::fwrite(pending_.data(), 1, pending_.size(), stderr);
    std::fflush(stderr);
    pending_.clear();
  }

 private:
  std::string pending_;
};

class RedactingSink;
std::shared_ptr<RedactingSink>& redactor();

std::function<void(std::function<void()>)>& deferral() {
  static std::function<void(std::function<void()>)> post;
  return post;
}

// Rewrites each message with secrets replaced before handing it to the real
// sinks. targets[0] is stderr: flushed after each line, or once per turn of
// the event loop when a deferral is installed.
class RedactingSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  std::vector<std::string> secrets;
  std::vector<spdlog::sink_ptr> targets;
  std::optional<std::string> file_path;
  LogFileLimits file_limits;
  bool flush_posted = false;

  void flush_stderr() {
    flush_posted = false;
    targets.front()->flush();
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::string text(msg.payload.data(), msg.payload.size());
    for (const auto& s : secrets) {
      if (s.empty()) continue;
      for (std::size_t pos = text.find(s); pos != std::string::npos; pos = text.find(s, pos))
        text.replace(pos, s.size(), "[redacted]");
    }
    spdlog::details::log_msg copy(msg);
    copy.payload = text;
    for (auto& t : targets)
      if (t->should_log(copy.level)) t->log(copy);
    if (!deferral()) {
      targets.front()->flush();
    } else if (!flush_posted) {
      flush_posted = true;
      deferral()([] {
        if (auto& r = redactor()) r->flush_stderr();
      });
    }
  }
  void flush_() override {
    for (auto& t : targets) t->flush();
  }
};

std::shared_ptr<RedactingSink>& redactor() {
  static std::shared_ptr<RedactingSink> sink;
  return sink;
}

std::unique_ptr<spdlog::formatter> utc_formatter() {
  return std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
}

spdlog::sink_ptr make_file_sink(const std::string& path, const LogFileLimits& limits) {
  auto sink = std::make_shared<spdlog::sinks::rotating_file_sink_st>(path, limits.max_bytes, limits.max_files);
  sink->set_formatter(utc_formatter());
  return sink;
}

}  // namespace

void init_logging(const LogSettings& settings, LogFileLimits limits) {
  auto level = spdlog::level::from_str(settings.level);
  if (level == spdlog::level::off && settings.level != "off")
    throw std::runtime_error("unknown log level \"" + settings.level + "\"");

  auto sink = std::make_shared<RedactingSink>();
  if (auto& old = redactor()) sink->secrets = old->secrets;
  auto err = std::make_shared<StderrSink>();
  // journald stamps each line itself.
  if (std::getenv("JOURNAL_STREAM"))
    err->set_pattern("%l %v");
  else
    err->set_formatter(utc_formatter());
  sink->targets.push_back(err);
  if (settings.file) {
    sink->targets.push_back(make_file_sink(*settings.file, limits));
    sink->file_path = settings.file;
    sink->file_limits = limits;
  }
  if (auto& old = redactor()) old->flush_stderr();
  redactor() = sink;

  auto logger = std::make_shared<spdlog::logger>("predictd", sink);
  logger->set_level(level);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

void defer_log_flush(std::function<void(std::function<void()>)> post) {
  if (!post)
    if (auto& r = redactor()) r->flush_stderr();
  deferral() = std::move(post);
}

void redact_in_logs(const std::string& secret) {
  if (!redactor()) init_logging(LogSettings{});
  redactor()->secrets.push_back(secret);
}

void reopen_log_file() {
  auto& sink = redactor();
  if (!sink || !sink->file_path) return;
  sink->targets.back()->flush();
  sink->targets.back() = make_file_sink(*sink->file_path, sink->file_limits);
}

std::string log_quote(std::string_view value) {
  bool plain = !value.empty();
  for (char c : value)
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\t') plain = false;
  if (plain) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace predictd
