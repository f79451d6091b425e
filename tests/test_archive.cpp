// Archiving outputs (SPEC §9): predictd-sim in-process over TLS serves the
// output bytes; the engine and the archiver share the test's io_context.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <regex>
#include <sstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <openssl/evp.h>

#include "archive.h"
#include "config.h"
#include "ctl.h"
#include "engine.h"
#include "http_client.h"
#include "sim_files.h"
#include "sim_server.h"
#include "sqlite.h"
#include "store.h"
#include "http_test_server.h"
#include "test_util.h"
#include "timefmt.h"
#include "tls_cert.h"

using namespace predictd;
namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kToken = "r8_archive_token_0123456789";
constexpr double kTimeScale = 300;  // a 305 s video run takes about a second

std::string sha256_hex(const std::function<void(const std::function<void(std::string_view)>&)>& feed) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  feed([&](std::string_view s) { EVP_DigestUpdate(ctx, s.data(), s.size()); });
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, md, &n);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  char buf[3];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", md[i]);
    hex += buf;
  }
  return hex;
}

std::string sha256_of_file(const std::string& path) {
  return sha256_hex([&](const auto& put) {
    std::ifstream in(path, std::ios::binary);
    std::string buf(1 << 16, '\0');
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0)
      put(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount())));
  });
}

// What the simulator serves for an output link, hashed piece by piece.
std::string sha256_of_sim_output(const sim::OutputFile& f) {
  return sha256_hex([&](const auto& put) {
    for (uint64_t off = 0; off < f.size; off += 1 << 16) put(sim::output_bytes(f, off, 1 << 16));
  });
}

std::string sha256_of(std::string_view s) {
  return sha256_hex([&](const auto& put) { put(s); });
}

// The path part of an output URL: "/xezq/{id}/out-0.png".
std::string url_path(const std::string& url) {
  const auto host = url.find("://") + 3;
  return url.substr(url.find('/', host));
}

int64_t proc_status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(field)) return std::stoll(line.substr(std::strlen(field) + 1));
  return -1;
}

// How late a timer due every millisecond fires on the test's loop: whatever
// blocks the loop (a write(), an fsync) shows up here, whichever part did it.
class LagProbe final {
 public:
  explicit LagProbe(boost::asio::io_context& io) : timer_(io) { arm(); }
  double max_ms() const { return max_ms_; }
  double p99_ms() const {
    if (samples_.empty()) return 0;
    std::vector<double> v = samples_;
    std::sort(v.begin(), v.end());
    return v[v.size() * 99 / 100];
  }

 private:
  void arm() {
    due_ = std::chrono::steady_clock::now() + 1ms;
    timer_.expires_at(due_);
    timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      const double late = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - due_).count();
      max_ms_ = std::max(max_ms_, late);
      samples_.push_back(late);
      arm();
    });
  }
  boost::asio::steady_timer timer_;
  std::chrono::steady_clock::time_point due_;
  double max_ms_ = 0;
  std::vector<double> samples_;
};

struct Harness {
  test::TempDir dir;
  std::string db_path = dir.file("jobs.db");
  std::string archive_dir = dir.file("archive");
  PemPair pem = make_self_signed({"localhost"}, {"127.0.0.1"});
  sim::Options sim_options;
  std::unique_ptr<sim::Server> sim;
  uint16_t port = 0;
  Config config;
  std::unique_ptr<Store> store;
  std::unique_ptr<Db> feeder;
  boost::asio::io_context io{1};
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Archiver> archiver;
  ArchiveOptions archive_options{.backoff_base = 10ms, .backoff_max = 100ms, .connect_timeout = 2s,
                                 .read_timeout = 5s};

  // Output links on 127.0.0.1 (a file host), the API on localhost, unless `change` says otherwise.
  explicit Harness(const std::function<void(sim::Options&)>& change = {}) {
    test::write_file(dir.file("ca.pem"), pem.cert_pem);
    sim_options.tls_cert_pem = pem.cert_pem;
    sim_options.tls_key_pem = pem.key_pem;
    sim_options.prefix = "/replicate";
    sim_options.token = kToken;
    sim_options.time_scale = kTimeScale;
    sim_options.cold_start_rate = 0;
    sim_options.failure_rate = 0;
    sim_options.output_base = "https://127.0.0.1:{port}";
    sim_options.video_bytes = 3 * 1000 * 1000;
    if (change) change(sim_options);
    sim = std::make_unique<sim::Server>(sim_options);
    port = sim->start();
    config.db_path = db_path;
    config.api.base_url = "https://localhost:" + std::to_string(port) + "/replicate";
    config.api.ca_file = dir.file("ca.pem");
    config.retry = {.max_attempts = 3, .base_ms = 20, .max_ms = 200};
    config.archive.dir = archive_dir;
    std::vector<ModelEntry> models = Catalog::defaults().entries();
    for (auto& m : models) m.expected_s /= kTimeScale;
    config.models = Catalog(models);
    store = Store::open(db_path);
    feeder = std::make_unique<Db>(db_path, 2000);
  }

  ~Harness() {
    archiver.reset();
    engine.reset();
    http.reset();
    sim->stop();
  }

  void start_archiver() {
    archiver = std::make_unique<Archiver>(io, *store, config, kToken, archive_options);
    archiver->resume();
  }

