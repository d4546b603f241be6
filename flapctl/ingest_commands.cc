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

// The command line's values, before they are checked.
struct Flags {
  sharding::IngestOptions options;
  std::string format, out_dir, on_error = "skip";
  std::vector<std::string> csvs, audios, shard_globs, splits;
  int64_t seed = 0;
  int64_t shuffle_seed = static_cast<int64_t>(sharding::kDefaultShuffleSeed);
  double val_fraction = 0.0, eval_fraction = 0.0;
};

// The help text and the options, bound to `f`'s fields.
po::options_description Describe(Flags* f) {
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
  visible.add_options()("help,h", "show this help")("format", po::value<std::string>(&f->format)->required(),
                                                    "clotho, audiocaps or wds (required)")(
      "out", po::value<std::string>(&f->out_dir)->required(), "output dataset folder (required)")(
      "csv", po::value<std::vector<std::string>>(&f->csvs)->composing(), "captions CSV (repeatable)")(
      "audio", po::value<std::vector<std::string>>(&f->audios)->composing(),
      "audio folder: one for all CSVs, or one per CSV")("shards",
                                                        po::value<std::vector<std::string>>(&f->shard_globs)->composing(),
                                                        "WebDataset shard glob, quoted (repeatable)")(
      "split", po::value<std::vector<std::string>>(&f->splits)->composing(),
      "split name of the matching input (repeatable; none: seeded split)")(
      "val-fraction", po::value<double>(&f->val_fraction)->default_value(0.0),
      "seeded split: share of clips in 'val', in [0, 1)")(
      "test-fraction", po::value<double>(&f->options.test_fraction)->default_value(f->options.test_fraction),
      "seeded split: share of clips in 'test', in [0, 1); with --val-fraction below 1")(
      "eval-fraction", po::value<double>(&f->eval_fraction),
      "old name of --val-fraction (accepted; the split is called 'val')")(
      "seed", po::value<int64_t>(&f->seed)->default_value(f->seed), "seeded split's seed (>= 0)")(
      "shuffle-seed", po::value<int64_t>(&f->shuffle_seed)->default_value(f->shuffle_seed),
      "seed of the clips' order within each split (>= 0; recorded in the manifest)")(
      "shard-size", po::value<int>(&f->options.samples_per_shard)->default_value(f->options.samples_per_shard),
      "clips per shard (at most; rejected clips leave their shard shorter)")(
      "min-seconds", po::value<double>(&f->options.min_seconds)->default_value(f->options.min_seconds, "0.1"),
      "reject clips shorter than this (too_short)")(
      "max-seconds", po::value<double>(&f->options.max_seconds)->default_value(f->options.max_seconds, "30"),
      "reject clips longer than this (too_long), or crop them with --crop")("crop", po::bool_switch(&f->options.crop),
                                                                            "crop over-long clips to --max-seconds")(
      "on-error", po::value<std::string>(&f->on_error)->default_value(f->on_error),
      "skip: report bad clips and go on; fail: stop at the first, naming it (exit 1)")(
      "threads", po::value<int>(&f->options.threads)->default_value(f->options.threads),
      "decode/write threads (0: all cores); never changes the output")(
      "vocab-size", po::value<int>(&f->options.vocab_size)->default_value(f->options.vocab_size),
      "tokenizer vocabulary size (soft limit)")(
      "train-split", po::value<std::string>(&f->options.train_split)->default_value(f->options.train_split),
      "the split whose captions train the tokenizer")(
      "name", po::value<std::string>(&f->options.name)->default_value(f->options.name),
      "dataset name recorded in the manifest");
  return visible;
}

