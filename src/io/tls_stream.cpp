// tls_stream's parts that are not templates: the ciphertext buffers, the BIO that OpenSSL reads and writes
// them through, and the mapping of OpenSSL's results onto Asio's errors.
#include "io/tls_stream.hpp"

#include "io/read_wait.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>

#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <new>

namespace kws::detail {

namespace asio = boost::asio;
using boost::system::error_code;

unsigned char* cipher_buffer::prepare(std::size_t n) {
  if (cap_ - end_ >= n) return p_ + end_;
  const auto held = size();
  if (p_ && cap_ - held >= n) {
    std::memmove(p_, p_ + begin_, held);
  } else {
    // A buffer of the size read_buffer_cache keeps, when that is enough.
    const auto cap = std::max(held + n, read_buffer_bytes);
    auto* p = static_cast<unsigned char*>(cap == read_buffer_bytes ? read_buffer_cache::take(cap)
                                                                   : ::operator new(cap));
    if (held != 0) std::memcpy(p, p_ + begin_, held);
    release();
    p_ = p;
    cap_ = cap;
  }
  begin_ = 0;
  end_ = held;
  return p_ + end_;
}

void cipher_buffer::append(const void* data, std::size_t n) {
  std::memcpy(prepare(n), data, n);
  commit(n);
}

void cipher_buffer::release() noexcept {
  if (p_) {
    if (cap_ == read_buffer_bytes) {
      read_buffer_cache::give(p_, cap_);
    } else {
      ::operator delete(p_);
    }
  }
  p_ = nullptr;
  cap_ = begin_ = end_ = 0;
}

namespace {

tls_engine* engine_of(BIO* b) {
  return static_cast<tls_engine*>(BIO_get_data(b));
}

int bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  if (len <= 0) return 0;
  try {
    engine_of(b)->out().append(data, static_cast<std::size_t>(len));
  } catch (const std::bad_alloc&) {
    return -1;
  }
  return len;
}

int bio_read(BIO* b, char* data, int len) {
  BIO_clear_retry_flags(b);
  auto& in = engine_of(b)->in();
  if (in.size() == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  const auto n = std::min(in.size(), static_cast<std::size_t>(std::max(len, 0)));
  std::memcpy(data, in.data(), n);
  in.consume(n);
  return static_cast<int>(n);
}

long bio_ctrl(BIO* b, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
      return static_cast<long>(engine_of(b)->in().size());
    case BIO_CTRL_WPENDING:
      return static_cast<long>(engine_of(b)->out().size());
    default:
      return 0;
  }
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

BIO_METHOD* bio_method() {
  static BIO_METHOD* const method = [] {
    auto* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "kws tls_stream");
    if (!m) throw std::bad_alloc();
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    return m;
  }();
  return method;
}

int clamp(std::size_t n) {
  return static_cast<int>(std::min<std::size_t>(n, INT_MAX));
}

}  // namespace

tls_engine::tls_engine(SSL_CTX* ctx) : ssl_(SSL_new(ctx)) {
  if (!ssl_)
    throw boost::system::system_error(
        error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category()), "SSL_new");
  BIO* bio = BIO_new(bio_method());
  if (!bio) {
    SSL_free(ssl_);
    throw std::bad_alloc();
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);
  SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // A renegotiation would make a write wait for the peer's bytes, which only a read takes.
  SSL_set_options(ssl_, SSL_OP_NO_RENEGOTIATION);
}

tls_engine::~tls_engine() {
  SSL_free(ssl_);
}

void tls_engine::set_role(asio::ssl::stream_base::handshake_type role) {
  if (role == asio::ssl::stream_base::client) {
    SSL_set_connect_state(ssl_);
  } else {
    SSL_set_accept_state(ssl_);
  }
}

// As Asio's engine maps them, so that callers (and tls_failure's wording) see the same errors.
template <class Call>
tls_engine::want tls_engine::perform(Call call, std::size_t& n, error_code& ec) {
  ::ERR_clear_error();
  const int result = call();
  const int ssl_error = SSL_get_error(ssl_, result);
  const auto sys_error = static_cast<int>(::ERR_get_error());
  ec.clear();
  switch (ssl_error) {
    case SSL_ERROR_NONE:
      if (result > 0) n = static_cast<std::size_t>(result);
      return want::nothing;
    case SSL_ERROR_WANT_READ:
      return want::input;
    case SSL_ERROR_ZERO_RETURN:
      ec = asio::error::eof;
      return want::nothing;
    case SSL_ERROR_SSL:
      ec = error_code(sys_error, asio::error::get_ssl_category());
      return want::nothing;
    case SSL_ERROR_SYSCALL:
      ec = sys_error ? error_code(sys_error, asio::error::get_ssl_category())
                     : error_code(asio::ssl::error::unspecified_system_error);
      return want::nothing;
    default:
      ec = asio::ssl::error::unexpected_result;
      return want::nothing;
  }
}

tls_engine::want tls_engine::handshake(std::size_t& n, error_code& ec) {
  return perform([this] { return SSL_do_handshake(ssl_); }, n, ec);
}

tls_engine::want tls_engine::read(asio::mutable_buffer b, std::size_t& n, error_code& ec) {
  return perform([&] { return SSL_read(ssl_, b.data(), clamp(b.size())); }, n, ec);
}

tls_engine::want tls_engine::write(asio::const_buffer b, std::size_t& n, error_code& ec) {
  const auto size = std::min(b.size(), max_write_bytes);
  return perform([&] { return SSL_write(ssl_, b.data(), clamp(size)); }, n, ec);
}

tls_engine::want tls_engine::shutdown(std::size_t& n, error_code& ec) {
  // 0 says close_notify is queued and the peer's has not come: done, as far as this side goes.
  return perform(
      [this] {
        const int r = SSL_shutdown(ssl_);
        return r >= 0 ? 1 : r;
      },
      n, ec);
}

void tls_engine::idle() noexcept {
  // Kept when they hold part of a record.
  SSL_free_buffers(ssl_);
}

error_code tls_engine::at_end(error_code ec) const {
  if (ec != asio::error::eof) return ec;
  if (in_.size() != 0 || (SSL_get_shutdown(ssl_) & SSL_RECEIVED_SHUTDOWN) == 0)
    return asio::ssl::error::stream_truncated;
  return ec;
}

std::size_t tls_engine::receive_now(asio::ip::tcp::socket& s, error_code& ec) {
  const auto room = receive_room();
  const auto n = recv_now(s, room.data(), room.size(), ec);
  in_.commit(n);
  if (ec == asio::error::would_block) idle();
  return n;
}

void tls_engine::send_now(asio::ip::tcp::socket& s, error_code& ec) {
  ec.clear();
  while (out_.size() != 0) {
    const auto n = ::send(s.native_handle(), out_.data(), out_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      out_.consume(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    ec = (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
             ? error_code(errno, asio::error::get_system_category())
             : error_code(asio::error::would_block);
    return;
  }
}

}  // namespace kws::detail
