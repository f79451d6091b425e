// The numbered schema/*.sql files, embedded at build time.
#pragma once

#include <span>
#include <string_view>

namespace predictd {

struct SchemaFile {
  int version;            // the file's number: 1 for 001_init.sql
  std::string_view name;  // "001_init.sql"
  std::string_view sql;
};

// In ascending version order.
std::span<const SchemaFile> schema_files();

}  // namespace predictd
