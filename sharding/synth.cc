// Implementation of sharding/synth.h. A clip is first planned (events, timing, captions: cheap)
// and then rendered (audio). Randomness comes from a SplitMix64 stream per clip and per event,
// with our own uniform / normal conversions, so nothing depends on the standard library's
// distribution implementations.
#include "sharding/synth.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>
#include <thread>

#include "common/file_util.h"
#include "sharding/manifest.h"
#include "sharding/shard_writer.h"
#include "sharding/tokenizer.h"

namespace flap::sharding {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kMinClipSeconds = 0.5;
constexpr double kMaxClipSeconds = 60.0;
constexpr double kFadeSeconds = 0.01;
constexpr int kSynthVersion = 2;  // bump when the generated content changes (2: splits val and test)

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t s = a ^ (b * 0xd1342543de82ef95ULL + 0x2545f4914f6cdd1dULL);
  return SplitMix64(&s);
}

uint64_t HashString(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return SplitMix64(&state_); }
  double Uniform() { return static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0); }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  int Below(int n) { return static_cast<int>(Next() % static_cast<uint64_t>(n)); }
  bool Chance(double p) { return Uniform() < p; }
  // Approximately standard normal: the sum of four uniforms (Irwin-Hall), scaled to unit
  // variance. Plenty for noise, and far cheaper than Box-Muller's log/sin/cos.
  double Normal() {
    const uint64_t a = Next();
    const uint64_t b = Next();
    constexpr double kScale = 1.0 / 4294967296.0;
    const double sum = static_cast<double>(a & 0xffffffffu) * kScale + static_cast<double>(a >> 32) * kScale +
                       static_cast<double>(b & 0xffffffffu) * kScale + static_cast<double>(b >> 32) * kScale;
    return (sum - 2.0) * 1.7320508075688772;  // sqrt(12 / 4)
  }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(Below(static_cast<int>(v.size())))];
  }

 private:
  uint64_t state_;
};

// ---- Vocabulary: how captions name each event. ----

struct NounPhrase {
  const char* text;
  bool countable;  // takes "a"/"an"
};

struct EventWords {
  const char* tag;
  std::vector<NounPhrase> plain;  // for original captions
  const char* rich;               // for augmented captions (countable)
};

const std::vector<EventWords>& Vocabulary() {
  static const std::vector<EventWords>* words = new std::vector<EventWords>{
      {"tone_low",
       {{"low tone", true}, {"low-pitched hum", true}, {"deep tone", true}, {"low hum", true}},
       "low-pitched steady hum"},
      {"tone_mid",
       {{"mid-pitched tone", true}, {"medium tone", true}, {"steady beep", true}, {"tone of medium pitch", true}},
       "steady medium-pitched beep"},
      {"tone_high",
       {{"high tone", true}, {"high-pitched whistle", true}, {"shrill beep", true}, {"high-pitched tone", true}},
       "shrill high-pitched whistle"},
      {"chirp_up",
       {{"rising chirp", true}, {"upward sweep", true}, {"tone rising in pitch", true}, {"rising whistle", true}},
       "chirp that sweeps upward in pitch"},
      {"chirp_down",
       {{"falling chirp", true}, {"downward sweep", true}, {"tone falling in pitch", true}, {"falling whistle", true}},
       "chirp that sweeps downward in pitch"},
      {"noise_white",
       {{"white noise", false}, {"burst of white noise", true}, {"hiss", true}, {"static", false}},
       "burst of hissing white noise"},
      {"noise_pink",
       {{"pink noise", false}, {"burst of pink noise", true}, {"rushing noise", true}, {"whooshing sound", true}},
       "burst of rushing pink noise"},
      {"noise_brown",
       {{"brown noise", false}, {"deep rumble", true}, {"rumbling noise", true}, {"rumble", true}},
       "deep rumbling burst of brown noise"},
      {"clicks",
       {{"series of clicks", true}, {"clicking", false}, {"ticking sound", true}, {"train of clicks", true}},
       "rapid series of sharp clicks"},
      {"tremolo",
       {{"warbling tone", true}, {"pulsing tone", true}, {"tremolo tone", true}, {"wavering tone", true}},
       "warbling tone that pulses in volume"},
      {"chord",
       {{"chord", true}, {"musical chord", true}, {"few notes played together", true}, {"harmonious chord", true}},
       "sustained musical chord"},
  };
  return *words;
}

