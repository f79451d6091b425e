#include "engine.h"

#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <optional>
#include <queue>
#include <random>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/array.hpp>
#include <spdlog/spdlog.h>

#include "config.h"
#include "http_client.h"
#include "log.h"
#include "pricing.h"
#include "replicate.h"
#include "row_check.h"
#include "sqlite.h"
#include "store.h"
#include "timefmt.h"

namespace predictd {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// A listing that reaches neither its created_after bound nor an end proves nothing.
constexpr int kMaxListPages = 100;
constexpr int kListTries = 3;  // per page, with backoff, before the listing counts as failed
// Listings that failed while the API answered other requests: the list itself
// is unusable (a proxy's), so the ambiguous create is sent again (ambiguous=1).
constexpr int kListRoundsBeforeResend = 3;
// Consecutive requests without an HTTP answer below 500: the API is down, and
// new claims wait (one probe at a time) instead of spending every job's attempts.
constexpr int kOutageAfter = 3;
constexpr int kOutageMaxPauseMs = 30000;
// The rate budgets keep below the configured limits: requests reach the
// server later than we send them, and not evenly (connections, its loop), so
// a client at exactly the limit meets 429s. 95 % of the rate and half a
// second of burst leave the server's bucket the slack to absorb that.
constexpr double kBudgetShare = 0.95;
constexpr double kBudgetBurstS = 0.5;

milliseconds to_ms(double seconds) {
  return milliseconds(static_cast<int64_t>(std::ceil(std::max(0.0, seconds) * 1000)));
}

int64_t ms_since(SteadyTime t, SteadyTime now) {
  return std::chrono::duration_cast<milliseconds>(now - t).count();
}

std::string output_json(const std::vector<std::string>& urls) {
  boost::json::array a;
  a.reserve(urls.size());
  for (const auto& u : urls) a.emplace_back(u);
  return boost::json::serialize(a);
}

// The query part of a `next` URL, which proxies may point at another host:
// only the cursor is taken, the request goes to our own base_url.
std::string next_path(const std::string& next) {
  auto q = next.find('?');
  return q == std::string::npos ? std::string() : "/v1/predictions" + next.substr(q);
}

std::string url_encode(std::string_view s) {
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

}  // namespace

class Engine::Impl {
 public:
  Impl(asio::io_context& io, Store& store, HttpClient& http, const Config& config, std::string token,
       EngineOptions options)
      : io_(io),
        store_(store),
        http_(http),
        config_(config),
        token_(std::move(token)),
        options_(std::move(options)),
        creates_(config.limits.creates_per_minute * kBudgetShare, Clock::now(), kBudgetBurstS),
        requests_(config.limits.requests_per_minute * kBudgetShare, Clock::now(), kBudgetBurstS),
        timer_(io),
        claim_timer_(io),
        db_timer_(io),
        recheck_timer_(io),
        flush_timer_(io),
        commit_timer_(io),
        expiry_timer_(io),
        lag_timer_(io),
        stats_timer_(io),
        rng_(std::random_device{}()) {}

  ~Impl() {
    *alive_ = false;
    if (inotify_) inotify_->close();
  }

  // ---- lifecycle ---------------------------------------------------------

  void start() {
    started_at_ = Clock::now();
    for (JobRow& row : store_.active_jobs()) adopt_row(std::move(row));
    if (!jobs_.empty())
      spdlog::info("startup resumed={} reconciling={}", jobs_.size(), reconcile_due_.size());
    expire_queued();
    watch_db_file();
    arm_db_timer();
    arm_lag_timer();
    arm_stats_timer();
    check_db();
    pump();
  }

  void stop(std::function<void()> done) {
    stopping_ = true;
    // Creates that never left go back to the queue: no reconciliation needed next start.
    for (int64_t id : create_queue_) {
      auto it = jobs_.find(id);
      if (it == jobs_.end() || it->second.pending != Pending::waiting) continue;
      queue(Transition{.job_id = id, .from = it->second.status, .to = JobStatus::queued});
      jobs_.erase(it);
    }
    create_queue_.clear();
    stop_done_ = std::move(done);
    stop_deadline_ = Clock::now() + options_.drain_timeout;
    claim_timer_.cancel();
    db_timer_.cancel();
    recheck_timer_.cancel();
    stats_timer_.cancel();
    expiry_timer_.cancel();
    if (inotify_) inotify_->close();
    maybe_finish_stop();
  }

  void reload(const Config& config) {
    config_ = config;
    creates_.set_rate(config.limits.creates_per_minute * kBudgetShare);
    requests_.set_rate(config.limits.requests_per_minute * kBudgetShare);
    for (auto& [name, m] : models_) {
      const ModelEntry* e = config_.models.find_model(name);
      if (e) m.entry = *e;
    }
    pump();
  }

  EngineCounters counters() const { return counters_; }
  std::size_t in_flight() const { return jobs_.size(); }
  bool auth_paused() const { return Clock::now() < auth_paused_until_; }

 private:
  struct ModelState {
    ModelEntry entry;
  };

  // waiting: claimed (committed `submitting`), its create not sent yet.
  enum class Pending : uint8_t { none, waiting, create, poll, cancel, reconcile };

  struct Job {
    int64_t id = 0;
    ModelState* model = nullptr;
    std::string version;  // non-empty: the version form
    std::string input;
    std::string prediction_id;
    std::string canonical;  // canonical input, computed when reconciling
    JobStatus status = JobStatus::submitting;  // the row's status once pending writes land
    SteadyTime first_submit{};                  // the timeout counts from here
    SteadyTime created{};                       // the create response: runtime measurement
    SteadyTime deadline{};
    std::string submitted_at;                   // wall clock, for reconciliation
    int64_t timeout_s = 0;
    int attempts = 0;
    int polls = 0;
    int poll_errors = 0;
    int list_rounds = 0;    // listings that failed while the API answered other requests
    int list_failures = 0;  // every failed listing while this job was ambiguous: its backoff
    uint32_t timer_gen = 0;
    Pending pending = Pending::none;
    bool cancel_requested = false;
    bool cancel_sent = false;
    bool timed_out = false;
    bool ambiguous = false;
    bool listing = false;  // in the listing under way (batch_)
    std::string last_error;
  };

  struct TimerEntry {
    SteadyTime when;
    int64_t job_id;
    uint32_t gen;
    bool operator>(const TimerEntry& o) const { return when > o.when; }
  };

  struct ReadyPoll {
    double score;  // higher is more likely to find a result
    int64_t job_id;
    uint32_t gen;
    bool operator<(const ReadyPoll& o) const { return score < o.score; }
  };

  // ---- rows to jobs ------------------------------------------------------

  ModelState& model_state(const ModelEntry& e) {
    auto [it, inserted] = models_.try_emplace(e.name);
    if (inserted) it->second.entry = e;
    return it->second;
  }

  std::optional<std::string> validate(const JobRow& row) const { return check_row(row, config_); }
  const ModelEntry* resolve_model(const JobRow& row) const { return predictd::resolve_model(row, config_.models); }
  std::string model_error(const JobRow& row) const { return predictd::model_error(row, config_.models); }

  Job& make_job(JobRow& row) {
    const ModelEntry* e = resolve_model(row);
    Job& job = jobs_[row.id];
    job.id = row.id;
    job.model = &model_state(*e);
    job.version = e->version.value_or("");
    job.input = std::move(row.input);
    job.status = row.status;
    job.attempts = static_cast<int>(row.attempts);
    job.timeout_s = row.timeout_s.value_or(config_.jobs.default_timeout_s);
    job.cancel_requested = row.cancel_requested;
    const auto wall_now = std::chrono::system_clock::now();
    auto submitted = row.submitted_at ? parse_utc(*row.submitted_at) : std::nullopt;
    const auto since = submitted ? wall_now - *submitted : std::chrono::system_clock::duration(0);
    job.first_submit = Clock::now() - std::chrono::duration_cast<Clock::duration>(since);
    job.submitted_at = row.submitted_at.value_or(format_utc(wall_now));
    job.deadline = job.first_submit + std::chrono::seconds(job.timeout_s) + options_.timeout_grace;
    schedule_deadline(job);
    return job;
  }

