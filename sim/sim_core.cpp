#include "sim_core.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <regex>
#include <vector>

#include <boost/json.hpp>

#include "timefmt.h"

namespace predictd::sim::core {

namespace {

// SPEC §3's catalog with the shapes and typical run times of the real models.
constexpr ModelSpec kModels[] = {
    {"black-forest-labs/flux-schnell", nullptr, true, "webp", 0.8, 0.2, true},
    {"black-forest-labs/flux-dev", nullptr, true, "webp", 3.2, 0.6, true},
    {"black-forest-labs/flux-pro", nullptr, false, "webp", 14, 2.5, true},
    {"black-forest-labs/flux-1.1-pro", nullptr, false, "webp", 3.8, 0.7, true},
    {"stability-ai/stable-diffusion", "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4", true, "png",
     1.9, 0.4, true},
    {"stability-ai/sdxl", "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc", true, "png", 5.0, 0.8,
     true},
    {"stability-ai/stable-diffusion-inpainting", "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3",
     true, "png", 2.7, 0.5, true},
    {"stability-ai/stable-diffusion-img2img", "15a3689ee13b0d2616e98820eca31d4c3abcd36672df6afce5cb6feb1d66087d", true,
     "png", 3.5, 0.6, true},
    {"minimax/video-01", nullptr, false, "mp4", 305, 15, false},
    {"minimax/video-01-live", nullptr, false, "mp4", 305, 15, false},
    {"lucataco/flux-schnell-lora", "2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574", true, "webp",
     2.7, 0.5, true},
    {"lucataco/flux-dev-lora", "091495765fa5ef2725a175a57b276ec30dc9d39c22d30410f2ede68a3eab66b3", true, "webp", 18.5,
     3.0, true},
    {"recraft-ai/recraft-v3-svg", nullptr, false, "svg", 17.9, 3.0, true},
    {"ideogram-ai/ideogram-v2-turbo", nullptr, false, "png", 12.4, 2.0, true},
};

constexpr std::size_t kPageSize = 100;
constexpr const char* kFailure = "CUDA out of memory. Tried to allocate 2.00 GiB";
constexpr const char* kAborted = "Prediction deadline exceeded before it started";

void canonical_into(const json::value& v, std::string& out) {
  if (v.is_object()) {
    std::vector<const json::key_value_pair*> items;
    items.reserve(v.get_object().size());
    for (const auto& kv : v.get_object()) items.push_back(&kv);
    std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->key() < b->key(); });
    out += '{';
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i) out += ',';
      out += json::serialize(json::value(items[i]->key()));
      out += ':';
      canonical_into(items[i]->value(), out);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (const auto& e : v.get_array()) {
      if (!first) out += ',';
      first = false;
      canonical_into(e, out);
    }
    out += ']';
  } else {
    out += json::serialize(v);
  }
}

std::string percent_encode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

SysTime wall_of(const Prediction& p, double sim_t) {
  const std::chrono::duration<double> offset((sim_t - p.created) / p.scale);
  return p.created_wall + std::chrono::duration_cast<SysTime::duration>(offset);
}

struct End {
  double t;
  Status s;
};
End end_event(const Prediction& p) {
  const double start = p.created + p.cold;
  End e{start + p.run, p.fails ? Status::failed : Status::succeeded};
  // Cancel-After: before the run started the prediction is aborted, during it canceled.
  if (p.deadline && *p.deadline < e.t) e = {*p.deadline, *p.deadline < start ? Status::aborted : Status::canceled};
  if (p.canceled_at && *p.canceled_at < e.t) e = {*p.canceled_at, Status::canceled};
  return e;
}

}  // namespace

std::span<const ModelSpec> models() { return kModels; }

const ModelSpec* find_model(std::string_view name) {
  for (const auto& m : kModels)
    if (name == m.name) return &m;
  return nullptr;
}

