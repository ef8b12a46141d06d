#!/bin/sh
# Provision a cdlab host on a VirtualBox VM the way the host image is built, then run the same
# boot script as a systemd service. Not exercised by CI (which uses the docker provider).
set -eu
name=$1 role=$2 registry=$3 engine_port=$4
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends docker.io docker-compose docker-registry iptables \
    iproute2 procps curl git openssl ca-certificates python3
systemctl disable --now docker.service docker.socket docker-registry.service 2>/dev/null || true
install -d -m 0700 /etc/cdlab
install -m 0600 /vagrant/.lab/hosts/"$name"/* /etc/cdlab/
install -m 0755 /vagrant/lab/estate/hostimage/cdlab-host-init /usr/local/sbin/cdlab-host-init
cat >/etc/systemd/system/cdlab-host.service <<UNIT
[Unit]
Description=cdlab host ($role)
After=network-online.target
[Service]
Environment=CDLAB_ROLE=$role CDLAB_REGISTRY=$registry CDLAB_ENGINE_PORT=$engine_port
ExecStart=/usr/local/sbin/cdlab-host-init
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now cdlab-host.service
