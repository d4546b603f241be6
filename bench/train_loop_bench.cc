// End-to-end training-loop benchmark: `flap-worker train` against a plain PyTorch loop
// (bench/train_loop_bench.py: the same model, losses, optimiser and schedule, features
// precomputed once) on the same generated dataset, for the same training-time budget at each
// mask ratio, evaluating at the same steps. Prints per run and ratio: loop samples/s, the
// training seconds to each target t2a R@1 (interpolated between evaluations), R@1 at the budget,
// and the worker's data wait, page faults per step, system-time share and step phases; then the
// ratios worker / plain. "plain-passive" runs the plain loop with the worker's idle-thread
// settings; --reuse reads the runs already in --out instead of running them again.
//
//   train_loop_bench [--data DIR] [--train 3000] [--val 200] [--seconds 180] [--ratios 0,0.5,0.75]
//                    [--batch 64] [--eval-every 25] [--targets 0.1,0.3] [--threads N] [--reuse]
//                    [--runs worker,plain,plain-passive]
//                    [--seeds 1,2,...] [--worker-set KEY=VALUE,...] [--baseline-seconds S] [--out DIR]
//
// --data: a dataset folder (made with `flapctl data synth` when it has no manifest.json);
// --threads: the plain loop's intra-op threads (default: every usable core); the worker plans its
// own (thread_budget.h) unless --worker-set train.threads=N; --worker-set's keys also set the
// schedule both loops follow (train.epochs=20: the plain loop's cosine spans the same steps);
// --seeds runs every cell once per seed (the worker's train.seed, the plain loop's --seed) and
// summarises each cell as the mean with the range over seeds; --baseline-seconds S (default:
// --seconds) trains the baselines (ratio 0, and the plain runs) for S seconds so that their time
// to each target is measured rather than bounded by the budget, and reads their R@1 at the budget
// off their evaluation curve at --seconds (the schedule is set by the epochs, not the budget, so
// the first --seconds of a longer run are those of a run of --seconds). The features the plain
// loop reads are exported once from the worker's own front end (the dataset's first T frames of
// every clip).
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sharding/manifest.h"
#include "config/trial_config.h"
#include "worker/dataset.h"
#include "worker/thread_budget.h"
#include "worker/trainer.h"

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int Run(const std::string& command) {
  const int rc = std::system(command.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

struct Options {
  std::string data = "train-loop-data", out = "train-loop-bench";
  int train = 3000, eval = 200, batch = 64, eval_every = 25, threads = 0;
  double seconds = 180;
  double baseline_seconds = 0;  // > seconds: the baselines' longer training budget
  std::vector<double> targets = {0.10, 0.30};
  std::vector<std::string> ratios = {"0", "0.5", "0.75"}, runs = {"worker", "plain"};
  std::map<std::string, std::string> worker_set;  // --worker-set KEY=VALUE,...
  std::vector<int> seeds = {1};
  bool reuse = false;  // read a run's earlier output instead of running it again
};

// One run's figures.
struct Outcome {
  double samples_per_second = 0;
  std::vector<std::pair<double, double>> curve;  // (training seconds, t2a R@1) per evaluation
  double r1_at_budget = 0;                       // t2a R@1 at --seconds of training
  double trained_seconds = 0;  // the budget (longer for a baseline), or less where the epochs ended first
  int64_t steps = 0;
  json extra;  // the worker's data wait, faults, phases
};

// y at x on the line through (x0, y0) and (x1, y1); y1 where the two points share x.
double Lerp(double x0, double y0, double x1, double y1, double x) {
  return x1 == x0 ? y1 : y0 + (y1 - y0) * (x - x0) / (x1 - x0);
}

// Training seconds at which t2a R@1 first reaches `target`, interpolated linearly between the
// evaluations before and after; -1 when it never does.
double TimeToTarget(const std::vector<std::pair<double, double>>& curve, double target) {
  double prev_t = 0, prev_r = 0;
  for (const auto& [t, r] : curve) {
    if (r >= target) return Lerp(prev_r, prev_t, r, t, target);
    prev_t = t;
    prev_r = r;
  }
  return -1;
}

// t2a R@1 after `seconds` of training, interpolated between the evaluations around it; the
// last evaluation's when the run ended before.
double R1At(const std::vector<std::pair<double, double>>& curve, double seconds) {
  double prev_t = 0, prev_r = 0;
  for (const auto& [t, r] : curve) {
    if (t >= seconds) return Lerp(prev_t, prev_r, t, r, seconds);
    prev_t = t;
    prev_r = r;
  }
  return prev_r;
}

// Baselines (ratio 0, and the plain runs) train for --baseline-seconds where it is longer.
double RunSeconds(const Options& o, const std::string& run, const std::string& ratio) {
  return (ratio == "0" || run != "worker") ? std::max(o.seconds, o.baseline_seconds) : o.seconds;
}

// The split's first T frames of every clip and all its captions (token ids padded to L),
// as raw little-endian files plus meta.json, for the plain loop.
bool ExportSplit(const std::string& data, const std::string& split, const flap::TrialConfig& config,
                 const std::string& dir, json* meta) {
  flap::worker::FeatureOptions fo = flap::worker::DataOptions(config);
  fo.max_frames = config.model.target_frames;
  fo.memory_budget_bytes = 0;
  fo.cache_dir.clear();
  fo.threads = flap::worker::UsableCores();
  auto ds = flap::worker::Dataset::Load(data, split, fo);
  if (!ds.ok()) {
    std::cerr << ds.status().ToString() << "\n";
    return false;
  }
  const int64_t t = config.model.target_frames, m = config.model.num_mel_bins, l = config.model.text_max_len;
  std::ofstream spec(dir + "/" + split + "_spec.f32", std::ios::binary);
  std::ofstream tokens(dir + "/" + split + "_tokens.i64", std::ios::binary);
  std::ofstream owner(dir + "/" + split + "_caption_clip.i64", std::ios::binary);
  int64_t captions = 0;
  for (int64_t i = 0; i < ds->size(); ++i) {
    spec.write(reinterpret_cast<const char*>(ds->spec(i)), static_cast<std::streamsize>(sizeof(float) * t * m));
    for (const std::vector<int>& c : ds->clip(i).captions) {
      std::vector<int64_t> row(static_cast<size_t>(l), 0);
      for (size_t j = 0; j < c.size() && j < row.size(); ++j) row[j] = c[j];
      tokens.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(sizeof(int64_t) * l));
      owner.write(reinterpret_cast<const char*>(&i), sizeof(int64_t));
      ++captions;
    }
  }
  (*meta)[split] = {{"clips", ds->size()}, {"captions", captions}};
  (*meta)["frames"] = t;
  (*meta)["mels"] = m;
  (*meta)["text_len"] = l;
  (*meta)["vocab"] = ds->tokenizer().vocab_size();
  return spec.good() && tokens.good() && owner.good();
}

// A run's folder: OUT/RUN-rRATIO-sSEED.
std::string RunDir(const Options& o, const std::string& run, const std::string& ratio, int seed) {
  return o.out + "/" + run + "-r" + ratio + "-s" + std::to_string(seed);
}

std::string WorkerConfig(const Options& o, const std::string& ratio, int seed, const std::string& out_dir) {
  std::ostringstream ini;
  ini << "[model]\npreset = tiny\n[mask]\nratio = " << ratio << "\nstrategy = 2d\n[loss]\nrecon_weight = 1\n"
      << "[train]\nseed = " << seed << "\nbatch_size = " << o.batch
      << "\nmax_seconds = " << RunSeconds(o, "worker", ratio) << "\neval_every = " << o.eval_every
      << "\nlog_every = " << o.eval_every << "\noutput_dir = " << out_dir << "\n[data]\npath = " << o.data << "\n";
  return ini.str();
}

bool RunWorker(const Options& o, const std::string& worker, const std::string& ratio, int seed, Outcome* result) {
  const std::string dir = RunDir(o, "worker", ratio, seed);
  fs::create_directories(dir);
  std::ofstream(dir + "/trial.ini") << WorkerConfig(o, ratio, seed, dir);
  std::string command = worker + " train --config " + dir + "/trial.ini";
  for (const auto& [key, value] : o.worker_set) command += " --" + key + " " + value;
  command += " > " + dir + "/log.txt 2>&1";
  if (!(o.reuse && fs::exists(dir + "/summary.json")) && Run(command) != 0) {
    std::cerr << "flap-worker failed: see " << dir << "/log.txt\n";
    return false;
  }
  std::ifstream in(dir + "/summary.json");
  const json s = json::parse(in, nullptr, false);
  if (s.is_discarded()) return false;
  std::vector<std::pair<double, double>>& curve = result->curve;
  for (const json& e : s["eval_history"])
    curve.emplace_back(e["train_seconds"].get<double>(), e["t2a_r1"].get<double>());
  result->samples_per_second = s["samples_per_second"].get<double>();
  result->r1_at_budget = R1At(curve, o.seconds);
  result->trained_seconds = s["train_seconds"].get<double>();
  result->steps = s["steps"].get<int64_t>();
  result->extra = {{"data_wait_fraction", s["data"]["wait_fraction"]},
                   {"minor_faults_per_step", s["host"]["minor_faults_per_step"]},
                   {"system_time_share", s["host"]["system_time_share"]},
                   {"threads", std::to_string(s["host"]["compute_threads"].get<int>()) + "+" +
                                   std::to_string(s["host"]["loader_threads"].get<int>())},
                   {"allocator", s["host"]["allocator"]},
                   {"step_seconds", s["step_seconds"]},
                   {"loader", s["data"]}};
  return true;
}

// run "plain": as a PyTorch user runs it; "plain-passive": with the idle-thread settings the
// worker gives itself (thread_budget.h), to tell the loop's own speed from the threads' waiting.
bool RunPlain(const Options& o, const std::string& run, const std::string& export_dir, const std::string& ratio,
              int seed, int total_steps, Outcome* result) {
  const std::string dir = RunDir(o, run, ratio, seed);
  fs::create_directories(dir);
  std::ostringstream command;
  if (run == "plain-passive") command << "OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4 ";
  command << "/usr/bin/python3 " << FLAP_BENCH_DIR << "/train_loop_bench.py --features " << export_dir << " --ratio "
          << ratio << " --batch " << o.batch << " --seconds " << RunSeconds(o, run, ratio) << " --eval-every "
          << o.eval_every << " --total-steps " << total_steps << " --seed " << seed << " --threads "
          << (o.threads > 0 ? o.threads : flap::worker::UsableCores()) << " > " << dir << "/log.jsonl 2> " << dir
          << "/stderr.txt";
  if (!(o.reuse && fs::exists(dir + "/log.jsonl")) && Run(command.str()) != 0) {
    std::cerr << "plain loop failed: see " << dir << "/stderr.txt\n";
    return false;
  }
  std::ifstream in(dir + "/log.jsonl");
  std::vector<std::pair<double, double>>& curve = result->curve;
  std::string line;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("t2a_r1")) curve.emplace_back(j["train_seconds"].get<double>(), j["t2a_r1"].get<double>());
    if (j.contains("samples_per_second")) {
      result->samples_per_second = j["samples_per_second"].get<double>();
      result->steps = j["steps"].get<int64_t>();
      result->trained_seconds = j["train_seconds"].get<double>();
    }
  }
  result->r1_at_budget = R1At(curve, o.seconds);
  return !curve.empty();
}

