// IDX reader and writer (docs/data.md §1-2). The reading is layered:
//   RawSource  the bytes of the file (or of a buffer in memory);
//   Decoder    those bytes as they are, or gunzipped by zlib's inflate;
//   read_idx   the header, checked field by field, then the data.
// Nothing is allocated from a header value before it has been checked.
#include "io/idx.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#include "tensor/ops.h"

namespace tq::io {

namespace {

[[noreturn]] void fail(const std::string& name, const std::string& problem) {
  throw FormatError(name + ": " + problem);
}

// ---- Where the bytes come from ----

class RawSource {
 public:
  virtual ~RawSource() = default;
  // Reads up to n bytes; fewer only at the end of the input.
  virtual size_t read(uint8_t* dst, size_t n) = 0;
  virtual uint64_t size() const = 0;  // total bytes
};

class FileSource final : public RawSource {
 public:
  explicit FileSource(const std::string& path) : path_(path) {
    // Checked before opening: opening a FIFO blocks until somebody writes to it.
    struct stat before {};
    if (::stat(path.c_str(), &before) == 0 && !S_ISREG(before.st_mode))
      throw std::runtime_error(fmt::format("{}: not a regular file", path));
    file_ = std::fopen(path.c_str(), "rb");
    if (!file_) throw std::runtime_error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    struct stat st {};
    if (fstat(fileno(file_), &st) != 0) {
      const int err = errno;
      std::fclose(file_);
      throw std::runtime_error(fmt::format("{}: cannot stat: {}", path, std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode)) {
      std::fclose(file_);
      throw std::runtime_error(fmt::format("{}: not a regular file", path));
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~FileSource() override { std::fclose(file_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  size_t read(uint8_t* dst, size_t n) override {
    const size_t got = std::fread(dst, 1, n, file_);
    if (got < n && std::ferror(file_)) throw std::runtime_error(fmt::format("{}: read error: {}", path_, std::strerror(errno)));
    return got;
  }
  uint64_t size() const override { return size_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
};

class MemorySource final : public RawSource {
 public:
  MemorySource(const void* data, size_t size) : data_(static_cast<const uint8_t*>(data)), size_(size) {}
  size_t read(uint8_t* dst, size_t n) override {
    const size_t k = std::min(n, size_ - pos_);
    if (k > 0) std::memcpy(dst, data_ + pos_, k);
    pos_ += k;
    return k;
  }
  uint64_t size() const override { return size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// ---- The decoded byte stream: plain, or gzip (one or more members) ----

class Decoder {
 public:
  Decoder(RawSource& raw, const std::string& name)
      : raw_(raw), name_(name), buf_(std::clamp<uint64_t>(raw.size(), 16, kChunk)) {
    fill_at_least(2);
    gzip_ = end_ - pos_ >= 2 && buf_[pos_] == 0x1f && buf_[pos_ + 1] == 0x8b;
    if (gzip_) {
      // 16 + MAX_WBITS: a gzip wrapper only (its CRC-32 and size are checked).
      if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error(name_ + ": cannot initialise zlib");
      zlib_ready_ = true;
    }
  }
  ~Decoder() {
    if (zlib_ready_) inflateEnd(&zs_);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  bool gzip() const { return gzip_; }
  // True once the compressed input ran out before the gzip stream ended.
  bool stream_truncated() const { return truncated_; }

  // Reads up to n decoded bytes; fewer only at the end of the stream.
  // A corrupt gzip stream, or bytes after it that are not gzip, throw.
  size_t read(uint8_t* dst, size_t n) { return gzip_ ? inflate_into(dst, n) : copy_into(dst, n); }

  // Reads and counts what remains, stopping once `cap` bytes were counted.
  uint64_t count_rest(uint64_t cap) {
    if (!gzip_) return std::min(cap, raw_.size() - consumed());
    std::vector<uint8_t> scratch(size_t{1} << 14);
    uint64_t count = 0;
    while (count < cap) {
      const size_t got = read(scratch.data(), scratch.size());
      if (got == 0) break;
      count += got;
    }
    return std::min(count, cap);
  }

 private:
  static constexpr size_t kChunk = size_t{1} << 18;

  // Raw bytes consumed by the decoder so far.
  uint64_t consumed() const { return raw_total_ - (end_ - pos_); }

  // Makes at least k unconsumed bytes available in buf_, unless the input ends first.
  void fill_at_least(size_t k) {
    if (end_ - pos_ >= k) return;
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
    while (end_ - pos_ < k) {
      const size_t got = raw_.read(buf_.data() + end_, buf_.size() - end_);
      if (got == 0) break;
      end_ += got;
      raw_total_ += got;
    }
  }

  size_t copy_into(uint8_t* dst, size_t n) {
    const size_t from_buffer = std::min(n, end_ - pos_);
    std::memcpy(dst, buf_.data() + pos_, from_buffer);
    pos_ += from_buffer;
    size_t done = from_buffer;
    while (done < n) {  // large reads go straight from the file into dst
      const size_t got = raw_.read(dst + done, n - done);
      if (got == 0) break;
      done += got;
      raw_total_ += got;
    }
    return done;
  }

  size_t inflate_into(uint8_t* dst, size_t n) {
    size_t produced = 0;
    while (produced < n && !finished_) {
      if (pos_ == end_) {
        fill_at_least(1);
        if (pos_ == end_) {  // the compressed data ends inside the stream
          truncated_ = true;
          finished_ = true;
          break;
        }
      }
      const size_t want = std::min<size_t>(n - produced, size_t{1} << 30);
      zs_.next_in = buf_.data() + pos_;
      zs_.avail_in = static_cast<uInt>(end_ - pos_);
      zs_.next_out = dst + produced;
      zs_.avail_out = static_cast<uInt>(want);
      const int r = inflate(&zs_, Z_NO_FLUSH);
      produced += want - zs_.avail_out;
      pos_ = end_ - zs_.avail_in;
      if (r == Z_STREAM_END) {
        // The gzip format allows several members back to back (gzip a b > c).
        // Anything else after the stream is an error, not ignored as zlib's gzread would.
        fill_at_least(2);
        if (pos_ == end_) {
          finished_ = true;
        } else if (end_ - pos_ >= 2 && buf_[pos_] == 0x1f && buf_[pos_ + 1] == 0x8b) {
          inflateReset(&zs_);
        } else {
          fail(name_, fmt::format("{} bytes of trailing garbage after the end of the gzip stream",
                                  raw_.size() - consumed()));
        }
      } else if (r == Z_MEM_ERROR) {
        throw std::bad_alloc();
      } else if (r == Z_BUF_ERROR) {
        if (zs_.avail_in > 0 && zs_.avail_out > 0) fail(name_, "corrupt gzip data: inflate made no progress");
      } else if (r != Z_OK) {
        fail(name_, fmt::format("corrupt gzip data: {}", zs_.msg ? zs_.msg : "inflate error " + std::to_string(r)));
      }
    }
    return produced;
  }

  RawSource& raw_;
  const std::string& name_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0, end_ = 0;  // unconsumed bytes are buf_[pos_, end_)
  uint64_t raw_total_ = 0;    // bytes read from raw_
  bool gzip_ = false;
  bool zlib_ready_ = false;
  bool finished_ = false;
  bool truncated_ = false;
  z_stream zs_{};
};

// ---- The IDX layer ----

size_t idx_type_size(IdxType t) {
  switch (t) {
    case IdxType::u8: case IdxType::i8: return 1;
    case IdxType::i16: return 2;
    case IdxType::i32: case IdxType::f32: return 4;
    case IdxType::f64: return 8;
  }
  return 0;
}

bool known_idx_type(uint8_t b) {
  return b == 0x08 || b == 0x09 || b == 0x0B || b == 0x0C || b == 0x0D || b == 0x0E;
}

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string truncated(const Decoder& in) { return in.stream_truncated() ? "truncated gzip stream" : "truncated"; }

IdxHeader parse_header(Decoder& in, const std::string& name) {
  uint8_t magic[4];
  const size_t got = in.read(magic, 4);
  if (got == 0) fail(name, in.stream_truncated() ? "truncated gzip stream: no data at all" : "empty file (no IDX header)");
  if (got < 4)
    fail(name, fmt::format("{}: the file ends inside the 4-byte IDX magic number ({} bytes)", truncated(in), got));
  if (magic[0] != 0 || magic[1] != 0)
    fail(name, fmt::format("bad magic number 0x{:02x}{:02x}{:02x}{:02x}: not an IDX file (an IDX file starts "
                           "with two zero bytes, the data type and the number of dimensions)",
                           magic[0], magic[1], magic[2], magic[3]));
  if (!known_idx_type(magic[2]))
    fail(name, fmt::format("unknown IDX data type 0x{:02x} in magic number 0x{:02x}{:02x}{:02x}{:02x} (known: 0x08 u8, "
                           "0x09 i8, 0x0b i16, 0x0c i32, 0x0d f32, 0x0e f64)",
                           magic[2], magic[0], magic[1], magic[2], magic[3]));
  const int ndims = magic[3];
  if (ndims < 1 || ndims > kIdxMaxDims)
    fail(name, fmt::format("bad number of dimensions {} (this reader takes 1 to {})", ndims, kIdxMaxDims));

  IdxHeader h;
  h.type = static_cast<IdxType>(magic[2]);
  h.header_bytes = 4 + 4 * int64_t{ndims};
  uint8_t dims[4 * kIdxMaxDims];
  const size_t got_dims = in.read(dims, 4 * ndims);
  if (got_dims < size_t(4 * ndims))
    fail(name, fmt::format("{}: the file ends inside the IDX header ({} of the {} bytes of dimension sizes)",
                           truncated(in), got_dims, 4 * ndims));
  // Each size is at most 2^32 - 1, so checking the running product against the
  // cap before every multiplication keeps it within 64 bits.
  int64_t numel = 1;
  for (int i = 0; i < ndims; ++i) {
    const int64_t d = big_endian_u32(dims + 4 * i);
    h.shape.push_back(d);
    if (d == 0) fail(name, fmt::format("dimension {} has size 0 (empty IDX files are not accepted)", i));
  }
  for (int i = 0; i < ndims; ++i) {
    if (numel > kIdxMaxElements / h.shape[i])
      fail(name, fmt::format("dimensions {} hold more than {} elements (this reader's limit)", h.shape.str(),
                             kIdxMaxElements));
    numel *= h.shape[i];
  }
  return h;
}

DType tensor_dtype(IdxType t, const std::string& name) {
  switch (t) {
    case IdxType::u8: return DType::u8;
    case IdxType::i8: return DType::i8;
    case IdxType::i32: return DType::i32;
    case IdxType::f32: return DType::f32;
    case IdxType::i16:
    case IdxType::f64: break;
  }
  fail(name, fmt::format("IDX data type 0x{:02x} ({}) is not supported: tinyqat tensors are u8, i8, i32 or f32 "
                         "(IDX types 0x08, 0x09, 0x0c, 0x0d)",
                         static_cast<int>(t), idx_type_name(t)));
}

Tensor read_data(Decoder& in, const RawSource& raw, const IdxHeader& h, const std::string& name) {
  const DType dtype = tensor_dtype(h.type, name);
  const uint64_t data_bytes = static_cast<uint64_t>(h.shape.numel()) * idx_type_size(h.type);
  const std::string declared =
      fmt::format("{} bytes of data after the {}-byte header (dimensions {})", data_bytes, h.header_bytes, h.shape.str());

  // Before allocating: does the file have room for what the header declares?
  if (!in.gzip()) {
    const uint64_t header = static_cast<uint64_t>(h.header_bytes);
    const uint64_t available = raw.size() > header ? raw.size() - header : 0;
    if (available < data_bytes) fail(name, fmt::format("truncated: expected {}, found {}", declared, available));
    if (available > data_bytes)
      fail(name, fmt::format("trailing data: {} bytes beyond the expected {}", available - data_bytes, declared));
  } else {
    const uint64_t most = raw.size() * kDeflateMaxRatio + 1024;
    if (data_bytes > most)
      fail(name, fmt::format("truncated or corrupt header: expected {}, but a gzip file of {} bytes holds at most "
                             "{} (deflate expands at most {}:1)",
                             declared, raw.size(), most, kDeflateMaxRatio));
  }

  Tensor t = empty(h.shape, dtype);
  uint8_t* p = static_cast<uint8_t*>(t.raw_data());
  const size_t got = in.read(p, data_bytes);
  if (got < data_bytes) fail(name, fmt::format("{}: expected {}, found {}", truncated(in), declared, got));

  constexpr uint64_t kCountCap = uint64_t{1} << 20;  // bounds the work spent on an error message
  const uint64_t extra = in.count_rest(kCountCap);
  if (extra > 0)
    fail(name, fmt::format("trailing data: {}{} bytes beyond the expected {}", extra >= kCountCap ? "at least " : "",
                           extra, declared));
  if (in.stream_truncated())
    fail(name, "truncated gzip stream: the data is complete but the stream ends before its gzip trailer "
               "(CRC-32 and size), so it cannot be verified");

  if (idx_type_size(h.type) == 4) {  // big-endian on disk
    uint32_t* w = reinterpret_cast<uint32_t*>(p);
    for (int64_t i = 0, i_end = t.numel(); i < i_end; ++i) w[i] = __builtin_bswap32(w[i]);
  }
  return t;
}

Tensor read_all(RawSource& raw, const std::string& name) {
  Decoder in(raw, name);
  const IdxHeader h = parse_header(in, name);
  return read_data(in, raw, h, name);
}

}  // namespace

const char* idx_type_name(IdxType t) {
  switch (t) {
    case IdxType::u8: return "u8";
    case IdxType::i8: return "i8";
    case IdxType::i16: return "i16";
    case IdxType::i32: return "i32";
    case IdxType::f32: return "f32";
    case IdxType::f64: return "f64";
  }
  return "unknown";
}

Tensor read_idx(const std::string& path) {
  FileSource raw(path);
  return read_all(raw, path);
}

IdxHeader read_idx_header(const std::string& path) {
  FileSource raw(path);
  Decoder in(raw, path);
  return parse_header(in, path);
}

Tensor parse_idx(const void* data, size_t size, const std::string& name) {
  MemorySource raw(data, size);
  return read_all(raw, name);
}

// ---- Writing ----

namespace {

// Where write_idx puts bytes: a plain file or a gzip stream.
class Sink {
 public:
  Sink(const std::string& path, bool gzip) : path_(path) {
    if (gzip) {
      gz_ = gzopen(path.c_str(), "wb");
      if (!gz_) throw std::runtime_error(fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
    } else {
      file_ = std::fopen(path.c_str(), "wb");
      if (!file_) throw std::runtime_error(fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
    }
  }
  ~Sink() {
    if (gz_) gzclose(gz_);
    if (file_) std::fclose(file_);
  }
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  void write(const void* data, size_t n) {
    bool ok;
    if (gz_) {
      ok = n == 0 || gzwrite(gz_, data, static_cast<unsigned>(n)) == static_cast<int>(n);
    } else {
      ok = std::fwrite(data, 1, n, file_) == n;
    }
    if (!ok) throw std::runtime_error(fmt::format("{}: write error", path_));
  }
  void close() {
    bool ok = true;
    if (gz_) ok = gzclose(gz_) == Z_OK;
    if (file_) ok = std::fclose(file_) == 0;
    gz_ = nullptr;
    file_ = nullptr;
    if (!ok) throw std::runtime_error(fmt::format("{}: write error on close", path_));
  }

 private:
  std::string path_;
  gzFile gz_ = nullptr;
  std::FILE* file_ = nullptr;
};

}  // namespace

void write_idx(const std::string& path, const Tensor& t) {
  IdxType type;
  switch (t.dtype()) {
    case DType::u8: type = IdxType::u8; break;
    case DType::i8: type = IdxType::i8; break;
    case DType::i32: type = IdxType::i32; break;
    case DType::f32: type = IdxType::f32; break;
    default:
      throw std::invalid_argument(fmt::format("write_idx {}: dtype {} has no IDX type (u8, i8, i32, f32 do)", path,
                                              dtype_name(t.dtype())));
  }
  if (t.dim() < 1 || t.dim() > kIdxMaxDims)
    throw std::invalid_argument(fmt::format("write_idx {}: {} dimensions (IDX files here have 1 to {})", path, t.dim(),
                                            kIdxMaxDims));
  for (int64_t d : t.shape())
    if (d < 1 || d > int64_t{std::numeric_limits<uint32_t>::max()})
      throw std::invalid_argument(fmt::format("write_idx {}: shape {} has a size outside 1..2^32-1", path, t.shape().str()));

  const Tensor c = kernels::contiguous(t);
  std::vector<uint8_t> header = {0, 0, static_cast<uint8_t>(type), static_cast<uint8_t>(t.dim())};
  for (int64_t d : t.shape())
    for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<uint8_t>(d >> shift));

  const bool gzip = path.size() >= 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  const std::string tmp = path + ".tmp";
  try {
    Sink out(tmp, gzip);
    out.write(header.data(), header.size());
    const uint8_t* p = static_cast<const uint8_t*>(c.raw_data());
    const size_t bytes = static_cast<size_t>(c.numel()) * dtype_size(c.dtype());
    constexpr size_t kChunk = size_t{1} << 16;
    std::vector<uint32_t> swapped(kChunk / 4);
    for (size_t at = 0; at < bytes; at += kChunk) {
      const size_t n = std::min(kChunk, bytes - at);
      if (dtype_size(c.dtype()) == 4) {
        std::memcpy(swapped.data(), p + at, n);
        for (size_t i = 0; i < n / 4; ++i) swapped[i] = __builtin_bswap32(swapped[i]);
        out.write(swapped.data(), n);
      } else {
        out.write(p + at, n);
      }
    }
    out.close();
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error(fmt::format("{}: cannot rename {} to it: {}", path, tmp, std::strerror(errno)));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

}  // namespace tq::io
