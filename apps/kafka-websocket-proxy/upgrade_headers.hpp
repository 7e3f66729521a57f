// The extra headers of the proxy's upgrade requests: --header values and --header-file files ("Name: value"
// per line). Nothing here ever shows a header's value: it is usually a secret.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace kws::proxy {

using header_list = std::vector<std::pair<std::string, std::string>>;

/// What is wrong with `h` as "Name: value", in words that do not show the value; empty when nothing is.
std::string header_problem(const std::string& h);

/// "Name: value" (checked with header_problem first) as a pair, the value without its leading blanks.
std::pair<std::string, std::string> split_header(const std::string& h);

/// One header per line; blank lines and lines starting with # are skipped. Throws std::runtime_error naming
/// the file and the line ("FILE line 3: ..."), never a value.
header_list read_header_file(const std::string& path);

/// `fixed` followed by the headers of each of `files`, in order. Throws as read_header_file does.
header_list collect_headers(const header_list& fixed, const std::vector<std::string>& files);

}  // namespace kws::proxy
