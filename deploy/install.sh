#!/bin/sh
# Install the shoal edge agent on a K3s node as the systemd service shoal-agent.
#
#   curl -sfL https://<where you serve it>/install.sh | \
#       SHOAL_URL=nats://shoal.example.com:4222 SHOAL_TOKEN=shoal_... \
#       SHOAL_LABELS=env=prod,region=eu sh -
#
# Run as root on a node where K3s runs. Variables:
#
#   SHOAL_URL         NATS URL of the shoal control plane (required)
#   SHOAL_TOKEN       registration token from `shoal token create` (required
#                     until the agent has registered: /var/lib/shoal/identity.json)
#   SHOAL_LABELS      cluster labels, k=v,k=v (default: none)
#   SHOAL_NAME        cluster name (default: this host's name, lowercased)
#   SHOAL_KUBECONFIG  kubeconfig of K3s (default: /etc/rancher/k3s/k3s.yaml)
#   SHOAL_PACKAGE     what pip installs: a requirement (default: shoal), or the
#                     path or URL of a wheel or sdist, or git+https://...
#   SHOAL_PIP_ARGS    extra pip arguments, e.g. "--index-url https://mirror/simple"
#   SHOAL_PYTHON      Python 3.11+ used to create the virtualenv (default: python3)
#   SHOAL_ROOT        prefix of every path written, like DESTDIR; for tests and
#                     packaging (the root check is skipped when it is set)
#
# On a re-run, variables left unset keep the values of the previous install, so
# `SHOAL_LABELS=... sh install.sh` changes the labels alone. The service is
# restarted only if the environment file, the unit or the installed packages
# changed. /usr/local/bin/shoal-agent-uninstall.sh removes it all again but the
# agent's identity in /var/lib/shoal (add --purge to remove that too).
set -eu

ROOT=${SHOAL_ROOT:-}
VENV=/opt/shoal/venv
ENV_FILE=/etc/shoal/agent.env
UNIT_FILE=/etc/systemd/system/shoal-agent.service
UNINSTALL_FILE=/usr/local/bin/shoal-agent-uninstall.sh
STATE_DIR=/var/lib/shoal
DEFAULT_KUBECONFIG=/etc/rancher/k3s/k3s.yaml
SERVICE=shoal-agent

info() {
    printf '[shoal] %s\n' "$*"
}

fatal() {
    printf '[shoal] error: %s\n' "$*" >&2
    exit 1
}

# The value a previous install wrote for $1, or nothing.
previous() {
    if [ -f "$ROOT$ENV_FILE" ]; then
        sed -n "s/^$1=//p" "$ROOT$ENV_FILE" | tail -n 1
    fi
}

# Values go unquoted into a systemd environment file, which would mangle
# whitespace, quotes and backslashes; none of them occurs in a valid value.
check_plain() {
    case $2 in
        *[[:space:]\"\'\\]*) fatal "$1 must not contain whitespace, quotes or backslashes" ;;
    esac
}

# --- settings -----------------------------------------------------------------

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    fatal "run as root: curl -sfL .../install.sh | sudo SHOAL_URL=... SHOAL_TOKEN=... sh -"
fi

url=${SHOAL_URL:-$(previous SHOAL_URL)}
token=${SHOAL_TOKEN:-$(previous SHOAL_TOKEN)}
if [ -n "${SHOAL_LABELS+set}" ]; then
    labels=$SHOAL_LABELS
else
    labels=$(previous SHOAL_LABELS)
fi
name=${SHOAL_NAME:-$(previous SHOAL_NAME)}
if [ -z "$name" ]; then
    name=$(uname -n | tr '[:upper:]' '[:lower:]')
fi
kubeconfig=${SHOAL_KUBECONFIG:-$(previous KUBECONFIG)}
kubeconfig=${kubeconfig:-$DEFAULT_KUBECONFIG}
package=${SHOAL_PACKAGE:-shoal}
pip_args=${SHOAL_PIP_ARGS:-}
python=${SHOAL_PYTHON:-python3}

# The token is needed until the agent has registered and kept its identity.
missing=
[ -n "$url" ] || missing="SHOAL_URL (the control plane's NATS URL, e.g. nats://shoal.example.com:4222)"
if [ -z "$token" ] && [ ! -f "$ROOT$STATE_DIR/identity.json" ]; then
    missing="${missing:+$missing and }SHOAL_TOKEN (from \`shoal token create\`)"
fi
[ -z "$missing" ] || fatal "set $missing"

check_plain SHOAL_URL "$url"
check_plain SHOAL_TOKEN "$token"
check_plain SHOAL_LABELS "$labels"
check_plain SHOAL_KUBECONFIG "$kubeconfig"
case $url in
    *://*) ;;
    *) fatal "SHOAL_URL=$url is not a URL: want nats://host:port" ;;