  // The engine with the daemon's wiring; `archive` false: jobs succeed without archiving.
  void start_engine(bool archive = true) {
    HttpClientSettings hs;
    hs.base_url = config.api.base_url;
    hs.ca_file = config.api.ca_file;
    hs.max_connections = 4;
    hs.request_timeout = 5s;
    hs.connect_timeout = 2s;
    http = std::make_unique<HttpClient>(io, hs);
    EngineOptions eo;
    eo.db_path = db_path;
    eo.db_check_interval = 20ms;
    if (archive) {
      start_archiver();
      eo.on_succeeded = [this](int64_t id) { archiver->add(id); };
    }
    engine = std::make_unique<Engine>(io, *store, *http, config, kToken, eo);
    engine->start();
  }

  int64_t insert(const std::string& model, const std::string& input) {
    feeder->exec("INSERT INTO jobs(model, input) VALUES ('" + model + "', '" + input + "')");
    return feeder->last_insert_rowid();
  }

  bool run_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline = 30s) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      if (cond()) return true;
      io.run_for(5ms);
      if (io.stopped()) io.restart();
    }
    return cond();
  }

  // A row that succeeded `ago` before now with these output URLs, as the engine leaves it.
  int64_t succeeded(const std::vector<std::string>& urls, std::chrono::milliseconds ago = 0ms) {
    const auto id = insert("black-forest-labs/flux-schnell", R"({"prompt":"p"})");
    json::array out;
    for (const auto& u : urls) out.emplace_back(u);
    const std::string completed = format_utc(std::chrono::system_clock::now() - ago);
    feeder->exec("UPDATE jobs SET status = 'succeeded', completed_at = '" + completed + "', output = '" +
                 json::serialize(out) + "' WHERE id = " + std::to_string(id));
    return id;
  }

  JobRow row(int64_t id) { return store->get(id).value(); }
  bool archived(int64_t id) {
    auto r = row(id);
    return r.files || r.archive_error;
  }
  json::object sim_stats() { return json::parse(sim->stats_json()).as_object(); }
};

// Checks every entry of `files` against the output URLs, the disk and the simulator's bytes.
void expect_files_match(Harness& h, const JobRow& r) {
  ASSERT_TRUE(r.files) << r.archive_error.value_or("");
  const json::array outputs = json::parse(*r.output).as_array();
  const json::array files = json::parse(*r.files).as_array();
  ASSERT_EQ(files.size(), outputs.size());
  const std::string day = r.completed_at->substr(0, 4) + "/" + r.completed_at->substr(5, 2) + "/" +
                          r.completed_at->substr(8, 2);
  for (std::size_t i = 0; i < files.size(); ++i) {
    const json::object& f = files[i].as_object();
    const std::string url(f.at("url").as_string());
    const std::string path(f.at("path").as_string());
    EXPECT_EQ(url, outputs[i].as_string());
    auto spec = sim::output_file(url_path(url), h.sim_options.video_bytes);
    ASSERT_TRUE(spec) << url;
    EXPECT_EQ(path, h.archive_dir + "/" + day + "/" + std::to_string(r.id) + "-" + std::to_string(i) + "." + spec->ext);
    ASSERT_TRUE(fs::exists(path)) << path;
    EXPECT_EQ(fs::file_size(path), spec->size);
    EXPECT_EQ(f.at("bytes").as_int64(), static_cast<int64_t>(spec->size));
    const std::string expected = sha256_of_sim_output(*spec);
    EXPECT_EQ(std::string(f.at("sha256").as_string()), expected) << path;
    EXPECT_EQ(sha256_of_file(path), expected) << path;
    const std::string stem = h.archive_dir + "/" + day + "/" + std::to_string(r.id) + "-" + std::to_string(i);
    EXPECT_FALSE(fs::exists(stem + ".part"));
  }
}

std::string read_head(const std::string& path, std::size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string s(n, '\0');
  in.read(s.data(), static_cast<std::streamsize>(n));
  s.resize(static_cast<std::size_t>(in.gcount()));
  return s;
}

}  // namespace

TEST(ArchiveNames, ExtensionFromUrlAndContentType) {
  EXPECT_EQ(extension_from_url("https://replicate.delivery/xezq/abc/out-0.webp"), "webp");
  EXPECT_EQ(extension_from_url("https://h/x/OUT.PNG?sig=a.b#frag"), "png");
  EXPECT_EQ(extension_from_url("https://h/x.d/file"), std::nullopt);
  EXPECT_EQ(extension_from_url("https://h.example.com"), std::nullopt);
  EXPECT_EQ(extension_from_url("https://h/x/file.tar-gz"), std::nullopt);
  EXPECT_EQ(extension_from_url("data:image/png;base64,AAAA"), std::nullopt);
  EXPECT_EQ(extension_from_content_type("image/svg+xml; charset=utf-8"), "svg");
  EXPECT_EQ(extension_from_content_type("Video/MP4"), "mp4");
  EXPECT_EQ(extension_from_content_type("application/x-unknown"), std::nullopt);
}

TEST(ArchiveNames, DataUrlsDecodeBase64AndPercentEncoding) {
  auto d = decode_data_url("data:image/png;base64,iVBORw0KGgo=");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->media_type, "image/png");
  EXPECT_EQ(d->bytes, std::string("\x89PNG\r\n\x1a\n", 8));
  d = decode_data_url("data:,hello%20world%21");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->media_type, "text/plain");
  EXPECT_EQ(d->bytes, "hello world!");
  EXPECT_FALSE(decode_data_url("data:image/png;base64,abc"));  // not a multiple of 4
  EXPECT_FALSE(decode_data_url("data:text/plain,100%"));
  EXPECT_FALSE(decode_data_url("data:no-comma"));
}

