// Sweep definitions: the file a researcher writes, its validation, and its expansion into
// trials. Pure functions over plain, serialisable values; no scheduling and no I/O besides
// ParseSweepFile() reading the file.
//
// The sweep file (INI):
//
//   [sweep]
//   name = mask-ablation      # required; [A-Za-z0-9_.-], at most 64 characters, no leading dot
//   search = grid             # grid (default) | random
//   budget = 0                # random: configurations to draw (>= 1, required);
//                             # grid: 0 = no limit, else refuse a grid of more cells than this
//   seeds = 1, 2, 3           # replicate seeds (default 1): every cell runs once per seed
//   priority = 0              # higher runs first (default 0)
//   base_config = configs/tiny.ini   # the trial config the factors override (kept as text)
//   search_seed = 0           # random search: the draws are a pure function of this (default 0)
//
//   [factor.mask.ratio]       # one section per factor: [factor.<section>.<key>]
//   values = 0, 0.5, 0.75     # the values to try, comma-separated
//
//   [factor.mask.strategy]
//   values = 1d, 2d
//   when = mask.ratio != 0    # applies only when the condition holds (see below)
//
//   [factor.optim.lr]         # random search only: draw from a range instead of values
//   range = 1e-4, 1e-2        # both ends must be valid values of the factor
//   log = true                # log-uniform (needs lo > 0); default false: uniform in [lo, hi)
//   integer = false           # true: integers in [lo, hi], both inclusive
//
//   [asha]                    # optional early stopping (see asha.h)
//   metric = map10            # evaluation metric name
//   mode = max                # max (default) | min
//   rungs = 100, 200, 400     # steps at which trials are compared, increasing
//   reduction = 3             # eta >= 2 (default 3): the top 1/eta continue at each rung
//
//   [report]                  # optional: what the ablation report measures (report.h)
//   target = t2a_r1:0.30      # time (and samples) to reach an evaluation metric's value:
//                             # METRIC:VALUE, VALUE a fraction in (0, 1] or a percentage
//                             # ("t2a_r1:30%"); reached when the metric is >= VALUE
//
// Syntax (config/ini.h, the reader of trial configs too): one "key = value" per line under a
// "[section]" header; blank lines and comments ('#' or ';' at the start of a line, or after
// whitespace) are ignored; keys and sections may not repeat, and a key needs a value. A list is
// comma-separated (so a value cannot contain a comma). An unknown key is named with the closest
// key of its section ("unknown key 'serach'; did you mean search? ([sweep] takes ...)").
//
// Factors. A factor is a trial config key "<section>.<key>" (config/trial_config.h), each word
// of [a-z0-9_] starting with a letter. A name that is no key is refused, naming the closest key
// ("unknown key mask.ratoi in [factor.mask.ratoi]; did you mean mask.ratio?"), and every value
// (and a range's ends) must be a valid value of its key on its own: mask.ratio in [0, 1),
// mask.strategy 1d or 2d, train.batch_size >= 2, and so on for every key (the registry's
// domains). How the values combine with the base config and with each other is checked per
// trial at submission (CheckTrialConfigs). The trial seed is not a factor: [sweep] seeds sets
// it, so [factor.train.seed] is refused, and so is train.trial_id, which the coordinator sets
// for each trial. The keys local to each worker (ConfigKey::local_only: ckpt.root, data.path,
// data.fbank_cache, train.output_dir, train.device, metrics.*) are refused wherever a sweep
// names them: as a factor, in a condition, and in the base config (CheckTrialConfigs), which
// may not set train.trial_id either (its train.seed is replaced by the sweep's seeds). Values of
// one factor may not repeat (numerically: 0.5 and 0.50 are the same value). A key renamed to
// its struct path (ConfigKey::alias: recon.weight is now loss.recon_weight) is refused as a
// factor under its earlier name at submission, naming the current one; a sweep submitted
// before the rename still reads and runs (TrialOverrides sends the current name).
//
// Conditions: "when = F == v", "when = F != v" or "when = F in v1, v2, ...", where F is another
// factor of the sweep; numbers compare numerically, anything else as text. A factor applies
// only where its condition holds, which requires F itself to apply: a condition on a factor
// that does not apply is false. Conditions may chain but not form a cycle, and a condition
// that no listed value of F can satisfy is refused (the factor could never apply).
//
// Expansion. Grid search walks the factors in file order (a factor after the one its condition
// names), trying each value of a factor that applies and skipping a factor that does not, so a
// cell never repeats: ratio {0, 0.5, 0.75} x strategy {1d, 2d} when ratio != 0 x recon {0, 0.5}
// gives (1 + 2 * 2) * 2 = 10 cells, not 12. Random search draws `budget` distinct cells, each
// factor that applies drawn independently (values: uniformly; range: as configured; reals are
// written with 6 significant digits), from a generator seeded by search_seed; a draw that
// repeats an earlier cell is drawn again, and the search gives up after 100 x budget draws, so
// it yields fewer than `budget` cells only when the space holds fewer distinct ones. Each
// cell is then replicated once per seed, in seeds order. Trials are numbered in that order
// (cell-major), with ids "t0000", "t0001", ... (wider past 9999). The same spec always expands
// to the same trials: the generator is our own (SplitMix64), and the only libm calls (log and
// exp, for log-uniform draws) are rounded to 6 digits. A sweep holds at most kMaxTrials trials,
// kMaxFactors factors, and a factor lists at most kMaxFactorValues values (a longer list is
// refused before its values are looked at); validation takes n log n time in the values.
//
// Thread-safety: values and pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/asha.h"

