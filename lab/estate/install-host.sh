#!/bin/sh
# Make this machine the cdlab host its bundle names (an "existing" host of the topology):
# its engine on the lab's engine port with mutual TLS (the lab CA), trusting the lab registry.
# Unpacked from 'invoke lab.bundle --host NAME' (NAME.tar.gz); run as root, again after a new
# bundle (it restarts the host). Installs Docker with apt-get when dockerd is missing; runs the
# host as the systemd service cdlab-host, or in the background where there is no systemd.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "install-host: $*"; }
fail() { echo "install-host: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || fail "run as root (sudo sh $0)"
[ -r "$here/host.env" ] && [ -r "$here/cdlab/ca.pem" ] ||
    fail "$here holds no bundle: unpack NAME.tar.gz from 'invoke lab.bundle --host NAME' first"
name=$(sed -n 's/^CDLAB_HOST=//p' "$here/host.env")
port=$(sed -n 's/^CDLAB_ENGINE_PORT=//p' "$here/host.env")

missing=""
for tool in dockerd docker iptables update-ca-certificates pgrep; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    command -v apt-get >/dev/null 2>&1 ||
        fail "missing:$missing; install Docker and iptables, then run this again"
    say "installing Docker (missing:$missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends docker.io iptables iproute2 procps \
        ca-certificates curl
fi

stop_host() {
    if [ -d /run/systemd/system ]; then
        systemctl stop cdlab-host.service 2>/dev/null || true
        # the distribution's own engine would hold the socket and /var/lib/docker
        systemctl disable --now docker.service docker.socket 2>/dev/null || true
    fi
    if [ -r /run/cdlab-host.pgid ]; then
        pgid=$(cat /run/cdlab-host.pgid)
        kill -TERM -- "-$pgid" 2>/dev/null || true
        i=0
        while kill -0 -- "-$pgid" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
        rm -f /run/cdlab-host.pgid
    fi
    ! pgrep -x dockerd >/dev/null || fail "a Docker engine still runs here; stop it first"
}

stop_host
install -d -m 0700 /etc/cdlab
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
After=network-online.target
[Service]
EnvironmentFile=/etc/default/cdlab-host
ExecStart=/usr/local/sbin/cdlab-host-init
Restart=always
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
until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 120 ] || fail "the engine did not start within 60 s; see /var/log/cdlab-host.log or 'journalctl -u cdlab-host'"
    sleep 0.5
done
say "$name ready: its engine answers on port $port with mutual TLS; run 'invoke lab.up'"
