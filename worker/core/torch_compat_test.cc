// The version switches of torch_compat.h, on whichever LibTorch this is built against (Debian
// 12's 1.13 and Debian 13's 2.6 both run them: scripts/trixie_check.sh).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#define FLAP_COMPAT_C10D
#include "worker/core/torch_compat.h"

namespace flap::core {
namespace {

// softmax(q k^T / sqrt(d)) v written out, with padded keys at -inf.
at::Tensor Reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_pad) {
  auto scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  if (key_pad.defined()) {
    scores = scores.masked_fill(key_pad.view({key_pad.size(0), 1, 1, key_pad.size(1)}), -INFINITY);
  }
  return at::matmul(at::softmax(scores, -1), v);
}

// No mask: the model's encoders pass an undefined key_pad whenever no token is padding (every
// forward of the audio encoder). On 2.x this must reach SDPA as "no mask", not as an undefined
// tensor, which SDPA refuses ("attn_mask.dtype: nullptr").
TEST(TorchCompat, AttentionWithoutAMaskIsTheFullSoftmax) {
  at::manual_seed(3);
  const auto q = at::randn({2, 4, 7, 8}), k = at::randn({2, 4, 7, 8}), v = at::randn({2, 4, 7, 8});
  const at::Tensor out = compat::Attention(q, k, v, at::Tensor());
  ASSERT_EQ(out.sizes(), q.sizes());
  EXPECT_TRUE(at::allclose(out, Reference(q, k, v, at::Tensor()), 1e-5, 1e-5));
}

// A padding mask: padded keys get no weight, so changing their values changes nothing.
TEST(TorchCompat, AttentionIgnoresPaddedKeys) {
  at::manual_seed(4);
  const auto q = at::randn({2, 2, 5, 8}), k = at::randn({2, 2, 5, 8}), v = at::randn({2, 2, 5, 8});
  auto key_pad = at::zeros({2, 5}, at::kBool);
  key_pad.index_put_({1, at::indexing::Slice(3, 5)}, true);  // sample 1: the last two keys are padding
  const at::Tensor out = compat::Attention(q, k, v, key_pad);
  EXPECT_TRUE(at::allclose(out, Reference(q, k, v, key_pad), 1e-5, 1e-5));
  auto v2 = v.clone();
  v2.index_put_({1, at::indexing::Slice(), at::indexing::Slice(3, 5)}, 100.0);
  EXPECT_TRUE(at::allclose(out, compat::Attention(q, k, v2, key_pad), 1e-5, 1e-5));
  EXPECT_FALSE(at::allclose(out, compat::Attention(q, k, v2, at::Tensor()), 1e-5, 1e-5));
}

// The rendezvous store forms on this build whatever its libuv support: 2.4+ asks for libuv by
// default, and a build without it (Debian's) refuses to start the store unless told not to.
// A second server on the same port still fails, saying so, rather than being hidden by the
// fallback.
TEST(TorchCompat, StoreServesOnThisBuild) {
  const auto timeout = std::chrono::milliseconds(10000);
  auto server = compat::MakeStore("127.0.0.1", 0, true, 1, timeout);
  const int port = server->getPort();
  ASSERT_GT(port, 0);
  auto client = compat::MakeStore("127.0.0.1", port, false, 0, timeout);
  client->set("k", std::vector<uint8_t>{'o', 'k'});
  const std::vector<uint8_t> got = server->get("k");
  EXPECT_EQ(std::string(got.begin(), got.end()), "ok");
  EXPECT_ANY_THROW(compat::MakeStore("127.0.0.1", port, true, 1, timeout));
}

}  // namespace
}  // namespace flap::core