TEST(ArchiveE2E, EveryOutputShapeStoredWithItsBytesAndDigest) {
  Harness h;
  h.start_engine();
  std::vector<int64_t> ids = {
      h.insert("black-forest-labs/flux-schnell", R"({"prompt":"a","num_outputs":2})"),  // webp array
      h.insert("stability-ai/sdxl", R"({"prompt":"b","num_outputs":3})"),                // png array, version form
      h.insert("recraft-ai/recraft-v3-svg", R"({"prompt":"c"})"),                       // svg string
      h.insert("ideogram-ai/ideogram-v2-turbo", R"({"prompt":"d"})"),                   // png string
      h.insert("minimax/video-01", R"({"prompt":"e"})"),                                // mp4 string
  };
  ASSERT_TRUE(h.run_until([&] {
    for (auto id : ids)
      if (!h.archived(id)) return false;
    return true;
  }, 60s));
  const std::map<std::string, std::string> signatures = {{"webp", "RIFF"}, {"png", "\x89PNG"}, {"svg", "<svg"},
                                                         {"mp4", std::string("\0\0\0\x20" "ftyp", 8)}};
  for (auto id : ids) {
    const JobRow r = h.row(id);
    EXPECT_EQ(r.status, JobStatus::succeeded);
    EXPECT_GT(r.cost_credits.value_or(0), 0);  // billed whatever the archive does
    expect_files_match(h, r);
    const json::value files = json::parse(r.files.value_or("[]"));
    for (const auto& f : files.as_array()) {
      const std::string path(f.at("path").as_string());
      const std::string ext = path.substr(path.rfind('.') + 1);
      const std::string& sig = signatures.at(ext);
      EXPECT_EQ(read_head(path, sig.size()), sig) << path;
    }
  }
  EXPECT_EQ(json::parse(*h.row(ids[1]).files).as_array().size(), 3u);
  // The files live on another host than the API: no request there carried the token.
  EXPECT_EQ(h.sim_stats().at("file_requests").as_int64(), 8);
  EXPECT_TRUE(h.sim->stats().file_auth_by_host.empty());
  EXPECT_EQ(h.archiver->counters().files, 8u);

  // predictctl sees the files and counts them.
  std::ostringstream out, err;
  ASSERT_EQ(run_ctl({"--db", h.db_path, "--json", "show", std::to_string(ids[4])}, out, err), 0) << err.str();
  const json::value shown = json::parse(out.str());
  EXPECT_EQ(shown.at("files").as_array().size(), 1u);
  EXPECT_EQ(shown.at("files").at(0).at("bytes").as_int64(), 3000000);
  std::ostringstream sout, serr;
  ASSERT_EQ(run_ctl({"--db", h.db_path, "--json", "stats"}, sout, serr), 0) << serr.str();
  const json::value st = json::parse(sout.str());
  EXPECT_EQ(st.at("archive").at("files").as_int64(), 8);
  EXPECT_EQ(static_cast<uint64_t>(st.at("archive").at("bytes").as_int64()), h.archiver->counters().bytes);
  EXPECT_EQ(st.at("archive").at("pending").as_int64(), 0);
  EXPECT_EQ(st.at("archive").at("failed").as_int64(), 0);
}

TEST(ArchiveE2E, FiftyMegabyteVideoStreamsWithFlatMemory) {
  Harness h([](sim::Options& o) { o.video_bytes = 50 * 1000 * 1000; });
  h.start_engine();
  // The simulator runs in this process too and streams its side in 64 KiB pieces,
  // so the peak covers both ends of the transfer.
  const int64_t rss_before_kb = proc_status_kb("VmRSS:");
  test::write_file("/proc/self/clear_refs", "5");  // resets VmHWM to the current RSS
  const auto id = h.insert("minimax/video-01", R"({"prompt":"a long video"})");
  // The video runs ~1 s: wait for its download to begin, then probe the loop until it is stored.
  ASSERT_TRUE(h.run_until([&] { return h.archiver->active_downloads() > 0; }, 60s));
  LagProbe lag(h.io);
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }, 60s));
  if (h.io.stopped()) h.io.restart();
  h.io.poll();  // the final fsync may have held the probe's timer past the last run_for: count it
  const double lag_max_ms = lag.max_ms();
  const int64_t peak_kb = proc_status_kb("VmHWM:");
  const JobRow r = h.row(id);
  expect_files_match(h, r);
  const int64_t growth_kb = peak_kb - rss_before_kb;
  const ArchiveCounters c = h.archiver->counters();
  std::printf("archive_rss file_bytes=50000000 rss_before_kb=%lld peak_kb=%lld growth_kb=%lld "
              "engine_loop_lag_max_ms=%.1f probe_lag_max_ms=%.1f probe_lag_p99_ms=%.1f disk_call_max_ms=%.1f\n",
              static_cast<long long>(rss_before_kb), static_cast<long long>(peak_kb),
              static_cast<long long>(growth_kb), h.engine->counters().max_loop_lag_ms, lag_max_ms, lag.p99_ms(),
              c.max_disk_call_ms);
  RecordProperty("rss_growth_kb", std::to_string(growth_kb));
  RecordProperty("loop_lag_max_ms", std::to_string(lag_max_ms));
