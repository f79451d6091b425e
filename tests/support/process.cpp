#include "process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <regex>
#include <stdexcept>
#include <thread>

#include "test_util.h"

namespace predictd::test {

Process::Process(std::vector<std::string> argv, std::vector<std::string> env, const std::string& stdout_file,
                 const std::string& stderr_file) {
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int out = ::open(stdout_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int err = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (out < 0 || err < 0) ::_exit(126);
    ::dup2(out, 1);
    ::dup2(err, 2);
    for (auto& e : env) ::putenv(e.data());
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
}

Process::~Process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds(10));
  }
}

void Process::signal(int sig) const { ::kill(pid_, sig); }

bool Process::running() {
  if (status_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return !status_;
}

std::optional<int> Process::wait(std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (running() && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return status_;
}

SimProcess start_sim(const std::string& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv{std::string(PREDICTD_BINARY_DIR) + "/predictd-sim", "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = dir + "/sim.out";
  SimProcess sim;
  sim.process = std::make_unique<Process>(argv, std::vector<std::string>{}, out, dir + "/sim.err");
  const std::regex listening(R"(listening on [0-9.]+:([0-9]+))");
  if (!wait_until([&] {
        std::smatch m;
        const std::string text = std::filesystem::exists(out) ? read_file(out) : "";
        if (!std::regex_search(text, m, listening)) return false;
        sim.port = std::stoi(m[1]);
        return true;
      }))
    throw std::runtime_error("predictd-sim did not start: " + read_file(dir + "/sim.err"));
  return sim;
}

}  // namespace predictd::test
