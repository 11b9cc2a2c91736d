#!/usr/bin/env bash
# Installs clusterd and haadm on one node of a two-node cluster (Debian 12), from a checkout.
# Run it as root on BOTH servers. It never overwrites an operator's /etc/ha/ha.yaml or an existing
# secret, never enables or starts the service, and running it again changes nothing that is current.
#
# Usage: deploy/install.sh [--bin-dir DIR] [--root DIR | --prefix DIR] [--dry-run] [--no-packages]
#
#   --bin-dir DIR   use the prebuilt clusterd and haadm in DIR instead of `cargo build --release`
#   --root DIR      install into the staging root DIR (DIR/usr/local/sbin/..., DIR/etc/ha/...);
#                   no Debian packages, no chown, no `systemctl daemon-reload` (--prefix: the same)
#   --dry-run       print what would be done, change nothing
#   --no-packages   do not install missing Debian packages
set -euo pipefail

usage() { sed -n '2,13s/^# \{0,1\}//p' "$0"; }
die() { echo "install.sh: $*" >&2; exit 1; }

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=""
BIN_DIR=""
DRY_RUN=0
PACKAGES=1
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; BIN_DIR=$2; shift 2 ;;
    --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
    --root|--prefix) [ $# -ge 2 ] || die "$1 needs a directory"; ROOT=$2; shift 2 ;;
    --root=*|--prefix=*) ROOT=${1#*=}; shift ;;
    --dry-run|-n) DRY_RUN=1; shift ;;
    --no-packages) PACKAGES=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
if [ -n "$ROOT" ]; then
  ROOT=$(realpath -m -- "$ROOT")
  [ "$ROOT" != / ] || ROOT=""
fi
[ -z "$BIN_DIR" ] || BIN_DIR=$(realpath -m -- "$BIN_DIR")
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
# A real install (no staging root) writes /etc and /usr/local and must own the secrets: root only.
if [ -z "$ROOT" ] && [ $IS_ROOT = 0 ] && [ $DRY_RUN = 0 ]; then
  die "run as root (or use --root DIR to stage, --dry-run to look)"
fi

# Installed locations (as seen on the running system; $ROOT is prepended when writing).
SBIN=/usr/local/sbin
CONF_DIR=/etc/ha
CONF=$CONF_DIR/ha.yaml
STATE_DIR=/var/lib/clusterd
UNIT=/etc/systemd/system/clusterd.service
COMPLETION=/usr/share/bash-completion/completions/haadm

CHANGED=0
say() { printf '%s\n' "$*"; }
act() { # act DESCRIPTION: announce a change (or, with --dry-run, that it would happen)
  CHANGED=1
  if [ $DRY_RUN = 1 ]; then say "would $*"; else say "$*"; fi
}

