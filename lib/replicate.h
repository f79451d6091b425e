// The Replicate HTTP API's shapes (SPEC §4): request bodies and paths we
// send, and the prediction objects we accept. Boost.JSON stays in replicate.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace predictd {

struct ModelEntry;

enum class RemoteStatus { starting, processing, succeeded, failed, canceled, aborted };
std::string_view to_string(RemoteStatus s);
bool is_terminal(RemoteStatus s);

struct Prediction {
  std::string id;
  RemoteStatus status = RemoteStatus::starting;
  std::optional<std::string> model;
  std::optional<std::string> version;
  std::vector<std::string> output;   // a string output becomes one element
  std::optional<std::string> output_error;  // set when a succeeded output is not a string or array of strings
  std::optional<std::string> error;
  std::optional<double> predict_time;
  std::optional<double> total_time;
  std::optional<int64_t> image_count;
  std::optional<std::string> created_at;
  std::string canonical_input;  // for list matching; empty when `input` is absent or not asked for
};

// A parsed prediction, or a message saying why the body is not one. The
// canonical input (a second pass over the body) only with `with_input`:
// polls and creates do not need it; list pages always have it.
using ParsedPrediction = std::variant<Prediction, std::string>;
ParsedPrediction parse_prediction(std::string_view body, bool with_input = false);

struct PredictionPage {
  std::vector<Prediction> results;  // items that failed to parse are skipped
  std::optional<std::string> next;  // the `next` URL, if any
};
std::variant<PredictionPage, std::string> parse_prediction_page(std::string_view body);

// The JSON object as a canonical string: keys sorted at every depth, no
// spaces. nullopt when the text is not valid JSON.
std::optional<std::string> canonical_json(std::string_view json);

// Why a row's input can't be sent: not JSON, or not an object.
std::optional<std::string> check_input_object(std::string_view input);

struct CreateRequest {
  std::string path;  // "/v1/models/owner/name/predictions" or "/v1/predictions"
  std::string body;  // {"input": …} or {"version": "…", "input": …}
};
// `version` non-empty selects the version form. `input` must be a JSON object text.
CreateRequest make_create_request(std::string_view model, std::string_view version, std::string_view input);

// The server's message from an error response body (`detail`, `title`,
// `error`), or a short excerpt of the body when it is not JSON.
std::string error_message(std::string_view body, int status);
// The delay a throttling body announces ("Expected available in 3 seconds."), in seconds.
std::optional<double> throttle_delay_s(std::string_view body);
// A Retry-After header value in seconds (delta-seconds form only).
std::optional<double> parse_retry_after(std::string_view value);

}  // namespace predictd