  // A row found active at start.
  void adopt_row(JobRow&& row) {
    if (!resolve_model(row)) {
      // The catalog changed under a running job: it can't be priced or resumed.
      queue(Transition{.job_id = row.id, .from = row.status, .to = JobStatus::failed,
                       .error = model_error(row) + " (catalog changed while the job ran)"});
      return;
    }
    std::string prediction = row.prediction_id.value_or("");
    Job& job = make_job(row);
    job.prediction_id = std::move(prediction);
    job.created = job.first_submit;
    if (job.status == JobStatus::submitting || job.prediction_id.empty()) {
      job.ambiguous = true;
      job.pending = Pending::reconcile;
      reconcile_due_.push_back(job.id);
    } else {
      schedule_poll(job, Clock::now());
    }
  }

  // ---- database ----------------------------------------------------------

  void queue(Transition t) {
    // A proxy may echo the Authorization header in its messages: rows never hold the token.
    if (t.error && !token_.empty())
      for (auto pos = t.error->find(token_); pos != std::string::npos; pos = t.error->find(token_, pos))
        t.error->replace(pos, token_.size(), "[redacted]");
    pending_.push_back(std::move(t));
    request_flush();
  }

  // Group commit: the state changes and the claim of everything that happened
  // since the last commit share one transaction, at most one per
  // group_commit interval (at once after a quiet spell).
  void request_flush() {
    if (flush_posted_) return;
    flush_posted_ = true;
    const auto due = last_flush_ + options_.group_commit;
    if (Clock::now() >= due) {
      asio::post(io_, [this, alive = alive_] {
        if (*alive) flush();
      });
      return;
    }
    commit_timer_.expires_at(due);
    commit_timer_.async_wait([this, alive = alive_](auto ec) {
      if (!ec && *alive) flush();
    });
  }

  void flush() {
    flush_posted_ = false;
    const auto now = Clock::now();
    last_flush_ = now;
    const int limit = claim_wanted_ ? claim_limit(now) : 0;
    if (pending_.empty() && limit <= 0) {
      maybe_finish_stop();
      return;
    }
    const std::string wall_now = format_utc(std::chrono::system_clock::now());
    auto result = store_.commit(pending_, wall_now, limit, [this](const JobRow& row) { return validate(row); });
    if (!result) {
      ++counters_.db_busy;
      note_busy(pending_.empty() ? "claim" : "flush");
      flush_posted_ = true;
      commit_timer_.expires_after(options_.busy_retry);
      commit_timer_.async_wait([this, alive = alive_](auto ec) {
        if (!ec && *alive) flush();
      });
      return;
    }
    std::vector<Transition> done = std::move(pending_);
    pending_.clear();
    for (std::size_t i = 0; i < done.size(); ++i) {
      const Transition& t = done[i];
      if (result.value.applied[i]) {
        if (t.to == JobStatus::succeeded && options_.on_succeeded) options_.on_succeeded(t.job_id);
        continue;
      }
      spdlog::warn("job_lost job={} from={} to={} reason=\"the row changed or was deleted by another process\"",
                   t.job_id, to_string(t.from), to_string(t.to));
      drop(t.job_id);
    }
    if (limit > 0) on_claimed(result.value.claim, limit, now, wall_now);
    maybe_finish_stop();
  }

  void note_busy(const char* what) {
    const auto now = Clock::now();
    if (now - last_busy_log_ > std::chrono::seconds(5)) {
      last_busy_log_ = now;
      spdlog::warn("db_busy op={} retries={} retry_in_ms={}", what, counters_.db_busy, options_.busy_retry.count());
    }
  }

  void watch_db_file() {
    if (options_.db_path.empty()) return;
    int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) return;
    // The -wal file changes on every commit by any connection.
    const std::string wal = options_.db_path + "-wal";
    if (::inotify_add_watch(fd, wal.c_str(), IN_MODIFY) < 0) {
      ::close(fd);
      return;
    }
    inotify_.emplace(io_, fd);
    read_inotify();
  }

  void read_inotify() {
    inotify_->async_read_some(asio::buffer(inotify_buf_), [this, alive = alive_](auto ec, std::size_t) {
      if (ec || !*alive) return;
      if (!check_db()) recheck_db(0);
      read_inotify();
    });
  }

  // A writer's first frame in the -wal wakes us before its commit is visible
  // (the commit lands in the mmapped -shm, which inotify does not see): look
  // again after 1, 2, 4, 8 and 16 ms rather than wait for the db timer.
  void recheck_db(int tries) {
    if (tries >= 5) return;
    recheck_timer_.expires_after(milliseconds(1 << tries));
    recheck_timer_.async_wait([this, alive = alive_, tries](auto ec) {
      if (ec || !*alive) return;
      if (!check_db()) recheck_db(tries + 1);
    });
  }

  void arm_db_timer() {
    db_timer_.expires_after(options_.db_check_interval);
    db_timer_.async_wait([this, alive = alive_](auto ec) {
      if (ec || !*alive) return;
      check_db();
      arm_db_timer();
    });
  }

  // Another process committed: new rows, or cancel requests. True if it looked.
  bool check_db() {
    if (stopping_) return true;
    try {
      return look_at_db();
    } catch (const BusyError&) {
      // Reads meet a busy WAL index only rarely (another connection recovering it).
      ++counters_.db_busy;
      note_busy("read");
      force_check_ = true;
      return true;
    }
  }

  bool look_at_db() {
    if (!store_.changed_by_others() && !force_check_) return false;
    force_check_ = false;
    auto canceled = store_.cancel_queued("canceled on request before submission");
    if (!canceled) {
      ++counters_.db_busy;
      note_busy("cancel");
      force_check_ = true;
    } else {
      for (int64_t id : canceled.value) {
        ++counters_.canceled;
        spdlog::info("job_canceled job={} reason=\"canceled on request before submission\"", id);
      }
    }
    for (int64_t id : store_.active_cancel_requests()) {
      auto it = jobs_.find(id);
      if (it == jobs_.end() || it->second.cancel_requested) continue;
      it->second.cancel_requested = true;
      request_cancel(it->second);
    }
    claim_wanted_ = true;
    pump();
    return true;
  }

  // Queued rows waiting for a retry whose timeout has passed end canceled.
  void expire_queued() {
    expiry_armed_ = false;
    if (stopping_) return;
    const auto wall = std::chrono::system_clock::now();
    auto result = store_.expire_queued(format_utc(wall), config_.jobs.default_timeout_s);
    if (!result) {
      ++counters_.db_busy;
      note_busy("expire");
      arm_expiry(wall + options_.busy_retry);
      return;
    }
    for (const auto& [id, error] : result.value) {
      ++counters_.canceled;
      spdlog::info("job_canceled job={} prediction=- error={} reason=\"timed out waiting for a retry\"", id,
                   log_quote(error));
    }
    std::optional<std::string> next;
    try {
      next = store_.next_queued_expiry(config_.jobs.default_timeout_s);
    } catch (const BusyError&) {
      next = format_utc(wall + options_.busy_retry);
    }
    if (next)
      if (auto t = parse_utc(*next)) arm_expiry(*t);
  }

