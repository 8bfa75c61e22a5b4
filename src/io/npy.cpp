// .npy reading and writing (see npy.h).
#include "io/npy.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "io/safetensors.h"  // write_file_atomically
#include "tensor/ops.h"

namespace tq::io {

namespace {

constexpr char kMagic[] = "\x93NUMPY";

// The value of 'key' in the header dictionary, as written (up to the next ',' or '}' outside brackets).
std::string header_value(const std::string& header, const std::string& key, const std::string& name) {
  const std::string quoted = "'" + key + "'";
  auto at = header.find(quoted);
  if (at == std::string::npos) throw FormatError(fmt::format("{}: the .npy header has no {}", name, quoted));
  at = header.find(':', at + quoted.size());
  if (at == std::string::npos) throw FormatError(fmt::format("{}: the .npy header's {} has no value", name, quoted));
  ++at;
  while (at < header.size() && header[at] == ' ') ++at;
  size_t end = at;
  int depth = 0;
  while (end < header.size() && !(depth == 0 && (header[end] == ',' || header[end] == '}'))) {
    if (header[end] == '(') ++depth;
    if (header[end] == ')') --depth;
    ++end;
  }
  return header.substr(at, end - at);
}

Shape parse_shape(const std::string& text, const std::string& name) {
  if (text.size() < 2 || text.front() != '(' || text.back() != ')')
    throw FormatError(fmt::format("{}: the .npy shape '{}' is not a tuple", name, text.substr(0, 40)));
  Shape shape;
  std::string item;
  std::istringstream in(text.substr(1, text.size() - 2));
  while (std::getline(in, item, ',')) {
    const auto first = item.find_first_not_of(' ');
    if (first == std::string::npos) continue;  // the trailing comma of (n,)
    item = item.substr(first, item.find_last_not_of(' ') - first + 1);
    if (item.empty() || item.size() > 12 || item.find_first_not_of("0123456789") != std::string::npos)
      throw FormatError(fmt::format("{}: the .npy shape '{}' has a bad size '{}'", name, text.substr(0, 40), item));
    if (shape.size() == kMaxDims)
      throw FormatError(fmt::format("{}: the .npy shape '{}' has more than {} dimensions, the most a tensor has", name,
                                    text.substr(0, 40), kMaxDims));
    shape.push_back(std::stoll(item));
  }
  return shape;
}

}  // namespace

Tensor parse_npy(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0)
    throw FormatError(fmt::format("{}: not a .npy file (no \\x93NUMPY magic)", name));
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw FormatError(fmt::format("{}: the .npy file ends inside its header", name));
    for (int i = 3; i >= 0; --i) header_len = header_len << 8 | static_cast<unsigned char>(bytes[8 + i]);
    header_start = 12;
  } else {
    throw FormatError(fmt::format("{}: .npy format version {} is not supported (1 to 3)", name, major));
  }
  if (header_start + header_len > bytes.size()) throw FormatError(fmt::format("{}: the .npy file ends inside its header", name));
  const std::string header = bytes.substr(header_start, header_len);
  const std::string descr = header_value(header, "descr", name);
  const std::string order = header_value(header, "fortran_order", name);
  const Shape shape = parse_shape(header_value(header, "shape", name), name);
  if (order != "False") throw FormatError(fmt::format("{}: a Fortran-order .npy array is not supported (save it in C order)", name));
  size_t elem = 0;
  if (descr == "'<f4'") elem = 4;
  else if (descr == "'<f8'") elem = 8;
  else throw FormatError(fmt::format("{}: .npy dtype {} is not supported (float32 '<f4' or float64 '<f8')", name, descr));
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d > (int64_t{1} << 40) / std::max<int64_t>(numel, 1)) throw FormatError(fmt::format("{}: the .npy shape is too large", name));
    numel *= d;
  }
  const size_t data_start = header_start + header_len;
  if (bytes.size() - data_start != static_cast<size_t>(numel) * elem)
    throw FormatError(fmt::format("{}: the .npy shape {} needs {} bytes of data, the file has {}", name, shape.str(),
                                  static_cast<size_t>(numel) * elem, bytes.size() - data_start));
  Tensor t = empty(shape, DType::f32);
  float* out = t.data<float>();
  const char* src = bytes.data() + data_start;
  if (elem == 4) {
    std::memcpy(out, src, static_cast<size_t>(numel) * 4);
  } else {
    for (int64_t i = 0; i < numel; ++i) {
      double v;
      std::memcpy(&v, src + i * 8, 8);
      out[i] = static_cast<float>(v);
    }
  }
  return t;
}

Tensor load_npy(const std::string& path) {
  // Only a regular file: opening a FIFO blocks until somebody writes to it,
  // and a device such as /dev/zero never ends.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw std::runtime_error(fmt::format("{}: is not a regular file (a directory, device, FIFO or socket)", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  std::ostringstream s;
  s << in.rdbuf();
  return parse_npy(s.str(), path);
}

std::string npy_bytes(const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::f32)
    throw std::invalid_argument("save_npy: expected an f32 tensor");
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 ? "," : i + 1 < t.dim() ? ", " : "");
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic, version, length, header: padded with spaces and a newline to a multiple of 64 bytes.
  const size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  const Tensor c = kernels::contiguous(t);
  out.append(static_cast<const char*>(c.raw_data()), static_cast<size_t>(c.numel()) * 4);
  return out;
}

void save_npy(const std::string& path, const Tensor& t) { write_file_atomically(path, npy_bytes(t)); }

}  // namespace tq::io