// Checks the flags and fills f->options but its inputs; a usage error's message, or empty.
std::string CheckFlags(const po::variables_map& vm, Flags* f) {
  sharding::IngestOptions& options = f->options;
  StatusOr<sharding::IngestFormat> parsed = sharding::ParseIngestFormat(f->format);
  if (!parsed.ok()) return parsed.status().message();
  options.format = parsed.value();
  if (f->on_error != "skip" && f->on_error != "fail") return "--on-error must be skip or fail";
  options.on_error = f->on_error == "fail" ? sharding::OnError::kFail : sharding::OnError::kSkip;
  if (f->seed < 0) return "--seed must not be negative";
  options.seed = static_cast<uint64_t>(f->seed);
  if (f->shuffle_seed < 0) return "--shuffle-seed must not be negative";
  options.shuffle_seed = static_cast<uint64_t>(f->shuffle_seed);
  if (vm.count("eval-fraction")) {
    if (!vm["val-fraction"].defaulted()) return "give --val-fraction or its old name --eval-fraction, not both";
    f->val_fraction = f->eval_fraction;
  }
  options.val_fraction = f->val_fraction;
  for (const auto& [flag, value] :
       {std::pair<const char*, double>{"--val-fraction", options.val_fraction}, {"--test-fraction", options.test_fraction}}) {
    if (!(value >= 0.0 && value < 1.0)) return std::string(flag) + " must lie in [0, 1)";
  }
  if (!(options.val_fraction + options.test_fraction < 1.0)) return "--val-fraction + --test-fraction must be below 1";
  if (options.threads < 0) return "--threads must not be negative";
  const bool wds = options.format == sharding::IngestFormat::kWebDataset;
  const size_t n = wds ? f->shard_globs.size() : f->csvs.size();
  if (wds && (!f->csvs.empty() || !f->audios.empty())) return "--format wds takes --shards, not --csv/--audio";
  if (!wds && !f->shard_globs.empty()) return "--shards is for --format wds";
  if (n == 0) return wds ? "give at least one --shards GLOB" : "give at least one --csv FILE";
  if (!f->splits.empty() && f->splits.size() != n) {
    return "give one --split per input (" + std::to_string(n) + "), or none";
  }
  if (!wds && f->audios.size() != 1 && f->audios.size() != n) return "give one --audio folder, or one per --csv";
  return "";
}

// The inputs, paired by position; false (having said which) when a shard glob matches nothing.
bool AddInputs(Flags* f) {
  const bool wds = f->options.format == sharding::IngestFormat::kWebDataset;
  const size_t n = wds ? f->shard_globs.size() : f->csvs.size();
  for (size_t i = 0; i < n; ++i) {
    sharding::IngestInput input;
    if (!f->splits.empty()) input.split = f->splits[i];
    if (wds) {
      input.shards = Glob(f->shard_globs[i]);
      if (input.shards.empty()) {
        std::cerr << kCommand << ": no shard matches '" << f->shard_globs[i] << "'\n";
        return false;
      }
    } else {
      input.csv = f->csvs[i];
      input.audio_dir = f->audios.size() == 1 ? f->audios[0] : f->audios[i];
    }
    f->options.inputs.push_back(std::move(input));
  }
  return true;
}

void PrintSummary(const Flags& f, const sharding::IngestReport& report, double seconds) {
  const std::string& out_dir = f.out_dir;
  std::cout << "ingested " << report.accepted << " clips (";
  bool first = true;
  for (const auto& [split, count] : report.per_split) {
    std::cout << (first ? "" : ", ") << split << ": " << count;
    first = false;
  }
  std::cout << ") into " << out_dir << " in " << std::fixed << std::setprecision(1) << seconds << " s; shards written "
            << report.shards_written << ", kept from an earlier run " << report.shards_reused << "\n";
  const bool wds = f.options.format == sharding::IngestFormat::kWebDataset;
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
}

}  // namespace

int RunDataIngest(const std::vector<std::string>& args) {
  Flags f;
  const po::options_description visible = Describe(&f);
  po::variables_map vm;
  if (!ParseArgs("data ingest", args, visible, {}, {}, &vm)) return kExitUsage;
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return kExitOk;
  }
  if (const std::string usage = CheckFlags(vm, &f); !usage.empty()) return Usage(usage);
  if (!AddInputs(&f)) return kExitFailure;

  const auto start = std::chrono::steady_clock::now();
  sharding::IngestReport report;
  Status s = sharding::Ingest(f.options, f.out_dir, &report);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) {
    std::cerr << kCommand << ": " << s.ToString() << "\n";
    if (!report.issues.empty()) {
      std::cerr << "report: " << f.out_dir << "/" << sharding::kIngestReportFileName << "\n";
    }
    return kExitFailure;
  }
  PrintSummary(f, report, seconds);
  return kExitOk;
}

Command DataIngestCommand() {
  return Command{"ingest", "ingest a Clotho, AudioCaps or WebDataset corpus into shards", RunDataIngest};
}

}  // namespace flap::flapctl