#ifndef __SANITIZE_ADDRESS__  // ASan's quarantine keeps freed pieces resident: RSS says nothing there
  EXPECT_LT(growth_kb, 16 * 1024) << "a 50 MB download must not be held in memory";
#endif
  // Polls and creates share this loop: no file-system call of the archiver may
  // hold it long (the disk's own time, measured around each call), and the
  // loop as a whole must keep turning (a timer due every millisecond, which
  // also sees the machine's scheduling). An fsync of the whole 50 MB at the end
  // took ~60 ms here; in 1 MiB steps the longest call is ~5-25 ms.
  EXPECT_LT(c.max_disk_call_ms, 50) << "a write, sync_file_range or fsync blocked the loop";
#ifdef __SANITIZE_ADDRESS__
  constexpr double kLagBoundMs = 100;  // every handler runs 2-3x slower
#else
  constexpr double kLagBoundMs = 50;
#endif
  EXPECT_LT(lag_max_ms, kLagBoundMs) << "the loop stalled while a 50 MB file was stored";
}

TEST(ArchiveE2E, ExpiredLinkIsAnArchiveErrorAndTheJobStaysBilled) {
  Harness h([](sim::Options& o) { o.output_expire_after_s = 60; });
  h.start_engine(/*archive=*/false);
  const auto id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"late"})");
  ASSERT_TRUE(h.run_until([&] { return h.row(id).status == JobStatus::succeeded; }));
  h.sim->advance(1s);  // 300 s on the simulator's clock: the file is gone
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const JobRow r = h.row(id);
  EXPECT_EQ(r.status, JobStatus::succeeded);
  EXPECT_EQ(r.cost_credits, 75);
  EXPECT_FALSE(r.files);
  ASSERT_TRUE(r.archive_error);
  EXPECT_NE(r.archive_error->find("HTTP 404"), std::string::npos) << *r.archive_error;
  EXPECT_NE(r.archive_error->find("expired"), std::string::npos) << *r.archive_error;
  EXPECT_EQ(h.sim->stats().files_expired, 1);  // given up at once, not retried
  EXPECT_EQ(h.archiver->counters().retries, 0u);
}

TEST(ArchiveE2E, RedirectToAnotherHostGoesWithoutTheToken) {
  // Links on the API's own host (the token may go there), redirected to a file host.
  Harness h([](sim::Options& o) {
    o.output_base = "https://localhost:{port}";
    o.redirect_outputs_to = "https://127.0.0.1:{port}";
  });
  h.start_engine();
  const auto id = h.insert("stability-ai/sdxl", R"({"prompt":"r","num_outputs":2})");
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  expect_files_match(h, h.row(id));
  const auto by_host = h.sim->stats().file_auth_by_host;
  const std::string api_host = "localhost:" + std::to_string(h.port);
  EXPECT_EQ(by_host.count(api_host) ? by_host.at(api_host) : 0, 2);  // the check can see a token
  EXPECT_EQ(by_host.count("127.0.0.1:" + std::to_string(h.port)), 0u);
  EXPECT_EQ(h.archiver->counters().requests, 4u);  // 2 redirects + 2 files
}

TEST(ArchiveLocal, MoreThanThreeRedirectsGiveUp) {
  Harness h;
  // A file host that redirects every request, with a relative Location.
  test::HttpTestServer files(
      [](const test::ReceivedRequest& req) {
        return test::Reply{.status = 302, .headers = {{"Location", "hop" + std::to_string(req.target.size())}}};
      },
      h.pem);
  const auto id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"loop"})");
  const std::string url = "https://127.0.0.1:" + std::to_string(files.port()) + "/a/out-0.webp";
  h.feeder->exec("UPDATE jobs SET status = 'succeeded', completed_at = '2026-03-04T05:06:07.000Z', output = '[\"" +
                 url + "\"]' WHERE id = " + std::to_string(id));
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const JobRow r = h.row(id);
  ASSERT_TRUE(r.archive_error);
  EXPECT_EQ(*r.archive_error, "output 0: more than 3 redirects");
  const auto reqs = files.requests();
  ASSERT_EQ(reqs.size(), 4u);  // the link and 3 redirects
  EXPECT_EQ(reqs[0].target, "/a/out-0.webp");
  EXPECT_EQ(reqs[1].target, "/a/hop13");  // resolved against the directory of the previous URL
  for (const auto& q : reqs) EXPECT_FALSE(q.header("authorization")) << q.target;
}

TEST(ArchiveLocal, RedirectFromHttpsToHttpIsRefused) {
  Harness h;
  test::HttpTestServer files(
      [](const test::ReceivedRequest&) {
        return test::Reply{.status = 301, .headers = {{"Location", "http://127.0.0.1:9/out-0.webp"}}};
      },
      h.pem);
  const auto id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"downgrade"})");
  h.feeder->exec("UPDATE jobs SET status = 'succeeded', completed_at = '2026-03-04T05:06:07.000Z', "
                 "output = '[\"https://127.0.0.1:" + std::to_string(files.port()) + "/out-0.webp\"]' WHERE id = " +
                 std::to_string(id));
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  EXPECT_EQ(h.row(id).archive_error, "output 0: redirect from https to http refused");
  EXPECT_EQ(files.request_count(), 1u);
}

