#include "replicate.h"

#include <algorithm>
#include <charconv>
#include <regex>

#include <boost/json.hpp>

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

void canonicalize(const json::value& v, std::string& out) {
  switch (v.kind()) {
    case json::kind::object: {
      const auto& obj = v.get_object();
      std::vector<const json::key_value_pair*> items;
      items.reserve(obj.size());
      for (const auto& kv : obj) items.push_back(&kv);
      std::sort(items.begin(), items.end(),
                [](auto* a, auto* b) { return a->key() < b->key(); });
      out += '{';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        out += json::serialize(json::string_view(items[i]->key()));
        out += ':';
        canonicalize(items[i]->value(), out);
      }
      out += '}';
      break;
    }
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out += ',';
        first = false;
        canonicalize(e, out);
      }
      out += ']';
      break;
    }
    default:
      out += json::serialize(v);
  }
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
std::optional<std::string> fill_prediction(const json::object& obj, Prediction& p) {
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
  if (const json::value* in = obj.if_contains("input"); in && in->is_object()) canonicalize(*in, p.canonical_input);

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

std::optional<json::value> parse_json(std::string_view body, std::string& why) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
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

ParsedPrediction parse_prediction(std::string_view body) {
  std::string why;
  auto v = parse_json(body, why);
  if (!v) return why;
  if (!v->is_object()) return std::string("response is not a JSON object");
  Prediction p;
  if (auto err = fill_prediction(v->get_object(), p)) return *err;
  return p;
}

std::variant<PredictionPage, std::string> parse_prediction_page(std::string_view body) {
  std::string why;
  auto v = parse_json(body, why);
  if (!v) return why;
  if (!v->is_object()) return std::string("list response is not a JSON object");
  const json::value* results = v->get_object().if_contains("results");
  if (!results || !results->is_array()) return std::string("list response has no `results` array");
  PredictionPage page;
  for (const auto& item : results->get_array()) {
    if (!item.is_object()) continue;
    Prediction p;
    if (!fill_prediction(item.get_object(), p)) page.results.push_back(std::move(p));
  }
  page.next = as_string(v->get_object().if_contains("next"));
  return page;
}

std::optional<std::string> canonical_json(std::string_view text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return std::nullopt;
  std::string out;
  out.reserve(text.size());
  canonicalize(v, out);
  return out;
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
  static const std::regex kAvail(R"(available in (\d+(?:\.\d+)?) ?s)", std::regex::icase);
  std::cmatch m;
  const std::string_view head = body.substr(0, 4096);
  if (std::regex_search(head.data(), head.data() + head.size(), m, kAvail)) return std::stod(m[1].str());
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
