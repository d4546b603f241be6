// Implementation of flapctl/data_commands.h.
#include "flapctl/data_commands.h"

#include "flapctl/cli.h"

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "common/file_util.h"
#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "sharding/synth.h"
#include "sharding/tokenizer.h"

namespace flap::flapctl {
namespace po = boost::program_options;

namespace {

std::string Plural(int64_t n, const std::string& noun) { return std::to_string(n) + " " + noun + (n == 1 ? "" : "s"); }

// ---- data synth ----

int DataSynth(const std::vector<std::string>& args) {
  sharding::SynthOptions options;
  std::string out_dir;
  int64_t seed = static_cast<int64_t>(options.seed);
  po::options_description visible(
      "Usage: flapctl data synth --out DIR [options]\n\n"
      "Writes a deterministic synthetic audio-caption dataset (shards, tokenizer, manifest)\n"
      "with splits 'train', 'val' (model selection) and 'test' (reported at the end).\n"
      "The same options always give the same bytes.\n\nOptions");
  visible.add_options()("help,h", "show this help")("out", po::value<std::string>(&out_dir)->required(),
                                                    "output dataset folder (required)")(
      "seed", po::value<int64_t>(&seed)->default_value(seed), "generator seed (>= 0)")(
      "train", po::value<int>(&options.num_train)->default_value(options.num_train), "clips in split 'train'")(
      "val", po::value<int>(&options.num_val)->default_value(options.num_val), "clips in split 'val'")(
      "test", po::value<int>(&options.num_test),
      "clips in split 'test' (default: as many as --val)")(
      "eval", po::value<int>(), "old name of --val")(
      "clip-seconds", po::value<double>(&options.clip_seconds)->default_value(options.clip_seconds, "2.56"),
      "length of every clip in seconds [0.5, 60]")(
      "shard-size", po::value<int>(&options.samples_per_shard)->default_value(options.samples_per_shard),
      "clips per shard")("vocab-size", po::value<int>(&options.vocab_size)->default_value(options.vocab_size),
                         "tokenizer vocabulary size (soft limit)")(
      "name", po::value<std::string>(&options.name)->default_value(options.name),
      "dataset name recorded in the manifest");
  po::variables_map vm;
  if (!ParseArgs("data synth", args, visible, po::options_description(), po::positional_options_description(), &vm)) {
    return kExitUsage;
  }
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return kExitOk;
  }
  if (seed < 0) {
    std::cerr << "flapctl data synth: --seed must not be negative\n";
    return kExitUsage;
  }
  options.seed = static_cast<uint64_t>(seed);
  if (vm.count("eval")) {
    if (!vm["val"].defaulted()) {
      std::cerr << "flapctl data synth: give --val or its old name --eval, not both\n";
      return kExitUsage;
    }
    options.num_val = vm["eval"].as<int>();
  }
  if (!vm.count("test")) options.num_test = options.num_val;
  const auto start = std::chrono::steady_clock::now();
  Status s = sharding::GenerateSynthetic(options, out_dir);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) {
    std::cerr << "flapctl data synth: " << s.ToString() << "\n";
    return s.code() == Status::Code::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  int shards = 0;
  for (int n : {options.num_train, options.num_val, options.num_test}) {
    shards += (n + options.samples_per_shard - 1) / options.samples_per_shard;
  }
  std::cout << "wrote " << options.num_train << " train + " << options.num_val << " val + " << options.num_test
            << " test clips in "
            << Plural(shards, "shard") << " to " << out_dir << " in " << std::fixed << std::setprecision(1) << seconds
            << " s\n";
  return kExitOk;
}

// ---- data verify ----

struct ShardCheck {
  Status status;
  int64_t samples = 0;
};

// Size, checksum, then every sample decodes and the count matches the manifest.
ShardCheck CheckShard(const std::string& dir, const sharding::ShardInfo& info) {
  ShardCheck check;
  check.status = sharding::VerifyShard(dir, info);
  if (!check.status.ok()) return check;
  auto reader = sharding::ShardReader::Open(JoinPath(dir, info.name));
  if (!reader.ok()) {
    check.status = reader.status();
    return check;
  }
  sharding::Sample sample;
  while (true) {
    StatusOr<bool> more = reader.value()->Next(&sample);
    if (!more.ok()) {
      check.status = more.status();
      return check;
    }
    if (!more.value()) break;
    ++check.samples;
  }
  if (check.samples != info.num_samples) {
    check.status = Status::Corruption(JoinPath(dir, info.name) + ": holds " + std::to_string(check.samples) +
                                      " samples, the manifest says " + std::to_string(info.num_samples));
  }
  return check;
}

int DataVerify(const std::vector<std::string>& args) {
  std::string dir;
  po::options_description visible(
      "Usage: flapctl data verify DIR\n\n"
      "Checks a dataset folder: the manifest parses, the tokenizer loads, and every shard has\n"
      "its recorded size and checksum, decodes fully and holds its recorded sample count.\n"
      "Exits 1 naming the damaged shards.\n\nOptions");
  visible.add_options()("help,h", "show this help");
  po::options_description hidden;
  hidden.add_options()("dir", po::value<std::string>(&dir), "dataset folder");
  po::positional_options_description positional;
  positional.add("dir", 1);
  po::variables_map vm;
  if (!ParseArgs("data verify", args, visible, hidden, positional, &vm)) return kExitUsage;
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return kExitOk;
  }
  if (dir.empty()) {
    std::cerr << "flapctl data verify: missing the dataset folder (flapctl data verify DIR)\n";
    return kExitUsage;
  }