TEST(ArchiveLocal, TransientFailuresGiveUpAfterTheWindow) {
  Harness h;
  h.archive_options.give_up_after = 1s;  // 30 minutes in the daemon
  test::HttpTestServer files([](const test::ReceivedRequest&) { return test::Reply{.status = 503, .body = "busy"}; },
                             h.pem);
  const std::string host = "127.0.0.1:" + std::to_string(files.port());
  const auto id = h.succeeded({"https://" + host + "/out-0.webp"});
  const auto start = std::chrono::steady_clock::now();
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(h.row(id).archive_error,
            "output 0: gave up, retry window over (1 s from completed_at): HTTP 503 from " + host);
  EXPECT_GE(files.request_count(), 5u);  // backoff 10 ms doubling to 100 ms within the second
  EXPECT_GE(took, 800ms);
  EXPECT_LT(took, 3s);
}

// The window is the job's (from completed_at), not the process's: a restart
// does not open a new one, so a crash loop cannot retry forever.
TEST(ArchiveLocal, TheRetryWindowCountsFromCompletedAtAcrossRestarts) {
  Harness h;
  h.archive_options.give_up_after = 2s;
  test::HttpTestServer files([](const test::ReceivedRequest&) { return test::Reply{.status = 503, .body = "busy"}; },
                             h.pem);
  const std::string host = "127.0.0.1:" + std::to_string(files.port());
  const auto start = std::chrono::steady_clock::now();
  const auto id = h.succeeded({"https://" + host + "/out-0.webp"}, 1000ms);  // 1 s of the 2 already gone
  h.start_archiver();
  h.run_until([] { return false; }, 400ms);
  ASSERT_FALSE(h.archived(id));
  const auto before_restart = files.request_count();
  EXPECT_GE(before_restart, 2u);
  h.archiver.reset();  // a crash, then a new start
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(h.row(id).archive_error,
            "output 0: gave up, retry window over (2 s from completed_at): HTTP 503 from " + host);
  EXPECT_GT(files.request_count(), before_restart);
  EXPECT_LT(took, 1800ms);  // ~1 s: what was left of the job's window, not 2 s from either start
}

// Taken up past its window (the daemon was down for an hour): one more try per
// output, since a link may outlive the window; a transient failure then gives up.
TEST(ArchiveLocal, PastTheWindowAnOutputGetsOneMoreTry) {
  Harness h;  // give_up_after: 30 minutes
  test::HttpTestServer files(
      [](const test::ReceivedRequest& req) {
        if (req.target == "/down/out-0.webp") return test::Reply{.status = 503, .body = "busy"};
        return test::Reply{.status = 200, .body = "RIFF-still-here", .headers = {{"Content-Type", "image/webp"}}};
      },
      h.pem);
  const std::string base = "https://127.0.0.1:" + std::to_string(files.port());
  const auto down = h.succeeded({base + "/down/out-0.webp"}, 1h);
  const auto alive = h.succeeded({base + "/alive/out-0.webp"}, 1h);
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(down) && h.archived(alive); }));
  EXPECT_EQ(h.row(down).archive_error,
            "output 0: gave up, retry window over (1800 s from completed_at): HTTP 503 from " + base.substr(8));
  ASSERT_TRUE(h.row(alive).files) << h.row(alive).archive_error.value_or("");
  EXPECT_EQ(json::parse(*h.row(alive).files).at(0).at("bytes").as_int64(), 15);
  EXPECT_EQ(files.request_count(), 2u);  // one each, no retry
  EXPECT_EQ(h.archiver->counters().retries, 0u);
}

TEST(ArchiveLocal, Forbidden403AndGone410AreArchiveErrorsAtOnce) {
  Harness h;
  test::HttpTestServer files(
      [](const test::ReceivedRequest& req) {
        return test::Reply{.status = req.target.starts_with("/forbidden/") ? 403 : 410, .body = "<Error/>"};
      },
      h.pem);
  const std::string host = "127.0.0.1:" + std::to_string(files.port());
  const auto forbidden = h.succeeded({"https://" + host + "/forbidden/out-0.webp"});
  const auto gone = h.succeeded({"https://" + host + "/gone/out-0.webp"});
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(forbidden) && h.archived(gone); }));
  EXPECT_EQ(h.row(forbidden).archive_error, "output 0: HTTP 403 from " + host + " (the link has expired)");
  EXPECT_EQ(h.row(gone).archive_error, "output 0: HTTP 410 from " + host + " (the link has expired)");
  EXPECT_EQ(h.row(gone).status, JobStatus::succeeded);
  EXPECT_EQ(files.request_count(), 2u);  // neither retried
  EXPECT_EQ(h.archiver->counters().retries, 0u);
}

TEST(ArchiveLocal, ExtensionComesFromTheContentTypeWhenTheUrlHasNone) {
  Harness h;
  test::HttpTestServer files(
      [](const test::ReceivedRequest& req) {
        const std::string type = req.target == "/blob/2" ? "application/x-unknown" : "image/png; charset=binary";
        return test::Reply{.status = 200, .body = "bytes of " + req.target, .headers = {{"Content-Type", type}}};
      },
      h.pem);
  const std::string base = "https://127.0.0.1:" + std::to_string(files.port());
  const auto id = h.succeeded({base + "/blob/0", base + "/blob/1.webp?sig=x", base + "/blob/2"});
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const JobRow r = h.row(id);
  ASSERT_TRUE(r.files) << r.archive_error.value_or("");
  const json::array f = json::parse(*r.files).as_array();
  ASSERT_EQ(f.size(), 3u);
  const std::string stem = h.archive_dir + "/" + r.completed_at->substr(0, 4) + "/" + r.completed_at->substr(5, 2) +
                           "/" + r.completed_at->substr(8, 2) + "/" + std::to_string(id);
  EXPECT_EQ(f[0].at("path").as_string(), stem + "-0.png");   // from the Content-Type
  EXPECT_EQ(f[1].at("path").as_string(), stem + "-1.webp");  // the URL's extension wins
  EXPECT_EQ(f[2].at("path").as_string(), stem + "-2.bin");   // neither says
  EXPECT_EQ(test::read_file(stem + "-0.png"), "bytes of /blob/0");
}