  void arm_expiry(std::chrono::system_clock::time_point when) {
    // Never sooner than busy_retry: a row requeued a moment ago may not be committed yet.
    const auto delay = std::max(std::chrono::duration_cast<Clock::duration>(when - std::chrono::system_clock::now()),
                                std::chrono::duration_cast<Clock::duration>(options_.busy_retry));
    const auto at = Clock::now() + delay;
    if (expiry_armed_ && expiry_timer_.expiry() <= at) return;
    expiry_armed_ = true;
    expiry_timer_.expires_at(at);
    expiry_timer_.async_wait([this, alive = alive_](auto ec) {
      if (ec || !*alive) return;
      expire_queued();
    });
  }

  // ---- the pump: creates and requests within their budgets --------------

  void pump() {
    if (pumping_) return;
    pumping_ = true;
    const auto now = Clock::now();
    start_reconcile(now);
    dispatch_creates(now);  // first: a claimed job holds a row in `submitting` until its create leaves
    dispatch_polls(now);
    if (claim_wanted_) request_flush();  // the claim rides on the next commit
    pumping_ = false;
  }

  // Requests beyond the connections would wait inside the client, out of our
  // hands: a 429 could not hold them back, and they would break its Retry-After.
  int64_t http_free_slots() const {
    return static_cast<int64_t>(config_.api.max_connections) - static_cast<int64_t>(http_.in_flight());
  }
  bool http_has_room() const { return http_free_slots() > 0; }

  // Every response passes here first. An HTTP answer below 500 means the API
  // is up; anything else (5xx, reset, timeout, no connection) counts towards
  // an outage, during which new claims wait with backoff and go one at a time.
  void note_api_outcome(const HttpResponse& r) {
    if (r.failure == HttpFailure::held) return;  // never left: says nothing of the API
    const auto now = Clock::now();
    if (r.failure == HttpFailure::none && r.status < 500) {
      if (api_failures_ >= kOutageAfter)
        spdlog::info("api_recovered failures={} outage_ms={}", api_failures_, ms_since(outage_started_, now));
      api_failures_ = 0;
      last_api_ok_ = now;
      return;
    }
    if (++api_failures_ < kOutageAfter) return;
    if (api_failures_ == kOutageAfter) {
      outage_started_ = now;
      spdlog::error("api_error op=health failures={} error={} action=\"new jobs wait; one create at a time probes "
                    "the API\"",
                    api_failures_, log_quote(r.failure == HttpFailure::none ? "HTTP " + std::to_string(r.status)
                                                                             : r.error));
    }
    const int level = std::min(api_failures_ - kOutageAfter + 1, 16);
    const auto delay = backoff_delay(level, config_.retry.base_ms, std::min(config_.retry.max_ms, kOutageMaxPauseMs),
                                     rng_);
    outage_until_ = std::max(outage_until_, now + delay);
  }
  bool in_outage() const { return api_failures_ >= kOutageAfter; }

  // How many rows the next commit may claim (0: none now; the claim timer or
  // a response brings us back).
  int claim_limit(SteadyTime now) {
    if (stopping_ || now < auth_paused_until_) return 0;
    if (now < outage_until_) {
      arm_claim_timer(outage_until_ - now);
      return 0;
    }
    const int64_t room = config_.limits.max_in_flight - static_cast<int64_t>(jobs_.size());
    if (room <= 0) return 0;
    // Budget left once the creates already waiting have gone (they spend it as they leave).
    const int64_t tokens = creates_.available(now) - static_cast<int64_t>(create_queue_.size());
    if (tokens <= 0) {
      if (create_queue_.empty()) arm_claim_timer(creates_.wait_time(now));
      return 0;  // else the waiting creates' answers pump again
    }
    if (in_outage()) return create_queue_.empty() && creates_in_flight_ == 0 ? 1 : 0;  // one probe at a time
    // Claimed rows wait for a connection in create_queue_: enough to fill
    // every connection a few times over between two group commits, so claims
    // come in batches, not one row per finished job; beyond that they wait in
    // the database.
    const int64_t want = 4 * static_cast<int64_t>(config_.api.max_connections) -
                         static_cast<int64_t>(http_.in_flight()) - static_cast<int64_t>(create_queue_.size());
    if (want <= 0) return 0;  // a response will pump again
    return static_cast<int>(std::min<int64_t>({room, tokens, want, 512}));
  }

  // Rows the commit moved to submitting (committed): their creates go out now.
  void on_claimed(ClaimResult& claim, int limit, SteadyTime now, const std::string& wall_now) {
    claim_wanted_ = false;
    for (const JobRow& row : claim.rejected) {
      ++counters_.failed;
      spdlog::warn("job_failed job={} model={} error={}", row.id, log_quote(row.model.value_or("")),
                   log_quote(row.error.value_or("")));
    }
    for (JobRow& row : claim.claimed) {
      ++counters_.claimed;
      Job& job = make_job(row);
      job.status = JobStatus::submitting;
      if (now >= job.deadline - options_.timeout_grace) {
        // Back in the queue (a retry) until past its timeout: it ends here, unsent.
        job.timed_out = true;
        finish(job, Prediction{.status = RemoteStatus::canceled}, false);
        continue;
      }
      enqueue_create(job);
    }
    dispatch_creates(now);
    if (static_cast<int>(claim.claimed.size() + claim.rejected.size()) >= limit) {
      claim_wanted_ = true;  // more may be ready
      arm_claim_timer(creates_.wait_time(Clock::now()));
    } else if (auto next = next_wakeup(wall_now)) {
      if (auto t = parse_utc(*next)) {
        auto delay = *t - std::chrono::system_clock::now();
        claim_wanted_ = true;
        arm_claim_timer(std::max<std::chrono::system_clock::duration>(delay, milliseconds(1)));
      }
    }
  }

  std::optional<std::string> next_wakeup(const std::string& wall_now) {
    try {
      return store_.next_wakeup(wall_now);
    } catch (const BusyError&) {
      return format_utc(std::chrono::system_clock::now() + options_.busy_retry);
    }
  }

  template <class Duration>
  void arm_claim_timer(Duration d) {
    const auto when = Clock::now() + std::chrono::duration_cast<Clock::duration>(d);
    if (claim_timer_armed_ && claim_timer_.expiry() <= when) return;
    claim_timer_armed_ = true;
    claim_timer_.expires_at(when);
    claim_timer_.async_wait([this, alive = alive_](auto ec) {
      if (ec || !*alive) return;
      claim_timer_armed_ = false;
      claim_wanted_ = true;
      pump();
    });
  }

  std::vector<std::pair<std::string, std::string>> auth_headers() const {
    return {{"Authorization", "Bearer " + token_}};
  }

  // A request that waited for a connection is held back by a 429 (or an auth
  // pause) that arrived meanwhile; the caller sends it again after the pause.
  std::function<bool()> hold_while_paused(const TokenBucket& budget) {
    return [this, &budget] {  // small enough for std::function's inline buffer: no allocation
      const auto now = Clock::now();
      return now < budget.paused_until() || now < auth_paused_until_;
    };
  }
  milliseconds pause_left(const TokenBucket& budget) const {
    const auto until = std::max(budget.paused_until(), auth_paused_until_);
    return std::max(std::chrono::duration_cast<milliseconds>(until - Clock::now()), milliseconds(1));
  }

