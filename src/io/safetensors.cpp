#include "io/safetensors.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tensor/ops.h"

namespace tq::io {

using json = nlohmann::json;

namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::i32: return "I32";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i64: return "I64";
  }
  return "?";
}

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::f32}, {"I32", DType::i32}, {"I8", DType::i8}, {"U8", DType::u8}, {"I64", DType::i64}};
  for (auto& [name, t] : table)
    if (s == name) { *out = t; return true; }
  return false;
}

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw FormatError(fmt::format("{}: {}", file, what));
}

// A JSON value for an error message, cut short: a hostile header can hold
// megabytes in one value.
std::string brief(const json& j) {
  std::string s = j.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// One linear pass over the JSON text [p, end) before it is parsed: the
// deepest nesting of arrays and objects, and the number of JSON values
// (counted by their separators and brackets). A header like [[[[...]]]] or
// [0,0,0,...] is refused before anything recurses over it or allocates a
// node per value. Brackets and commas inside strings do not count; a
// backslash escapes the next character, as the JSON lexer reads it. Text that
// is not JSON is left to the parser to refuse: up to the point where the
// parser stops, it sees the same brackets as this scan.
struct JsonShape {
  int depth = 0;
  uint64_t values = 1;
};
JsonShape scan_json(const char* p, const char* end) {
  JsonShape out;
  int depth = 0;
  bool in_string = false;
  for (; p < end; ++p) {
    const char c = *p;
    if (in_string) {
      if (c == '\\') {
        if (end - p < 2) break;  // a string cut short: the parser refuses it
        ++p;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      out.depth = std::max(out.depth, ++depth);
      ++out.values;
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',') {
      ++out.values;
    }
  }
  return out;
}

}  // namespace

std::string serialize_safetensors(const SafetensorsFile& file) {
  // A file this reader would refuse is not written.
  if (file.tensors.size() > kMaxTensors)
    throw std::invalid_argument(fmt::format("safetensors: {} tensors are more than the limit of {} (kMaxTensors)",
                                            file.tensors.size(), kMaxTensors));
  if (file.metadata.size() > kMaxMetadataEntries)
    throw std::invalid_argument(fmt::format("safetensors: {} metadata entries are more than the limit of {} (kMaxMetadataEntries)",
                                            file.metadata.size(), kMaxMetadataEntries));
  for (auto& [name, t] : file.tensors)
    if (name.size() > kMaxNameBytes)
      throw std::invalid_argument(fmt::format("safetensors: tensor name '{}...' of {} bytes is longer than the limit of {} (kMaxNameBytes)",
                                              name.substr(0, 40), name.size(), kMaxNameBytes));
  for (auto& [key, v] : file.metadata)
    if (key.size() > kMaxNameBytes)
      throw std::invalid_argument(fmt::format("safetensors: metadata key '{}...' of {} bytes is longer than the limit of {} (kMaxNameBytes)",
                                              key.substr(0, 40), key.size(), kMaxNameBytes));
  json header = json::object();
  if (!file.metadata.empty()) {
    json meta = json::object();
    for (auto& [k, v] : file.metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  std::vector<std::pair<const Tensor*, uint64_t>> order;
  for (auto& [name, t] : file.tensors) {
    if (name == "__metadata__") throw std::invalid_argument("safetensors: a tensor may not be named __metadata__");
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype());
    header[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape().to_vector()}, {"data_offsets", {offset, offset + nbytes}}};
    order.emplace_back(&t, offset);
    offset += nbytes;
  }
  std::string h = header.dump();
  // Pad the header with spaces so the data area starts 8-byte aligned.
  while ((8 + h.size()) % 8 != 0) h += ' ';
  std::string out(8, '\0');
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += h;
  out.reserve(out.size() + offset);
  for (auto& [t, off] : order) {
    const Tensor c = kernels::contiguous(*t);
    out.append(static_cast<const char*>(c.raw_data()), static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
  }
  return out;
}

namespace {

// A save killed between writing its temporary and the rename leaves
// "<path>.tmp-<pid>" behind (the file itself is intact). After a successful
// save to the same path, such leftovers of processes that no longer exist are
// removed; a temporary of a live process (another save in progress) is kept.
void remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp-";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      fs::remove(it->path(), ignored);
    }
  }
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot write ({})", path, std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(fmt::format("{}: write failed ({})", path, std::strerror(e)));
    }
    done += static_cast<size_t>(w);
  }
  // The data must be on disk before the rename makes it the file.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: flush failed ({})", path, std::strerror(e)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: cannot rename the finished file into place ({})", path, std::strerror(e)));
  }
  remove_stale_temporaries(path);
}

void check_json_limits(const std::string& text, const std::string& file, const std::string& what, int max_depth,
                       uint64_t max_values) {
  const JsonShape scanned = scan_json(text.data(), text.data() + text.size());
  if (scanned.depth > max_depth) fail(file, fmt::format("{} is nested more than {} levels deep", what, max_depth));
  if (scanned.values > max_values)
    fail(file, fmt::format("{} holds about {} values, more than the limit of {}", what, scanned.values, max_values));
}

