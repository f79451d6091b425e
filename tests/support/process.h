// Child processes for tests that drive the real binaries: started, signalled
// (SIGTERM, SIGHUP, SIGKILL), and reaped.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
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

// The exit code of a wait status from Process::wait, or -1 (no exit, or killed by a signal).
int exit_code(const std::optional<int>& status);

// predictd-sim started from the build tree on 127.0.0.1:0; `port` read from what it printed.
struct SimProcess {
  std::unique_ptr<Process> process;
  int port = 0;
};
SimProcess start_sim(const std::string& dir, const std::vector<std::string>& args);

}  // namespace predictd::test