const ModelSpec* resolve_version(std::string_view v) {
  if (auto colon = v.find(':'); colon != std::string_view::npos) {
    const ModelSpec* m = find_model(v.substr(0, colon));
    return m && m->version && v.substr(colon + 1) == m->version ? m : nullptr;
  }
  if (v.find('/') != std::string_view::npos) {
    const ModelSpec* m = find_model(v);
    return m && !m->version ? m : nullptr;  // owner/name alone: official models only
  }
  for (const auto& m : kModels)
    if (m.version && v == m.version) return &m;
  return nullptr;
}

const char* status_name(Status s) {
  static const char* kNames[] = {"starting", "processing", "succeeded", "failed", "canceled", "aborted"};
  return kNames[static_cast<int>(s)];
}

std::string canonical_json(const json::value& v) {
  std::string out;
  canonical_into(v, out);
  return out;
}

std::optional<double> parse_duration(std::string_view s) {
  static const std::regex kDur(R"(^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$)");
  std::cmatch m;
  if (s.empty() || !std::regex_match(s.data(), s.data() + s.size(), m, kDur)) return std::nullopt;
  double total = 0;
  if (m[1].matched) total += 3600 * std::stod(m[1].str());
  if (m[2].matched) total += 60 * std::stod(m[2].str());
  if (m[3].matched) total += std::stod(m[3].str());
  return total;
}

std::optional<int> parse_prefer(std::string_view s) {
  static const std::regex kPrefer(R"(^wait(=([1-9]|[1-9][0-9]|60))?$)");
  std::cmatch m;
  if (!std::regex_match(s.data(), s.data() + s.size(), m, kPrefer)) return std::nullopt;
  return m[2].matched ? std::stoi(m[2].str()) : 60;
}

std::optional<SysTime> parse_date_time(std::string_view s) {
  std::string t(s);
  if (t.size() > 10 && t[10] == 't') t[10] = 'T';
  std::chrono::minutes offset{0};
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (t.size() >= 16 + 6) {  // a date, a time (HH:MM at least) and ±HH:MM
    const std::string_view z = std::string_view(t).substr(t.size() - 6);
    if ((z[0] == '+' || z[0] == '-') && digit(z[1]) && digit(z[2]) && z[3] == ':' && digit(z[4]) && digit(z[5])) {
      const int h = (z[1] - '0') * 10 + (z[2] - '0'), m = (z[4] - '0') * 10 + (z[5] - '0');
      if (h > 23 || m > 59) return std::nullopt;
      offset = std::chrono::hours(h) + std::chrono::minutes(m);
      if (z[0] == '-') offset = -offset;
      t.resize(t.size() - 6);
      if (t.back() == 'Z' || t.back() == 'z') return std::nullopt;  // one zone, not two
    }
  }
  if (!t.empty() && t.back() == 'z') t.back() = 'Z';
  const auto local = parse_utc(t);
  if (!local) return std::nullopt;
  return *local - offset;
}

Status Simulation::status_at(const Prediction& p, double t) const {
  const End e = end_event(p);
  if (t >= e.t) return e.s;
  return t < p.created + p.cold ? Status::starting : Status::processing;
}

double Simulation::end_of(const Prediction& p) const { return end_event(p).t; }

std::string Simulation::new_id() {
  // Replicate's ids: 26 characters of lower-case base32.
  static const char* kAlphabet = "abcdefghijklmnopqrstuvwxyz234567";
  std::string id(26, 'a');
  for (;;) {
    for (auto& c : id) c = kAlphabet[std::uniform_int_distribution<int>(0, 31)(rng_)];
    if (!index_.contains(id)) return id;
  }
}