void save_safetensors(const std::string& path, const SafetensorsFile& file) {
  write_file_atomically(path, serialize_safetensors(file));
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 8) fail(name, fmt::format("too short for a safetensors file ({} bytes; the header length alone is 8)", bytes.size()));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  if (n > kMaxHeaderBytes) fail(name, fmt::format("header length {} exceeds the limit of {} bytes", n, kMaxHeaderBytes));
  if (n > bytes.size() - 8) fail(name, fmt::format("header length {} is larger than the file ({} bytes after the length)", n, bytes.size() - 8));
  // The depth is checked by a pre-scan, not by a parse callback: with a
  // callback installed, nlohmann::json (3.11) searches the whole enclosing
  // object for a discarded entry each time a nested object ends, which made a
  // header of n tensors cost O(n^2) (200,000 tensors: minutes).
  const char* text = bytes.data() + 8;
  const JsonShape scanned = scan_json(text, text + n);
  if (scanned.depth > kMaxHeaderDepth)
    fail(name, fmt::format("header JSON is nested more than {} levels deep (the limit kMaxHeaderDepth)", kMaxHeaderDepth));
  if (scanned.values > kMaxHeaderValues)
    fail(name, fmt::format("header JSON holds about {} values, more than the limit of {} (kMaxHeaderValues)", scanned.values,
                           kMaxHeaderValues));
  json header;
  try {
    header = json::parse(text, text + n);
  } catch (const json::exception& e) {
    fail(name, fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) fail(name, "header is not a JSON object");
  const size_t tensor_count = header.size() - (header.contains("__metadata__") ? 1 : 0);
  if (tensor_count > kMaxTensors)
    fail(name, fmt::format("header lists {} tensors, more than the limit of {} (kMaxTensors)", tensor_count, kMaxTensors));
  const uint64_t data_begin = 8 + n;
  const uint64_t data_size = bytes.size() - data_begin;
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    if (key == "__metadata__") {
      if (!it->is_object()) fail(name, "__metadata__ is not an object");
      if (it->size() > kMaxMetadataEntries)
        fail(name, fmt::format("__metadata__ has {} entries, more than the limit of {} (kMaxMetadataEntries)", it->size(),
                               kMaxMetadataEntries));
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (m.key().size() > kMaxNameBytes)
          fail(name, fmt::format("a __metadata__ key of {} bytes is longer than the limit of {} (kMaxNameBytes)",
                                 m.key().size(), kMaxNameBytes));
        if (!m->is_string()) fail(name, fmt::format("__metadata__ value '{}' is not a string", m.key()));
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    if (key.size() > kMaxNameBytes)
      fail(name, fmt::format("a tensor name of {} bytes ('{}...') is longer than the limit of {} (kMaxNameBytes)",
                             key.size(), key.substr(0, 40), kMaxNameBytes));
    const json& e = *it;
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      fail(name, fmt::format("tensor '{}' needs dtype, shape and data_offsets", key));
    DType dt;
    if (!e["dtype"].is_string() || !parse_dtype(e["dtype"].get<std::string>(), &dt))
      fail(name, fmt::format("tensor '{}' has an unsupported dtype {}", key, brief(e["dtype"])));
    const json& shape = e["shape"];
    if (!shape.is_array() || shape.size() > static_cast<size_t>(kMaxDims))
      fail(name, fmt::format("tensor '{}' has an invalid shape {}", key, brief(shape)));
    Shape s;
    uint64_t count = 1;     // elements
    uint64_t nonzero = 1;   // product of the non-zero dimensions
    for (const json& d : shape) {
      if (!d.is_number_unsigned()) fail(name, fmt::format("tensor '{}' has a non-integer or negative dimension in {}", key, brief(shape)));
      const uint64_t v = d.get<uint64_t>();
      // Overflow-safe: the product of the non-zero dimensions must stay below
      // the data size bound even when another dimension is 0, so that a
      // shape like [0, 2^63, 2^63] (no bytes) has strides that fit in int64.
      if (v != 0 && nonzero > kMaxFileBytes / v)
        fail(name, fmt::format("tensor '{}' shape {} is too large (more than {} elements, the limit kMaxFileBytes)", key,
                               brief(shape), kMaxFileBytes));
      if (v != 0) nonzero *= v;
      count *= v;
      s.push_back(static_cast<int64_t>(v));
    }
    const json& offs = e["data_offsets"];
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      fail(name, fmt::format("tensor '{}' has invalid data_offsets {}", key, brief(offs)));
    const uint64_t b = offs[0].get<uint64_t>(), en = offs[1].get<uint64_t>();
    if (b > en || en > data_size)
      fail(name, fmt::format("tensor '{}' data_offsets [{}, {}] lie outside the data area of {} bytes", key, b, en, data_size));
    const uint64_t need = count * dtype_size(dt);
    if (en - b != need)
      fail(name, fmt::format("tensor '{}' has {} bytes but dtype {} x shape {} needs {}", key, en - b,
                             e["dtype"].get<std::string>(), s.str(), need));
    if (en > b) ranges.emplace_back(b, en);
    out.tensors[key] = from_bytes(bytes.data() + data_begin + b, dt, s);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(name, "two tensors' data ranges overlap");
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) {
  // An ifstream opens a directory and reports a nonsense size for it; opening
  // a FIFO blocks until somebody writes to it (a hang), and a device reads
  // as an empty or endless file. Only regular files are read.
  std::error_code ec;
  const auto type = std::filesystem::status(path, ec).type();
  if (type == std::filesystem::file_type::directory)
    throw std::runtime_error(fmt::format("{}: is a directory, not a file", path));
  if (!ec && type != std::filesystem::file_type::regular && type != std::filesystem::file_type::not_found)
    throw std::runtime_error(fmt::format("{}: is not a regular file (a device, FIFO or socket)", path));
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  const std::streamoff size = in.tellg();
  if (size < 0) throw std::runtime_error(fmt::format("{}: cannot read", path));
  if (static_cast<uint64_t>(size) > kMaxFileBytes) throw FormatError(fmt::format("{}: file is larger than {} bytes", path, kMaxFileBytes));
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) throw std::runtime_error(fmt::format("{}: read failed", path));
  return parse_safetensors(bytes, path);
}

}  // namespace tq::io
