// The ablation report (report.h): the gnuplot scripts of its plots and writing its files.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "common/atomic_file.h"
#include "coordinator/report.h"

namespace flap::coordinator {
namespace {

// Only characters that cannot end or escape a gnuplot string or start a command.
std::string GnuplotText(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == '-' || c == '+' || c == ' ' || c == ':';
    out += ok ? c : '_';
  }
  return out.substr(0, 64);
}

std::string GnuplotScript(const std::string& sweep_id, const std::vector<std::string>& series, const std::string& out,
                          const std::string& ylabel, int column) {
  std::ostringstream gp;
  gp << "# " << out << ": " << ylabel << " against mask.ratio, one line per mask.strategy\n"
     << "set terminal svg size 640,400 dynamic\nset output '" << out << "'\n"
     << "set title '" << GnuplotText(sweep_id) << ": " << ylabel << "'\n"
     << "set xlabel 'mask.ratio'\nset ylabel '" << ylabel << "'\nset key top left\n"
     << "set datafile missing 'NaN'\nset grid\nplot ";
  for (size_t i = 0; i < series.size(); ++i) {
    gp << (i ? ", " : "") << "'speed.dat' index " << i << " using 1:" << column
       << " with linespoints title 'mask.strategy " << GnuplotText(series[i]) << "'";
  }
  gp << "\n";
  return gp.str();
}

}  // namespace

std::vector<ReportFile> PlotScripts(const std::string& sweep_id, const std::string& speed_dat) {
  std::vector<std::string> series;
  std::istringstream in(speed_dat);
  const std::string header = "# mask.strategy ";
  for (std::string line; std::getline(in, line);) {
    if (line.compare(0, header.size(), header) == 0) series.push_back(line.substr(header.size()));
    if (series.size() >= 64) break;
  }
  if (series.empty()) return {};
  return {{"throughput.gp", GnuplotScript(sweep_id, series, "throughput.svg", "samples/s", 2)},
          {"time_to_target.gp", GnuplotScript(sweep_id, series, "time_to_target.svg", "time-to-target (s)", 3)}};
}

Status WriteReport(const std::vector<ReportFile>& files, const std::string& dir, const WriteReportOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create report folder " + dir + ": " + ec.message());
  for (const auto& f : files) {
    FLAP_RETURN_IF_ERROR(flap::WriteFileAtomic(dir + "/" + f.name, f.content));
  }
  if (!options.plots) return Status::OK();
  for (const auto& f : files) {
    if (f.name.size() < 3 || f.name.compare(f.name.size() - 3, 3, ".gp") != 0) continue;
    // Nothing buffered in this process may be written twice by the child.
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return Status::IOError("cannot fork gnuplot");
    if (pid == 0) {
      if (chdir(dir.c_str()) != 0) _exit(126);
      const int null_fd = open("/dev/null", O_WRONLY);
      if (null_fd >= 0) dup2(null_fd, STDOUT_FILENO);
      // Its warnings (an empty plot, say) go to a log beside the plots, not to the terminal.
      const int log_fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log_fd >= 0) dup2(log_fd, STDERR_FILENO);
      execlp(options.gnuplot.c_str(), options.gnuplot.c_str(), f.name.c_str(), (char*)nullptr);
      _exit(127);
    }
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
      const int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
      return Status::FailedPrecondition(
          code == 127
              ? "plots not made: '" + options.gnuplot + "' not found (install gnuplot-nox); the text files are written"
              : "plots not made: gnuplot failed on " + dir + "/" + f.name + " (exit " + std::to_string(code) + ")");
    }
  }
  return Status::OK();
}

}  // namespace flap::coordinator
