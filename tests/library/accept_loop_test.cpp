// kws::accept_loop, the accept loop of every listener: out of descriptors it pauses (and says so once a
// second) instead of spinning on a backlog it cannot take, and accepts everyone once descriptors come back.
#include <kws/accept_loop.hpp>

#include "process.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// The highest descriptor this process has open.
int highest_descriptor() {
  int highest = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
    highest = std::max(highest, std::stoi(e.path().filename().string()));
  return highest;
}

// Lowers the soft descriptor limit for its lifetime.
class descriptor_limit {
 public:
  explicit descriptor_limit(rlim_t soft) {
    ::getrlimit(RLIMIT_NOFILE, &old_);
    const rlimit low{soft, old_.rlim_max};
    ok_ = ::setrlimit(RLIMIT_NOFILE, &low) == 0;
  }
  ~descriptor_limit() { restore(); }
  void restore() {
    if (ok_) ::setrlimit(RLIMIT_NOFILE, &old_);
    ok_ = false;
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  bool ok_ = false;
};

TEST(AcceptLoop, PausesWhileOutOfDescriptorsAndAcceptsEveryoneOnceTheyComeBack) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer runtimes need free descriptors of their own (the dev build runs this)";
#endif
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  const auto port = acceptor.local_endpoint().port();
  std::vector<std::string> lines;
  std::vector<tcp::socket> accepted;
  kws::accept_loop loop(acceptor, [&](tcp::socket s) { accepted.push_back(std::move(s)); },
                        {.name = "test listener",
                         .log = [&](kws::log_level, std::string_view text) { lines.emplace_back(text); }});

  // A few descriptors left, all taken by clients: the accepts that follow fail with EMFILE.
  descriptor_limit limit(static_cast<rlim_t>(highest_descriptor() + 1 + 4));
  ASSERT_TRUE(limit.ok());
  std::vector<int> clients;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (;;) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    clients.push_back(fd);
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to), 0);
  }
  ASSERT_FALSE(clients.empty());

  loop.start();
  // Out of descriptors for 300 ms: a few paused tries (50, 100, 200 ms apart), where a loop that retried at
  // once would have failed thousands of times, and one line.
  ioc.run_for(300ms);
  EXPECT_TRUE(accepted.empty());
  EXPECT_GE(loop.failures(), 1u);
  EXPECT_LE(loop.failures(), 6u);
  ASSERT_FALSE(lines.empty());
  EXPECT_LE(lines.size(), 2u) << "at most a line a second";
  EXPECT_NE(lines.front().find("test listener: accept failed: Too many open files"), std::string::npos)
      << lines.front();

  // Descriptors come back: every client is accepted, and the loop says it accepts again.
  limit.restore();
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       accepted.size() < clients.size() && std::chrono::steady_clock::now() < until;)
    ioc.run_one_for(100ms);
  EXPECT_EQ(accepted.size(), clients.size());
  EXPECT_NE(lines.back().find("test listener: accepting again after"), std::string::npos) << lines.back();
  for (const int fd : clients) ::close(fd);
}

TEST(AcceptLoop, StopsAndLetsItsAcceptorGo) {
  asio::io_context ioc;
  auto acceptor = std::make_unique<tcp::acceptor>(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  int got = 0;
  {
    kws::accept_loop loop(*acceptor, [&](tcp::socket) { ++got; });
    loop.start();
    loop.stop();
  }
  // The accept in flight ends with the acceptor; its handler touches neither.
  acceptor.reset();
  ioc.run_for(100ms);
  EXPECT_EQ(got, 0);
}

// The sockets the loop hands out are closed on exec. A child process started while a connection is open does
// not inherit it: when the server closes the connection, the client sees its end at once (with the child
// holding a copy, it would see none until the child exited).
TEST(AcceptLoop, AChildProcessStartedMeanwhileDoesNotKeepAnAcceptedConnectionOpen) {
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  std::optional<tcp::socket> accepted;
  kws::accept_loop loop(acceptor, [&](tcp::socket s) { accepted.emplace(std::move(s)); });
  loop.start();

  tcp::socket client(ioc);
  client.connect(acceptor.local_endpoint());
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       !accepted && std::chrono::steady_clock::now() < until;)
    ioc.run_one_for(100ms);
  ASSERT_TRUE(accepted);
  EXPECT_NE(::fcntl(accepted->native_handle(), F_GETFD) & FD_CLOEXEC, 0);

  kws::test::child_process child({"/bin/sleep", "60"});
  accepted->close();
  // The client's end of stream, waited for with a bound.
  pollfd p{client.native_handle(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1) << "the client saw no end of the connection while the child lived";
  char byte = 0;
  EXPECT_EQ(::recv(client.native_handle(), &byte, 1, 0), 0);
}

}  // namespace