# ---- Debian packages ---------------------------------------------------------------------------
# Runtime: ip (VIP), nft (portblock), libiscsi-bin (iscsi-inq/iscsi-ls to check a target from a
# node). Build: a C toolchain and pkg-config for crates with build scripts.
install_packages() {
  local wanted=(iproute2 nftables libiscsi-bin)
  [ -n "$BIN_DIR" ] || wanted+=(build-essential pkg-config)
  if [ -n "$ROOT" ] || [ $PACKAGES = 0 ]; then
    local why=--no-packages
    [ -z "$ROOT" ] || why="staging root"
    say "skipping Debian packages (${wanted[*]}): $why"
    return
  fi
  command -v dpkg >/dev/null || die "dpkg not found: this script targets Debian 12"
  local missing=() p
  for p in "${wanted[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} = 0 ]; then
    say "Debian packages present: ${wanted[*]}"
    return
  fi
  act "install Debian packages: ${missing[*]}"
  if [ $DRY_RUN = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# ---- binaries ----------------------------------------------------------------------------------
# Sets BIN_DIR to a directory holding clusterd and haadm.
build_binaries() {
  if [ -n "$BIN_DIR" ]; then
    local b
    for b in clusterd haadm; do
      [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing or not executable"
    done
    say "using prebuilt binaries from $BIN_DIR"
    return
  fi
  if ! command -v cargo >/dev/null; then
    local hint="install Rust with rustup, or pass --bin-dir DIR with binaries built elsewhere"
    # rustup installs into the invoking user's home, which sudo's PATH does not include.
    [ -z "${SUDO_USER:-}" ] || hint="build as $SUDO_USER (cargo build --release --locked -p clusterd --bins), then: sudo $0 --bin-dir $SRC/target/release"
    die "cargo not found (Debian 12's own cargo is too old: edition 2024 needs Rust >= 1.89); $hint"
  fi
  if [ $DRY_RUN = 1 ]; then
    say "would build: cargo build --release --locked -p clusterd --bins (in $SRC)"
    BIN_DIR=$SRC/target/release
    return
  fi
  say "building release binaries (cargo build --release --locked -p clusterd --bins)"
  (cd "$SRC" && cargo build --release --locked -p clusterd --bins)
  BIN_DIR=$SRC/target/release
}

# ---- file helpers --------------------------------------------------------------------------------
# ensure_dir PATH MODE [keep]: create with MODE; an existing directory is brought to MODE unless
# `keep` (an operator may have tightened /etc/ha on purpose).
ensure_dir() {
  local dest=$ROOT$1 mode=$2 keep=${3:-}
  if [ -d "$dest" ]; then
    if [ "$keep" != keep ] && [ "$(stat -c %a "$dest")" != "${mode#0}" ]; then
      act "chmod $mode $1"
      [ $DRY_RUN = 1 ] || chmod "$mode" "$dest"
    fi
    return
  fi
  act "create directory $1 (mode $mode)"
  [ $DRY_RUN = 1 ] || install -d -m "$mode" "$dest"
}

# install_file SOURCE DEST MODE: copy if absent or different; a current file is not touched (so
# its mtime stays, and a second run changes nothing).
install_file() {
  local src=$1 dest=$ROOT$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    if [ "$(stat -c %a "$dest")" != "${mode#0}" ]; then
      act "chmod $mode $2"
      [ $DRY_RUN = 1 ] || chmod "$mode" "$dest"
    else
      say "$2 is current"
    fi
    return
  fi
  if [ -e "$dest" ]; then act "update $2"; else act "install $2"; fi
  [ $DRY_RUN = 1 ] && return
  install -d -m 0755 "$(dirname "$dest")"
  # Copy beside the destination and rename, so a running binary is replaced, not overwritten.
  local tmp
  tmp=$(mktemp "$dest.XXXXXX")
  cat "$src" >"$tmp"
  chmod "$mode" "$tmp"
  [ $IS_ROOT = 0 ] || [ -n "$ROOT" ] || chown root:root "$tmp"
  mv -f "$tmp" "$dest"
}

# ---- secrets -------------------------------------------------------------------------------------
# Secret files named in a config: `KIND PATH` per line, KIND = replication | authkeys | chap.
# Comments are dropped first so only keys that are in force count; flow maps
# (`{ name: u, secret-file: /x }`) work too. Relative paths are relative to the config's directory.
secret_files_of() {
  local config=$1 dir
  dir=$(dirname "$2")
  sed -E 's/(^|[[:space:]])#.*$//' "$config" \
    | grep -oE '(^|[[:space:]{,])(shared-secret-file|authkeys-file|secret-file):[[:space:]]*[^[:space:],}]+' \
    | sed -E 's/^[[:space:]{,]*//; s/:[[:space:]]*/ /; s/["'"'"']//g' \
    | while read -r key path; do
        case "$path" in /*) ;; *) path=$dir/$path ;; esac
        case "$key" in
          shared-secret-file) echo "replication $path" ;;
          authkeys-file) echo "authkeys $path" ;;
          secret-file) echo "chap $path" ;;
        esac
      done | sort -u -k2,2
}

random_hex() { # random_hex BYTES
  od -An -v -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

CREATED_SECRETS=()
create_secret() { # create_secret KIND PATH
  local kind=$1 path=$2 dest=$ROOT$2 content
  if [ -e "$dest" ]; then
    local mode
    mode=$(stat -c %a "$dest")
    if [ "${mode: -2}" != 00 ]; then
      say "WARNING: $path has mode $mode; clusterd refuses secrets readable by group/other (chmod 600 $path)"
    else
      say "$path exists (kept)"
    fi
    return
  fi
  case "$kind" in
    # Replication: HMAC-SHA1 key, 1..=64 bytes; 48 hex characters = 192 random bits.
    replication) content=$(random_hex 24) ;;
    # Heartbeat's authkeys format: the key id to sign with, then `id sha1 secret` lines.
    authkeys) content=$(printf '# heartbeat keys (generated by install.sh); identical on both nodes\nauth 1\n1 sha1 %s' "$(random_hex 20)") ;;
    # CHAP: 16 characters, the longest secret every initiator accepts (12..=16 advised).
    chap) content=$(random_hex 8) ;;
    *) die "internal: unknown secret kind $kind" ;;
  esac
  act "create $kind secret $path (random, mode 0600)"
  CREATED_SECRETS+=("$path")
  [ $DRY_RUN = 1 ] && return
  install -d -m 0755 "$(dirname "$dest")"
  (umask 077 && printf '%s\n' "$content" >"$dest.tmp.$$")
  chmod 0600 "$dest.tmp.$$"
  [ $IS_ROOT = 0 ] || chown root:root "$dest.tmp.$$"
  mv -f "$dest.tmp.$$" "$dest"
}

# ---- the steps -----------------------------------------------------------------------------------
[ $DRY_RUN = 0 ] || say "dry run: nothing is changed"
[ -z "$ROOT" ] || say "staging root: $ROOT"

install_packages
build_binaries
install_file "$BIN_DIR/clusterd" "$SBIN/clusterd" 0755
install_file "$BIN_DIR/haadm" "$SBIN/haadm" 0755

ensure_dir "$CONF_DIR" 0755 keep
if [ -e "$ROOT$CONF" ]; then
  say "$CONF exists (kept: install.sh never overwrites a configuration)"
  config_for_secrets=$ROOT$CONF
else
  act "install $CONF from ha.yaml.example (edit it: node names, addresses, disks)"
  if [ $DRY_RUN = 0 ]; then
    install -m 0644 "$SRC/ha.yaml.example" "$ROOT$CONF"
    [ $IS_ROOT = 0 ] || [ -n "$ROOT" ] || chown root:root "$ROOT$CONF"
  fi
  config_for_secrets=$SRC/ha.yaml.example
  [ $DRY_RUN = 1 ] || config_for_secrets=$ROOT$CONF
fi

while read -r kind path; do
  [ -n "$kind" ] || continue
  create_secret "$kind" "$path"
done < <(secret_files_of "$config_for_secrets" "$CONF")

ensure_dir "$STATE_DIR" 0700
install_file "$SRC/deploy/systemd/clusterd.service" "$UNIT" 0644

# Bash completion: generated by the haadm being installed, so it matches its verbs; the copy in
# deploy/completion/ serves a prebuilt haadm that predates `haadm completion`.
completion_src=$(mktemp)
trap 'rm -f "$completion_src"' EXIT
if ! "$BIN_DIR/haadm" completion bash >"$completion_src" 2>/dev/null || [ ! -s "$completion_src" ]; then
  if [ $DRY_RUN = 1 ] && [ ! -x "$BIN_DIR/haadm" ]; then
    : # not built yet in a dry run: compare against the shipped copy
  else
    say "note: $BIN_DIR/haadm cannot generate its completion; using deploy/completion/haadm.bash"
  fi
  cp "$SRC/deploy/completion/haadm.bash" "$completion_src"
fi
install_file "$completion_src" "$COMPLETION" 0644

if [ -z "$ROOT" ]; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    if [ $DRY_RUN = 1 ]; then say "would run systemctl daemon-reload"; else systemctl daemon-reload; fi
  else
    say "systemd is not running here: skipping systemctl daemon-reload"
  fi
fi

# ---- report --------------------------------------------------------------------------------------
say ""
if [ $CHANGED = 0 ]; then
  say "nothing to do: everything is installed and current"
fi
if [ ${#CREATED_SECRETS[@]} -gt 0 ]; then
  if [ $DRY_RUN = 1 ]; then say "secrets that would be created (random):"; else say "secrets created (random):"; fi
  printf '  %s\n' "${CREATED_SECRETS[@]}"
  say "Both nodes need IDENTICAL copies of every secret: run install.sh on one node, then copy them"
  say "to the peer before starting clusterd, e.g."
  say "  scp -p ${CREATED_SECRETS[*]} root@PEER:$CONF_DIR/"
  say "(replication links and heartbeats from a node with different secrets are refused)."
fi
cat <<EOF

Next steps (on both nodes, in this order; README "Install on two servers"):
  1. edit $CONF: node names (= host names), addresses, disks, VIP, targets;
     check it with: haadm --config $CONF status   (clusterd refuses to start on any error)
  2. copy $CONF and the secret files to the peer (same content on both nodes)
  3. haadm create-md all                              # clusterd stopped
  4. systemctl start clusterd                         # both nodes (enable it to start at boot)
  5. on the first node only: haadm primary --overwrite-data-of-peer RES   (initial full sync)
  6. haadm status
EOF
