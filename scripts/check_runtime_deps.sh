#!/usr/bin/env bash
# Checks that everything the build and the tests load at run time comes with scripts/setup.sh's
# packages, so that `scripts/test.sh` works on a fresh Debian 12 machine and not only on one
# where something else happened to install a library.
#
#   scripts/check_runtime_deps.sh [-v] [BUILD_DIR]     BUILD_DIR: [$FLAP_BUILD_DIR or build]
#
# What it looks at (ELF files):
#   - every program and shared library built in BUILD_DIR;
#   - the programs the tests run: Slurm's daemons and clients, munged, Open MPI's mpirun and
#     orted, Prometheus, gnuplot, openssl, tar, clang++ (the thread-safety check);
#   - the plugins those load: Slurm's (slurm-wlm/*.so, mpi_pmix_v4.so among them), Open MPI's
#     MCA components, PMIx's and hwloc's.
# For each it resolves the shared libraries it links (ldd) and the libraries named by an
# unversioned file name (libNAME.so) in the Slurm plugins the tests use, the libraries they
# dlopen (mpi_pmix_v4.so opens libpmix.so: a link only a -dev package installs). Each file is
# mapped to its Debian package (the files dpkg lists for it, as dpkg -S reads them), and that
# package must be one of setup.sh's PACKAGES or in their dependency closure (Depends and
# Pre-Depends of the installed packages, Recommends excluded as setup.sh installs without
# them), or part of Debian's base system (Essential or Priority: required).
#
# Prints the packages in use (-v: with the files of each), then either "runtime dependencies:
# ok" or one line per problem naming the package to add to PACKAGES, and exits 1 then.
# Exit codes: 0 complete, 1 something is missing or comes from outside PACKAGES, 2 bad usage.
set -euo pipefail
trap 'echo "check_runtime_deps: stopped by an error at line $LINENO" >&2; exit 2' ERR
root=$(cd "$(dirname "$0")/.." && pwd)

