#include "replicate.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

namespace predictd {
namespace json = boost::json;

namespace {

std::optional<RemoteStatus> parse_remote_status(std::string_view s) {
  static constexpr std::pair<std::string_view, RemoteStatus> kNames[] = {
      {"starting", RemoteStatus::starting},   {"processing", RemoteStatus::processing},
      {"succeeded", RemoteStatus::succeeded}, {"failed", RemoteStatus::failed},
      {"canceled", RemoteStatus::canceled},   {"aborted", RemoteStatus::aborted},
  };
  for (const auto& [name, st] : kNames)
    if (name == s) return st;
  return std::nullopt;
}

// Canonical JSON straight from the text, through Boost.JSON's SAX parser:
// keys sorted at every depth, no spaces, numbers read exactly. Boost.JSON
// 1.81's own number parsing can be a few ulps off (44446404804404446404…e0
// and its shortest echo 4.4446404804404447e+52 parsed to different doubles),
// and the row's input must match the API's echo of it when reconciling.
// A double is correctly rounded by std::from_chars and written back shortest
// (so 1.0 and 1 agree); out-of-range numbers clamp to the largest double.
// Also keeps the canonical text of the `input` object of a prediction: the
// root's (capture_depth 1) or each list item's (3, under `results`).
class Canonicalizer final {
 public:
  static constexpr std::size_t max_object_size = -1, max_array_size = -1, max_key_size = -1, max_string_size = -1;

  explicit Canonicalizer(int capture_depth) : capture_depth_(capture_depth) {}
  std::string result;
  std::vector<std::pair<std::size_t, std::string>> inputs;  // (results index or 0, canonical input object)

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) { return open(true); }
  bool on_object_end(std::size_t, json::error_code&) {
    Frame& f = frames_.back();
    // Stable, so that a duplicate key keeps its last value, as Boost.JSON does.
    std::stable_sort(f.members.begin(), f.members.end(), [](auto& a, auto& b) { return a.first < b.first; });
    std::string out = "{";
    for (std::size_t i = 0; i < f.members.size(); ++i) {
      if (i + 1 < f.members.size() && f.members[i].first == f.members[i + 1].first) continue;
      if (out.size() > 1) out += ',';
      out += json::serialize(json::string_view(f.members[i].first));
      out += ':';
      out += f.members[i].second;
    }
    out += '}';
    return close(std::move(out));
  }
  bool on_array_begin(json::error_code&) { return open(false); }
  bool on_array_end(std::size_t, json::error_code&) {
    std::string out = "[";
    for (std::size_t i = 0; i < frames_.back().items.size(); ++i) {
      if (i) out += ',';
      out += frames_.back().items[i];
    }
    out += ']';
    return close(std::move(out));
  }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    part_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    part_.append(s.data(), s.size());
    frames_.back().key = std::move(part_);
    part_.clear();
    return true;
  }
  bool on_string_part(json::string_view s, std::size_t, json::error_code&) { return on_key_part(s, 0, ignored_); }
  bool on_string(json::string_view s, std::size_t, json::error_code&) {
    part_.append(s.data(), s.size());
    std::string text = json::serialize(json::string_view(part_));
    part_.clear();
    return value(std::move(text));
  }
  bool on_number_part(json::string_view s, json::error_code&) { return on_key_part(s, 0, ignored_); }
  bool on_int64(int64_t n, json::string_view, json::error_code&) { return number(std::to_string(n)); }
  bool on_uint64(uint64_t n, json::string_view, json::error_code&) { return number(std::to_string(n)); }
  bool on_double(double approx, json::string_view s, json::error_code&) {
    part_.append(s.data(), s.size());
    double d = 0;
    auto [ptr, ec] = std::from_chars(part_.data(), part_.data() + part_.size(), d);
    if (ec == std::errc::result_out_of_range)  // overflow, or underflow past the smallest denormal
      d = std::fabs(approx) >= 1 ? std::copysign(std::numeric_limits<double>::max(), approx) : std::copysign(0.0, approx);
    else if (ec != std::errc() || !std::isfinite(d))
      d = std::clamp(approx, -std::numeric_limits<double>::max(), std::numeric_limits<double>::max());
    if (d == 0) d = 0;  // "-0" would read back as the integer 0
    char buf[32];
    auto [end, ec2] = std::to_chars(buf, buf + sizeof buf, d);
    return number(std::string(buf, end));
  }
  bool on_bool(bool b, json::error_code&) { return value(b ? "true" : "false"); }
  bool on_null(json::error_code&) { return value("null"); }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  struct Frame {
    bool object = false;
    std::string key;
    std::vector<std::pair<std::string, std::string>> members;
    std::vector<std::string> items;
  };
  bool open(bool object) {
    // A duplicate `results` replaces the first, as in Boost.JSON: so do its inputs.
    if (!object && frames_.size() == 1 && frames_[0].key == "results") inputs.clear();
    frames_.emplace_back();
    frames_.back().object = object;
    return true;
  }
  bool close(std::string text) {
    frames_.pop_back();
    return value(std::move(text));
  }
  bool number(std::string text) {
    part_.clear();
    return value(std::move(text));
  }
  bool value(std::string text) {
    if (frames_.empty()) {
      result = std::move(text);
      return true;
    }
    Frame& f = frames_.back();
    if (!f.object) {
      f.items.push_back(std::move(text));
      return true;
    }
    const int depth = static_cast<int>(frames_.size());
    if (f.key == "input" && text.starts_with('{') && depth == capture_depth_ &&
        (depth == 1 || (depth == 3 && !frames_[1].object && frames_[0].key == "results")))
      inputs.emplace_back(depth == 1 ? 0 : frames_[1].items.size(), text);
    f.members.emplace_back(std::move(f.key), std::move(text));
    return true;
  }

