// Implementation of flapctl/augment_commands.h.
#include "flapctl/augment_commands.h"

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>

#include "common/file_util.h"
#include "sharding/augment.h"

namespace flap::flapctl {
namespace po = boost::program_options;

namespace {

constexpr char kCommand[] = "flapctl data augment";

int Usage(const std::string& message) {
  std::cerr << kCommand << ": " << message << "\nRun '" << kCommand << " --help' for usage.\n";
  return kExitUsage;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

}  // namespace

int RunDataAugment(const std::vector<std::string>& args) {
  sharding::AugmentOptions options;
  sharding::ChatOptions chat;
  sharding::ReplyBounds bounds;
  std::string data, prompt_file, on_error = "skip";
  std::vector<std::string> splits;
  po::options_description visible(
      "Usage: flapctl data augment --data DIR [--endpoint URL --model NAME] [options]\n\n"
      "Rewrites every caption of the chosen splits together with the clip's sound-event tags\n"
      "into a richer caption, which training draws with text.augment = on or a probability.\n"
      "Without --endpoint, an offline template augmenter (no model needed). With --endpoint,\n"
      "any OpenAI-compatible chat-completions server (llama.cpp's server, vLLM, Ollama).\n"
      "The URL, model and key may also come from FLAP_AUGMENT_URL, FLAP_AUGMENT_MODEL and\n"
      "FLAP_AUGMENT_API_KEY (or OPENAI_API_KEY).\n\n"
      "Output: text_augment.jsonl in the dataset folder (merged by the loader), the manifest's\n"
      "\"augment\" section (method, endpoint, model, prompt hash, counts) and\n"
      "augment-report.json (every caption left without a rewrite, with its reason). Replies\n"
      "are validated; a failing one is retried with backoff, then reported, never written.\n"
      "Accepted rewrites are cached in RocksDB: a rerun, or a run after a kill, only asks for\n"
      "what is missing.\n\n"
      "Example:\n"
      "  flapctl data augment --data data/clotho \\\n"
      "    --endpoint http://127.0.0.1:8080/v1/chat/completions --model llama-3-8b-instruct\n\n"
      "Options");
  visible.add_options()("help,h", "show this help")("data", po::value<std::string>(&data)->required(),
                                                    "dataset folder (required)")(
      "split", po::value<std::vector<std::string>>(&splits)->composing(),
      "split to augment (repeatable; default train)")("endpoint", po::value<std::string>(&chat.url),
                                                      "chat-completions URL; none: offline templates")(
      "model", po::value<std::string>(&chat.model), "model name sent to the endpoint")(
      "api-key-env", po::value<std::string>()->default_value("FLAP_AUGMENT_API_KEY"),
      "environment variable holding the API key (OPENAI_API_KEY is tried after it)")(
      "prompt",
      po::value<std::string>(&prompt_file)->default_value(std::string(FLAP_CONFIG_DIR) + "/augment_prompt.txt"),
      "prompt template file; {caption} and {tags} are filled in")(
      "tags", po::value<std::string>(&options.tags_file),
      "tags file (JSON lines {key, tags}, e.g. from flap-worker tag); "
      "default: the samples' own tags")("cache", po::value<std::string>(&options.cache_dir),
                                        "RocksDB cache folder (default DIR/augment-cache)")(
      "concurrency", po::value<int>(&options.concurrency)->default_value(options.concurrency), "requests in flight")(
      "timeout", po::value<double>(&chat.timeout_s)->default_value(chat.timeout_s), "seconds per request")(
      "attempts", po::value<int>(&options.max_attempts)->default_value(options.max_attempts), "tries per caption")(
      "backoff", po::value<double>(&options.backoff_s)->default_value(options.backoff_s),
      "seconds before the first retry; doubles each retry")(
      "min-chars", po::value<size_t>(&bounds.min_chars)->default_value(bounds.min_chars), "shortest accepted reply")(
      "max-chars", po::value<size_t>(&bounds.max_chars)->default_value(bounds.max_chars), "longest accepted reply")(
      "on-error", po::value<std::string>(&on_error)->default_value(on_error),
      "skip: report captions that failed and go on; fail: write nothing if any failed (exit 1)");
  po::variables_map vm;
  if (!ParseArgs("data augment", args, visible, {}, {}, &vm)) return kExitUsage;
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return kExitOk;
  }
  if (on_error != "skip" && on_error != "fail") return Usage("--on-error must be skip or fail");
  options.fail_on_error = on_error == "fail";
  if (!splits.empty()) options.splits = splits;
  if (chat.url.empty()) chat.url = Env("FLAP_AUGMENT_URL");
  if (chat.model.empty()) chat.model = Env("FLAP_AUGMENT_MODEL");
  chat.api_key = Env(vm["api-key-env"].as<std::string>().c_str());
  if (chat.api_key.empty()) chat.api_key = Env("OPENAI_API_KEY");

  std::unique_ptr<sharding::Augmenter> augmenter;
  if (chat.url.empty()) {
    augmenter = sharding::MakeTemplateAugmenter();
  } else {
    if (chat.model.empty()) return Usage("--endpoint needs --model (or FLAP_AUGMENT_MODEL)");
    auto prompt = ReadFileToString(prompt_file);
    if (!prompt.ok()) return Usage("prompt template: " + prompt.status().message());
    auto made = sharding::MakeChatAugmenter(chat, *prompt, bounds);
    if (!made.ok()) return Usage(made.status().message());
    augmenter = std::move(*made);
  }
  const auto start = std::chrono::steady_clock::now();
  auto report = sharding::RunAugmentation(data, *augmenter, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!report.ok()) {
    std::cerr << kCommand << ": " << report.status().ToString() << "\n";
    return kExitFailure;
  }
  std::cout << "augmented " << report->augmented << " of " << report->captions << " captions of " << report->clips
            << " clips (" << augmenter->Describe().value("method", "?") << ") in " << std::fixed << std::setprecision(1)
            << seconds << " s: " << report->from_cache << " from the cache, " << report->requests << " requests, "
            << report->retries << " retries";
  if (!report->failures.empty()) {
    std::cout << "; " << report->failures.size() << " failed:";
    std::map<std::string, int> by_reason;
    for (const auto& f : report->failures) ++by_reason[f.reason];
    for (const auto& [reason, n] : by_reason) std::cout << " " << reason << " " << n;
    std::cout << " (every caption in " << data << "/augment-report.json)";
  }
  std::cout << "\n";
  return kExitOk;
}

Command DataAugmentCommand() {
  return Command{"augment", "rewrite captions with each clip's sound events (templates or a chat model)",
                 RunDataAugment};
}

}  // namespace flap::flapctl
