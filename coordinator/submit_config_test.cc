// SubmitSweep checks a sweep against the trial configuration (config/trial_config.h) over real
// gRPC: a misspelt factor key, an out-of-range factor value, a bad base config and trials whose
// values do not go together are refused with INVALID_ARGUMENT naming the key, before any trial
// exists; and so are keys local to each worker and keys the coordinator sets for each trial,
// wherever the sweep names them (a factor, a condition, the base config).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "common/testing/testing.h"
#include "coordinator/client.h"
#include "coordinator/testing/service_test_util.h"

namespace flap::coordinator {
namespace {

using testing::TestCoordinator;

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Submits and expects INVALID_ARGUMENT with every one of `parts` in the message, and no sweep.
void ExpectRefused(TestCoordinator& c, const std::string& sweep, const std::string& base,
                   const std::vector<std::string>& parts) {
  auto client = c.Client();
  auto r = client->SubmitSweep(sweep, "s.ini", base);
  ASSERT_FALSE(r.ok()) << sweep;
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << r.status().ToString();
  for (const std::string& part : parts) {
    EXPECT_TRUE(Contains(r.status().message(), part)) << "'" << part << "' not in: " << r.status().message();
  }
  auto list = client->ListSweeps();
  ASSERT_OK(list);
  EXPECT_EQ(list->sweeps_size(), 0);
}

TEST(SubmitConfig, MisspeltFactorKeyIsRefusedNamingTheKeyAndTheClosestOne) {
  TestCoordinator c("submit_config_misspelt");
  ExpectRefused(
      c, "[sweep]\nname = typo\n\n[factor.mask.ratoi]\nvalues = 0.5, 0.75\n", "",
      {"s.ini:4: [factor.mask.ratoi]", "unknown key mask.ratoi in [factor.mask.ratoi]", "did you mean mask.ratio?"});
}

TEST(SubmitConfig, OutOfRangeFactorValueIsRefusedNamingTheKey) {
  TestCoordinator c("submit_config_range");
  ExpectRefused(c, "[sweep]\nname = range\n\n[factor.mask.ratio]\nvalues = 0.5, 1.5\n", "",
                {"[factor.mask.ratio] values", "mask.ratio must be in [0, 1), got '1.5'"});
  ExpectRefused(c, "[sweep]\nname = batch\n\n[factor.train.batch_size]\nvalues = 1, 32\n", "",
                {"[factor.train.batch_size] values", "train.batch_size must be >= 2"});
}

TEST(SubmitConfig, BaseConfigKeysAreChecked) {
  TestCoordinator c("submit_config_base");
  const std::string sweep = "[sweep]\nname = base\nbase_config = tiny.ini\n\n[factor.mask.ratio]\nvalues = 0, 0.5\n";
  ExpectRefused(c, sweep, "[train]\nbatchsize = 16\n",
                {"the base config (tiny.ini)", "unknown key 'train.batchsize'", "did you mean train.batch_size?"});
  ExpectRefused(c, sweep, "[train]\nepochs = many\n", {"train.epochs", "many"});
}

TEST(SubmitConfig, TrialsWhoseValuesDoNotGoTogetherAreRefused) {
  TestCoordinator c("submit_config_trials");
  // mask.views 2 needs a mask ratio above 0: the cells with ratio 0 cannot run.
  ExpectRefused(c, "[sweep]\nname = views\nseeds = 1, 2\n\n[factor.mask.ratio]\nvalues = 0, 0.5\n",
                "[mask]\nviews = 2\n",
                {"trial t0000 (mask.ratio=0, seed 1)", "mask.views 2 needs mask.ratio > 0", "(and 1 more trials)"});
}

// Issue 32, item 2: local-only keys were refused as factors only, so a base config setting
// train.output_dir, data.fbank_cache or metrics.sd_dir made every worker write where the sweep
// said; and a train.trial_id factor was accepted and silently replaced by the coordinator's
// trial id. Run against the code before the fix (d6a2f28): both tests failed (every sweep
// below was accepted).
TEST(HardeningLocalKeys, RefusedWhereverTheSweepNamesThem) {
  TestCoordinator c("submit_config_local");
  const std::string sweep = "[sweep]\nname = local\nbase_config = b.ini\n\n[factor.mask.ratio]\nvalues = 0, 0.5\n";
  ExpectRefused(c, sweep,
                "[train]\noutput_dir = /tmp/elsewhere\n[data]\nfbank_cache = /tmp/cache\n"
                "[metrics]\nsd_dir = /tmp/sd\n",
                {"3 errors", "the base config (b.ini) sets train.output_dir: train.output_dir is local to each worker",
                 "the base config (b.ini) sets data.fbank_cache", "the base config (b.ini) sets metrics.sd_dir",
                 "set it in the worker's own config or flags"});
  ExpectRefused(c, "[sweep]\nname = local\n\n[factor.data.path]\nvalues = /a, /b\n", "",
                {"s.ini:4: [factor.data.path]: data.path is local to each worker"});
  ExpectRefused(c,
                "[sweep]\nname = local\n\n[factor.mask.ratio]\nvalues = 0, 0.5\n\n[factor.mask.views]\n"
                "values = 2\nwhen = ckpt.root == /x\n",
                "", {"[factor.mask.views] when: the condition 'ckpt.root == /x': ckpt.root is local to each worker"});
}

TEST(HardeningReservedKeys, RefusedAtSubmission) {
  TestCoordinator c("submit_config_reserved");
  ExpectRefused(c, "[sweep]\nname = tid\n\n[factor.train.trial_id]\nvalues = mine\n", "",
                {"[factor.train.trial_id]: train.trial_id is set by the coordinator for each trial"});
  ExpectRefused(c, "[sweep]\nname = tid\n\n[factor.mask.ratio]\nvalues = 0.5\n", "[train]\ntrial_id = mine\n",
                {"the base config sets train.trial_id: train.trial_id is set by the coordinator"});
  ExpectRefused(c, "[sweep]\nname = seed\n\n[factor.train.seed]\nvalues = 1, 2\n", "",
                {"[factor.train.seed]: the trial seed is not a factor"});
  // A base config's seed is the default the sweep's seeds replace, as in the shipped configs.
  auto r = c.Client()->SubmitSweep("[sweep]\nname = seed\nseeds = 3\n\n[factor.mask.ratio]\nvalues = 0.5\n", "s.ini",
                                   "[train]\nseed = 1\n");
  ASSERT_OK(r);
  EXPECT_EQ(r->num_trials(), 1);
}

TEST(SubmitConfig, AValidSweepIsAccepted) {
  TestCoordinator c("submit_config_ok");
  auto client = c.Client();
  auto r = client->SubmitSweep(
      "[sweep]\nname = ok\n\n[factor.mask.ratio]\nvalues = 0, 0.5\n\n"
      "[factor.mask.views]\nvalues = 2\nwhen = mask.ratio != 0\n",
      "s.ini", "[model]\npreset = tiny\n[train]\nbatch_size = 16\n");
  ASSERT_OK(r);
  EXPECT_EQ(r->num_trials(), 2);
}

}  // namespace
}  // namespace flap::coordinator

