#include "archive.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <random>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include "config.h"
#include "http_client.h"
#include "store.h"
#include "timefmt.h"

namespace predictd {
namespace asio = boost::asio;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kWritebackStep = 1024 * 1024;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

struct UrlParts {
  std::string scheme;     // lower case
  std::string authority;  // host[:port] as written
  std::string target;     // path and query, at least "/"
  std::string origin;     // scheme://host:port, lower case, port explicit: what the token check compares
};

std::optional<UrlParts> split_url(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) return std::nullopt;
  UrlParts u;
  u.scheme = lower(url.substr(0, sep));
  if (u.scheme != "http" && u.scheme != "https") return std::nullopt;
  auto rest = url.substr(sep + 3);
  rest = rest.substr(0, rest.find('#'));
  const auto slash = rest.find_first_of("/?");
  u.authority = std::string(rest.substr(0, slash));
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (u.target.front() == '?') u.target.insert(0, "/");
  if (u.authority.empty() || u.authority.find('@') != std::string::npos) return std::nullopt;
  std::string host = lower(u.authority), port = u.scheme == "https" ? "443" : "80";
  const auto colon = host.rfind(':');
  if (colon != std::string::npos && host.find(']', colon) == std::string::npos) {
    port = host.substr(colon + 1);
    host.resize(colon);
  }
  u.origin = u.scheme + "://" + host + ":" + port;
  return u;
}

// A Location header against the URL that answered it (RFC 3986 §5.2, the common forms).
std::optional<std::string> resolve_location(const UrlParts& base, std::string_view loc) {
  if (loc.find("://") != std::string_view::npos) return std::string(loc);
  if (loc.starts_with("//")) return base.scheme + ":" + std::string(loc);
  const std::string root = base.scheme + "://" + base.authority;
  if (loc.starts_with("/")) return root + std::string(loc);
  if (loc.empty()) return std::nullopt;
  std::string dir = base.target.substr(0, base.target.find('?'));
  dir.resize(dir.rfind('/') + 1);
  return root + dir + std::string(loc);
}

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

struct Sha256 {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  Sha256() { EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr); }
  void update(std::string_view s) { EVP_DigestUpdate(ctx.get(), s.data(), s.size()); }
  std::string final_hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &n);
    return hex(md, n);
  }
};

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// So that the rename survives a power loss, not only the file's bytes.
void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

std::optional<std::string> extension_from_url(std::string_view url) {
  if (url.starts_with("data:")) return std::nullopt;
  auto path = url.substr(0, url.find_first_of("?#"));
  const auto sep = path.find("://");
  if (sep != std::string_view::npos) {
    path.remove_prefix(sep + 3);
    const auto slash = path.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    path.remove_prefix(slash);
  }
  const auto name = path.substr(path.rfind('/') + 1);
  const auto dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  const auto ext = name.substr(dot + 1);
  if (ext.empty() || ext.size() > 5 ||
      !std::all_of(ext.begin(), ext.end(), [](unsigned char c) { return std::isalnum(c); }))
    return std::nullopt;
  return lower(ext);
}

std::optional<std::string> extension_from_content_type(std::string_view content_type) {
  auto t = lower(content_type.substr(0, content_type.find(';')));
  while (!t.empty() && t.back() == ' ') t.pop_back();
  static const std::pair<const char*, const char*> kTypes[] = {
      {"image/webp", "webp"}, {"image/png", "png"},      {"image/jpeg", "jpg"}, {"image/gif", "gif"},
      {"image/svg+xml", "svg"}, {"video/mp4", "mp4"},    {"video/webm", "webm"}, {"audio/mpeg", "mp3"},
      {"audio/wav", "wav"},   {"text/plain", "txt"},     {"application/json", "json"}};
  for (const auto& [type, ext] : kTypes)
    if (t == type) return std::string(ext);
  return std::nullopt;
}

