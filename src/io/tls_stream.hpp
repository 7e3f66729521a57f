// A TLS stream over OpenSSL that holds no buffer while idle, in place of Asio's ssl::stream.
//
// Asio's ssl::stream keeps four buffers of about 17 KiB for its whole life (two of its own, two in the BIO
// pair between it and OpenSSL), whatever SSL_MODE_RELEASE_BUFFERS does inside OpenSSL: about 70 KiB per
// idle connection. Here OpenSSL talks to a BIO of our own (tls_stream.cpp), whose ciphertext buffers exist
// only while they hold bytes (from read_buffer_cache, so a busy connection does not go back to malloc for
// each), and a read after the handshake can wait for the socket to become readable before it takes a buffer
// (read_on_readiness, read_now).
//
// It models what Beast and src/ws need of a stream: asynchronous and blocking reads and writes (one read and
// one write outstanding at once), the handshake in either role, the sending of close_notify, next_layer()
// (so that beast::get_lowest_layer reaches the TCP stream and its deadlines) and native_handle(). Errors are
// Asio's: eof after the peer's close_notify, ssl::error::stream_truncated for a TCP end without one,
// OpenSSL's reasons in Asio's ssl category. Renegotiation is refused, so a write never waits for a read.
#pragma once

#include "io/read_buffer.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/stream_traits.hpp>

#include <openssl/ssl.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>

namespace kws::detail {

// Bytes held only while there are some: given back as soon as the last is consumed.
class cipher_buffer {
 public:
  cipher_buffer() = default;
  cipher_buffer(const cipher_buffer&) = delete;
  cipher_buffer& operator=(const cipher_buffer&) = delete;
  ~cipher_buffer() { release(); }

  std::size_t size() const noexcept { return end_ - begin_; }
  std::size_t capacity() const noexcept { return cap_; }
  const unsigned char* data() const noexcept { return p_ + begin_; }
  // Room for `n` more bytes at the end.
  unsigned char* prepare(std::size_t n);
  void commit(std::size_t n) noexcept {
    end_ += n;
    if (size() == 0) release();
  }
  void consume(std::size_t n) noexcept {
    begin_ += n;
    if (size() == 0) release();
  }
  void append(const void* data, std::size_t n);
  void release() noexcept;
  void swap(cipher_buffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(cap_, o.cap_);
    std::swap(begin_, o.begin_);
    std::swap(end_, o.end_);
  }

 private:
  unsigned char* p_ = nullptr;
  std::size_t cap_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

// The SSL object, its BIO and the ciphertext both ways; no I/O of its own (tls_stream does that).
class tls_engine {
 public:
  using error_code = boost::system::error_code;

  // What an OpenSSL call left to do: nothing (it is over, `ec` says how), or wait for more of the peer's
  // bytes. Either way, out() may hold bytes to send.
  enum class want : unsigned char { nothing, input };

  explicit tls_engine(SSL_CTX* ctx);
  ~tls_engine();
  tls_engine(const tls_engine&) = delete;
  tls_engine& operator=(const tls_engine&) = delete;

  SSL* ssl() const noexcept { return ssl_; }

  void set_role(boost::asio::ssl::stream_base::handshake_type role);
  want handshake(std::size_t& n, error_code& ec);
  want read(boost::asio::mutable_buffer b, std::size_t& n, error_code& ec);
  want write(boost::asio::const_buffer b, std::size_t& n, error_code& ec);
  // Queues close_notify; does not wait for the peer's.
  want shutdown(std::size_t& n, error_code& ec);

  // The socket's end (`ec` eof) is a truncation unless the peer's close_notify came first.
  error_code at_end(error_code ec) const;

  // The caller is about to wait for the peer: OpenSSL's own record buffers go too. SSL_MODE_RELEASE_BUFFERS
  // gives them back after each record, but not all: a client that has read the server's session tickets
  // kept about 16 KiB.
  void idle() noexcept;

  // Reads what the socket holds now into in(): would_block when nothing (and then idle()).
  std::size_t receive_now(boost::asio::ip::tcp::socket& s, error_code& ec);
  // Sends as much of out() as the socket takes now: would_block when some is left.
  void send_now(boost::asio::ip::tcp::socket& s, error_code& ec);

  cipher_buffer& in() noexcept { return in_; }
  cipher_buffer& out() noexcept { return out_; }
  cipher_buffer& sending() noexcept { return sending_; }
  std::size_t buffered_capacity() const noexcept {
    return in_.capacity() + out_.capacity() + sending_.capacity();
  }