// A permanent failure of one output leaves its siblings already stored on disk
// (paid for, their links perhaps gone by now) and names them in archive_error.
TEST(ArchiveLocal, OutputsStoredBeforeAPermanentFailureStayAndAreNamed) {
  Harness h;
  h.config.archive.concurrency = 1;  // output 0, then output 1
  test::HttpTestServer files(
      [](const test::ReceivedRequest& req) {
        if (req.target.ends_with("out-1.webp")) return test::Reply{.status = 410, .body = "gone"};
        return test::Reply{.status = 200, .body = "RIFF-output-0", .headers = {{"Content-Type", "image/webp"}}};
      },
      h.pem);
  const std::string host = "127.0.0.1:" + std::to_string(files.port());
  const auto id = h.succeeded({"https://" + host + "/x/out-0.webp", "https://" + host + "/x/out-1.webp"});
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const JobRow r = h.row(id);
  const std::string kept = h.archive_dir + "/" + r.completed_at->substr(0, 4) + "/" + r.completed_at->substr(5, 2) +
                           "/" + r.completed_at->substr(8, 2) + "/" + std::to_string(id) + "-0.webp";
  EXPECT_FALSE(r.files);
  EXPECT_EQ(r.archive_error, "output 1: HTTP 410 from " + host + " (the link has expired); kept: " + kept);
  EXPECT_EQ(test::read_file(kept), "RIFF-output-0");
  std::size_t entries = 0;
  for (const auto& e : fs::recursive_directory_iterator(h.archive_dir)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1u);  // no .part, nothing else
}

TEST(ArchiveE2E, TransientFailuresAreRetriedUntilStored) {
  Harness h([](sim::Options& o) {
    o.faults.download_error = 0.4;
    o.faults.download_reset = 0.3;
  });
  h.start_engine();
  std::vector<int64_t> ids;
  for (int i = 0; i < 6; ++i)
    ids.push_back(
        h.insert("black-forest-labs/flux-dev", R"({"prompt":"t)" + std::to_string(i) + R"(","num_outputs":2})"));
  ASSERT_TRUE(h.run_until([&] {
    for (auto id : ids)
      if (!h.archived(id)) return false;
    return true;
  }, 60s));
  for (auto id : ids) expect_files_match(h, h.row(id));
  const auto faults = h.sim->stats().faults;
  EXPECT_GT(h.archiver->counters().retries, 0u);
  EXPECT_EQ(h.archiver->counters().retries,
            static_cast<uint64_t>(faults.count("download_error") ? faults.at("download_error") : 0) +
                static_cast<uint64_t>(faults.count("download_reset") ? faults.at("download_reset") : 0));
}

// A file host that stops sending halfway (predictd-sim's download_stall): the
// read timeout, per wait for data, makes it a transient failure.
TEST(ArchiveE2E, StalledDownloadIsRetriedThenStored) {
  Harness h([](sim::Options& o) {
    o.faults.download_stall = 1;
    o.faults.stall_s = 60;
  });
  h.archive_options.read_timeout = 300ms;
  h.start_engine();
  const auto id = h.insert("black-forest-labs/flux-dev", R"({"prompt":"stall","num_outputs":2})");
  ASSERT_TRUE(h.run_until([&] { return h.sim->stats().faults.count("download_stall") > 0; }));
  h.sim->set_faults({});  // the host recovers
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  expect_files_match(h, h.row(id));
  const auto stalls = h.sim->stats().faults.at("download_stall");
  EXPECT_GE(stalls, 1);
  EXPECT_EQ(h.archiver->counters().retries, static_cast<uint64_t>(stalls));
}

TEST(ArchiveE2E, StalledDownloadsGiveUpAfterTheWindow) {
  Harness h([](sim::Options& o) {
    o.faults.download_stall = 1;
    o.faults.stall_s = 60;
  });
  h.archive_options.read_timeout = 200ms;
  h.archive_options.give_up_after = 1s;
  h.start_engine();
  const auto id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"stuck"})");
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const JobRow r = h.row(id);
  EXPECT_FALSE(r.files);
  ASSERT_TRUE(r.archive_error);
  EXPECT_EQ(r.archive_error->rfind("output 0: gave up, retry window over (1 s from completed_at): ", 0), 0u)
      << *r.archive_error;
  EXPECT_NE(r.archive_error->find("timed out"), std::string::npos) << *r.archive_error;
  EXPECT_GE(h.archiver->counters().retries, 2u);
  EXPECT_EQ(r.status, JobStatus::succeeded);
}

