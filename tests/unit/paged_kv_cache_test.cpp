// Unit tests of the paged KV cache's block manager: allocation and release, reservations,
// prefix sharing by hash chain, copy-on-write, LRU eviction of cached blocks, exhaustion.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "kernels/ops_kernels.h"
#include "kv/kv_cache.h"
#include "kv/paged_kv_cache.h"
#include "support/isa_scope.h"

namespace frugal {
namespace {

std::unique_ptr<PagedKvCache> make_cache(int64_t blocks, int64_t block_tokens = 4, bool prefix = true) {
  PagedKvOptions o;
  o.n_layer = 2;
  o.row_elements = 8;
  o.n_blocks = blocks;
  o.block_tokens = block_tokens;
  o.prefix_cache = prefix;
  auto cache = PagedKvCache::create(o);
  EXPECT_TRUE(cache.is_ok()) << cache.status().message();
  return std::move(cache).value();
}

std::vector<int32_t> iota_tokens(int64_t n, int32_t first = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(PagedKvCache, RejectsBadOptions) {
  PagedKvOptions o;
  o.n_layer = 1;
  o.row_elements = 8;
  o.n_blocks = 4;
  o.block_tokens = 12;  // not a power of two
  EXPECT_FALSE(PagedKvCache::create(o).is_ok());
  o.block_tokens = 16;
  o.n_blocks = 0;
  EXPECT_FALSE(PagedKvCache::create(o).is_ok());
  o.n_blocks = 4;
  o.key_type = KvType::kQ8_0;  // rows of 8 cannot hold 32-element blocks
  EXPECT_FALSE(PagedKvCache::create(o).is_ok());
}

TEST(PagedKvCache, AllocatesPerBlockAndReturnsEverything) {
  auto cache = make_cache(8);
  EXPECT_EQ(cache->block_shift(), 2);
  PagedKvCache::Sequence a;
  ASSERT_TRUE(cache->prepare_write(a, 0, 5).is_ok());  // 5 positions: 2 blocks
  EXPECT_EQ(a.blocks.size(), 2u);
  EXPECT_EQ(cache->used_blocks(), 2);
  ASSERT_TRUE(cache->prepare_write(a, 5, 8).is_ok());  // still 2 blocks
  EXPECT_EQ(a.blocks.size(), 2u);
  ASSERT_TRUE(cache->prepare_write(a, 8, 9).is_ok());
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_NE(a.blocks[0], a.blocks[1]);
  cache->release(a);
  EXPECT_EQ(cache->used_blocks(), 0);
  EXPECT_EQ(cache->free_blocks(), 8);
  EXPECT_TRUE(a.blocks.empty());
}

TEST(PagedKvCache, ReservationsHoldBlocksAndExhaustionIsAnError) {
  auto cache = make_cache(4);
  PagedKvCache::Sequence a, b;
  ASSERT_TRUE(cache->reserve(a, 3));
  EXPECT_EQ(cache->available_blocks(), 1);
  EXPECT_FALSE(cache->reserve(b, 2));  // only one block is unpromised
  EXPECT_EQ(b.reserved, 0);
  ASSERT_TRUE(cache->prepare_write(b, 0, 4).is_ok());  // takes the unpromised block
  EXPECT_FALSE(cache->prepare_write(b, 4, 5).is_ok());  // the rest belongs to a
  ASSERT_TRUE(cache->prepare_write(a, 0, 12).is_ok());  // a's three reserved blocks
  EXPECT_EQ(a.reserved, 0);
  EXPECT_EQ(cache->reserved_blocks(), 0);
  EXPECT_EQ(cache->used_blocks(), 4);
  cache->release(a);
  cache->release(b);
  EXPECT_EQ(cache->free_blocks(), 4);
  // Releasing an unused reservation returns it too.
  ASSERT_TRUE(cache->reserve(a, 4));
  cache->release(a);
  EXPECT_EQ(cache->available_blocks(), 4);
}

TEST(PagedKvCache, PrefixBlocksAreSharedByHashChain) {
  auto cache = make_cache(16);
  const auto tokens = iota_tokens(10);
  PagedKvCache::Sequence a;
  ASSERT_TRUE(cache->prepare_write(a, 0, 10).is_ok());
  cache->publish(a, tokens.data(), 10);  // 2 full blocks published, the partial third is not
  EXPECT_EQ(a.hashed_blocks, 2);

  PagedKvCache::Sequence b;
  EXPECT_EQ(cache->match_prefix(b, tokens.data(), 10), 8);
  ASSERT_EQ(b.blocks.size(), 2u);
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_EQ(b.blocks[1], a.blocks[1]);
  EXPECT_EQ(cache->ref_count(a.blocks[0]), 2);

  // The chain hash covers history: the same second block after a different first one misses.
  auto other = tokens;
  other[0] = 99;
  PagedKvCache::Sequence c;
  EXPECT_EQ(cache->match_prefix(c, other.data(), 10), 0);
  // A different second block shares only the first.
  other = tokens;
  other[6] = 99;
  EXPECT_EQ(cache->match_prefix(c, other.data(), 10), 4);
  EXPECT_EQ(cache->ref_count(a.blocks[0]), 3);

  cache->release(a);
  cache->release(b);
  cache->release(c);
  EXPECT_EQ(cache->used_blocks(), 0);
  // Published blocks stay cached (evictable), the partial one went back to the free list.
  EXPECT_EQ(cache->cached_blocks(), 2);
  EXPECT_EQ(cache->free_blocks(), 14);
  PagedKvCache::Sequence d;
  EXPECT_EQ(cache->match_prefix(d, tokens.data(), 10), 8);
  EXPECT_EQ(cache->cached_blocks(), 0);
  EXPECT_EQ(cache->used_blocks(), 2);
  cache->release(d);
}

TEST(PagedKvCache, NoSharingWithoutPrefixCache) {
  auto cache = make_cache(8, 4, false);
  const auto tokens = iota_tokens(8);
  PagedKvCache::Sequence a, b;
  ASSERT_TRUE(cache->prepare_write(a, 0, 8).is_ok());
  cache->publish(a, tokens.data(), 8);
  EXPECT_EQ(cache->match_prefix(b, tokens.data(), 8), 0);
  cache->release(a);
  EXPECT_EQ(cache->free_blocks(), 8);
}

TEST(PagedKvCache, CopyOnWriteOfASharedBlock) {
  auto cache = make_cache(8);
  const auto tokens = iota_tokens(8);
  PagedKvCache::Sequence a;
  ASSERT_TRUE(cache->prepare_write(a, 0, 8).is_ok());
  // Mark the second block's bytes so the copy can be checked.
  const int64_t layer1 = cache->key_block_bytes() / 2;  // 2 layers per block
  uint8_t* key = cache->key_base(1) + a.blocks[1] * cache->key_block_bytes();
  for (int64_t i = 0; i < layer1; ++i) key[i] = static_cast<uint8_t>(i * 7 + 1);
  cache->publish(a, tokens.data(), 8);

  PagedKvCache::Sequence b;
  ASSERT_EQ(cache->match_prefix(b, tokens.data(), 8), 8);
  ASSERT_TRUE(cache->reserve(b, 1));
  const int32_t shared = b.blocks[1];
  // b rewrites its last position (the recompute of a fully cached prompt's last token).
  ASSERT_TRUE(cache->prepare_write(b, 7, 8).is_ok());
  EXPECT_NE(b.blocks[1], shared);
  EXPECT_EQ(b.blocks[0], a.blocks[0]);  // the untouched block stays shared
  EXPECT_EQ(cache->ref_count(shared), 1);
  EXPECT_EQ(cache->ref_count(b.blocks[1]), 1);
  const uint8_t* copy = cache->key_base(1) + b.blocks[1] * cache->key_block_bytes();
  EXPECT_EQ(std::memcmp(copy, key, static_cast<size_t>(layer1)), 0);
  EXPECT_EQ(b.reserved, 0);

  // A published block with no other user is copied too: the cache's copy must stay intact.
  cache->release(a);
  PagedKvCache::Sequence c;
  ASSERT_EQ(cache->match_prefix(c, tokens.data(), 8), 8);
  EXPECT_EQ(cache->ref_count(c.blocks[1]), 1);
  ASSERT_TRUE(cache->prepare_write(c, 7, 8).is_ok());
  EXPECT_NE(c.blocks[1], shared);
  cache->release(b);
  cache->release(c);
  EXPECT_EQ(cache->used_blocks(), 0);
  EXPECT_EQ(cache->reserved_blocks(), 0);
}

TEST(PagedKvCache, EvictsLeastRecentlyUsedCachedBlocks) {
  auto cache = make_cache(4);
  const auto first = iota_tokens(4, 0), second = iota_tokens(4, 100), third = iota_tokens(4, 200);
  PagedKvCache::Sequence a, b;
  ASSERT_TRUE(cache->prepare_write(a, 0, 4).is_ok());
  cache->publish(a, first.data(), 4);
  ASSERT_TRUE(cache->prepare_write(b, 0, 4).is_ok());
  cache->publish(b, second.data(), 4);
  cache->release(a);  // `first` becomes least recently used
  cache->release(b);
  EXPECT_EQ(cache->cached_blocks(), 2);
  // Reuse `first` so `second` is now the oldest unreferenced block.
  PagedKvCache::Sequence c;
  ASSERT_EQ(cache->match_prefix(c, first.data(), 4), 4);
  cache->release(c);
  // Three fresh blocks: two free ones, then the LRU victim `second`.
  PagedKvCache::Sequence d;
  ASSERT_TRUE(cache->prepare_write(d, 0, 12).is_ok());
  cache->publish(d, iota_tokens(12, 300).data(), 12);
  EXPECT_EQ(cache->cached_blocks(), 1);
  PagedKvCache::Sequence e;
  EXPECT_EQ(cache->match_prefix(e, second.data(), 4), 0);  // evicted
  EXPECT_EQ(cache->match_prefix(e, first.data(), 4), 4);   // kept
  // Everything is in use now: one more block is an error, not a crash.
  EXPECT_FALSE(cache->prepare_write(e, 4, 5).is_ok());
  EXPECT_EQ(cache->match_prefix(c, third.data(), 4), 0);
  cache->release(d);
  cache->release(e);
  EXPECT_EQ(cache->used_blocks(), 0);
  EXPECT_EQ(cache->free_blocks() + cache->cached_blocks(), 4);
}

TEST(PagedKvCache, MatchDoesNotTakeBlocksPromisedToReservations) {
  auto cache = make_cache(2);
  const auto tokens = iota_tokens(4);
  PagedKvCache::Sequence a;
  ASSERT_TRUE(cache->prepare_write(a, 0, 4).is_ok());
  cache->publish(a, tokens.data(), 4);
  cache->release(a);  // 1 cached + 1 free
  PagedKvCache::Sequence big;
  ASSERT_TRUE(cache->reserve(big, 2));  // promises both (the cached one is evictable)
  PagedKvCache::Sequence b;
  EXPECT_EQ(cache->match_prefix(b, tokens.data(), 4), 0);
  EXPECT_EQ(cache->available_blocks(), 0);
  ASSERT_TRUE(cache->prepare_write(big, 0, 8).is_ok());  // evicts the cached block
  cache->release(big);
  EXPECT_EQ(cache->free_blocks(), 2);
}

// Paged attention (rows scattered over blocks in a shuffled order, heads at an offset inside each
// row) against its scalar twin on every ISA (2e-5, as the contiguous twin tests), and against the
// contiguous kernel on the same rows: the same tiles and arithmetic, so bit-identical.
// A sequence admitted before another published its blocks takes them later, each in place of a
// block of its reservation (returned to the pool), stopping at the first block that differs or
// is not published yet, and holding nothing once released.
TEST(PagedKvCache, ExtendPrefixTakesBlocksPublishedSinceAdmission) {
  auto cache = make_cache(16);
  const auto tokens = iota_tokens(14);
  PagedKvCache::Sequence leader, follower;
  EXPECT_EQ(cache->match_prefix(leader, tokens.data(), 14), 0);
  ASSERT_TRUE(cache->reserve(leader, 4));
  auto other = tokens;
  other[9] = 99;  // differs in block 2
  EXPECT_EQ(cache->match_prefix(follower, other.data(), 14), 0);
  ASSERT_TRUE(cache->reserve(follower, 4));
  EXPECT_EQ(cache->available_blocks(), 8);
  EXPECT_EQ(cache->extend_prefix(follower, other.data(), 14), 0);  // nothing published yet
  ASSERT_TRUE(cache->prepare_write(leader, 0, 14).is_ok());
  cache->publish(leader, tokens.data(), 14);  // blocks 0..2 full, block 3 partial
  EXPECT_EQ(cache->extend_prefix(follower, other.data(), 14), 2);  // block 2 differs
  EXPECT_EQ(follower.blocks, std::vector<int32_t>(leader.blocks.begin(), leader.blocks.begin() + 2));
  EXPECT_EQ(follower.reserved, 2);
  EXPECT_EQ(cache->ref_count(leader.blocks[0]), 2);
  EXPECT_EQ(cache->available_blocks(), 10);  // two reserved blocks went back to the pool
  EXPECT_EQ(cache->extend_prefix(follower, other.data(), 14), 0);
  // A third sequence, admitted late and after the leader left, revives the cached blocks.
  cache->release(leader);
  PagedKvCache::Sequence third;
  ASSERT_TRUE(cache->reserve(third, 4));
  EXPECT_EQ(cache->extend_prefix(third, tokens.data(), 14), 3);
  EXPECT_EQ(third.reserved, 1);
  cache->release(follower);
  cache->release(third);
  EXPECT_EQ(cache->used_blocks(), 0);
  EXPECT_EQ(cache->reserved_blocks(), 0);
  EXPECT_EQ(cache->available_blocks(), 16);
}

TEST(PagedAttention, MatchesScalarTwinAndContiguousRows) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::pair<int64_t, int64_t> ranges[] = {{0, 0}, {0, 7}, {3, 70}, {0, 64}, {13, 150}, {149, 150}};
  const KvType types[] = {KvType::kF16, KvType::kQ8_0, KvType::kQ4_0};
  for (int shift : {0, 2, 4}) {
    const int64_t block_tokens = int64_t{1} << shift;
    const int64_t head_dim = 64, heads = 2, n = heads * head_dim, positions = 151;
    const int64_t n_blocks = (positions + block_tokens - 1) / block_tokens + 3;
    std::vector<int32_t> table(static_cast<size_t>(n_blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    std::vector<float> q(head_dim), k(positions * n), v(positions * n);
    for (auto* x : {&q, &k, &v}) {
      for (float& e : *x) e = normal(rng);
    }
    const float scale = 0.125f;
    for (KvType kt : types) {
      for (KvType vt : types) {
        const int64_t krow = kv_row_bytes(kt, n), vrow = kv_row_bytes(vt, n);
        std::vector<uint8_t> kc(positions * krow), vc(positions * vrow);
        std::vector<uint8_t> kp(n_blocks * block_tokens * krow), vp(n_blocks * block_tokens * vrow);
        const PagedKvRows kpr{kp.data() + kv_row_bytes(kt, head_dim), table.data(), block_tokens * krow, shift, krow, kt};
        const PagedKvRows vpr{vp.data() + kv_row_bytes(vt, head_dim), table.data(), block_tokens * vrow, shift, vrow, vt};
        for (int64_t p = 0; p < positions; ++p) {
          KvCache::store(k.data() + p * n, n, kt, kc.data() + p * krow);
          KvCache::store(v.data() + p * n, n, vt, vc.data() + p * vrow);
          KvCache::store(k.data() + p * n, n, kt, const_cast<uint8_t*>(kpr.row(p)) - kv_row_bytes(kt, head_dim));
          KvCache::store(v.data() + p * n, n, vt, const_cast<uint8_t*>(vpr.row(p)) - kv_row_bytes(vt, head_dim));
        }
        const KvRows kcr{kc.data() + kv_row_bytes(kt, head_dim), krow, kt};
        const KvRows vcr{vc.data() + kv_row_bytes(vt, head_dim), vrow, vt};
        for (auto [first, last] : ranges) {
          std::vector<float> expected(head_dim);
          kernels::attend_reference(q.data(), kpr, vpr, first, last, head_dim, scale, expected.data());
          for (Isa isa : testing::supported_isas()) {
            const kernels::OpsTable& ops = kernels::ops_table(isa);
            std::vector<float> paged(head_dim, -7.0f), contiguous(head_dim, -7.0f);
            ops.attend_paged(q.data(), kpr, vpr, first, last, head_dim, scale, paged.data());
            ops.attend_kv(q.data(), kcr, vcr, first, last, head_dim, scale, contiguous.data());
            for (int64_t d = 0; d < head_dim; ++d) {
              ASSERT_NEAR(paged[d], expected[d], 2e-5) << isa_name(isa) << " block " << block_tokens << " keys " << first << ".." << last;
              ASSERT_EQ(paged[d], contiguous[d]) << isa_name(isa) << " block " << block_tokens << " keys " << first << ".." << last;
            }
          }
        }
      }
    }
  }
}


// attend_heads (grouped-query attention: the query heads of one KV head in one call) gives every
// head the bits attend_one_head gives it alone, for every ISA, cache type, paged or contiguous
// rows, group sizes that the kernel splits (5 = 4 + 1, 6 = 4 + 2) and a head size that is not a
// multiple of 16 (its value loop runs 8 wide); and stays within the scalar twin's tolerance.
TEST(PagedAttention, GroupedHeadsMatchOneHeadAtATime) {
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::pair<int64_t, int64_t> ranges[] = {{0, 0}, {0, 9}, {5, 100}, {0, 130}};
  const KvType types[] = {KvType::kF16, KvType::kQ8_0, KvType::kQ4_0};
  const int64_t positions = 131, block_tokens = 16, shift = 4;
  const int64_t n_blocks = (positions + block_tokens - 1) / block_tokens + 2;
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  for (int64_t head_dim : {64, 40}) {
    for (int64_t group : {2, 3, 4, 5, 6}) {
      const int64_t n = 2 * head_dim;  // two KV heads per row; the test reads the second
      std::vector<float> q(group * head_dim), k(positions * n), v(positions * n);
      for (auto* x : {&q, &k, &v}) {
        for (float& e : *x) e = normal(rng);
      }
      for (KvType kt : types) {
        for (KvType vt : types) {
          if (head_dim % 32 != 0 && (kt != KvType::kF16 || vt != KvType::kF16)) continue;  // blocks of 32
          const int64_t krow = kv_row_bytes(kt, n), vrow = kv_row_bytes(vt, n);
          std::vector<uint8_t> kc(positions * krow), vc(positions * vrow);
          std::vector<uint8_t> kp(n_blocks * block_tokens * krow), vp(n_blocks * block_tokens * vrow);
          const PagedKvRows kpr{kp.data() + kv_row_bytes(kt, head_dim), table.data(), block_tokens * krow, shift, krow, kt};
          const PagedKvRows vpr{vp.data() + kv_row_bytes(vt, head_dim), table.data(), block_tokens * vrow, shift, vrow, vt};
          for (int64_t p = 0; p < positions; ++p) {
            KvCache::store(k.data() + p * n, n, kt, kc.data() + p * krow);
            KvCache::store(v.data() + p * n, n, vt, vc.data() + p * vrow);
            KvCache::store(k.data() + p * n, n, kt, const_cast<uint8_t*>(kpr.row(p)) - kv_row_bytes(kt, head_dim));
            KvCache::store(v.data() + p * n, n, vt, const_cast<uint8_t*>(vpr.row(p)) - kv_row_bytes(vt, head_dim));
          }
          const KvRows kcr{kc.data() + kv_row_bytes(kt, head_dim), krow, kt};
          const KvRows vcr{vc.data() + kv_row_bytes(vt, head_dim), vrow, vt};
          for (auto [first, last] : ranges) {
            std::vector<float> expected(group * head_dim);
            kernels::attend_heads_reference(q.data(), group, kpr, vpr, first, last, head_dim, 0.125f, expected.data());
            for (Isa isa : testing::supported_isas()) {
              const kernels::OpsTable& ops = kernels::ops_table(isa);
              std::vector<float> alone(group * head_dim, -7.0f), paged(group * head_dim, -7.0f), contiguous(group * head_dim, -7.0f);
              for (int64_t h = 0; h < group; ++h) {
                ops.attend_paged(q.data() + h * head_dim, kpr, vpr, first, last, head_dim, 0.125f, alone.data() + h * head_dim);
              }
              ops.attend_heads_paged(q.data(), group, kpr, vpr, first, last, head_dim, 0.125f, paged.data());
              ops.attend_heads_kv(q.data(), group, kcr, vcr, first, last, head_dim, 0.125f, contiguous.data());
              for (int64_t i = 0; i < group * head_dim; ++i) {
                ASSERT_EQ(paged[i], alone[i]) << isa_name(isa) << " group " << group << " dim " << head_dim << " keys " << first
                                              << ".." << last << " element " << i;
                ASSERT_EQ(contiguous[i], alone[i]) << isa_name(isa) << " group " << group << " dim " << head_dim;
                ASSERT_NEAR(paged[i], expected[i], 2e-5) << isa_name(isa) << " group " << group << " dim " << head_dim;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace frugal
