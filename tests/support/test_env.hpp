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