TEST(ArchiveE2E, AtMostConcurrencyDownloadsAtOnce) {
  Harness h([](sim::Options& o) { o.video_bytes = 4 * 1000 * 1000; });
  h.config.archive.concurrency = 2;
  h.start_engine();
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(h.insert("minimax/video-01", R"({"prompt":"c)" + std::to_string(i) + R"("})"));
  std::size_t most = 0;
  ASSERT_TRUE(h.run_until([&] {
    most = std::max(most, h.archiver->active_downloads());
    for (auto id : ids)
      if (!h.archived(id)) return false;
    return true;
  }, 60s));
  for (auto id : ids) expect_files_match(h, h.row(id));
  EXPECT_LE(most, 2u);
  EXPECT_LE(h.sim->stats().max_concurrent_file_bodies, 2);  // as the file host saw it
  std::printf("archive_concurrency most_active=%zu sim_max_bodies=%lld\n", most,
              static_cast<long long>(h.sim->stats().max_concurrent_file_bodies));
}

TEST(ArchiveE2E, FileOverTheCapIsRefused) {
  Harness h;
  h.config.archive.max_file_bytes = 1000;  // every simulated webp is larger
  h.start_engine();
  const auto id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"big"})");
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const JobRow r = h.row(id);
  ASSERT_TRUE(r.archive_error);
  EXPECT_NE(r.archive_error->find("archive.max_file_bytes"), std::string::npos) << *r.archive_error;
  // Nothing stays behind: neither a partial file nor one under the final name.
  std::size_t entries = 0;
  if (fs::exists(h.archive_dir))
    for (const auto& e : fs::recursive_directory_iterator(h.archive_dir)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 0u);
}

TEST(ArchiveE2E, CrashMidDownloadLeavesNoFileUnderTheFinalNameAndResumes) {
  Harness h([](sim::Options& o) { o.video_bytes = 30 * 1000 * 1000; });
  h.start_engine();
  const auto id = h.insert("minimax/video-01", R"({"prompt":"crash"})");
  std::string part;
  // Run the loop until part of the file is on disk, then stop running it: the download is mid-way.
  ASSERT_TRUE(h.run_until([&] {
    if (!fs::exists(h.archive_dir)) return false;
    for (const auto& e : fs::recursive_directory_iterator(h.archive_dir))
      if (e.path().extension() == ".part" && e.file_size() > 0) {
        part = e.path().string();
        return true;
      }
    return false;
  }));
  const std::string final_path = part.substr(0, part.size() - 5) + ".mp4";
  // A crash: everything torn down without stop(), nothing written to the row.
  h.archiver.reset();
  h.engine.reset();
  h.http.reset();
  EXPECT_TRUE(fs::exists(part));
  EXPECT_LT(fs::file_size(part), 30u * 1000 * 1000);
  EXPECT_FALSE(fs::exists(final_path));
  JobRow r = h.row(id);
  EXPECT_EQ(r.status, JobStatus::succeeded);
  EXPECT_FALSE(r.files);
  EXPECT_FALSE(r.archive_error);
  {
    std::ostringstream out, err;
    ASSERT_EQ(run_ctl({"--db", h.db_path, "--json", "stats"}, out, err), 0) << err.str();
    // Without --config the pending archive is not counted (archiving may be off).
    EXPECT_FALSE(json::parse(out.str()).as_object().contains("archive"));
    test::write_file(h.dir.file("ctl.json"), R"({"db": {"path": ")" + h.db_path + R"("}, "archive": {"dir": ")" +
                                                 h.archive_dir + R"("}})");
    std::ostringstream cout_, cerr_;
    ASSERT_EQ(run_ctl({"--config", h.dir.file("ctl.json"), "stats"}, cout_, cerr_), 0) << cerr_.str();
    EXPECT_NE(cout_.str().find("archive pending       1\n"), std::string::npos) << cout_.str();
    EXPECT_NE(cout_.str().find("archived files        0\n"), std::string::npos) << cout_.str();
  }

  // The next start resumes it from the beginning.
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }, 60s));
  r = h.row(id);
  expect_files_match(h, r);
  EXPECT_EQ(std::string(json::parse(*r.files).at(0).at("path").as_string()), final_path);
  EXPECT_FALSE(fs::exists(part));
}

TEST(ArchiveE2E, StopRemovesTemporaryFilesAndLeavesTheJobPending) {
  Harness h([](sim::Options& o) { o.video_bytes = 30 * 1000 * 1000; });
  h.start_engine();
  const auto id = h.insert("minimax/video-01", R"({"prompt":"stop"})");
  ASSERT_TRUE(h.run_until([&] { return h.archiver->active_downloads() == 1 && fs::exists(h.archive_dir); }));
  h.archiver->stop();
  h.run_until([] { return false; }, 50ms);  // let aborted exchanges unwind
  std::size_t entries = 0;
  for (const auto& e : fs::recursive_directory_iterator(h.archive_dir)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 0u);
  const JobRow r = h.row(id);
  EXPECT_FALSE(r.files);
  EXPECT_FALSE(r.archive_error);
  EXPECT_EQ(h.store->pending_archives().size(), 1u);
}