  void send_create(Job& job) {
    const ModelEntry& e = job.model->entry;
    CreateRequest cr = make_create_request(e.name, job.version, job.input);
    HttpRequest req{.method = "POST", .path = std::move(cr.path), .body = std::move(cr.body), .headers = auth_headers(),
                    .hold = hold_while_paused(creates_)};
    const auto remaining = job.deadline - options_.timeout_grace - Clock::now();
    const int64_t cancel_after = std::max<int64_t>(5, std::chrono::duration_cast<std::chrono::seconds>(remaining).count());
    req.headers.emplace_back("Cancel-After", std::to_string(cancel_after) + "s");
    if (e.prefer_wait_s) {
      // The response is held up to N seconds: keep N well inside the request timeout.
      const int wait = std::min(*e.prefer_wait_s, config_.api.request_timeout_s - 5);
      if (wait >= 1) req.headers.emplace_back("Prefer", "wait=" + std::to_string(wait));
    }
    job.pending = Pending::create;
    ++creates_in_flight_;
    ++counters_.creates_sent;
    ++counters_.requests_sent;
    const int64_t id = job.id;
    http_.send(std::move(req), [this, alive = alive_, id](HttpResponse r) {
      if (!*alive) return;
      --creates_in_flight_;
      on_create_response(id, std::move(r));
      pump();
    });
  }

  // A claimed job (or one whose create goes again) waits here for a
  // connection; the engine, not the HTTP client, holds it back during a
  // 429's Retry-After, an auth pause or an outage.
  void enqueue_create(Job& job) {
    job.pending = Pending::waiting;
    create_queue_.push_back(job.id);
  }

  // The create budget is spent here, as each create leaves: taken at the
  // claim, it let creates that waited for a connection reach the server
  // bunched together, faster than the budget.
  void dispatch_creates(SteadyTime now) {
    while (!create_queue_.empty() && http_has_room()) {
      if (stopping_ || now < auth_paused_until_) return;
      if (in_outage() && (now < outage_until_ || creates_in_flight_ > 0)) return;
      const int64_t id = create_queue_.front();
      auto it = jobs_.find(id);
      if (it == jobs_.end() || it->second.pending != Pending::waiting) {  // canceled or timed out meanwhile
        create_queue_.pop_front();
        continue;
      }
      if (!creates_.try_take(now)) {
        arm_pump_timer(creates_.wait_time(now));
        return;
      }
      create_queue_.pop_front();
      send_create(it->second);
    }
  }

  void on_create_response(int64_t id, HttpResponse r) {
    note_api_outcome(r);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    Job& job = it->second;
    job.pending = Pending::none;
    const auto now = Clock::now();

    if (r.failure == HttpFailure::held) {
      --counters_.creates_sent;
      --counters_.requests_sent;
      requeue(job, pause_left(creates_));
      return;
    }
    if (r.failure == HttpFailure::not_sent) {
      // The request never left: retry without spending an attempt.
      ++counters_.retries;
      const auto delay = backoff_delay(++not_sent_streak_, config_.retry.base_ms, config_.retry.max_ms, rng_);
      spdlog::error("api_error job={} op=create error={} attempt_spent=0 retry_in_ms={}", id, log_quote(r.error),
                    delay.count());
      requeue(job, delay);
      return;
    }
    if (r.failure == HttpFailure::none && (r.status == 401 || r.status == 402 || r.status == 403)) {
      auth_failure(r, "create");
      requeue(job, options_.auth_retry);
      return;
    }
    if (r.failure == HttpFailure::none && r.status == 429) {
      const double delay_s = throttle_delay(r, job.attempts + 1);
      creates_.pause_until(now + to_ms(delay_s));
      ++counters_.throttled;
      spdlog::warn("api_throttled op=create job={} retry_after_s={:.1f}", id, delay_s);
      requeue(job, to_ms(delay_s));
      return;
    }

    ++job.attempts;  // it may have reached the server
    not_sent_streak_ = 0;
    if (r.failure == HttpFailure::none && (r.status == 200 || r.status == 201 || r.status == 202)) {
      auto parsed = parse_prediction(r.body);
      if (auto* p = std::get_if<Prediction>(&parsed)) {
        job.created = now;
        job.prediction_id = p->id;
        job.ambiguous = false;
        ++counters_.submitted;
        spdlog::info("job_submitted job={} model={} prediction={} attempt={} latency_ms={}", id,
                     job.model->entry.name, p->id, job.attempts, r.latency.count());
        apply_prediction(job, *p, /*count_attempt=*/true);
        return;
      }
      job.last_error = "create answered " + std::to_string(r.status) + " with " + std::get<std::string>(parsed);
    } else if (r.failure == HttpFailure::none && refuses_the_job(r.status)) {
      // The server refused this job's request: it will refuse it again.
      queue(Transition{.job_id = id, .from = job.status, .to = JobStatus::failed,
                       .error = error_message(r.body, r.status), .count_attempt = true});
      finish_log(job, "job_failed", "failed", error_message(r.body, r.status));
      drop(id);
      return;
    } else if (r.failure == HttpFailure::none && r.status >= 400 && r.status < 500 && r.status != 408 &&
               r.status != 409) {
      // Refused for now (a status SPEC §4 does not name): nothing was created.
      job.last_error = error_message(r.body, r.status);
      queue(Transition{.job_id = id, .from = job.status, .to = job.status, .count_attempt = true});
      if (job.attempts >= config_.retry.max_attempts) {
        give_up(job);
        return;
      }
      ++counters_.retries;
      const auto delay = backoff_delay(job.attempts, config_.retry.base_ms, config_.retry.max_ms, rng_);
      spdlog::warn("job_retry job={} attempt={} error={} retry_in_ms={}", id, job.attempts, log_quote(job.last_error),
                   delay.count());
      requeue(job, delay);
      return;
    } else if (r.failure == HttpFailure::none) {
      job.last_error = error_message(r.body, r.status);
    } else {
      job.last_error = r.error;
    }
    // Anything else may have created the prediction: stay `submitting` and
    // look for it before submitting again.
    queue(Transition{.job_id = id, .from = job.status, .to = job.status, .count_attempt = true});
    job.ambiguous = true;
    ++counters_.retries;
    const auto delay = backoff_delay(job.attempts, config_.retry.base_ms, config_.retry.max_ms, rng_);
    spdlog::warn("job_retry job={} attempt={} error={} reconcile_in_ms={}", id, job.attempts,
                 log_quote(job.last_error), delay.count());
    schedule_reconcile(job, now + delay);
  }

  // SPEC §4: these statuses on a create fail that job with the server's message.
  static bool refuses_the_job(int status) {
    return status == 400 || status == 404 || status == 410 || status == 413 || status == 415 || status == 422;
  }

  void give_up(Job& job, const std::string& why = "") {
    std::string reason = "gave up after " + std::to_string(job.attempts) + " attempts: " + job.last_error;
    if (!why.empty()) reason += "; " + why;
    queue(Transition{.job_id = job.id, .from = job.status, .to = JobStatus::failed, .error = reason});
    finish_log(job, "job_failed", "failed", reason);
    drop(job.id);
  }

  double throttle_delay(const HttpResponse& r, int attempt) {
    if (const std::string* h = r.header("retry-after"))
      if (auto s = parse_retry_after(*h)) return std::max(*s, 0.5);
    if (auto s = throttle_delay_s(r.body)) return std::max(*s, 0.5);
    return backoff_delay(attempt, config_.retry.base_ms, config_.retry.max_ms, rng_).count() / 1000.0;
  }

  void auth_failure(const HttpResponse& r, const char* op) {
    auth_paused_until_ = Clock::now() + options_.auth_retry;
    spdlog::critical("api_error op={} status={} error={} action=\"all requests paused for {} s; check the API {}\"",
                     op, r.status, log_quote(error_message(r.body, r.status)), options_.auth_retry.count(),
                     r.status == 402 ? "account's balance" : "token");
    arm_claim_timer(options_.auth_retry);
  }