Prediction& Simulation::create(const Settings& s, const ModelSpec& model, bool version_form, const json::value& input,
                               double now, SysTime wall_now, double scale, std::optional<double> cancel_after) {
  Prediction p;
  p.seq = first_seq_ + predictions_.size();
  p.id = new_id();
  p.model = &model;
  p.input = input;
  // created_at never goes backwards, so the list can stop at created_after.
  p.created_wall = predictions_.empty() ? wall_now : std::max(wall_now, predictions_.back().created_wall);
  p.scale = scale;
  p.created = now;
  if (model.array_output) {
    if (const json::value* n = input.get_object().if_contains("num_outputs")) {
      json::error_code ec;
      const auto v = n->to_number<int64_t>(ec);  // 2 and 2.0, not "2" nor 2.5
      if (!ec) p.outputs = static_cast<int>(std::clamp<int64_t>(v, 1, 4));
    }
  }
  if (s.profile == Profile::realistic) {
    p.cold = chance(s.cold_start_rate) ? uniform(20, 60) : uniform(0.05, 0.3);
    p.run = model.run_s + uniform(-model.spread_s, model.spread_s);
    p.fails = chance(s.failure_rate);
  }
  if (cancel_after) p.deadline = now + *cancel_after;

  std::string key = version_form ? std::string("v:") + (model.version ? model.version : model.name) + "|"
                                 : std::string("m:") + model.name + "|";
  canonical_into(input, key);
  ++creates_by_input_[std::move(key)];
  ++creates_;
  predictions_.push_back(std::move(p));
  Prediction& stored = predictions_.back();
  index_.emplace(std::string_view(stored.id), stored.seq);
  return stored;
}

Prediction* Simulation::find(std::string_view id) {
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  return &predictions_[it->second - first_seq_];
}

bool Simulation::cancel(Prediction& p, double now) {
  if (is_terminal(status_at(p, now))) return false;
  p.canceled_at = now;
  return true;
}

void Simulation::expire(const Settings& s, double now) {
  if (s.expire_after_s <= 0) return;
  while (!predictions_.empty()) {
    const Prediction& p = predictions_.front();
    if (!is_terminal(status_at(p, now)) || end_of(p) + s.expire_after_s > now) break;
    expired_polls_ += p.polls;
    ++expired_;
    index_.erase(std::string_view(p.id));
    predictions_.pop_front();
    ++first_seq_;
  }
}

void Simulation::reset() {
  index_.clear();
  first_seq_ += predictions_.size();
  predictions_.clear();
  creates_by_input_.clear();
  creates_ = expired_polls_ = expired_ = 0;
}

json::object Simulation::render(const Settings& s, const Prediction& p, double now, bool as_created,
                                bool huge_logs) const {
  const Status st = as_created ? Status::starting : status_at(p, now);
  const std::string api = s.public_base + "/v1/predictions/" + p.id;
  json::object o(20);
  o["id"] = p.id;
  o["model"] = p.model->name;
  o["version"] = p.model->version ? p.model->version : "hidden";
  o["input"] = p.input;
  o["source"] = "api";
  o["data_removed"] = false;
  o["status"] = status_name(st);
  o["created_at"] = format_utc(p.created_wall);
  o["urls"] = json::object{{"cancel", api + "/cancel"},
                           {"get", api},
                           {"stream", "https://stream.replicate.com/v1/files/" + p.id},
                           {"web", "https://replicate.com/p/" + p.id}};
  if (p.deadline) o["deadline"] = format_utc(wall_of(p, *p.deadline));
  json::value output = nullptr;
  json::value error = nullptr;
  json::object metrics;
  std::string logs;
  const double start = p.created + p.cold;
  const bool started = st != Status::starting && st != Status::aborted && !(st == Status::canceled && end_of(p) < start);
  if (started) {
    o["started_at"] = format_utc(wall_of(p, start));
    logs = "Using seed: " + std::to_string(p.seq * 7919 % 100000) + "\nRunning prediction...\n";
  }
  if (is_terminal(st)) {
    const double end = as_created ? now : end_of(p);
    o["completed_at"] = format_utc(wall_of(p, end));
    metrics["predict_time"] = std::max(0.0, end - start);
    metrics["total_time"] = end - p.created;
  }
  if (st == Status::succeeded) {
    const std::string base = s.output_base + "/xezq/" + p.id + "/out-";
    if (p.model->array_output) {
      json::array a;
      for (int i = 0; i < p.outputs; ++i) a.emplace_back(base + std::to_string(i) + "." + p.model->ext);
      output = std::move(a);
    } else {
      output = base + "0." + p.model->ext;
    }
    if (p.model->per_image) metrics["image_count"] = p.model->array_output ? p.outputs : 1;
    logs += "Generated " + std::to_string(p.model->array_output ? p.outputs : 1) + " output(s)\n";
  } else if (st == Status::failed) {
    error = kFailure;
    logs += std::string("Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: ") + kFailure + "\n";
  } else if (st == Status::aborted) {
    error = kAborted;
  } else if (st == Status::canceled) {
    logs += "Prediction canceled\n";
  }
  if (huge_logs) logs.append(s.huge_logs_bytes, 'x');
  o["output"] = std::move(output);
  o["error"] = std::move(error);
  o["logs"] = std::move(logs);
  o["metrics"] = std::move(metrics);
  return o;
}

