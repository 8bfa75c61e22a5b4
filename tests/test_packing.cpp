// Packed 4-bit weights: round trips for every bit width that packs, and
// clear errors for data that does not match its shape.
#include <catch2/catch.hpp>

#include "io/packing.h"
#include "io/safetensors.h"
#include "tensor/random.h"

using namespace tq;

TEST_CASE("pack_int4 / unpack_int4 round-trip every 2-, 3- and 4-bit range, odd and even counts", "[packing]") {
  Generator g(5);
  for (int bits = 2; bits <= 4; ++bits) {
    const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (int64_t n : {1, 2, 7, 64, 255}) {
      Tensor v = empty({n}, DType::i8);
      for (int64_t i = 0; i < n; ++i) v.data<int8_t>()[i] = static_cast<int8_t>(lo + static_cast<int>(g.below(hi - lo + 1)));
      const Tensor p = io::pack_int4(v);
      REQUIRE(p.numel() == (n + 1) / 2);
      const Tensor back = io::unpack_int4(p, {n}, "test");
      for (int64_t i = 0; i < n; ++i) REQUIRE(back.data<int8_t>()[i] == v.data<int8_t>()[i]);
    }
  }
}

TEST_CASE("pack_int4 lays out values low nibble first, two's complement", "[packing]") {
  Tensor v = empty({3}, DType::i8);
  v.data<int8_t>()[0] = -1;  // 0xF
  v.data<int8_t>()[1] = 2;   // 0x2
  v.data<int8_t>()[2] = -8;  // 0x8
  const Tensor p = io::pack_int4(v);
  REQUIRE(p.data<uint8_t>()[0] == 0x2F);
  REQUIRE(p.data<uint8_t>()[1] == 0x08);
}

TEST_CASE("bad input: values beyond 4 bits, and packed data that does not match its shape", "[packing]") {
  Tensor v = full({2}, 9, DType::i8);
  REQUIRE_THROWS_WITH(io::pack_int4(v), Catch::Contains("does not fit 4 bits"));
  Tensor p = zeros({3}, DType::u8);
  REQUIRE_THROWS_AS(io::unpack_int4(p, {2, 4}, "fc1.weight"), io::FormatError);
  REQUIRE_THROWS_WITH(io::unpack_int4(p, {2, 4}, "fc1.weight"), Catch::Contains("fc1.weight") && Catch::Contains("(2, 4)"));
  Tensor odd = full({2}, 0xF0, DType::u8);
  REQUIRE_THROWS_WITH(io::unpack_int4(odd, {3}, "w"), Catch::Contains("unused last half byte"));
}