verbose=0
if [ "${1:-}" = -v ]; then verbose=1; shift; fi
[ $# -le 1 ] || { echo "usage: $0 [-v] [BUILD_DIR]" >&2; exit 2; }
build=${1:-${FLAP_BUILD_DIR:-build}}
[[ $build = /* ]] || build=$root/$build
[ -d "$build" ] || { echo "check_runtime_deps: no build folder $build (run scripts/setup.sh first)" >&2; exit 2; }
build=$(cd "$build" && pwd)
for p in ldd strings dpkg-query ldconfig awk; do
  command -v "$p" >/dev/null || { echo "check_runtime_deps: $p is missing" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The Slurm plugins the tests' one-node cluster loads (tests/slurm_cluster.cc's slurm.conf, the
# defaults it leaves alone, srun --mpi=pmix), scanned for dlopen'ed names.
slurm_used=(
  libslurmfull libslurm_pmi auth_munge cred_munge proctrack_linuxproc task_none jobacct_gather_none
  accounting_storage_none switch_none mpi_none mpi_pmix mpi_pmix_v4 sched_backfill select_cons_tres
  launch_slurm hash_k12 route_default preempt_none priority_basic jobcomp_none topology_none
  acct_gather_energy_none acct_gather_profile_none acct_gather_interconnect_none
  acct_gather_filesystem_none ext_sensors_none core_spec_none job_container_none mcs_none
  site_factor_none node_features_helpers cli_filter_none
)
# dlopen'ed libraries a test needs even when no versioned library of the name is installed.
required_dlopen=(libpmix.so)
# The programs the tests run, with the package that installs each (named when it is missing).
programs=(
  munged:munge slurmctld:slurmctld slurmd:slurmd slurmstepd:slurmd srun:slurm-client
  sbatch:slurm-client squeue:slurm-client scontrol:slurm-client scancel:slurm-client
  sinfo:slurm-client mpirun:openmpi-bin 'orted|prted:openmpi-bin' prometheus:prometheus
  gnuplot:gnuplot-nox openssl:openssl tar:tar timeout:coreutils ip:iproute2 nsenter:util-linux unshare:util-linux
  clang++:clang
)

problems=$tmp/problems   # one line per problem
: >"$problems"
problem() { echo "$*" >>"$problems"; }

# --- setup.sh's PACKAGES and their closure ----------------------------------------------------
eval "$(sed -n '/^PACKAGES=(/,/^)/p' "$root/scripts/setup.sh")"
[ "${#PACKAGES[@]}" -gt 0 ] || { echo "check_runtime_deps: no PACKAGES=( ... ) in scripts/setup.sh" >&2; exit 2; }
printf '%s\n' "${PACKAGES[@]}" >"$tmp/roots"
dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\t${Essential}\t${Priority}\t${Provides}\t${Pre-Depends}, ${Depends}\n' \
  >"$tmp/status"
# closure: "P" per package reached; "-P" per root that is not installed.
awk -F'\t' '
  NR == FNR { roots[$1] = 1; next }
  $2 ~ /^ii/ {
    inst[$1] = 1; deps[$1] = $6
    if ($3 == "yes" || $4 == "required") base[$1] = 1
    n = split($5, pv, /, */)
    for (i = 1; i <= n; i++) { v = pv[i]; sub(/[ (:].*/, "", v); if (v != "") prov[v] = prov[v] " " $1 }
  }
  function add(p) { if (p in inst && !(p in seen)) { seen[p] = 1; queue[++qn] = p } }
  function addname(p,   m, k, q) {
    sub(/^[ \t]+/, "", p); sub(/[ (:].*/, "", p)
    if (p == "") return
    add(p)
    if (p in prov) { m = split(prov[p], q, " "); for (k = 1; k <= m; k++) add(q[k]) }
  }
  END {
    for (r in roots) {  # "A|B": the first of them that is installed
      m = split(r, ra, /\|/); found = 0
      for (i = 1; i <= m && !found; i++) if (ra[i] in inst) { add(ra[i]); found = 1 }
      if (!found) print "-" r
    }
    for (b in base) add(b)
    for (qi = 1; qi <= qn; qi++) {
      n = split(deps[queue[qi]], groups, /,/)
      for (g = 1; g <= n; g++) { m = split(groups[g], alt, /\|/); for (a = 1; a <= m; a++) addname(alt[a]) }
    }
    for (p in seen) print p
  }' "$tmp/roots" "$tmp/status" >"$tmp/closure_all"
grep -v '^-' "$tmp/closure_all" | sort >"$tmp/closure" || true
while read -r p; do
  problem "$p: in setup.sh's PACKAGES but not installed (run scripts/setup.sh)"
done < <(sed -n 's/^-//p' "$tmp/closure_all")

# --- the files to check ------------------------------------------------------------------------
# $tmp/files: files to ldd (a file that is no dynamic ELF file gives ldd nothing to list);
# $tmp/scan: files to scan for dlopen'ed names.
find "$build" -type f \( -perm -u+x -o -name '*.so' -o -name '*.so.*' \) -not -path '*/CMakeFiles/*' >"$tmp/built"
nbuilt=$(wc -l <"$tmp/built")
[ "$nbuilt" -gt 0 ] || problem "$build: no programs built (run scripts/setup.sh)"

: >"$tmp/installed"
for entry in "${programs[@]}"; do
  prog=${entry%%:*} pkg=${entry#*:} path=""
  # A|B: the first that is installed (Open MPI 5, Debian 13's, runs prted where 4 ran orted).
  IFS='|' read -r -a choices <<<"$prog"
  for c in "${choices[@]}"; do
    path=$(PATH=$PATH:/usr/sbin:/sbin command -v "$c" || true)
    [ -n "$path" ] && break
  done
  if [ -n "$path" ]; then echo "$path" >>"$tmp/installed"; else problem "$pkg: not installed: the tests run $prog"; fi
done

multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
libdirs=("/usr/lib/$multiarch" "/lib/$multiarch" /usr/lib /lib)
slurm_dir=/usr/lib/$multiarch/slurm-wlm
[ -d "$slurm_dir" ] || problem "slurm-wlm-basic-plugins: not installed: no $slurm_dir (the Slurm tests load its plugins)"
for f in "$slurm_dir"/*.so /usr/lib/"$multiarch"/openmpi/lib/openmpi3/*.so /usr/lib/"$multiarch"/pmix2/lib/pmix/*.so \
  /usr/lib/"$multiarch"/hwloc/*.so; do
  [ -e "$f" ] && echo "$f"
done >>"$tmp/installed"
{
  for p in "${slurm_used[@]}"; do [ -e "$slurm_dir/$p.so" ] && echo "$slurm_dir/$p.so"; done
  for f in /usr/lib/"$multiarch"/pmix2/lib/pmix/*.so /usr/lib/"$multiarch"/openmpi/lib/openmpi3/mca_pmix_*.so; do
    [ -e "$f" ] && echo "$f"
  done
} >"$tmp/scan_installed"
xargs -d '\n' -r realpath -e -- <"$tmp/installed" | sort -u >"$tmp/installed_real"
sort -u "$tmp/built" "$tmp/installed_real" >"$tmp/files"
{ cat "$tmp/built"; xargs -d '\n' -r realpath -e -- <"$tmp/scan_installed"; } | sort -u >"$tmp/scan"

# --- linked libraries (ldd) ---------------------------------------------------------------------
# "user<TAB>library path" per resolved library, "user<TAB>!name" per library not found.
# What ldd runs, minus ldd's own shell (ten times faster over a few hundred files): the
# dynamic loader's --list. sed -u: one write per line, so that parallel runs do not mix lines.
list=ldd
for rtld in "/lib64/ld-linux-x86-64.so.2" "/lib/ld-linux-aarch64.so.1"; do
  if [ -x "$rtld" ] && "$rtld" --list /bin/true >/dev/null 2>&1; then list="$rtld --list"; break; fi
done
# shellcheck disable=SC2016  # $f belongs to the inner shell
xargs -d '\n' -P 4 -n 32 sh -c 'l=$1; shift; for f; do $l "$f" 2>/dev/null | sed -u "s|^|$f\t|"; done' sh "$list" <"$tmp/files" |
  awk -F'\t' '{
    line = substr($0, length($1) + 2); sub(/^[ \t]+/, "", line)
    if (line ~ /=> not found/) { split(line, w, " "); print $1 "\t!" w[1]; next }
    if (line ~ /=> \//) { sub(/.*=> /, "", line); sub(/ \(0x.*/, "", line); print $1 "\t" line; next }
    if (line ~ /^\//) { sub(/ \(0x.*/, "", line); print $1 "\t" line }
  }' | sort -u >"$tmp/links"
while IFS=$'\t' read -r user name; do
  problem "${name#!}: not found, needed by $user (a library no installed package provides)"
done < <(grep -P '\t!' "$tmp/links" || true)

# --- dlopen'ed unversioned names (libNAME.so) ------------------------------------------------
ldconfig -p | awk '/ => /{ n = $1; p = $NF; print n "\t" p }' >"$tmp/ldcache"
resolve_so() { # name, dir of the user -> path or nothing
  local name=$1 dir=$2 d
  [[ $name = /* ]] && { [ -e "$name" ] && echo "$name"; return; }
  for d in "$dir" "${libdirs[@]}"; do
    [ -e "$d/$name" ] && { echo "$d/$name"; return; }
  done
  # (the cache may be stale: a package removed without running ldconfig)
  awk -F'\t' -v n="$name" '$1 == n { print $2 }' "$tmp/ldcache" | while read -r p; do
    if [ -e "$p" ]; then echo "$p"; break; fi
  done
}
: >"$tmp/dlopen"      # user<TAB>path
: >"$tmp/dev_needed"  # name<TAB>versioned path<TAB>user
while read -r f; do
  while read -r name; do
    [ "$(basename "$name")" = "$(basename "$f")" ] && continue
    path=$(resolve_so "$name" "$(dirname "$f")")
    if [ -n "$path" ]; then
      printf '%s\t%s\n' "$f" "$path" >>"$tmp/dlopen"
      continue
    fi
    base=$(basename "$name")
    versioned=$(awk -F'\t' -v n="$base." 'index($1, n) == 1 { print $2 }' "$tmp/ldcache" | while read -r p; do
      if [ -e "$p" ]; then echo "$p"; break; fi
    done)
    required=0
    for r in "${required_dlopen[@]}"; do [ "$r" = "$base" ] && required=1; done
    if [ -n "$versioned" ] || [ "$required" = 1 ]; then
      printf '%s\t%s\t%s\n' "$base" "$versioned" "$f" >>"$tmp/dev_needed"
    elif [ "$verbose" = 1 ]; then
      echo "note: $f names $base (an optional library; not installed)"
    fi
  done < <(strings -n 6 "$f" | grep -E '^(/[^ ]*/)?lib[A-Za-z0-9_+.-]*\.so$' | sort -u)
done <"$tmp/scan"

# --- owners (dpkg's file lists, what dpkg -S reads) ---------------------------------------------
cut -f2 "$tmp/links" "$tmp/dlopen" | grep -v '^!' >"$tmp/paths" || true
cat "$tmp/files" >>"$tmp/paths"
cut -f2 "$tmp/dev_needed" | grep . >>"$tmp/paths" || true
sort -u -o "$tmp/paths" "$tmp/paths"
# Each path under the names dpkg may know it by: as given, resolved, with and without /usr
# (merged /usr: /lib is /usr/lib).
# shellcheck disable=SC2094  # both only read it
xargs -d '\n' realpath -m -- <"$tmp/paths" | paste "$tmp/paths" - | awk -F'\t' '{
  for (i = 1; i <= 2; i++) {
    v = $i; print $1 "\t" v
    if (v ~ /^\/usr\/(lib|bin|sbin)\//) print $1 "\t" substr(v, 5)
    else if (v ~ /^\/(lib|bin|sbin)\//) print $1 "\t/usr" v
  }
}' >"$tmp/variants"
awk -F'\t' '
  FILENAME == ARGV[1] { want[$2] = want[$2] " " $1; next }
  FNR == 1 { pkg = FILENAME; sub(/.*\//, "", pkg); sub(/\.list$/, "", pkg); sub(/:.*/, "", pkg) }
  ($0 in want) { n = split(want[$0], ps, " "); for (i = 1; i <= n; i++) if (!(ps[i] in owner)) owner[ps[i]] = pkg }
  END { for (p in owner) print p "\t" owner[p] }
' "$tmp/variants" /var/lib/dpkg/info/*.list | sort >"$tmp/owners"

owner_of() { awk -F'\t' -v p="$1" '$1 == p { print $2; exit }' "$tmp/owners"; }

# Every file used, its package, and who uses it: "package<TAB>file<TAB>user".
{
  sed 's/$/\t-/' "$tmp/installed_real"
  awk -F'\t' '$2 !~ /^!/ { print $2 "\t" $1 }' "$tmp/links" "$tmp/dlopen"
} | sort -u | awk -F'\t' -v build="$build/" '
  FILENAME == ARGV[1] { owner[$1] = $2; next }
  index($1, build) == 1 { next }
  { print (($1 in owner) ? owner[$1] : "?") "\t" $1 "\t" $2 }
' "$tmp/owners" - | sort -u >"$tmp/used"

# One problem per package outside the closure (and per file of no package), with an example.
awk -F'\t' '
  FILENAME == ARGV[1] { ok[$1] = 1; next }
  {
    by = ($3 == "-") ? "the tests" : $3
    if ($1 == "?") print $2 " (used by " by ") belongs to no Debian package: install it through a package in setup.sh'"'"'s PACKAGES"
    else if (!($1 in ok) && !($1 in told)) {
      told[$1] = 1
      print $1 ": provides " $2 " (used by " by ") but is neither in setup.sh'"'"'s PACKAGES nor a dependency of them: add " $1 " to PACKAGES"
    }
  }' "$tmp/closure" "$tmp/used" >>"$problems"

# libNAME.so that only a -dev package installs.
while IFS=$'\t' read -r name versioned user; do
  dev=
  lib_pkg=
  if [ -n "$versioned" ]; then
    lib_pkg=$(owner_of "$versioned")
    stem=${name#lib}; stem=${stem%.so}
    if [ -n "$lib_pkg" ] && command -v apt-cache >/dev/null; then
      dev=$(apt-cache rdepends "$lib_pkg" 2>/dev/null | sed -n 's/^[ |]*//p' | grep -E -- '-dev$' | grep -F -- "$stem" |
        sort -u | head -n 1 || true)
    fi
  fi
  fix="add ${dev:-it} to setup.sh's PACKAGES"
  [ -n "$dev" ] && grep -qxF "$dev" "$tmp/roots" && fix="install it: scripts/setup.sh"
  problem "${dev:-the -dev package${lib_pkg:+ of $lib_pkg}}: not installed: $user loads $name (dlopen), a link only ${dev:-a -dev package} installs${versioned:+ (next to $versioned${lib_pkg:+ of $lib_pkg})}: $fix"
done <"$tmp/dev_needed"

# --- report -------------------------------------------------------------------------------------
npkg=$(cut -f1 "$tmp/used" | grep -v '^?$' | sort -u | wc -l)
nfiles=$(cut -f2 "$tmp/used" | sort -u | wc -l)
echo "runtime dependencies: $nbuilt built file(s) in $build, $nfiles installed file(s) from $npkg package(s):"
if [ "$verbose" = 1 ]; then
  awk -F'\t' '$1 != "?" { if ($1 != last) print "  " $1; last = $1; print "      " $2 (($3 == "-") ? "" : "  (" $3 ")") }' "$tmp/used"
else
  cut -f1 "$tmp/used" | grep -v '^?$' | sort -u | tr '\n' ' ' | fold -s -w 100 | sed 's/^/  /'
  echo
fi
if [ -s "$problems" ]; then
  echo "runtime dependencies: $(wc -l <"$problems") problem(s):"
  sort -u "$problems" | sed 's/^/  /'
  exit 1
fi
echo "runtime dependencies: ok (every file comes with setup.sh's packages or Debian's base system)"