  int capture_depth_;
  std::vector<Frame> frames_;
  std::string part_;
  json::error_code ignored_;
};

// The last captured input of list item `index` (0 for a single prediction), or "".
std::string captured_input(const Canonicalizer& c, std::size_t index) {
  for (auto it = c.inputs.rbegin(); it != c.inputs.rend(); ++it)
    if (it->first == index) return it->second;
  return {};
}

// nullopt when `text` is not valid JSON (as json::parse decides).
std::optional<Canonicalizer> canonicalize(std::string_view text, int capture_depth) {
  json::basic_parser<Canonicalizer> parser(json::parse_options{}, capture_depth);
  json::error_code ec;
  parser.write_some(false, text.data(), text.size(), ec);
  if (ec) return std::nullopt;
  return std::move(parser.handler());
}

std::optional<double> as_number(const json::value* v) {
  if (!v) return std::nullopt;
  if (v->is_double()) return v->get_double();
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  return std::nullopt;
}

std::optional<std::string> as_string(const json::value* v) {
  if (v && v->is_string()) return std::string(v->get_string());
  return std::nullopt;
}

// Fills `p` from a parsed object; returns an error message on a shape we cannot use.
std::optional<std::string> fill_prediction(const json::object& obj, std::string canonical_input, Prediction& p) {
  const json::value* id = obj.if_contains("id");
  if (!id || !id->is_string() || id->get_string().empty()) return "prediction has no string `id`";
  p.id = std::string(id->get_string());
  const json::value* st = obj.if_contains("status");
  if (!st || !st->is_string()) return "prediction " + p.id + " has no string `status`";
  auto status = parse_remote_status(std::string_view(st->get_string()));
  if (!status) return "prediction " + p.id + " has unknown status \"" + std::string(st->get_string()) + "\"";
  p.status = *status;
  p.model = as_string(obj.if_contains("model"));
  p.version = as_string(obj.if_contains("version"));
  p.created_at = as_string(obj.if_contains("created_at"));
  if (const json::value* err = obj.if_contains("error"); err && !err->is_null())
    p.error = err->is_string() ? std::string(err->get_string()) : json::serialize(*err);
  p.canonical_input = std::move(canonical_input);

  if (const json::value* m = obj.if_contains("metrics"); m && m->is_object()) {
    const auto& mo = m->get_object();
    p.predict_time = as_number(mo.if_contains("predict_time"));
    p.total_time = as_number(mo.if_contains("total_time"));
    if (auto n = as_number(mo.if_contains("image_count")); n && *n >= 0 && *n < 1e6)
      p.image_count = static_cast<int64_t>(*n);
  }

  const json::value* out = obj.if_contains("output");
  if (out && out->is_string()) {
    p.output.emplace_back(out->get_string());
  } else if (out && out->is_array()) {
    for (const auto& e : out->get_array()) {
      if (!e.is_string()) {
        p.output.clear();
        p.output_error = "output array holds a non-string element";
        break;
      }
      p.output.emplace_back(e.get_string());
    }
  } else if (out && !out->is_null()) {
    p.output_error = std::string("output is a ") + std::string(json::to_string(out->kind())) +
                     ", not a string or an array of strings";
  }
  if (p.status == RemoteStatus::succeeded && !p.output_error && p.output.empty())
    p.output_error = "succeeded without any output";
  return std::nullopt;
}

// `sp` holds the parsed tree; a monotonic resource spares a malloc per
// string and container (the tree must not outlive it).
std::optional<json::value> parse_json(std::string_view body, std::string& why, json::storage_ptr sp = {}) {
  json::error_code ec;
  json::value v = json::parse(body, ec, std::move(sp));
  if (ec) {
    why = "response is not valid JSON (" + ec.message() + ")";
    return std::nullopt;
  }
  return v;
}

}  // namespace

std::string_view to_string(RemoteStatus s) {
  switch (s) {
    case RemoteStatus::starting: return "starting";
    case RemoteStatus::processing: return "processing";
    case RemoteStatus::succeeded: return "succeeded";
    case RemoteStatus::failed: return "failed";
    case RemoteStatus::canceled: return "canceled";
    case RemoteStatus::aborted: return "aborted";
  }
  return "?";
}

