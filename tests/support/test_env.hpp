// What tests need from the host around them: temporary directories, whole files, free ports of 127.0.0.1.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace kws::test {

/// A fresh directory `<temp>/<prefix>-XXXXXX` (mkdtemp), left for the caller to remove.
std::filesystem::path make_temp_dir(std::string_view prefix);

/// A fresh temporary directory, removed with everything in it at the end.
class temp_dir {
 public:
  explicit temp_dir(std::string_view prefix) : path_(make_temp_dir(prefix)) {}
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  /// The path of `name` in the directory.
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// The whole file, byte for byte ("" when it cannot be read).
std::string read_file(const std::filesystem::path& path);
/// Creates or truncates the file and writes `content`, byte for byte.
void write_file(const std::filesystem::path& path, std::string_view content);

/// A port of 127.0.0.1 that was free a moment ago: bound with port 0, then released.
unsigned short free_port();

/// The first of `count` consecutive ports of 127.0.0.1 (the first a multiple of `align`) that could all be
/// bound a moment ago, with SO_REUSEADDR as a server binds them. Taken below the kernel's ephemeral range, so
/// that the outgoing connections of a busy machine (thousands left closing after a load test) do not hold
/// them, as they so often hold one of free_port()'s neighbours.
unsigned short free_port_run(unsigned count, unsigned align = 1);

/// A port of 127.0.0.1 where connections are refused for as long as this object lives: bound, never
/// listening, so no other process can take it meanwhile (as it could a free_port()).
class refused_port {
 public:
  refused_port();
  ~refused_port();
  refused_port(const refused_port&) = delete;
  refused_port& operator=(const refused_port&) = delete;
  unsigned short port() const { return port_; }

 private:
  unsigned short port_ = 0;
  int fd_ = -1;
};

}  // namespace kws::test
