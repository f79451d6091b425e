// Checks of the files predictd and predictctl are about to open, made before
// opening them: a wrong path is then one clear sentence naming it, instead of
// an open(2) or SQLite failure later (or a file created where none should be).
#pragma once

#include <optional>
#include <string>

namespace predictd {

enum class DbUse {
  read,   // an existing database is read (and its schema checked)
  write,  // the database is written, or created when missing
};

// Why SQLite could not use a database at `path` as `use` says, as
// "<path>: <reason>", or nullopt. Creates nothing. A database in WAL mode
// needs its directory writable whenever it is written: the -wal and -shm files
// (and predictd's lock file) are created beside it.
std::optional<std::string> db_path_problem(const std::string& path, DbUse use);

// Why a log file could not be opened for appending at `path`, or nullopt. Creates nothing.
std::optional<std::string> log_file_problem(const std::string& path);

}  // namespace predictd
