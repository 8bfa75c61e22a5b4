// Tests of the IDX reader (src/io/idx.h, docs/data.md §1-2): known facts of
// the public Fashion-MNIST files, the committed files in tests/data/idx, and
// synthetic files written here, broken in every way the reader must catch.
#include <catch2/catch.hpp>

#include "test_files.h"
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "io/idx.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Bytes = std::vector<uint8_t>;

// The packaged dataset, or a failed test that says how to install it (CI does).
std::string fashion_file(const std::string& name) {
  const std::string path = std::string(tq::io::kFashionMnistDir) + "/" + name;
  if (!fs::exists(path))
    FAIL("Fashion-MNIST not found at " << path
                                       << ": install the Debian package dataset-fashion-mnist "
                                          "(apt-get install dataset-fashion-mnist) or run scripts/setup.sh");
  return path;
}

std::string committed_data_dir() { return std::string(TINYQAT_GOLDEN_DIR) + "/../data/idx"; }

// A scratch directory for this test run, removed at exit.
const fs::path& scratch_dir() { return tq_test::scratch_dir("idx"); }

// An IDX file's bytes: header for `type` and `dims`, then `data` as given.
Bytes idx_bytes(uint8_t type, const std::vector<uint32_t>& dims, const Bytes& data) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(d >> shift));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// n bytes that look random (so they do not compress away), the same every run.
Bytes noise_bytes(size_t n) {
  Bytes b(n);
  uint32_t x = 12345;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    b[i] = static_cast<uint8_t>(x >> 24);
  }
  return b;
}

// One gzip member holding `plain` (zlib's deflate with a gzip wrapper).
Bytes gzip_bytes(const Bytes& plain) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&zs, plain.size()));
  zs.next_in = const_cast<Bytes::value_type*>(plain.data());
  zs.avail_in = static_cast<uInt>(plain.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string write_file(const std::string& name, const Bytes& bytes) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
  return path;
}

// Reads `bytes` both from a plain file and from memory; both must throw
// FormatError with a message naming the file and containing `problem`.
void require_rejected(const std::string& name, const Bytes& bytes, const std::string& problem) {
  const std::string path = write_file(name, bytes);
  REQUIRE_THROWS_AS(tq::io::read_idx(path), tq::io::FormatError);
  REQUIRE_THROWS_WITH(tq::io::read_idx(path), Contains(path + ": ") && Contains(problem));
  REQUIRE_THROWS_WITH(tq::io::parse_idx(bytes.data(), bytes.size(), name), Contains(name + ": ") && Contains(problem));
}

// The same, for the bytes as they are and gzip-compressed.
void require_rejected_plain_and_gzip(const std::string& name, const Bytes& bytes, const std::string& problem) {
  require_rejected(name, bytes, problem);
  require_rejected(name + ".gz", gzip_bytes(bytes), problem);
}

}  // namespace

TEST_CASE("IDX: headers of the Fashion-MNIST test files", "[idx]") {
  const tq::io::IdxHeader images = tq::io::read_idx_header(fashion_file("t10k-images-idx3-ubyte.gz"));
  CHECK(images.magic() == 0x00000803u);
  CHECK(images.type == tq::io::IdxType::u8);
  CHECK(images.shape == tq::Shape{10000, 28, 28});
  CHECK(images.header_bytes == 16);
  const tq::io::IdxHeader labels = tq::io::read_idx_header(fashion_file("t10k-labels-idx1-ubyte.gz"));
  CHECK(labels.magic() == 0x00000801u);
  CHECK(labels.shape == tq::Shape{10000});
  CHECK(labels.header_bytes == 8);
}

TEST_CASE("IDX: known pixels and labels of the Fashion-MNIST test set", "[idx]") {
  // Read once by hand with python3's gzip module from the packaged files.
  const tq::Tensor labels = tq::io::read_idx(fashion_file("t10k-labels-idx1-ubyte.gz"));
  REQUIRE(labels.dtype() == tq::DType::u8);
  REQUIRE(labels.shape() == tq::Shape{10000});
  const std::vector<int> first_labels = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5};  // 9 = ankle boot
  for (size_t i = 0; i < first_labels.size(); ++i) CHECK(labels.data<uint8_t>()[i] == first_labels[i]);
  CHECK(std::string(tq::io::fashion_mnist_class_name(first_labels[0])) == "Ankle boot");

  const tq::Tensor images = tq::io::read_idx(fashion_file("t10k-images-idx3-ubyte.gz"));
  REQUIRE(images.dtype() == tq::DType::u8);
  REQUIRE(images.shape() == tq::Shape{10000, 28, 28});
  const uint8_t* p = images.data<uint8_t>();
  const std::vector<int> row14 = {0,  0,   0,   0,   0,   0,   2,   4,   1,   0,   0,   0,   98,  136,
                                  110, 109, 110, 162, 135, 144, 149, 159, 167, 144, 158, 169, 119, 0};
  for (int c = 0; c < 28; ++c) CHECK(p[14 * 28 + c] == row14[c]);
  CHECK(p[7 * 28 + 19] == 3);  // the first non-zero pixel of image 0
  int64_t sum0 = 0, sum_last = 0;
  for (int i = 0; i < 784; ++i) {
    sum0 += p[i];
    sum_last += p[9999 * 784 + i];
  }
  CHECK(sum0 == 33456);
  CHECK(sum_last == 24390);
}

