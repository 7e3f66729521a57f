// A plain HTTP/1.1 request to a local server (the apps' metrics endpoint), written by hand so that tests can
// send any method; the answer is read until the server closes, every wait bounded.
#pragma once

#include <chrono>
#include <map>
#include <string>

namespace kws::test {

struct http_answer {
  int status = 0;                              ///< 0: no parsable answer
  std::map<std::string, std::string> headers;  ///< names in lower case
  std::string body;
  std::string raw;  ///< everything received, for failure messages
};

/// `METHOD target` with `Connection: close` to 127.0.0.1:port.
http_answer http_request(unsigned short port, const std::string& method, const std::string& target,
                         std::chrono::milliseconds limit = std::chrono::seconds(10));

/// The samples of a Prometheus text exposition: `name{labels}` (as written) -> value; comments skipped.
std::map<std::string, double> parse_samples(const std::string& text);

/// The sample `name` (as parse_samples keys it), or NaN when there is none, so that every comparison with it
/// fails.
double sample(const std::map<std::string, double>& samples, const std::string& name);

}  // namespace kws::test
