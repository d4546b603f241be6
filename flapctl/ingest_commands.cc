// Implementation of flapctl/ingest_commands.h. Boost.Program_options throws on bad command
// lines; those exceptions are caught here and become usage errors (exit 2).
#include "flapctl/ingest_commands.h"

#include <glob.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <utility>

#include "sharding/ingest.h"
#include "sharding/manifest.h"

namespace flap::flapctl {
namespace po = boost::program_options;

namespace {

constexpr char kCommand[] = "flapctl data ingest";

int Usage(const std::string& message) {
  std::cerr << kCommand << ": " << message << "\nRun '" << kCommand << " --help' for usage.\n";
  return kExitUsage;
}

// The sorted paths matching `pattern`; empty if none.
std::vector<std::string> Glob(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  }
  ::globfree(&g);
  return out;  // glob(3) sorts
}

}  // namespace

int RunDataIngest(const std::vector<std::string>& args) {
  sharding::IngestOptions options;
  std::string format, out_dir, on_error = "skip";
  std::vector<std::string> csvs, audios, shard_globs, splits;
  int64_t seed = 0;
  int64_t shuffle_seed = static_cast<int64_t>(sharding::kDefaultShuffleSeed);
  double val_fraction = 0.0, eval_fraction = 0.0;
  po::options_description visible(
      "Usage: flapctl data ingest --format clotho|audiocaps|wds --out DIR INPUTS [options]\n\n"
      "Turns a corpus into a dataset folder: shards of --shard-size clips (16 kHz mono FLAC),\n"
      "a tokenizer trained on the training split's captions, ingest_report.json (every\n"
      "rejected clip with its reason) and manifest.json (written last).\n\n"
      "Inputs, paired by position (the i-th --csv/--shards goes with the i-th --split and the\n"
      "i-th --audio, or the only --audio):\n"
      "  clotho:    --csv captions.csv (file_name,caption_1..caption_5) --audio DIR\n"
      "  audiocaps: --csv train.csv (audiocap_id,youtube_id,start_time,caption) --audio DIR\n"
      "             (files <youtube_id>.EXT or <youtube_id>_<start>.EXT; rows of one clip are\n"
      "             grouped into one sample)\n"
      "  wds:       --shards 'GLOB' (existing WebDataset shards, re-sharded)\n"
      "Splits have roles: 'train' (training), 'val' (model selection during training) and\n"
      "'test' (reported at the end). A --split names a role, a corpus's own split (Clotho:\n"
      "development -> train, validation -> val, evaluation -> test; AudioCaps' train, val,\n"
      "test are roles already) or any other split name.\n"
      "Without --split, clips are split by a seeded hash of their key: 'val' with\n"
      "probability --val-fraction, 'test' with probability --test-fraction, else 'train'.\n"
      "The clips of each split are put in a seeded random order (--shuffle-seed) before\n"
      "they are cut into shards, so a shard holds clips from all over the corpus.\n\n"
      "Example:\n"
      "  flapctl data ingest --format clotho --out data/clotho \\\n"
      "    --csv clotho_captions_development.csv --split development \\\n"
      "    --csv clotho_captions_validation.csv --split validation \\\n"
      "    --csv clotho_captions_evaluation.csv --split evaluation \\\n"
      "    --audio clotho_audio_all --max-seconds 30 --crop\n\n"
      "Rerunning with the same inputs and options resumes: finished shards are checked and\n"
      "kept, the rest written; the result equals an uninterrupted run's, byte for byte.\n\n"
      "Options");
  visible.add_options()("help,h", "show this help")("format", po::value<std::string>(&format)->required(),
                                                    "clotho, audiocaps or wds (required)")(
      "out", po::value<std::string>(&out_dir)->required(), "output dataset folder (required)")(
      "csv", po::value<std::vector<std::string>>(&csvs)->composing(), "captions CSV (repeatable)")(
      "audio", po::value<std::vector<std::string>>(&audios)->composing(),
      "audio folder: one for all CSVs, or one per CSV")("shards",
                                                        po::value<std::vector<std::string>>(&shard_globs)->composing(),
                                                        "WebDataset shard glob, quoted (repeatable)")(
      "split", po::value<std::vector<std::string>>(&splits)->composing(),
      "split name of the matching input (repeatable; none: seeded split)")(
      "val-fraction", po::value<double>(&val_fraction)->default_value(0.0),
      "seeded split: share of clips in 'val', in [0, 1)")(
      "test-fraction", po::value<double>(&options.test_fraction)->default_value(options.test_fraction),
      "seeded split: share of clips in 'test', in [0, 1); with --val-fraction below 1")(
      "eval-fraction", po::value<double>(&eval_fraction),
      "old name of --val-fraction (accepted; the split is called 'val')")(
      "seed", po::value<int64_t>(&seed)->default_value(seed), "seeded split's seed (>= 0)")(
      "shuffle-seed", po::value<int64_t>(&shuffle_seed)->default_value(shuffle_seed),
      "seed of the clips' order within each split (>= 0; recorded in the manifest)")(
      "shard-size", po::value<int>(&options.samples_per_shard)->default_value(options.samples_per_shard),
      "clips per shard (at most; rejected clips leave their shard shorter)")(
      "min-seconds", po::value<double>(&options.min_seconds)->default_value(options.min_seconds, "0.1"),
      "reject clips shorter than this (too_short)")(
      "max-seconds", po::value<double>(&options.max_seconds)->default_value(options.max_seconds, "30"),
      "reject clips longer than this (too_long), or crop them with --crop")("crop", po::bool_switch(&options.crop),
                                                                            "crop over-long clips to --max-seconds")(
      "on-error", po::value<std::string>(&on_error)->default_value(on_error),
      "skip: report bad clips and go on; fail: stop at the first, naming it (exit 1)")(
      "threads", po::value<int>(&options.threads)->default_value(options.threads),
      "decode/write threads (0: all cores); never changes the output")(
      "vocab-size", po::value<int>(&options.vocab_size)->default_value(options.vocab_size),
      "tokenizer vocabulary size (soft limit)")(
      "train-split", po::value<std::string>(&options.train_split)->default_value(options.train_split),
      "the split whose captions train the tokenizer")(
      "name", po::value<std::string>(&options.name)->default_value(options.name),
      "dataset name recorded in the manifest");
  po::variables_map vm;
  if (!ParseArgs("data ingest", args, visible, {}, {}, &vm)) return kExitUsage;
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return kExitOk;
  }

  StatusOr<sharding::IngestFormat> parsed = sharding::ParseIngestFormat(format);
  if (!parsed.ok()) return Usage(parsed.status().message());
  options.format = parsed.value();
  if (on_error != "skip" && on_error != "fail") return Usage("--on-error must be skip or fail");
  options.on_error = on_error == "fail" ? sharding::OnError::kFail : sharding::OnError::kSkip;
  if (seed < 0) return Usage("--seed must not be negative");
  options.seed = static_cast<uint64_t>(seed);
  if (shuffle_seed < 0) return Usage("--shuffle-seed must not be negative");
  options.shuffle_seed = static_cast<uint64_t>(shuffle_seed);
  if (vm.count("eval-fraction")) {
    if (!vm["val-fraction"].defaulted()) return Usage("give --val-fraction or its old name --eval-fraction, not both");
    val_fraction = eval_fraction;
  }
  options.val_fraction = val_fraction;
  for (const auto& [flag, value] :
       {std::pair<const char*, double>{"--val-fraction", options.val_fraction}, {"--test-fraction", options.test_fraction}}) {
    if (!(value >= 0.0 && value < 1.0)) return Usage(std::string(flag) + " must lie in [0, 1)");
  }
  if (!(options.val_fraction + options.test_fraction < 1.0)) {
    return Usage("--val-fraction + --test-fraction must be below 1");
  }
  if (options.threads < 0) return Usage("--threads must not be negative");

  const bool wds = options.format == sharding::IngestFormat::kWebDataset;
  const size_t n = wds ? shard_globs.size() : csvs.size();
  if (wds && (!csvs.empty() || !audios.empty())) return Usage("--format wds takes --shards, not --csv/--audio");
  if (!wds && !shard_globs.empty()) return Usage("--shards is for --format wds");
  if (n == 0) return Usage(wds ? "give at least one --shards GLOB" : "give at least one --csv FILE");
  if (!splits.empty() && splits.size() != n) {
    return Usage("give one --split per input (" + std::to_string(n) + "), or none");
  }
  if (!wds && audios.size() != 1 && audios.size() != n) {
    return Usage("give one --audio folder, or one per --csv");
  }
  for (size_t i = 0; i < n; ++i) {
    sharding::IngestInput input;
    if (!splits.empty()) input.split = splits[i];
    if (wds) {
      input.shards = Glob(shard_globs[i]);
      if (input.shards.empty()) {
        std::cerr << kCommand << ": no shard matches '" << shard_globs[i] << "'\n";
        return kExitFailure;
      }
    } else {
      input.csv = csvs[i];
      input.audio_dir = audios.size() == 1 ? audios[0] : audios[i];
    }
    options.inputs.push_back(std::move(input));
  }

  const auto start = std::chrono::steady_clock::now();
  sharding::IngestReport report;
  Status s = sharding::Ingest(options, out_dir, &report);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) {
    std::cerr << kCommand << ": " << s.ToString() << "\n";
    if (!report.issues.empty()) {
      std::cerr << "report: " << out_dir << "/" << sharding::kIngestReportFileName << "\n";
    }
    return kExitFailure;
  }
  std::cout << "ingested " << report.accepted << " clips (";
  bool first = true;
  for (const auto& [split, count] : report.per_split) {
    std::cout << (first ? "" : ", ") << split << ": " << count;
    first = false;
  }
  std::cout << ") into " << out_dir << " in " << std::fixed << std::setprecision(1) << seconds << " s; shards written "
            << report.shards_written << ", kept from an earlier run " << report.shards_reused << "\n";
  for (const char* role : {sharding::kValSplit, sharding::kTestSplit}) {
    if (report.per_split.count(role) == 0) {
      std::cout << "note: no clip in split '" << role << "' (give an input --split " << role
                << (wds ? "" : " or its corpus name") << ", or --" << role << "-fraction)\n";
    }
  }
  if (!report.issues.empty()) {
    std::cout << "rejected " << report.issues.size() << ":";
    for (const auto& [reason, count] : report.by_reason) std::cout << " " << reason << " " << count;
    std::cout << " (every file in " << out_dir << "/" << sharding::kIngestReportFileName << ")\n";
  }
  return kExitOk;
}

Command DataIngestCommand() {
  return Command{"ingest", "ingest a Clotho, AudioCaps or WebDataset corpus into shards", RunDataIngest};
}

}  // namespace flap::flapctl
