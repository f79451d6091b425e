#include "paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace predictd {
namespace {

std::string parent_dir(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// The directory that will hold new files: it exists and accepts them.
std::optional<std::string> dir_problem(const std::string& path) {
  const std::string dir = parent_dir(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return path + ": directory " + dir + " does not exist";
    return path + ": cannot use directory " + dir + ": " + std::strerror(errno);
  }
  if (!S_ISDIR(st.st_mode)) return path + ": " + dir + " is not a directory";
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return path + ": cannot create files in " + dir + ": " + std::strerror(errno);
  return std::nullopt;
}

}  // namespace

std::optional<std::string> db_path_problem(const std::string& path, DbUse use) {
  if (path.empty()) return "the database path is empty";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR) return path + ": " + std::strerror(errno);
    return use == DbUse::write ? dir_problem(path) : path + ": no such file";
  }
  if (S_ISDIR(st.st_mode)) return path + ": is a directory, not a database file";
  if (!S_ISREG(st.st_mode)) return path + ": not a regular file";
  if (::access(path.c_str(), use == DbUse::write ? R_OK | W_OK : R_OK) != 0)
    return path + ": cannot open for " + (use == DbUse::write ? "writing" : "reading") + ": " + std::strerror(errno);
  // SQLite takes an empty file for a new database; anything else starts with its magic string.
  if (st.st_size > 0) {
    static constexpr std::string_view kMagic{"SQLite format 3\0", 16};
    char head[kMagic.size()] = {};
    std::ifstream in(path, std::ios::binary);
    in.read(head, sizeof head);
    if (in.gcount() != static_cast<std::streamsize>(sizeof head) || std::string_view(head, sizeof head) != kMagic)
      return path + ": not a SQLite database";
  }
  if (use == DbUse::write) return dir_problem(path);
  return std::nullopt;
}

std::optional<std::string> log_file_problem(const std::string& path) {
  if (path.empty()) return "the log file path is empty";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR) return path + ": " + std::strerror(errno);
    return dir_problem(path);
  }
  if (S_ISDIR(st.st_mode)) return path + ": is a directory";
  if (::access(path.c_str(), W_OK) != 0) return path + ": cannot open for writing: " + std::strerror(errno);
  // Rotation renames the file and creates a new one beside it.
  return dir_problem(path);
}

}  // namespace predictd