  // Back to `queued` to be claimed again after `delay`: the create did not
  // happen, or is to be sent again anyway. A job with a cancel request or
  // past its timeout ends here instead, with no request.
  void requeue(Job& job, milliseconds delay) {
    const auto now = Clock::now();
    if (job.cancel_requested || job.timed_out || now >= job.deadline - options_.timeout_grace) {
      if (!job.cancel_requested) job.timed_out = true;
      finish(job, Prediction{.status = RemoteStatus::canceled}, false);
      return;
    }
    // Claimed again by its deadline at the latest, to end there if still throttled.
    delay = std::min(delay, std::chrono::duration_cast<milliseconds>(job.deadline - options_.timeout_grace - now) +
                                milliseconds(1));
    const auto at = format_utc(std::chrono::system_clock::now() + delay);
    queue(Transition{.job_id = job.id, .from = job.status, .to = JobStatus::queued, .next_attempt_at = at});
    // Its timeout goes on counting in the queue, where claims may be paused
    // (a 429's Retry-After, an outage): it ends there if not claimed by then.
    arm_expiry(std::chrono::system_clock::now() +
               std::chrono::duration_cast<std::chrono::system_clock::duration>(job.deadline - options_.timeout_grace - now));
    drop(job.id);
    claim_wanted_ = true;
    arm_claim_timer(delay);
  }

  // ---- remote states -----------------------------------------------------

  void apply_prediction(Job& job, const Prediction& p, bool count_attempt = false) {
    if (is_terminal(p.status)) {
      finish(job, p, count_attempt);
      return;
    }
    const JobStatus st = p.status == RemoteStatus::processing ? JobStatus::processing : JobStatus::starting;
    // A job moves forward only: a stale `starting` after `processing` is ignored.
    const bool forward = job.status == JobStatus::submitting ||
                         (job.status == JobStatus::starting && st == JobStatus::processing);
    if (forward) {
      Transition t{.job_id = job.id, .from = job.status, .to = st, .count_attempt = count_attempt};
      if (job.status == JobStatus::submitting) t.prediction_id = job.prediction_id;
      queue(std::move(t));
      if (job.status != JobStatus::submitting)
        spdlog::debug("job_status job={} prediction={} status={}", job.id, job.prediction_id, to_string(st));
      job.status = st;
    } else if (count_attempt) {
      queue(Transition{.job_id = job.id, .from = job.status, .to = job.status, .count_attempt = true});
    }
    if (job.cancel_requested && !job.cancel_sent) {
      request_cancel(job);
      return;
    }
    if (job.timed_out && !job.cancel_sent) {
      request_cancel(job);
      return;
    }
    const auto now = Clock::now();
    const double expected = estimator_.expected_s(job.model->entry.name, job.model->entry.expected_s);
    const double elapsed = Seconds(now - job.created).count();
    double delay = job.polls == 0 ? first_poll_delay_s(expected, options_.poll) - elapsed
                                  : next_poll_interval_s(elapsed, expected, options_.poll);
    delay = std::max(delay, options_.poll.min_interval_s);
    schedule_poll(job, now + to_ms(delay));
  }

  void finish(Job& job, const Prediction& p, bool count_attempt) {
    Transition t{.job_id = job.id, .from = job.status, .count_attempt = count_attempt};
    if (job.status == JobStatus::submitting) t.prediction_id = job.prediction_id;
    if (p.predict_time) t.predict_time_s = *p.predict_time;
    const ModelEntry& e = job.model->entry;
    switch (p.status) {
      case RemoteStatus::succeeded:
        if (p.output_error) {
          t.to = JobStatus::failed;
          t.error = "the API reported success but " + *p.output_error;
          break;
        }
        t.to = JobStatus::succeeded;
        t.output = output_json(p.output);
        t.units = billed_units(e, p.image_count, static_cast<int64_t>(p.output.size()));
        t.cost_credits = cost_credits(e, *t.units, config_.billing);
        break;
      case RemoteStatus::failed:
        t.to = JobStatus::failed;
        t.error = p.error.value_or("the model failed without an error message");
        break;
      case RemoteStatus::canceled:
        t.to = JobStatus::canceled;
        t.error = job.timed_out || Clock::now() >= job.deadline - options_.timeout_grace
                      ? "timed out after " + std::to_string(job.timeout_s) + " s"
                  : job.cancel_requested ? std::string("canceled on request")
                                         : p.error.value_or("canceled by the API");
        break;
      case RemoteStatus::aborted:
        t.to = JobStatus::canceled;
        t.error = "aborted: " + p.error.value_or("the prediction's deadline passed before it started");
        break;
      default:
        return;
    }
    const auto now = Clock::now();
    if (t.to == JobStatus::succeeded) {
      // The API's metrics, but never more than we saw: absurd metrics (or a
      // simulator's scaled clock) must not push every later first poll far out.
      const double seen = Seconds(now - job.created).count();
      const double observed = std::min(seen, p.total_time.value_or(p.predict_time.value_or(seen)));
      estimator_.observe(e.name, e.expected_s, observed);
      ++counters_.succeeded;
      counters_.credits += static_cast<uint64_t>(*t.cost_credits);
      spdlog::info("job_succeeded job={} model={} prediction={} units={} credits={} polls={} latency_ms={}", job.id,
                   e.name, job.prediction_id, *t.units, *t.cost_credits, job.polls, ms_since(job.first_submit, now));
    } else {
      finish_log(job, t.to == JobStatus::failed ? "job_failed" : "job_canceled", to_string(t.to), *t.error);
    }
    queue(std::move(t));
    drop(job.id);
  }

  void finish_log(Job& job, const char* event, std::string_view, const std::string& error) {
    if (std::string_view(event) == "job_failed")
      ++counters_.failed;
    else
      ++counters_.canceled;
    spdlog::info("{} job={} model={} prediction={} error={} latency_ms={}", event, job.id, job.model->entry.name,
                 job.prediction_id.empty() ? "-" : job.prediction_id, log_quote(error),
                 ms_since(job.first_submit, Clock::now()));
  }

  void drop(int64_t id) {
    if (jobs_.erase(id)) claim_wanted_ = true;
  }

  // ---- polls -------------------------------------------------------------

  void schedule_poll(Job& job, SteadyTime when) {
    ++job.timer_gen;
    push_timer(TimerEntry{when, job.id, job.timer_gen});
  }

  void schedule_deadline(Job& job) {
    // gen 0 marks a deadline entry; poll generations start at 1.
    push_timer(TimerEntry{job.deadline, job.id, 0});
  }

  void schedule_reconcile(Job& job, SteadyTime when) {
    job.pending = Pending::reconcile;
    ++job.timer_gen;
    push_timer(TimerEntry{when, job.id, job.timer_gen});
  }

  void push_timer(TimerEntry e) {
    timers_.push(e);
    if (!timer_armed_ || e.when < timer_.expiry()) arm_timer();
  }

  void arm_timer() {
    if (timers_.empty()) return;
    timer_armed_ = true;
    timer_.expires_at(timers_.top().when);
    timer_.async_wait([this, alive = alive_](auto ec) {
      // Aborted: whoever moved the expiry has armed a new wait already. Re-arming
      // here would cancel that one, whose handler would cancel ours: a busy loop.
      if (!*alive || ec == asio::error::operation_aborted) return;
      timer_armed_ = false;
      on_timers();
    });
  }

  void on_timers() {
    const auto now = Clock::now();
    while (!timers_.empty() && timers_.top().when <= now) {
      TimerEntry e = timers_.top();
      timers_.pop();
      auto it = jobs_.find(e.job_id);
      if (it == jobs_.end()) continue;
      Job& job = it->second;
      if (e.gen == 0) {
        if (job.deadline == e.when) on_deadline(job);
        continue;
      }
      if (e.gen != job.timer_gen) continue;
      if (job.pending == Pending::reconcile) {
        reconcile_due_.push_back(job.id);
        continue;
      }
      const double expected = estimator_.expected_s(job.model->entry.name, job.model->entry.expected_s);
      ready_polls_.push(ReadyPoll{Seconds(now - job.created).count() / std::max(expected, 0.01), job.id, e.gen});
    }
    arm_timer();
    pump();
  }

