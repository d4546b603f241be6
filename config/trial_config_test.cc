#include "config/trial_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "common/testing/testing.h"

namespace flap {
namespace {

std::string WriteConfig(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

Status Parse(const std::vector<std::string>& args, TrialConfig* c) {
  bool help = false;
  std::string text;
  return ParseTrialConfig(args, c, &help, &text);
}

TEST(TrialConfig, FileSectionsAndCommandLineOverrides) {
  const std::string path = WriteConfig("ok.ini",
                                       "[model]\npreset = tiny\naudio_depth = 2\n"
                                       "[mask]\nratio = 0.5\nstrategy = 1d\n"
                                       "[recon]\nweight = 0.3\n[text]\naugment = 0.25\n"
                                       "[train]\nbatch_size = 16\n");
  TrialConfig c;
  ASSERT_TRUE(Parse({"--config", path, "--mask.ratio", "0.75", "--train.seed=9"}, &c).ok());
  EXPECT_EQ(c.model.audio_depth, 2);
  EXPECT_EQ(c.model.audio_width, 192);   // from the preset
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.75);  // the flag beats the file
  EXPECT_EQ(c.mask.strategy, core::MaskStrategy::k1d);
  EXPECT_DOUBLE_EQ(c.loss.recon_weight, 0.3);
  EXPECT_DOUBLE_EQ(c.text.augment_prob, 0.25);
  EXPECT_EQ(c.train.batch_size, 16);
  EXPECT_EQ(c.train.seed, 9u);
}

TEST(TrialConfig, BasePresetThenOverride) {
  TrialConfig c;
  ASSERT_TRUE(Parse({"--model.preset", "base", "--model.decoder_depth", "2"}, &c).ok());
  EXPECT_EQ(c.model.audio_width, 768);
  EXPECT_EQ(c.model.decoder_depth, 2);
}

TEST(TrialConfig, UnknownKeyInFileIsNamedWithTheFile) {
  const std::string path = WriteConfig("unknown.ini", "[mask]\nratoi = 0.5\n");
  TrialConfig c;
  Status s = Parse({"--config", path}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.ratoi"), std::string::npos) << s.message();
  // As a compiler names a place: the path, then the line.
  EXPECT_NE(s.message().find(path + ":2: [mask] ratoi: unknown key 'mask.ratoi'; did you mean mask.ratio?"),
            std::string::npos)
      << s.message();
}

TEST(TrialConfig, UnknownFlagIsNamed) {
  TrialConfig c;
  Status s = Parse({"--mask.rate", "0.5"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.rate"), std::string::npos) << s.message();
}

TEST(TrialConfig, RatioOutsideHalfOpenUnitIntervalIsRefused) {
  for (const char* bad : {"1.0", "-0.2", "1.5"}) {
    TrialConfig c;
    Status s = Parse({"--mask.ratio", bad}, &c);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("mask.ratio"), std::string::npos) << s.message();
  }
}

TEST(TrialConfig, MalformedValuesAreNamed) {
  TrialConfig c;
  Status s = Parse({"--mask.ratio", "half"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.ratio"), std::string::npos);
  EXPECT_NE(s.message().find("half"), std::string::npos);
  s = Parse({"--train.batch_size", "3.5"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("train.batch_size"), std::string::npos);
}

TEST(TrialConfig, UnknownStrategyAndAugmentPolicyAreRefused) {
  TrialConfig c;
  Status s = Parse({"--mask.strategy", "3d"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.strategy"), std::string::npos);
  s = Parse({"--text.augment", "sometimes"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("text.augment"), std::string::npos);
  s = Parse({"--model.preset", "huge"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("huge"), std::string::npos);
}

TEST(TrialConfig, MissingFileIsNotFound) {
  TrialConfig c;
  Status s = Parse({"--config", "/nonexistent/x.ini"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_NE(s.message().find("/nonexistent/x.ini"), std::string::npos);
}

TEST(TrialConfig, HashIgnoresOperationalKeysOnly) {
  TrialConfig a, b;
  ASSERT_TRUE(Parse({"--train.output_dir", "/tmp/a", "--train.log_every", "5"}, &a).ok());
  ASSERT_TRUE(Parse({"--train.output_dir", "/tmp/b"}, &b).ok());
  EXPECT_EQ(a.Hash(), b.Hash());
  ASSERT_TRUE(Parse({"--mask.ratio", "0.5"}, &b).ok());
  EXPECT_NE(a.Hash(), b.Hash());
  EXPECT_EQ(a.ToMap().at("mask.strategy"), "2d");
}

TEST(TrialConfig, ShippedConfigsParse) {
  for (const char* name : {"tiny.ini", "base.ini", "demo.ini"}) {
    auto c = LoadTrialConfigFile(std::string(FLAP_CONFIG_DIR) + "/" + name);
    EXPECT_TRUE(c.ok()) << name << ": " << c.status().ToString();
  }
}

// Issue 32, item 2, on the worker's side: a sweep's base config set train.output_dir,
// data.fbank_cache and metrics.sd_dir and the worker wrote where it said (`flapctl sweep run`
// with the binaries before the fix, d6a2f28, wrote the trial's model.pt and summary.json there).
// The keys local to the worker now come from its own settings only.
TEST(WorkerTrialConfig, LocalKeysComeFromTheWorkerOnly) {
  const std::string base =
      "[train]\nbatch_size = 16\noutput_dir = /tmp/sweep-out\n[data]\npath = /tmp/sweep-data\n"
      "fbank_cache = /tmp/sweep-cache\n[metrics]\nsd_dir = /tmp/sweep-sd\nlisten = 0.0.0.0:9\n";
  auto c = WorkerTrialConfig(base, "trial s/t0000", {{"data.path", "/mine"}},
                             {{"mask.ratio", "0.5"}, {"ckpt.root", "/tmp/sweep-ckpt"}, {"train.batch_size", "8"}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->data.path, "/mine");
  EXPECT_EQ(c->train.output_dir, "");
  EXPECT_EQ(c->data.fbank_cache, "auto");
  EXPECT_EQ(c->metrics.sd_dir, "");
  EXPECT_EQ(c->metrics.listen, "");
  EXPECT_EQ(c->ckpt.root, "");
  EXPECT_DOUBLE_EQ(c->mask.ratio, 0.5);
  EXPECT_EQ(c->train.batch_size, 8);  // the trial's overrides win over the base config
  auto bad = WorkerTrialConfig("[train]\nbatchsize = 1\n", "trial s/t0000", {}, {});
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("trial s/t0000"), std::string::npos) << bad.status().message();
}

// ConfigText writes values that ParseConfigText reads back unchanged (flapctl sweep run submits
// a base config without its local keys this way).
TEST(ConfigText, ReadsBackToTheSameValues) {
  for (const char* name : {"tiny.ini", "base.ini", "demo.ini"}) {
    std::ifstream in(std::string(FLAP_CONFIG_DIR) + "/" + name);
    std::stringstream text;
    text << in.rdbuf();
    auto values = ParseConfigText(text.str(), name);
    ASSERT_TRUE(values.ok()) << values.status().ToString();
    const std::string written = ConfigText(*values);
    auto again = ParseConfigText(written, "ConfigText");
    ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << written;
    EXPECT_EQ(*again, *values) << written;
  }
  EXPECT_EQ(ConfigText({{"data.path", "d"}, {"data.loader_threads", "1"}, {"model.preset", "tiny"}}),
            "[data]\nloader_threads = 1\npath = d\n\n[model]\npreset = tiny\n");
}

}  // namespace
}  // namespace flap

namespace flap {
namespace {

TEST(TrialConfig, DistKeysParseAndDoNotChangeTheHash) {
  TrialConfig a, b;
  ASSERT_TRUE(Parse({}, &a).ok());
  ASSERT_TRUE(Parse({"--dist.launcher", "slurm", "--dist.backend", "gloo", "--dist.timeout", "30", "--dist.bucket_mb",
                     "0", "--dist.overlap", "false"},
                    &b)
                  .ok());
  EXPECT_EQ(b.dist.launcher, "slurm");
  EXPECT_EQ(b.dist.timeout, 30.0);
  EXPECT_EQ(b.dist.bucket_mb, 0.0);
  EXPECT_FALSE(b.dist.overlap);
  EXPECT_TRUE(a.dist.overlap);
  EXPECT_EQ(b.ToMap().at("dist.overlap"), "false");
  EXPECT_EQ(a.Hash(), b.Hash());
}

TEST(TrialConfig, BadDistValuesAreNamed) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{{"dist.launcher", "pbs"},
                                                                                   {"dist.backend", "mpi"},
                                                                                   {"dist.timeout", "0"},
                                                                                   {"dist.bucket_mb", "-1"},
                                                                                   {"dist.overlap", "maybe"}}) {
    TrialConfig c;
    Status s = Parse({"--" + key, value}, &c);
    ASSERT_FALSE(s.ok()) << key;
    EXPECT_NE(s.message().find(key), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace flap

namespace flap {
namespace {

// Trial hashes name checkpoints and journal entries: they change only with what training
// computes. These are the hashes since the validation / test split roles (data.val_split,
// data.test_split replacing data.eval_split) and recon.source's default (embedding).
TEST(TrialConfigHash, IsStable) {
  EXPECT_EQ(TrialConfig().Hash(), "bdf39319f8730685");
  const std::map<std::string, std::string> shipped = {
      {"tiny.ini", "11a0fd689acdf054"}, {"base.ini", "cc4d564b67a9e5f6"}, {"demo.ini", "e3e12bd1f953d58d"}};
  for (const auto& [name, hash] : shipped) {
    ASSERT_OK_AND_ASSIGN(TrialConfig c, LoadTrialConfigFile(std::string(FLAP_CONFIG_DIR) + "/" + name));
    EXPECT_EQ(c.Hash(), hash) << name;
  }
  TrialConfig mixed;
  ASSERT_OK(Parse({"--model.preset",      "base",   "--mask.ratio",        "0.75",
                   "--mask.views",        "2",      "--mask.strategy",     "1d",
                   "--recon.weight",      "0.3",    "--text.augment",      "0.5",
                   "--train.precision",   "bf16",   "--train.max_seconds", "30",
                   "--train.max_samples", "1000",   "--model.init_audio",  "/x/a.safetensors",
                   "--optim.lr",          "0.0005", "--train.seed",        "7",
                   "--data.crop",         "first",  "--eval.crop",         "center",
                   "--data.max_frames",   "2000",   "--ckpt.every",        "5",
                   "--dist.timeout",      "10"},
                  &mixed));
  EXPECT_EQ(mixed.Hash(), "19bcba906bdef10b");
}

// Keys renamed to their struct paths (recon.weight -> loss.recon_weight, recon.source ->
// model.recon_source) hash as before under either name: 16e963a7ac560b9b is this config's
// hash computed by the code before the rename, from the text below with the earlier names.
TEST(TrialConfigHash, RenamedKeysKeepTheHashUnderEitherName) {
  ASSERT_OK_AND_ASSIGN(TrialConfig earlier,
                       TrialConfigFromText("[recon]\nweight = 0.5\nsource = embedding\n[mask]\nratio = 0.75\n"
                                           "[train]\nseed = 7\n",
                                           "earlier.ini"));
  EXPECT_EQ(earlier.Hash(), "16e963a7ac560b9b");
  ASSERT_OK_AND_ASSIGN(TrialConfig current,
                       TrialConfigFromText("[loss]\nrecon_weight = 0.5\n[model]\nrecon_source = embedding\n"
                                           "[mask]\nratio = 0.75\n[train]\nseed = 7\n",
                                           "current.ini"));
  EXPECT_EQ(current.Hash(), "16e963a7ac560b9b");
  EXPECT_DOUBLE_EQ(current.loss.recon_weight, 0.5);
  // A recorded config (checkpoint, export, summary) with the earlier names applies as well.
  TrialConfig recorded;
  ASSERT_OK(ApplyConfigValues({{"recon.weight", "1"}, {"recon.source", "pooled"}}, &recorded));
  EXPECT_EQ(recorded.Hash(), "d8bba30269192311");  // before the rename, likewise
  EXPECT_EQ(recorded.model.recon_source, "pooled");
  EXPECT_EQ(recorded.ToMap().count("recon.weight"), 0u);  // written back under the current names
  EXPECT_EQ(recorded.ToMap().at("loss.recon_weight"), "1");
}

TEST(ConfigKeys, AliasesAreReadEverywhereAndResolved) {
  EXPECT_EQ(CanonicalConfigKey("recon.weight"), "loss.recon_weight");
  EXPECT_EQ(CanonicalConfigKey("recon.source"), "model.recon_source");
  EXPECT_EQ(CanonicalConfigKey("mask.ratio"), "mask.ratio");
  EXPECT_EQ(CanonicalConfigKey("no.such"), "no.such");
  ASSERT_NE(FindConfigKey("recon.weight"), nullptr);
  EXPECT_EQ(FindConfigKey("recon.weight")->name, "loss.recon_weight");
  EXPECT_EQ(FindConfigKey("loss.recon_weight")->alias, "recon.weight");
  // Flags, under either name.
  TrialConfig c;
  ASSERT_OK(Parse({"--recon.weight", "0.25"}, &c));
  EXPECT_DOUBLE_EQ(c.loss.recon_weight, 0.25);
  // Text read as the current names; overrides win whichever name either uses.
  ASSERT_OK_AND_ASSIGN(auto values, ParseConfigText("[recon]\nweight = 0.5\n", "t"));
  EXPECT_EQ(values, (std::map<std::string, std::string>{{"loss.recon_weight", "0.5"}}));
  ASSERT_OK_AND_ASSIGN(TrialConfig over, TrialConfigFromText("[loss]\nrecon_weight = 0.5\n", "t", {{"recon.weight", "2"}}));
  EXPECT_DOUBLE_EQ(over.loss.recon_weight, 2);
  // Both names at once: refused, naming both.
  Status both = ApplyConfigValues({{"recon.weight", "1"}, {"loss.recon_weight", "2"}}, &c);
  EXPECT_EQ(both.message(),
            "recon.weight and loss.recon_weight are both set (recon.weight is the earlier name of "
            "loss.recon_weight): keep loss.recon_weight");
  auto twice = ParseConfigText("[recon]\nweight = 1\n[loss]\nrecon_weight = 2\n", "t.ini");
  EXPECT_EQ(twice.status().message(),
            "t.ini:4: [loss] recon_weight: the key repeats loss.recon_weight (first as recon.weight at line 2)");
  EXPECT_EQ(Parse({"--recon.weight", "1", "--loss.recon_weight", "2"}, &c).code(), Status::Code::kInvalidArgument);
}

// The INI reader (config/ini.h): every error with its line, section and key; a key may also be
// written whole before any header, and a section may come back.
TEST(ParseConfigText, ErrorsHaveTheirLines) {
  ASSERT_OK_AND_ASSIGN(auto values, ParseConfigText("mask.ratio = 0.5\n[train]\nseed = 3\n[mask]\nviews = 2\n", "t"));
  EXPECT_EQ(values, (std::map<std::string, std::string>{{"mask.ratio", "0.5"}, {"mask.views", "2"}, {"train.seed", "3"}}));
  EXPECT_EQ(ParseConfigText("[mask]\nratoi = 0.5\n", "c.ini").status().message(),
            "c.ini:2: [mask] ratoi: unknown key 'mask.ratoi'; did you mean mask.ratio? (flap-worker train --help lists "
            "the keys)");
  EXPECT_EQ(ParseConfigText("ratio = 0.5\n", "c.ini").status().message(),
            "c.ini:1: ratio: unknown key 'ratio'; did you mean mask.ratio? (flap-worker train --help lists the keys)");
  EXPECT_EQ(ParseConfigText("[mask\nratio = 0.5\n[train]\nseed 3\n", "c.ini").status().message(),
            "c.ini: 2 errors in the config:\n  c.ini:1: malformed section header '[mask'\n"
            "  c.ini:4: [train]: expected '[section]' or 'key = value', got 'seed 3'");
  EXPECT_EQ(ParseConfigText("[mask]\nratio = 0.5 # a comment\n", "c.ini")->at("mask.ratio"), "0.5");
}

TEST(ConfigKeys, FlagsAreTheRegistrys) {
  std::set<std::string> operational, local;
  for (const ConfigKey& k : ConfigKeys()) {
    if (k.operational) operational.insert(k.name);
    if (k.local_only) local.insert(k.name);
  }
  EXPECT_EQ(local, (std::set<std::string>{"ckpt.root", "data.path", "data.fbank_cache", "train.output_dir",
                                          "train.device", "metrics.listen", "metrics.sd_dir"}));
  EXPECT_EQ(operational,
            (std::set<std::string>{
                "train.output_dir",    "train.log_every",       "train.threads",    "train.device",
                "data.loader_threads", "data.prefetch_batches", "data.fbank_cache", "data.feature_memory_mb",
                "data.path",           "train.trial_id",        "ckpt.root",        "ckpt.every",
                "ckpt.keep_last",      "ckpt.keep_best",        "ckpt.metric",      "ckpt.stop_deadline",
                "dist.launcher",       "dist.backend",          "dist.timeout",     "dist.bucket_mb",
                "dist.overlap",        "metrics.listen",        "metrics.sd_dir"}));
  EXPECT_TRUE(IsLocalOnlyKey("ckpt.root"));
  EXPECT_FALSE(IsLocalOnlyKey("optim.lr"));
  EXPECT_FALSE(IsLocalOnlyKey("train.trial_id"));
  EXPECT_FALSE(IsLocalOnlyKey("metrics.unknown"));
  EXPECT_EQ(ConfigKeys().front().name, "model.preset");  // applied first
  ASSERT_NE(FindConfigKey("text.augment"), nullptr);
  EXPECT_TRUE(FindConfigKey("text.augment")->numeric);
  EXPECT_FALSE(FindConfigKey("mask.strategy")->numeric);
  EXPECT_EQ(FindConfigKey("mask.ratoi"), nullptr);
}

TEST(ConfigKeys, ClosestKeyIsSuggested) {
  EXPECT_EQ(ClosestConfigKey("mask.ratoi"), "mask.ratio");
  EXPECT_EQ(ClosestConfigKey("train.batchsize"), "train.batch_size");
  EXPECT_EQ(ClosestConfigKey("train.lr"), "optim.lr");  // the same key under another section
  EXPECT_EQ(ClosestConfigKey("completely.different"), "");
  EXPECT_EQ(UnknownKeyMessage("mask.ratoi"), "unknown key 'mask.ratoi'; did you mean mask.ratio?");
  EXPECT_EQ(UnknownKeyMessage("x.y"), "unknown key 'x.y'");
}

TEST(CheckConfigValue, NamesTheKeyAndTheValue) {
  EXPECT_OK(CheckConfigValue("mask.ratio", "0.5"));
  EXPECT_OK(CheckConfigValue("text.augment", "0.25"));
  EXPECT_OK(CheckConfigValue("model.preset", "base"));
  EXPECT_OK(CheckConfigValue("train.device", "cuda:1"));
  EXPECT_OK(CheckConfigValue("train.trial_id", "s-t0001"));
  Status s = CheckConfigValue("mask.ratio", "1.5");
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "mask.ratio must be in [0, 1), got '1.5'");
  EXPECT_EQ(CheckConfigValue("mask.ratio", "half").message(), "mask.ratio: expected a number, got 'half'");
  EXPECT_EQ(CheckConfigValue("train.batch_size", "1").message(),
            "train.batch_size must be >= 2 (contrastive negatives), got '1'");
  EXPECT_EQ(CheckConfigValue("data.crop", "middle").message(), "data.crop must be random or first, got 'middle'");
  EXPECT_EQ(CheckConfigValue("eval.crop", "all").message(), "eval.crop must be first, center or chunks, got 'all'");
  EXPECT_NE(CheckConfigValue("mask.strategy", "3d").message().find("mask.strategy"), std::string::npos);
  EXPECT_NE(CheckConfigValue("train.device", "gpu").message().find("train.device"), std::string::npos);
  EXPECT_NE(CheckConfigValue("train.trial_id", "a/b").message().find("train.trial_id"), std::string::npos);
  EXPECT_EQ(CheckConfigValue("mask.ratoi", "0.5").message(), "unknown key 'mask.ratoi'; did you mean mask.ratio?");
  // Its own domain only: views 2 needs a ratio, which another key gives.
  EXPECT_OK(CheckConfigValue("mask.views", "2"));
}

TEST(TrialConfigFromText, AppliesTheTextThenTheOverrides) {
  ASSERT_OK_AND_ASSIGN(TrialConfig c,
                       TrialConfigFromText("[model]\naudio_depth = 2\n[mask]\nratio = 0.5\n", "base config",
                                           {{"mask.ratio", "0.75"}, {"model.preset", "base"}, {"train.seed", "3"}}));
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.75);  // the override wins
  EXPECT_EQ(c.model.audio_width, 768);   // the preset, applied first...
  EXPECT_EQ(c.model.audio_depth, 2);     // ...then the text's model key
  EXPECT_EQ(c.train.seed, 3u);
  ASSERT_OK_AND_ASSIGN(TrialConfig empty, TrialConfigFromText("", "none"));
  EXPECT_EQ(empty.Hash(), TrialConfig().Hash());
}

TEST(TrialConfigFromText, ErrorsNameTheSourceAndTheKey) {
  auto unknown = TrialConfigFromText("[mask]\nratoi = 0.5\n", "base config of sweep s");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("base config of sweep s"), std::string::npos) << unknown.status().message();
  EXPECT_NE(unknown.status().message().find("did you mean mask.ratio?"), std::string::npos)
      << unknown.status().message();
  auto bad_override = TrialConfigFromText("", "base", {{"mask.ratio", "1.5"}});
  ASSERT_FALSE(bad_override.ok());
  EXPECT_NE(bad_override.status().message().find("mask.ratio must be in [0, 1)"), std::string::npos);
  auto unknown_override = TrialConfigFromText("", "base", {{"optim.rl", "1"}});
  ASSERT_FALSE(unknown_override.ok());
  EXPECT_NE(unknown_override.status().message().find("did you mean optim.lr?"), std::string::npos)
      << unknown_override.status().message();
  auto syntax = TrialConfigFromText("[mask\nratio = 0.5\n", "base");
  EXPECT_EQ(syntax.status().code(), Status::Code::kInvalidArgument);
  auto twice = ParseConfigText("[mask]\nratio = 0.5\nratio = 0.6\n", "base");
  EXPECT_EQ(twice.status().code(), Status::Code::kInvalidArgument);
}

TEST(TrialConfig, UnknownFlagSuggestsTheClosestKey) {
  TrialConfig c;
  Status s = Parse({"--mask.ratoi", "0.5"}, &c);
  EXPECT_NE(s.message().find("did you mean --mask.ratio?"), std::string::npos) << s.message();
}

TEST(TrialConfig, CrossKeyChecksNameTheirKeys) {
  TrialConfig c;
  c.mask.views = 2;
  EXPECT_NE(c.Validate().message().find("mask.ratio"), std::string::npos);
  c = TrialConfig();
  c.data.max_frames = 100;
  EXPECT_NE(c.Validate().message().find("data.max_frames"), std::string::npos);
  c = TrialConfig();
  c.model.audio_heads = 5;
  EXPECT_NE(c.Validate().message().find("model.audio_width"), std::string::npos);
}

}  // namespace
}  // namespace flap
