#!/bin/sh
# Make this machine the cdlab host its bundle names (an "existing" host of the topology):
# its engine on the lab's engine port with mutual TLS (the lab CA), trusting the lab registry.
# Unpacked from 'invoke lab.bundle --host NAME' (NAME.tar.gz); run as root, again after a new
# bundle (it restarts the host). Installs what is missing with apt-get (Debian's docker.io when
# there is no Docker at all); runs the host as the systemd service cdlab-host, or in the
# background where there is no systemd (then not started again at boot: run this again).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "install-host: $*"; }
fail() { echo "install-host: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || fail "run as root (sudo sh $0)"
[ -r "$here/host.env" ] && [ -r "$here/cdlab/ca.pem" ] ||
    fail "$here holds no bundle: unpack NAME.tar.gz from 'invoke lab.bundle --host NAME' first"
name=$(sed -n 's/^CDLAB_HOST=//p' "$here/host.env")
port=$(sed -n 's/^CDLAB_ENGINE_PORT=//p' "$here/host.env")

# what is missing, by the package that brings it; Docker only when there is none (a Docker CE
# install is kept: Debian's docker.io beside it would replace its containerd)
packages=""
command -v dockerd >/dev/null 2>&1 || command -v docker >/dev/null 2>&1 || packages="docker.io"
command -v iptables >/dev/null 2>&1 || packages="$packages iptables"
command -v update-ca-certificates >/dev/null 2>&1 || packages="$packages ca-certificates"
command -v pgrep >/dev/null 2>&1 || packages="$packages procps"
command -v ss >/dev/null 2>&1 || packages="$packages iproute2"
if [ -n "$packages" ]; then
    command -v apt-get >/dev/null 2>&1 || fail "missing:$packages; install them, then run this again"
    say "installing$packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -q --no-install-recommends $packages
fi
command -v dockerd >/dev/null 2>&1 || fail "docker is installed without dockerd (the engine): install docker.io"
# cdlab's clients speak the Engine API 1.41 (Debian's docker.io 20.10-26 accept it; 29 does not)
major=$(dockerd --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
[ -z "$major" ] || [ "$major" -lt 29 ] ||
    fail "dockerd $major refuses cdlab's API version 1.41: install Debian's docker.io (bookworm's 20.10)"

stop_host() {
    if [ -d /run/systemd/system ]; then
        systemctl stop cdlab-host.service 2>/dev/null || true
        # the distribution's own engine would hold the socket and /var/lib/docker
        systemctl disable --now docker.service docker.socket 2>/dev/null || true
    fi
    if [ -r /run/cdlab-host.pgid ]; then
        pgid=$(cat /run/cdlab-host.pgid)
        kill -s TERM -- "-$pgid" 2>/dev/null || true
        i=0
        while kill -s 0 -- "-$pgid" 2>/dev/null; do
            i=$((i + 1))
            [ $i -lt 60 ] ||
                fail "the cdlab host (process group $pgid) is still stopping after 30 s: 'kill -s KILL -- -$pgid', then run this again"
            sleep 0.5
        done
        rm -f /run/cdlab-host.pgid
    fi
    if pgrep -x dockerd >/dev/null; then
        fail "a Docker engine still runs here ($(pgrep -ax dockerd | head -n 3)): stop it ('systemctl stop docker' or 'kill PID'), then run this again"
    fi
}

stop_host
rm -rf /etc/cdlab.new && cp -R "$here/cdlab" /etc/cdlab.new && chmod -R go-rwx /etc/cdlab.new
# the control plane's certificates are read by etcd's own user in its container (prod only)
[ ! -d /etc/cdlab.new/control ] || chmod -R a+rX /etc/cdlab.new/control
chmod 0700 /etc/cdlab.new
rm -rf /etc/cdlab && mv /etc/cdlab.new /etc/cdlab
install -m 0644 "$here/host.env" /etc/default/cdlab-host
install -m 0755 "$here/cdlab-host-init" /usr/local/sbin/cdlab-host-init

if [ -d /run/systemd/system ]; then
    cat >/etc/systemd/system/cdlab-host.service <<UNIT
[Unit]
Description=cdlab host $name
Wants=network-online.target
After=network-online.target
Conflicts=docker.service docker.socket
[Service]
EnvironmentFile=/etc/default/cdlab-host
ExecStart=/usr/local/sbin/cdlab-host-init
Restart=always
RestartSec=2
Delegate=yes
LimitNOFILE=infinity
[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now cdlab-host.service
else
    setsid sh -c 'set -a; . /etc/default/cdlab-host; set +a
        echo $$ >/run/cdlab-host.pgid
        exec /usr/local/sbin/cdlab-host-init' >>/var/log/cdlab-host.log 2>&1 </dev/null &
fi

i=0
until docker info >/dev/null 2>&1 && ss -ltn "sport = :$port" | grep -q ":$port"; do
    i=$((i + 1))
    [ $i -lt 120 ] ||
        fail "the engine did not listen on port $port within 60 s; see /var/log/cdlab-host.log or 'journalctl -u cdlab-host'"
    sleep 0.5
done
say "$name ready: its engine answers on port $port with mutual TLS; run 'invoke lab.up'"