std::string Article(const std::string& next_word) {
  char c = next_word.empty() ? 'x' : next_word[0];
  return (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u') ? "an" : "a";
}

std::string Capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  size_t pos = s.find(from);
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

// Original-caption templates by number of events; {A}, {B}, {C} are the events in order.
const std::vector<std::vector<std::string>>& CaptionTemplates() {
  static const auto* templates = new std::vector<std::vector<std::string>>{
      {"{A}", "{A} is heard", "the sound of {A}", "there is {A}", "{A} plays", "you can hear {A}"},
      {"{A} followed by {B}", "{B} comes after {A}", "first {A}, then {B}", "{A} and then {B}",
       "{A}, after which {B} plays", "{B} following {A}"},
      {"{A}, then {B}, then {C}", "{A} followed by {B} and then {C}", "first {A}, next {B}, and finally {C}",
       "{A}, {B} and {C} one after another", "{A} and then {B}, followed by {C}"},
  };
  return *templates;
}

// ---- Plans ----

struct EventPlan {
  SoundEvent type;
  bool loud = false;
  bool twice = false;
  double start = 0.0;   // seconds
  double length = 0.0;  // seconds, both repetitions and the gap when twice
  double gain = 0.0;
  uint64_t seed = 0;  // the event's own randomness (pitch, noise)
};

struct ClipPlan {
  std::vector<EventPlan> events;
  double background_rms = 0.0;
  uint64_t background_seed = 0;
  std::vector<std::string> captions;
  std::string augment;
  std::vector<std::string> tags;
};

std::string PlainPhrase(const EventPlan& e, bool mention_loudness, Rng& rng) {
  const EventWords& w = Vocabulary()[static_cast<size_t>(e.type)];
  const NounPhrase& np = rng.Pick(w.plain);
  std::string body = np.text;
  if (mention_loudness) {
    static const std::vector<std::string> loud = {"loud"};
    static const std::vector<std::string> quiet = {"quiet", "faint"};
    body = (e.loud ? rng.Pick(loud) : rng.Pick(quiet)) + " " + body;
  }
  std::string out = np.countable ? Article(body) + " " + body : body;
  if (e.twice) {
    static const std::vector<std::string> twice = {" twice", " repeated twice", " two times"};
    out += rng.Pick(twice);
  }
  return out;
}

std::string RichPhrase(const EventPlan& e, Rng& rng) {
  const EventWords& w = Vocabulary()[static_cast<size_t>(e.type)];
  static const std::vector<std::string> quiet = {"quiet", "soft", "faint"};
  std::string adjective = e.loud ? "loud" : rng.Pick(quiet);
  std::string out = Article(adjective) + " " + adjective + " " + w.rich;
  if (e.twice) out += rng.Chance(0.5) ? " repeated twice" : " that occurs twice";
  return out;
}

std::string AugmentedCaption(const ClipPlan& plan, Rng& rng) {
  std::vector<std::string> p;
  for (const EventPlan& e : plan.events) p.push_back(RichPhrase(e, rng));
  std::string s;
  switch (p.size()) {
    case 1:
      s = rng.Chance(0.5) ? p[0] + " is heard" : p[0] + " sounds on its own";
      break;
    case 2:
      s = rng.Chance(0.5) ? p[0] + " is followed by " + p[1] : p[0] + " plays first, and then " + p[1] + " follows";
      break;
    default:
      s = rng.Chance(0.5) ? p[0] + " is followed by " + p[1] + ", and finally " + p[2]
                          : "first " + p[0] + " plays, then " + p[1] + ", and finally " + p[2];
      break;
  }
  if (rng.Chance(0.3)) s += " against a faint background hiss";
  return Capitalize(s) + ".";
}

double ClampClip(double clip_seconds) {
  if (!(clip_seconds >= kMinClipSeconds)) return kMinClipSeconds;  // NaN too
  return std::min(clip_seconds, kMaxClipSeconds);
}

ClipPlan PlanClip(uint64_t seed, const std::string& split, int64_t index, double clip_seconds) {
  Rng rng(Mix(Mix(seed, HashString(split)), static_cast<uint64_t>(index)));
  ClipPlan plan;
  const double clip = ClampClip(clip_seconds);

  double u = rng.Uniform();
  int n = u < 0.2 ? 1 : (u < 0.65 ? 2 : 3);
  n = std::max(1, std::min(n, static_cast<int>(clip / 0.45)));

  const double lead = clip * rng.Uniform(0.03, 0.1);
  const double tail = clip * rng.Uniform(0.03, 0.08);
  const double slot = (clip - lead - tail) / n;
  int previous = -1;
  for (int i = 0; i < n; ++i) {
    EventPlan e;
    int type = rng.Below(kNumSoundEvents);
    if (type == previous) type = (type + 1 + rng.Below(kNumSoundEvents - 1)) % kNumSoundEvents;
    previous = type;
    e.type = static_cast<SoundEvent>(type);
    e.loud = rng.Chance(0.5);
    e.twice = slot >= 0.5 && rng.Chance(0.2);
    e.length = slot * rng.Uniform(0.75, 0.9);
    e.start = lead + slot * i + (slot - e.length) * rng.Uniform(0.2, 0.8);
    e.gain = (e.loud ? 0.45 : 0.08) * rng.Uniform(0.85, 1.15);
    e.seed = rng.Next();
    plan.events.push_back(e);
  }
  plan.background_rms = rng.Uniform(0.002, 0.006);
  plan.background_seed = rng.Next();

  // Original captions: 2 or 3 different phrasings of the same content.
  const auto& templates = CaptionTemplates()[static_cast<size_t>(n - 1)];
  const int num_captions = rng.Chance(0.5) ? 2 : 3;
  std::vector<size_t> order(templates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (size_t i = order.size() - 1; i > 0; --i) {  // Fisher-Yates with our Rng
    std::swap(order[i], order[static_cast<size_t>(rng.Below(static_cast<int>(i + 1)))]);
  }
  static const char* const kSlots[] = {"{A}", "{B}", "{C}"};
  for (int c = 0; c < num_captions; ++c) {
    std::string text = templates[order[static_cast<size_t>(c)]];
    for (int i = 0; i < n; ++i) {
      text = Replace(text, kSlots[i], PlainPhrase(plan.events[static_cast<size_t>(i)], rng.Chance(0.4), rng));
    }
    plan.captions.push_back(text);
  }
  plan.augment = AugmentedCaption(plan, rng);
  for (const EventPlan& e : plan.events) {
    std::string tag = SoundEventTag(e.type);
    if (std::find(plan.tags.begin(), plan.tags.end(), tag) == plan.tags.end()) {
      plan.tags.push_back(tag);
    }
  }
  return plan;
}

// ---- Rendering ----

// Sets the RMS of `x` to `rms` (no-op for silence).
void NormalizeRms(std::vector<double>* x, double rms) {
  double sum = 0.0;
  for (double v : *x) sum += v * v;
  if (sum <= 0.0) return;
  double scale = rms / std::sqrt(sum / static_cast<double>(x->size()));
  for (double& v : *x) v *= scale;
}

// The raw signal of one event occurrence, peak around 1 (noise: RMS 0.35), no envelope.
std::vector<double> RenderRaw(SoundEvent type, size_t n, Rng& rng) {
  const double fs = kSampleRate;
  std::vector<double> x(n, 0.0);
  auto sine = [&](double f, double amp, double phase0) {
    for (size_t i = 0; i < n; ++i) x[i] += amp * std::sin(2.0 * kPi * f * i / fs + phase0);
  };
  auto sweep = [&](double f0, double f1) {
    double phase = rng.Uniform(0.0, 2.0 * kPi);
    const double log_ratio = std::log(f1 / f0);
    for (size_t i = 0; i < n; ++i) {
      double f = f0 * std::exp(log_ratio * static_cast<double>(i) / static_cast<double>(n));
      x[i] = std::sin(phase);
      phase += 2.0 * kPi * f / fs;
    }
  };
  switch (type) {
    case SoundEvent::kToneLow:
      sine(rng.Uniform(200.0, 300.0), 1.0, rng.Uniform(0, 2 * kPi));
      break;
    case SoundEvent::kToneMid:
      sine(rng.Uniform(700.0, 1000.0), 1.0, rng.Uniform(0, 2 * kPi));
      break;
    case SoundEvent::kToneHigh:
      sine(rng.Uniform(2500.0, 4000.0), 1.0, rng.Uniform(0, 2 * kPi));
      break;
    case SoundEvent::kChirpUp:
      sweep(rng.Uniform(250.0, 400.0), rng.Uniform(2500.0, 3500.0));
      break;
    case SoundEvent::kChirpDown:
      sweep(rng.Uniform(2500.0, 3500.0), rng.Uniform(250.0, 400.0));
      break;
    case SoundEvent::kNoiseWhite:
      for (double& v : x) v = rng.Normal();
      NormalizeRms(&x, 0.35);
      break;
    case SoundEvent::kNoisePink: {
      // Paul Kellet's refined pink filter.
      double b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0, b6 = 0;
      for (double& v : x) {
        double w = rng.Normal();
        b0 = 0.99886 * b0 + w * 0.0555179;
        b1 = 0.99332 * b1 + w * 0.0750759;
        b2 = 0.96900 * b2 + w * 0.1538520;
        b3 = 0.86650 * b3 + w * 0.3104856;
        b4 = 0.55000 * b4 + w * 0.5329522;
        b5 = -0.7616 * b5 - w * 0.0168980;
        v = b0 + b1 + b2 + b3 + b4 + b5 + b6 + w * 0.5362;
        b6 = w * 0.115926;
      }
      NormalizeRms(&x, 0.35);
      break;
    }
    case SoundEvent::kNoiseBrown: {
      double b = 0.0;
      for (double& v : x) {
        b = 0.996 * b + 0.1 * rng.Normal();
        v = b;
      }
      double mean = 0.0;
      for (double v : x) mean += v;
      mean /= static_cast<double>(n);
      for (double& v : x) v -= mean;
      NormalizeRms(&x, 0.35);
      break;
    }
    case SoundEvent::kClicks: {
      const double period = fs / rng.Uniform(8.0, 14.0);
      const size_t click_len = static_cast<size_t>(0.004 * fs);
      for (double t = rng.Uniform(0.0, period); t < static_cast<double>(n); t += period * rng.Uniform(0.95, 1.05)) {
        size_t at = static_cast<size_t>(t);
        for (size_t k = 0; k < click_len && at + k < n; ++k) {
          x[at + k] += rng.Normal() * 0.8 * std::exp(-static_cast<double>(k) / (0.0008 * fs));
        }
      }
      break;
    }
    case SoundEvent::kTremolo: {
      const double f = rng.Uniform(450.0, 600.0);
      const double fm = rng.Uniform(5.0, 8.0);
      const double phase_m = rng.Uniform(0.0, 2.0 * kPi);
      for (size_t i = 0; i < n; ++i) {
        double t = static_cast<double>(i) / fs;
        double am = 0.5 * (1.0 + std::sin(2.0 * kPi * fm * t + phase_m));
        x[i] = am * std::sin(2.0 * kPi * f * t);
      }
      break;
    }
    case SoundEvent::kChord: {
      const double root = rng.Uniform(300.0, 420.0);
      for (double ratio : {1.0, 1.259921, 1.498307}) sine(root * ratio, 0.5, rng.Uniform(0, 2 * kPi));
      break;
    }
  }
  return x;
}

// Adds `raw` * gain with raised-cosine fades into `out` from sample `at`.
void MixIn(const std::vector<double>& raw, double gain, size_t at, std::vector<double>* out) {
  const size_t n = raw.size();
  const size_t fade = std::min(static_cast<size_t>(kFadeSeconds * kSampleRate), n / 2);
  for (size_t i = 0; i < n && at + i < out->size(); ++i) {
    double env = 1.0;
    if (i < fade) env = 0.5 - 0.5 * std::cos(kPi * static_cast<double>(i) / fade);
    if (n - 1 - i < fade) env = std::min(env, 0.5 - 0.5 * std::cos(kPi * static_cast<double>(n - 1 - i) / fade));
    (*out)[at + i] += gain * env * raw[i];
  }
}

std::vector<float> ToFloat(const std::vector<double>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = static_cast<float>(std::clamp(x[i], -0.99, 0.99));
  }
  return out;
}

std::vector<float> RenderClip(const ClipPlan& plan, double clip_seconds) {
  const size_t n = static_cast<size_t>(std::llround(ClampClip(clip_seconds) * kSampleRate));
  std::vector<double> mix(n, 0.0);
  Rng background(plan.background_seed);
  for (double& v : mix) v = plan.background_rms * background.Normal();
  for (const EventPlan& e : plan.events) {
    Rng rng(e.seed);
    const size_t start = static_cast<size_t>(e.start * kSampleRate);
    const size_t length = static_cast<size_t>(e.length * kSampleRate);
    if (!e.twice) {
      MixIn(RenderRaw(e.type, length, rng), e.gain, start, &mix);
    } else {
      // Two bursts with a gap: 42% + 16% + 42% of the event's span.
      const size_t burst = static_cast<size_t>(length * 0.42);
      const size_t second = start + length - burst;
      MixIn(RenderRaw(e.type, burst, rng), e.gain, start, &mix);
      MixIn(RenderRaw(e.type, burst, rng), e.gain, second, &mix);
    }
  }
  return ToFloat(mix);
}

std::string ShardName(const std::string& split, int shard) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s-%06d.tar", split.c_str(), shard);
  return buf;
}

