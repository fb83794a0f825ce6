# shellcheck shell=bash
# Common helpers for the fssession shared-filesystem testbed scripts.
# Sourced (never executed) by sshfs-up/-down, gluster-up/-down and hostsim.
#
# Process bookkeeping: every daemon a testbed starts is written to a "pid
# list" file as "PID STARTTIME LABEL" (STARTTIME = field 22 of /proc/PID/stat).
# Stopping only ever signals a PID whose start time still matches, so a PID
# that was recycled by an unrelated process is never touched, and nothing is
# ever killed by name.

export DEBIAN_FRONTEND=noninteractive

tb_log() { echo "${TB_NAME:-testbed}: $*" >&2; }
tb_die() { tb_log "error: $*"; exit 1; }

tb_require_root() {
  [[ $(id -u) -eq 0 ]] || tb_die "must run as root (mounts, daemons, apt)"
}

tb_require_fuse() {
  [[ -c /dev/fuse ]] || tb_die "/dev/fuse is missing (no FUSE on this machine)"
}

# tb_pkg_missing PKG...: print the packages that are not installed.
tb_pkg_missing() {
  local p st
  for p in "$@"; do
    st=$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $st == installed ]] || echo "$p"
  done
}

# tb_apt_ensure PKG...: install whatever is missing, non-interactively.
# Waits for a dpkg lock held by another apt run; runs `apt-get update` and
# retries once if the first attempt fails (e.g. stale package lists).
tb_apt_ensure() {
  local missing
  mapfile -t missing < <(tb_pkg_missing "$@")
  [[ ${#missing[@]} -eq 0 ]] && return 0
  tb_log "installing ${missing[*]}"
  local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold)
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" </dev/null >&2; then
    tb_log "install failed; running apt-get update and retrying"
    "${apt[@]}" update </dev/null >&2 || tb_die "apt-get update failed"
    "${apt[@]}" install --no-install-recommends "${missing[@]}" </dev/null >&2 ||
      tb_die "apt-get install ${missing[*]} failed"
  fi
}

# tb_starttime PID: field 22 of /proc/PID/stat (clock ticks since boot).
# The command name (field 2) may contain spaces, so parse after the last ')'.
tb_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  local -a fields
  read -ra fields <<<"${stat##*) }"
  # fields[0] is overall field 3 (state), so starttime (field 22) is fields[19]
  echo "${fields[19]}"
}

# tb_state PID: the one-letter process state (R, S, Z, ...).
tb_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  echo "${stat%% *}"
}

# tb_running PID [STARTTIME]: true if PID exists, is not a zombie (daemons are
# re-parented to an init that may reap lazily) and, when given, still has the
# recorded start time.
tb_running() {
  local pid=$1 want=${2:-} st
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  st=$(tb_state "$pid") || return 1
  [[ $st != Z && $st != X ]] || return 1
  [[ -z $want || $(tb_starttime "$pid") == "$want" ]]
}

# tb_record LISTFILE PID LABEL: remember a process we started.
tb_record() {
  local start
  start=$(tb_starttime "$2") || tb_die "$3 (pid $2) exited right after it was started; see its log"
  echo "$2 $start $3" >>"$1"
}

# tb_list_running LISTFILE: true if every recorded process is still running.
tb_list_running() {
  local pid start label
  [[ -s $1 ]] || return 1
  while read -r pid start label; do
    tb_running "$pid" "$start" || return 1
  done <"$1"
}

# tb_stop PID STARTTIME LABEL: SIGTERM, wait up to 5 s, then SIGKILL.
tb_stop() {
  local pid=$1 start=$2 label=${3:-process} i
  tb_running "$pid" "$start" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    tb_running "$pid" "$start" || return 0
    sleep 0.05
  done
  tb_log "$label ($pid) ignored SIGTERM for 5 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    tb_running "$pid" "$start" || return 0
    sleep 0.05
  done
  tb_log "$label ($pid) is still alive after SIGKILL"
  return 1
}

