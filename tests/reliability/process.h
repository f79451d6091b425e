// Child processes for the soaks: the real predictd binary, started, killed
// with SIGKILL or stopped with SIGTERM, and reaped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace predictd::test {

class Process final {
 public:
  // Starts argv[0] with extra environment entries ("NAME=value"); stdout and
  // stderr are appended to `output_file`.
  Process(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& output_file);
  ~Process();  // SIGKILLs and reaps a child still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // True while the child has not exited (reaps it if it has).
  bool running();
  void signal(int sig);
  // Waits up to `deadline` for the child to end; its wait status, or nullopt.
  std::optional<int> wait(std::chrono::milliseconds deadline);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace predictd::test
