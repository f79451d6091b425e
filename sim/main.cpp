// predictd-sim: a Replicate-compatible API simulator (see sim_server.h).
#include <arpa/inet.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/program_options.hpp>

#include "sim_server.h"
#include "tls_cert.h"

namespace po = boost::program_options;
using predictd::sim::Options;
using predictd::sim::Server;

namespace {

constexpr int kExitUsage = 64;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out.flush()) throw std::runtime_error("cannot write " + path.string());
}

void check_rate(const char* name, double v) {
  if (!(v >= 0 && v <= 1)) throw UsageError(std::string("--") + name + " must be between 0 and 1");
}

Options parse(int argc, char** argv, bool& help) {
  Options o;
  auto& f = o.faults;
  std::string listen = "127.0.0.1:0", profile = "realistic", cert, key, self_signed, token;
  po::options_description d("Usage: predictd-sim [options]\nOptions");
  // clang-format off
  d.add_options()
      ("help", "this help")
      ("listen", po::value(&listen), "HOST:PORT to listen on (port 0: any; the chosen one is printed on stdout)")
      ("tls-cert", po::value(&cert), "PEM certificate chain: serve HTTPS (with --tls-key)")
      ("tls-key", po::value(&key), "PEM private key")
      ("self-signed-out", po::value(&self_signed),
       "make a self-signed certificate for localhost and 127.0.0.1, write DIR/cert.pem and DIR/key.pem, serve HTTPS")
      ("prefix", po::value(&o.prefix), "path prefix before /v1, e.g. /replicate")
      ("token", po::value(&token), "require Authorization: Bearer TOKEN (401 otherwise)")
      ("public-base", po::value(&o.public_base), "base of urls.get/cancel and list's next (default https://api.replicate.com)")
      ("output-base", po::value(&o.output_base),
       "base of output links, {port} = the bound port (default https://replicate.delivery; the sim serves /xezq/...)")
      ("redirect-outputs-to", po::value<std::string>()->notifier([&](const std::string& v) { o.redirect_outputs_to = v; }),
       "302 file requests for another host to this base, {port} = the bound port")
      ("video-bytes", po::value(&o.video_bytes), "size of each mp4 output (default 25165824)")
      ("output-expire-after", po::value(&o.output_expire_after_s),
       "output files 404 this many sim seconds after the prediction ended (0: never)")
      ("profile", po::value(&profile), "instant | realistic")
      ("time-scale", po::value(&o.time_scale), "run predictions this many times faster (and Prefer: wait with them)")
      ("manual-clock", po::bool_switch(&o.manual_clock), "time moves only by POST /_sim/control {\"advance_s\": N}")
      ("seed", po::value(&o.seed), "random seed: the same seed and requests give the same run")
      ("cold-start-rate", po::value(&o.cold_start_rate), "realistic: rate of 20-60 s cold starts (0..1)")
      ("failure-rate", po::value(&o.failure_rate), "realistic: rate of model failures (0..1)")
      ("expire-after", po::value(&o.expire_after_s), "forget predictions this many sim seconds after they end (0: never)")
      ("creates-per-minute", po::value(&o.creates_per_minute), "rate limit of creates, 429 beyond it (0: none)")
      ("requests-per-minute", po::value(&o.requests_per_minute), "rate limit of other requests (0: none)")
      ("fault-429", po::value(&f.throttle), "rate of injected 429s")
      ("fault-5xx", po::value(&f.server_error), "rate of 500/502/503")
      ("fault-reset-after-create", po::value(&f.reset_after_create), "rate of creates reset after the prediction exists")
      ("fault-stall", po::value(&f.stall), "rate of requests left unanswered for --stall-s")
      ("fault-truncated", po::value(&f.truncated), "rate of 2xx answers with JSON cut short")
      ("fault-malformed", po::value(&f.malformed), "rate of 2xx answers that are not JSON")
      ("fault-huge-logs", po::value(&f.huge_logs), "rate of prediction GETs with --huge-logs-bytes of logs")
      ("stall-s", po::value(&f.stall_s), "seconds a stall lasts before the connection is closed")
      ("huge-logs-bytes", po::value(&f.huge_logs_bytes), "size of huge logs")
      ("retry-after-s", po::value(&f.retry_after_s), "Retry-After of injected 429s")
      ("fault-download-error", po::value(&f.download_error), "rate of 503s on output file requests")
      ("fault-download-reset", po::value(&f.download_reset), "rate of output files reset halfway through")
      ("fault-download-stall", po::value(&f.download_stall),
       "rate of output files that stop halfway for --stall-s, then close");
  // clang-format on
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(d).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << d;
    help = true;
    return o;
  }
  if (!token.empty()) o.token = token;
  if (profile == "instant")
    o.profile = predictd::sim::Profile::instant;
  else if (profile != "realistic")
    throw UsageError("--profile must be instant or realistic");
  if (!(o.time_scale > 0)) throw UsageError("--time-scale must be positive");
  check_rate("cold-start-rate", o.cold_start_rate);
  check_rate("failure-rate", o.failure_rate);
  check_rate("fault-429", f.throttle);
  check_rate("fault-5xx", f.server_error);
  check_rate("fault-reset-after-create", f.reset_after_create);
  check_rate("fault-stall", f.stall);
  check_rate("fault-download-error", f.download_error);
  check_rate("fault-download-reset", f.download_reset);
  check_rate("fault-download-stall", f.download_stall);
  check_rate("fault-truncated", f.truncated);
  check_rate("fault-malformed", f.malformed);
  check_rate("fault-huge-logs", f.huge_logs);
  if (o.creates_per_minute < 0 || o.requests_per_minute < 0) throw UsageError("rate limits must not be negative");
  if (f.stall_s < 0 || f.retry_after_s < 1) throw UsageError("--stall-s must be >= 0 and --retry-after-s >= 1");

  const auto colon = listen.rfind(':');
  unsigned port = 0;
  if (colon == std::string::npos || colon == 0) throw UsageError("--listen must be HOST:PORT");
  const std::string port_s = listen.substr(colon + 1);
  auto [ptr, ec] = std::from_chars(port_s.data(), port_s.data() + port_s.size(), port);
  if (ec != std::errc() || ptr != port_s.data() + port_s.size() || port > 65535)
    throw UsageError("--listen: bad port '" + port_s + "'");
  o.host = listen.substr(0, colon);
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']') o.host = o.host.substr(1, o.host.size() - 2);
  o.port = static_cast<uint16_t>(port);
  unsigned char addr[sizeof(in6_addr)];
  if (inet_pton(AF_INET, o.host.c_str(), addr) != 1 && inet_pton(AF_INET6, o.host.c_str(), addr) != 1)
    throw UsageError("--listen: '" + o.host + "' is not an IP address");

  if (!self_signed.empty()) {
    if (!cert.empty() || !key.empty()) throw UsageError("--self-signed-out excludes --tls-cert/--tls-key");
    auto pem = predictd::make_self_signed({"localhost"}, {"127.0.0.1"});
    std::filesystem::create_directories(self_signed);
    write_file(std::filesystem::path(self_signed) / "cert.pem", pem.cert_pem);
    write_file(std::filesystem::path(self_signed) / "key.pem", pem.key_pem);
    std::filesystem::permissions(std::filesystem::path(self_signed) / "key.pem", std::filesystem::perms(0600));
    o.tls_cert_pem = pem.cert_pem;
    o.tls_key_pem = pem.key_pem;
  } else if (!cert.empty() || !key.empty()) {
    if (cert.empty() || key.empty()) throw UsageError("--tls-cert and --tls-key go together");
    o.tls_cert_pem = read_file(cert);
    o.tls_key_pem = read_file(key);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    bool help = false;
    o = parse(argc, argv, help);
    if (help) return 0;
  } catch (const po::error& e) {
    std::cerr << "predictd-sim: " << e.what() << " (see --help)\n";
    return kExitUsage;
  } catch (const UsageError& e) {
    std::cerr << "predictd-sim: " << e.what() << " (see --help)\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "predictd-sim: " << e.what() << "\n";
    return 1;
  }
  try {
    Server server(o);
    const uint16_t port = server.listen();
    const bool v6 = o.host.find(':') != std::string::npos;
    std::cout << "listening on " << (v6 ? "[" + o.host + "]" : o.host) << ":" << port << std::endl;
    server.run();  // until SIGINT or SIGTERM
  } catch (const std::exception& e) {
    std::cerr << "predictd-sim: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