# tb_stop_list LISTFILE: stop every recorded process (last started first),
# then delete the list. Returns non-zero if one could not be stopped.
tb_stop_list() {
  local f=$1 rc=0 line pid start label i
  [[ -f $f ]] || return 0
  local -a lines
  mapfile -t lines <"$f"
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    line=${lines[i]}
    read -r pid start label <<<"$line"
    [[ -n $pid ]] || continue
    tb_stop "$pid" "$start" "$label" || rc=1
  done
  [[ $rc -eq 0 ]] && rm -f "$f"
  return "$rc"
}

# tb_is_mounted PATH
tb_is_mounted() { mountpoint -q "$1" 2>/dev/null; }

# tb_wait_mounted PATH [SECONDS]: wait until PATH is a mount point.
tb_wait_mounted() {
  local m=$1 tries=$((${2:-10} * 20)) i
  for ((i = 0; i < tries; i++)); do
    tb_is_mounted "$m" && return 0
    sleep 0.05
  done
  return 1
}

# tb_wait_mounted_by PATH PID [SECONDS]: like tb_wait_mounted, but give up
# as soon as PID (the FUSE daemon that should mount PATH) has exited.
tb_wait_mounted_by() {
  local m=$1 pid=$2 tries=$((${3:-10} * 20)) i
  for ((i = 0; i < tries; i++)); do
    tb_is_mounted "$m" && return 0
    tb_running "$pid" || { tb_is_mounted "$m"; return; }
    sleep 0.05
  done
  return 1
}

# tb_show_logs FILE...: print the tail of every non-empty log to stderr.
tb_show_logs() {
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    echo "--- $f" >&2
    tail -n "${TB_LOG_LINES:-15}" "$f" >&2 || true
  done
}

# tb_unmount PATH: unmount a FUSE mount; lazy unmount only as a last resort.
tb_unmount() {
  local m=$1 i
  tb_is_mounted "$m" || return 0
  for ((i = 0; i < 5; i++)); do
    fusermount3 -u -q "$m" 2>/dev/null || umount "$m" 2>/dev/null || true
    tb_is_mounted "$m" || return 0
    sleep 0.2
  done
  tb_log "$m is busy; detaching it lazily"
  umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
  ! tb_is_mounted "$m"
}

# tb_mounts_under DIR: print mount points at or below DIR.
tb_mounts_under() {
  local d
  d=$(realpath -m "$1")
  awk -v d="$d" '
    { p = $2; gsub(/\\040/, " ", p) }
    p == d || index(p, d "/") == 1 { print p }' /proc/self/mounts
}

# tb_purge DIR: rm -rf DIR, but refuse while anything under it is mounted.
tb_purge() {
  local d=$1 left
  [[ -e $d ]] || return 0
  left=$(tb_mounts_under "$d")
  if [[ -n $left ]]; then
    tb_log "not deleting $d: still mounted below it: $left"
    return 1
  fi
  rm -rf --one-file-system -- "$d"
}

# tb_port_listening PORT: is anything listening on TCP PORT (any address)?
tb_port_listening() {
  local hex
  printf -v hex '%04X' "$1"
  awk -v h=":$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == h { f = 1 }
    END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# tb_pick_port: print a TCP port nothing listens on (race: callers retry).
tb_pick_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 30000))
    tb_port_listening "$p" || { echo "$p"; return 0; }
  done
  tb_die "no free TCP port found"
}

# tb_check_base BASE: refuse obviously dangerous BASE values (we rm -rf it).
tb_check_base() {
  local b
  b=$(realpath -m "$1")
  case $b in
    / | /tmp | /root | /home | /work | /var | /usr | /etc | /run) tb_die "refusing BASE=$b" ;;
  esac
  echo "$b"
}

# tb_write_env STATE EXPORT MOUNT...: write STATE/env (sourceable).
tb_write_env() {
  local state=$1 export_dir=$2 i=0 m
  shift 2
  {
    echo "export TESTBED_KIND=${TB_KIND:-unknown}"
    echo "export TESTBED_EXPORT=$(printf '%q' "$export_dir")"
    echo "export TESTBED_MOUNT_COUNT=$#"
    for m in "$@"; do
      i=$((i + 1))
      echo "export TESTBED_MOUNT_$i=$(printf '%q' "$m")"
    done
  } >"$state/env.tmp"
  mv "$state/env.tmp" "$state/env"
}
