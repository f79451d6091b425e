# Writes OUT: a C++ file defining predictd::schema_files(), the numbered
# schema/*.sql files in order, each as {version, sql}.
file(GLOB files ${SCHEMA_DIR}/*.sql)
list(SORT files)
set(body "")
foreach(f ${files})
  get_filename_component(name ${f} NAME)
  string(REGEX MATCH "^[0-9]+" num ${name})
  math(EXPR num "${num}")
  file(READ ${f} sql)
  string(APPEND body "    {${num}, \"${name}\", R\"predictd_sql(${sql})predictd_sql\"},\n")
endforeach()
if(body STREQUAL "")
  set(table "  return {};")
else()
  set(table "  static const SchemaFile kFiles[] = {\n${body}  };\n  return kFiles;")
endif()
file(WRITE ${OUT}.tmp "// Generated from schema/*.sql by cmake/embed_schema.cmake. Do not edit.
#include \"schema.h\"

namespace predictd {

std::span<const SchemaFile> schema_files() {
${table}
}

}  // namespace predictd
")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
