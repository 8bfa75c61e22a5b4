// .npy files (src/io/npy.h): what save_npy writes reads back; the header
// has numpy's layout (version 1.0, dict text padded with spaces and a newline
// to 64 bytes); float64 converts to f32; version 2 headers read; every
// malformed file is a FormatError naming what is wrong.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>

#include "io/npy.h"
#include "test_files.h"
#include "tinyqat.h"

namespace {

using namespace tq;
using Catch::Matchers::Contains;

std::string header_of(const std::string& descr, const std::string& order, const std::string& shape) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
  h += std::string((64 - (10 + h.size() + 1) % 64) % 64, ' ') + "\n";
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(h.size() & 0xff);
  out += static_cast<char>(h.size() >> 8);
  return out + h;
}

}  // namespace

TEST_CASE("npy: save and load round trip, shapes of rank 0 to 4", "[npy]") {
  for (const Shape& s : {Shape{}, Shape{3}, Shape{2, 5}, Shape{2, 1, 3, 4}}) {
    const Tensor t = randn(s);
    const std::string bytes = io::npy_bytes(t);
    CHECK(bytes.size() % 64 == (static_cast<size_t>(t.numel()) * 4) % 64);  // the header is padded to 64 bytes
    const Tensor u = io::parse_npy(bytes, "x.npy");
    REQUIRE(u.shape() == s);
    CHECK(std::memcmp(u.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()) * 4) == 0);
  }
  // The header numpy writes for np.zeros((2, 3), np.float32): 128 bytes, 'shape': (2, 3).
  const std::string b = io::npy_bytes(zeros({2, 3}));
  REQUIRE(b.size() == 128 + 24);
  CHECK(b.substr(0, 128) == header_of("<f4", "False", "(2, 3)"));
  CHECK(io::npy_bytes(zeros({7})).find("'shape': (7,)") != std::string::npos);
}

TEST_CASE("npy: float64 converts, version 2 headers read", "[npy]") {
  std::string f8 = header_of("<f8", "False", "(2,)");
  const double v[2] = {1.5, -0.25};
  f8.append(reinterpret_cast<const char*>(v), 16);
  const Tensor t = io::parse_npy(f8, "d.npy");
  REQUIRE(t.shape() == Shape{2});
  CHECK(t.data<float>()[0] == 1.5f);
  CHECK(t.data<float>()[1] == -0.25f);

  std::string h = header_of("<f4", "False", "(1,)").substr(10);
  std::string v2("\x93NUMPY\x02\x00", 8);
  const uint32_t len = static_cast<uint32_t>(h.size());
  v2.append(reinterpret_cast<const char*>(&len), 4);
  const float one = 1.0f;
  v2 += h;
  v2.append(reinterpret_cast<const char*>(&one), 4);
  CHECK(io::parse_npy(v2, "v2.npy").data<float>()[0] == 1.0f);
}

TEST_CASE("npy: malformed files are named errors", "[npy]") {
  const std::string data(24, '\0');
  CHECK_THROWS_WITH(io::parse_npy("hello", "a.npy"), Contains("a.npy") && Contains("magic"));
  CHECK_THROWS_WITH(io::parse_npy(header_of("<i4", "False", "(6,)") + data, "a.npy"), Contains("'<i4'"));
  CHECK_THROWS_WITH(io::parse_npy(header_of("<f4", "True", "(2, 3)") + data, "a.npy"), Contains("Fortran"));
  CHECK_THROWS_WITH(io::parse_npy(header_of("<f4", "False", "(2, 4)") + data, "a.npy"), Contains("32 bytes"));
  CHECK_THROWS_WITH(io::parse_npy(header_of("<f4", "False", "(2, x)") + data, "a.npy"), Contains("bad size"));
  CHECK_THROWS_WITH(io::parse_npy(header_of("<f4", "False", "(99999999999, 99999999999)") + data, "a.npy"),
                    Contains("too large"));
  std::string cut = header_of("<f4", "False", "(6,)");
  CHECK_THROWS_WITH(io::parse_npy(cut.substr(0, 40), "a.npy"), Contains("ends inside its header"));
  CHECK_THROWS_AS(io::load_npy(tq_test::scratch_dir("npy").string() + "/none.npy"), std::runtime_error);
}
