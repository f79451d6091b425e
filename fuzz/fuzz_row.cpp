// libFuzzer target: the checks a claimed row goes through (lib/row_check) and
// the create request built from a row that passes them; plus not_before,
// whose readiness SQLite's julianday() decides while the engine and
// predictctl use parse_utc: the two must agree on what parse_utc accepts.
//
// Input: five lines "model\nversion\ntimeout_s\nnot_before\ninput", the last
// taking the rest. An empty line is NULL, a lone "=" the empty string.
#include <sqlite3.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "config.h"
#include "replicate.h"
#include "row_check.h"
#include "timefmt.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

std::string_view take_line(std::string_view& s) {
  const auto nl = s.find('\n');
  const std::string_view line = s.substr(0, nl);
  s.remove_prefix(nl == std::string_view::npos ? s.size() : nl + 1);
  return line;
}

std::optional<std::string> field(std::string_view line) {
  if (line.empty()) return std::nullopt;
  if (line == "=") return std::string();
  return std::string(line);
}

// julianday(s) in milliseconds since the Unix epoch, nullopt when SQLite rejects s.
std::optional<int64_t> sqlite_ms(const std::string& s) {
  static sqlite3* db = [] {
    sqlite3* d = nullptr;
    check(sqlite3_open(":memory:", &d) == SQLITE_OK);
    return d;
  }();
  static sqlite3_stmt* st = [] {
    sqlite3_stmt* q = nullptr;
    check(sqlite3_prepare_v2(db, "SELECT CAST(round((julianday(?1) - 2440587.5) * 86400000.0) AS INTEGER)", -1, &q,
                             nullptr) == SQLITE_OK);
    return q;
  }();
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  check(sqlite3_step(st) == SQLITE_ROW);
  if (sqlite3_column_type(st, 0) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(st, 0);
}

const predictd::Config& config() {
  static const predictd::Config c = [] {
    predictd::Config x;
    x.jobs.max_input_bytes = 2048;
    return x;
  }();
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  predictd::JobRow row;
  row.id = 1;
  row.model = field(take_line(s));
  row.version = field(take_line(s));
  const std::string_view timeout = take_line(s);
  int64_t t = 0;
  if (auto [p, ec] = std::from_chars(timeout.data(), timeout.data() + timeout.size(), t);
      ec == std::errc() && p == timeout.data() + timeout.size())
    row.timeout_s = t;
  row.not_before = field(take_line(s));
  row.input = std::string(s);

  const auto err = predictd::check_row(row, config());
  const predictd::ModelEntry* e = predictd::resolve_model(row, config().models);
  if (err) {
    check(!err->empty());
  } else {
    check(e != nullptr);
    check(!row.timeout_s || (*row.timeout_s >= 1 && *row.timeout_s <= predictd::kMaxTimeoutS));
    // The create request carries the row's input byte for byte and the
    // catalog's version. (Compared as text: Boost.JSON 1.81 reads 0e9999 as
    // NaN, which equals nothing.)
    const auto req = predictd::make_create_request(e->name, e->version.value_or(""), row.input);
    const std::string head =
        e->version ? "{\"version\":" + boost::json::serialize(boost::json::string_view(*e->version)) + ",\"input\":"
                   : std::string("{\"input\":");
    check(req.body == head + row.input + "}");
    boost::json::error_code ec;
    const boost::json::value body = boost::json::parse(req.body, ec);
    check(!ec && body.is_object());
    check(body.as_object().size() == (e->version ? 2u : 1u));
    check(predictd::canonical_json(req.body).has_value());
    check(req.path == (e->version ? "/v1/predictions" : "/v1/models/" + e->name + "/predictions"));
  }
  if (!e) check(err.has_value());

  if (row.not_before) {
    if (auto tp = predictd::parse_utc(*row.not_before)) {
      // predictctl inserts what parse_utc accepts: the schema's CHECK
      // (julianday IS NOT NULL) must accept it too, at the same instant.
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp->time_since_epoch()).count();
      const auto sq = sqlite_ms(*row.not_before);
      check(sq.has_value());
      check(*sq - ms <= 1 && ms - *sq <= 1);
      // And the engine re-reads SQLite's normalized form of it.
      check(predictd::parse_utc(predictd::format_utc(*tp)) == std::chrono::floor<std::chrono::milliseconds>(*tp));
    }
  }
  return 0;
}
