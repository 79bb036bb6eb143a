#!/usr/bin/env bash
# Installs, upgrades or removes the ALL edge daemon on a Raspberry Pi (run as root).
# Research use only: this is not a diagnostic device. Guide: docs/deploy.md.
set -euo pipefail
# Everything installed is root's and readable by the service user, whatever umask sudo passed on.
umask 022

usage() {
  cat <<'EOF'
Usage: sudo ./install.sh [MODE] [OPTIONS]

Installs the ALL edge daemon as the systemd service "all-edge" (research use only).

Modes (default: install)
  (none)                 install; a second run with the same code changes nothing
  --upgrade              install new code into a new release, validate it against the existing
                         config, switch to it, restart (rolls back if the restart fails)
  --uninstall            stop and remove the service and code; keep config, credentials and data
  --uninstall --purge    also remove config, credentials, data, logs and the service user

Options
  --cpu                  CPU mode (default on a first install): Raspberry Pi OS Bookworm,
                         OpenVINO wheel, device CPU
  --ncs2                 NCS2 mode: Raspberry Pi OS Bullseye 64-bit, Python 3.9, OpenVINO 2022.3
                         runtime, device MYRIAD (CPU fallback); installs the NCS2 udev rule
  --openvino-archive P   NCS2 mode: Intel's OpenVINO 2022.3 ARM runtime, as the .tgz archive or
                         an extracted directory; without it, python must already import
                         openvino.runtime (2022.3) from its system site-packages
                         Without --cpu or --ncs2, a rerun or --upgrade keeps the mode (and the
                         --openvino-archive path) recorded in the live release's install-mode
  --python PY            interpreter for the venv (default: python3)
  --wheelhouse DIR       install Python packages only from DIR (pip --no-index --find-links)
  --prefix DIR           staging root: everything goes under DIR and the paths written into the
                         unit and config point there (DESTDIR=DIR is the same); implies --no-system
  --no-system            skip apt, useradd, chown, systemctl and udevadm (and say so); still does
                         everything else (also ALL_EDGE_TEST_MODE=1)
  --user NAME            service user (default: all-edge)
  --dry-run              print what would be done, change nothing
  -h, --help             this help

Layout: code in /opt/all-edge/releases/<id> (current -> the live one), config in
/etc/all-edge/confs.json (never overwritten), secrets in /etc/all-edge/credentials/,
data in /var/lib/all-edge, logs in /var/log/all-edge and journalctl -u all-edge.
EOF
}

# ------------------------------------------------------------------------------ options
ACTION=install
PURGE=0
HW=cpu
MODE_GIVEN=0      # --cpu/--ncs2 given: otherwise an installed release's recorded mode is kept
MODE_RECALLED=""  # the install-mode file the mode was taken from
OV_ARCHIVE=""
PYTHON=python3
WHEELHOUSE=""
ROOT="${DESTDIR:-}"
NO_SYSTEM="${ALL_EDGE_TEST_MODE:-0}"
SVC_USER=all-edge
DRY=0
SERVICE=all-edge

die() { echo "install.sh: error: $*" >&2; exit 1; }
need_arg() { if [ "$#" -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --upgrade) ACTION=upgrade ;;
    --uninstall) ACTION=uninstall ;;
    --purge) PURGE=1 ;;
    --cpu) HW=cpu; MODE_GIVEN=1 ;;
    --ncs2) HW=ncs2; MODE_GIVEN=1 ;;
    --openvino-archive) need_arg "$@"; OV_ARCHIVE="$2"; shift ;;
    --python) need_arg "$@"; PYTHON="$2"; shift ;;
    --wheelhouse) need_arg "$@"; WHEELHOUSE="$2"; shift ;;
    --prefix) need_arg "$@"; ROOT="$2"; shift ;;
    --no-system) NO_SYSTEM=1 ;;
    --user) need_arg "$@"; SVC_USER="$2"; shift ;;
    --dry-run) DRY=1 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[ "$PURGE" = 0 ] || [ "$ACTION" = uninstall ] || die "--purge only goes with --uninstall"