std::string Seconds(double s) {
  if (s < 0) return "not reached";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f s", s);
  return buf;
}

// One figure over seeds: the mean and range of the seeds where it exists (a time to target
// exists where the target was reached).
struct Range {
  double mean = 0, lo = 0, hi = 0;
  int n = 0, of = 0;
  bool reached = false;  // every seed has it
  std::string MeanText() const { return reached ? Seconds(mean) : n == 0 ? "not reached" : Partial(); }
  std::string SecondsText() const {
    if (!reached) return n == 0 ? "not reached" : Partial();
    char buf[64];
    if (of > 1)
      std::snprintf(buf, sizeof(buf), "%.0f s [%.0f-%.0f]", mean, lo, hi);
    else
      std::snprintf(buf, sizeof(buf), "%.0f s", mean);
    return buf;
  }
  std::string Percent() const {
    char buf[64];
    if (of > 1)
      std::snprintf(buf, sizeof(buf), "%.1f%% [%.1f-%.1f]", 100 * mean, 100 * lo, 100 * hi);
    else
      std::snprintf(buf, sizeof(buf), "%.1f%%", 100 * mean);
    return buf;
  }
  std::string Partial() const { return std::to_string(n) + " of " + std::to_string(of) + " seeds"; }
};

Range RangeOf(const std::vector<double>& values) {  // values < 0: not there
  Range r;
  r.of = static_cast<int>(values.size());
  double sum = 0;
  for (double v : values) {
    if (v < 0) continue;
    r.lo = r.n == 0 ? v : std::min(r.lo, v);
    r.hi = r.n == 0 ? v : std::max(r.hi, v);
    sum += v;
    ++r.n;
  }
  r.mean = r.n > 0 ? sum / r.n : 0;
  r.reached = r.n > 0 && r.n == r.of;
  return r;
}

