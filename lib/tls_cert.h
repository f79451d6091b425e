// A self-signed certificate for the simulator, the demo and the tests.
#pragma once

#include <string>
#include <vector>

namespace predictd {

struct PemPair {
  std::string cert_pem;
  std::string key_pem;
};

// A self-signed EC P-256 certificate valid for `days`, with the given DNS
// names and IP addresses as subjectAltName (CA:TRUE, so it can be trusted as
// its own CA through api.ca_file). Throws std::runtime_error on failure.
PemPair make_self_signed(const std::vector<std::string>& dns_names,
                         const std::vector<std::string>& ip_addresses, int days = 365);

}  // namespace predictd