  void dispatch_polls(SteadyTime now) {
    while (!ready_polls_.empty()) {
      if (stopping_ || now < auth_paused_until_) return;
      const ReadyPoll rp = ready_polls_.top();
      auto it = jobs_.find(rp.job_id);
      if (it == jobs_.end() || it->second.timer_gen != rp.gen || it->second.pending != Pending::none) {
        ready_polls_.pop();  // superseded by a later schedule or a request in flight
        continue;
      }
      if (!http_has_room()) return;  // a response will pump again
      if (!requests_.try_take(now)) {
        arm_pump_timer(requests_.wait_time(now));
        return;
      }
      ready_polls_.pop();
      send_poll(it->second);
    }
  }

  void arm_pump_timer(Seconds d) {
    const auto when = Clock::now() + std::chrono::duration_cast<Clock::duration>(d);
    push_timer(TimerEntry{when, 0, 0});
  }

  void send_poll(Job& job) {
    job.pending = Pending::poll;
    ++job.polls;
    ++counters_.polls_sent;
    ++counters_.requests_sent;
    const int64_t id = job.id;
    http_.send(HttpRequest{.method = "GET", .path = "/v1/predictions/" + url_encode(job.prediction_id),
                           .headers = auth_headers(), .hold = hold_while_paused(requests_)},
               [this, alive = alive_, id](HttpResponse r) {
                 if (!*alive) return;
                 on_poll_response(id, std::move(r), "poll");
                 pump();
               });
  }

  void on_poll_response(int64_t id, HttpResponse r, const char* op) {
    note_api_outcome(r);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    Job& job = it->second;
    job.pending = Pending::none;
    const auto now = Clock::now();
    if (r.failure == HttpFailure::held) {  // polls only: cancels are never held
      --job.polls;
      --counters_.polls_sent;
      --counters_.requests_sent;
      schedule_poll(job, now + pause_left(requests_));
      return;
    }
    if (r.failure == HttpFailure::none && r.status == 200) {
      auto parsed = parse_prediction(r.body);
      if (auto* p = std::get_if<Prediction>(&parsed)) {
        if (p->id != job.prediction_id) {
          r.error = "response is for prediction " + p->id;
        } else {
          job.poll_errors = 0;
          if (job.timed_out && std::string_view(op) == "cancel" && !is_terminal(p->status)) {
            // Canceled for the timeout: the cancel is sent, the job ends here.
            Prediction done = *p;
            done.status = RemoteStatus::canceled;
            finish(job, done, false);
            return;
          }
          apply_prediction(job, *p);
          return;
        }
      } else {
        r.error = std::get<std::string>(parsed);
      }
    } else if (r.failure == HttpFailure::none && (r.status == 401 || r.status == 403)) {
      auth_failure(r, op);
    } else if (r.failure == HttpFailure::none && r.status == 429) {
      const double delay_s = throttle_delay(r, job.poll_errors + 1);
      requests_.pause_until(now + to_ms(delay_s));
      ++counters_.throttled;
      spdlog::warn("api_throttled op={} job={} retry_after_s={:.1f}", op, id, delay_s);
    } else if (r.failure == HttpFailure::none) {
      r.error = error_message(r.body, r.status);
    }
    // Poll errors never fail a job; its timeout does.
    ++job.poll_errors;
    const auto delay = backoff_delay(job.poll_errors, std::min(config_.retry.base_ms, 1000),
                                     std::min(config_.retry.max_ms, 30000), rng_);
    if (!r.error.empty())
      spdlog::warn("api_error op={} job={} prediction={} status={} error={} retry_in_ms={}", op, id,
                   job.prediction_id, r.status, log_quote(r.error), delay.count());
    if (std::string_view(op) == "cancel" && job.timed_out) {
      // The cancel could not be confirmed; the server's Cancel-After still applies.
      Prediction done;
      done.id = job.prediction_id;
      done.status = RemoteStatus::canceled;
      finish(job, done, false);
      return;
    }
    if (std::string_view(op) == "cancel") job.cancel_sent = false;
    if (job.timed_out && !job.cancel_sent) {
      // Past its timeout: no more polls, the cancel goes out (and ends the job) now.
      request_cancel(job);
      return;
    }
    schedule_poll(job, now + delay);
  }

  // ---- cancel and timeout --------------------------------------------------

  void request_cancel(Job& job) {
    if (job.pending == Pending::waiting) {
      // Its create never left: it ends here, without a request.
      finish(job, Prediction{.status = RemoteStatus::canceled}, false);
      return;
    }
    if (job.pending != Pending::none && job.pending != Pending::reconcile) return;  // after the response
    // Without a prediction id, reconciliation decides: adopt then cancel, or cancel locally.
    if (job.prediction_id.empty()) return;
    if (const auto now = Clock::now(); now < auth_paused_until_) {
      schedule_poll(job, auth_paused_until_);  // the poll's answer sends the cancel
      return;
    }
    job.cancel_sent = true;
    job.pending = Pending::cancel;
    ++job.timer_gen;  // a scheduled poll is superseded by the cancel's answer
    ++counters_.requests_sent;
    requests_.try_take(Clock::now());  // cancels go first, even over budget
    const int64_t id = job.id;
    spdlog::info("job_cancel_sent job={} prediction={} reason={}", id, job.prediction_id,
                 job.timed_out ? "timeout" : "request");
    http_.send(HttpRequest{.method = "POST", .path = "/v1/predictions/" + url_encode(job.prediction_id) + "/cancel",
                           .headers = auth_headers()},
               [this, alive = alive_, id](HttpResponse r) {
                 if (!*alive) return;
                 on_poll_response(id, std::move(r), "cancel");
                 pump();
               });
  }

  // The job's deadline: its timeout plus timeout_grace. It ends as canceled
  // by the cancel's answer, the create's or the listing's; a second deadline,
  // one request timeout later, ends it locally if none of them came (the API's
  // Cancel-After still stops the prediction there).
  void on_deadline(Job& job) {
    if (job.timed_out) {
      spdlog::warn("job_timeout job={} prediction={} timeout_s={} action=\"ended locally: no answer from the API\"",
                   job.id, job.prediction_id.empty() ? "-" : job.prediction_id, job.timeout_s);
      finish(job, Prediction{.status = RemoteStatus::canceled}, false);
      return;
    }
    job.timed_out = true;
    spdlog::info("job_timeout job={} prediction={} timeout_s={}", job.id,
                 job.prediction_id.empty() ? "-" : job.prediction_id, job.timeout_s);
    job.deadline = Clock::now() + std::chrono::seconds(config_.api.request_timeout_s) + options_.timeout_grace;
    schedule_deadline(job);
    if (!job.prediction_id.empty()) {
      request_cancel(job);  // a request in flight: its answer sends the cancel
      return;
    }
    if (job.pending == Pending::create) return;  // the create's answer decides
    if (job.pending == Pending::waiting) {
      finish(job, Prediction{.status = RemoteStatus::canceled}, false);  // never sent
      return;
    }
    if (job.ambiguous) {
      // The earlier create may exist: look for it now rather than at the next listing.
      if (!job.listing) {
        ++job.timer_gen;
        job.pending = Pending::reconcile;
        reconcile_due_.push_back(job.id);
      }
      return;
    }
    finish(job, Prediction{.status = RemoteStatus::canceled}, false);
  }

  // ---- reconciliation of ambiguous creates ---------------------------------
  //
  // A create that may have reached the server without an answer leaves its
  // job `submitting`. One listing at a time (GET /v1/predictions, newest
  // first, from the earliest submitted_at of its batch) looks for each
  // batch job's prediction by model or version and canonical input: found,
  // it is adopted; proven absent (the listing reached its bound), the create
  // is sent again. A page that fails is tried again kListTries times; a
  // listing that still fails decides nothing, and the job is listed again
  // with backoff, bounded by its timeout, as long as the API is down. Only
  // when the API answers other requests but not the list (a proxy without a
  // usable one) is the create sent again after kListRoundsBeforeResend
  // listings, logged job_retry ambiguous=1.

