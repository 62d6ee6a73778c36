// Unit tests of the codec table (tensor/weight_codec.h): every type has exactly one codec, every
// member is found through it, the fields agree with each other and with the kernel tables of every
// ISA the CPU has, and every name the table declares parses on the command line.
#include "tensor/weight_codec.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "compress/quantize_model.h"
#include "kernels/activation_quant.h"
#include "kernels/matmul_kernels.h"
#include "tensor/quant_blocks.h"

namespace frugal {
namespace {

// Every DType enumerator (tensor/dtype.h).
constexpr DType kEnumerators[] = {DType::F32,  DType::F16,  DType::Q4_0, DType::Q4_1, DType::Q5_0,
                                  DType::Q5_1, DType::Q8_0, DType::Q8_1, DType::Q2_K, DType::Q3_K,
                                  DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_K, DType::BF16};

bool is_float_slot(int slot) { return slot == kKernelF32 || slot == kKernelF16 || slot == kKernelBF16; }

int codecs_owning(uint32_t id) {
  int owners = 0;
  for (const WeightCodec& c : weight_codecs()) owners += c.find(id) != nullptr;
  return owners;
}

TEST(WeightCodec, EveryEnumeratorHasExactlyOneCodec) {
  for (DType t : kEnumerators) {
    const uint32_t id = static_cast<uint32_t>(t);
    SCOPED_TRACE(ggml_type_name(id));
    EXPECT_EQ(codecs_owning(id), 1);
    const WeightCodec* c = find_weight_codec(id);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->find(id), find_type_traits(id));
    EXPECT_EQ(c->find(id)->type, t);
  }
}

TEST(WeightCodec, EveryMemberIsFoundThroughItsOwnCodecOnly) {
  int members = 0;
  for (const WeightCodec& c : weight_codecs()) {
    ASSERT_FALSE(c.members().empty());
    EXPECT_NE(c.find(static_cast<uint32_t>(c.type)), nullptr) << "the selected type belongs to the codec";
    for (const TypeTraits& m : c.members()) {
      const uint32_t id = static_cast<uint32_t>(m.type);
      SCOPED_TRACE(m.name);
      ++members;
      EXPECT_EQ(c.find(id), &m);
      EXPECT_EQ(find_type_traits(id), &m);
      EXPECT_EQ(find_weight_codec(id), &c);
      EXPECT_EQ(codecs_owning(id), 1);
      EXPECT_EQ(ggml_type_name(id), m.name);
      // Layout: whole blocks of whole bytes, at most 33 bits per weight (f32 plus nothing).
      ASSERT_GT(m.block_size, 0);
      ASSERT_GT(m.block_bytes, 0u);
      const double bpw = 8.0 * static_cast<double>(m.block_bytes) / static_cast<double>(m.block_size);
      EXPECT_GT(bpw, 1.0);
      EXPECT_LE(bpw, 32.0);
      EXPECT_NE(m.dequantize_row, nullptr);
      EXPECT_NE(m.quantize_row, nullptr);
      EXPECT_NE(m.dot_f32, nullptr);
    }
  }
  // 15 GGML types, 64 sparse-q8 and 32 sparse-q4 capacities, 4 N:M types, 56 fq layouts.
  EXPECT_EQ(members, 15 + 64 + 32 + 4 + 56);
}

TEST(WeightCodec, BlockBytesMatchTheBlockStructs) {
  EXPECT_EQ(type_traits(DType::Q4_0).block_bytes, sizeof(quant::BlockQ4_0));
  EXPECT_EQ(type_traits(DType::Q5_1).block_bytes, sizeof(quant::BlockQ5_1));
  EXPECT_EQ(type_traits(DType::Q8_0).block_bytes, sizeof(quant::BlockQ8_0));
  EXPECT_EQ(type_traits(DType::Q2_K).block_bytes, sizeof(quant::BlockQ2_K));
  EXPECT_EQ(type_traits(DType::Q5_K).block_bytes, sizeof(quant::BlockQ5_K));
  EXPECT_EQ(type_traits(DType::Q6_K).block_bytes, sizeof(quant::BlockQ6_K));
  EXPECT_EQ(type_traits(DType::Q8_K).block_bytes, sizeof(quant::BlockQ8_K));
}

TEST(WeightCodec, FieldsAgreeWithEachOther) {
  for (const WeightCodec& c : weight_codecs()) {
    SCOPED_TRACE(type_traits(c.type).name);
    for (const TypeTraits& m : c.members()) {
      const int slot = c.kernel_slot(m.type);
      EXPECT_GE(slot, kNoKernel);
      EXPECT_LT(slot, kKernelTypeCount);
      EXPECT_EQ(kernels::kernel_type_index(m.type), slot);
      EXPECT_EQ(kernels::activation_format_for(m.type), c.activation);
      // Integer kernels read quantized activations; float kernels and the fallback read floats.
      if (slot == kNoKernel || is_float_slot(slot)) {
        EXPECT_EQ(c.activation, ActivationFormat::kNone);
      } else {
        EXPECT_NE(c.activation, ActivationFormat::kNone);
      }
    }
    if (c.expand_for_prefill) {
      EXPECT_EQ(c.activation, ActivationFormat::kQ8Block32) << "prefill runs the Q8_0 kernel";
    }
    if (c.fit != nullptr) {
      EXPECT_TRUE(c.members_by_name);
    }
    const TypeTraits& t = type_traits(c.type);
    if (c.grid.kind != GridKind::kNone) {
      EXPECT_GT(c.grid.sub, 0);
      EXPECT_EQ(t.block_size % c.grid.sub, 0);
      EXPECT_LT(c.grid.qmin, c.grid.qmax);
      EXPECT_GE(c.grid.qmax - c.grid.qmin, 3);
    }
    if (c.short_rows != c.type) {
      // llama-quantize's fallback: a 32-element type of at least as many bits per weight.
      const TypeTraits& s = type_traits(c.short_rows);
      EXPECT_EQ(s.block_size, 32);
      EXPECT_GE(s.block_bytes * t.block_size, t.block_bytes * s.block_size);
    }
  }
}

TEST(WeightCodec, EverySlotIsUsedAndFilledOnEveryIsa) {
  std::set<int> used;
  for (const WeightCodec& c : weight_codecs()) {
    for (const TypeTraits& m : c.members()) {
      if (c.kernel_slot(m.type) != kNoKernel) used.insert(c.kernel_slot(m.type));
    }
  }
  EXPECT_EQ(used.size(), static_cast<size_t>(kKernelTypeCount)) << "a kernel slot no codec names";
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}) {
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) break;
    SCOPED_TRACE(isa_name(isa));
    const kernels::KernelTable& table = kernels::kernel_table(isa);
    for (int slot : used) {
      if (is_float_slot(slot)) {
        EXPECT_NE(table.float_rows[slot], nullptr) << "slot " << slot;
      } else {
        EXPECT_NE(table.quant_rows[slot], nullptr) << "slot " << slot;
      }
    }
  }
}