esac
if ! printf '%s\n' "$name" | grep -Eq '^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$'; then
    fatal "cluster name '$name' is not a DNS name of lowercase letters, digits, '-' and '.': set SHOAL_NAME"
fi
label_re='^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?=([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$'
if [ -n "$labels" ]; then
    bad=$(printf '%s\n' "$labels" | tr ',' '\n' | grep -Ev "$label_re" || true)
    [ -z "$bad" ] || fatal "SHOAL_LABELS: '$(printf '%s' "$bad" | head -n 1)' is not key=value (want k=v,k=v)"
fi

case $kubeconfig in
    /*) ;;
    *) fatal "SHOAL_KUBECONFIG=$kubeconfig must be an absolute path" ;;
esac
if [ ! -f "$ROOT$kubeconfig" ]; then
    fatal "no kubeconfig at $ROOT$kubeconfig: is K3s installed and started on this node? (set SHOAL_KUBECONFIG to use another)"
fi

if ! command -v "$python" >/dev/null 2>&1; then
    fatal "$python not found: shoal needs Python 3.11 or newer with venv (Debian/Ubuntu: apt install python3 python3-venv; or set SHOAL_PYTHON)"
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
    fatal "$python does not run"
case $version in
    [0-9]*.[0-9]*) ;;
    *) fatal "$python printed '$version' for its version: is it Python?" ;;
esac
major=${version%%.*}
minor=${version#*.}
if [ "$major" -lt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -lt 11 ]; }; then
    fatal "$python is Python $version; shoal needs 3.11 or newer (install python3.11 and python3.11-venv, then set SHOAL_PYTHON=python3.11)"
fi
command -v systemctl >/dev/null 2>&1 || fatal "systemctl not found: this installer needs systemd"

# --- files --------------------------------------------------------------------

changed=

# Write stdin to $1 with mode $2 if its content differs; say whether it did.
install_file() {
    target=$ROOT$1
    mkdir -p "$(dirname "$target")"
    tmp=$(mktemp "$target.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
        chmod "$2" "$target"
        return 1
    fi
    mv -f "$tmp" "$target"
    return 0
}

# Every installed file with its hash, from the packages' RECORD files: changes
# when pip installed, upgraded or removed anything.
installed_packages() {
    cat "$ROOT$VENV"/lib/python*/site-packages/*.dist-info/RECORD 2>/dev/null | cksum
}

if [ ! -x "$ROOT$VENV/bin/python" ] || [ ! -e "$ROOT$VENV/bin/pip" ]; then
    info "creating the virtualenv $VENV (Python $version)"
    mkdir -p "$(dirname "$ROOT$VENV")"
    if ! "$python" -m venv --clear "$ROOT$VENV"; then
        rm -rf "$ROOT$VENV"
        fatal "$python -m venv failed: install the venv module (Debian/Ubuntu: apt install python3-venv)"
    fi
fi
before=$(installed_packages)
info "installing $package into $VENV"
# SHOAL_PIP_ARGS is split into words on purpose.
# shellcheck disable=SC2086
PIP_DISABLE_PIP_VERSION_CHECK=1 "$ROOT$VENV/bin/python" -m pip install --quiet --no-input \
    $pip_args "$package" || fatal "pip could not install $package (its message is above)"
if ! "$ROOT$VENV/bin/shoal" agent --help >/dev/null 2>&1; then
    fatal "$package installed no working \`shoal agent\` command into $VENV/bin: is SHOAL_PACKAGE shoal?"
fi
[ "$before" = "$(installed_packages)" ] || changed=1

umask 077
if {
    echo "# Written by shoal's install.sh; a re-run rewrites these five and keeps other variables."
    echo "SHOAL_URL=$url"
    echo "SHOAL_TOKEN=$token"
    echo "SHOAL_NAME=$name"
    echo "SHOAL_LABELS=$labels"
    echo "KUBECONFIG=$kubeconfig"
    if [ -f "$ROOT$ENV_FILE" ]; then
        grep -Ev '^(#|SHOAL_URL=|SHOAL_TOKEN=|SHOAL_NAME=|SHOAL_LABELS=|KUBECONFIG=)' "$ROOT$ENV_FILE" || true
    fi
} | install_file "$ENV_FILE" 600; then
    changed=1
fi
umask 022

fresh=
[ -f "$ROOT$UNIT_FILE" ] || fresh=1
unit_changed=
if install_file "$UNIT_FILE" 644 <<'UNIT'; then
# The shoal edge agent of a K3s node, applying its bundles through K3s's API.
#
# deploy/install.sh writes this unit to /etc/systemd/system/shoal-agent.service
# (it carries an identical copy, so it works when piped from curl). To install
# by hand: create /opt/shoal/venv with shoal installed, copy this file, write
# /etc/shoal/agent.env with mode 0600 (it holds the token):
#
#   SHOAL_URL=nats://shoal.example.com:4222
#   SHOAL_TOKEN=<from `shoal token create`; needed until the first registration>
#   SHOAL_NAME=<this cluster's name>
#   SHOAL_LABELS=env=prod,region=eu
#   KUBECONFIG=/etc/rancher/k3s/k3s.yaml
#
# then `systemctl daemon-reload && systemctl enable --now shoal-agent`.
# Logs: journalctl -u shoal-agent

[Unit]
Description=shoal edge agent
After=network-online.target k3s.service
Wants=network-online.target

[Service]
EnvironmentFile=/etc/shoal/agent.env
ExecStart=/opt/shoal/venv/bin/shoal agent --backend kubernetes --kubeconfig ${KUBECONFIG} --state-dir /var/lib/shoal
Restart=always
RestartSec=5

# /var/lib/shoal keeps the agent's identity, its last desired state and the
# resource blobs; systemd creates it and the uninstaller keeps it.
StateDirectory=shoal
StateDirectoryMode=0700
# helm and kubectl keep their caches under $HOME.
CacheDirectory=shoal
Environment=HOME=/var/cache/shoal
UMask=0077

# Root only because K3s writes its kubeconfig readable by root alone; the
# agent holds no capabilities and can write nowhere but its own directories.
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/shoal
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6

[Install]
WantedBy=multi-user.target
UNIT
    unit_changed=1
    changed=1
fi

install_file "$UNINSTALL_FILE" 755 <<'UNINSTALL' || true
#!/bin/sh
# Remove the shoal agent that install.sh installed: stop and disable the
# service, remove its unit, environment file and virtualenv. The agent's
# identity in /var/lib/shoal is kept (a re-install resumes as the same
# cluster) unless this runs with --purge. SHOAL_ROOT prefixes every path.
set -eu
ROOT=${SHOAL_ROOT:-}
purge=
case ${1:-} in
    --purge) purge=1 ;;
    '') ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    echo "[shoal] error: run as root" >&2
    exit 1
fi
if [ -f "$ROOT/etc/systemd/system/shoal-agent.service" ]; then
    systemctl disable --now shoal-agent
    rm -f "$ROOT/etc/systemd/system/shoal-agent.service"
    systemctl daemon-reload
fi
rm -f "$ROOT/etc/shoal/agent.env"
rmdir "$ROOT/etc/shoal" 2>/dev/null || true
rm -rf "$ROOT/opt/shoal/venv" "$ROOT/var/cache/shoal"
rmdir "$ROOT/opt/shoal" 2>/dev/null || true
if [ -n "$purge" ]; then
    rm -rf "$ROOT/var/lib/shoal"
    echo "[shoal] removed the agent and its identity in /var/lib/shoal"
else
    echo "[shoal] removed the agent; kept its identity in /var/lib/shoal (remove it with --purge)"
fi
rm -f "$ROOT/usr/local/bin/shoal-agent-uninstall.sh"
UNINSTALL

# --- service ------------------------------------------------------------------

if [ -n "$unit_changed" ]; then
    systemctl daemon-reload
fi
systemctl enable --now "$SERVICE"
if [ -n "$changed" ] && [ -z "$fresh" ]; then
    info "configuration changed: restarting $SERVICE"
    systemctl restart "$SERVICE"
fi

info "installed: cluster '$name', labels '${labels:-none}', control plane $url"
info "  $ENV_FILE (mode 0600), $UNIT_FILE, $VENV; identity in $STATE_DIR"
info "  status: systemctl status $SERVICE; logs: journalctl -u $SERVICE -f"
info "  uninstall: $UNINSTALL_FILE [--purge]"