[ -z "$OV_ARCHIVE" ] || [ "$HW" = ncs2 ] || die "--openvino-archive needs --ncs2"
[[ "$SVC_USER" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--user '$SVC_USER' is not a valid user name"
[ "$NO_SYSTEM" = 1 ] || NO_SYSTEM=0

if [ -n "$ROOT" ]; then
  # The root is written into the unit and the config: keep it to characters safe there.
  [[ "$ROOT" =~ ^/[A-Za-z0-9._/-]*$ ]] || die "--prefix/DESTDIR must be an absolute path of letters, digits, . _ - / (got '$ROOT')"
  ROOT="${ROOT%/}"
  # ALL_EDGE_FAKE_SYSTEM=1 is for tests only: they put recording fakes of apt-get, useradd,
  # chown, systemctl, ... first on PATH to check the system steps inside a staging root.
  if [ "$NO_SYSTEM" = 0 ] && [ "${ALL_EDGE_FAKE_SYSTEM:-0}" != 1 ]; then
    echo "install.sh: staging root $ROOT: implies --no-system"
    NO_SYSTEM=1
  fi
fi

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APP="$ROOT/opt/all-edge"
ETC="$ROOT/etc/all-edge"
CRED="$ETC/credentials"
STATE="$ROOT/var/lib/all-edge"
LOGS="$ROOT/var/log/all-edge"
UNIT="$ROOT/etc/systemd/system/$SERVICE.service"
UDEV_RULE="$ROOT/etc/udev/rules.d/97-myriad-usbboot.rules"
CREDENTIALS=(hias-password api-password api-token)
SRC_ITEMS=(pyproject.toml README.md confs.json install.sh edge models docs systemd)

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# ------------------------------------------------------------------------------ helpers
say() { echo "==> $*"; }
note() { echo "    $*"; }
skipped() { echo "    skipped (--no-system): $*"; }

# act DESCRIPTION CMD...: print and run CMD (every change is shown), or only print it under
# --dry-run.
act() {
  local what="$1"; shift
  if [ "$DRY" = 1 ]; then echo "    would: $what"; return 0; fi
  echo "    $what"
  "$@"
}

# sys DESCRIPTION CMD...: like act, for commands that need the real system (root).
sys() {
  local what="$1"; shift
  if [ "$NO_SYSTEM" = 1 ]; then skipped "$what"; return 0; fi
  act "$what" "$@"
}

ensure_dir() {  # DIR MODE [OWNER:GROUP]
  local dir="$1" mode="$2" owner="${3:-}"
  if [ ! -d "$dir" ]; then
    act "mkdir -m $mode $dir" mkdir -p -m "$mode" "$dir"
  fi
  if [ -d "$dir" ] && [ "$(stat -c %a "$dir")" != "${mode#0}" ]; then
    act "chmod $mode $dir" chmod "$mode" "$dir"
  fi
  if [ -n "$owner" ]; then ensure_owner "$dir" "$owner"; fi
}

ensure_owner() {  # PATH OWNER:GROUP
  if [ "$NO_SYSTEM" = 1 ]; then skipped "chown $2 $1"; return 0; fi
  if [ ! -e "$1" ] || [ "$(stat -c %U:%G "$1")" != "$2" ]; then
    act "chown $2 $1" chown "$2" "$1"
  fi
}

# put_file SRC DST MODE: copy only when the content or mode differs (keeps reruns no-ops).
put_file() {
  local src="$1" dst="$2" mode="$3"
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    if [ "$(stat -c %a "$dst")" != "${mode#0}" ]; then act "chmod $mode $dst" chmod "$mode" "$dst"; fi
    return 0
  fi
  act "install $dst (mode $mode)" install -m "$mode" "$src" "$dst"
}

py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

# ------------------------------------------------------------------------------ preflight
preflight() {
  say "checking the system"
  local codename="" arch
  arch="$(uname -m)"
  local os_release="${ALL_EDGE_OS_RELEASE:-/etc/os-release}"  # tests may point elsewhere
  if [ -r "$os_release" ]; then
    codename="$(sed -n 's/^VERSION_CODENAME=//p' "$os_release" | tr -d '"')"
  fi
  local want_os want_hint problems=()
  if [ "$HW" = ncs2 ]; then
    want_os="bullseye"; want_hint="NCS2 mode needs Raspberry Pi OS Bullseye 64-bit (OpenVINO 2022.3 ARM runtime, Python 3.9)"
  else
    want_os="bookworm trixie"; want_hint="CPU mode needs Raspberry Pi OS Bookworm 64-bit or newer (OpenVINO wheels need glibc >= 2.35)"
  fi
  [[ " $want_os " == *" $codename "* ]] || problems+=("OS '${codename:-unknown}': $want_hint")
  [ "$arch" = aarch64 ] || problems+=("architecture '$arch': needs a 64-bit Raspberry Pi OS (aarch64)")
  if ((${#problems[@]})); then
    if [ "$NO_SYSTEM" = 1 ]; then
      for p in "${problems[@]}"; do note "warning (--no-system, continuing): $p"; done
    else
      for p in "${problems[@]}"; do echo "install.sh: error: $p" >&2; done
      exit 1
    fi
  fi
  if [ "$NO_SYSTEM" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo ./install.sh), or try it unprivileged with --prefix DIR"
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || die "python '$PYTHON' not found (install python3, or pass --python)"
  PYVER="$(py_version "$PYTHON")" || die "'$PYTHON' does not run"
  local minor="${PYVER#*.}"
  if [ "${PYVER%%.*}" != 3 ] || [ "$minor" -lt 9 ]; then die "Python $PYVER is too old: the edge package needs Python >= 3.9"; fi
  if [ "$HW" = cpu ] && [ "$minor" -lt 10 ]; then
    die "CPU mode installs the current OpenVINO wheel, which needs Python >= 3.10 (got $PYVER); on Bullseye use --ncs2"
  fi
  if [ "$HW" = ncs2 ] && [ "$minor" -gt 10 ]; then
    die "NCS2 mode runs OpenVINO 2022.3, built for Python 3.7-3.10 (got $PYVER); use Bullseye's python3.9"
  fi
  [ -z "$WHEELHOUSE" ] || [ -d "$WHEELHOUSE" ] || die "--wheelhouse '$WHEELHOUSE' is not a directory"
  if [ -n "$OV_ARCHIVE" ]; then
    [ -e "$OV_ARCHIVE" ] || die "--openvino-archive '$OV_ARCHIVE' does not exist${MODE_RECALLED:+ (recorded in $MODE_RECALLED; pass --ncs2 --openvino-archive PATH again)}"
    OV_ARCHIVE="$(realpath -e "$OV_ARCHIVE")"  # recorded for later upgrades: absolute
  fi
  for item in "${SRC_ITEMS[@]}"; do
    [ -e "$SRC_DIR/$item" ] || die "source tree incomplete: $SRC_DIR/$item is missing"
  done
  [ -f "$SRC_DIR/models/default/model.xml" ] || die "no default model in $SRC_DIR/models/default (see README)"
  note "mode $HW, Python $PYVER ($PYTHON), root '${ROOT:-/}'"
}

install_packages() {
  say "system packages"
  local pkgs=(python3-venv python3-pip python3-systemd python3-picamera2 ca-certificates)
  if [ "$HW" = ncs2 ]; then pkgs+=(libusb-1.0-0); fi
  sys "apt-get update" apt-get update -q
  sys "apt-get install ${pkgs[*]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}"
}

create_user() {
  say "service user $SVC_USER"
  local groups=video
  [ "$HW" = ncs2 ] && groups="video,users"
  if [ "$NO_SYSTEM" = 0 ] && id -u "$SVC_USER" >/dev/null 2>&1; then
    sys "usermod -a -G $groups $SVC_USER" usermod -a -G "$groups" "$SVC_USER"
  else
    sys "useradd --system $SVC_USER (groups $groups)" useradd --system --user-group \
      --home-dir /var/lib/all-edge --no-create-home --shell /usr/sbin/nologin \
      --groups "$groups" "$SVC_USER"
  fi
}

create_dirs() {
  say "directories"
  ensure_dir "$APP" 0755 root:root
  ensure_dir "$APP/releases" 0755 root:root
  ensure_dir "$ETC" 0750 "root:$SVC_USER"
  ensure_dir "$CRED" 0700 root:root
  ensure_dir "$STATE" 0750 "$SVC_USER:$SVC_USER"
  ensure_dir "$STATE/data" 0750 "$SVC_USER:$SVC_USER"
  ensure_dir "$STATE/inbox" 2770 "$SVC_USER:$SVC_USER"
  ensure_dir "$STATE/models" 0750 "$SVC_USER:$SVC_USER"
  ensure_dir "$LOGS" 0750 "$SVC_USER:$SVC_USER"
}

# ------------------------------------------------------------------------------ releases
# A release is the code plus its venv, named by a hash of everything that goes into it, so
# the same code installs once and an upgrade builds beside the running release.
release_id() {
  local version sum
  version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$SRC_DIR/pyproject.toml" | head -n1)"
  sum="$(
    cd "$SRC_DIR"
    find "${SRC_ITEMS[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "hw=$HW python=$PYVER"
    [ -z "$OV_ARCHIVE" ] || echo "openvino-archive=$(ov_archive_sum)"
  )"
  echo "${version:-0}-$(printf '%s' "$sum" | sha256sum | cut -c1-12)"
}

ov_archive_sum() {
  if [ -d "$OV_ARCHIVE" ]; then
    (cd "$OV_ARCHIVE" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-12
  else
    sha256sum "$OV_ARCHIVE" | cut -c1-12
  fi
}

current_release() {
  if [ -L "$APP/current" ]; then basename "$(readlink "$APP/current")"; fi
}

# The hardware mode is recorded in each release (install-mode), so a rerun or --upgrade without
# --cpu/--ncs2 keeps the mode and --openvino-archive of the live release.
recall_mode() {
  [ "$MODE_GIVEN" = 0 ] || return 0
  local f="$APP/current/install-mode" hw
  [ -f "$f" ] || return 0
  hw="$(sed -n 's/^hw=//p' "$f")"
  case "$hw" in cpu|ncs2) ;; *) return 0 ;; esac
  HW="$hw"
  OV_ARCHIVE="$(sed -n 's/^openvino_archive=//p' "$f")"
  MODE_RECALLED="$f"
  note "mode $HW${OV_ARCHIVE:+, --openvino-archive $OV_ARCHIVE}: as recorded in $f (--cpu or --ncs2 changes it)"
}

record_mode() {  # RELEASE ID
  [ "$DRY" = 0 ] || return 0
  printf 'hw=%s\nopenvino_archive=%s\n' "$HW" "$OV_ARCHIVE" > "$TMP/install-mode"
  put_file "$TMP/install-mode" "$APP/releases/$1/install-mode" 0644
}

pip_install() {  # VENV ARGS...
  local venv="$1"; shift
  local opts=(-q --disable-pip-version-check)
  [ -z "$WHEELHOUSE" ] || opts+=(--no-index --find-links "$WHEELHOUSE")
  [ ! -s "$TMP/constraints.txt" ] || opts+=(-c "$TMP/constraints.txt")
  "$venv/bin/python" -m pip install "${opts[@]}" "$@"
}

# picamera2 from apt is built against the system numpy 1.x: keep the venv on numpy 1.x then.
write_constraints() {
  : > "$TMP/constraints.txt"
  local sysnp
  sysnp="$("$PYTHON" -c 'import numpy; print(numpy.__version__.split(".")[0])' 2>/dev/null || true)"
  if [ "$sysnp" = 1 ]; then
    printf 'numpy<2\nopencv-python-headless<4.11\n' > "$TMP/constraints.txt"
    note "system numpy is 1.x (picamera2): pinning numpy<2 in the venv"
  fi
  if [ "$HW" = ncs2 ]; then
    printf 'numpy<1.27\n' >> "$TMP/constraints.txt"
  fi
}

# The OpenVINO 2022.3 ARM runtime: extract the archive (or take the directory) into the
# release and make the venv see its Python package; LD_LIBRARY_PATH goes into the unit.
install_ov_runtime() {
  local rel="$1" ovdir="$1/openvino"
  mkdir -p "$ovdir"
  if [ -d "$OV_ARCHIVE" ]; then
    cp -R --preserve=timestamps "$OV_ARCHIVE/." "$ovdir/"  # not owners or modes: see build_release
  else
    tar -xzf "$OV_ARCHIVE" -C "$ovdir" --strip-components=1 --no-same-owner --no-same-permissions \
      || die "cannot extract $OV_ARCHIVE (expected Intel's l_openvino_toolkit_*_2022.3*_arm64.tgz)"
  fi
  local pydir=""
  for cand in "$ovdir/python/python$PYVER" "$ovdir/python"; do
    if [ -f "$cand/openvino/runtime/__init__.py" ]; then pydir="$cand"; break; fi
  done
  [ -n "$pydir" ] || die "$OV_ARCHIVE has no openvino/runtime for Python $PYVER under python/ (wrong archive?)"
  local site
  site="$("$rel/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$pydir" > "$site/openvino-2022.3.pth"
  local libs=()
  for d in "$ovdir"/runtime/lib/* "$ovdir"/runtime/3rdparty/tbb/lib; do
    [ -d "$d" ] && libs+=("$d")
  done
  (IFS=:; echo "${libs[*]}") > "$rel/openvino.ldpath"
}

ov_ldpath() {  # RELEASE DIR -> LD_LIBRARY_PATH for the NCS2 runtime, or nothing
  [ -f "$1/openvino.ldpath" ] && cat "$1/openvino.ldpath"
  return 0
}

build_release() {
  local id="$1" rel="$APP/releases/$1"
  if [ -f "$rel/.complete" ]; then
    note "release $id already built"
    return 0
  fi
  say "building release $id"
  if [ "$DRY" = 1 ]; then
    echo "    would: copy the code to $rel/src, create $rel/venv (--system-site-packages), pip install the edge extra"
    return 0
  fi
  rm -rf "${rel:?}"
  mkdir -p "$rel/src"
  # Extracted as root's files with umask modes: tar run as root would otherwise keep the
  # cloner's uid and any group-writable modes of the checkout.
  tar -C "$SRC_DIR" --exclude=__pycache__ --exclude='*.pyc' -cf - "${SRC_ITEMS[@]}" \
    | tar -C "$rel/src" --no-same-owner --no-same-permissions -xf -
  "$PYTHON" -m venv --system-site-packages "$rel/venv" \
    || die "cannot create a venv with $PYTHON (apt-get install python3-venv)"
  write_constraints
  pip_install "$rel/venv" 'setuptools>=68' wheel || die "pip could not install setuptools/wheel"
  local extras=edge
  [ "$HW" = ncs2 ] || extras="edge,openvino"
  # The code is built from the release's own copy, so the source tree stays untouched.
  pip_install "$rel/venv" --no-build-isolation "$rel/src[$extras]" \
    || die "pip could not install the edge package (see the messages above)"
  rm -rf "$rel/src/build" "$rel/src/"*.egg-info
  if [ "$HW" = ncs2 ] && [ -n "$OV_ARCHIVE" ]; then install_ov_runtime "$rel"; fi
  check_runtime "$rel"
  touch "$rel/.complete"
}

check_runtime() {  # RELEASE DIR: OpenVINO imports with the API this mode needs
  local rel="$1" code ldp
  ldp="$(ov_ldpath "$rel")"
  if [ "$HW" = ncs2 ]; then
    code='from openvino.runtime import Core, get_version; print(get_version(), Core().available_devices)'
  else
    code='import openvino as ov; print(ov.get_version(), ov.Core().available_devices)'
  fi
  local out
  if ! out="$(LD_LIBRARY_PATH="$ldp" "$rel/venv/bin/python" -c "$code" 2>&1)"; then
    [ "$HW" = ncs2 ] && die "OpenVINO 2022.3 does not import in the venv: $out (pass --openvino-archive)"
    die "OpenVINO does not import in the venv: $out"
  fi
  note "OpenVINO ${out}"
  if [ "$HW" = ncs2 ] && [[ "$out" != *MYRIAD* ]]; then
    note "warning: no MYRIAD device visible now (stick unplugged, or udev rule not active yet); CPU is the fallback"
  fi
}

switch_current() {  # RELEASE ID
  [ "$(current_release)" = "$1" ] && return 0
  act "current -> releases/$1" swap_link "releases/$1" "$APP/current"
}

swap_link() { ln -sfn "$1" "$2.new" && mv -T "$2.new" "$2"; }  # atomic on one filesystem

prune_releases() {  # keep the current release and the one before it
  local keep_a="$1" keep_b="${2:-}" d
  for d in "$APP"/releases/*; do
    [ -d "$d" ] || continue
    case "$(basename "$d")" in "$keep_a"|"$keep_b") continue ;; esac
    act "remove old release $(basename "$d")" rm -rf "$d"
  done
}

# ------------------------------------------------------------------------------ config
# The installed defaults: the repository's confs.json with absolute paths for this host.
render_config() {  # OUT
  "$PYTHON" - "$SRC_DIR/confs.json" "$1" "$APP" "$STATE" "$HW" <<'PY'
import json, sys
src, out, app, state, hw = sys.argv[1:6]
with open(src, encoding="utf-8") as f:
    cfg = json.load(f)
cfg["model"]["xml"] = app + "/current/src/models/default/model.xml"
cfg["model"]["devices"] = ["MYRIAD", "CPU"] if hw == "ncs2" else ["CPU"]
cfg["sources"]["folder"]["path"] = state + "/inbox"
cfg["storage"]["data_dir"] = state + "/data"
with open(out, "w", encoding="utf-8") as f:
    f.write(json.dumps(cfg, indent=2) + "\n")
PY
}

install_config() {
  say "configuration $ETC/confs.json"
  render_config "$TMP/confs.json.dist"
  if [ -f "$ETC/confs.json.dist" ] && ! cmp -s "$ETC/confs.json.dist" "$TMP/confs.json.dist"; then
    note "the default configuration changed; your $ETC/confs.json is kept. New defaults:"
    diff -u --label "previous defaults" --label "new defaults" \
      "$ETC/confs.json.dist" "$TMP/confs.json.dist" | sed 's/^/      /' || true
  fi
  if [ -f "$ETC/confs.json" ]; then
    note "kept the existing $ETC/confs.json (never overwritten)"
  else
    put_file "$TMP/confs.json.dist" "$ETC/confs.json" 0640
  fi
  ensure_owner "$ETC/confs.json" "root:$SVC_USER"
  # Empty root-only placeholders: systemd loads them as credentials; empty means "not set".
  local c
  for c in "${CREDENTIALS[@]}"; do
    if [ ! -e "$CRED/$c" ]; then
      act "create empty credential $CRED/$c (0600)" install -m 0600 /dev/null "$CRED/$c"
    fi
    ensure_owner "$CRED/$c" root:root
  done
}

# The defaults of the live release, kept to show what a later upgrade changes in them.
record_defaults() {
  put_file "$TMP/confs.json.dist" "$ETC/confs.json.dist" 0640
  ensure_owner "$ETC/confs.json.dist" "root:$SVC_USER"
}

validate() {  # RELEASE ID
  local rel="$APP/releases/$1"
  say "validating $ETC/confs.json with release $1"
  if [ "$DRY" = 1 ]; then echo "    would: $rel/venv/bin/python -m edge check-config --config $ETC/confs.json"; return 0; fi
  local ldp xml over=()
  ldp="$(ov_ldpath "$rel")"
  # A model under current/ is checked in the new release, as the daemon will see it after
  # the switch.
  xml="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"]["xml"])' \
    "$ETC/confs.json" 2>/dev/null || true)"
  if [[ "$xml" == "$APP/current/"* ]]; then
    over=(--set "model.xml=$rel/${xml#"$APP/current/"}")
  fi
  # check-config applies the HTTP access rules, which need the secrets: give it the
  # credentials the unit loads, as systemd does ($CREDENTIALS_DIRECTORY), from a private copy.
  local creds="$TMP/credentials"
  render_unit "$1" "$TMP/unit.validate"
  stage_credentials "$TMP/unit.validate" "$creds"
  if ! CREDENTIALS_DIRECTORY="$creds" LD_LIBRARY_PATH="$ldp" "$rel/venv/bin/python" -m edge check-config \
      --config "$ETC/confs.json" "${over[@]}"; then
    rm -rf "$creds"
    die "$ETC/confs.json does not validate with release $1 (messages above); nothing was switched or enabled"
  fi
  rm -rf "$creds"
}

# stage_credentials UNIT DIR: DIR (0700) gets a 0600 copy of each readable file the unit's
# LoadCredential=NAME:PATH lines name, under NAME; a missing file stays missing ("not set").
stage_credentials() {
  local line name path
  rm -rf "$2"
  mkdir -m 0700 "$2"
  while IFS= read -r line; do
    name="${line%%:*}"; path="${line#*:}"
    [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || continue
    if [ -f "$path" ] && [ -r "$path" ]; then install -m 0600 "$path" "$2/$name"; fi
  done < <(sed -n 's/^LoadCredential=//p' "$1")
}

# ------------------------------------------------------------------------------ systemd
# release_file ID PATH: PATH (e.g. systemd/all-edge.service) from that release's own code, so a
# rollback puts back the old release's unit; this tree's copy only while the release is not
# built (--dry-run).
release_file() {
  local f="$APP/releases/$1/src/$2"
  if [ -f "$f" ]; then echo "$f"; else echo "$SRC_DIR/$2"; fi
}

render_unit() {  # RELEASE ID, OUT
  local ldp
  ldp="$(ov_ldpath "$APP/releases/$1")"
  sed -e "s|/opt/all-edge|$APP|g" \
      -e "s|/etc/all-edge/|$ETC/|g" \
      -e "s|^WorkingDirectory=/var/lib/all-edge|WorkingDirectory=$STATE|" \
      -e "s|^User=all-edge$|User=$SVC_USER|" -e "s|^Group=all-edge$|Group=$SVC_USER|" \
      "$(release_file "$1" systemd/all-edge.service)" > "$2"
  if [ -n "$ROOT" ]; then
    sed -i "s|^LogsDirectoryMode=.*|&\nReadWritePaths=$STATE $LOGS|" "$2"
  fi
  if [ -n "$ldp" ]; then
    sed -i "s|^Environment=PYTHONUNBUFFERED=.*|&\nEnvironment=LD_LIBRARY_PATH=$ldp|" "$2"
  fi
}

install_unit() {  # RELEASE ID; sets UNIT_CHANGED
  say "systemd unit $UNIT"
  render_unit "$1" "$TMP/unit"
  UNIT_CHANGED=0
  cmp -s "$TMP/unit" "$UNIT" 2>/dev/null || UNIT_CHANGED=1
  ensure_dir "$(dirname "$UNIT")" 0755
  put_file "$TMP/unit" "$UNIT" 0644
  if [ "$HW" = ncs2 ]; then
    local rule
    rule="$(release_file "$1" systemd/97-myriad-usbboot.rules)"
    ensure_dir "$(dirname "$UDEV_RULE")" 0755
    if ! cmp -s "$rule" "$UDEV_RULE" 2>/dev/null; then
      put_file "$rule" "$UDEV_RULE" 0644
      sys "udevadm control --reload-rules && udevadm trigger" udev_reload
    fi
  fi
  if [ "$UNIT_CHANGED" = 1 ]; then sys "systemctl daemon-reload" systemctl daemon-reload; fi
}

udev_reload() { udevadm control --reload-rules && udevadm trigger --subsystem-match=usb; }

start_service() {  # fresh install: enable only a service that starts
  if [ "$NO_SYSTEM" = 1 ]; then skipped "systemctl enable --now $SERVICE"; return 0; fi
  if [ "$DRY" = 1 ]; then echo "    would: systemctl enable --now $SERVICE"; return 0; fi
  if systemctl is-active --quiet "$SERVICE" && [ "$UNIT_CHANGED" = 0 ]; then
    note "$SERVICE is running"
    ensure_enabled
    return 0
  fi
  say "starting $SERVICE"
  reset_failed
  if ! systemctl enable "$SERVICE" || ! systemctl restart "$SERVICE"; then
    systemctl disable --now "$SERVICE" >/dev/null 2>&1 || true
    die "$SERVICE did not start; it was left disabled. See: journalctl -u $SERVICE -n 50"
  fi
}

# After start-limit-hit systemd refuses even a manual start until the failed state is reset.
reset_failed() { systemctl reset-failed "$SERVICE" >/dev/null 2>&1 || true; }

# A service that runs is enabled, also one whose first start failed (left disabled) and that an
# --upgrade or a rerun got running.
ensure_enabled() {
  systemctl is-enabled --quiet "$SERVICE" 2>/dev/null && return 0
  act "systemctl enable $SERVICE" systemctl enable "$SERVICE" \
    || die "$SERVICE runs but could not be enabled: sudo systemctl enable $SERVICE"
}

restart_with_rollback() {  # NEW ID, OLD ID
  if [ "$NO_SYSTEM" = 1 ]; then skipped "systemctl restart $SERVICE"; return 0; fi
  if [ "$DRY" = 1 ]; then echo "    would: systemctl restart $SERVICE"; return 0; fi
  say "restarting $SERVICE on release $1"
  reset_failed
  if systemctl restart "$SERVICE"; then
    ensure_enabled
    return 0
  fi
  echo "install.sh: $SERVICE failed on release $1; rolling back to $2" >&2
  switch_current "$2"
  install_unit "$2"
  reset_failed
  systemctl restart "$SERVICE" || true
  die "upgrade failed and was rolled back to $2. See: journalctl -u $SERVICE -n 50"
}

status_url() {
  local cfg="$ETC/confs.json"
  [ -f "$cfg" ] || cfg="$TMP/confs.json.dist"
  "$PYTHON" - "$cfg" <<'PY' 2>/dev/null || true
import json, sys
s = json.load(open(sys.argv[1], encoding="utf-8")).get("server", {})
host = s.get("host", "127.0.0.1")
host = "[%s]" % host if ":" in host else host
print("http://%s:%s/" % (host, s.get("port", 8080)) if s.get("enabled", True) else "(server disabled)")
PY
}

# ------------------------------------------------------------------------------ actions
do_install() {
  recall_mode
  preflight
  local cur id
  cur="$(current_release)"
  id="$(release_id)"
  if [ "$ACTION" = install ] && [ -n "$cur" ] && [ "$cur" != "$id" ]; then
    die "release $cur is installed and this code is $id: run with --upgrade"
  fi
  if [ "$ACTION" = upgrade ] && [ -z "$cur" ]; then
    die "nothing installed under $APP to upgrade: run without --upgrade"
  fi
  install_packages
  create_user
  create_dirs
  build_release "$id"
  record_mode "$id"
  install_config
  validate "$id"
  local previous="$cur"
  switch_current "$id"
  install_unit "$id"
  if [ "$ACTION" = upgrade ] && [ "$cur" != "$id" ]; then
    restart_with_rollback "$id" "$cur"
  else
    start_service
  fi
  record_defaults   # only once the release runs: after a rollback the old defaults stay recorded
  # Keep the release we came from (for a rollback); prune only when we actually switched.
  if [ "$DRY" = 0 ] && [ "$previous" != "$id" ]; then prune_releases "$id" "$previous"; fi
  say "done: release $id ($HW mode)"
  note "status page: $(status_url)"
  note "logs: journalctl -u $SERVICE -f    config: $ETC/confs.json    secrets: $CRED/"
  note "research use only: not a diagnostic device"
}

do_uninstall() {
  say "removing $SERVICE"
  if [ "$NO_SYSTEM" = 0 ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo)"; fi
  sys "systemctl disable --now $SERVICE" systemctl disable --now "$SERVICE" || true
  [ ! -e "$UNIT" ] || act "remove $UNIT" rm -f "$UNIT"
  if [ -e "$UDEV_RULE" ]; then
    act "remove $UDEV_RULE" rm -f "$UDEV_RULE"
    sys "udevadm control --reload-rules" udevadm control --reload-rules
  fi
  sys "systemctl daemon-reload" systemctl daemon-reload
  [ ! -e "$APP" ] || act "remove $APP" rm -rf "${APP:?}"
  if [ "$PURGE" = 1 ]; then
    local d
    for d in "$ETC" "$STATE" "$LOGS"; do
      [ ! -e "$d" ] || act "remove $d" rm -rf "${d:?}"
    done
    sys "userdel $SVC_USER" userdel "$SVC_USER" || true
    say "purged: code, config, credentials, data and logs removed"
  else
    say "removed the service and code; kept $ETC (config, credentials), $STATE (data), $LOGS"
    note "remove those too with: ./install.sh --uninstall --purge"
  fi
}

if [ "$DRY" = 1 ]; then echo "install.sh: dry run: nothing will be changed"; fi
case "$ACTION" in
  install|upgrade) do_install ;;
  uninstall) do_uninstall ;;
esac
