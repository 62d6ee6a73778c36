// frugal's public API: load a GGUF model, tokenize, run the transformer, sample, measure.
// Programs (apps/, tests) include only this header.
#pragma once

#include "base/status.h"
#include "base/timer.h"
#include "io/chat_template.h"
#include "io/gguf.h"
#include "io/gguf_vocab.h"
#include "io/tokenizer.h"
#include "model/model.h"
#include "model/transformer.h"
#include "io/text_file.h"
#include "kernels/cpu_features.h"
#include "runtime/benchmark.h"
#include "runtime/evaluation.h"
#include "runtime/perplexity.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