TEST(WeightCodec, EveryDeclaredNameParsesAndNamesAreUnique) {
  std::set<std::string> names;
  for (const WeightCodec& c : weight_codecs()) {
    if (c.name != nullptr) {
      EXPECT_TRUE(names.insert(c.name).second) << c.name;
      const auto parsed = parse_format(c.name);
      ASSERT_TRUE(parsed.is_ok()) << c.name;
      EXPECT_EQ(*parsed, c.type);
    }
    if (c.alias != nullptr) {
      EXPECT_TRUE(names.insert(c.alias).second) << c.alias;
      const auto parsed = parse_format(c.alias);
      ASSERT_TRUE(parsed.is_ok()) << c.alias;
      EXPECT_EQ(*parsed, c.type);
    }
    if (!c.members_by_name) continue;
    for (const TypeTraits& m : c.members()) {
      if (c.name != nullptr && std::string(m.name) == c.name) continue;
      EXPECT_TRUE(names.insert(m.name).second) << m.name;
      const auto parsed = parse_format(m.name);
      ASSERT_TRUE(parsed.is_ok()) << m.name;
      EXPECT_EQ(*parsed, m.type);
    }
  }
  // Activation blocks are readable but never a target.
  EXPECT_FALSE(parse_format("q8_K").is_ok());
  EXPECT_FALSE(parse_format("q8_1").is_ok());
  EXPECT_FALSE(parse_format("sparse-q5").is_ok());
}

}  // namespace
}  // namespace frugal
