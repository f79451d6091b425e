// GoogleTest main with one global deadline: a hung test fails loudly
// instead of hanging CI. PREDICTD_TEST_DEADLINE_S overrides the default.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int deadline_s = 240;
  if (const char* v = std::getenv("PREDICTD_TEST_DEADLINE_S")) deadline_s = std::atoi(v);
  std::thread([deadline_s] {
    std::this_thread::sleep_for(std::chrono::seconds(deadline_s));
    std::fprintf(stderr, "\nFATAL: global test deadline of %d s exceeded\n", deadline_s);
    std::_Exit(124);
  }).detach();
  return RUN_ALL_TESTS();
}