  void start_reconcile(SteadyTime now) {
    if (stopping_ || now < auth_paused_until_ || now < list_retry_at_) return;
    if (listing_) {
      if (page_retry_ && requests_.try_take(now)) {
        page_retry_ = false;
        list_page(page_path_);
      } else if (page_retry_) {
        arm_pump_timer(requests_.wait_time(now));
      }
      return;
    }
    if (reconcile_due_.empty()) return;
    if (!requests_.try_take(now)) {
      arm_pump_timer(requests_.wait_time(now));
      return;
    }
    batch_.clear();
    std::string since;
    for (int64_t id : reconcile_due_) {
      auto it = jobs_.find(id);
      if (it == jobs_.end() || it->second.listing || it->second.pending != Pending::reconcile) continue;
      Job& job = it->second;
      if (job.canonical.empty()) job.canonical = canonical_json(job.input).value_or("");
      job.listing = true;
      batch_.push_back(id);
      if (since.empty() || job.submitted_at < since) since = job.submitted_at;
    }
    reconcile_due_.clear();
    if (batch_.empty()) return;
    listing_ = true;
    answers_since_ = listing_started_;
    listing_started_ = now;
    // A minute of slack for clock skew between us and the API.
    auto t = parse_utc(since);
    list_since_ = t ? format_utc(*t - std::chrono::minutes(1)) : since;
    found_.clear();
    list_pages_ = 0;
    page_tries_ = 0;
    list_page("/v1/predictions?created_after=" + url_encode(list_since_));
  }

  void list_page(std::string path) {
    page_path_ = std::move(path);
    ++counters_.requests_sent;
    http_.send(HttpRequest{.method = "GET", .path = page_path_, .headers = auth_headers(),
                           .hold = hold_while_paused(requests_)},
               [this, alive = alive_](HttpResponse r) {
                 if (!*alive) return;
                 on_list_page(std::move(r));
                 pump();
               });
  }

  enum class Listed : uint8_t { complete, failed, unsupported };

  void on_list_page(HttpResponse r) {
    if (r.failure == HttpFailure::held) {
      --counters_.requests_sent;
      retry_page_after(pause_left(requests_));
      return;
    }
    note_api_outcome(r);
    std::string error;
    // Other requests got answers since the previous listing began: the API is up.
    bool api_answers = last_api_ok_ > answers_since_;
    if (r.failure != HttpFailure::none) {
      error = r.error;
    } else if (r.status == 429) {
      // Throttled: not a failure of the list; the same page once Retry-After has passed.
      const double delay_s = throttle_delay(r, page_tries_ + 1);
      requests_.pause_until(Clock::now() + to_ms(delay_s));
      ++counters_.throttled;
      spdlog::warn("api_throttled op=list retry_after_s={:.1f}", delay_s);
      retry_page_after(to_ms(delay_s));
      return;
    } else if (r.status == 404 || r.status == 405 || r.status == 501) {
      // This API (a proxy) has no prediction list: it can never tell us.
      end_reconcile(Listed::unsupported, error_message(r.body, r.status), true);
      return;
    } else if (r.status == 401 || r.status == 402 || r.status == 403) {
      auth_failure(r, "list");
      end_reconcile(Listed::failed, error_message(r.body, r.status), false);
      return;
    } else if (r.status != 200) {
      error = error_message(r.body, r.status);
      api_answers = api_answers || r.status < 500;  // a 4xx: the API is up, its list is not usable
    } else {
      auto parsed = parse_prediction_page(r.body);
      if (auto* page = std::get_if<PredictionPage>(&parsed)) {
        page_tries_ = 0;
        ++list_pages_;
        bool older = false;
        for (auto& p : page->results) {
          if (p.created_at && *p.created_at < list_since_) older = true;
          found_.push_back(std::move(p));
        }
        if (!page->next || older || every_batch_job_found()) {
          end_reconcile(Listed::complete, "", true);
          return;
        }
        std::string next = next_path(*page->next);
        if (next.empty() || list_pages_ >= kMaxListPages) {
          end_reconcile(Listed::failed,
                        "the prediction list was cut off after " + std::to_string(list_pages_) + " pages", true);
          return;
        }
        list_page(std::move(next));
        return;
      }
      error = std::get<std::string>(parsed);
      api_answers = true;  // an answer, if not a usable one
    }
    if (++page_tries_ < kListTries) {
      const auto delay = backoff_delay(page_tries_, config_.retry.base_ms, 10000, rng_);
      spdlog::warn("api_error op=list error={} try={} retry_in_ms={}", log_quote(error), page_tries_, delay.count());
      retry_page_after(delay);
      return;
    }
    end_reconcile(Listed::failed, error, api_answers);
  }

  void retry_page_after(milliseconds delay) {
    page_retry_ = true;
    list_retry_at_ = Clock::now() + delay;
    arm_pump_timer(Seconds(delay.count() / 1000.0));
  }

  // The oldest listed prediction (found_ is newest first) that `job` could
  // have created and that no job has taken: two jobs with identical inputs
  // pair with predictions in order.
  const Prediction* find_match(const Job& job, const std::unordered_set<std::string>& taken) const {
    for (auto it = found_.rbegin(); it != found_.rend(); ++it) {
      const Prediction& p = *it;
      if (taken.count(p.id) || p.canonical_input != job.canonical) continue;
      if (job.version.empty() ? p.model && *p.model == job.model->entry.name : p.version && *p.version == job.version)
        return &p;
    }
    return nullptr;
  }

  std::unordered_set<std::string> taken_predictions() const {
    std::unordered_set<std::string> taken;
    for (const auto& [id, job] : jobs_)
      if (!job.prediction_id.empty()) taken.insert(job.prediction_id);
    return taken;
  }

  // Every job of the batch has its prediction among those listed: no need to read further.
  bool every_batch_job_found() const {
    auto taken = taken_predictions();
    for (int64_t id : batch_) {
      auto it = jobs_.find(id);
      if (it == jobs_.end()) continue;
      const Prediction* p = find_match(it->second, taken);
      if (!p) return false;
      taken.insert(p->id);
    }
    return true;
  }

  void end_reconcile(Listed listed, const std::string& error, bool api_answers) {
    listing_ = false;
    page_retry_ = false;
    list_retry_at_ = {};
    auto taken = taken_predictions();
    const auto now = Clock::now();
    for (int64_t id : batch_) {
      auto it = jobs_.find(id);
      if (it == jobs_.end()) continue;
      Job& job = it->second;
      job.listing = false;
      job.pending = Pending::none;
      // A match is proof even in a listing that failed later on.
      if (const Prediction* match = find_match(job, taken)) {
        taken.insert(match->id);
        job.prediction_id = match->id;
        job.ambiguous = false;
        job.created = job.first_submit;
        job.list_rounds = job.list_failures = 0;
        ++counters_.adopted;
        spdlog::info("job_adopted job={} prediction={} status={}", id, match->id, to_string(match->status));
        apply_prediction(job, *match);
        continue;
      }
      if (job.cancel_requested || job.timed_out) {
        // Nothing to cancel that we know of; the API's Cancel-After stops one we could not see.
        job.ambiguous = false;
        finish(job, Prediction{.status = RemoteStatus::canceled}, false);
        continue;
      }
      if (listed == Listed::complete) {
        job.ambiguous = false;
        spdlog::info("job_retry job={} attempt={} ambiguous=0 reason=\"no prediction found for the earlier create\"",
                     id, job.attempts + 1);
        resend(job, "");
        continue;
      }
      const std::string why = listed == Listed::unsupported
                                  ? "the API has no prediction list to check for the earlier create: " + error
                                  : "the prediction list could not be read to check for the earlier create: " + error;
      if (listed == Listed::unsupported || (api_answers && ++job.list_rounds >= kListRoundsBeforeResend)) {
        job.ambiguous = false;
        spdlog::warn("job_retry job={} attempt={} ambiguous=1 reason={}", id, job.attempts + 1, log_quote(why));
        resend(job, why);
        continue;
      }
      // Still ambiguous: a new create could run (and bill) the job twice.
      // List again later; the job's timeout bounds the wait.
      ++job.list_failures;
      const auto delay =
          backoff_delay(job.list_failures, config_.retry.base_ms, std::min(config_.retry.max_ms, 60000), rng_);
      spdlog::warn("job_reconcile_failed job={} error={} reconcile_in_ms={}", id,
                   log_quote("listing predictions failed: " + error), delay.count());
      schedule_reconcile(job, now + delay);
    }
    batch_.clear();
    found_.clear();
  }