struct ShardJob {
  std::string split;
  int shard = 0;
  int64_t first = 0;
  int64_t count = 0;
  Status status;
  ShardInfo info;
};

void RunShardJob(const SynthOptions& options, const std::string& out_dir, ShardJob* job) {
  const std::string path = JoinPath(out_dir, ShardName(job->split, job->shard));
  auto writer = ShardWriter::Create(path, AudioFormat::kFlac);
  if (!writer.ok()) {
    job->status = writer.status();
    return;
  }
  for (int64_t i = job->first; i < job->first + job->count; ++i) {
    Status s = writer.value()->Add(SynthesizeSample(options.seed, job->split, i, options.clip_seconds));
    if (!s.ok()) {
      job->status = s;
      return;
    }
  }
  job->status = writer.value()->Close();
  if (!job->status.ok()) return;
  auto info = DescribeShard(path, job->split, job->count);
  if (!info.ok()) {
    job->status = info.status();
    return;
  }
  job->info = std::move(info).value();
}

}  // namespace

const char* SoundEventTag(SoundEvent event) { return Vocabulary()[static_cast<size_t>(event)].tag; }

Sample SynthesizeSample(uint64_t seed, const std::string& split, int64_t index, double clip_seconds) {
  ClipPlan plan = PlanClip(seed, split, index, clip_seconds);
  Sample sample;
  char key[32];
  std::snprintf(key, sizeof(key), "-%08lld", static_cast<long long>(index));
  sample.key = split + key;
  sample.audio = RenderClip(plan, clip_seconds);
  sample.captions = std::move(plan.captions);
  sample.captions_augment = {std::move(plan.augment)};
  sample.tags = std::move(plan.tags);
  return sample;
}

