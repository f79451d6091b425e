// Small helpers shared by the tests.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace predictd::test {

// A fresh directory under the system temp dir, removed on destruction.
class TempDir final {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Polls cond every few milliseconds until it holds or the deadline passes.
bool wait_until(const std::function<bool()>& cond,
                std::chrono::milliseconds deadline = std::chrono::seconds(20));

std::string read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::string& content);

}  // namespace predictd::test