  // The create again, within the create budget (else the job waits in the
  // database), behind the connections and any pause (create_queue_).
  void resend(Job& job, const std::string& why) {
    if (job.attempts >= config_.retry.max_attempts) {
      give_up(job, why);
      return;
    }
    if (stopping_) return;  // stays `submitting`: reconciled at the next start
    const auto now = Clock::now();
    if (creates_.wait_time(now) > Seconds(1)) {
      // Inside a 429's Retry-After: wait in the database.
      requeue(job, std::chrono::duration_cast<milliseconds>(creates_.wait_time(now)) + milliseconds(1));
      return;
    }
    enqueue_create(job);
    dispatch_creates(now);
  }

  // ---- housekeeping --------------------------------------------------------

  void arm_lag_timer() {
    lag_expected_ = Clock::now() + milliseconds(100);
    lag_timer_.expires_at(lag_expected_);
    lag_timer_.async_wait([this, alive = alive_](auto ec) {
      if (ec || !*alive) return;
      const double lag = std::chrono::duration<double, std::milli>(Clock::now() - lag_expected_).count();
      counters_.max_loop_lag_ms = std::max(counters_.max_loop_lag_ms, lag);
      window_lag_ms_ = std::max(window_lag_ms_, lag);
      if (!stopping_) arm_lag_timer();
    });
  }

  void arm_stats_timer() {
    stats_timer_.expires_after(options_.stats_interval);
    stats_timer_.async_wait([this, alive = alive_](auto ec) {
      if (ec || !*alive) return;
      const double secs = static_cast<double>(options_.stats_interval.count());
      std::string queued = "?";  // a read may meet a busy WAL index, rarely
      try {
        queued = std::to_string(store_.count_queued());
      } catch (const BusyError&) {
      }
      spdlog::info("stats queued={} in_flight={} succeeded={} failed={} canceled={} requests_per_s={:.1f} throttled={} "
                   "db_busy={} loop_lag_ms={:.1f} credits={}",
                   queued, jobs_.size(), counters_.succeeded, counters_.failed, counters_.canceled,
                   (counters_.requests_sent - last_requests_) / secs, counters_.throttled, counters_.db_busy,
                   window_lag_ms_, counters_.credits);
      last_requests_ = counters_.requests_sent;
      window_lag_ms_ = 0;
      spdlog::default_logger()->flush();
      arm_stats_timer();
    });
  }

  void maybe_finish_stop() {
    if (!stopping_ || !stop_done_) return;
    const bool drained = http_.in_flight() == 0 || Clock::now() >= stop_deadline_;
    if (drained && pending_.empty()) {
      timer_.cancel();
      lag_timer_.cancel();
      flush_timer_.cancel();
      commit_timer_.cancel();
      auto done = std::move(stop_done_);
      stop_done_ = nullptr;
      asio::post(io_, std::move(done));
      return;
    }
    if (!drained) {
      // Check again soon; responses also bring us back here through flush().
      flush_timer_.expires_after(milliseconds(20));
      flush_timer_.async_wait([this, alive = alive_](auto ec) {
        if (ec || !*alive) return;
        if (!pending_.empty()) {
          flush();
          return;
        }
        maybe_finish_stop();
      });
    } else if (!flush_posted_) {
      flush();
    }
  }

  asio::io_context& io_;
  Store& store_;
  HttpClient& http_;
  Config config_;
  std::string token_;
  EngineOptions options_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  std::unordered_map<std::string, ModelState> models_;
  std::unordered_map<int64_t, Job> jobs_;
  RuntimeEstimator estimator_;
  TokenBucket creates_;
  TokenBucket requests_;
  SteadyTime auth_paused_until_{};

  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<>> timers_;
  asio::steady_timer timer_;
  bool timer_armed_ = false;
  std::priority_queue<ReadyPoll> ready_polls_;
  std::deque<int64_t> create_queue_;  // jobs in Pending::waiting, in claim order
  int creates_in_flight_ = 0;

  asio::steady_timer claim_timer_;
  bool claim_timer_armed_ = false;
  bool claim_wanted_ = true;
  bool pumping_ = false;
  bool force_check_ = true;

  asio::steady_timer db_timer_;
  asio::steady_timer recheck_timer_;
  std::optional<asio::posix::stream_descriptor> inotify_;
  std::array<char, 4096> inotify_buf_{};

  std::vector<Transition> pending_;
  bool flush_posted_ = false;
  asio::steady_timer flush_timer_;  // the drain at stop
  asio::steady_timer commit_timer_;  // the next group commit, or a busy database's retry
  SteadyTime last_flush_{};
  SteadyTime last_busy_log_{};
  asio::steady_timer expiry_timer_;
  bool expiry_armed_ = false;

  std::vector<int64_t> reconcile_due_;
  std::vector<int64_t> batch_;
  std::vector<Prediction> found_;
  std::string list_since_;
  int list_pages_ = 0;
  int page_tries_ = 0;       // failed tries of the current page
  std::string page_path_;    // the current page, tried again after a failure
  bool page_retry_ = false;  // page_path_ is due again at list_retry_at_
  SteadyTime list_retry_at_{};
  SteadyTime listing_started_{};
  SteadyTime answers_since_{};
  bool listing_ = false;

  int api_failures_ = 0;      // consecutive requests without an HTTP answer below 500
  SteadyTime outage_until_{};  // no new claims before this (kOutageAfter)
  SteadyTime last_api_ok_{};
  SteadyTime outage_started_{};

  asio::steady_timer lag_timer_;
  SteadyTime lag_expected_{};
  double window_lag_ms_ = 0;
  asio::steady_timer stats_timer_;
  uint64_t last_requests_ = 0;

  bool stopping_ = false;
  std::function<void()> stop_done_;
  SteadyTime stop_deadline_{};
  SteadyTime started_at_{};

  std::mt19937_64 rng_;
  int not_sent_streak_ = 0;  // consecutive creates that never left: their backoff grows
  EngineCounters counters_;
};

Engine::Engine(asio::io_context& io, Store& store, HttpClient& http, const Config& config, std::string token,
               EngineOptions options)
    : impl_(std::make_unique<Impl>(io, store, http, config, std::move(token), std::move(options))) {}
Engine::~Engine() = default;
void Engine::start() { impl_->start(); }
void Engine::stop(std::function<void()> done) { impl_->stop(std::move(done)); }
void Engine::reload(const Config& config) { impl_->reload(config); }
EngineCounters Engine::counters() const { return impl_->counters(); }
std::size_t Engine::in_flight() const { return impl_->in_flight(); }
bool Engine::auth_paused() const { return impl_->auth_paused(); }

}  // namespace predictd