namespace flap::coordinator {
namespace {

// A sweep with 1,000 errors reaches a gRPC client as INVALID_ARGUMENT listing the first errors
// and how many more there are, within 4 KiB. Against commit a5e0d09 the whole list (about
// 100 KB) went into the status message and the client got "received initial metadata
// size exceeds limit" (RESOURCE_EXHAUSTED) instead.
TEST(SubmitConfig, AThousandErrorsAreCappedToTheFirstOnesAndACount) {
  TestCoordinator c("submit_config_thousand");
  std::string values;
  for (int i = 0; i < 1000; ++i) values += (i ? ", " : "") + std::to_string(i + 1) + ".5";
  auto client = c.Client();
  auto r = client->SubmitSweep("[sweep]\nname = many\n\n[factor.mask.ratio]\nvalues = " + values + "\n", "s.ini", "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << r.status().ToString().substr(0, 500);
  const std::string& m = r.status().message();
  EXPECT_LE(m.size(), 4096u + 64u);
  EXPECT_TRUE(Contains(m, "1000 errors in the sweep:")) << m;
  EXPECT_TRUE(Contains(m, "1.5")) << m;  // the first error
  const size_t more = m.find("... and ");
  ASSERT_NE(more, std::string::npos) << m;
  const int listed = static_cast<int>(std::count(m.begin(), m.begin() + more, '\n')) - 1;  // less the summary
  EXPECT_GE(listed, 10) << m;
  EXPECT_TRUE(Contains(m, "... and " + std::to_string(1000 - listed) + " more errors")) << m;
}

}  // namespace
}  // namespace flap::coordinator
