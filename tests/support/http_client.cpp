#include "http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

namespace kws::test {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

http_answer http_request(unsigned short port, const std::string& method, const std::string& target,
                         std::chrono::milliseconds limit) {
  asio::io_context ioc;
  tcp::socket s(ioc);
  http_answer out;
  error_code ec;
  s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return out;
  const std::string req = method + " " + target +
                          " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
  asio::async_write(s, asio::buffer(req), [](error_code, std::size_t) {});
  asio::async_read(s, asio::dynamic_buffer(out.raw), [](error_code, std::size_t) {});
  ioc.run_for(limit);
  const auto head_end = out.raw.find("\r\n\r\n");
  if (out.raw.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos) return out;
  out.status = std::stoi(out.raw.substr(9, 3));
  std::istringstream head(out.raw.substr(0, head_end));
  std::string line;
  std::getline(head, line);  // the status line
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    out.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
  }
  out.body = out.raw.substr(head_end + 4);
  return out;
}

std::map<std::string, double> parse_samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const auto value = line.substr(space + 1);
    out[line.substr(0, space)] = value == "+Inf" ? HUGE_VAL : std::stod(value);
  }
  return out;
}

double sample(const std::map<std::string, double>& samples, const std::string& name) {
  const auto it = samples.find(name);
  return it == samples.end() ? std::nan("") : it->second;
}

}  // namespace kws::test