  // What one receive asks of the socket; one SSL_write takes at most max_write_bytes, whose records fit
  // in one such buffer too.
  static constexpr std::size_t receive_bytes = read_buffer_bytes;
  // Room for a receive after what in() holds (the start of a record, say), within one buffer of
  // receive_bytes, so that a receive never makes a larger one.
  boost::asio::mutable_buffer receive_room() {
    const auto n = receive_bytes - std::min(in_.size(), receive_bytes / 2);
    return {in_.prepare(n), n};
  }
  static constexpr std::size_t max_write_bytes = 48 * 1024;

 private:
  template <class Call>
  want perform(Call call, std::size_t& n, error_code& ec);

  SSL* ssl_;
  cipher_buffer in_;       // the peer's bytes that OpenSSL has not taken yet
  cipher_buffer out_;      // OpenSSL's bytes, not yet sent
  cipher_buffer sending_;  // the part of out_ an asynchronous write is sending
};

template <class NextLayer>
class tls_stream {
 public:
  using error_code = boost::system::error_code;
  using next_layer_type = NextLayer;
  using executor_type = typename NextLayer::executor_type;
  using want = tls_engine::want;

  template <class Arg>
  tls_stream(Arg&& arg, boost::asio::ssl::context& ctx)
      : next_(std::forward<Arg>(arg)), engine_(ctx.native_handle()) {}
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;

  executor_type get_executor() noexcept { return next_.get_executor(); }
  NextLayer& next_layer() noexcept { return next_; }
  const NextLayer& next_layer() const noexcept { return next_; }
  SSL* native_handle() noexcept { return engine_.ssl(); }

  /// From now on an asynchronous read that needs the peer's bytes waits for the socket to become readable,
  /// without a buffer, rather than reading through the next layer (whose deadlines then no longer apply).
  void read_on_readiness() noexcept { wait_ = true; }
  /// The ciphertext buffers held now (OpenSSL's own record buffers not counted).
  std::size_t buffered_capacity() const noexcept { return engine_.buffered_capacity(); }

  /// A read of what has arrived, without blocking: 0 with would_block when nothing has.
  std::size_t read_now(boost::asio::mutable_buffer b, error_code& ec) {
    for (;;) {
      std::size_t n = 0;
      const auto w = engine_.read(b, n, ec);
      flush_now();
      if (w == want::nothing) return ec ? 0 : n;
      engine_.receive_now(socket(), ec);
      if (ec) {
        if (ec != boost::asio::error::would_block) ec = engine_.at_end(ec);
        return 0;
      }
    }
  }

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, error_code& ec) {
    const auto b = first(buffers);
    ec.clear();
    if (b.size() == 0) return 0;
    for (;;) {
      std::size_t n = 0;
      const auto w = engine_.read(b, n, ec);
      if (engine_.out().size() != 0) flush(ec);
      if (w == want::nothing || ec) return ec ? 0 : n;
      const auto got = next_.read_some(engine_.receive_room(), ec);
      engine_.in().commit(got);
      if (ec) {
        ec = engine_.at_end(ec);
        return 0;
      }
    }
  }

  template <class ConstBufferSequence>
  std::size_t write_some(const ConstBufferSequence& buffers, error_code& ec) {
    const auto b = first(buffers);
    ec.clear();
    if (b.size() == 0) return 0;
    std::size_t n = 0;
    engine_.write(b, n, ec);
    if (!ec) flush(ec);
    return ec ? 0 : n;
  }

  template <class MutableBufferSequence, class Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    return start<void(error_code, std::size_t)>(read_step{first(buffers)}, std::forward<Token>(token));
  }

