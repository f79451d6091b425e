// predictctl (SPEC §5) as a function, so tests run it in-process.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace predictd {

// `args` excludes argv[0]. Returns the exit code: 0 ok, 1 (wait: not
// succeeded), 64 usage or unknown id or missing db, 78 config error.
int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace predictd
