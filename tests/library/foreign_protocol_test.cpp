// kafka::recognise_foreign_protocol: a client's first bytes at a Kafka port.
#include "kafka/foreign_protocol.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using kws::kafka::foreign_protocol;

foreign_protocol of(const std::string& s) {
  return kws::kafka::recognise_foreign_protocol({reinterpret_cast<const unsigned char*>(s.data()), s.size()});
}

TEST(ForeignProtocol, ATlsClientHelloIsTls) {
  // The record header of a ClientHello as OpenSSL and Java send it: handshake, TLS 1.0 or 1.2 record version.
  EXPECT_EQ(of(std::string("\x16\x03\x01\x02\x00\x01", 6)), foreign_protocol::tls);
  EXPECT_EQ(of(std::string("\x16\x03\x03\x00\x9c", 5)), foreign_protocol::tls);
  EXPECT_EQ(of(std::string("\x16\x03\x00\x00", 4)), foreign_protocol::tls);
}

TEST(ForeignProtocol, ATlsAlertAsTheFirstRecordIsTls) {
  // What librdkafka 2.0 sends when it gives up on a connection before its handshake: a fatal alert
  // (internal_error) in a TLS 1.0 record, and nothing else.
  EXPECT_EQ(of(std::string("\x15\x03\x01\x00\x02\x02\x50", 7)), foreign_protocol::tls);
  EXPECT_EQ(of(std::string("\x14\x03\x03\x00", 4)), foreign_protocol::tls);
  EXPECT_EQ(of(std::string("\x17\x03\x03\x40", 4)), foreign_protocol::tls);
}

TEST(ForeignProtocol, HttpRequestLinesAreHttp) {
  for (const char* line : {"GET / HTTP/1.1\r\n", "POST /x HTTP/1.1", "PUT /", "HEAD /", "DELETE /",
                           "OPTIONS *", "PATCH /", "CONNECT host:443 HTTP/1.1", "TRACE /", "PRI * HTTP/2.0"})
    EXPECT_EQ(of(line), foreign_protocol::http) << line;
}

TEST(ForeignProtocol, KafkaSizeHeadersAreNotRecognised) {
  // ApiVersions of 27 bytes, a frame of 100 MiB, the largest size, a negative one.
  for (const auto& s : {std::string("\x00\x00\x00\x1b\x00\x12", 6), std::string("\x06\x40\x00\x00", 4),
                        std::string("\x7f\xff\xff\xff", 4), std::string("\xff\xff\xff\xff", 4),
                        std::string("\x16\x03\x05\x00", 4), std::string("\x18\x03\x03\x00", 4),
                        std::string("\x13\x03\x01\x00", 4), std::string("GETX", 4)})
    EXPECT_EQ(of(s), foreign_protocol::none);
}

TEST(ForeignProtocol, FewerThanFourBytesDecideNothing) {
  EXPECT_EQ(of(""), foreign_protocol::need_more);
  EXPECT_EQ(of(std::string("\x16\x03\x01", 3)), foreign_protocol::need_more);
  EXPECT_EQ(of("GET"), foreign_protocol::need_more);
}

}  // namespace
