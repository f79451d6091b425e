#include "process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>
#include <stdexcept>
#include <thread>

#include "test_util.h"

extern char** environ;

namespace predictd::test {

Process::Process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                 const std::string& output_file) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  env_strings.insert(env_strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  // fork + exec rather than posix_spawn: the child asks for SIGKILL when the
  // test dies (a global deadline's _Exit), so no daemon outlives its test.
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    // Only async-signal-safe calls between fork and exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int fd = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) ::_exit(127);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  const int rc = pid_ < 0 ? errno : 0;
  if (rc != 0) throw std::runtime_error("fork " + argv[0] + ": " + std::strerror(rc));
}

Process::~Process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds(10));
  }
}

bool Process::running() {
  if (status_) return false;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) status_ = st;
  return !status_;
}

void Process::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

std::optional<int> Process::wait(std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (running()) {
    if (std::chrono::steady_clock::now() >= end) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

int exit_code(const std::optional<int>& status) {
  return status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
}

SimProcess start_sim(const std::string& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv{std::string(PREDICTD_BINARY_DIR) + "/predictd-sim", "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = dir + "/sim.out";
  SimProcess sim;
  sim.process = std::make_unique<Process>(argv, std::vector<std::string>{}, out);
  const std::regex listening(R"(listening on [0-9.]+:([0-9]+))");
  if (!wait_until([&] {
        std::smatch m;
        const std::string text = std::filesystem::exists(out) ? read_file(out) : "";
        if (!std::regex_search(text, m, listening)) return false;
        sim.port = std::stoi(m[1]);
        return true;
      }))
    throw std::runtime_error("predictd-sim did not start: " + read_file(out));
  return sim;
}

}  // namespace predictd::test
