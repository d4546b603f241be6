// What integration tests include: the shared test library (common/testing/testing.h) and the
// system headers they use with it to start, signal and wait for programs.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/testing/testing.h"
