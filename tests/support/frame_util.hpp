// Kafka frames (size prefix, then body) and reproducible payloads, for the library's and the proxy's tests.
#pragma once

#include <kws/frame.hpp>

#include <string>
#include <string_view>

namespace kws::test {

/// A Kafka frame: big-endian size then body.
inline std::string frame(std::string_view body) {
  std::string f(4, '\0');
  kws::store_be32(reinterpret_cast<unsigned char*>(f.data()), static_cast<std::int32_t>(body.size()));
  f.append(body);
  return f;
}

inline std::string raw_size(std::int32_t size) {
  std::string f(4, '\0');
  kws::store_be32(reinterpret_cast<unsigned char*>(f.data()), size);
  return f;
}

inline std::string pattern(std::size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  unsigned x = seed * 2654435761u;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 16);
  }
  return s;
}

}  // namespace kws::test
