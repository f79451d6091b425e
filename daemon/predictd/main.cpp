#include <cstdio>
#include <exception>

#include "daemon.h"

int main(int argc, char** argv) {
  try {
    return predictd::run_daemon(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "predictd: fatal: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "predictd: fatal: unknown exception\n");
  }
  return 1;
}
