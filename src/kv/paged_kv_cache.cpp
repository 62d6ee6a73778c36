// PagedKvCache: block pool, reference counts, reservations, prefix hash chain, copy-on-write and
// LRU eviction (see paged_kv_cache.h).
#include "kv/paged_kv_cache.h"

#include <cstring>
#include <string>

#include "base/check.h"
#include "kv/kv_cache.h"

namespace frugal {
namespace {

// SplitMix64's finalizer (Steele et al. 2014): a cheap, well-mixed 64-bit step for the hash chain.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

Result<std::unique_ptr<PagedKvCache>> PagedKvCache::create(const PagedKvOptions& o) {
  if (o.n_layer <= 0 || o.row_elements <= 0) return Status::error("paged KV cache: the model has no layers or KV heads");
  if (o.block_tokens <= 0 || o.block_tokens > 4096 || (o.block_tokens & (o.block_tokens - 1)) != 0) {
    return Status::error("paged KV cache: tokens per block must be a power of two from 1 to 4096, not " +
                         std::to_string(o.block_tokens));
  }
  if (o.n_blocks <= 0 || o.n_blocks > (int64_t{1} << 30)) {
    return Status::error("paged KV cache: the pool needs between 1 and 2^30 blocks, not " + std::to_string(o.n_blocks));
  }
  for (KvType type : {o.key_type, o.value_type}) {
    if (type != KvType::kF16 && o.row_elements % 32 != 0) {
      return Status::error(std::string("paged KV cache: type ") + kv_type_name(type) + " needs rows that are a multiple of 32");
    }
  }
  return std::unique_ptr<PagedKvCache>(new PagedKvCache(o));
}

PagedKvCache::PagedKvCache(const PagedKvOptions& options)
    : options_(options),
      key_row_bytes_(kv_row_bytes(options.key_type, options.row_elements)),
      value_row_bytes_(kv_row_bytes(options.value_type, options.row_elements)) {
  while ((int64_t{1} << block_shift_) < options_.block_tokens) ++block_shift_;
  while (block_shift_ > 0 && (int64_t{1} << block_shift_) > options_.block_tokens) --block_shift_;
  // new[] without an initializer leaves the pages untouched: memory becomes resident as blocks
  // are first written, not when the pool is sized.
  keys_.reset(new uint8_t[static_cast<size_t>(options_.n_blocks * key_block_bytes())]);
  values_.reset(new uint8_t[static_cast<size_t>(options_.n_blocks * value_block_bytes())]);
  blocks_.resize(static_cast<size_t>(options_.n_blocks));
  free_.reserve(blocks_.size());
  for (int64_t b = options_.n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

uint64_t PagedKvCache::block_hash(uint64_t parent, const int32_t* tokens) const {
  uint64_t h = mix(parent ^ 0x5bd1e9955bd1e995ULL);
  for (int64_t i = 0; i < options_.block_tokens; ++i) h = mix(h ^ static_cast<uint32_t>(tokens[i]));
  return h;
}

int32_t PagedKvCache::find_cached(uint64_t hash, uint64_t parent, const int32_t* tokens) const {
  const auto it = cached_.find(hash);
  if (it == cached_.end()) return -1;
  const Block& b = blocks_[it->second];
  // A 64-bit collision would silently serve another text's keys: compare what the hash stands for.
  if (!b.hashed || b.parent != parent ||
      std::memcmp(b.tokens.data(), tokens, static_cast<size_t>(options_.block_tokens) * sizeof(int32_t)) != 0) {
    return -1;
  }
  return it->second;
}

int64_t PagedKvCache::match_prefix(Sequence& seq, const int32_t* tokens, int64_t n) {
  FRUGAL_CHECK(seq.blocks.empty());
  if (!options_.prefix_cache) return 0;
  uint64_t parent = 0;
  for (int64_t b = 0; b < (n >> block_shift_); ++b) {
    const int32_t* block_tokens = tokens + (b << block_shift_);
    const uint64_t hash = block_hash(parent, block_tokens);
    const int32_t id = find_cached(hash, parent, block_tokens);
    if (id < 0) break;
    Block& block = blocks_[id];
    if (block.refs == 0) {
      if (available_blocks() <= 0) break;  // every evictable block is promised to a reservation
      lru_.erase(block.lru);
      ++used_;
    }
    ++block.refs;
    seq.blocks.push_back(id);
    parent = hash;
    seq.hashed_blocks = b + 1;
    seq.chain_hash = hash;
  }
  return static_cast<int64_t>(seq.blocks.size()) << block_shift_;
}

int64_t PagedKvCache::extend_prefix(Sequence& seq, const int32_t* tokens, int64_t n) {
  if (!options_.prefix_cache) return 0;
  FRUGAL_CHECK(seq.hashed_blocks == static_cast<int64_t>(seq.blocks.size()));
  int64_t taken = 0;
  for (int64_t b = seq.hashed_blocks; b < (n >> block_shift_); ++b) {
    const int32_t* block_tokens = tokens + (b << block_shift_);
    const uint64_t hash = block_hash(seq.chain_hash, block_tokens);
    const int32_t id = find_cached(hash, seq.chain_hash, block_tokens);
    if (id < 0) break;
    Block& block = blocks_[id];
    if (seq.reserved > 0) {
      --seq.reserved;
      --reserved_;
    } else if (block.refs == 0 && available_blocks() <= 0) {
      break;
    }
    if (block.refs == 0) {
      lru_.erase(block.lru);
      ++used_;
    }
    ++block.refs;
    seq.blocks.push_back(id);
    seq.hashed_blocks = b + 1;
    seq.chain_hash = hash;
    ++taken;
  }
  return taken;
}

bool PagedKvCache::reserve(Sequence& seq, int64_t blocks) {
  if (blocks <= 0) return true;
  if (available_blocks() < blocks) return false;
  reserved_ += blocks;
  seq.reserved += blocks;
  return true;
}

Result<int32_t> PagedKvCache::take_block() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    id = lru_.front();
    lru_.pop_front();
    Block& evicted = blocks_[id];
    const auto it = cached_.find(evicted.hash);
    if (it != cached_.end() && it->second == id) cached_.erase(it);
    evicted.hashed = false;
    evicted.tokens.clear();
  } else {
    return Status::error("KV cache exhausted: all " + std::to_string(options_.n_blocks) + " blocks are in use");
  }
  blocks_[id].refs = 1;
  ++used_;
  return id;
}

void PagedKvCache::unref(int32_t id) {
  Block& block = blocks_[id];
  FRUGAL_CHECK(block.refs > 0);
  if (--block.refs > 0) return;
  --used_;
  if (block.hashed) {
    block.lru = lru_.insert(lru_.end(), id);
  } else {
    free_.push_back(id);
  }
}

Status PagedKvCache::prepare_write(Sequence& seq, int64_t first, int64_t end) {
  FRUGAL_CHECK(first >= 0 && first <= end);
  if (first == end) return Status::ok();
  // A new block comes from the sequence's reservation, else from what no reservation holds.
  auto new_block = [&]() -> Result<int32_t> {
    if (seq.reserved > 0) {
      --seq.reserved;
      --reserved_;
    } else if (available_blocks() <= 0) {
      return Status::error("KV cache exhausted: no block left for " + std::to_string(end) + " positions (pool of " +
                           std::to_string(options_.n_blocks) + " blocks of " + std::to_string(options_.block_tokens) + ")");
    }
    return take_block();
  };
  const int64_t held = static_cast<int64_t>(seq.blocks.size());
  // Copy-on-write: a block another sequence references, or one published in the prefix cache
  // (whose contents other sequences may match later), is copied before this sequence writes it.
  for (int64_t b = first >> block_shift_; b < std::min(held, blocks_for(end)); ++b) {
    const int32_t old = seq.blocks[b];
    if (blocks_[old].refs == 1 && !blocks_[old].hashed) continue;
    Result<int32_t> copy = new_block();
    if (!copy.is_ok()) return copy.status();
    const int32_t id = copy.value();
    std::memcpy(keys_.get() + id * key_block_bytes(), keys_.get() + old * key_block_bytes(), static_cast<size_t>(key_block_bytes()));
    std::memcpy(values_.get() + id * value_block_bytes(), values_.get() + old * value_block_bytes(),
                static_cast<size_t>(value_block_bytes()));
    seq.blocks[b] = id;
    unref(old);
  }
  while (static_cast<int64_t>(seq.blocks.size()) < blocks_for(end)) {
    Result<int32_t> id = new_block();
    if (!id.is_ok()) return id.status();
    seq.blocks.push_back(id.value());
  }
  return Status::ok();
}

void PagedKvCache::publish(Sequence& seq, const int32_t* tokens, int64_t n) {
  if (!options_.prefix_cache) return;
  const int64_t full = std::min<int64_t>(n >> block_shift_, static_cast<int64_t>(seq.blocks.size()));
  for (int64_t b = seq.hashed_blocks; b < full; ++b) {
    const int32_t* block_tokens = tokens + (b << block_shift_);
    const uint64_t hash = block_hash(seq.chain_hash, block_tokens);
    Block& block = blocks_[seq.blocks[b]];
    // The first sequence to fill a block with this history publishes it; a twin filled at the
    // same time stays private (its content is the same).
    if (!block.hashed && cached_.find(hash) == cached_.end()) {
      block.hashed = true;
      block.hash = hash;
      block.parent = seq.chain_hash;
      block.tokens.assign(block_tokens, block_tokens + options_.block_tokens);
      cached_[hash] = seq.blocks[b];
    }
    seq.chain_hash = hash;
    seq.hashed_blocks = b + 1;
  }
}

void PagedKvCache::release(Sequence& seq) {
  // Tail first: a sequence's last blocks then sit ahead of its first ones in the LRU list, so
  // eviction trims shared histories from the end and a common prefix survives longest.
  for (auto it = seq.blocks.rbegin(); it != seq.blocks.rend(); ++it) unref(*it);
  reserved_ -= seq.reserved;
  seq = Sequence{};
}

}  // namespace frugal