TEST_CASE("IDX: the committed test files", "[idx]") {
  const std::string dir = committed_data_dir();
  // First 8 test images and labels, plain and gzip: the same content.
  const tq::Tensor images = tq::io::read_idx(dir + "/t10k-8-images-idx3-ubyte");
  const tq::Tensor images_gz = tq::io::read_idx(dir + "/t10k-8-images-idx3-ubyte.gz");
  REQUIRE(images.shape() == tq::Shape{8, 28, 28});
  REQUIRE(images_gz.shape() == tq::Shape{8, 28, 28});
  CHECK(std::memcmp(images.raw_data(), images_gz.raw_data(), 8 * 784) == 0);
  CHECK(images.data<uint8_t>()[14 * 28 + 12] == 98);
  const tq::Tensor labels = tq::io::read_idx(dir + "/t10k-8-labels-idx1-ubyte.gz");
  REQUIRE(labels.shape() == tq::Shape{8});
  CHECK(labels.data<uint8_t>()[0] == 9);
  CHECK(labels.data<uint8_t>()[7] == 6);

  const tq::Tensor i32 = tq::io::read_idx(dir + "/i32-2x3.idx");
  REQUIRE(i32.dtype() == tq::DType::i32);
  REQUIRE(i32.shape() == tq::Shape{2, 3});
  const std::vector<int32_t> want_i32 = {0, 1, -1, 2147483647, -2147483647 - 1, 16909060};
  for (int i = 0; i < 6; ++i) CHECK(i32.data<int32_t>()[i] == want_i32[i]);

  const tq::Tensor f32 = tq::io::read_idx(dir + "/f32-4.idx.gz");
  REQUIRE(f32.dtype() == tq::DType::f32);
  REQUIRE(f32.shape() == tq::Shape{4});
  const std::vector<float> want_f32 = {0.0f, -1.5f, 3.25f, 1e-3f};
  for (int i = 0; i < 4; ++i) CHECK(f32.data<float>()[i] == want_f32[i]);
}