namespace flap::coordinator {

inline constexpr int kMaxTrials = 10000;
inline constexpr int kMaxFactorValues = 1000;  // values listed by one factor
inline constexpr int kMaxFactors = 64;         // factors of one sweep

enum class SearchKind { kGrid, kRandom };
const char* SearchKindName(SearchKind kind);  // "grid" / "random"

// A factor's condition: it applies only when `factor` applies and its value matches.
struct Condition {
  enum class Op { kEq, kNe, kIn };
  std::string factor;
  Op op = Op::kEq;
  std::vector<std::string> values;  // one for kEq and kNe

  // Whether it holds for `applied` (the factors that apply, with their values); false when
  // `factor` is not among them.
  bool Holds(const std::map<std::string, std::string>& applied) const;
  // Whether it holds when `factor` has `value`.
  bool HoldsFor(const std::string& value) const;
  // As written in a sweep file: "mask.ratio != 0", "text.augment in on, 0.5".
  std::string ToString() const;
};

// Parses "F == v", "F != v" or "F in v1, v2". InvalidArgument saying what is wrong.
StatusOr<Condition> ParseCondition(const std::string& text);

// [report] target: the report's time-to-target is the training time at which `metric` first
// reaches `value` (report.h).
struct ReportTarget {
  std::string metric;            // an evaluation metric: t2a_r1, map10, ...
  double value = 0;              // in (0, 1]
  std::string ToString() const;  // "t2a_r1:0.3", as ParseReportTarget reads it
};

// Parses "METRIC:VALUE" (VALUE a fraction in (0, 1], or a percentage "30%"). InvalidArgument
// saying what is wrong.
StatusOr<ReportTarget> ParseReportTarget(const std::string& text);

struct FactorSpec {
  std::string name;                 // "mask.ratio"
  std::vector<std::string> values;  // the values to try (or, in random search, to draw from)
  bool has_range = false;           // random search: draw from [lo, hi] instead of values
  double lo = 0;
  double hi = 0;
  bool log = false;      // log-uniform draw
  bool integer = false;  // integer draw, both ends inclusive
  std::optional<Condition> when;
};

struct SweepSpec {
  std::string name;
  SearchKind search = SearchKind::kGrid;
  int64_t budget = 0;
  std::vector<uint64_t> seeds = {1};
  int priority = 0;
  std::string base_config;
  uint64_t search_seed = 0;
  std::vector<FactorSpec> factors;            // in file order
  std::optional<AshaConfig> asha;             // no early stopping when absent
  std::optional<ReportTarget> report_target;  // [report] target; absent: the report's default
};

// One trial to run: the base config, overridden by `factors`, with train.seed = `seed`.
struct TrialSpec {
  std::string id;                              // "t0007", unique within its sweep
  std::map<std::string, std::string> factors;  // the factors that apply, by name
  uint64_t seed = 0;                           // replicate seed
  int cell = 0;                                // index of its cell (the factors without seed)

