// Paged KV cache for serving many sequences (Kwon et al. 2023, "Efficient Memory Management for
// Large Language Model Serving with PagedAttention"): a pool of fixed-size blocks, each holding
// block_tokens positions of every layer's keys and values, and a block table per sequence, so
// memory follows the tokens actually held. Prefix caching: a full block is named by a hash chain
// (its parent's hash and its own tokens), so sequences sharing a prompt prefix share its blocks by
// reference count; a sequence that must write into a shared or cached block copies it first
// (copy-on-write), and unreferenced cached blocks stay reusable until evicted least recently used
// first (vLLM's automatic prefix caching).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "kernels/ops.h"

namespace frugal {

struct PagedKvOptions {
  int64_t n_layer = 0;
  int64_t row_elements = 0;  // kv_dim: elements of one position's keys (and values) in one layer
  int64_t n_blocks = 0;
  int64_t block_tokens = 16;  // a power of two
  KvType key_type = KvType::kF16;
  KvType value_type = KvType::kF16;
  bool prefix_cache = true;
};

class PagedKvCache {
 public:
  // One sequence's hold on the pool: its block table (block i holds positions [i*B, (i+1)*B)),
  // the blocks reserved for it but not yet taken, and how far its hash chain has been published.
  struct Sequence {
    std::vector<int32_t> blocks;
    int64_t reserved = 0;
    int64_t hashed_blocks = 0;  // blocks [0, hashed_blocks) have their chain hash computed
    uint64_t chain_hash = 0;    // hash of block hashed_blocks - 1 (0 before the first)
  };

  // Checks the options (sizes, power-of-two blocks) and allocates the pool. The pool's pages are
  // not touched until written, so resident memory grows with the tokens actually stored.
  static Result<std::unique_ptr<PagedKvCache>> create(const PagedKvOptions& options);

  const PagedKvOptions& options() const { return options_; }
  int64_t block_tokens() const { return options_.block_tokens; }
  int block_shift() const { return block_shift_; }
  int64_t key_row_bytes() const { return key_row_bytes_; }
  int64_t value_row_bytes() const { return value_row_bytes_; }
  // Bytes from one block to the next (a block holds every layer: [layer][row][element]).
  int64_t key_block_bytes() const { return key_row_bytes_ * options_.block_tokens * options_.n_layer; }
  int64_t value_block_bytes() const { return value_row_bytes_ * options_.block_tokens * options_.n_layer; }
  // Row 0 of `layer` in block 0; block b's rows of that layer are b * *_block_bytes() further.
  uint8_t* key_base(int64_t layer) { return keys_.get() + layer * options_.block_tokens * key_row_bytes_; }
  uint8_t* value_base(int64_t layer) { return values_.get() + layer * options_.block_tokens * value_row_bytes_; }
  size_t bytes() const { return static_cast<size_t>(options_.n_blocks * (key_block_bytes() + value_block_bytes())); }

  int64_t total_blocks() const { return options_.n_blocks; }
  // Blocks some sequence references.
  int64_t used_blocks() const { return used_; }
  // Unreferenced blocks kept for their cached contents (evictable).
  int64_t cached_blocks() const { return static_cast<int64_t>(lru_.size()); }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  // Blocks a new reservation may still take (free + evictable - reserved).
  int64_t available_blocks() const { return free_blocks() + cached_blocks() - reserved_; }
  int64_t reserved_blocks() const { return reserved_; }
  int32_t ref_count(int32_t block) const { return blocks_[block].refs; }
  // Blocks needed to hold `positions` positions.
  int64_t blocks_for(int64_t positions) const { return (positions + options_.block_tokens - 1) >> block_shift_; }

  // Takes the longest run of cached full blocks that begins `tokens` (n of them) into an empty
  // sequence; returns the tokens they cover (a multiple of block_tokens). Stops rather than
  // revive an evictable block when none is available beyond the reservations.
  int64_t match_prefix(Sequence& seq, const int32_t* tokens, int64_t n);
  // Extends a running sequence's prefix with cached full blocks other sequences published after
  // it was admitted: from its first block not yet held, while tokens[0, n) holds the block's
  // tokens. Needs every held block full and hashed (the sequence stopped at a block boundary).
  // Each block taken replaces one the sequence would have allocated, so it costs one block of its
  // reservation (returned to the pool); with no reservation left an evictable block is revived
  // only when the pool can spare it. Returns the blocks taken.
  int64_t extend_prefix(Sequence& seq, const int32_t* tokens, int64_t n);
  // Sets `blocks` aside for the sequence's later writes; false (nothing reserved) when the pool
  // cannot promise them.
  bool reserve(Sequence& seq, int64_t blocks);
  // Makes positions [first, end) writable: appends blocks (from the reservation first) and copies
  // a block shared with another sequence or published in the prefix cache before it is written.
  // Error when the pool is exhausted.
  Status prepare_write(Sequence& seq, int64_t first, int64_t end);
  // Publishes the sequence's full blocks among positions [0, n) (tokens[i] at position i) in the
  // prefix cache.
  void publish(Sequence& seq, const int32_t* tokens, int64_t n);
  // Drops the sequence's blocks and reservation (cached blocks stay reusable until evicted).
  void release(Sequence& seq);

 private:
  struct Block {
    int32_t refs = 0;
    bool hashed = false;
    uint64_t hash = 0;
    uint64_t parent = 0;
    std::vector<int32_t> tokens;  // the block's tokens when hashed (a hash match is verified)
    std::list<int32_t>::iterator lru;
  };

  explicit PagedKvCache(const PagedKvOptions& options);
  // A block with refs = 1: free list first, else the least recently used cached block.
  Result<int32_t> take_block();
  void unref(int32_t block);
  uint64_t block_hash(uint64_t parent, const int32_t* tokens) const;
  int32_t find_cached(uint64_t hash, uint64_t parent, const int32_t* tokens) const;

  PagedKvOptions options_;
  int block_shift_ = 4;
  int64_t key_row_bytes_ = 0, value_row_bytes_ = 0;
  std::unique_ptr<uint8_t[]> keys_, values_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;  // a stack; lowest ids on top first, so touched memory stays compact
  std::list<int32_t> lru_;     // unreferenced hashed blocks, least recently used first
  std::unordered_map<uint64_t, int32_t> cached_;  // chain hash -> block
  int64_t used_ = 0;
  int64_t reserved_ = 0;
};

}  // namespace frugal