TEST_CASE("IDX: synthetic files of each supported type, plain and gzip", "[idx]") {
  SECTION("u8, 3 dimensions") {
    const Bytes data = noise_bytes(5 * 3 * 2);
    const Bytes file = idx_bytes(0x08, {5, 3, 2}, data);
    for (const std::string& path : {write_file("u8.idx", file), write_file("u8.idx.gz", gzip_bytes(file))}) {
      const tq::Tensor t = tq::io::read_idx(path);
      REQUIRE(t.dtype() == tq::DType::u8);
      REQUIRE(t.shape() == tq::Shape{5, 3, 2});
      CHECK(std::memcmp(t.raw_data(), data.data(), data.size()) == 0);
    }
  }
  SECTION("i8 keeps its sign") {
    const Bytes file = idx_bytes(0x09, {3}, {0x80, 0xFF, 0x7F});
    const tq::Tensor t = tq::io::parse_idx(file.data(), file.size(), "i8");
    REQUIRE(t.dtype() == tq::DType::i8);
    CHECK(t.data<int8_t>()[0] == -128);
    CHECK(t.data<int8_t>()[1] == -1);
    CHECK(t.data<int8_t>()[2] == 127);
  }
  SECTION("i32 and f32 are big-endian") {
    const Bytes i32 = idx_bytes(0x0C, {2}, {0x01, 0x02, 0x03, 0x04, 0xFF, 0xFF, 0xFF, 0xFE});
    const tq::Tensor t = tq::io::parse_idx(i32.data(), i32.size(), "i32");
    CHECK(t.data<int32_t>()[0] == 0x01020304);
    CHECK(t.data<int32_t>()[1] == -2);
    const Bytes f32 = idx_bytes(0x0D, {1, 1}, {0xBF, 0xC0, 0x00, 0x00});  // -1.5f
    const Bytes gz = gzip_bytes(f32);
    const tq::Tensor f = tq::io::parse_idx(gz.data(), gz.size(), "f32.gz");
    REQUIRE(f.shape() == tq::Shape{1, 1});
    CHECK(f.data<float>()[0] == -1.5f);
  }
  SECTION("a gzip file of several members (gzip a b > c) is one stream") {
    const Bytes file = idx_bytes(0x08, {4, 4}, noise_bytes(16));
    const Bytes two = concat(gzip_bytes(Bytes(file.begin(), file.begin() + 10)), gzip_bytes(Bytes(file.begin() + 10, file.end())));
    const tq::Tensor t = tq::io::parse_idx(two.data(), two.size(), "two-members.gz");
    REQUIRE(t.shape() == tq::Shape{4, 4});
    CHECK(std::memcmp(t.raw_data(), file.data() + 12, 16) == 0);
  }
  SECTION("write_idx round trip, plain and gzip") {
    const tq::Tensor u8 = tq::io::read_idx(write_file("src.idx", idx_bytes(0x08, {7, 9}, noise_bytes(63))));
    for (const char* name : {"rt.idx", "rt.idx.gz"}) {
      const std::string path = (scratch_dir() / name).string();
      tq::io::write_idx(path, u8);
      const tq::Tensor back = tq::io::read_idx(path);
      REQUIRE(back.shape() == u8.shape());
      CHECK(std::memcmp(back.raw_data(), u8.raw_data(), 63) == 0);
      CHECK_FALSE(fs::exists(path + ".tmp"));
    }
    const Bytes header_gz = [] {
      std::ifstream f((scratch_dir() / "rt.idx.gz").string(), std::ios::binary);
      Bytes b(2);
      f.read(reinterpret_cast<char*>(b.data()), 2);
      return b;
    }();
    CHECK(header_gz == Bytes{0x1f, 0x8b});
    const tq::Tensor f32 = tq::from_vector({1.0f, -2.5f, 1e30f}, {3});
    const std::string path = (scratch_dir() / "f32.idx").string();
    tq::io::write_idx(path, f32);
    const tq::Tensor back = tq::io::read_idx(path);
    REQUIRE(back.dtype() == tq::DType::f32);
    CHECK(back.data<float>()[1] == -2.5f);
    CHECK(back.data<float>()[2] == 1e30f);
  }
}

TEST_CASE("IDX: broken headers are rejected with a message naming the file and the problem", "[idx]") {
  const Bytes data = noise_bytes(2 * 3 * 4);
  SECTION("wrong magic") {
    Bytes b = idx_bytes(0x08, {2, 3, 4}, data);
    b[0] = 0x01;
    require_rejected_plain_and_gzip("magic.idx", b, "bad magic number 0x01000803: not an IDX file");
    require_rejected_plain_and_gzip("text.idx", Bytes{'h', 'e', 'l', 'l', 'o', '\n'}, "bad magic number 0x68656c6c");
  }
  SECTION("unknown and unsupported data types") {
    require_rejected_plain_and_gzip("type.idx", idx_bytes(0x07, {2, 3, 4}, data), "unknown IDX data type 0x07");
    require_rejected_plain_and_gzip("i16.idx", idx_bytes(0x0B, {12}, data), "IDX data type 0x0b (i16) is not supported");
    require_rejected_plain_and_gzip("f64.idx", idx_bytes(0x0E, {3}, data), "IDX data type 0x0e (f64) is not supported");
  }
  SECTION("number of dimensions 0 or above 4") {
    require_rejected_plain_and_gzip("ndims0.idx", idx_bytes(0x08, {}, data), "bad number of dimensions 0 (this reader takes 1 to 4)");
    Bytes nine = idx_bytes(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {7});
    require_rejected_plain_and_gzip("ndims9.idx", nine, "bad number of dimensions 9");
  }
  SECTION("a dimension of size zero") {
    require_rejected_plain_and_gzip("zero.idx", idx_bytes(0x08, {2, 0, 4}, {}), "dimension 1 has size 0");
  }
  SECTION("dimensions whose product overflows or exceeds the limit") {
    require_rejected_plain_and_gzip("big.idx", idx_bytes(0x08, {65536, 65536, 65536}, data),
                                    "dimensions (65536, 65536, 65536) hold more than 2147483648 elements");
    // (2^32 - 1)^4 overflows 64 bits unless checked before each multiplication.
    require_rejected_plain_and_gzip("overflow.idx", idx_bytes(0x08, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, data),
                                    "hold more than 2147483648 elements");
    require_rejected_plain_and_gzip("f32big.idx", idx_bytes(0x0D, {0x80000000, 2}, data), "hold more than 2147483648 elements");
  }
  SECTION("a file that ends inside the header") {
    require_rejected_plain_and_gzip("empty.idx", Bytes{}, "empty file (no IDX header)");
    require_rejected_plain_and_gzip("magic2.idx", Bytes{0, 0}, "truncated: the file ends inside the 4-byte IDX magic number (2 bytes)");
    const Bytes full = idx_bytes(0x08, {2, 3, 4}, {});
    require_rejected_plain_and_gzip("dims.idx", Bytes(full.begin(), full.begin() + 9),
                                    "truncated: the file ends inside the IDX header (5 of the 12 bytes of dimension sizes)");
  }
}