TEST(ArchiveLocal, DataUrlsAreDecodedNotFetched) {
  Harness h;
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + "rest of an image";
  std::string b64(4 * ((png.size() + 2) / 3), '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), reinterpret_cast<const unsigned char*>(png.data()),
                  static_cast<int>(png.size()));
  const auto id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"inline"})");
  const std::string output = json::serialize(json::array{"data:image/png;base64," + b64, "data:,caf%C3%A9"});
  h.feeder->exec("UPDATE jobs SET status = 'succeeded', cost_credits = 75, completed_at = '2026-03-04T05:06:07.000Z', "
                 "output = '" + output + "' WHERE id = " + std::to_string(id));
  h.start_archiver();
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  const JobRow r = h.row(id);
  ASSERT_TRUE(r.files) << r.archive_error.value_or("");
  const json::array files = json::parse(*r.files).as_array();
  ASSERT_EQ(files.size(), 2u);
  const std::string base = h.archive_dir + "/2026/03/04/" + std::to_string(id);
  EXPECT_EQ(files[0].at("path").as_string(), base + "-0.png");
  EXPECT_EQ(test::read_file(base + "-0.png"), png);
  EXPECT_EQ(files[0].at("bytes").as_int64(), static_cast<int64_t>(png.size()));
  EXPECT_EQ(files[0].at("sha256").as_string(), sha256_of(png));
  EXPECT_EQ(files[1].at("path").as_string(), base + "-1.txt");
  EXPECT_EQ(test::read_file(base + "-1.txt"), "caf\xc3\xa9");
  EXPECT_EQ(files[1].at("sha256").as_string(), sha256_of("caf\xc3\xa9"));
  EXPECT_EQ(h.sim->stats().file_requests, 0);

  // A malformed one is an archive_error at once.
  const auto bad = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"bad"})");
  h.feeder->exec("UPDATE jobs SET status = 'succeeded', completed_at = '2026-03-04T05:06:07.000Z', "
                 "output = '[\"data:image/png;base64,@@\"]' WHERE id = " + std::to_string(bad));
  h.archiver->add(bad);
  ASSERT_TRUE(h.run_until([&] { return h.archived(bad); }));
  EXPECT_EQ(h.row(bad).archive_error, "output 0: malformed data: URL");
}

TEST(ArchiveLocal, BusyDatabaseDelaysTheWriteWithoutBlockingTheLoop) {
  Harness h;
  const auto id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"busy"})");
  h.feeder->exec("UPDATE jobs SET status = 'succeeded', completed_at = '2026-03-04T05:06:07.000Z', "
                 "output = '[\"data:,held\"]' WHERE id = " + std::to_string(id));
  h.feeder->exec("BEGIN IMMEDIATE");  // another process holds the write lock
  h.start_archiver();
  int turns = 0;
  const auto until = std::chrono::steady_clock::now() + 300ms;
  h.run_until([&] {
    ++turns;
    return std::chrono::steady_clock::now() > until;
  }, 2s);
  EXPECT_GT(turns, 20);  // the loop kept turning while the write was refused
  EXPECT_TRUE(fs::exists(h.archive_dir + "/2026/03/04/" + std::to_string(id) + "-0.txt"));
  EXPECT_FALSE(h.row(id).files);
  EXPECT_EQ(h.archiver->pending_jobs(), 1u);
  h.feeder->exec("COMMIT");
  ASSERT_TRUE(h.run_until([&] { return h.archived(id); }));
  EXPECT_EQ(json::parse(*h.row(id).files).at(0).at("bytes").as_int64(), 4);
  EXPECT_EQ(h.archiver->pending_jobs(), 0u);
}

// The daemon's wiring: archiving on, a pending archive from before the start
// resumed, a new job archived, SIGTERM exits 0, the token in no log line.
TEST(ArchiveDaemon, ResumesPendingArchivesAndArchivesNewJobs) {
  Harness h;
  test::write_file(h.dir.file("token"), kToken);
  test::write_file(h.dir.file("c.json"),
                   R"({"db": {"path": ")" + h.db_path + R"("}, "api": {"token_file": ")" + h.dir.file("token") +
                       R"(", "base_url": ")" + h.config.api.base_url + R"(", "ca_file": ")" + h.dir.file("ca.pem") +
                       R"("}, "archive": {"dir": ")" + h.archive_dir + R"("}, "log": {"level": "debug"}})");
  const auto before = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"from yesterday"})");
  h.feeder->exec("UPDATE jobs SET status = 'succeeded', completed_at = '2026-03-04T05:06:07.000Z', "
                 "output = '[\"data:image/svg+xml,%3Csvg%2F%3E\"]' WHERE id = " + std::to_string(before));
  const auto job = h.insert("stability-ai/sdxl", R"({"prompt":"new","num_outputs":2})");

  const std::string log = h.dir.file("daemon.log");
  const std::string predictd = std::string(PREDICTD_BINARY_DIR) + "/predictd";
  const std::string config = h.dir.file("c.json");
  pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    ::execl(predictd.c_str(), "predictd", "--config", config.c_str(), nullptr);
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  const bool done = test::wait_until([&] { return h.archived(before) && h.archived(job); }, 30s);
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const std::string text = test::read_file(log);
  ASSERT_TRUE(done) << text;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_EQ(test::read_file(h.archive_dir + "/2026/03/04/" + std::to_string(before) + "-0.svg"), "<svg/>");
  expect_files_match(h, h.row(job));
  EXPECT_EQ(h.row(job).cost_credits, 315);
  EXPECT_TRUE(h.sim->stats().file_auth_by_host.empty());
  EXPECT_EQ(text.find(kToken), std::string::npos);
  EXPECT_NE(text.find("archive_done job=" + std::to_string(job) + " files=2"), std::string::npos) << text;
}