  template <class ConstBufferSequence, class Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return start<void(error_code, std::size_t)>(write_step{first(buffers)}, std::forward<Token>(token));
  }

  template <class Token>
  auto async_handshake(boost::asio::ssl::stream_base::handshake_type role, Token&& token) {
    engine_.set_role(role);
    return start<void(error_code)>(handshake_step{}, std::forward<Token>(token));
  }

  /// Sends close_notify (the peer's is not waited for).
  template <class Token>
  auto async_shutdown(Token&& token) {
    return start<void(error_code)>(shutdown_step{}, std::forward<Token>(token));
  }

 private:
  struct read_step {
    boost::asio::mutable_buffer b;
    static constexpr bool must_send = false;  // what a read makes OpenSSL say is sent if the socket takes it
    want operator()(tls_engine& e, std::size_t& n, error_code& ec) const {
      if (b.size() == 0) return want::nothing;
      return e.read(b, n, ec);
    }
  };
  struct write_step {
    boost::asio::const_buffer b;
    static constexpr bool must_send = true;
    want operator()(tls_engine& e, std::size_t& n, error_code& ec) const {
      if (b.size() == 0) return want::nothing;
      return e.write(b, n, ec);
    }
  };
  struct handshake_step {
    static constexpr bool must_send = true;
    want operator()(tls_engine& e, std::size_t& n, error_code& ec) const { return e.handshake(n, ec); }
  };
  struct shutdown_step {
    static constexpr bool must_send = true;
    want operator()(tls_engine& e, std::size_t& n, error_code& ec) const { return e.shutdown(n, ec); }
  };

  // One OpenSSL call at a time, then whatever it needs: its bytes sent (straight away while the socket takes
  // them, else by an asynchronous write), the peer's bytes read; the caller's handler once the call is over.
  template <class Step, class Signature>
  class io_op {
   public:
    io_op(tls_stream& s, Step step) : s_(&s), step_(step) {}

    template <class Self>
    void operator()(Self& self, error_code ec = {}, std::size_t bytes = 0) {
      auto& e = s_->engine_;
      const bool initiating = at_ == at::start;
      switch (at_) {
        case at::start:
          break;
        case at::deferred:
          return finish(self, false);
        case at::sent:
          s_->sending_ = false;
          e.sending().release();
          if (ec) return fail(self, ec);
          break;
        case at::received:
          e.in().commit(bytes);
          if (ec) return fail(self, e.at_end(ec));
          break;
        case at::readable:
          if (ec) return fail(self, ec);
          e.receive_now(s_->socket(), ec);
          if (ec == boost::asio::error::would_block) return receive(self);
          if (ec) return fail(self, e.at_end(ec));
          break;
      }
      if (!done_ && step_(e, n_, ec_) == want::nothing) done_ = true;
      if (e.out().size() != 0 && !s_->sending_) {
        error_code sec;
        e.send_now(s_->socket(), sec);
        if (Step::must_send && e.out().size() != 0) {
          if (sec != boost::asio::error::would_block) return fail(self, sec, initiating);
          e.out().swap(e.sending());
          s_->sending_ = true;
          at_ = at::sent;
          const auto pending = boost::asio::buffer(e.sending().data(), e.sending().size());
          return boost::asio::async_write(s_->next_, pending, std::move(self));
        }
      }
      if (done_) return finish(self, initiating);
      receive(self);
    }

   private:
    enum class at : unsigned char { start, deferred, sent, received, readable };

    template <class Self>
    void receive(Self& self) {
      if (s_->wait_) {
        s_->engine_.idle();
        at_ = at::readable;
        return s_->socket().async_wait(boost::asio::socket_base::wait_read, std::move(self));
      }
      at_ = at::received;
      s_->next_.async_read_some(s_->engine_.receive_room(), std::move(self));
    }

    template <class Self>
    void fail(Self& self, error_code ec, bool initiating = false) {
      ec_ = ec;
      n_ = 0;
      finish(self, initiating);
    }

    // An operation may not complete inside its initiating function.
    template <class Self>
    void finish(Self& self, bool initiating) {
      if (initiating) {
        at_ = at::deferred;
        return boost::asio::post(std::move(self));
      }
      if constexpr (std::is_same_v<Signature, void(error_code)>) {
        self.complete(ec_);
      } else {
        self.complete(ec_, ec_ ? 0 : n_);
      }
    }

    tls_stream* s_;
    Step step_;
    at at_ = at::start;
    bool done_ = false;
    std::size_t n_ = 0;
    error_code ec_;
  };

  template <class Signature, class Step, class Token>
  auto start(Step step, Token&& token) {
    return boost::asio::async_compose<Token, Signature>(io_op<Step, Signature>(*this, step), token, next_);
  }

  template <class Buffers>
  static auto first(const Buffers& buffers) {
    using buffer_type = std::conditional_t<boost::asio::is_mutable_buffer_sequence<Buffers>::value,
                                           boost::asio::mutable_buffer, boost::asio::const_buffer>;
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      buffer_type b(*it);
      if (b.size() != 0) return b;
    }
    return buffer_type();
  }

  boost::asio::ip::tcp::socket& socket() {
    auto& lowest = boost::beast::get_lowest_layer(next_);
    if constexpr (requires { lowest.socket(); }) {
      return lowest.socket();
    } else {
      return lowest;
    }
  }

  // What OpenSSL has to send, sent if the socket takes it now (the rest goes with the next write), unless a
  // write is on its way.
  void flush_now() {
    if (sending_ || engine_.out().size() == 0) return;
    error_code ignored;
    engine_.send_now(socket(), ignored);
  }

  // Blocking.
  void flush(error_code& ec) {
    const auto n =
        boost::asio::write(next_, boost::asio::buffer(engine_.out().data(), engine_.out().size()), ec);
    engine_.out().consume(n);
  }

  NextLayer next_;
  tls_engine engine_;
  bool wait_ = false;     // read_on_readiness
  bool sending_ = false;  // an asynchronous write of engine_.sending() is on its way
};

}  // namespace kws::detail