bool is_terminal(RemoteStatus s) {
  return s != RemoteStatus::starting && s != RemoteStatus::processing;
}

ParsedPrediction parse_prediction(std::string_view body, bool with_input) {
  std::string why;
  unsigned char scratch[4096];
  json::monotonic_resource tree(scratch, sizeof scratch);
  auto v = parse_json(body, why, &tree);
  if (!v) return why;
  if (!v->is_object()) return std::string("response is not a JSON object");
  std::string input;
  if (with_input)
    if (const auto canon = canonicalize(body, 1)) input = captured_input(*canon, 0);
  Prediction p;
  if (auto err = fill_prediction(v->get_object(), std::move(input), p)) return *err;
  return p;
}

std::variant<PredictionPage, std::string> parse_prediction_page(std::string_view body) {
  std::string why;
  auto v = parse_json(body, why);
  if (!v) return why;
  if (!v->is_object()) return std::string("list response is not a JSON object");
  const json::value* results = v->get_object().if_contains("results");
  if (!results || !results->is_array()) return std::string("list response has no `results` array");
  const auto canon = canonicalize(body, 3);
  PredictionPage page;
  for (std::size_t i = 0; i < results->get_array().size(); ++i) {
    const json::value& item = results->get_array()[i];
    if (!item.is_object()) continue;
    Prediction p;
    if (!fill_prediction(item.get_object(), canon ? captured_input(*canon, i) : "", p)) page.results.push_back(std::move(p));
  }
  page.next = as_string(v->get_object().if_contains("next"));
  return page;
}

std::optional<std::string> canonical_json(std::string_view text) {
  auto c = canonicalize(text, 0);
  if (!c) return std::nullopt;
  return std::move(c->result);
}

std::optional<std::string> check_input_object(std::string_view input) {
  json::error_code ec;
  json::value v = json::parse(input, ec);
  if (ec) return "input is not valid JSON (" + ec.message() + ")";
  if (!v.is_object()) return std::string("input must be a JSON object, got ") + std::string(json::to_string(v.kind()));
  return std::nullopt;
}

CreateRequest make_create_request(std::string_view model, std::string_view version, std::string_view input) {
  // The row's input is spliced in verbatim (it was checked to be a JSON
  // object), so it reaches the API byte for byte as the feeder wrote it.
  CreateRequest r;
  if (!version.empty()) {
    r.path = "/v1/predictions";
    r.body = "{\"version\":" + json::serialize(json::string_view(version.data(), version.size())) +
             ",\"input\":" + std::string(input) + "}";
  } else {
    r.path = "/v1/models/" + std::string(model) + "/predictions";
    r.body = "{\"input\":" + std::string(input) + "}";
  }
  return r;
}

std::string error_message(std::string_view body, int status) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    const auto& o = v.get_object();
    for (const char* key : {"detail", "error", "title", "message"}) {
      if (auto s = as_string(o.if_contains(key)); s && !s->empty()) return *s;
    }
  }
  std::string excerpt;
  for (char c : body.substr(0, 200)) excerpt += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  if (excerpt.empty()) return "HTTP " + std::to_string(status) + " with an empty body";
  return "HTTP " + std::to_string(status) + ": " + excerpt;
}

std::optional<double> throttle_delay_s(std::string_view body) {
  // "available in <digits>[.<digits>][ ]s", any case, in the first 4 KiB.
  // Scanned by hand: std::stod threw on a digit run too long for a double.
  const std::string_view head = body.substr(0, 4096);
  constexpr std::string_view kPhrase = "available in ";
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  auto digits = [&](std::size_t i) {
    while (i < head.size() && head[i] >= '0' && head[i] <= '9') ++i;
    return i;
  };
  for (std::size_t at = 0; at + kPhrase.size() <= head.size(); ++at) {
    if (!std::equal(kPhrase.begin(), kPhrase.end(), head.begin() + at, [&](char p, char c) { return p == lower(c); }))
      continue;
    const std::size_t start = at + kPhrase.size();
    std::size_t end = digits(start);
    if (end == start) continue;
    if (end + 1 < head.size() && head[end] == '.' && digits(end + 1) > end + 1) end = digits(end + 1);
    std::size_t unit = end;
    if (unit < head.size() && head[unit] == ' ') ++unit;
    if (unit >= head.size() || lower(head[unit]) != 's') continue;
    double d = 0;
    auto [ptr, ec] = std::from_chars(head.data() + start, head.data() + end, d);
    if (ec != std::errc() || !std::isfinite(d)) return std::nullopt;
    return d;
  }
  return std::nullopt;
}

std::optional<double> parse_retry_after(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  long long n = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || ptr != value.data() + value.size() || n < 0) return std::nullopt;
  return static_cast<double>(n);
}

}  // namespace predictd