TEST_CASE("IDX: data of the wrong length is rejected", "[idx]") {
  const Bytes data = noise_bytes(10 * 2 * 2);
  const Bytes file = idx_bytes(0x08, {10, 2, 2}, data);
  SECTION("truncated data") {
    require_rejected_plain_and_gzip("short.idx", Bytes(file.begin(), file.end() - 10),
                                    "truncated: expected 40 bytes of data after the 16-byte header (dimensions (10, 2, 2)), found 30");
  }
  SECTION("trailing bytes") {
    require_rejected_plain_and_gzip("long.idx", concat(file, {1, 2, 3}),
                                    "trailing data: 3 bytes beyond the expected 40 bytes of data after the 16-byte header");
  }
  SECTION("a big header in a small file is refused before allocating") {
    // 2^31 - 1 bytes declared: a plain file has 40, a 60-byte gzip file holds at most ~62 KB.
    const Bytes big = idx_bytes(0x08, {0x7FFFFFFF}, data);
    require_rejected("big-plain.idx", big, "truncated: expected 2147483647 bytes of data after the 8-byte header");
    require_rejected("big.idx.gz", gzip_bytes(big), "truncated or corrupt header: expected 2147483647 bytes");
    require_rejected("big.idx.gz", gzip_bytes(big), "(deflate expands at most 1032:1)");
  }
}

TEST_CASE("IDX: broken gzip streams are rejected", "[idx]") {
  const Bytes file = idx_bytes(0x08, {64, 8, 8}, noise_bytes(64 * 8 * 8));
  const Bytes gz = gzip_bytes(file);
  REQUIRE(gz.size() > 100);
  SECTION("the compressed stream cut in the middle of the data") {
    require_rejected("cut.idx.gz", Bytes(gz.begin(), gz.begin() + gz.size() / 2), "truncated gzip stream: expected 4096 bytes of data");
  }
  SECTION("the compressed stream cut inside the header") {
    require_rejected("cut-header.idx.gz", Bytes(gz.begin(), gz.begin() + 12), "truncated gzip stream");
  }
  SECTION("only the gzip trailer (CRC-32 and size) missing") {
    require_rejected("no-trailer.idx.gz", Bytes(gz.begin(), gz.end() - 8),
                     "truncated gzip stream: the data is complete but the stream ends before its gzip trailer");
  }
  SECTION("a wrong CRC-32") {
    Bytes bad = gz;
    bad[bad.size() - 8] ^= 0x55;
    require_rejected("crc.idx.gz", bad, "corrupt gzip data: incorrect data check");
  }
  SECTION("corrupt compressed bytes") {
    Bytes bad = gz;
    bad[10] |= 0x06;  // the first deflate block's type becomes 3, which does not exist
    require_rejected("corrupt.idx.gz", bad, "corrupt gzip data: invalid block type");
  }
  SECTION("garbage after the gzip stream") {
    require_rejected("garbage.idx.gz", concat(gz, {'x', 'y', 'z', 0, 0}), "5 bytes of trailing garbage after the end of the gzip stream");
  }
  SECTION("gzip magic with nothing after it") {
    require_rejected("magic-only.gz", Bytes{0x1f, 0x8b}, "truncated gzip stream");
  }
}

TEST_CASE("IDX: files that cannot be read", "[idx]") {
  const std::string missing = (scratch_dir() / "no-such-file.idx.gz").string();
  REQUIRE_THROWS_WITH(tq::io::read_idx(missing), Contains(missing + ": cannot open: No such file or directory"));
  REQUIRE_THROWS_WITH(tq::io::read_idx(scratch_dir().string()), Contains("not a regular file"));
  REQUIRE_THROWS_WITH(tq::io::write_idx((scratch_dir() / "x.idx").string(), tq::from_vector_i64({1, 2}, {2})),
                      Contains("dtype i64 has no IDX type"));
}
