// A child process for tests that drive the real binaries (signals, kill -9, notify).
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
  // Starts argv[0] with argv; `env` entries (NAME=value) are added to the
  // environment; stdout and stderr go to the given files (appended).
  Process(std::vector<std::string> argv, std::vector<std::string> env, const std::string& stdout_file,
          const std::string& stderr_file);
  ~Process();  // SIGKILL and reap when still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const;
  // The exit code (or 128 + signal) once it ended within `deadline`.
  std::optional<int> wait(std::chrono::milliseconds deadline);
  bool running();

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// predictd-sim started from the build tree on 127.0.0.1:0; `port` read from its stdout.
struct SimProcess {
  std::unique_ptr<Process> process;
  int port = 0;
};
SimProcess start_sim(const std::string& dir, const std::vector<std::string>& args);

}  // namespace predictd::test
