#include <cstdio>
#include <exception>
#include <iostream>

#include "ctl.h"

int main(int argc, char** argv) {
  try {
    return predictd::run_ctl(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "predictctl: fatal: %s\n", e.what());
  }
  return 1;
}