std::optional<DataUrl> decode_data_url(std::string_view url) {
  if (!url.starts_with("data:")) return std::nullopt;
  const auto comma = url.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  const auto meta = url.substr(5, comma - 5);
  const auto payload = url.substr(comma + 1);
  DataUrl d;
  const bool base64 = meta.ends_with(";base64");
  d.media_type = lower(meta.substr(0, meta.find(';')));
  if (d.media_type.empty()) d.media_type = "text/plain";
  if (base64) {
    std::string clean;
    clean.reserve(payload.size());
    for (char c : payload)
      if (c != '\n' && c != '\r' && c != ' ') clean += c;
    if (clean.size() % 4 != 0) return std::nullopt;
    d.bytes.resize(clean.size() / 4 * 3);
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(d.bytes.data()),
                                  reinterpret_cast<const unsigned char*>(clean.data()), static_cast<int>(clean.size()));
    if (n < 0) return std::nullopt;
    // EVP_DecodeBlock counts '=' padding as zero bytes.
    std::size_t len = static_cast<std::size_t>(n);
    for (auto it = clean.rbegin(); it != clean.rend() && *it == '='; ++it) --len;
    d.bytes.resize(len);
  } else {
    for (std::size_t i = 0; i < payload.size(); ++i) {
      if (payload[i] != '%') {
        d.bytes += payload[i];
        continue;
      }
      if (i + 2 >= payload.size() || !std::isxdigit(static_cast<unsigned char>(payload[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(payload[i + 2])))
        return std::nullopt;
      d.bytes += static_cast<char>(std::stoi(std::string(payload.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    }
  }
  return d;
}

class Archiver::Impl : public std::enable_shared_from_this<Archiver::Impl> {
 public:
  Impl(asio::io_context& io, Store& store, const Config& config, std::string token, ArchiveOptions options)
      : io_(io), store_(store), settings_(config.archive), ca_file_(config.api.ca_file), token_(std::move(token)),
        options_(options), wait_timer_(io), write_timer_(io), rng_(std::random_device{}()) {
    if (!settings_.dir) throw std::invalid_argument("archive.dir is not set");
    if (auto api = split_url(config.api.base_url)) api_origin_ = api->origin;
  }

  ~Impl() {
    for (auto& [id, d] : active_)
      if (d.fd >= 0) ::close(d.fd);
  }

  void resume() {
    for (JobRow& row : store_.pending_archives()) take(row);
    pump();
  }

  void add(int64_t job_id) {
    if (stopped_) return;
    if (auto row = store_.get(job_id)) take(*row);
    pump();
  }

  void stop() {
    if (stopped_) return;
    stopped_ = true;
    wait_timer_.cancel();
    for (auto& [id, d] : active_) {
      if (d.fd >= 0) ::close(d.fd);
      d.fd = -1;
      ::unlink(d.part.c_str());
    }
    active_.clear();
    for (auto& [origin, client] : clients_) client->shutdown();
    write_timer_.cancel();
    flush_writes();  // one try: what stays unwritten is archived again at the next start
  }

  ArchiveCounters counters_;
  std::size_t pending_jobs() const { return jobs_.size(); }
  std::size_t active_downloads() const { return active_.size(); }

 private:
  struct Output {
    std::string url;      // as in `output`
    std::string current;  // after redirects
    int redirects = 0;
    int failures = 0;
    bool stored = false;
    std::string path;
    uint64_t bytes = 0;
    std::string sha256;
  };
  struct Job {
    int64_t id = 0;
    std::string day_dir;
    std::vector<Output> outputs;
    std::size_t stored = 0;
    // Transient failures are retried until completed_at + give_up_after: the
    // window is the job's, not the process's, so restarts do not extend it.
    std::chrono::system_clock::time_point give_up_at;
    bool finished = false;  // files or error decided; waiting for the write
    std::optional<std::string> files;
    std::optional<std::string> error;
  };
  struct Download {
    int64_t job = 0;
    std::size_t index = 0;
    int fd = -1;
    std::string part;
    Sha256 sha;
    uint64_t bytes = 0;
    uint64_t flushed = 0;  // writeback started up to here
    uint64_t synced = 0;   // written back up to here
    bool too_large = false;
    std::string write_error;
    Clock::time_point began;
  };

  void take(const JobRow& row) {
    if (row.status != JobStatus::succeeded || row.files || row.archive_error || !row.output) return;
    if (jobs_.count(row.id)) return;
    Job job;
    job.id = row.id;
    const auto now = std::chrono::system_clock::now();
    const auto completed = row.completed_at ? parse_utc(*row.completed_at) : std::nullopt;
    // Past the window already (a restart long after): every output still gets
    // one try, as its link may still work; a transient failure then gives up.
    job.give_up_at = completed.value_or(now) + options_.give_up_after;
    const std::string day = row.completed_at.value_or(format_utc(now));
    job.day_dir = *settings_.dir + "/" + day.substr(0, 4) + "/" + day.substr(5, 2) + "/" + day.substr(8, 2);
    boost::system::error_code ec;
    const json::value v = json::parse(*row.output, ec);
    bool ok = !ec && v.is_array();
    if (ok)
      for (const auto& e : v.get_array()) {
        if (!e.is_string()) {
          ok = false;
          break;
        }
        job.outputs.push_back(Output{.url = std::string(e.get_string()), .current = std::string(e.get_string())});
      }
    auto& j = jobs_.emplace(row.id, std::move(job)).first->second;
    if (!ok) {
      finish_job(j, "the output is not a JSON array of URL strings");
      return;
    }
    if (j.outputs.empty()) {
      finish_job(j, std::nullopt);
      return;
    }
    for (std::size_t i = 0; i < j.outputs.size(); ++i) ready_.emplace_back(j.id, i);
  }

  void pump() {
    const auto slots = static_cast<std::size_t>(std::max(1, settings_.concurrency));
    while (!stopped_ && !ready_.empty() && active_.size() < slots) {
      const auto [job_id, index] = ready_.front();
      ready_.pop_front();
      auto it = jobs_.find(job_id);
      if (it == jobs_.end() || it->second.finished) continue;
      start(it->second, index);
    }
  }

  std::string part_path(const Job& job, std::size_t index) const {
    return job.day_dir + "/" + std::to_string(job.id) + "-" + std::to_string(index) + ".part";
  }

  // Opens the temporary file of one attempt; it is truncated, so a leftover from a crash starts over.
  std::optional<std::string> open_part(Download& d, const Job& job) {
    std::error_code ec;
    std::filesystem::create_directories(job.day_dir, ec);
    if (ec) return "cannot create " + job.day_dir + ": " + ec.message();
    d.part = part_path(job, d.index);
    d.fd = ::open(d.part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (d.fd < 0) return errno_text("open " + d.part);
    return std::nullopt;
  }

  void start(Job& job, std::size_t index) {
    Output& out = job.outputs[index];
    const uint64_t key = next_download_++;
    Download& d = active_[key];
    d.job = job.id;
    d.index = index;
    d.began = Clock::now();
    if (auto err = open_part(d, job)) {
      transient(key, *err);
      return;
    }
    if (out.current.starts_with("data:")) {
      // Decoded here, in one go: the row already held the whole URL in memory.
      auto data = decode_data_url(out.current);
      if (!data) return permanent(key, "output " + std::to_string(index) + ": malformed data: URL");
      if (data->bytes.size() > static_cast<uint64_t>(settings_.max_file_bytes))
        return permanent(key, "output " + std::to_string(index) + ": " + std::to_string(data->bytes.size()) +
                                  " bytes, over archive.max_file_bytes");
      if (!disk([&] { return write_all(d.fd, data->bytes); })) return transient(key, errno_text("write"));
      d.sha.update(data->bytes);
      d.bytes = data->bytes.size();
      const auto ext = extension_from_content_type(data->media_type).value_or("bin");
      asio::post(io_, [self = shared_from_this(), key, ext] { self->complete(key, ext); });
      return;
    }
    const auto url = split_url(out.current);
    if (!url) return permanent(key, "output " + std::to_string(index) + ": not an http(s) URL");
    HttpClient& client = client_for(*url);
    HttpRequest req{.method = "GET", .path = url->target};
    // The token belongs to the API: never to a file host, a redirect target included.
    if (!api_origin_.empty() && url->origin == api_origin_)
      req.headers.emplace_back("Authorization", "Bearer " + token_);
    ++counters_.requests;
    const uint64_t limit = static_cast<uint64_t>(std::max<int64_t>(settings_.max_file_bytes, 0));
    client.stream(
        std::move(req), limit,
        [weak = weak_from_this(), key, limit](std::string_view chunk) {
          auto self = weak.lock();
          if (!self || self->stopped_) return false;
          auto it = self->active_.find(key);
          if (it == self->active_.end()) return false;
          Download& dl = it->second;
          if (dl.bytes + chunk.size() > limit) {
            dl.too_large = true;
            return false;
          }
          if (!self->disk([&] { return write_all(dl.fd, chunk); })) {
            dl.write_error = errno_text("write " + dl.part);
            return false;
          }
          dl.sha.update(chunk);
          dl.bytes += chunk.size();
          // Writeback in steps as the file grows: start this step's, then wait
          // for the step before it, which has normally finished long ago. At
          // most two steps are ever unwritten, so when the disk is slower than
          // the network the loop waits a step's time at a time (never for the
          // kernel's dirty limits in a write()), and the final fsync, which
          // blocks the loop too, finds little left.
          if (dl.bytes - dl.flushed >= kWritebackStep) {
            self->disk([&] {
              return ::sync_file_range(dl.fd, static_cast<off_t>(dl.flushed),
                                       static_cast<off_t>(dl.bytes - dl.flushed), SYNC_FILE_RANGE_WRITE);
            });
            if (dl.flushed > dl.synced) {
              self->disk([&] {
                return ::sync_file_range(dl.fd, static_cast<off_t>(dl.synced),
                                         static_cast<off_t>(dl.flushed - dl.synced),
                                         SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                             SYNC_FILE_RANGE_WAIT_AFTER);
              });
              dl.synced = dl.flushed;
            }
            dl.flushed = dl.bytes;
          }
          return true;
        },
        [this, key, url = *url](HttpResponse r) { answered(key, url, std::move(r)); });
  }

  HttpClient& client_for(const UrlParts& url) {
    auto& c = clients_[url.origin];
    if (!c) {
      HttpClientSettings s;
      s.base_url = url.scheme + "://" + url.authority;
      s.ca_file = ca_file_;
      s.max_connections = std::max(1, settings_.concurrency);
      s.connect_timeout = options_.connect_timeout;
      s.request_timeout = options_.read_timeout;
      s.user_agent = std::string("predictd/") + PREDICTD_VERSION;
      c = std::make_unique<HttpClient>(io_, std::move(s));
    }
    return *c;
  }

  void answered(uint64_t key, const UrlParts& url, HttpResponse r) {
    if (stopped_) return;
    auto it = active_.find(key);
    if (it == active_.end()) return;
    Download& d = it->second;
    Job& job = jobs_.at(d.job);
    Output& out = job.outputs[d.index];
    const std::string what = "output " + std::to_string(d.index);
    if (d.too_large)
      return permanent(key, what + ": larger than archive.max_file_bytes (" +
                                std::to_string(settings_.max_file_bytes) + " bytes)");
    if (r.failure == HttpFailure::too_large)
      return permanent(key, what + ": larger than archive.max_file_bytes (" +
                                std::to_string(settings_.max_file_bytes) + " bytes)");
    if (!d.write_error.empty()) return transient(key, d.write_error);
    if (r.failure != HttpFailure::none) return transient(key, r.error);
    const int s = r.status;
    if (s >= 200 && s < 300) {
      auto ext = extension_from_url(out.url);
      if (!ext) ext = extension_from_url(out.current);
      if (!ext)
        if (const auto* ct = r.header("content-type")) ext = extension_from_content_type(*ct);
      return complete(key, ext.value_or("bin"));
    }
    if (s == 301 || s == 302 || s == 303 || s == 307 || s == 308) {
      const auto* loc = r.header("location");
      auto next = loc ? resolve_location(url, *loc) : std::nullopt;
      if (!next) return permanent(key, what + ": redirect without a usable Location");
      // Verified TLS does not end at a redirect: an https link never continues in plain text.
      if (url.scheme == "https" && lower(next->substr(0, 5)) == "http:")
        return permanent(key, what + ": redirect from https to http refused");
      if (++out.redirects > options_.max_redirects)
        return permanent(key, what + ": more than " + std::to_string(options_.max_redirects) + " redirects");
      out.current = *next;
      discard(key);
      start(job, out_index(job, out));
      return;
    }
    const std::string status = "HTTP " + std::to_string(s) + " from " + url.authority;
    if (s == 403 || s == 404 || s == 410) return permanent(key, what + ": " + status + " (the link has expired)");
    if (s >= 500 || s == 408 || s == 429) return transient(key, status);
    permanent(key, what + ": " + status);
  }

  // Runs one blocking file-system call and keeps the longest one's time.
  template <class F>
  auto disk(F&& f) -> decltype(f()) {
    const auto t0 = Clock::now();
    auto r = f();
    counters_.max_disk_call_ms = std::max(
        counters_.max_disk_call_ms, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    return r;
  }

  static std::size_t out_index(const Job& job, const Output& out) {
    return static_cast<std::size_t>(&out - job.outputs.data());
  }

  // Closes and removes the temporary file of a download that did not produce the output.
  void discard(uint64_t key) {
    auto it = active_.find(key);
    if (it == active_.end()) return;
    if (it->second.fd >= 0) ::close(it->second.fd);
    if (!it->second.part.empty()) ::unlink(it->second.part.c_str());
    active_.erase(it);
  }

  void complete(uint64_t key, const std::string& ext) {
    if (stopped_) return;
    auto it = active_.find(key);
    if (it == active_.end()) return;
    Download& d = it->second;
    const auto sync_start = Clock::now();
    if (disk([&] { return ::fsync(d.fd); }) != 0) return transient(key, errno_text("fsync"));
    const auto fsync_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - sync_start).count();
    ::close(d.fd);
    d.fd = -1;
    Job& job = jobs_.at(d.job);
    Output& out = job.outputs[d.index];
    const std::string final_path =
        job.day_dir + "/" + std::to_string(job.id) + "-" + std::to_string(d.index) + "." + ext;
    if (disk([&] { return ::rename(d.part.c_str(), final_path.c_str()); }) != 0)
      return transient(key, errno_text("rename"));
    disk([&] {
      fsync_dir(job.day_dir);
      return 0;
    });
    out.stored = true;
    out.path = final_path;
    out.bytes = d.bytes;
    out.sha256 = d.sha.final_hex();
    ++counters_.files;
    counters_.bytes += d.bytes;
    spdlog::info("archive_stored job={} index={} path={} bytes={} ms={} fsync_ms={}", job.id, d.index, final_path,
                 d.bytes, std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - d.began).count(),
                 fsync_ms);
    active_.erase(it);
    if (++job.stored == job.outputs.size() && !job.finished) finish_job(job, std::nullopt);
    pump();
  }

  void transient(uint64_t key, const std::string& error) {
    auto it = active_.find(key);
    if (it == active_.end()) return;
    const int64_t job_id = it->second.job;
    const std::size_t index = it->second.index;
    discard(key);
    Job& job = jobs_.at(job_id);
    Output& out = job.outputs[index];
    ++out.failures;
    std::chrono::milliseconds delay = options_.backoff_base * (int64_t{1} << std::min(out.failures - 1, 20));
    delay = std::min(delay, options_.backoff_max);
    delay = std::chrono::milliseconds(
        static_cast<int64_t>(static_cast<double>(delay.count()) * std::uniform_real_distribution<>(0.8, 1.2)(rng_)));
    const auto when = Clock::now() + delay;
    if (std::chrono::system_clock::now() + delay > job.give_up_at) {
      const auto secs = std::chrono::duration_cast<std::chrono::seconds>(options_.give_up_after).count();
      finish_job(job, "output " + std::to_string(index) + ": gave up, retry window over (" + std::to_string(secs) +
                          " s from completed_at): " + error);
      pump();
      return;
    }
    ++counters_.retries;
    spdlog::warn("archive_retry job={} index={} failures={} retry_in_ms={} error=\"{}\"", job.id, index, out.failures,
                 delay.count(), error);
    // A redirect target may expire sooner than the link: start over from the output's own URL.
    out.current = out.url;
    out.redirects = 0;
    waiting_.emplace(when, std::make_pair(job.id, index));
    arm_wait_timer();
    pump();
  }

  void permanent(uint64_t key, const std::string& error) {
    auto it = active_.find(key);
    if (it == active_.end()) return;
    const int64_t job_id = it->second.job;
    discard(key);
    Job& job = jobs_.at(job_id);
    if (!job.finished) finish_job(job, error);
    pump();
  }

  void arm_wait_timer() {
    if (waiting_.empty() || stopped_) return;
    wait_timer_.expires_at(waiting_.begin()->first);
    wait_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->stopped_) return;
      const auto now = Clock::now();
      while (!self->waiting_.empty() && self->waiting_.begin()->first <= now) {
        self->ready_.push_back(self->waiting_.begin()->second);
        self->waiting_.erase(self->waiting_.begin());
      }
      self->arm_wait_timer();
      self->pump();
    });
  }

  void finish_job(Job& job, std::optional<std::string> error) {
    job.finished = true;
    if (error) {
      // Outputs stored before the failure stay on disk (the job was paid for and
      // their links may be gone by now); the error names them so that they are
      // not orphans nobody knows of.
      std::string kept;
      for (const Output& o : job.outputs)
        if (o.stored) kept += (kept.empty() ? "" : ", ") + o.path;
      if (!kept.empty()) *error += "; kept: " + kept;
      job.error = std::move(error);
      ++counters_.jobs_failed;
      spdlog::warn("archive_failed job={} error=\"{}\"", job.id, *job.error);
      // Outputs of this job still downloading are abandoned.
      std::vector<uint64_t> keys;
      for (const auto& [key, d] : active_)
        if (d.job == job.id) keys.push_back(key);
      for (uint64_t k : keys) discard(k);
    } else {
      json::array files;
      uint64_t total = 0;
      for (const Output& o : job.outputs) {
        files.push_back(json::object{{"url", o.url}, {"path", o.path}, {"bytes", o.bytes}, {"sha256", o.sha256}});
        total += o.bytes;
      }
      job.files = json::serialize(files);
      ++counters_.jobs_done;
      spdlog::info("archive_done job={} files={} bytes={}", job.id, job.outputs.size(), total);
    }
    writes_.push_back(job.id);
    flush_writes();
  }

  void flush_writes() {
    while (!writes_.empty()) {
      const int64_t id = writes_.front();
      auto it = jobs_.find(id);
      if (it == jobs_.end()) {
        writes_.pop_front();
        continue;
      }
      auto r = store_.set_archive_result(id, it->second.files, it->second.error);
      if (!r) {
        if (stopped_) return;
        write_timer_.expires_after(options_.busy_retry);
        write_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
          if (auto self = weak.lock(); self && !ec) self->flush_writes();
        });
        return;
      }
      if (!r.value)
        spdlog::warn("archive_lost job={} reason=\"the row changed or was deleted by another process\"", id);
      writes_.pop_front();
      jobs_.erase(it);
    }
  }

  asio::io_context& io_;
  Store& store_;
  ArchiveSettings settings_;
  std::optional<std::string> ca_file_;
  std::string token_;
  ArchiveOptions options_;
  std::string api_origin_;
  std::map<int64_t, Job> jobs_;
  std::deque<std::pair<int64_t, std::size_t>> ready_;
  std::multimap<Clock::time_point, std::pair<int64_t, std::size_t>> waiting_;
  std::map<uint64_t, Download> active_;
  uint64_t next_download_ = 0;
  std::deque<int64_t> writes_;
  asio::steady_timer wait_timer_;
  asio::steady_timer write_timer_;
  std::minstd_rand rng_;
  bool stopped_ = false;
  // Last: destroyed first, so no client callback reaches a half-destroyed Impl.
  std::map<std::string, std::unique_ptr<HttpClient>> clients_;
};

Archiver::Archiver(asio::io_context& io, Store& store, const Config& config, std::string token,
                   ArchiveOptions options)
    : impl_(std::make_shared<Impl>(io, store, config, std::move(token), options)) {}
Archiver::~Archiver() = default;
void Archiver::resume() { impl_->resume(); }
void Archiver::add(int64_t job_id) { impl_->add(job_id); }
void Archiver::stop() { impl_->stop(); }
ArchiveCounters Archiver::counters() const { return impl_->counters_; }
std::size_t Archiver::pending_jobs() const { return impl_->pending_jobs(); }
std::size_t Archiver::active_downloads() const { return impl_->active_downloads(); }

}  // namespace predictd
