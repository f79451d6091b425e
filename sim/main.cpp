// predictd-sim: a Replicate-compatible API simulator (see sim_server.h).
#include <csignal>
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

Server* g_server = nullptr;
void on_signal(int) {
  if (g_server) g_server->stop();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string listen = "127.0.0.1:0", profile = "realistic", cert, key, self_signed;
  po::options_description d("Usage: predictd-sim [options]\nOptions");
  auto& f = o.faults;
  d.add_options()("help", "this help")("listen", po::value(&listen), "HOST:PORT (port 0: any; printed on stdout)")(
      "tls-cert", po::value(&cert), "PEM certificate: serve HTTPS")("tls-key", po::value(&key), "PEM private key")(
      "self-signed-out", po::value(&self_signed),
      "make a self-signed cert for localhost/127.0.0.1 into DIR/cert.pem, DIR/key.pem and serve HTTPS")(
      "prefix", po::value(&o.prefix), "path prefix, e.g. /replicate")("token", po::value<std::string>(),
                                                                       "require Authorization: Bearer TOKEN")(
      "profile", po::value(&profile), "instant | realistic")("time-scale", po::value(&o.time_scale),
                                                             "run times divided by this")(
      "seed", po::value(&o.seed), "random seed")("cold-start-rate", po::value(&o.cold_start_rate), "0..1")(
      "failure-rate", po::value(&o.failure_rate), "0..1")("creates-per-minute", po::value(&o.creates_per_minute),
                                                         "rate limit for creates (0: none)")(
      "requests-per-minute", po::value(&o.requests_per_minute), "rate limit for other requests (0: none)")(
      "fault-429", po::value(&f.throttle), "rate of 429 answers")("fault-5xx", po::value(&f.server_error),
                                                                  "rate of 500/502/503")(
      "fault-reset-after-create", po::value(&f.reset_after_create), "rate of creates dropped unanswered")(
      "fault-stall", po::value(&f.stall), "rate of requests never answered")("stall-s", po::value(&f.stall_s),
                                                                              "seconds a stall lasts")(
      "fault-truncated", po::value(&f.truncated), "rate of truncated JSON")("fault-malformed",
                                                                           po::value(&f.malformed),
                                                                           "rate of non-JSON 200s")(
      "fault-huge-logs", po::value(&f.huge_logs), "rate of multi-megabyte logs")(
      "retry-after-s", po::value(&f.retry_after_s), "Retry-After of injected 429s");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << d;
      return 0;
    }
    if (vm.count("token")) o.token = vm["token"].as<std::string>();
    if (profile == "instant")
      o.profile = predictd::sim::Profile::instant;
    else if (profile != "realistic")
      throw po::error("--profile must be instant or realistic");
    if (!(o.time_scale > 0)) throw po::error("--time-scale must be positive");
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) throw po::error("--listen must be HOST:PORT");
    o.host = listen.substr(0, colon);
    o.port = static_cast<uint16_t>(std::stoi(listen.substr(colon + 1)));
    if (!self_signed.empty()) {
      auto pem = predictd::make_self_signed({"localhost"}, {"127.0.0.1"});
      std::filesystem::create_directories(self_signed);
      std::ofstream(self_signed + "/cert.pem") << pem.cert_pem;
      std::ofstream(self_signed + "/key.pem") << pem.key_pem;
      o.tls_cert_pem = pem.cert_pem;
      o.tls_key_pem = pem.key_pem;
    } else if (!cert.empty() || !key.empty()) {
      if (cert.empty() || key.empty()) throw po::error("--tls-cert and --tls-key go together");
      o.tls_cert_pem = read_file(cert);
      o.tls_key_pem = read_file(key);
    }
  } catch (const std::exception& e) {
    std::cerr << "predictd-sim: " << e.what() << "\n";
    return 64;
  }
  try {
    Server server(o);
    const uint16_t port = server.listen();
    std::cout << "listening on " << o.host << ":" << port << std::endl;
    g_server = &server;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    server.run();
    g_server = nullptr;
  } catch (const std::exception& e) {
    std::cerr << "predictd-sim: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
