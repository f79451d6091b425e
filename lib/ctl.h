// predictctl (SPEC §5) as a function, so tests run it in-process.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace predictd {

// `args` excludes argv[0]. Returns the exit code: 0 ok; 1 when `wait` ends on
// anything but succeeded, when `cancel` finds the job already finished, or on
// a database error; 64 usage, unknown id or missing db; 78 config error.
int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace predictd