struct Cell {
  double sps = 0;
  double trained_seconds = 0;  // the seeds' longest training time
  Range r1;
  std::vector<Range> to_target;  // per target
};

Cell Summarise(const std::vector<Outcome>& seeds, const std::vector<double>& targets) {
  Cell c;
  std::vector<double> r1;
  for (const Outcome& s : seeds) {
    c.sps += s.samples_per_second / static_cast<double>(seeds.size());
    c.trained_seconds = std::max(c.trained_seconds, s.trained_seconds);
    r1.push_back(s.r1_at_budget);
  }
  c.r1 = RangeOf(r1);
  for (double t : targets) {
    std::vector<double> times;
    for (const Outcome& s : seeds) times.push_back(TimeToTarget(s.curve, t));
    c.to_target.push_back(RangeOf(times));
  }
  return c;
}

std::string JoinSeeds(const std::vector<int>& seeds) {
  std::string out;
  for (int s : seeds) out += (out.empty() ? "" : ",") + std::to_string(s);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--reuse") {
      o.reuse = true;
      continue;
    }
    if (a == "--data")
      o.data = next();
    else if (a == "--out")
      o.out = next();
    else if (a == "--train")
      o.train = std::atoi(next().c_str());
    else if (a == "--val" || a == "--eval")  // --eval: the old name
      o.eval = std::atoi(next().c_str());
    else if (a == "--seconds")
      o.seconds = std::atof(next().c_str());
    else if (a == "--baseline-seconds")
      o.baseline_seconds = std::atof(next().c_str());
    else if (a == "--ratios")
      o.ratios = Split(next());
    else if (a == "--batch")
      o.batch = std::atoi(next().c_str());
    else if (a == "--eval-every")
      o.eval_every = std::atoi(next().c_str());
    else if (a == "--targets") {
      o.targets.clear();
      for (const std::string& t : Split(next())) o.targets.push_back(std::atof(t.c_str()));
    }

    else if (a == "--threads")
      o.threads = std::atoi(next().c_str());
    else if (a == "--runs")
      o.runs = Split(next());
    else if (a == "--worker-set") {
      for (const std::string& kv : Split(next())) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
          std::cerr << "--worker-set: '" << kv << "' is not KEY=VALUE\n";
          return 2;
        }
        o.worker_set[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
    } else if (a == "--seeds") {
      o.seeds.clear();
      for (const std::string& v : Split(next())) {
        char* end = nullptr;
        const long seed = std::strtol(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || seed < 0 || seed > INT32_MAX) {
          std::cerr << "--seeds: '" << v << "' is not a non-negative integer\n";
          return 2;
        }
        o.seeds.push_back(static_cast<int>(seed));
      }
    } else {
      std::cerr << "usage: train_loop_bench [--data DIR] [--train N] [--val N] [--seconds S] [--ratios LIST] "
                   "[--batch N] [--eval-every N] [--targets R1,...] [--threads N] [--runs worker,plain,plain-passive] "
                   "[--seeds N,...] [--worker-set KEY=VALUE,...] [--baseline-seconds S] [--out DIR]\n";
      return 2;
    }
  }
  const std::string bin = FLAP_BUILD_DIR;
  fs::create_directories(o.out);
  if (!fs::exists(o.data + "/manifest.json")) {
    std::ostringstream synth;
    synth << bin << "/flapctl/flapctl data synth --out " << o.data << " --train " << o.train << " --val " << o.eval
          << " --seed 1 > " << o.out << "/synth.log 2>&1";
    if (Run(synth.str()) != 0) {
      std::cerr << "flapctl data synth failed: see " << o.out << "/synth.log\n";
      return 1;
    }
  }
  // The worker's config as the plain loop needs it (model, schedule), from the same INI.
  const std::string probe = o.out + "/probe.ini";
  std::ofstream(probe) << WorkerConfig(o, "0", 1, o.out);
  auto loaded = flap::LoadTrialConfigFile(probe);
  if (!loaded.ok()) {
    std::cerr << loaded.status().ToString() << "\n";
    return 1;
  }
  if (const flap::Status st = flap::ApplyConfigValues(o.worker_set, &*loaded); !st.ok()) {
    std::cerr << "--worker-set: " << st.ToString() << "\n";
    return 2;
  }
  const flap::TrialConfig config = *loaded;
  const std::string export_dir = o.out + "/features";
  const bool plain = std::any_of(o.runs.begin(), o.runs.end(), [](const std::string& r) { return r != "worker"; });
  if (plain && !fs::exists(export_dir + "/meta.json")) {
    fs::create_directories(export_dir);
    json meta;
    if (!ExportSplit(o.data, "train", config, export_dir, &meta) ||
        !ExportSplit(o.data, "val", config, export_dir, &meta)) {
      return 1;
    }
    std::ofstream(export_dir + "/meta.json") << meta.dump(2);
  }
  // The learning-rate schedule both follow: the worker's (warm-up, cosine over the epochs' steps).
  auto manifest = flap::sharding::ReadManifest(o.data);
  if (!manifest.ok()) {
    std::cerr << manifest.status().ToString() << "\n";
    return 1;
  }
  int64_t train_clips = 0;
  for (const auto& shard : manifest->ShardsOf("train")) train_clips += shard.num_samples;
  const int total_steps = static_cast<int>(train_clips / o.batch * config.train.epochs);

  std::map<std::string, std::map<std::string, std::vector<Outcome>>> results;  // run -> ratio -> per seed
  for (const int seed : o.seeds) {
    for (const std::string& ratio : o.ratios) {
      for (const std::string& run : o.runs) {
        Outcome r;
        const bool ok = run == "worker" ? RunWorker(o, bin + "/worker/flap-worker", ratio, seed, &r)
                                        : RunPlain(o, run, export_dir, ratio, seed, total_steps, &r);
        if (!ok) return 1;
        results[run][ratio].push_back(r);
        std::printf("%-13s r=%-5s s=%-2d %7.1f samples/s  %5lld steps in %.0f s  t2a R@1 %5.1f%% at %.0f s",
                    run.c_str(), ratio.c_str(), seed, r.samples_per_second, static_cast<long long>(r.steps),
                    r.trained_seconds, 100 * r.r1_at_budget, o.seconds);
        for (double t : o.targets) std::printf("  to %.0f%%: %s", 100 * t, Seconds(TimeToTarget(r.curve, t)).c_str());
        std::printf("\n");
        if (!r.extra.is_null()) std::printf("       %s\n", r.extra.dump().c_str());
        std::fflush(stdout);
      }
    }
  }
  // Each cell over its seeds: the mean, and [min-max] where there are several.
  std::map<std::string, std::map<std::string, Cell>> cells;
  if (o.seeds.size() > 1) std::printf("\nover seeds %s (mean [min-max])\n", JoinSeeds(o.seeds).c_str());
  for (const std::string& run : o.runs) {
    for (const std::string& ratio : o.ratios) {
      const Cell c = Summarise(results[run][ratio], o.targets);
      cells[run][ratio] = c;
      if (o.seeds.size() < 2) continue;
      std::printf("%-13s r=%-5s %7.1f samples/s  t2a R@1 %s at %.0f s", run.c_str(), ratio.c_str(), c.sps,
                  c.r1.Percent().c_str(), o.seconds);
      for (size_t k = 0; k < o.targets.size(); ++k)
        std::printf("  to %.0f%%: %s", 100 * o.targets[k], c.to_target[k].SecondsText().c_str());
      std::printf("\n");
    }
  }
  // worker / each plain run at the same ratio; then each ratio / ratio 0 within a run. A time
  // ratio where the baseline did not reach the target within the budget on some or all seeds is
  // an upper bound ("<0.62"): those seeds count as the budget, less than they would need.
  auto time_ratio = [&](const Range& a, const Range& b, double b_budget) -> std::string {
    char x[16] = "-";
    if (a.reached && b.reached) {
      std::snprintf(x, sizeof(x), "%.2f", a.mean / b.mean);
    } else if (a.reached) {
      const double b_at_least = (b.mean * b.n + (b.of - b.n) * b_budget) / b.of;
      std::snprintf(x, sizeof(x), "<%.2f", a.mean / b_at_least);
    }
    return x;
  };
  auto table = [&](const std::string& title, const std::string& head_a, const std::string& head_b,
                   const std::vector<std::pair<std::string, std::pair<const Cell*, const Cell*>>>& rows) {
    std::printf("\n%s\n%-6s %9s %9s %6s", title.c_str(), "ratio", (head_a + " sps").c_str(), (head_b + " sps").c_str(),
                "x");
    for (double t : o.targets) {
      char a[32], b[32];
      std::snprintf(a, sizeof(a), "%s to %.0f%%", head_a.c_str(), 100 * t);
      std::snprintf(b, sizeof(b), "%s to %.0f%%", head_b.c_str(), 100 * t);
      std::printf(" %15s %15s %6s", a, b, "x");
    }
    std::printf(" %9s %9s\n", (head_a + " R@1").c_str(), (head_b + " R@1").c_str());
    for (const auto& [ratio, pair] : rows) {
      const Cell& a = *pair.first;
      const Cell& b = *pair.second;
      std::printf("%-6s %9.1f %9.1f %6.2f", ratio.c_str(), a.sps, b.sps, a.sps / b.sps);
      for (size_t k = 0; k < o.targets.size(); ++k)
        std::printf(" %15s %15s %6s", a.to_target[k].MeanText().c_str(), b.to_target[k].MeanText().c_str(),
                    time_ratio(a.to_target[k], b.to_target[k], b.trained_seconds).c_str());
      std::printf(" %8.1f%% %8.1f%%\n", 100 * a.r1.mean, 100 * b.r1.mean);
    }
  };
  for (const std::string& base : o.runs) {
    if (base == "worker" || !cells.count("worker")) continue;
    std::vector<std::pair<std::string, std::pair<const Cell*, const Cell*>>> rows;
    for (const std::string& ratio : o.ratios) rows.push_back({ratio, {&cells["worker"][ratio], &cells[base][ratio]}});
    table("worker against " + base, "worker", base, rows);
  }
  for (const std::string& run : o.runs) {
    if (!cells[run].count("0") || o.ratios.size() < 2) continue;
    std::vector<std::pair<std::string, std::pair<const Cell*, const Cell*>>> rows;
    for (const std::string& ratio : o.ratios)
      if (ratio != "0") rows.push_back({ratio, {&cells[run][ratio], &cells[run]["0"]}});
    table(run + ": each ratio against ratio 0", "r", "r=0", rows);
  }
  return 0;
}