std::vector<float> SynthesizeEvent(SoundEvent event, uint64_t seed, double seconds) {
  const size_t n = static_cast<size_t>(std::llround(std::max(seconds, 0.0) * kSampleRate));
  std::vector<double> mix(n, 0.0);
  Rng rng(Mix(seed, 0x5eed0e7e47ULL + static_cast<uint64_t>(event)));
  MixIn(RenderRaw(event, n, rng), 0.45, 0, &mix);
  return ToFloat(mix);
}

SynthOptions SmallSynth(int num_train, int num_held_out, double clip_seconds, int samples_per_shard, int vocab_size) {
  SynthOptions o;
  o.num_train = num_train;
  o.num_val = num_held_out;
  o.num_test = num_held_out;
  o.clip_seconds = clip_seconds;
  o.samples_per_shard = samples_per_shard;
  o.vocab_size = vocab_size;
  return o;
}

Status GenerateSynthetic(const SynthOptions& options, const std::string& out_dir) {
  if (options.num_train < 1) return Status::InvalidArgument("synth: num_train must be at least 1");
  if (options.num_val < 0) return Status::InvalidArgument("synth: num_val must not be negative");
  if (options.num_test < 0) return Status::InvalidArgument("synth: num_test must not be negative");
  if (!(options.clip_seconds >= kMinClipSeconds && options.clip_seconds <= kMaxClipSeconds)) {
    return Status::InvalidArgument("synth: clip_seconds must lie in [0.5, 60]");
  }
  if (options.samples_per_shard < 1) {
    return Status::InvalidArgument("synth: samples_per_shard must be at least 1");
  }
  if (options.vocab_size < 8) return Status::InvalidArgument("synth: vocab_size must be at least 8");
  if (options.name.empty()) return Status::InvalidArgument("synth: the dataset name is empty");
  FLAP_RETURN_IF_ERROR(MakeDirs(out_dir));

  std::vector<ShardJob> jobs;
  for (const auto& [split, count] : {std::pair<std::string, int>{kTrainSplit, options.num_train},
                                     std::pair<std::string, int>{kValSplit, options.num_val},
                                     std::pair<std::string, int>{kTestSplit, options.num_test}}) {
    for (int64_t first = 0, shard = 0; first < count; first += options.samples_per_shard, ++shard) {
      ShardJob job;
      job.split = split;
      job.shard = static_cast<int>(shard);
      job.first = first;
      job.count = std::min<int64_t>(options.samples_per_shard, count - first);
      jobs.push_back(std::move(job));
    }
  }
  // Shards are independent, so workers take them in any order; results land in job order.
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t i = next++; i < jobs.size(); i = next++) RunShardJob(options, out_dir, &jobs[i]);
  };
  const size_t num_threads =
      std::max<size_t>(1, std::min<size_t>({jobs.size(), std::thread::hardware_concurrency(), 8}));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();

  Manifest manifest;
  manifest.name = options.name;
  for (const ShardJob& job : jobs) {
    if (!job.status.ok()) return job.status;
    manifest.shards.push_back(job.info);
  }

  std::vector<std::string> texts;
  for (int64_t i = 0; i < options.num_train; ++i) {
    ClipPlan plan = PlanClip(options.seed, "train", i, options.clip_seconds);
    for (std::string& c : plan.captions) texts.push_back(std::move(c));
    texts.push_back(std::move(plan.augment));
  }
  FLAP_RETURN_IF_ERROR(TrainTokenizer(texts, JoinPath(out_dir, manifest.tokenizer), options.vocab_size));

  manifest.provenance = {
      {"generator", "flap synthetic"},
      {"generator_version", kSynthVersion},
      {"seed", options.seed},
      {"num_train", options.num_train},
      {"num_val", options.num_val},
      {"num_test", options.num_test},
      {"clip_seconds", options.clip_seconds},
      {"samples_per_shard", options.samples_per_shard},
      {"vocab_size", options.vocab_size},
  };
  return WriteManifest(out_dir, manifest);
}

}  // namespace flap::sharding