Simulation::Page Simulation::list(const Settings& s, double now, std::optional<SysTime> created_after,
                                  std::optional<SysTime> created_before, std::string_view cursor) const {
  Page page;
  const uint64_t end_seq = first_seq_ + predictions_.size();
  auto at = [&](uint64_t seq) -> const Prediction& { return predictions_[seq - first_seq_]; };
  auto matches = [&](const Prediction& p) {
    return (!created_after || p.created_wall >= *created_after) &&
           (!created_before || p.created_wall < *created_before);
  };
  // Keyset pagination: new predictions do not shift later pages.
  uint64_t below = end_seq;  // walk seqs < below, newest first
  if (cursor.size() > 1) {
    uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(cursor.data() + 1, cursor.data() + cursor.size(), v);
    if (ec == std::errc() && ptr == cursor.data() + cursor.size()) {
      v = std::clamp<uint64_t>(v, first_seq_, end_seq);
      if (cursor[0] == 'b') {
        below = v;
      } else if (cursor[0] == 'a') {
        // The page just newer than v: the kPageSize oldest matches above it.
        std::size_t n = 0;
        uint64_t seq = v + 1;
        for (; seq < end_seq && n < kPageSize; ++seq)
          if (matches(at(seq))) ++n;
        below = seq;
      }
    }
  }
  json::array results;
  uint64_t seq = below;
  uint64_t first = 0, last = 0;
  bool more = false;
  while (seq-- > first_seq_) {
    const Prediction& p = at(seq);
    if (created_after && p.created_wall < *created_after) break;  // created_at never decreases with seq
    if (!matches(p)) continue;
    if (results.size() == kPageSize) {
      more = true;
      break;
    }
    if (results.empty()) first = seq;
    last = seq;
    results.push_back(render(s, p, now));
  }
  bool newer = false;
  for (uint64_t n = below; n < end_seq && !newer; ++n) newer = matches(at(n));
  std::string filters;
  if (created_after) filters += "&created_after=" + percent_encode(format_utc(*created_after));
  if (created_before) filters += "&created_before=" + percent_encode(format_utc(*created_before));
  const std::string base = s.public_base + "/v1/predictions?cursor=";
  page.count = results.size();
  page.body["previous"] = nullptr;
  page.body["next"] = nullptr;
  if (more) page.body["next"] = base + "b" + std::to_string(last) + filters;
  if (newer) page.body["previous"] = base + "a" + std::to_string(results.empty() ? below - 1 : first) + filters;
  page.body["results"] = std::move(results);
  return page;
}

void Simulation::fill_stats(Stats& st, double now, bool details) const {
  st.predictions = static_cast<int64_t>(predictions_.size());
  st.expired = expired_;
  st.creates = creates_;
  st.distinct_inputs = static_cast<int64_t>(creates_by_input_.size());
  st.duplicate_creates = 0;
  for (const auto& [k, n] : creates_by_input_) {
    if (n > 1) st.duplicate_creates += n - 1;
    if (details) st.creates_by_input[k] = n;
  }
  st.polls = expired_polls_;
  for (const auto& p : predictions_) {
    st.polls += p.polls;
    st.max_polls_per_prediction = std::max(st.max_polls_per_prediction, p.polls);
    ++st.statuses[status_name(status_at(p, now))];
    if (details) st.polls_by_prediction[p.id] = p.polls;
  }
}

}  // namespace predictd::sim::core