  StatusOr<sharding::Manifest> manifest = sharding::ReadManifest(dir);
  if (!manifest.ok()) {
    std::cerr << "flapctl data verify: " << manifest.status().ToString() << "\n";
    return kExitFailure;
  }
  const sharding::Manifest& m = manifest.value();
  bool ok = true;
  auto tokenizer = sharding::Tokenizer::Load(JoinPath(dir, m.tokenizer));
  if (!tokenizer.ok()) {
    std::cerr << "tokenizer damaged: " << tokenizer.status().ToString() << "\n";
    ok = false;
  }

  // Shards are checked in parallel; results are reported in manifest order.
  std::vector<ShardCheck> checks(m.shards.size());
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t i = next++; i < m.shards.size(); i = next++) checks[i] = CheckShard(dir, m.shards[i]);
  };
  const size_t num_threads =
      std::max<size_t>(1, std::min<size_t>({m.shards.size(), std::thread::hardware_concurrency(), 8}));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();

  std::vector<std::string> damaged;
  for (size_t i = 0; i < m.shards.size(); ++i) {
    if (!checks[i].status.ok()) {
      damaged.push_back(m.shards[i].name);
      std::cerr << "shard damaged: " << checks[i].status.ToString() << "\n";
    }
  }
  std::cout << "dataset '" << m.name << "' in " << dir << ":\n";
  for (const std::string& split : m.Splits()) {
    int64_t shards = 0, samples_ok = 0, shards_bad = 0;
    for (size_t i = 0; i < m.shards.size(); ++i) {
      if (m.shards[i].split != split) continue;
      ++shards;
      if (checks[i].status.ok()) {
        samples_ok += checks[i].samples;
      } else {
        ++shards_bad;
      }
    }
    std::cout << "  " << split << ": " << Plural(shards, "shard") << ", " << Plural(m.NumSamples(split), "sample")
              << " in the manifest, " << samples_ok << " verified";
    if (shards_bad > 0) std::cout << ", " << Plural(shards_bad, "shard") << " damaged";
    if (split != sharding::kValSplit && m.ResolveSplit(sharding::kValSplit) == split) {
      std::cout << " (read as '" << sharding::kValSplit << "': made before the val and test splits)";
    }
    std::cout << "\n";
  }
  if (!damaged.empty()) {
    std::ostringstream names;
    for (size_t i = 0; i < damaged.size(); ++i) names << (i ? ", " : "") << damaged[i];
    std::cerr << "flapctl data verify: " << damaged.size() << " of " << m.shards.size()
              << " shards damaged: " << names.str() << "\n";
    ok = false;
  }
  if (!ok) return kExitFailure;
  std::cout << "OK: " << m.shards.size() << " shards verified\n";
  return kExitOk;
}

}  // namespace

int RunDataSynth(const std::vector<std::string>& args) { return DataSynth(args); }
int RunDataVerify(const std::vector<std::string>& args) { return DataVerify(args); }

CommandGroup DataCommandGroup() {
  return CommandGroup{"data",
                      "Prepare and check datasets (shards, manifest, tokenizer).",
                      {
                          {"synth", "write a deterministic synthetic audio-caption dataset", RunDataSynth},
                          {"verify", "check a dataset's shards against its manifest", RunDataVerify},
                      }};
}

}  // namespace flap::flapctl