  bool operator==(const TrialSpec& o) const {
    return id == o.id && factors == o.factors && seed == o.seed && cell == o.cell;
  }
};

// Parses and validates a sweep file's text. `source` names it in errors (e.g. the path). On
// failure, InvalidArgument whose message is a summary line ("<source>: N errors in the sweep:")
// then EVERY error found, one per line in file order, each as
// "  <source>:<line>: [<section>] <key>: <what is wrong>" (errors of the whole file, such as a
// missing [sweep] section, have no line and come last).
StatusOr<SweepSpec> ParseSweepText(const std::string& text, const std::string& source);
// Reads and parses the file at `path`. NotFound if it does not exist, IOError if it cannot be
// read; else as ParseSweepText.
StatusOr<SweepSpec> ParseSweepFile(const std::string& path);

// The keys a trial config's text sets, as "<section>.<key>" -> value ("mask.ratio" -> "0.75"),
// read by the trial configuration's parser (config/trial_config.h); empty when the text does not
// parse (a stored base config whose keys have changed since).
std::map<std::string, std::string> ConfigValues(const std::string& text);

// What the coordinator sets for a trial over the sweep's base config (a worker's
// Assignment::overrides): its factor values (by their keys' current names, an alias resolved),
// train.seed (the trial's seed) and train.trial_id ("<sweep>-<trial>", which names its
// checkpoints).
std::map<std::string, std::string> TrialOverrides(const std::string& sweep_id, const TrialSpec& trial);

// The config values of a trial, but the keys local to a worker: the base config's keys (its
// text, parsed by the trial configuration's parser; `source` names it in errors), then
// TrialOverrides, which win. InvalidArgument when the base config does not parse.
StatusOr<std::map<std::string, std::string>> TrialConfigValues(const std::string& base_config,
                                                               const std::string& source, const std::string& sweep_id,
                                                               const TrialSpec& trial);

// The value a trial's sweep gives the config key `key` (its current name): the trial's factor,
// else the base config's (`base_values`: ConfigValues of its text, which holds current names);
// nullopt when neither sets it. A factor of a sweep stored before its key was renamed is named
// by the key's alias (config/trial_config.h, CanonicalConfigKey) and is found too.
std::optional<std::string> TrialSweepValue(const std::map<std::string, std::string>& base_values,
                                           const TrialSpec& trial, const std::string& key);

// The global batch a trial fixes (config/trial_config.h, train.global_batch): its factor's value,
// else the base config's (`base_values`: ConfigValues of its text); 0 when neither sets one (the
// batch is then train.batch_size per rank, and any group takes the trial). The coordinator hands
// a trial with a global batch only to groups whose size divides it.
int64_t TrialGlobalBatch(const std::map<std::string, std::string>& base_values, const TrialSpec& trial);

// The unit of ASHA's rungs when the sweep file does not name one: flops when the base config or
// a factor sets train.max_flops (a FLOPs-budgeted sweep compares its arms at equal compute),
// else steps. Nothing without [asha] or with a unit.
void ResolveAshaUnit(SweepSpec* spec, const std::string& base_config);

// Checks a sweep's trials against its base config (the text of a trial config file; may be
// empty) with the trial configuration's rules (config/trial_config.h), so that no trial of a
// submitted sweep fails on its configuration: the base config parses (every key known, an
// unknown one named with the closest known key; every value well-formed; no key local to each
// worker, nor train.trial_id: SweepKeyProblem in sweep_internal.h), and each trial's
// config (TrialConfigValues: the base config, then its factor values, seed and trial id)
// validates, which checks the keys against each other (mask.views > 1 needs mask.ratio > 0).
// `trials` are ExpandSweep(spec)'s. On failure, InvalidArgument whose message is a summary line
// ("<source>: N errors in the sweep:") then each distinct error, one per line, naming the
// first trial that shows it and how many more do.
Status CheckTrialConfigs(const SweepSpec& spec, const std::vector<TrialSpec>& trials, const std::string& base_config,
                         const std::string& source);

// Checks a spec built any other way (code, storage) with the same rules as the parser, listing
// every error as "<source>: [<section>] <key>: <what is wrong>". OK or InvalidArgument.
Status ValidateSweep(const SweepSpec& spec, const std::string& source);

// Checks one value of a factor (its key's domain, see above). OK or InvalidArgument.
Status ValidateFactorValue(const std::string& factor, const std::string& value);

// The trials of a sweep (see "Expansion" above). InvalidArgument when the spec does not
// validate.
StatusOr<std::vector<TrialSpec>> ExpandSweep(const SweepSpec& spec);

// The id of trial number `index`: "t0007".
std::string TrialId(int index);

}  // namespace flap::coordinator
