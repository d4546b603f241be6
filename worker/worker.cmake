# The worker library (shard features, dataset, batcher, streaming loader, evaluator,
# checkpointer, trainer) and flap-worker. The trial configuration is config/'s (flap::config).
add_library(flap_worker shard_features.cc dataset.cc batcher.cc loader.cc evaluator.cc tagger.cc checkpointer.cc stop_signal.cc trainer.cc trainer_group.cc
  safetensors.cc warm_start.cc thread_budget.cc npy.cc export.cc inference.cc inference_commands.cc)
add_library(flap::worker ALIAS flap_worker)
target_link_libraries(flap_worker
  PUBLIC flap::config flap::core flap::features flap::sharding flap::text_tokenizer flap::checkpoint flap::metrics nlohmann_json::nlohmann_json
  PRIVATE PkgConfig::XXHASH PkgConfig::PNG Threads::Threads)
# The code version an export's card records: the commit, "-dirty" with uncommitted changes
# (read when CMake runs; a commit or checkout makes it run again).
set(FLAP_CODE_VERSION unknown)
if(EXISTS ${PROJECT_SOURCE_DIR}/.git)
  execute_process(COMMAND git -C ${PROJECT_SOURCE_DIR} rev-parse --short=12 HEAD
    OUTPUT_VARIABLE FLAP_CODE_VERSION OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE git_rc ERROR_QUIET)
  if(git_rc EQUAL 0)
    execute_process(COMMAND git -C ${PROJECT_SOURCE_DIR} status --porcelain --untracked-files=no
      OUTPUT_VARIABLE git_dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(git_dirty)
      string(APPEND FLAP_CODE_VERSION "-dirty")
    endif()
  else()
    set(FLAP_CODE_VERSION unknown)
  endif()
  if(EXISTS ${PROJECT_SOURCE_DIR}/.git/logs/HEAD)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/.git/logs/HEAD)
  endif()
endif()
set_source_files_properties(export.cc PROPERTIES COMPILE_DEFINITIONS FLAP_CODE_VERSION="${FLAP_CODE_VERSION}")

# The agent (a worker group serving a coordinator): the worker library plus the coordinator's
# client (gRPC; no SentencePiece is linked here, it is a dlopen'd module).
add_library(flap_agent agent.cc lease_source.cc outbox.cc speaker.cc)
add_library(flap::agent ALIAS flap_agent)
target_link_libraries(flap_agent PUBLIC flap::worker flap::coordinator_client PRIVATE Threads::Threads)

add_executable(flap-worker main.cc)
target_link_libraries(flap-worker PRIVATE flap::agent)
# tcmalloc (libgoogle-perftools-dev) keeps freed tensor buffers for reuse, where glibc's malloc
# unmaps them and faults them in again every step (docs/benchmarks.md, "Training loop").
# Without it the worker tunes glibc's thresholds instead (core::TuneHostAllocator).
find_library(FLAP_TCMALLOC_LIB NAMES tcmalloc_minimal)
if(FLAP_TCMALLOC_LIB)
  target_link_libraries(flap-worker PRIVATE ${FLAP_TCMALLOC_LIB})
endif()
target_compile_definitions(flap-worker PRIVATE FLAP_CONFIG_DIR="${PROJECT_SOURCE_DIR}/configs")

if(FLAP_BUILD_TESTS)
  file(GLOB worker_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cc)
  list(REMOVE_ITEM worker_tests ${CMAKE_CURRENT_SOURCE_DIR}/fbank_test.cc)
  add_executable(flap_worker_test ${worker_tests})
  target_link_libraries(flap_worker_test PRIVATE flap::agent flap::coordinator flap::testing GTest::gtest_main)
  target_compile_definitions(flap_worker_test PRIVATE FLAP_CONFIG_DIR="${PROJECT_SOURCE_DIR}/configs"
    FLAP_DOCS_DIR="${PROJECT_SOURCE_DIR}/docs" FLAP_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  flap_add_gtest(flap_worker_test LABELS unit)
endif()
