#include "test_env.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace kws::test {

std::filesystem::path make_temp_dir(std::string_view prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + " failed");
  return tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_file(const std::filesystem::path& path, std::string_view content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
}

namespace {
// A TCP socket bound to an ephemeral port of 127.0.0.1 (not listening); its port in `port`.
int bind_loopback(unsigned short& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("bind 127.0.0.1:0");
  }
  port = ntohs(a.sin_port);
  return fd;
}
}  // namespace

unsigned short free_port_run(unsigned count, unsigned align) {
  // Below the ephemeral range (Linux: 32768 and up by default), above the well-known and registered ports
  // that test machines tend to run.
  unsigned low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> low;
  const unsigned top = low > 20000 + 1000 ? low : 32768;
  std::random_device rd;
  std::mt19937 gen(rd());
  std::uniform_int_distribution<unsigned> pick(20000, top - count - align);
  for (int tries = 0; tries < 200; ++tries) {
    const unsigned first = pick(gen) / align * align;
    std::vector<int> fds;
    bool ok = true;
    for (unsigned i = 0; i < count && ok; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw std::runtime_error("socket");
      fds.push_back(fd);
      const int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<unsigned short>(first + i));
      ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    }
    for (const int fd : fds) ::close(fd);
    if (ok) return static_cast<unsigned short>(first);
  }
  throw std::runtime_error("no run of " + std::to_string(count) + " free ports below " + std::to_string(top));
}

unsigned short free_port() {
  unsigned short port = 0;
  ::close(bind_loopback(port));
  return port;
}

refused_port::refused_port() : fd_(bind_loopback(port_)) {}
refused_port::~refused_port() {
  ::close(fd_);
}

}  // namespace kws::test
